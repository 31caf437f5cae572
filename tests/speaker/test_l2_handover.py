"""Graceful stop of the layer-2 announcer: silence first, then "leaving" (speaker.l2_announcer).

The real announcer and responder on fake sockets, a fake liveness and a fake clock whose sleep
stands for the time the next owner needs: the ordering is checked frame by frame, no sleeps.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from common.api.model import AddressRange, L2Advertisement, LBService, Pool
from speaker.core.l2_plan import plan_l2, successors
from speaker.core.snapshot import ClusterSnapshot, NodeInfo
from speaker.l2 import _Iface
from speaker.l2_announcer import HANDOVER_TIMEOUT, L2Announcer

MAC = "02:aa:00:00:00:01"
NEXT_MAC = "02:aa:00:00:00:02"
V4 = ipaddress.IPv4Address("192.0.2.200")
V6 = ipaddress.IPv6Address("2001:db8::1:5")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []
        self.during_sleep: Any = None

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s
        if self.during_sleep is not None:
            self.during_sleep()


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, _level: str) -> Any:
        return lambda event, **kw: self.lines.append((event, kw))


class Wire:
    """Everything the node does, in order: frames sent, heartbeats said."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def frames(self) -> list[Ether]:
        return [Ether(f) for k, f in self.events if k == "frame"]


class FakeSock:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    def send(self, data: bytes) -> int:
        self.wire.events.append(("frame", data))
        return len(data)

    def recvfrom(self, _size: int, _flags: int = 0) -> tuple[bytes, tuple[Any, ...]]:
        raise BlockingIOError

    def setsockopt(self, *_a: Any) -> None:
        pass

    def close(self) -> None:
        pass


class FakeLiveness:
    def __init__(self, wire: Wire, live: dict[str, frozenset[str] | None]) -> None:
        self.wire, self._live = wire, live

    def live(self) -> dict[str, frozenset[str] | None]:
        return dict(self._live)

    def leave(self) -> None:
        self.wire.events.append(("leaving", None))

    def stop(self) -> None:
        self.wire.events.append(("liveness_stop", None))

    def set_nodes(self, *_a: Any) -> None:
        pass

    def set_interfaces(self, *_a: Any) -> None:
        pass

    def set_synced(self, *_a: Any) -> None:
        pass


class FakeReporter:
    def submit(self, _state: Any) -> None:
        pass

    def stop(self) -> None:
        pass


def snapshot(nodes: tuple[str, ...], vips: tuple[Any, ...] = (V4, V6)) -> ClusterSnapshot:
    pools = (Pool("p4", (AddressRange("IPv4", int(V4), int(V4) + 15, "v4"),)),
             Pool("p6", (AddressRange("IPv6", int(V6), int(V6) + 15, "v6"),)))
    return ClusterSnapshot(
        services=(LBService("default", "web", status_ips=vips),),
        nodes={n: NodeInfo(n) for n in nodes}, pools=pools,
        l2_advertisements=(L2Advertisement("all"),), endpoints={})


def owner_and_next(vip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, str]:
    """Two node names such that the first owns ``vip`` while both are live."""
    snap = snapshot(("a", "b"), (vip,))
    owner = plan_l2(snap, {"a": None, "b": None}, "a").vips[vip].owner
    assert owner is not None
    return owner, "b" if owner == "a" else "a"


def announcer(me: str, nodes: tuple[str, ...], vips: tuple[Any, ...] = (V4, V6)
              ) -> tuple[L2Announcer, Wire, Clock, Log]:
    wire, clock, log = Wire(), Clock(), Log()
    a = L2Announcer(me, None, None, lambda *_: None, log, None, liveness_port=0,
                    liveness_interface=None, monotonic=clock, heartbeat_process=False,
                    sleep=clock.sleep)
    a.liveness.rx.close()  # type: ignore[union-attr]  # the real loop is never started
    a.liveness = FakeLiveness(wire, {n: None for n in nodes})  # type: ignore[assignment]
    a.reporter = FakeReporter()  # type: ignore[assignment]
    a.responder._ifaces["eth0"] = _Iface("eth0", 2, MAC, FakeSock(wire),  # type: ignore[arg-type]
                                         FakeSock(wire))  # type: ignore[arg-type]
    a.sync(snapshot(nodes, vips))
    a.responder._apply_desired()  # what the responder thread does on its wake-up
    return a, wire, clock, log


def request(vip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    sha = "02:00:00:00:00:09"
    if vip.version == 4:
        return bytes(Ether(src=sha, dst="ff:ff:ff:ff:ff:ff")
                     / ARP(op=1, hwsrc=sha, psrc="192.0.2.9", pdst=str(vip)))
    return bytes(Ether(src=sha, dst="33:33:ff:01:00:05")
                 / IPv6(src="2001:db8::9", dst="ff02::1:ff01:5", hlim=255)
                 / ICMPv6ND_NS(tgt=str(vip)) / ICMPv6NDOptSrcLLAddr(lladdr=sha))


def announcement(vip: ipaddress.IPv4Address | ipaddress.IPv6Address, mac: str) -> bytes:
    if vip.version == 4:
        return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                     / ARP(op=1, hwsrc=mac, psrc=str(vip), pdst=str(vip)))
    return bytes(Ether(src=mac, dst="33:33:00:00:00:01")
                 / IPv6(src=str(vip), dst="ff02::1", hlim=255)
                 / ICMPv6ND_NA(tgt=str(vip), R=0, S=0, O=1))


def is_answer(f: Ether) -> bool:
    return (ARP in f and f[ARP].op == 2) or (ICMPv6ND_NA in f and f[ICMPv6ND_NA].S == 1)


@pytest.mark.parametrize("vip", [V4, V6], ids=["arp", "ndp"])
def test_graceful_stop_falls_silent_before_it_says_leaving(
        vip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    me, nxt = owner_and_next(vip)
    a, wire, clock, log = announcer(me, ("a", "b"), (vip,))
    assert vip in a.responder.owned()
    iface = a.responder._ifaces["eth0"]
    a.responder._handle(iface, request(vip))
    assert any(is_answer(f) for f in wire.frames())  # the owner answers before the stop
    dups: list[Any] = []
    a._on_duplicate = lambda *x: dups.append(x)  # type: ignore[method-assign]
    a.responder.on_duplicate = a._on_duplicate
    t0 = clock.t

    def next_owner_meanwhile() -> None:
        # Clients keep asking while we wait; 4 ms after "leaving" the next owner announces.
        a.responder._handle(iface, request(vip))
        if clock.t >= t0 + 0.004:
            a.responder._handle(iface, announcement(vip, NEXT_MAC))

    clock.during_sleep = next_owner_meanwhile
    a.stop(graceful=True)
    kinds = [k for k, _ in wire.events]
    leaving = kinds.index("leaving")
    assert "frame" not in kinds[leaving:]  # not one frame of ours after "leaving"
    assert dups == []  # the next owner's announcement is the hand-over, not a conflict
    assert clock.t - t0 < HANDOVER_TIMEOUT  # it stopped waiting once the announcement came
    (line,) = [kw for e, kw in log.lines if e == "l2_handover"]
    assert vip.compressed in line["handed_over"]
    assert line["next_owner"][vip.compressed] == nxt
    assert line["unanswered_requests"] >= 1
    assert kinds[-1] == "liveness_stop"


def test_single_node_just_stops() -> None:
    a, wire, clock, log = announcer("a", ("a",))
    assert a.responder.owned() == {V4, V6}
    a.stop(graceful=True)
    assert clock.sleeps == []  # nobody to wait for
    kinds = [k for k, _ in wire.events]
    assert "frame" not in kinds[kinds.index("leaving"):]
    (line,) = [kw for e, kw in log.lines if e == "l2_handover"]
    assert line["handed_over"] == [] and set(line["next_owner"].values()) == {None}


def test_silent_wait_is_bounded_when_the_next_owner_never_announces() -> None:
    me, _ = owner_and_next(V4)
    a, wire, clock, _ = announcer(me, ("a", "b"), (V4,))
    t0 = clock.t
    clock.during_sleep = lambda: a.responder._handle(a.responder._ifaces["eth0"], request(V4))
    a.stop(graceful=True)
    assert HANDOVER_TIMEOUT <= clock.t - t0 < HANDOVER_TIMEOUT + 0.01
    kinds = [k for k, _ in wire.events]
    assert "frame" not in kinds[kinds.index("leaving"):]
    assert a.responder._desired == {}  # released (the responder thread applies it)


def test_no_replan_after_the_stop_began() -> None:
    """A liveness change during the hand-over (the peers dropping us) claims nothing."""
    me, _ = owner_and_next(V4)
    a, wire, clock, _ = announcer(me, ("a", "b"), (V4,))
    clock.during_sleep = lambda: a._on_live({me: None})  # as if we were alone now
    a.stop(graceful=True)
    kinds = [k for k, _ in wire.events]
    assert "frame" not in kinds[kinds.index("leaving"):]


def test_successors_name_the_next_owner_or_nobody() -> None:
    snap = snapshot(("a", "b"), (V4,))
    me, nxt = owner_and_next(V4)
    assert successors(snap, {"a": None, "b": None}, me, [V4]) == {V4: nxt}
    assert successors(snapshot(("a",)), {"a": None}, "a", [V4, V6]) == {V4: None, V6: None}
    # the other node is not live: nobody takes over
    assert successors(snap, {me: None}, me, [V4]) == {V4: None}
