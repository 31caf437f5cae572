"""Speaker-to-speaker liveness: who is alive, decided in a fifth of a second.

Kubernetes Node conditions take 40 s or more to turn NotReady, and Lease-based schemes
(kube-vip, Cilium) fail over in 5-20 s. Here every speaker sends a small UDP heartbeat to every
other member every ``interval`` (25 ms) on the node network — the network the VIPs are
answered on, so a cut there is seen as death — and declares a peer dead when it has heard
nothing from it for ``timeout`` (200 ms). This module is the pure state machine; the socket
loop is ``speaker.liveness``, run in a process of its own (``speaker.heartbeat``).

Members are the Nodes of the cluster (their InternalIP is where heartbeats go). A peer counts
as live when (1) a heartbeat arrived within ``timeout``, (2) that heartbeat said ``ready``, (3)
not ``leaving``, and (4) it is not held down (rule H).

Why a 200 ms timeout is safe. A timeout only works if a live node is never silent for that
long, and on these machines a nice-0 process is: CPU hogs at a higher priority delay it by
hundreds of milliseconds, memory pressure stalls its page faults, and the machine itself
stalls 150-350 ms now and then. Three things close that gap:

* P (priority). The loop runs in a small process at real-time priority (SCHED_FIFO) with its
  memory locked (``speaker.heartbeat``): no normal task, however niced, delays it, and it
  takes no page faults. It shares no GIL with the speaker's busy threads.
* S (own stall). The loop runs at least every 10 ms; a gap of more than ``stall`` (50 ms)
  between two passes (``tick``) means *we* did not run — a frozen machine, SIGSTOP. We then
  (a) read what queued up before judging anyone, and (b) stretch every peer's age by the gap:
  silence we could not have heard is no evidence. A stall of the whole machine therefore kills
  nobody: every receiver sees its own gap. (c) If the gap plus one interval reaches the
  timeout, peers that did run may have declared *us* dead; until every peer that was live has
  been heard ``RELEARN_BEATS`` times again (at most one timeout) we are ``relearning``: the
  shell lets nobody answer ARP/NDP for our VIPs meanwhile (the answer lease, below).
* C (consent). Each heartbeat lists the members its sender does not count live (``down``). We
  count ourselves live only while no peer that is heard and ready lists us, and only
  ``join_delay`` after the last one stopped doing so (its plan must first let our VIPs go). A
  node that comes back from a freeze, a cut or an asymmetric link thus learns from its peers'
  own words that they moved its VIPs, and owns nothing until they take it back.
* J (join: no accusation without a timeout of listening). A ``down`` entry makes its target
  let go (rule C), so it must rest on a full ``timeout`` of silence we *could* have heard. The
  shell drops every heartbeat from a node that is not in its node list (``foreign_address``:
  it does not know that node's addresses), and a restarted speaker gets the list from its
  informers only a while after it started (0.5 s in the lab). So (a) the warm-up (``ready``
  only after listening a full ``timeout``) counts from the moment the node list is first set,
  and starts again when the list gains a node while we are not ready yet; (b) a member that
  entered our node list less than a ``timeout`` ago is never listed down, ready or not (our
  own stalls stretch that time like a peer's age: silence we could not hear is no evidence).
  Before J, a joiner warmed up from its process start, said ``ready`` the moment its node
  list arrived, and its first ``ready`` beats named every peer it had not heard yet: each of
  them stopped counting itself for ``join_delay`` and released VIPs that had nothing to do
  with the joiner — every VIP of the cluster unanswered for ~0.3 s on every speaker restart.

What remains is a node that is silent while it runs — a frozen VM or a stall of one node only:
that *is* a failure as far as its clients can tell (it answers no ARP either), and its VIPs
move. Failover after a real death is timeout - (0..interval) + one check tick (10 ms) + a few
ms for the gratuitous ARP: about 0.2 s. A speaker that dies while its host stays up (SIGKILL,
crash) is detected faster: its host's kernel answers our next heartbeat with ICMP
port-unreachable (``refused``), at most one interval after the death.

H (hold-down, the hysteresis). A peer that we reported live and then saw die (silence or
refused, not ``leaving``) counts as live again only after ``holddown`` (5 s) of being heard
ready without a break; the peer learns this from our ``down`` list (rule C) and does not claim
meanwhile. So one freeze, cut or crash moves its VIPs exactly once; they come back at the
earliest a hold-down after the node is healthy again — one planned move, through the join
hand-over (no packet lost), instead of straight back — and a node that fails again within the
hold-down never gets them back in between: no flapping however often it stalls. Every peer
starts the hold-down when it first hears the node again (within one interval of each other),
so they agree on when it ends. The price: after a partition heals, both sides hold each other
down and see the other's dissent, so both let go of the other side's VIPs until the hold-down
ends (no answers for new clients for 5 s; cached clients keep working) instead of answering
twice for 5 s.

The answer lease (``speaker.answer_lease``), written by the heartbeat process and read by the
responder: answering is allowed only (1) while the heartbeat loop runs (renewed every pass,
valid for timeout/2 — so a frozen node falls silent before any peer can take over), (2) not
while relearning, (3) not while the speaker process is stopped, and (4) only with an owned set
planned from the live map the heartbeat process has last handed out (its epoch). The requests
a frozen speaker finds queued on its socket when it wakes are therefore dropped, not answered.

Why it is safe otherwise:

* Restarting speaker. A new process has a new ``boot`` id and sends ``ready=False`` until its
  informers have synced AND it has listened for one full ``timeout`` with its node list (rule
  J; before that it does not know who else is live and would wrongly claim every VIP). Peers
  ignore it until ``ready``. By then it has heard every running peer (8 beats each), so its
  ``down`` list names only peers that really were silent for a timeout: no other owner lets
  go because of a join. It counts itself live only ``join_delay`` after it first said
  ``ready`` (and after its peers consent, rule C), so the previous owner has released a VIP
  (on hearing ``ready``) before the joiner claims it; in that short window nobody answers new
  ARP requests for the VIPs that move to the joiner, but clients keep their cached MAC, and
  the previous owner's host still delivers the traffic. A process that follows a *crashed*
  one is held down (rule H); one that follows a graceful stop is not.
* Joins keep every other guarantee (rule J only removes ``down`` entries and delays a
  joiner's ``ready``): no one is taken over while all run; a cut node is still found by
  silence within ``timeout`` by every peer (the ``down`` list only tells the victim), and a
  member known for a timeout is listed exactly as before; a joiner B that cannot hear a
  running A (one-way link) still lists A — A has been in B's list for B's whole warm-up — in
  its first ``ready`` beat, so A lets go ``join_delay`` before B claims, as before.
  What J cannot fix is *informer skew*: if A learns a Node N only after N's speaker runs,
  N never heard A (A did not send to it) and lists A down; when A learns N it counts that
  dissent and lets go for ``join_delay`` — rightly, since N's plan left A out and N may own
  A's VIPs (until then both views were wrong about each other; no heartbeat rule can see a
  node its informer has not reported). A in turn does not accuse N for a timeout (it hears
  N within an interval); had A a one-way link from N, N would keep its VIPs up to that
  timeout while A's plan already leaves N out. A new Node's speaker normally starts seconds
  after every informer has reported the Node, so neither happens in practice.
* Graceful stop. The speaker first falls silent (answers no ARP/NDP any more), then sends
  ``leaving`` (three copies at once, then with every heartbeat until it exits; UDP may drop
  one); peers drop it at once and the next owner sends gratuitous ARP / unsolicited NA. Since
  the peers drop the node only on hearing ``leaving``, which it sends after its last answer,
  two MACs never answer at the same time; in the few ms between, cached clients keep sending
  to the old node, which still forwards (zero lost packets, bench/l2_failover.py scenario
  ``term``), and a new client's INCOMPLETE entry is completed by the announcement
  (``speaker.l2_announcer`` has the whole argument). ``leaving`` is final for a process.
* Isolation. A node whose own heartbeat link is down (no carrier, or every send fails) is not
  live to itself: it owns nothing, so it cannot poison caches when the link comes back; after
  isolation it re-runs the warm-up like a restarting speaker, and its peers hold it down.
* Partition of the heartbeat path while layer 2 still connects the sides: both sides may own a
  VIP while it lasts. This is bounded (see rule H for the healing) and visible: each owner
  watches for ARP replies / NAs for its VIPs from other MACs (the duplicate-announcement
  detector) and reports them as Warning Events and a metric.
* Asymmetric views (A hears B, B does not hear A): B lists A as down, so A stops counting
  itself (rule C) and only B's view decides: one owner, not two.

Authenticity and freshness (``speaker.core.liveness_auth`` seals and opens the datagrams).
Anyone on the node network can send UDP to the liveness port with a node's source address, so
the source address proves nothing: a forged ``leaving`` would move a VIP, a forged ``ready``
would keep a VIP on a dead node. Every heartbeat therefore carries an HMAC-SHA256 over its body
under a cluster-wide key (the chart's Secret), and the body carries the sender's ``boot`` id
(random per process), a ``seq`` that increases with every heartbeat of that process, and
``sent_at``, the sender's wall clock. A heartbeat changes nothing unless:

1. its MAC verifies under one of the keys (forgery needs the key);
2. ``|receiver's wall clock - sent_at| <= max_age`` (``stale`` otherwise);
3. for the boot we last accepted from that node: ``seq`` > the last accepted ``seq``; for a
   different boot: ``sent_at`` > the ``sent_at`` of the last accepted heartbeat of that node
   (``replayed`` otherwise).

Why that is enough. An attacker without the key can only re-send heartbeats it captured.
(a) Against a receiver that holds state for the sender, rule 3 rejects every capture of the
current process (its seq was already seen: the attacker cannot make one up, and a capture the
receiver never saw can only exist if the attacker also dropped it, which is a stronger attack
than injection) and every capture of an earlier process of that node (all its heartbeats were
sent before the newer process's first one, so their ``sent_at`` is older — the sender's own
clock, compared with itself). (b) A receiver without state for the sender — it restarted, or
the node just joined — has nothing to compare with; rule 2 bounds what it can be fooled by to
heartbeats sent in the last ``max_age``, i.e. to what the sender really said at most
``max_age`` ago. The worst case is a peer that died less than ``max_age`` ago looking live to
a restarted receiver for at most ``max_age + timeout`` after its death; and a restarted
receiver is still warming up (it owns nothing for its first ``timeout``) for much of that.
A replayed ``leaving`` of an old process is the same: the old process did leave. (c) Rule 3
compares ``sent_at`` only across boots, so a clock step on the sender never rejects beats
within one process; after a backwards step at a restart the new process is heard once its
clock passes the old one's last beat. (d) Rule 2 needs the nodes' clocks within ``max_age``
of each other (minus transit and receiver stalls, a few hundred ms): ``max_age`` = 2 s is an
order of magnitude above what NTP/chrony keeps, and Kubernetes itself misbehaves with worse
skew. A node whose clock is off by more hears nobody (every heartbeat it gets is ``stale``,
counted and logged with the measured skew) — the same as a partition of its heartbeat path.

Rejected heartbeats change no state at all: not the peer's ``last_seen``, ``seq`` or ``boot``.

Keys rotate without an outage because the key file may hold several keys: heartbeats are
signed with the first and accepted under any. Add the new key second (accept-only) and wait
until every speaker loaded it, move it first, wait, remove the old one: at every moment every
speaker accepts what every other one signs (docs/speaker.md "Key rotation").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

# 2: sealed (HMAC) and carries ``t``, the sender's wall clock. Version 1 was unauthenticated;
# a version-1 datagram fails the MAC check and is counted as ``unauthenticated``.
PROTOCOL_VERSION = 2
# Heartbeats are tiny; anything larger than this is not ours (and is dropped unparsed).
MAX_HEARTBEAT_BYTES = 16384  # the "down" list of a large cluster fits


DEFAULT_INTERVAL = 0.025  # s between heartbeats: 8 beats per timeout (one lost beat is noise)
# Silence that makes a peer dead. Not "> worst stall" any more: the sender runs at real-time
# priority and mlocked (speaker.heartbeat), so CPU hogs and memory pressure do not delay it, and a
# stall of the whole machine is seen by every receiver as its own stall (rule S below). 200 ms
# + one interval of phase + a few ms for the gratuitous ARP keeps a link cut under 300 ms.
DEFAULT_TIMEOUT = 0.2
DEFAULT_JOIN_DELAY = 0.25  # > 2 intervals and > a replan of the previous owner's main process
# A loop that has not run for this long was stalled (its select() wakes every 10 ms; at
# real-time priority only the machine itself, or SIGSTOP, keeps it from running that long).
DEFAULT_STALL = 0.05
# Hysteresis: a node we saw die (silence or port-unreachable) counts as live again only after it
# has been heard ready without a break for this long. One stall, cut or crash then moves its VIPs
# once; they come back (without loss: the join hand-over) at the earliest this much later, and a
# node failing again within that time never gets them back in between (no flapping).
DEFAULT_HOLDDOWN = 5.0
RELEARN_BEATS = 2  # post-wake beats from every live peer before trusting our view again
# Freshness window (rule 2 in the module docstring): NTP keeps nodes within milliseconds;
# a receiver stall (<= 350 ms) plus transit stays far below; replays are bounded by it.
DEFAULT_MAX_AGE = 2.0

# What observe() made of an authentic heartbeat. "stale" and "replayed" are rejections (the
# shell counts and logs them); "ignored" is authentic and fresh but changes nothing (our own
# name, or a process that already said it is leaving).
Verdict = Literal["accepted", "ignored", "stale", "replayed"]


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    join_delay: float = DEFAULT_JOIN_DELAY
    max_age: float = DEFAULT_MAX_AGE
    stall: float = DEFAULT_STALL
    holddown: float = DEFAULT_HOLDDOWN


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    boot: str
    seq: int
    ready: bool
    leaving: bool = False
    interfaces: tuple[str, ...] = ()
    sent_at: float = 0.0  # sender's wall clock, seconds since the epoch (freshness, rule 2)
    # Members the sender does NOT count as live (itself excluded): how a node learns that its
    # peers declared it dead (rule C). Short in steady state (usually empty).
    down: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The body (``liveness_auth.seal`` appends the MAC)."""
        body: dict[str, object] = {
            "v": PROTOCOL_VERSION, "node": self.node, "boot": self.boot, "seq": self.seq,
            "t": round(self.sent_at, 3), "ready": self.ready, "leaving": self.leaving,
            "ifs": list(self.interfaces),
        }
        if self.down:
            body["down"] = list(self.down)
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> Heartbeat | None:
        """None for anything that is not a well-formed body (never raises)."""
        if len(data) > MAX_HEARTBEAT_BYTES:
            return None
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(obj, dict) or obj.get("v") != PROTOCOL_VERSION:
            return None
        node, boot, seq, t = obj.get("node"), obj.get("boot"), obj.get("seq"), obj.get("t")
        ready, leaving, ifs = obj.get("ready"), obj.get("leaving"), obj.get("ifs", [])
        down = obj.get("down", [])
        if not (isinstance(down, list) and all(isinstance(d, str) for d in down)):
            return None
        if not (isinstance(node, str) and node and isinstance(boot, str)
                and isinstance(seq, int) and not isinstance(seq, bool)
                and isinstance(t, int | float) and not isinstance(t, bool)
                and math.isfinite(t)  # json.loads takes NaN/Infinity; comparisons would lie
                and isinstance(ready, bool) and isinstance(leaving, bool)
                and isinstance(ifs, list) and all(isinstance(i, str) for i in ifs)):
            return None
        return Heartbeat(node, boot, seq, ready, leaving, tuple(ifs), float(t), tuple(down))


@dataclass(slots=True)
class _Peer:
    boot: str
    seq: int
    sent_at: float
    last_seen: float
    ready: bool
    leaving: bool
    interfaces: frozenset[str]
    refused_at: float | None = None
    down: frozenset[str] = frozenset()


@dataclass(slots=True)
class Membership:
    """Who is live, as seen from node ``me``. Every method takes ``now`` (monotonic seconds);
    ``observe`` and ``heartbeat`` also ``wall`` (seconds since the epoch, for freshness)."""

    me: str
    boot: str
    started: float
    config: LivenessConfig = field(default_factory=LivenessConfig)
    members: frozenset[str] = frozenset()
    interfaces: frozenset[str] = frozenset()
    _peers: dict[str, _Peer] = field(default_factory=dict)
    _synced: bool = False
    _leaving: bool = False
    _isolated: bool = False
    _listening_since: float = 0.0
    _ready_since: float | None = None
    # rule J (join): when each member entered our node list; nobody is listed down before we
    # could have heard it for a full timeout
    _known_since: dict[str, float] = field(default_factory=dict)
    _has_members: bool = False  # no node list yet: we cannot have heard anyone
    _seq: int = 0
    # rule S (stalls): when the loop last ran; peers we must hear again after a long stall
    _last_tick: float | None = None
    _relearn: dict[str, int] | None = None
    _relearn_until: float = 0.0
    # rule H (hold-down): peers we reported live, peers we saw die, when they came back
    _reported: frozenset[str] = frozenset()
    _self_reported: bool = False
    _dead: dict[str, float] = field(default_factory=dict)
    _back: dict[str, float] = field(default_factory=dict)
    # rule C (consent): peers whose latest beat says we are not live; when the last such
    # dissent ended
    _dissent: set[str] = field(default_factory=set)
    _consent_at: float = -math.inf

    def __post_init__(self) -> None:
        self._listening_since = self.started

    # --- inputs ------------------------------------------------------------------------------

    def set_members(self, names: Iterable[str], now: float) -> None:
        """The node list (from the informers). Rule J: a member we did not know before has
        not been heard by us (the shell drops a heartbeat from a node not in its list), so
        until a full ``timeout`` has passed we have no evidence against it — it is not listed
        down meanwhile — and a speaker still warming up starts its warm-up again, so that it
        says ``ready`` only after listening a full timeout *with this list*."""
        new = frozenset(names)
        added = new - self.members - {self.me}
        for name in added:
            self._known_since[name] = now
        for name in self.members - new:
            self._known_since.pop(name, None)
        self.members = new
        first, self._has_members = not self._has_members, True
        if (added or first) and self._ready_since is None:
            # Never a step back once ready: a node that stopped saying ready would make its
            # peers release its VIPs for nothing.
            self._listening_since = max(self._listening_since, now)
            self._update_ready(now)

    def set_synced(self, synced: bool, now: float) -> None:
        self._synced = synced
        self._update_ready(now)

    def set_interfaces(self, names: Iterable[str]) -> None:
        self.interfaces = frozenset(names)

    def set_isolated(self, isolated: bool, now: float) -> None:
        if isolated and not self._isolated:
            self._ready_since = None
        if not isolated and self._isolated:
            self._listening_since = now  # warm up again: our view of peers is stale
        self._isolated = isolated
        self._update_ready(now)

    def leave(self) -> None:
        self._leaving = True
        self._ready_since = None

    def observe(self, hb: Heartbeat, now: float, wall: float) -> Verdict:
        """Take in one *authentic* heartbeat (its MAC verified); rules 2 and 3 of the module
        docstring. Anything but "accepted" leaves every piece of state as it was."""
        if abs(wall - hb.sent_at) > self.config.max_age:
            return "stale"
        if hb.node == self.me:
            # We never send to ourselves: an authentic beat in our name is a reflection.
            return "replayed"
        peer = self._peers.get(hb.node)
        if peer is not None:
            if peer.boot == hb.boot:
                if hb.seq <= peer.seq:
                    return "replayed"  # or a duplicate / reordered datagram: same thing
                if peer.leaving:
                    return "ignored"  # leaving is final for a process
            elif hb.sent_at <= peer.sent_at:
                return "replayed"  # an earlier process of that node (rule 3)
        # A silence that ended just now is still a death (rule H), even if no one asked.
        self._note_deaths(now)
        self._peers[hb.node] = _Peer(hb.boot, hb.seq, hb.sent_at, now, hb.ready, hb.leaving,
                                     frozenset(hb.interfaces), None, frozenset(hb.down))
        if hb.node in self._dead and hb.ready and not hb.leaving:
            self._back.setdefault(hb.node, now)
        if self.me in hb.down:
            self._dissent.add(hb.node)
        elif hb.node in self._dissent:
            self._dissent.discard(hb.node)
            self._consent_at = now
        if self._relearn is not None and hb.node in self._relearn:
            self._relearn[hb.node] += 1
        return "accepted"

    def refused(self, node: str, now: float) -> None:
        """The peer's host said nothing listens on the heartbeat port: its speaker is gone."""
        peer = self._peers.get(node)
        if peer is not None:
            peer.refused_at = now

    def tick(self, now: float) -> float:
        """Called by the loop every time it runs, BEFORE it reads queued heartbeats. Returns
        the stall it detected (0.0: none): a gap since the previous call longer than
        ``config.stall`` is a stall of this process (rule S)."""
        last, self._last_tick = self._last_tick, now
        if last is None or now - last <= self.config.stall:
            return 0.0
        gap = now - last
        self.stalled(gap, now)
        return gap

    def stalled(self, gap: float, now: float, extend: bool = True) -> None:
        """We could not run (or not answer: ``extend=False``, the loop itself kept running)
        for ``gap`` seconds up to ``now`` (rule S).

        ``extend``: nothing was observed meanwhile, so the silence of the peers during the gap
        proves nothing: their ages do not grow by it (nor our own warm-up). If the gap was long
        enough for a peer to have declared *us* dead (gap + one interval of phase >= timeout),
        our view is not to be trusted until every peer live before the stall has been heard
        ``RELEARN_BEATS`` times (or ``timeout`` passed): ``relearning`` is True meanwhile and
        the shell lets nobody answer for a VIP (the lease)."""
        if extend:
            for p in self._peers.values():
                p.last_seen = min(p.last_seen + gap, now)
            if self._ready_since is None:
                self._listening_since = min(self._listening_since + gap, now)
            for name, since in self._known_since.items():  # nor is it for a new member
                self._known_since[name] = min(since + gap, now)
        if gap + self.config.interval >= self.config.timeout:
            self._relearn = {n: 0 for n, p in self._peers.items()
                             if n in self.members and self._alive(p, now)}
            self._relearn_until = now + self.config.timeout

    # --- outputs -----------------------------------------------------------------------------

    def relearning(self, now: float) -> bool:
        """True after a long stall until our view is fresh again (rule S)."""
        if self._relearn is None:
            return False
        if now >= self._relearn_until or all(
                c >= RELEARN_BEATS or n not in self._peers
                or not self._alive(self._peers[n], now)
                for n, c in self._relearn.items()):
            self._relearn = None
            return False
        return True

    def _alive(self, peer: _Peer, now: float) -> bool:
        """Heard recently, ready, not leaving, not refused since (no hold-down)."""
        if peer.refused_at is not None and peer.refused_at >= peer.last_seen:
            return False
        return peer.ready and not peer.leaving and now - peer.last_seen < self.config.timeout

    def _note_deaths(self, now: float) -> None:
        """Rule H bookkeeping: a peer we reported live that fell silent (or was refused) died;
        a dead peer that is heard ready again serves its hold-down without a break."""
        for name in self._reported:
            peer = self._peers.get(name)
            if peer is None or peer.leaving or not peer.ready or name in self._dead:
                continue
            if not self._alive(peer, now):
                self._dead[name] = now
                self._back.pop(name, None)
        for name in list(self._dead):
            peer = self._peers.get(name)
            if peer is None or not self._alive(peer, now):
                self._back.pop(name, None)
            elif (back := self._back.get(name)) is not None and now >= back + self.config.holddown:
                del self._dead[name]
                del self._back[name]

    def _update_ready(self, now: float) -> None:
        ok = (self._synced and self._has_members and not self._leaving and not self._isolated
              and now >= self._listening_since + self.config.timeout)
        if ok and self._ready_since is None:
            self._ready_since = now
        elif not ok:
            self._ready_since = None

    def heartbeat(self, now: float, wall: float) -> Heartbeat:
        """The next heartbeat to send (also advances the warm-up state)."""
        self._update_ready(now)
        self._seq += 1
        down = tuple(sorted(m for m in self.members
                            if m != self.me and not self.peer_live(m, now)
                            and now >= self._known_since.get(m, -math.inf) + self.config.timeout))
        return Heartbeat(self.me, self.boot, self._seq, self._ready_since is not None,
                         self._leaving, tuple(sorted(self.interfaces)), wall, down)

    def self_live(self, now: float) -> bool:
        self._update_ready(now)
        if self._ready_since is None or now < self._ready_since + self.config.join_delay:
            return False
        if self.relearning(now):
            return self._self_reported  # no churn while our view is being refreshed
        if any(n in self._dissent and n in self.members and self._alive(p, now)
               for n, p in self._peers.items()):
            return False  # rule C: a live peer says we are dead: it (or another) has our VIPs
        return now >= self._consent_at + self.config.join_delay

    def peer_live(self, name: str, now: float) -> bool:
        peer = self._peers.get(name)
        if peer is None or name not in self.members or not self._alive(peer, now):
            return False
        if name in self._dead:  # rule H
            back = self._back.get(name)
            return back is not None and now >= back + self.config.holddown
        return True

    def live(self, now: float) -> Mapping[str, frozenset[str] | None]:
        """Live nodes (this one included when it is live) -> their reported interfaces."""
        self._note_deaths(now)
        out: dict[str, frozenset[str] | None] = {
            name: peer.interfaces for name, peer in self._peers.items()
            if self.peer_live(name, now)
        }
        self._reported = frozenset(out)
        self._self_reported = self.me in self.members and self.self_live(now)
        if self._self_reported:
            out[self.me] = self.interfaces
        return out

    def next_change(self, now: float) -> float | None:
        """Earliest future time at which ``live()`` may change without any new input."""
        times = [p.last_seen + self.config.timeout for n, p in self._peers.items()
                 if self._alive(p, now)]
        times += [b + self.config.holddown for b in self._back.values()]
        if self._relearn is not None:
            times.append(self._relearn_until)
        if not self._isolated and not self._leaving and self._synced and self._has_members:
            if self._ready_since is None:
                times.append(self._listening_since + self.config.timeout)
            else:
                times.append(self._ready_since + self.config.join_delay)
                times.append(self._consent_at + self.config.join_delay)
        future = [t for t in times if t > now]
        return min(future) if future else None

    def forget_departed(self) -> None:
        """Drop state of peers that are no longer members (Node deleted)."""
        for name in [n for n in self._peers if n not in self.members]:
            del self._peers[name]
            self._dead.pop(name, None)
            self._back.pop(name, None)
            self._dissent.discard(name)
