"""The layer-2 reply decision (speaker.core.l2_reply), on real frames built by scapy."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from common.api.model import IPAddress
from speaker.core.l2_reply import (
    ALL_NODES,
    ALL_NODES_MAC,
    ArpReply,
    Decision,
    Drop,
    Duplicate,
    NeighborAdvertisement,
    decide,
    source_lladdr,
)

MAC = "02:aa:00:00:00:01"  # eth0
MAC1 = "02:aa:00:00:00:02"  # eth1, another of our interfaces
OURS = frozenset({MAC, MAC1})
PEER = "02:00:00:00:00:09"
PEER_IP4 = ipaddress.IPv4Address("192.0.2.9")
PEER_IP6 = ipaddress.IPv6Address("2001:db8::9")
FOREIGN = "02:ee:00:00:00:99"
V4 = ipaddress.IPv4Address("192.0.2.200")
V6 = ipaddress.IPv6Address("2001:db8::1:5")
EVERYWHERE: dict[IPAddress, frozenset[str] | None] = {V4: None, V6: None}
ONLY_ETH1: dict[IPAddress, frozenset[str] | None] = {V4: frozenset({"eth1"}),
                                                     V6: frozenset({"eth1"})}


def arp(op: int = 1, tpa: str = str(V4), sha: str = PEER, spa: str = str(PEER_IP4),
        src: str | None = None) -> bytes:
    dst = "ff:ff:ff:ff:ff:ff" if op == 1 else MAC
    return bytes(Ether(src=src or sha, dst=dst) / ARP(op=op, hwsrc=sha, psrc=spa, pdst=tpa))


def ns(tgt: str = str(V6), src: str = PEER, ip: str = str(PEER_IP6),
       slla: str | None = PEER) -> bytes:
    frame = (Ether(src=src, dst="33:33:ff:01:00:05")
             / IPv6(src=ip, dst="ff02::1:ff01:5", hlim=255) / ICMPv6ND_NS(tgt=tgt))
    if slla is not None:
        frame = frame / ICMPv6NDOptSrcLLAddr(lladdr=slla)
    return bytes(frame)


def na(tgt: str = str(V6), src: str = FOREIGN) -> bytes:
    return bytes(Ether(src=src, dst=ALL_NODES_MAC) / IPv6(src=tgt, dst="ff02::1", hlim=255)
                 / ICMPv6ND_NA(tgt=tgt, R=0, S=0, O=1))


def d(frame: bytes, iface: str = "eth0",
      owned: dict[IPAddress, frozenset[str] | None] | None = None) -> Decision:
    return decide(frame, iface, EVERYWHERE if owned is None else owned, OURS)


# --- replies ---------------------------------------------------------------------------------


def test_arp_request_for_owned_vip_gets_a_reply_to_the_requester() -> None:
    assert d(arp()) == ArpReply(V4, PEER, PEER_IP4)
    # The reply goes to the ARP sender hardware address, not the Ethernet source.
    assert d(arp(src="02:00:00:00:00:0a")) == ArpReply(V4, PEER, PEER_IP4)


def test_arp_probe_for_owned_vip_is_answered() -> None:
    # RFC 5227 probe (sender address 0.0.0.0): our answer is how the prober sees the conflict.
    assert d(arp(spa="0.0.0.0")) == ArpReply(V4, PEER, ipaddress.IPv4Address("0.0.0.0"))


def test_neighbor_solicitation_gets_a_solicited_advertisement() -> None:
    assert d(ns()) == NeighborAdvertisement(V6, PEER, PEER_IP6, solicited=True)


def test_advertisement_goes_to_the_source_link_layer_address_option() -> None:
    # The option wins over the Ethernet source; without the option, the Ethernet source.
    assert d(ns(slla="02:00:00:00:00:0b")) == NeighborAdvertisement(
        V6, "02:00:00:00:00:0b", PEER_IP6, solicited=True)
    assert d(ns(slla=None)) == NeighborAdvertisement(V6, PEER, PEER_IP6, solicited=True)


def test_malformed_option_is_no_drop_the_ethernet_source_is_used() -> None:
    bad = bytes(Ether(src=PEER, dst="33:33:ff:01:00:05")
                / IPv6(src=str(PEER_IP6), dst="ff02::1:ff01:5", hlim=255)
                / ICMPv6ND_NS(tgt=str(V6)) / Raw(b"\x01\x00" + bytes.fromhex("020000000bff")))
    assert d(bad) == NeighborAdvertisement(V6, PEER, PEER_IP6, solicited=True)


def test_dad_solicitation_is_answered_to_all_nodes_unsolicited() -> None:
    dad = ns(ip="::", slla=None)
    assert d(dad) == NeighborAdvertisement(V6, ALL_NODES_MAC, ALL_NODES, solicited=False)
    assert d(dad) == NeighborAdvertisement(V6, "33:33:00:00:00:01",
                                           ipaddress.IPv6Address("ff02::1"), solicited=False)


def test_only_on_the_interfaces_a_vip_may_be_answered_on() -> None:
    assert d(arp(), "eth1", ONLY_ETH1) == ArpReply(V4, PEER, PEER_IP4)
    assert d(arp(), "eth0", ONLY_ETH1) is Drop.NOT_ON_THIS_INTERFACE
    assert d(ns(), "eth1", ONLY_ETH1) == NeighborAdvertisement(V6, PEER, PEER_IP6, True)
    assert d(ns(), "eth0", ONLY_ETH1) is Drop.NOT_ON_THIS_INTERFACE


# --- duplicates ------------------------------------------------------------------------------


@pytest.mark.parametrize("frame,vip", [
    (arp(op=1, sha=FOREIGN, spa=str(V4), tpa=str(V4)), V4),  # gratuitous ARP
    (arp(op=2, sha=FOREIGN, spa=str(V4), tpa=str(PEER_IP4)), V4),  # ARP reply
    (arp(op=1, sha=FOREIGN, spa=str(V4), tpa=str(PEER_IP4)), V4),  # a request using our VIP
    (na(), V6),  # (unsolicited) neighbor advertisement
], ids=["garp", "arp-reply", "arp-request-from-vip", "na"])
def test_another_mac_claiming_an_owned_vip_is_a_duplicate(frame: bytes, vip: IPAddress) -> None:
    assert d(frame) == Duplicate(vip, FOREIGN, "eth0")


def test_duplicate_claims_are_seen_on_every_interface() -> None:
    # Interface restrictions are about answering; a claim anywhere is a claim.
    garp = arp(sha=FOREIGN, spa=str(V4), tpa=str(V4))
    assert d(garp, "eth0", ONLY_ETH1) == Duplicate(V4, FOREIGN, "eth0")
    assert d(na(), "eth0", ONLY_ETH1) == Duplicate(V6, FOREIGN, "eth0")


def test_a_claim_is_a_duplicate_before_it_is_a_request() -> None:
    # A foreign GARP is a request for an owned VIP too: it is reported, not answered.
    assert isinstance(d(arp(sha=FOREIGN, spa=str(V4), tpa=str(V4))), Duplicate)


def test_the_claimant_is_the_arp_sender_or_the_ethernet_source_of_an_na() -> None:
    # ARP: the sender hardware address (what neighbour caches learn), even from another
    # Ethernet source; NDP: the Ethernet source.
    assert d(arp(op=2, sha=FOREIGN, spa=str(V4), src=MAC)) == Duplicate(V4, FOREIGN, "eth0")
    assert d(arp(op=2, sha=MAC, spa=str(V4), src=FOREIGN)) is Drop.FROM_OUR_MAC
    assert d(na(src=MAC1)) is Drop.FROM_OUR_MAC


def test_our_own_mac_is_never_a_duplicate() -> None:
    for mac in OURS:
        own = bytes(Ether(src=mac) / ARP(op=2, hwsrc=mac, psrc=str(V4)))
        assert d(own) is Drop.FROM_OUR_MAC
        assert d(arp(sha=mac, spa=str(V4), tpa=str(V4))) is Drop.FROM_OUR_MAC  # our GARP
        assert d(na(src=mac)) is Drop.FROM_OUR_MAC


# --- drops -----------------------------------------------------------------------------------

IPV6_UDP = bytes(Ether(src=PEER) / IPv6(src=str(PEER_IP6), dst=str(V6))
                 / UDP(sport=1, dport=2) / Raw(b"x" * 24))
RS = bytes(Ether(src=PEER) / IPv6(src=str(PEER_IP6), dst="ff02::2", hlim=255)
           / ICMPv6ND_RS() / Raw(b"\x00" * 24))

DROPS: list[tuple[str, bytes, str, dict[IPAddress, frozenset[str] | None], Drop]] = [
    ("empty", b"", "eth0", EVERYWHERE, Drop.TRUNCATED),
    ("no-ethertype", b"\x00" * 13, "eth0", EVERYWHERE, Drop.TRUNCATED),
    ("short-arp", arp()[:41], "eth0", EVERYWHERE, Drop.TRUNCATED),
    ("short-ns", ns(slla=None)[:77], "eth0", EVERYWHERE, Drop.TRUNCATED),
    ("ipv4", bytes(Ether(src=PEER) / IP(dst=str(V4)) / UDP()), "eth0", EVERYWHERE,
     Drop.NOT_ARP_OR_IPV6),
    ("junk", bytes(range(256)), "eth0", EVERYWHERE, Drop.NOT_ARP_OR_IPV6),
    ("ipv6-udp", IPV6_UDP, "eth0", EVERYWHERE, Drop.NOT_ICMPV6),
    ("arp-reply-to-us", arp(op=2, sha=PEER, spa=str(PEER_IP4), tpa=str(V4)), "eth0",
     EVERYWHERE, Drop.ARP_NOT_REQUEST),
    ("arp-junk", b"\x08\x06" * 30, "eth0", EVERYWHERE, Drop.ARP_NOT_REQUEST),
    ("na-other-target", na(tgt="2001:db8::77"), "eth0", EVERYWHERE, Drop.NDP_NOT_SOLICITATION),
    ("router-solicitation", RS, "eth0", EVERYWHERE, Drop.NDP_NOT_SOLICITATION),
    ("icmpv6-zeros", b"\x00" * 12 + b"\x86\xdd" + b"\x00" * 6 + b"\x3a" + b"\x00" * 60, "eth0",
     EVERYWHERE, Drop.NDP_NOT_SOLICITATION),
    ("arp-other-address", arp(tpa="192.0.2.201"), "eth0", EVERYWHERE, Drop.NOT_OWNED),
    ("ns-other-address", ns(tgt="2001:db8::77"), "eth0", EVERYWHERE, Drop.NOT_OWNED),
    ("arp-nothing-owned", arp(), "eth0", {}, Drop.NOT_OWNED),
    ("arp-other-interface", arp(), "eth0", ONLY_ETH1, Drop.NOT_ON_THIS_INTERFACE),
    ("ns-other-interface", ns(), "eth0", ONLY_ETH1, Drop.NOT_ON_THIS_INTERFACE),
    ("arp-from-us", arp(sha=MAC1, src=MAC1), "eth0", EVERYWHERE, Drop.FROM_OUR_MAC),
    ("ns-from-us", ns(src=MAC1, slla=MAC1), "eth0", EVERYWHERE, Drop.FROM_OUR_MAC),
    ("our-dad-probe", ns(src=MAC, ip="::", slla=None), "eth0", EVERYWHERE, Drop.FROM_OUR_MAC),
]


@pytest.mark.parametrize("frame,iface,owned,reason", [c[1:] for c in DROPS],
                         ids=[c[0] for c in DROPS])
def test_drop_reasons(frame: bytes, iface: str, owned: dict[IPAddress, frozenset[str] | None],
                      reason: Drop) -> None:
    assert decide(frame, iface, owned, OURS) is reason


def test_drop_table_covers_every_reason() -> None:
    assert {c[-1] for c in DROPS} == set(Drop)


def test_drop_reasons_are_distinct_metric_labels() -> None:
    labels = [r.value for r in Drop]
    assert len(set(labels)) == len(labels)
    assert all(label.isidentifier() and label.islower() for label in labels)


def test_every_prefix_of_a_frame_is_decided_without_raising() -> None:
    frames = [arp(), arp(sha=FOREIGN, spa=str(V4), tpa=str(V4)), ns(), ns(ip="::"), na(),
              IPV6_UDP, RS]
    for frame in frames:
        for n in range(len(frame) + 1):
            assert isinstance(d(frame[:n]), ArpReply | NeighborAdvertisement | Duplicate | Drop)


# --- source link-layer address option ------------------------------------------------------


@pytest.mark.parametrize("options,expected", [
    (b"", None),
    (b"\x01\x01" + bytes.fromhex("020000000009"), PEER),
    # A nonce option (type 14, 8 bytes) before the source link-layer address option.
    (b"\x0e\x01" + b"\x00" * 6 + b"\x01\x01" + bytes.fromhex("020000000009"), PEER),
    (b"\x02\x01" + bytes.fromhex("020000000009"), None),  # target link-layer address option
    (b"\x01\x00" + bytes.fromhex("020000000009"), None),  # length 0: invalid, stop
    (b"\x01\x01\x02\x00", None),  # cut short
])
def test_source_lladdr(options: bytes, expected: str | None) -> None:
    assert source_lladdr(options) == expected
