"""The ARP/NDP responder's shell on fake sockets: frames built and sent for the pure decision
(speaker.core.l2_reply, tested in test_l2_reply.py), duplicates reported, drops counted, and
the announcement schedule.
"""

from __future__ import annotations

import ipaddress
import socket
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
        self.inbox: list[bytes] = []  # frames queued in the kernel, read by recvfrom
        self.on_send: Any = None

    def send(self, data: bytes) -> int:
        if self.on_send is not None:
            self.on_send(data)
        self.sent.append(data)
        return len(data)

    def recvfrom(self, _size: int, _flags: int = 0) -> tuple[bytes, tuple[Any, ...]]:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.pop(0), ("eth0", 0x0003, socket.PACKET_HOST, 1, b"")

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


def ns_req(tgt: str, src: str = "2001:db8::9", sha: str = "02:00:00:00:00:09") -> bytes:
    return bytes(Ether(src=sha, dst="33:33:ff:01:00:05")
                 / IPv6(src=src, dst="ff02::1:ff01:5", hlim=255)
                 / ICMPv6ND_NS(tgt=tgt) / ICMPv6NDOptSrcLLAddr(lladdr=sha))


def test_silenced_responder_answers_and_announces_nothing_but_hears_the_next_owner() -> None:
    """Graceful stop, step 1 (speaker.l2_announcer): silent for both families before saying
    "leaving"; the next owner's announcement is recorded (the hand-over's confirmation) and
    not reported as a duplicate."""
    r, sock, dups, clock, m = responder({V4: None, V6: None})
    sock.sent.clear()
    r.silence()
    assert not r.may_answer()
    r._handle(r._ifaces["eth0"], arp_req(str(V4)))
    r._handle(r._ifaces["eth0"], ns_req(str(V6)))
    clock.t += max(GARP_SCHEDULE) + 20  # announcements and duplicate probes fall due: none
    r._send_due()
    assert sock.sent == [] and r.silent_drops() == 2
    foreign = "02:ee:00:00:00:98"
    r._handle(r._ifaces["eth0"], bytes(Ether(src=foreign, dst="ff:ff:ff:ff:ff:ff")
                                       / ARP(op=1, hwsrc=foreign, psrc=str(V4), pdst=str(V4))))
    r._handle(r._ifaces["eth0"], bytes(
        Ether(src=foreign, dst="33:33:00:00:00:01") / IPv6(src=str(V6), dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=str(V6), R=0, S=0, O=1)))
    assert dups == [] and m.duplicates.counts == {}  # type: ignore[attr-defined]
    assert r.foreign_since(V4, clock.t) and r.foreign_since(V6, clock.t)
    # Still owned (the kernel filter keeps passing the next owner's frames), never answered.
    assert r.owned() == {V4, V6}
    r._handle(r._ifaces["eth0"], arp_req(str(V4)))
    assert sock.sent == []


def test_nothing_is_sent_once_silence_returns() -> None:
    """Every send happens under the lock silence() takes to set the flag: a reply in flight
    is on the wire before silence() returns, or never."""
    r, sock, _, _, _ = responder({V4: None})
    sock.sent.clear()
    held: list[bool] = []
    sock.on_send = lambda _f: held.append(not r._send_lock.acquire(blocking=False))
    r._handle(r._ifaces["eth0"], arp_req(str(V4)))
    assert held == [True]  # sent while holding the lock silence() needs
    r.silence()
    assert r._send(r._ifaces["eth0"], b"frame", "arp") is False
    assert len(sock.sent) == 1


def test_request_queued_before_a_gain_is_left_to_the_previous_owner() -> None:
    """A request that arrived before we owned its VIP reached the previous owner too: it is
    not answered by us as well (no two MACs for one request); one for a VIP we kept is."""
    r, sock, _, _, _ = responder({V6: None})
    sock.sent.clear()
    sock.inbox += [arp_req(str(V4)), ns_req(str(V6))]
    r.set_owned({V4: None, V6: None})
    r._apply_desired()
    frames = [Ether(f) for f in sock.sent]
    assert [f[ARP].op for f in frames if ARP in f] == [1]  # the takeover's GARP, no reply
    assert [f[ICMPv6ND_NA].S for f in frames if ICMPv6ND_NA in f] == [1]  # kept V6: answered
    sock.sent.clear()
    r._handle(r._ifaces["eth0"], arp_req(str(V4)))  # arrived after the gain: ours
    assert [Ether(f)[ARP].op for f in sock.sent] == [2]


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
        r.silence()  # a graceful stop: silent even with a valid lease
        lease.write(2, clock.t + 0.1)
        r._handle(r._ifaces["eth0"], arp_req(str(V4)))
        assert len(sock.sent) == 1
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


def test_wire_figures_count_answers_and_record_the_announcement() -> None:
    """What the wire saw (portico.dev/L2Wire): per owned VIP the wall-clock time of the last
    gratuitous ARP / unsolicited NA and the requests answered since the gain, reset on a new
    gain; the first announcement after a gain is reported once (``on_announced``)."""
    clock = Clock()
    wall = [1_000_000.0]
    announced: list[Any] = []
    m = Metrics(Counter(), Counter(), Counter(), Counter(), Counter())
    r = Responder(None, m, Log(), lambda *a: None, clock, wallclock=lambda: wall[0],
                  on_announced=announced.append)
    sock = FakeSock()
    r._ifaces["eth0"] = _Iface("eth0", 2, MAC, sock, FakeSock())  # type: ignore[arg-type]
    r.set_owned({V4: None, V6: None})
    r._apply_desired()
    fig = r.wire()
    assert fig[V4].since == fig[V4].announced == 1_000_000.0 and fig[V4].answered == 0
    assert fig[V6].announced == 1_000_000.0 and sorted(map(str, announced)) == [
        str(V4), str(V6)]
    for _ in range(3):
        r._handle(r._ifaces["eth0"], arp_req(str(V4)))
    r._handle(r._ifaces["eth0"], ns_req(str(V6)))
    r._handle(r._ifaces["eth0"], arp_req("192.0.2.201"))  # not ours: not counted
    assert (r.wire()[V4].answered, r.wire()[V6].answered) == (3, 1)
    # The repeated announcements move the time, not the count, and are not reported again.
    wall[0] += 2.0
    clock.t += max(GARP_SCHEDULE) + 0.01
    r._send_due()
    assert r.wire()[V4] == type(fig[V4])(1_000_000.0, 1_000_002.0, 3)
    assert len(announced) == 2
    # Lost: no figures; gained again: counted from zero, announced (and reported) anew.
    r.set_owned({V6: None})
    r._apply_desired()
    assert set(r.wire()) == {V6}
    r._handle(r._ifaces["eth0"], arp_req(str(V4)))
    wall[0] += 60.0
    r.set_owned({V4: None, V6: None})
    r._apply_desired()
    assert r.wire()[V4] == type(fig[V4])(1_000_062.0, 1_000_062.0, 0)
    assert r.wire()[V6].answered == 1 and announced[-1] == V4 and len(announced) == 3


def test_wire_figures_wait_for_the_announcement_on_the_wire() -> None:
    """No valid lease: the gain is recorded, the announcement not (nothing left)."""
    from speaker.answer_lease import AnswerLease

    lease = AnswerLease()
    try:
        r, _sock, _, clock, _ = responder({})
        r.lease = lease
        r.set_owned({V4: None}, epoch=1)
        r._apply_desired()
        assert r.wire()[V4].announced is None
        lease.write(1, clock.t + 0.1)
        r._send_due()
        assert r.wire()[V4].announced is not None
    finally:
        lease.close()
