"""What the layer-2 responder does with one received frame: the pure decision (no I/O).

``decide`` takes one Ethernet frame as received on an interface, the owned VIPs (with the
interfaces each may be answered on) and the MACs of our own interfaces, and returns one of

* a reply to send — ``ArpReply`` or ``NeighborAdvertisement``, as data (for which VIP, to
  which MAC and IP address); the shell (``speaker/l2.py``) builds the bytes with scapy and
  sends them from the receiving interface's MAC;
* a ``Duplicate``: another MAC claims a VIP we own (an ARP frame whose sender address is the
  VIP, or an NA whose target is the VIP) — the shell reports it;
* a ``Drop`` member naming why the frame gets neither (the shell counts it).

The socket thread in ``speaker/l2.py`` only receives, calls ``decide``, and sends / reports /
counts; everything about what a frame means is here and tested without sockets.

Frames are read at fixed offsets, not dissected (a dissection per frame would cost more than
the whole reply): untagged Ethernet, ARP at 14, IPv6 at 14 with ICMPv6 directly after the
fixed header (the same shape the kernel BPF filter of ``speaker.core.bpf`` admits; the
filter is not trusted here — every offset read is length-checked first).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from common.api.model import IPAddress
from speaker.core.bpf import ETH_P_ARP, ETH_P_IPV6, ICMPV6, NA, NS

ARP_REQUEST = 1
# Minimum lengths for the fixed offsets read below: Ethernet header (14); ARP for IPv4 over
# Ethernet up to the end of the target protocol address (14 + 28); IPv6 header (40) + NS/NA
# up to the end of the target address (24).
ETH_LEN = 14
ARP_LEN = ETH_LEN + 28
ND_LEN = ETH_LEN + 40 + 24
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = "33:33:00:00:00:01"  # RFC 2464 §7: 33:33 + low 32 bits of ff02::1


class Drop(enum.Enum):
    """Why a received frame gets no reply and is no duplicate claim (value: a metric label)."""

    TRUNCATED = "truncated"  # shorter than the offsets its type needs
    NOT_ARP_OR_IPV6 = "not_arp_or_ipv6"  # EtherType is neither ARP nor IPv6
    NOT_ICMPV6 = "not_icmpv6"  # IPv6 whose next header is not ICMPv6
    ARP_NOT_REQUEST = "arp_not_request"  # ARP reply (etc.) that claims no VIP of ours
    NDP_NOT_SOLICITATION = "ndp_not_solicitation"  # NA for another address, RS, RA, ...
    NOT_OWNED = "not_owned"  # a request for an address we do not own
    NOT_ON_THIS_INTERFACE = "not_on_this_interface"  # owned, but answered on other interfaces
    FROM_OUR_MAC = "from_our_mac"  # sent by one of our own interfaces


@dataclass(frozen=True, slots=True)
class ArpReply:
    """ARP reply for ``vip`` to the requester (``dst_mac``: its sender hardware address)."""

    vip: ipaddress.IPv4Address
    dst_mac: str
    dst_ip: ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class NeighborAdvertisement:
    """NA for ``vip`` (override flag set), addressed to ``dst_ip`` / ``dst_mac``.

    Solicited (S flag) to the requester — its source link-layer address option, else the
    Ethernet source; an NS from ``::`` (duplicate address detection) has no address to answer
    to, so the NA goes unsolicited to all nodes (RFC 4861 §7.2.4).
    """

    vip: ipaddress.IPv6Address
    dst_mac: str
    dst_ip: ipaddress.IPv6Address
    solicited: bool


Reply = ArpReply | NeighborAdvertisement


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Another MAC (``mac``) claims ``vip``, which we own; seen on interface ``iface``."""

    vip: IPAddress
    mac: str
    iface: str


Decision = Reply | Duplicate | Drop


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _drop_for_request(target: IPAddress, iface: str, sender_mac: str,
                      owned: Mapping[IPAddress, frozenset[str] | None],
                      our_macs: frozenset[str]) -> Drop | None:
    """Why a request (ARP request / NS) for ``target`` is not answered here; None: answer."""
    if target not in owned:
        return Drop.NOT_OWNED
    names = owned[target]
    if names is not None and iface not in names:
        return Drop.NOT_ON_THIS_INTERFACE
    if sender_mac in our_macs:
        return Drop.FROM_OUR_MAC
    return None


def decide(frame: bytes, iface: str, owned: Mapping[IPAddress, frozenset[str] | None],
           our_macs: frozenset[str]) -> Decision:
    """What to do with ``frame``, received on interface ``iface``.

    ``owned`` maps each VIP we answer for to the interfaces it may be answered on (None: all);
    ``our_macs`` are the MACs of all our interfaces (a frame from one of them is ours, looped
    back or seen on another interface of the same segment, never a claim nor a request).
    """
    if len(frame) < ETH_LEN:
        return Drop.TRUNCATED
    etype = int.from_bytes(frame[12:14], "big")
    if etype == ETH_P_ARP:
        if len(frame) < ARP_LEN:
            return Drop.TRUNCATED
        # The sender hardware address, not the Ethernet source: what a neighbour cache learns.
        sender_mac = mac_str(frame[22:28])
        spa = ipaddress.IPv4Address(frame[28:32])
        if spa in owned:  # the sender claims one of our VIPs
            if sender_mac in our_macs:
                return Drop.FROM_OUR_MAC
            return Duplicate(spa, sender_mac, iface)
        if int.from_bytes(frame[20:22], "big") != ARP_REQUEST:
            return Drop.ARP_NOT_REQUEST
        tpa = ipaddress.IPv4Address(frame[38:42])
        why = _drop_for_request(tpa, iface, sender_mac, owned, our_macs)
        if why is not None:
            return why
        return ArpReply(tpa, sender_mac, spa)
    if etype != ETH_P_IPV6:
        return Drop.NOT_ARP_OR_IPV6
    if len(frame) < ND_LEN:
        return Drop.TRUNCATED
    if frame[20] != ICMPV6:
        return Drop.NOT_ICMPV6
    icmp_type = frame[54]
    target = ipaddress.IPv6Address(frame[62:78])
    src_mac = mac_str(frame[6:12])
    if icmp_type == NA and target in owned:  # the sender claims one of our VIPs
        if src_mac in our_macs:
            return Drop.FROM_OUR_MAC
        return Duplicate(target, src_mac, iface)
    if icmp_type != NS:
        return Drop.NDP_NOT_SOLICITATION
    why = _drop_for_request(target, iface, src_mac, owned, our_macs)
    if why is not None:
        return why
    src_ip = ipaddress.IPv6Address(frame[22:38])
    if src_ip.is_unspecified:
        return NeighborAdvertisement(target, ALL_NODES_MAC, ALL_NODES, solicited=False)
    return NeighborAdvertisement(target, source_lladdr(frame[ND_LEN:]) or src_mac, src_ip,
                                 solicited=True)


def source_lladdr(options: bytes) -> str | None:
    """Source link-layer address option (type 1) of an NS, if present and well-formed."""
    i = 0
    while i + 2 <= len(options):
        otype, olen = options[i], options[i + 1] * 8
        if olen == 0:  # RFC 4861 §4.6: length 0 is invalid; stop rather than loop forever
            return None
        if otype == 1 and olen >= 8 and i + 8 <= len(options):
            return mac_str(options[i + 2:i + 8])
        i += olen
    return None
