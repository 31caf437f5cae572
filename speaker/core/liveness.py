"""Speaker-to-speaker liveness: who is alive, decided in well under a second.

Kubernetes Node conditions take 40 s or more to turn NotReady, and Lease-based schemes
(kube-vip, Cilium) fail over in 5-20 s. Here every speaker sends a small UDP heartbeat to every
other member every ``interval`` (100 ms) on the node network — the network the VIPs are
answered on, so a cut there is seen as death — and declares a peer dead when it has heard
nothing from it for ``timeout``. This module is the pure state machine; the socket loop is
``speaker.liveness``.

Members are the Nodes of the cluster (their InternalIP is where heartbeats go). A peer counts
as live when (1) a heartbeat arrived within ``timeout``, (2) that heartbeat said ``ready`` and
(3) not ``leaving``.

Why the numbers. ``interval`` = 100 ms and ``timeout`` = 600 ms. The machines this runs on
stall for 150-350 ms every few tens of seconds (LAB-NOTES); a stalled *sender* leaves a gap of
at most stall + interval = 450 ms, below the timeout, so a stall never looks like a death. A
stalled *receiver* drains its socket before judging (the loop reads every queued heartbeat,
then expires), so its own stall never makes others look dead either. Failover after a real
death is timeout + one check tick (10 ms) + a few ms for the gratuitous ARP: about 0.6-0.7 s.
A speaker that dies while its host stays up (SIGKILL, crash) is detected faster: its host's
kernel answers our next heartbeat with ICMP port-unreachable (``refused``), about one
interval after the death.

Why it is safe:

* Restarting speaker. A new process has a new ``boot`` id and sends ``ready=False`` until its
  informers have synced AND it has listened for one full ``timeout`` (before that it does not
  know who else is live and would wrongly claim every VIP). Peers ignore it until ``ready``.
  It then counts itself live only ``join_delay`` after it first said ``ready``, so the previous
  owner has released a VIP (on hearing ``ready``) before the joiner claims it; in that short
  window nobody answers new ARP requests but clients keep their cached MAC, and the previous
  owner's host still delivers the traffic.
* Graceful stop. The speaker sends ``leaving`` (several times, UDP may drop one); peers drop
  it at once and the next owner sends gratuitous ARP while the leaving node still answers —
  zero lost packets (bench/l2_failover.py scenario c).
* Isolation. A node whose own heartbeat link is down (no carrier, or every send fails) is not
  live to itself: it owns nothing, so it cannot poison caches when the link comes back; after
  isolation it re-runs the warm-up like a restarting speaker.
* Partition of the heartbeat path while layer 2 still connects the sides: both sides may own a
  VIP. This is bounded — as soon as heartbeats pass again, all agree within one interval — and
  visible: each owner watches for ARP replies / NAs for its VIPs from other MACs (the
  duplicate-announcement detector) and reports them as Warning Events and a metric.
* Asymmetric views (A hears B, B does not hear A) converge within ``timeout``: both sides use
  the same rule on what they hear, and heartbeats flow both ways every interval.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PROTOCOL_VERSION = 1
# Heartbeats are tiny; anything larger than this is not ours (and is dropped unparsed).
MAX_HEARTBEAT_BYTES = 4096


DEFAULT_INTERVAL = 0.1  # seconds between heartbeats (see module docstring)
DEFAULT_TIMEOUT = 0.6  # silence that makes a peer dead: > worst stall (350 ms) + interval
DEFAULT_JOIN_DELAY = 0.25  # > 2 intervals: every peer has heard our first ready beat


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    join_delay: float = DEFAULT_JOIN_DELAY


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    boot: str
    seq: int
    ready: bool
    leaving: bool = False
    interfaces: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return json.dumps({
            "v": PROTOCOL_VERSION, "node": self.node, "boot": self.boot, "seq": self.seq,
            "ready": self.ready, "leaving": self.leaving, "ifs": list(self.interfaces),
        }, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> Heartbeat | None:
        """None for anything that is not a well-formed heartbeat (never raises)."""
        if len(data) > MAX_HEARTBEAT_BYTES:
            return None
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(obj, dict) or obj.get("v") != PROTOCOL_VERSION:
            return None
        node, boot, seq = obj.get("node"), obj.get("boot"), obj.get("seq")
        ready, leaving, ifs = obj.get("ready"), obj.get("leaving"), obj.get("ifs", [])
        if not (isinstance(node, str) and node and isinstance(boot, str)
                and isinstance(seq, int) and not isinstance(seq, bool)
                and isinstance(ready, bool) and isinstance(leaving, bool)
                and isinstance(ifs, list) and all(isinstance(i, str) for i in ifs)):
            return None
        return Heartbeat(node, boot, seq, ready, leaving, tuple(ifs))


@dataclass(slots=True)
class _Peer:
    boot: str
    seq: int
    last_seen: float
    ready: bool
    leaving: bool
    interfaces: frozenset[str]
    refused_at: float | None = None


@dataclass(slots=True)
class Membership:
    """Who is live, as seen from node ``me``. Every method takes ``now`` (monotonic seconds)."""

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
    _seq: int = 0

    def __post_init__(self) -> None:
        self._listening_since = self.started

    # --- inputs ------------------------------------------------------------------------------

    def set_members(self, names: Iterable[str]) -> None:
        self.members = frozenset(names)

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

    def observe(self, hb: Heartbeat, now: float) -> None:
        if hb.node == self.me:
            return
        peer = self._peers.get(hb.node)
        if peer is not None and peer.boot == hb.boot and hb.seq <= peer.seq:
            return  # duplicate or reordered
        if peer is not None and peer.boot == hb.boot and peer.leaving:
            return  # leaving is final for a process
        self._peers[hb.node] = _Peer(hb.boot, hb.seq, now, hb.ready, hb.leaving,
                                     frozenset(hb.interfaces))

    def refused(self, node: str, now: float) -> None:
        """The peer's host said nothing listens on the heartbeat port: its speaker is gone."""
        peer = self._peers.get(node)
        if peer is not None:
            peer.refused_at = now

    # --- outputs -----------------------------------------------------------------------------

    def _update_ready(self, now: float) -> None:
        ok = (self._synced and not self._leaving and not self._isolated
              and now >= self._listening_since + self.config.timeout)
        if ok and self._ready_since is None:
            self._ready_since = now
        elif not ok:
            self._ready_since = None

    def heartbeat(self, now: float) -> Heartbeat:
        """The next heartbeat to send (also advances the warm-up state)."""
        self._update_ready(now)
        self._seq += 1
        return Heartbeat(self.me, self.boot, self._seq, self._ready_since is not None,
                         self._leaving, tuple(sorted(self.interfaces)))

    def self_live(self, now: float) -> bool:
        self._update_ready(now)
        return self._ready_since is not None and now >= self._ready_since + self.config.join_delay

    def peer_live(self, name: str, now: float) -> bool:
        peer = self._peers.get(name)
        if peer is None or name not in self.members:
            return False
        if peer.refused_at is not None and peer.refused_at >= peer.last_seen:
            return False
        return peer.ready and not peer.leaving and now - peer.last_seen < self.config.timeout

    def live(self, now: float) -> Mapping[str, frozenset[str] | None]:
        """Live nodes (this one included when it is live) -> their reported interfaces."""
        out: dict[str, frozenset[str] | None] = {
            name: peer.interfaces for name, peer in self._peers.items()
            if self.peer_live(name, now)
        }
        if self.me in self.members and self.self_live(now):
            out[self.me] = self.interfaces
        return out

    def next_change(self, now: float) -> float | None:
        """Earliest future time at which ``live()`` may change without any new input."""
        times = [p.last_seen + self.config.timeout for n, p in self._peers.items()
                 if self.peer_live(n, now)]
        if not self._isolated and not self._leaving and self._synced:
            if self._ready_since is None:
                times.append(self._listening_since + self.config.timeout)
            elif now < self._ready_since + self.config.join_delay:
                times.append(self._ready_since + self.config.join_delay)
        future = [t for t in times if t > now]
        return min(future) if future else None

    def forget_departed(self) -> None:
        """Drop state of peers that are no longer members (Node deleted)."""
        for name in [n for n in self._peers if n not in self.members]:
            del self._peers[name]
