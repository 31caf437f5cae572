"""Rules S (own stall), C (consent) and H (hold-down) of the liveness state machine, with a
fake clock (plain floats, no sleeps): what makes a 200 ms timeout safe under stalls and what
keeps one freeze from moving a VIP back and forth."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from speaker.core.liveness import RELEARN_BEATS, Heartbeat, LivenessConfig, Membership

CFG = LivenessConfig(interval=0.025, timeout=0.2, join_delay=0.25, max_age=2.0, stall=0.05,
                     holddown=5.0)
WALL0 = 1_800_000_000.0
NODES = ("a", "b", "c")


def member(me: str, t0: float = 0.0) -> Membership:
    m = Membership(me, "boot-" + me, t0, CFG)
    m.set_members(NODES, t0)
    m.set_synced(True, t0)
    m.self_live(t0 + CFG.timeout)  # warm-up over: ready (live join_delay later)
    return m


def beat(node: str, seq: int, down: tuple[str, ...] = (), ready: bool = True,
         leaving: bool = False, boot: str | None = None) -> Heartbeat:
    return Heartbeat(node, boot or "boot-" + node, seq, ready, leaving, ("eth0",), 0.0, down)


def see(m: Membership, h: Heartbeat, now: float) -> str:
    return m.observe(replace(h, sent_at=WALL0 + now), now, WALL0 + now)


def test_heartbeat_carries_the_nodes_it_counts_dead() -> None:
    h = Heartbeat("a", "b1", 1, True, False, ("eth0",), WALL0, ("c",))
    assert Heartbeat.decode(h.encode()) == h
    assert b"down" not in replace(h, down=()).encode()  # steady state: nothing extra
    bad = h.encode().replace(b'"down":["c"]', b'"down":[1]')
    assert Heartbeat.decode(bad) is None


# --- rule S: a stall of our own loop ----------------------------------------------------------


def test_own_stall_does_not_accuse_peers() -> None:
    m = member("a")
    m.tick(1.0)
    see(m, beat("b", 1), 1.0)
    assert m.tick(1.01) == 0.0
    # The loop does not run for 350 ms (the machine stalled): b's silence meanwhile is no
    # evidence. Without rule S, b would be dead at 1.2.
    assert m.tick(1.36) > 0.3
    assert m.peer_live("b", 1.36)
    assert m.peer_live("b", 1.36 + 0.18)  # its age excludes the stall ...
    assert not m.peer_live("b", 1.36 + 0.2)  # ... and it still dies if it stays silent


def test_short_stall_needs_no_relearning_long_one_does() -> None:
    m = member("a")
    m.tick(1.0)
    see(m, beat("b", 1), 1.0)
    see(m, beat("c", 1), 1.0)
    m.tick(1.1)  # 100 ms: + one interval < timeout, no peer can have declared us dead
    assert not m.relearning(1.1)
    m.tick(1.11)
    m.tick(1.5)  # 390 ms: peers may have declared us dead
    assert m.relearning(1.5)
    for seq in range(2, 2 + RELEARN_BEATS):
        assert m.relearning(1.5)
        see(m, beat("b", seq), 1.5 + 0.01 * seq)
        see(m, beat("c", seq), 1.5 + 0.01 * seq)
    assert not m.relearning(1.6)


def test_relearning_ends_after_a_timeout_even_if_a_peer_stays_silent() -> None:
    m = member("a")
    m.tick(1.0)
    see(m, beat("b", 1), 1.0)
    m.tick(2.0)
    assert m.relearning(2.1)
    assert not m.relearning(2.0 + CFG.timeout)


def test_a_stopped_speaker_relearns_without_extending_ages() -> None:
    """The heartbeat process kept running while the speaker was stopped: ages are true."""
    m = member("a")
    see(m, beat("b", 1), 3.9)
    m.stalled(3.0, 4.0, extend=False)
    assert m.relearning(4.0)
    assert not m.peer_live("b", 4.11)  # b's age was not stretched by the speaker's stop


# --- rule C: consent ----------------------------------------------------------------------------


def test_self_is_not_live_while_a_live_peer_counts_it_dead() -> None:
    m = member("a")
    assert m.self_live(1.0)
    see(m, beat("b", 1, down=("a",)), 1.0)
    assert not m.self_live(1.0)
    assert "a" not in m.live(1.0)
    see(m, beat("b", 2), 1.1)  # b counts us again: wait join_delay (b's plan must let go)
    assert not m.self_live(1.1 + CFG.join_delay - 0.01)
    assert m.self_live(1.1 + CFG.join_delay)


def test_dissent_of_a_silent_or_leaving_peer_does_not_count() -> None:
    m = member("a")
    see(m, beat("b", 1, down=("a",)), 1.0)
    assert not m.self_live(1.0)
    assert m.self_live(1.01 + CFG.timeout)  # b fell silent: its opinion expired with it
    see(m, beat("c", 1, down=("a",)), 2.0)
    see(m, beat("c", 2, down=("a",), leaving=True), 2.01)
    assert m.self_live(2.01)


# --- rule H: hold-down ---------------------------------------------------------------------------


def test_peer_that_died_is_live_again_only_after_the_holddown() -> None:
    m = member("a")
    see(m, beat("b", 1), 1.0)
    assert "b" in m.live(1.0)
    assert "b" not in m.live(1.25)  # silent for the timeout: dead
    see(m, beat("b", 2), 3.0)
    assert "b" in m.heartbeat(3.0, WALL0 + 3.0).down  # tells b it is held down
    seq = 3
    t = 3.0
    while t < 3.0 + CFG.holddown - 0.01:
        t += CFG.interval
        see(m, beat("b", seq), t)
        seq += 1
        assert ("b" in m.live(t)) == (t >= 3.0 + CFG.holddown), t
    t += 0.02
    see(m, beat("b", seq), t)
    assert "b" in m.live(t)
    assert "b" not in m.heartbeat(t, WALL0 + t).down


def test_a_new_silence_during_the_holddown_starts_it_again() -> None:
    m = member("a")
    see(m, beat("b", 1), 1.0)
    m.live(1.0)
    m.live(1.3)  # dead
    see(m, beat("b", 2), 2.0)
    m.live(2.0)
    m.live(2.3)  # silent again within the hold-down
    see(m, beat("b", 3), 3.0)
    assert not m.peer_live("b", 6.5)  # 2.0 + 5 would have been enough without the break
    for i, t in enumerate((3.1, 3.2, 3.3, 3.4, 3.5), start=4):
        see(m, beat("b", i), t)
    t = 3.5
    seq = 9
    while t < 8.0:
        t += 0.1
        see(m, beat("b", seq), t)
        seq += 1
    assert m.peer_live("b", 8.05)


def test_leaving_and_restarted_peers_are_not_held_down() -> None:
    m = member("a")
    see(m, beat("b", 1), 1.0)
    m.live(1.0)
    see(m, beat("b", 2, leaving=True, ready=False), 1.1)
    assert "b" not in m.live(1.1)
    see(m, beat("b", 1, boot="boot-b2"), 2.0)  # rolling update: the new process is welcome
    assert "b" in m.live(2.0)


def test_refused_then_restarted_peer_is_held_down() -> None:
    m = member("a")
    see(m, beat("b", 1), 1.0)
    m.live(1.0)
    m.refused("b", 1.05)  # crashed (port unreachable)
    assert "b" not in m.live(1.05)
    t, seq = 1.5, 1
    while t < 1.5 + CFG.holddown + 0.1:  # the restarted process beats on
        see(m, beat("b", seq, boot="boot-b2"), t)
        assert ("b" in m.live(t)) == (t >= 1.5 + CFG.holddown), t
        t, seq = round(t + 0.05, 6), seq + 1


# --- whole clusters ---------------------------------------------------------------------------


@dataclass
class Node:
    m: Membership
    frozen_until: float = -1.0
    seq: int = 0
    views: list[tuple[float, frozenset[str]]] = field(default_factory=list)


def run(freeze: dict[str, tuple[float, float]], until: float) -> dict[str, Node]:
    """Three nodes beating every 25 ms on a 5 ms tick; ``freeze``: node -> (from, to) during
    which it neither runs its loop nor sends (SIGSTOP of its whole speaker). Beats sent to a
    frozen node queue up and are read when it wakes. Records each node's live set whenever it
    changes."""
    nodes = {n: Node(member(n)) for n in NODES}
    queues: dict[str, list[tuple[float, Heartbeat]]] = {n: [] for n in NODES}
    tick = 0
    while (t := round(tick * 0.005, 6)) < until:
        for name, node in nodes.items():
            f = freeze.get(name)
            if f and f[0] <= t < f[1]:
                continue
            node.m.tick(t)
            for sent, h in queues[name]:
                node.m.observe(h, t, WALL0 + t) if t - sent <= CFG.max_age else None
            queues[name].clear()
            if tick % 5 == NODES.index(name):  # every 25 ms, staggered
                h = node.m.heartbeat(t, WALL0 + t)
                for other in NODES:
                    if other != name:
                        queues[other].append((t, h))
            live = frozenset(node.m.live(t))
            if not node.views or node.views[-1][1] != live:
                node.views.append((t, live))
        tick += 1
    return nodes


def test_cluster_settles_with_everyone_live_and_stays() -> None:
    nodes = run({}, 3.0)
    for node in nodes.values():
        assert node.views[-1][1] == frozenset(NODES)
        assert [v for t, v in node.views if t > 1.0] == [frozenset(NODES)] or \
            node.views[-1][0] < 1.0


def test_stall_of_the_whole_machine_moves_nothing() -> None:
    """All three stop for 350 ms at once (a VM stall): > timeout, yet nobody dies."""
    nodes = run({n: (2.0, 2.35) for n in NODES}, 4.0)
    for node in nodes.values():
        assert all(v == frozenset(NODES) for t, v in node.views if t > 1.0), node.views


def test_freeze_and_wake_moves_once_and_back_only_after_the_holddown() -> None:
    nodes = run({"a": (2.0, 5.0)}, 12.0)
    b, a = nodes["b"], nodes["a"]
    changes = [(round(t, 3), sorted(v)) for t, v in b.views if t > 1.0]
    # b: a dies ~timeout into the freeze; a is back only a hold-down after it woke (and
    # said ready): exactly one move away and one back, nothing in between.
    assert [v for _, v in changes] == [["b", "c"], ["a", "b", "c"]], changes
    assert 2.1 < changes[0][0] < 2.25
    assert changes[1][0] >= 5.0 + CFG.holddown
    # a, on waking, learns it was declared dead and does not count itself live meanwhile:
    # its own live set drops itself right at the wake and gets it back only after b and c
    # took it back (+ join_delay) — never in between.
    woke = [(round(t, 3), sorted(v)) for t, v in a.views if t >= 5.0]
    assert woke[0][1] == ["b", "c"] and woke[0][0] < 5.05, woke
    assert [v for _, v in woke] == [["b", "c"], ["a", "b", "c"]], woke
    assert woke[1][0] >= changes[1][0] + CFG.join_delay - 0.01
