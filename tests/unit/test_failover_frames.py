"""lab.failover's pure parts: TCP SYN frames for both families, reading SYN-ACKs and
Neighbor Advertisements back, and finding a speaker container's process group in a pod's
status (the lab cluster's kill / freeze faults)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest

from lab.failover import (
    NS_SENDERS,
    SpeakerPods,
    Syn6Prober,
    SynProber,
    _checksum,
    _pseudo_header,
    _syn,
    answer_ns_for_senders,
    container_pid,
    l4_of,
    na_reply,
    pod_ready,
)

VIP6, SRC6 = "2001:db8:a::1:d0", "2001:db8:a::64"
VIP4, SRC4 = "192.0.2.210", "192.0.2.100"
NODE_MAC = bytes.fromhex("020000000a02")
CLIENT_MAC = bytes.fromhex("020000000064")


def _b(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)


def _frame6(src: str, dst: str, payload: bytes, nh: int = 6) -> bytes:
    ip6 = struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + _b(src) + _b(dst)
    return CLIENT_MAC + NODE_MAC + b"\x86\xdd" + ip6 + payload


def _frame4(src: str, dst: str, payload: bytes) -> bytes:
    ip4 = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0, 64, 6, 0) + _b(src) \
        + _b(dst)
    return CLIENT_MAC + NODE_MAC + b"\x08\x00" + ip4 + payload


def test_syn_checksum_is_valid_over_the_ipv6_pseudo_header() -> None:
    seg = _syn(_b(SRC6), _b(VIP6), 1234, 80, 0xDEADBEEF)
    assert len(seg) == 20 and seg[13] == 0x02  # SYN only
    pseudo = _pseudo_header(_b(SRC6), _b(VIP6), socket.IPPROTO_TCP, len(seg))
    assert len(pseudo) == 40
    assert _checksum(pseudo + seg) == 0  # a valid checksum sums to all ones


def test_syn_checksum_is_valid_over_the_ipv4_pseudo_header() -> None:
    seg = _syn(_b(SRC4), _b(VIP4), 1234, 80, 7)
    pseudo = _pseudo_header(_b(SRC4), _b(VIP4), socket.IPPROTO_TCP, len(seg))
    assert len(pseudo) == 12
    assert _checksum(pseudo + seg) == 0


def test_syn_ack_over_ipv6_names_its_probe() -> None:
    p = Syn6Prober("ns", "pl-eth0", VIP6, SRC6, 80)
    seq = 4242
    frame = _frame6(VIP6, SRC6, _tcp(80, p._sport(seq), 99, seq + 1, 0x12))
    assert l4_of(frame) == (6, _b(VIP6), 54)
    assert p._data_reply(frame) == seq
    # a RST, another port, another source address, or a wrong source port: not a reply
    assert p._data_reply(_frame6(VIP6, SRC6, _tcp(80, p._sport(seq), 0, seq + 1, 0x04))) \
        is None
    assert p._data_reply(_frame6(VIP6, SRC6, _tcp(81, p._sport(seq), 9, seq + 1, 0x12))) \
        is None
    assert p._data_reply(_frame6("2001:db8:a::1:d1", SRC6,
                                 _tcp(80, p._sport(seq), 9, seq + 1, 0x12))) is None
    assert p._data_reply(_frame6(VIP6, SRC6, _tcp(80, p._sport(seq) + 1, 9, seq + 1,
                                                   0x12))) is None
    assert p.DATA_ETHERTYPE == 0x86DD


def test_syn_ack_over_ipv4_still_parsed_by_the_shared_code() -> None:
    p = SynProber("ns", "pl-eth0", VIP4, SRC4, 80)
    frame = _frame4(VIP4, SRC4, _tcp(80, p._sport(77), 1, 78, 0x12))
    assert p._data_reply(frame) == 77
    assert p.DATA_ETHERTYPE == 0x0800


def test_syn_prober_refuses_mixed_families() -> None:
    with pytest.raises(ValueError):
        SynProber("ns", "pl-eth0", VIP6, SRC4, 80)


def _na(target: str, dst: str) -> bytes:
    icmp = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + _b(target)
    return _frame6(target, dst, icmp, nh=58)


def test_neighbor_advertisement_names_round_and_mac() -> None:
    frame = _na(VIP6, NS_SENDERS[3])
    assert na_reply(frame, _b(VIP6)) == (3, "02:00:00:00:0a:02")
    p = Syn6Prober("ns", "pl-eth0", VIP6, SRC6, 80)
    assert p._ctl_reply(frame) == (3, "02:00:00:00:0a:02")
    assert na_reply(_na(VIP6, "2001:db8:a::64"), _b(VIP6)) is None  # not one of ours
    assert na_reply(_na("2001:db8:a::1:d1", NS_SENDERS[0]), _b(VIP6)) is None


def test_syn6_prober_asks_by_neighbor_solicitation() -> None:
    pytest.importorskip("scapy")
    reqs = Syn6Prober("ns", "pl-eth0", VIP6, SRC6, 80)._requests()
    assert len(reqs) == len(NS_SENDERS)
    for req, sender in zip(reqs, NS_SENDERS, strict=True):
        assert req[12:14] == b"\x86\xdd" and req[20] == 58 and req[54] == 135
        assert req[22:38] == _b(sender) and req[62:78] == _b(VIP6)


def _pod(name: str, node: str, *, pid: int | None, ready: bool = True,
         deleting: bool = False, container: str = "speaker") -> dict[str, Any]:
    state = {"running": {"startedAt": "x"}} if pid is not None else {"waiting": {}}
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "x"
    return {"metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": container}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{
                           "name": container, "state": state,
                           "containerID": f"portico-lab://{pid}" if pid else ""}]}}


def test_container_pid_and_readiness_from_pod_status() -> None:
    assert container_pid(_pod("a", "node2", pid=4321), "speaker") == 4321
    assert container_pid(_pod("a", "node2", pid=None), "speaker") is None
    assert container_pid(_pod("a", "node2", pid=4321), "other") is None
    odd = _pod("a", "node2", pid=1)
    odd["status"]["containerStatuses"][0]["containerID"] = "containerd://abc"
    assert container_pid(odd, "speaker") is None
    assert pod_ready(_pod("a", "node2", pid=1))
    assert not pod_ready(_pod("a", "node2", pid=1, ready=False))


def test_speaker_pods_skip_terminating_and_foreign_pods() -> None:
    calls: list[tuple[str, str]] = []
    pods = [_pod("old", "node2", pid=10, deleting=True),
            _pod("ctl", "node2", pid=11, container="controller"),
            _pod("new", "node2", pid=12)]

    def api(method: str, path: str) -> Any:
        calls.append((method, path))
        return {"items": pods} if method == "GET" else {}

    sp = SpeakerPods(api, "metallb-system")
    assert sp.pid("node2") == 12
    assert "fieldSelector=spec.nodeName%3Dnode2" in calls[0][1]
    assert sp.delete("node2") == "uid-new"
    assert calls[-1] == ("DELETE", "/api/v1/namespaces/metallb-system/pods/new")


def test_made_up_senders_answer_a_nodes_neighbor_solicitation() -> None:
    """A node that answers NDP from its kernel (MetalLB) resolves the asking address first:
    the prober answers for its made-up senders from PROBE_MAC, with a valid checksum."""
    pytest.importorskip("scapy")
    from lab.probe import neighbor_solicitation
    from lab.topology import PROBE_IP6_A, PROBE_MAC

    node_mac, node_ip = "02:00:00:00:0a:02", "2001:db8:a::12"
    for sender in (NS_SENDERS[5], PROBE_IP6_A):
        ns = neighbor_solicitation(node_mac, node_ip, sender)
        na = answer_ns_for_senders(ns)
        assert na is not None
        assert na[0:6] == bytes.fromhex(node_mac.replace(":", ""))
        assert na[6:12] == bytes.fromhex(PROBE_MAC.replace(":", ""))
        assert na[22:38] == _b(sender) and na[38:54] == _b(node_ip)
        assert na[54] == 136 and na[62:78] == _b(sender) and na[21] == 255
        assert na[78:80] == b"\x02\x01" and na[80:86] == na[6:12]
        icmp = na[54:]
        assert _checksum(_pseudo_header(_b(sender), _b(node_ip), 58, len(icmp)) + icmp) == 0
    # not one of ours, or DAD (unspecified source): no answer
    assert answer_ns_for_senders(neighbor_solicitation(node_mac, node_ip, VIP6)) is None
    assert answer_ns_for_senders(neighbor_solicitation(node_mac, "::", NS_SENDERS[0])) is None
    assert answer_ns_for_senders(_na(VIP6, NS_SENDERS[0])) is None
