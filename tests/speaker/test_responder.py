"""The ARP/NDP responder's shell on fake sockets: frames built and sent for the pure decision
(speaker.core.l2_reply, tested in test_l2_reply.py), duplicates reported, drops counted, and
the announcement schedule.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from speaker.core.l2_reply import Drop
from speaker.l2 import GARP_SCHEDULE, Metrics, Responder, _Iface

MAC = "02:aa:00:00:00:01"
V4 = ipaddress.IPv4Address("192.0.2.200")
V6 = ipaddress.IPv6Address("2001:db8::1:5")


class FakeSock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.opts: list[tuple[int, int, bytes]] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def setsockopt(self, level: int, opt: int, value: bytes) -> None:
        self.opts.append((level, opt, value))

    def close(self) -> None:
        pass


class Counter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}

    def labels(self, *labels: str) -> Counter:
        self._cur = labels
        return self

    def inc(self, n: int = 1) -> None:
        self.counts[self._cur] = self.counts.get(self._cur, 0) + n


class Log:
    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **k: None


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def responder(owned: dict[Any, frozenset[str] | None]) -> tuple[Responder, FakeSock, list[Any],
                                                              Clock, Metrics]:
    dups: list[Any] = []
    clock = Clock()
    m = Metrics(Counter(), Counter(), Counter(), Counter(), Counter())
    r = Responder(None, m, Log(), lambda *a: dups.append(a), clock)
    sock = FakeSock()
    r._ifaces["eth0"] = _Iface("eth0", 2, MAC, sock, FakeSock())  # type: ignore[arg-type]
    r.set_owned(owned)
    r._apply_desired()
    return r, sock, dups, clock, m


def arp_req(tpa: str, sha: str = "02:00:00:00:00:09", spa: str = "192.0.2.9") -> bytes:
    return bytes(Ether(src=sha, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=sha, psrc=spa,
                                                               pdst=tpa))


def test_takeover_announces_at_once_and_on_schedule() -> None:
    r, sock, _, clock, m = responder({V4: None})
    assert len(sock.sent) == 1
    garp = Ether(sock.sent[0])
    assert garp[ARP].op == 1 and garp[ARP].psrc == garp[ARP].pdst == str(V4)
    assert garp.dst == "ff:ff:ff:ff:ff:ff" and garp[ARP].hwsrc == MAC
    clock.t += max(GARP_SCHEDULE) + 0.01
    r._send_due()
    # All remaining scheduled announcements that are due (late ones are coalesced).
    assert 2 <= len(sock.sent) <= len(GARP_SCHEDULE)
    clock.t += 100
    r._send_due()
    assert not r._due
    assert m.gratuitous.counts[("arp", "eth0")] >= 2  # type: ignore[attr-defined]


def test_ipv6_takeover_sends_an_unsolicited_advertisement() -> None:
    _, sock, _, _, m = responder({V6: None})
    (na,) = [Ether(f) for f in sock.sent]
    assert na[ICMPv6ND_NA].tgt == str(V6) and na[ICMPv6ND_NA].S == 0 and na[ICMPv6ND_NA].O == 1
    assert na[IPv6].dst == "ff02::1" and na.dst == "33:33:00:00:00:01" and na.src == MAC
    assert na[IPv6].src == str(V6) and na[IPv6].hlim == 255
    assert m.gratuitous.counts == {("ndp", "eth0"): 1}  # type: ignore[attr-defined]


def test_arp_request_for_owned_vip_gets_a_reply() -> None:
    r, sock, dups, _, m = responder({V4: None})
    sock.sent.clear()
    r._handle(r._ifaces["eth0"], arp_req(str(V4)))
    (reply,) = [Ether(f) for f in sock.sent]
    assert reply[ARP].op == 2 and reply[ARP].psrc == str(V4) and reply[ARP].hwsrc == MAC
    assert reply.dst == "02:00:00:00:00:09" and reply[ARP].pdst == "192.0.2.9"
    assert reply.src == MAC and reply[ARP].hwdst == "02:00:00:00:00:09"
    assert m.requests.counts == {("arp", "eth0"): 1}  # type: ignore[attr-defined]
    assert m.replies.counts == {("arp", "eth0"): 1}  # type: ignore[attr-defined]
    # Drops (which reasons: test_l2_reply.py) send nothing and are counted, not reported.
    r._handle(r._ifaces["eth0"], arp_req("192.0.2.201"))
    assert len(sock.sent) == 1 and not dups
    assert r.drops() == {("eth0", Drop.NOT_OWNED): 1}


def test_foreign_claim_is_a_duplicate() -> None:
    r, _, dups, clock, m = responder({V4: None})
    foreign = "02:ee:00:00:00:99"
    garp = bytes(Ether(src=foreign, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=foreign, psrc=str(V4), pdst=str(V4)))
    r._handle(r._ifaces["eth0"], garp)
    assert dups == [(V4, foreign, "eth0")]
    assert r.foreign_since(V4, clock.t) and not r.foreign_since(V4, clock.t + 1)
    assert m.duplicates.counts == {("arp",): 1}  # type: ignore[attr-defined]
    # Our own MAC is never a duplicate.
    r._handle(r._ifaces["eth0"], bytes(Ether(src=MAC) / ARP(op=2, hwsrc=MAC, psrc=str(V4))))
    assert len(dups) == 1
    assert r.drops() == {("eth0", Drop.FROM_OUR_MAC): 1}


def test_neighbor_solicitation_gets_advertisement() -> None:
    r, sock, _, _, _ = responder({V6: None})
    sock.sent.clear()
    ns = bytes(Ether(src="02:00:00:00:00:09", dst="33:33:ff:01:00:05")
               / IPv6(src="2001:db8::9", dst="ff02::1:ff01:5", hlim=255)
               / ICMPv6ND_NS(tgt=str(V6)) / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:09"))
    r._handle(r._ifaces["eth0"], ns)
    (na,) = [Ether(f) for f in sock.sent]
    assert na[ICMPv6ND_NA].tgt == str(V6) and na[ICMPv6ND_NA].S == 1 and na[ICMPv6ND_NA].O == 1
    assert na[IPv6].dst == "2001:db8::9" and na.dst == "02:00:00:00:00:09"
    assert na[IPv6].hlim == 255
    # DAD probe (source ::): answered to all nodes, not solicited.
    sock.sent.clear()
    dad = bytes(Ether(src="02:00:00:00:00:09", dst="33:33:ff:01:00:05")
                / IPv6(src="::", dst="ff02::1:ff01:5", hlim=255) / ICMPv6ND_NS(tgt=str(V6)))
    r._handle(r._ifaces["eth0"], dad)
    (na2,) = [Ether(f) for f in sock.sent]
    assert na2[IPv6].dst == "ff02::1" and na2[ICMPv6ND_NA].S == 0
    assert na2.dst == "33:33:00:00:00:01" and na2[ICMPv6ND_NA].O == 1 and na2.src == MAC


def test_ipv6_vip_joins_solicited_node_group_and_leaves() -> None:
    r, _, _, _, _ = responder({V6: None})
    iface = r._ifaces["eth0"]
    assert ipaddress.IPv6Address("ff02::1:ff01:5") in iface.groups
    r.set_owned({})
    r._apply_desired()
    assert not iface.groups
    mc = iface.mc
    assert len(mc.opts) == 2  # type: ignore[attr-defined]


def test_handing_over_goes_silent_when_the_next_owner_announces() -> None:
    r, sock, dups, clock, _ = responder({V4: None})
    r.quiet_duplicates = True
    foreign = "02:ee:00:00:00:98"
    r._handle(r._ifaces["eth0"], bytes(Ether(src=foreign, dst="ff:ff:ff:ff:ff:ff")
                                       / ARP(op=1, hwsrc=foreign, psrc=str(V4), pdst=str(V4))))
    assert dups == [] and r.foreign_since(V4, clock.t) and V4 not in r.owned()
    sock.sent.clear()
    r._handle(r._ifaces["eth0"], arp_req(str(V4)))
    assert sock.sent == []


def test_without_a_valid_lease_nothing_is_answered_or_announced() -> None:
    """The answer lease (speaker.answer_lease): a stale view — the heartbeat process froze,
    is re-learning after a stall, or has a newer live map than our plan — answers nothing;
    requests queued meanwhile are dropped, and announcements wait for a current plan."""
    from speaker.answer_lease import AnswerLease

    lease = AnswerLease()
    try:
        r, sock, _, clock, _ = responder({})
        r.lease = lease
        lease.write(1, clock.t + 0.1)
        r.set_owned({V4: None}, epoch=1)
        r._apply_desired()
        assert len(sock.sent) == 1  # the takeover's gratuitous ARP: the lease is valid
        sock.sent.clear()
        clock.t += 3.0  # frozen: the lease ran out meanwhile
        for _ in range(5):
            r._handle(r._ifaces["eth0"], arp_req(str(V4)))
        r._send_due()
        assert sock.sent == [] and r.stale_drops() == {"eth0": 5}
        lease.write(2, clock.t + 0.1)  # renewed, but for a newer live map than our plan
        r._handle(r._ifaces["eth0"], arp_req(str(V4)))
        assert sock.sent == []
        r.set_owned({V4: None}, epoch=2)  # replanned (same VIPs): answers again
        r._apply_desired()
        r._handle(r._ifaces["eth0"], arp_req(str(V4)))
        assert [Ether(f)[ARP].op for f in sock.sent] == [2]
        r.quiet_duplicates = True  # a graceful hand-over answers until the next owner spoke
        lease.write(3, 0.0)
        r._handle(r._ifaces["eth0"], arp_req(str(V4)))
        assert len(sock.sent) == 2
    finally:
        lease.close()


def test_answer_lease_is_shared_through_its_fd() -> None:
    from speaker.answer_lease import AnswerLease

    writer = AnswerLease()
    reader = AnswerLease(writer.fd)
    try:
        assert reader.read() == (0, 0.0) and not reader.valid(0, 1.0)
        writer.write(7, 10.0)
        assert reader.read() == (7, 10.0)
        assert reader.valid(7, 9.99) and not reader.valid(7, 10.0) and not reader.valid(6, 5.0)
    finally:
        reader.close()
        writer.close()
