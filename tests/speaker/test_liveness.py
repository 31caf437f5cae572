"""Liveness state machine with a fake clock (plain floats: no sleeps)."""

from __future__ import annotations

from speaker.core.liveness import Heartbeat, LivenessConfig, Membership

CFG = LivenessConfig(interval=0.1, timeout=0.6, join_delay=0.25)


def member(me: str = "n1", t0: float = 0.0) -> Membership:
    m = Membership(me, "boot-" + me, t0, CFG)
    m.set_members(["n1", "n2", "n3"])
    return m


def hb(node: str, seq: int, ready: bool = True, leaving: bool = False,
       boot: str | None = None) -> Heartbeat:
    return Heartbeat(node, boot or "boot-" + node, seq, ready, leaving, ("eth0",))


def test_heartbeat_round_trip_and_garbage() -> None:
    h = Heartbeat("n1", "b", 3, True, False, ("eth0", "eth1"))
    assert Heartbeat.decode(h.encode()) == h
    for junk in (b"", b"{", b"[]", b'{"v":1}', b'{"v":2,"node":"x"}', b"\xff" * 10,
                 b'{"v":1,"node":"x","boot":"b","seq":true,"ready":true,"leaving":false}',
                 b"x" * 5000):
        assert Heartbeat.decode(junk) is None


def test_peer_dies_after_timeout_not_before() -> None:
    m = member()
    m.observe(hb("n2", 1), 1.0)
    assert m.peer_live("n2", 1.0) and m.peer_live("n2", 1.59)
    assert not m.peer_live("n2", 1.6)
    assert m.next_change(1.0) == 1.6


def test_stall_of_350ms_is_not_a_death() -> None:
    m = member()
    t = 1.0
    for seq in range(1, 30):
        m.observe(hb("n2", seq), t)
        # every 10th beat comes after a 350 ms stall of the sender
        gap = 0.1 + (0.35 if seq % 10 == 0 else 0.0)
        for k in range(1, 10):
            probe = t + gap * k / 10
            assert m.peer_live("n2", probe), (seq, probe)
        t += gap


def test_not_ready_and_leaving_and_non_members_are_not_live() -> None:
    m = member()
    m.observe(hb("n2", 1, ready=False), 1.0)
    assert not m.peer_live("n2", 1.0)
    m.observe(hb("n2", 2), 1.1)
    assert m.peer_live("n2", 1.1)
    m.observe(hb("n2", 3, leaving=True), 1.2)
    assert not m.peer_live("n2", 1.2)
    m.observe(hb("n2", 4), 1.3)  # same process cannot come back after leaving
    assert not m.peer_live("n2", 1.3)
    m.observe(hb("n2", 1, boot="new", ready=True), 1.4)  # a restarted process can
    assert m.peer_live("n2", 1.4)
    m.observe(hb("n9", 1), 1.4)
    assert not m.peer_live("n9", 1.4)


def test_reordered_beats_are_ignored() -> None:
    m = member()
    m.observe(hb("n2", 5), 1.0)
    m.observe(hb("n2", 4, ready=False), 1.05)
    assert m.peer_live("n2", 1.05)


def test_refused_marks_dead_until_next_beat() -> None:
    m = member()
    m.observe(hb("n2", 1), 1.0)
    m.refused("n2", 1.05)
    assert not m.peer_live("n2", 1.05)
    m.observe(hb("n2", 1, boot="restarted"), 1.5)
    assert m.peer_live("n2", 1.5)


def test_self_warms_up_then_joins_after_delay() -> None:
    m = member(t0=10.0)
    m.set_interfaces(["eth0"])
    m.set_synced(True, 10.0)
    assert not m.heartbeat(10.0).ready  # has not listened a full timeout yet
    assert "n1" not in m.live(10.5)
    assert m.heartbeat(10.6).ready  # warm-up over: tells peers it is ready
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
    assert not m.self_live(6.0) and not m.heartbeat(6.0).ready
    m.set_isolated(False, 7.0)  # link back: warm up again before owning
    assert not m.self_live(7.5)
    assert m.heartbeat(7.6).ready and m.self_live(7.9)
    m.leave()
    h = m.heartbeat(8.0)
    assert h.leaving and not h.ready and not m.self_live(8.0)


def test_heartbeat_seq_increases() -> None:
    m = member()
    assert [m.heartbeat(0.0).seq for _ in range(3)] == [1, 2, 3]


def test_forget_departed() -> None:
    m = member()
    m.observe(hb("n3", 1), 1.0)
    m.set_members(["n1", "n2"])
    assert not m.peer_live("n3", 1.0)
    m.forget_departed()
    assert m.live(1.0) == {}
