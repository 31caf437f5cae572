"""Authenticated heartbeats (issue 15 A): forged, replayed and stale heartbeats change nothing;
keys rotate without any peer being declared dead. Fake clocks (plain floats), no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from speaker.core.liveness import Heartbeat, LivenessConfig, Membership
from speaker.core.liveness_auth import (
    INSECURE_KEY,
    MALFORMED,
    MIN_KEY_BYTES,
    UNAUTHENTICATED,
    RateLimitedLog,
    key_id,
    open_sealed,
    parse_keys,
    seal,
)

CFG = LivenessConfig(interval=0.1, timeout=0.6, join_delay=0.25, max_age=2.0)
WALL0 = 1_800_000_000.0
OLD, NEW, WRONG = b"o" * 32, b"n" * 32, b"w" * 32


def receive(m: Membership, data: bytes, keys: tuple[bytes, ...], now: float,
            wall: float | None = None) -> str:
    """What the shell does with one datagram (the source address check aside)."""
    hb = open_sealed(data, keys)
    if isinstance(hb, str):
        return hb
    return m.observe(hb, now, WALL0 + now if wall is None else wall)


def beat(node: str, seq: int, t: float, *, boot: str = "b1", ready: bool = True,
         leaving: bool = False, key: bytes = OLD) -> bytes:
    """A heartbeat of ``node`` sent at monotonic-scale time ``t`` (wall = WALL0 + t)."""
    return seal(Heartbeat(node, boot, seq, ready, leaving, ("eth0",), WALL0 + t), key)


def receiver() -> Membership:
    m = Membership("n1", "boot-n1", 0.0, CFG)
    m.set_members(["n1", "n2", "n3"], 0.0)
    return m


def view(m: Membership, now: float) -> tuple[object, ...]:
    """Everything observable about the receiver's opinion at ``now``."""
    return (dict(m.live(now)), m.next_change(now), m.peer_live("n2", now),
            m.peer_live("n2", now + 0.5), m.peer_live("n2", now + 1.0))


# --- sealing --------------------------------------------------------------------------------


def test_seal_round_trip_under_any_held_key() -> None:
    h = Heartbeat("n2", "b", 7, True, False, ("eth0",), WALL0)
    assert open_sealed(seal(h, OLD), (OLD,)) == h
    assert open_sealed(seal(h, OLD), (NEW, OLD)) == h
    assert open_sealed(seal(h, NEW), (NEW, OLD)) == h


def test_forgeries_are_unauthenticated() -> None:
    h = Heartbeat("n2", "b", 7, False, True, ("eth0",), WALL0)
    body = h.encode()
    sealed = seal(h, OLD)
    v1 = (b'{"v":1,"node":"n2","boot":"b","seq":7,"ready":false,"leaving":true,'
          b'"ifs":["eth0"]}')
    forged = {
        "wrong key": seal(h, WRONG),
        "no MAC": body,
        "version-1 (unauthenticated) heartbeat": v1,
        "body changed after sealing": sealed.replace(b'"leaving":true', b'"leaving":fals'),
        "MAC truncated": sealed[:-1],
        "MAC of the insecure empty key": seal(h, INSECURE_KEY),
        "MAC zeroed": body + bytes(32),
    }
    for why, data in forged.items():
        assert open_sealed(data, (OLD, NEW)) == UNAUTHENTICATED, why


def test_malformed_datagrams() -> None:
    for data in (b"", b"x" * 32, b"x" * 20000):
        assert open_sealed(data, (OLD,)) == MALFORMED
    # authentic (right key) but not a heartbeat body: still refused, never raises
    from speaker.core.liveness_auth import _mac

    for body in (b"{", b"[]", b'{"v":2}'):
        assert open_sealed(body + _mac(OLD, body), (OLD,)) == MALFORMED


# --- forged / replayed / stale heartbeats change nothing -----------------------------------


def test_forged_leaving_and_alive_change_nothing() -> None:
    m = receiver()
    assert receive(m, beat("n2", 1, 1.0), (OLD,), 1.0) == "accepted"
    before = view(m, 1.05)
    # forged "leaving" for a live node (would move its VIPs)
    for data in (beat("n2", 99, 1.05, leaving=True, ready=False, key=WRONG),
                 Heartbeat("n2", "b1", 99, False, True, (), WALL0 + 1.05).encode()):
        assert receive(m, data, (OLD,), 1.05) == UNAUTHENTICATED
    assert view(m, 1.05) == before
    # forged "alive" for a node that went silent (would keep its VIPs on a dead node)
    for t in (1.3, 1.5, 1.7):
        assert receive(m, beat("n2", int(t * 100), t, key=WRONG), (OLD,), t) == UNAUTHENTICATED
    assert not m.peer_live("n2", 1.6)
    assert "n2" not in m.live(1.7)


def test_replayed_same_and_older_seq_change_nothing() -> None:
    m = receiver()
    captured = [beat("n2", s, 1.0 + s / 10) for s in range(1, 6)]
    for s, data in enumerate(captured, 1):
        assert receive(m, data, (OLD,), 1.0 + s / 10) == "accepted"
    before = view(m, 1.55)
    for data in captured:  # every capture again, newest first too
        assert receive(m, data, (OLD,), 1.55) == "replayed"
    for data in reversed(captured):
        assert receive(m, data, (OLD,), 1.55) == "replayed"
    assert view(m, 1.55) == before
    # the node dies after seq 5 (sent at 1.5): replays do not keep it alive
    for t in (1.7, 1.9, 2.05):
        for data in captured:
            receive(m, data, (OLD,), t)
    assert not m.peer_live("n2", 2.1)


def test_replayed_old_boot_leaving_does_not_move_a_restarted_node() -> None:
    """n2's old process said "leaving" (captured); n2 restarted with a new boot; the capture
    replayed within the freshness window is refused: it is older than the new boot's beats."""
    m = receiver()
    assert receive(m, beat("n2", 10, 1.0, boot="old"), (OLD,), 1.0) == "accepted"
    old_leave = beat("n2", 11, 1.1, boot="old", leaving=True, ready=False)
    assert receive(m, old_leave, (OLD,), 1.1) == "accepted"
    assert not m.peer_live("n2", 1.1)
    assert receive(m, beat("n2", 1, 1.2, boot="new"), (OLD,), 1.2) == "accepted"
    assert m.peer_live("n2", 1.2)
    before = view(m, 1.3)
    old_ready = beat("n2", 12, 1.05, boot="old")  # a capture the receiver never saw
    for data in (old_leave, old_ready):
        assert receive(m, data, (OLD,), 1.3) == "replayed"
    assert view(m, 1.3) == before


def test_restarted_receiver_refuses_captures_older_than_the_window() -> None:
    """A receiver without state (it restarted) cannot compare boots or seqs: the wall-clock
    window bounds what it accepts to heartbeats sent in the last max_age."""
    old_leave = beat("n2", 11, 1.0, boot="old", leaving=True, ready=False)
    old_ready = beat("n2", 10, 0.9, boot="old")
    fresh = receiver()
    for data in (old_leave, old_ready):
        assert receive(fresh, data, (OLD,), 1.0 + CFG.max_age + 0.01) == "stale"
    assert fresh.live(3.1) == {}
    # with state from the new boot, a replay inside the window is refused too (rule 3)
    assert receive(fresh, beat("n2", 1, 3.1, boot="new"), (OLD,), 3.1) == "accepted"
    assert receive(fresh, beat("n2", 12, 2.0, boot="old"), (OLD,), 3.15) == "replayed"
    assert fresh.peer_live("n2", 3.15)


@pytest.mark.parametrize("skew", [-2.01, 2.01, -60.0, 3600.0])
def test_stale_heartbeats_outside_the_window_change_nothing(skew: float) -> None:
    m = receiver()
    assert receive(m, beat("n2", 1, 1.0), (OLD,), 1.0) == "accepted"
    before = view(m, 1.1)
    # authentic, newer seq, but sent_at too far from the receiver's clock
    data = beat("n2", 2, 1.1 - skew, leaving=True, ready=False)
    assert receive(m, data, (OLD,), 1.1) == "stale"
    assert receive(m, beat("n2", 1, 1.1, boot="b2"), (OLD,), 1.1, wall=WALL0 + 1.1 + skew) \
        == "stale"
    assert view(m, 1.1) == before


def test_skew_inside_the_window_is_fine() -> None:
    m = receiver()
    for seq in range(1, 10):  # the sender's clock is 1.5 s behind
        t = 1.0 + seq / 10
        assert receive(m, beat("n2", seq, t - 1.5), (OLD,), t) == "accepted"
    assert m.peer_live("n2", 1.9)


def test_beat_in_our_own_name_is_a_reflection() -> None:
    m = receiver()
    assert receive(m, beat("n1", 1, 1.0), (OLD,), 1.0) == "replayed"
    assert m.live(1.0) == {}


# --- rotation ------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    keys: tuple[bytes, ...]
    m: Membership = field(init=False)

    def __post_init__(self) -> None:
        self.m = Membership(self.name, "boot-" + self.name, 0.0, CFG)
        self.m.set_members(["a", "b", "c"], 0.0)
        self.m.set_synced(True, 0.0)


def run_cluster(nodes: list[Node], steps: dict[float, tuple[str, tuple[bytes, ...]]],
                until: float) -> list[tuple[float, str, set[str]]]:
    """Every node beats every 100 ms (staggered); key changes land at the given times. Returns
    every moment (after warm-up) at which some node did not see all three live."""
    faults: list[tuple[float, str, set[str]]] = []
    by_name = {n.name: n for n in nodes}
    tick = 0
    while (t := tick * 0.01) < until:
        for at, (name, keys) in steps.items():
            if abs(at - t) < 0.005:
                by_name[name].keys = keys
        for i, sender in enumerate(nodes):
            if tick % 10 == i * 3:  # a at +0 ms, b at +30 ms, c at +60 ms of each 100 ms
                data = seal(sender.m.heartbeat(t, WALL0 + t), sender.keys[0])
                for r in nodes:
                    if r is not sender:
                        receive(r.m, data, r.keys, t)
        if t > 2.0:
            for n in nodes:
                live = set(n.m.live(t))
                if live != {"a", "b", "c"}:
                    faults.append((t, n.name, live))
        tick += 1
    return faults


def test_rotation_old_and_new_keys_accepted_no_peer_declared_dead() -> None:
    """The documented procedure, each step reaching the nodes at different moments (the
    kubelet updates Secret volumes node by node): add NEW second; make it first; drop OLD."""
    nodes = [Node("a", (OLD,)), Node("b", (OLD,)), Node("c", (OLD,))]
    steps = {
        3.0: ("b", (OLD, NEW)), 3.5: ("c", (OLD, NEW)), 4.2: ("a", (OLD, NEW)),
        6.0: ("c", (NEW, OLD)), 6.7: ("a", (NEW, OLD)), 7.1: ("b", (NEW, OLD)),
        9.0: ("a", (NEW,)), 9.3: ("b", (NEW,)), 9.9: ("c", (NEW,)),
    }
    assert run_cluster(nodes, steps, 12.0) == []
    assert all(n.keys == (NEW,) for n in nodes)


def test_rotation_that_skips_the_accept_only_step_is_detected() -> None:
    """The same harness fails when a node signs with a key the others do not hold yet: the
    procedure's middle step is what makes the rotation safe."""
    nodes = [Node("a", (OLD,)), Node("b", (OLD,)), Node("c", (OLD,))]
    faults = run_cluster(nodes, {3.0: ("b", (NEW, OLD))}, 5.0)
    # a and c stop hearing b; b still hears them but learns from their beats ("down") that
    # they count it dead, and stops counting itself (rule C): nobody sees b live, so nobody
    # answers twice for b's VIPs.
    assert faults and all("b" not in live for _, _, live in faults)
    assert {name for _, name, _ in faults} == {"a", "b", "c"}


# --- key file and log limiting -------------------------------------------------------------


def test_parse_keys() -> None:
    k1, k2 = b"A" * MIN_KEY_BYTES, b"b" * 64
    text = b"# rotated 2026-12-07\n\n  " + k1 + b"  \r\n" + k2 + b"\nxyzzy\n" + k1 + b"\n"
    kf = parse_keys(text)
    assert kf.keys == (k1, k2)
    assert kf.problems == ("line 5: key shorter than 16 bytes, ignored",
                           "line 6: duplicate key, ignored")
    assert kf.ids == [key_id(k1), key_id(k2)] and len(kf.ids[0]) == 12
    assert b"xyzzy" not in b"".join(p.encode() for p in kf.problems)
    assert parse_keys(b"").keys == () and parse_keys(b"# only\n\n").keys == ()


def test_rate_limited_log() -> None:
    lim = RateLimitedLog(period=10.0, max_keys=2)
    assert lim.allow("stale 192.0.2.1", 0.0) == 0
    assert [lim.allow("stale 192.0.2.1", t) for t in (1.0, 2.0, 9.9)] == [None] * 3
    assert lim.allow("stale 192.0.2.1", 10.0) == 3
    assert lim.allow("replayed 192.0.2.1", 10.0) == 0
    # beyond max_keys, new keys share one slot (spoofed sources cannot grow memory)
    assert lim.allow("replayed 192.0.2.2", 10.0) == 0
    assert lim.allow("replayed 192.0.2.3", 10.0) is None
    assert len(lim._next) == 3


def test_insecure_mode_still_has_replay_protection() -> None:
    m = receiver()
    first = beat("n2", 1, 1.0, key=INSECURE_KEY)
    assert receive(m, first, (INSECURE_KEY,), 1.0) == "accepted"
    assert receive(m, first, (INSECURE_KEY,), 1.05) == "replayed"
    h = open_sealed(first, (INSECURE_KEY,))
    assert isinstance(h, Heartbeat) and replace(h, seq=2) != h
