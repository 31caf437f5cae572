"""Liveness state machine with a fake clock (plain floats: no sleeps).

``now`` is the monotonic clock; the wall clock is ``WALL0 + now`` on every node (in sync)
unless a test says otherwise."""

from __future__ import annotations

from dataclasses import replace

from speaker.core.liveness import Heartbeat, LivenessConfig, Membership, Verdict

CFG = LivenessConfig(interval=0.1, timeout=0.6, join_delay=0.25, max_age=2.0)
WALL0 = 1_800_000_000.0


def member(me: str = "n1", t0: float = 0.0) -> Membership:
    m = Membership(me, "boot-" + me, t0, CFG)
    m.set_members(["n1", "n2", "n3"], t0)
    return m


def hb(node: str, seq: int, ready: bool = True, leaving: bool = False,
       boot: str | None = None, sent: float | None = None) -> Heartbeat:
    """A heartbeat sent at ``sent`` (monotonic scale); None: when it is observed."""
    at = WALL0 + sent if sent is not None else 0.0
    return Heartbeat(node, boot or "boot-" + node, seq, ready, leaving, ("eth0",), at)


class Observer:
    """``Membership.observe`` for beats that arrive the moment they are sent (unless the
    heartbeat says when it was sent) on a receiver whose wall clock is ``WALL0 + now``."""

    def __init__(self, m: Membership) -> None:
        self.m = m

    def __call__(self, h: Heartbeat, now: float) -> Verdict:
        if h.sent_at == 0.0:
            h = replace(h, sent_at=WALL0 + now)
        return self.m.observe(h, now, WALL0 + now)


def test_heartbeat_round_trip_and_garbage() -> None:
    h = Heartbeat("n1", "b", 3, True, False, ("eth0", "eth1"), WALL0 + 0.125)
    assert Heartbeat.decode(h.encode()) == h
    for junk in (b"", b"{", b"[]", b'{"v":1}', b'{"v":2,"node":"x"}', b"\xff" * 10,
                 b'{"v":2,"node":"x","boot":"b","seq":true,"t":1,"ready":true,"leaving":false}',
                 b'{"v":2,"node":"x","boot":"b","seq":1,"t":"1","ready":true,"leaving":false}',
                 b'{"v":2,"node":"x","boot":"b","seq":1,"ready":true,"leaving":false}',
                 b'{"v":2,"node":"x","boot":"b","seq":1,"t":NaN,"ready":true,"leaving":false}',
                 b'{"v":2,"node":"x","boot":"b","seq":1,"t":-Infinity,"ready":true,'
                 b'"leaving":false}',
                 b'{"v":1,"node":"x","boot":"b","seq":1,"ready":true,"leaving":false}',
                 b"[" * 3000, b"x" * 5000):
        assert Heartbeat.decode(junk) is None


def test_peer_dies_after_timeout_not_before() -> None:
    m = member()
    Observer(m)(hb("n2", 1), 1.0)
    assert m.peer_live("n2", 1.0) and m.peer_live("n2", 1.59)
    assert not m.peer_live("n2", 1.6)
    assert m.next_change(1.0) == 1.6


def test_stall_of_350ms_is_not_a_death() -> None:
    m = member()
    t = 1.0
    for seq in range(1, 30):
        Observer(m)(hb("n2", seq), t)
        # every 10th beat comes after a 350 ms stall of the sender
        gap = 0.1 + (0.35 if seq % 10 == 0 else 0.0)
        for k in range(1, 10):
            probe = t + gap * k / 10
            assert m.peer_live("n2", probe), (seq, probe)
        t += gap


def test_not_ready_and_leaving_and_non_members_are_not_live() -> None:
    m = member()
    Observer(m)(hb("n2", 1, ready=False), 1.0)
    assert not m.peer_live("n2", 1.0)
    Observer(m)(hb("n2", 2), 1.1)
    assert m.peer_live("n2", 1.1)
    Observer(m)(hb("n2", 3, leaving=True), 1.2)
    assert not m.peer_live("n2", 1.2)
    Observer(m)(hb("n2", 4), 1.3)  # same process cannot come back after leaving
    assert not m.peer_live("n2", 1.3)
    Observer(m)(hb("n2", 1, boot="new", ready=True), 1.4)  # a restarted process can
    assert m.peer_live("n2", 1.4)
    Observer(m)(hb("n9", 1), 1.4)
    assert not m.peer_live("n9", 1.4)


def test_reordered_beats_are_ignored() -> None:
    m = member()
    Observer(m)(hb("n2", 5), 1.0)
    Observer(m)(hb("n2", 4, ready=False), 1.05)
    assert m.peer_live("n2", 1.05)


def test_refused_marks_dead_until_next_beat() -> None:
    m = member()
    Observer(m)(hb("n2", 1), 1.0)
    m.refused("n2", 1.05)
    assert not m.peer_live("n2", 1.05)
    Observer(m)(hb("n2", 1, boot="restarted"), 1.5)
    assert m.peer_live("n2", 1.5)


def test_self_warms_up_then_joins_after_delay() -> None:
    m = member(t0=10.0)
    m.set_interfaces(["eth0"])
    m.set_synced(True, 10.0)
    assert not m.heartbeat(10.0, WALL0).ready  # has not listened a full timeout yet
    assert "n1" not in m.live(10.5)
    assert m.heartbeat(10.6, WALL0).ready  # warm-up over: tells peers it is ready
    assert not m.self_live(10.7)  # but waits join_delay before claiming anything
    assert m.next_change(10.7) == 10.6 + 0.25
    assert m.self_live(10.86)
    assert m.live(10.86) == {"n1": frozenset({"eth0"})}


def test_unsynced_isolated_leaving_self_is_not_live() -> None:
    m = member()
    assert not m.self_live(5.0)  # informers not synced
    m.set_synced(True, 5.0)
    assert m.self_live(5.3)
    m.set_isolated(True, 6.0)
    assert not m.self_live(6.0) and not m.heartbeat(6.0, WALL0).ready
    m.set_isolated(False, 7.0)  # link back: warm up again before owning
    assert not m.self_live(7.5)
    assert m.heartbeat(7.6, WALL0).ready and m.self_live(7.9)
    m.leave()
    h = m.heartbeat(8.0, WALL0)
    assert h.leaving and not h.ready and not m.self_live(8.0)


def test_heartbeat_seq_increases() -> None:
    m = member()
    assert [m.heartbeat(0.0, WALL0).seq for _ in range(3)] == [1, 2, 3]


def test_forget_departed() -> None:
    m = member()
    Observer(m)(hb("n3", 1), 1.0)
    m.set_members(["n1", "n2"], 1.0)
    assert not m.peer_live("n3", 1.0)
    m.forget_departed()
    assert m.live(1.0) == {}
