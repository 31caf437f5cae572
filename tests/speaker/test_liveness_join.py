"""Joins through the pure liveness core, with a fake clock: a speaker that restarts, and a Node
added while everything runs, must never make the *other* owners drop themselves.

The harness mirrors what the shell (``speaker.liveness``) does around ``Membership``: a
process sends only to the nodes of its own node list, and takes a heartbeat only from a node
of its node list (``foreign_address`` otherwise) — so a restarted speaker hears nobody until
its informers have handed it the Nodes, typically half a second after the process started.
Before the fix, such a joiner's first ``ready`` heartbeats listed every peer it had not heard
yet as down, and rule C made those peers stop counting themselves for ``join_delay``: every
VIP of the cluster unanswered for ~0.3 s on every speaker restart (lab log, 05:10:03.019)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from speaker.core.liveness import Heartbeat, LivenessConfig, Membership

CFG = LivenessConfig()  # the defaults: 25 ms interval, 200 ms timeout, 250 ms join delay
WALL0 = 1_800_000_000.0
STEP = 0.005  # the loop's pass (the shell's is <= 10 ms)


@dataclass
class Proc:
    m: Membership
    nodes: frozenset[str] = frozenset()  # the shell's node list (empty: informers not synced)
    phase: int = 0  # beats staggered over the interval


@dataclass
class Lab:
    """Speakers beating every interval on a STEP tick; records every moment at which a
    running speaker that had counted itself live stops doing so."""

    procs: dict[str, Proc | None] = field(default_factory=dict)
    t: float = 0.0
    tick: int = 0
    inbox: dict[str, list[Heartbeat]] = field(default_factory=dict)
    self_drops: list[tuple[float, str]] = field(default_factory=list)
    was_live: dict[str, bool] = field(default_factory=dict)
    views: dict[str, frozenset[str]] = field(default_factory=dict)

    def boot(self, name: str, nodes: Iterable[str] | None = None, synced: bool = True) -> None:
        """A new speaker process; ``nodes``: its node list arrived already (None: later)."""
        p = Proc(Membership(name, f"boot-{name}-{self.tick}", self.t, CFG),
                 phase=len(self.procs) % 5)
        self.procs[name] = p
        self.inbox[name] = []
        self.was_live[name] = False
        if nodes is not None:
            self.set_nodes(name, nodes)
        if synced:
            p.m.set_synced(True, self.t)

    def set_nodes(self, name: str, nodes: Iterable[str]) -> None:
        p = self.procs[name]
        assert p is not None
        p.nodes = frozenset(nodes)
        p.m.set_members(p.nodes, self.t)
        p.m.forget_departed()

    def synced(self, name: str) -> None:
        p = self.procs[name]
        assert p is not None
        p.m.set_synced(True, self.t)

    def kill(self, name: str) -> None:
        self.procs[name] = None  # its host answers port-unreachable from now on
        self.was_live[name] = False

    def term(self, name: str) -> None:
        p = self.procs[name]
        assert p is not None
        p.m.leave()
        for _ in range(3):
            self._send(name, p)
        self.procs[name] = None
        self.was_live[name] = False

    def _send(self, name: str, p: Proc) -> None:
        h = p.m.heartbeat(self.t, WALL0 + self.t)
        for other in p.nodes - {name}:
            q = self.procs.get(other)
            if q is None:
                p.m.refused(other, self.t)
            else:
                self.inbox[other].append(replace(h, sent_at=WALL0 + self.t))

    def run(self, until: float) -> None:
        while self.t < until - 1e-9:
            for name, p in self.procs.items():
                if p is None:
                    continue
                p.m.tick(self.t)
                for h in self.inbox[name]:
                    if h.node in p.nodes:  # the shell's foreign_address check
                        p.m.observe(h, self.t, WALL0 + self.t)
                self.inbox[name].clear()
                if (self.tick + p.phase) % round(CFG.interval / STEP) == 0:
                    self._send(name, p)
                live = frozenset(p.m.live(self.t))
                self.views[name] = live
                if self.was_live[name] and name not in live:
                    self.self_drops.append((round(self.t, 3), name))
                self.was_live[name] = name in live
            self.tick += 1
            self.t = round(self.tick * STEP, 6)

    def view(self, name: str) -> frozenset[str]:
        return self.views[name]


def settled(names: Iterable[str]) -> Lab:
    lab = Lab()
    names = list(names)
    for n in names:
        lab.boot(n, names)
    lab.run(1.0)
    for n in names:
        assert lab.view(n) == frozenset(names), (n, lab.view(n))
    return lab


# --- a speaker restarts ----------------------------------------------------------------------


def restart(lab: Lab, name: str, nodes: Iterable[str], informers_after: float) -> None:
    """A new process for ``name`` now; its node list and sync ``informers_after`` later (the
    process starts listening at once, but hears nobody before it has the node list)."""
    lab.boot(name, nodes=None, synced=False)
    lab.run(lab.t + informers_after)
    lab.set_nodes(name, nodes)
    lab.synced(name)


def test_graceful_restart_does_not_make_other_owners_drop_themselves() -> None:
    lab = settled("abc")
    lab.term("c")
    lab.run(2.3)
    assert lab.view("a") == lab.view("b") == frozenset("ab")
    restart(lab, "c", "abc", informers_after=0.5)
    lab.run(5.0)
    assert lab.self_drops == []
    # c is back (after a graceful stop no hold-down), in every view including its own
    for n in "abc":
        assert lab.view(n) == frozenset("abc"), (n, lab.view(n))


def test_restart_after_a_crash_does_not_make_other_owners_drop_themselves() -> None:
    lab = settled("abc")
    lab.kill("c")
    lab.run(2.3)
    assert lab.view("a") == lab.view("b") == frozenset("ab")
    restart(lab, "c", "abc", informers_after=0.6)
    lab.run(4.0)
    assert lab.view("a") == lab.view("b") == frozenset("ab")  # c is held down (rule H)
    assert "c" not in lab.view("c")  # and knows it (rule C)
    lab.run(2.9 + CFG.holddown + 1.0)
    assert lab.self_drops == []
    for n in "abc":
        assert lab.view(n) == frozenset("abc"), (n, lab.view(n))


def test_restart_with_node_list_long_before_sync_and_sync_before_node_list() -> None:
    """The pure core takes the two inputs in either order; neither may shorten the warm-up."""
    lab = settled("abc")
    lab.term("c")
    lab.run(2.0)
    lab.boot("c", nodes=None, synced=True)  # synced first (the core allows it) ...
    lab.run(2.5)
    lab.set_nodes("c", "abc")  # ... node list half a second later
    c = lab.procs["c"]
    assert c is not None
    assert not c.m.heartbeat(lab.t, WALL0 + lab.t).ready  # listens a full timeout first
    lab.run(3.5)
    lab.term("c")
    lab.run(4.0)
    lab.boot("c", nodes="abc", synced=False)  # node list at once, sync late
    lab.run(4.6)
    lab.synced("c")
    lab.run(6.0)
    assert lab.self_drops == []
    assert lab.view("c") == frozenset("abc")


def test_every_node_restarting_in_turn_rolling_update() -> None:
    lab = settled("abcd")
    t = 1.0
    for name in "abcd":
        lab.term(name)
        lab.run(t + 0.1)
        restart(lab, name, "abcd", informers_after=0.4)
        t = lab.t + 1.0
        lab.run(t)
        assert all(lab.view(n) == frozenset("abcd") for n in "abcd"), lab.views
    assert lab.self_drops == []


# --- a Node is added while everything runs ---------------------------------------------------


def test_node_added_while_everything_runs() -> None:
    lab = settled("abc")
    # The Node object appears; every speaker's informer hands it over at its own moment.
    lab.set_nodes("a", "abcd")
    lab.run(1.05)
    lab.set_nodes("b", "abcd")
    lab.run(1.2)
    lab.set_nodes("c", "abcd")
    lab.run(1.5)
    # Its speaker starts later (pod scheduled, image pulled) and syncs its informers.
    restart(lab, "d", "abcd", informers_after=0.4)
    lab.run(3.0)
    assert lab.self_drops == []
    for n in "abcd":
        assert lab.view(n) == frozenset("abcd"), (n, lab.view(n))


def test_running_node_does_not_accuse_a_member_it_just_learned_of() -> None:
    """A running speaker whose informer hands it a Node late — that node's speaker already
    runs and owns VIPs — must not list it as down before it could hear it: that would make
    an owner drop itself for join_delay."""
    lab = settled("abd")
    lab.set_nodes("a", "abcd")  # c: a new node; a and b learn of it at once ...
    lab.set_nodes("b", "abcd")
    lab.boot("c", nodes="abcd")
    lab.run(2.0)
    assert lab.view("c") == frozenset("abc")  # d is still unaware of c: it never heard d
    drops = len(lab.self_drops)
    lab.set_nodes("d", "abcd")  # ... d only now
    d = lab.procs["d"]
    assert d is not None
    assert "c" not in d.m.heartbeat(lab.t, WALL0 + lab.t).down  # not heard yet: no evidence
    lab.run(3.0)
    # c, an owner by now, keeps counting itself: d does not accuse it before it could hear it.
    # (d itself lets go for a moment: c's view left d out, so c may have taken d's VIPs —
    # rule C doing its job for a skew the informers caused; see the module docstring.)
    assert "c" not in [n for _, n in lab.self_drops[drops:]], lab.self_drops
    assert all(lab.view(n) == frozenset("abcd") for n in "abcd"), lab.views


# --- the rules behind it, one node at a time ---------------------------------------------------


def beat(node: str, seq: int, t: float, down: tuple[str, ...] = ()) -> Heartbeat:
    return Heartbeat(node, "boot-" + node, seq, True, False, ("eth0",), WALL0 + t, down)


def test_warm_up_counts_from_the_node_list_not_from_the_process_start() -> None:
    m = Membership("c", "boot-c", 0.0, CFG)
    m.set_synced(True, 0.5)
    m.set_members("abc", 0.5)
    assert not m.heartbeat(0.5, WALL0 + 0.5).ready
    assert not m.heartbeat(0.5 + CFG.timeout - 0.001, WALL0).ready
    assert m.next_change(0.6) == 0.5 + CFG.timeout
    assert m.heartbeat(0.5 + CFG.timeout, WALL0).ready


def test_a_joiner_learning_more_members_warms_up_again() -> None:
    m = Membership("c", "boot-c", 0.0, CFG)
    m.set_members("abc", 0.0)
    m.set_synced(True, 0.0)
    m.set_members("abcd", 0.15)  # d appeared before c's warm-up ended: listen to it too
    assert not m.heartbeat(0.3, WALL0).ready
    assert m.heartbeat(0.35, WALL0).ready
    m.set_members("abcde", 0.4)  # once ready, no step back (peers would release our VIPs)
    assert m.heartbeat(0.41, WALL0).ready


def test_no_one_is_listed_down_before_we_could_hear_it_for_a_timeout() -> None:
    m = Membership("a", "boot-a", 0.0, CFG)
    m.set_members("ab", 0.0)
    m.set_synced(True, 0.0)
    m.observe(beat("b", 1, 0.1), 0.1, WALL0 + 0.1)
    assert m.heartbeat(0.2, WALL0 + 0.2).down == ()
    m.set_members("abd", 1.0)  # d is new to us: not heard yet, no evidence against it
    assert m.heartbeat(1.0, WALL0 + 1.0).down == ("b",)
    assert m.heartbeat(1.0 + CFG.timeout - 0.001, WALL0).down == ("b",)
    assert m.heartbeat(1.0 + CFG.timeout, WALL0).down == ("b", "d")  # silent a full timeout
