"""Layer-2 announcer: liveness + planning + ARP/NDP responder + reporting, wired together.

Replanning happens on two triggers: a new snapshot (``sync``, from the informer loop) and a
liveness change (from the heartbeat thread, without any debounce: that is the failover path).
Both run the same pure ``plan_l2`` under one lock and hand the owned set to the responder,
which sends gratuitous ARP / unsolicited NA for every VIP it gains.

Graceful stop (SIGTERM): silence first, then "leaving" — a hand-over in which two MACs never
answer at the same time.

1. Stop replanning, and silence the responder (``Responder.silence``): when that call returns
   every ARP reply / NA this node will ever send is already in the kernel, and no request is
   answered, no announcement sent, from then on.
2. Only then send "leaving" (``Liveness.leave``: three copies at once, then with every
   heartbeat until the process ends).
3. Wait, silent, until each VIP that has a next owner (``l2_plan.successors``) has been
   announced by another MAC, at most ``HANDOVER_TIMEOUT`` — for the log line, and so that the
   leaving heartbeats keep going out should the first copies be lost. VIPs without a next
   owner (a single node, no other eligible live node) are not waited for: nobody answers them
   after the stop, which is the truth.

Why no instant has two MACs answering. The peers keep us in their live map until they hear
"leaving" (we still heartbeat ``ready`` until then), and the next owner claims a VIP only
after its plan drops us, i.e. after it received a leaving heartbeat that we sent after our
last answer. Our last answer is on the wire before the first leaving heartbeat, which takes a
network hop, a heartbeat-process wake-up, a message to the speaker, a replan and a responder
wake-up (milliseconds) before the next owner sends anything. And no request is answered by
both of us: one that reached us before we fell silent reached the next owner at the same
moment, before it owned the VIP — its kernel filter dropped it, or, with the coarse filter,
the responder decides queued frames with the ownership they arrived under
(``Responder._apply_desired``). Both families follow the same path (ARP request / NS, reply /
NA); the only difference is the announcement frame (gratuitous ARP vs unsolicited NA with the
override flag).

What the client sees in the gap (from our silence to the next owner's first gratuitous ARP /
unsolicited NA, a few ms): a client with a cached entry for our MAC loses nothing — this node
keeps forwarding traffic sent to its MAC while the speaker exits (the speaker only answers
ARP/NDP; kube-proxy and the kernel deliver the data), and the announcement moves it to the
new MAC. A brand-new client asking in the gap gets no answer; its neighbour entry is then
INCOMPLETE, and Linux completes an existing entry from a gratuitous ARP / an unsolicited NA
with the override flag (the ``arp_accept`` / "no unsolicited entry" rules only keep them from
*creating* entries), so the next owner's announcement, sent at once and repeated after 50 and
200 ms, answers it; a stack that ignores announcements retries after its retransmit timer
(1 s on Linux) and is answered by the new owner.

Corner cases: a SIGTERM that finds the node frozen, re-learning or isolated answers nothing
anyway (the answer lease, which no hand-over overrides any more); silence and "leaving" only
make it final. The duplicate-announcement detector stays quiet once silent: the next owner's
announcement is the hand-over's confirmation, not a conflict (``Responder._duplicate``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from common.api.model import IPAddress
from speaker import metrics as M
from speaker.core import health as H
from speaker.core.l2_plan import L2Plan, plan_l2, successors
from speaker.core.l2_report import service_conditions, wire_targets
from speaker.core.liveness import LivenessConfig
from speaker.core.snapshot import ClusterSnapshot
from speaker.heartbeat import HeartbeatProcess
from speaker.l2 import Metrics, Responder
from speaker.liveness import Liveness
from speaker.report import WIRE_REPORT_INTERVAL, Lookup, Reporter, ReportState

# s: at most this long a graceful stop waits, silent, to see the next owners announce (and
# keeps sending leaving heartbeats meanwhile); clients do not depend on it.
HANDOVER_TIMEOUT = 1.0
HANDOVER_POLL = 0.005  # s between checks while waiting
DUPLICATE_REPORT_EVERY = 10.0  # s: per VIP, bounds Events/log lines from a flapping claimant


def _where(interfaces: frozenset[str] | None) -> str:
    return "all interfaces" if interfaces is None else ", ".join(sorted(interfaces))


class L2Announcer:
    def __init__(
        self,
        node: str,
        client: Any,
        events: Any,
        lookup: Lookup,
        log: Any,
        interfaces: frozenset[str] | None,
        liveness_port: int,
        liveness_interface: str | None,
        config: LivenessConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        key_file: str | None = None,
        heartbeat_process: bool = True,
        log_level: str = "info",
        sleep: Callable[[float], None] = time.sleep,
        wire_report_interval: float = WIRE_REPORT_INTERVAL,
    ) -> None:
        self.node = node
        self.log = log
        self.now = monotonic
        self.sleep = sleep
        self._lock = threading.RLock()
        self._snapshot: ClusterSnapshot | None = None
        self._plan: L2Plan | None = None
        self._stopping = False
        self._dup_last: dict[IPAddress, float] = {}
        self._build_problems: list[tuple[str, str, Any]] = []
        self._stale: list[tuple[str, str]] = []
        self._health = H.HEALTHY  # this node's own faults (speaker.health), published below
        self._withheld: dict[IPAddress, str] = {}
        self.responder = Responder(
            interfaces, Metrics(M.L2_REQUESTS, M.L2_REPLIES, M.L2_GRATUITOUS, M.L2_DUPLICATES,
                                M.L2_ERRORS), log, self._on_duplicate, monotonic,
            on_announced=self._on_announced)
        # Liveness in its own real-time process (speaker.heartbeat: why), which also hands the
        # responder its answer lease; in-process only where asked (debugging, tests).
        self.liveness: Liveness | HeartbeatProcess
        if heartbeat_process:
            self.liveness = HeartbeatProcess(node, liveness_port, config or LivenessConfig(),
                                             self._on_live, log, M.LivenessMetrics(),
                                             liveness_interface=liveness_interface,
                                             key_file=key_file, log_level=log_level)
            self.responder.lease = self.liveness.lease
        else:
            self.liveness = Liveness(node, liveness_port, config or LivenessConfig(),
                                     self._on_live, log, M.LivenessMetrics(),
                                     liveness_interface=liveness_interface,
                                     monotonic=monotonic, key_file=key_file)
        # What the wire saw (portico.dev/L2Wire): the responder's figures, read by the
        # reporter's worker when it writes (speaker.report).
        self.reporter = Reporter(client, events, lookup, log, wire=self.responder.wire,
                                 me=node, wire_interval=wire_report_interval)

    def start(self) -> None:
        self.responder.start()
        self.liveness.set_interfaces(self._published_interfaces())
        self.liveness.start()
        self.reporter.start()

    # --- Announcer protocol ----------------------------------------------------------------

    def sync(self, snapshot: ClusterSnapshot) -> None:
        self.liveness.set_nodes({n: i.addresses for n, i in snapshot.nodes.items()})
        self.liveness.set_interfaces(self._published_interfaces())
        with self._lock:
            self._snapshot = snapshot
        self.liveness.set_synced(True)
        self._replan(*self._live_epoch())

    def set_health(self, health: H.NodeHealth) -> None:
        """This node's faults changed (speaker.health thread): publish them in the heartbeats
        (how the other speakers leave this node out) and replan at once (how this node lets
        go before they have heard)."""
        with self._lock:
            self._health = health
        self.liveness.set_interfaces(self._published_interfaces())
        self._replan(*self._live_epoch())

    def _published_interfaces(self) -> list[str]:
        """The heartbeat's interface list: interfaces with carrier, then health entries."""
        with self._lock:
            health = self._health
        names = [i for i in self.responder.interfaces() if i not in health.down_interfaces]
        return sorted(names) + H.encode(health)

    def _live_epoch(self) -> tuple[Mapping[str, frozenset[str] | None], int]:
        if isinstance(self.liveness, HeartbeatProcess):
            return self.liveness.live_epoch()
        return self.liveness.live(), 0

    def stop(self, graceful: bool) -> None:
        with self._lock:
            self._stopping = True  # no replan from here on: nothing may claim a VIP again
            snap = self._snapshot
        # Silence before "leaving" (module docstring): after this returns nothing of ours is
        # sent, so no peer can act on our leaving while we still answer.
        self.responder.silence()
        owned = self.responder.owned()
        if graceful:
            self._hand_over(owned, snap)
        self.responder.set_owned({})
        self.liveness.stop()
        self.responder.stop()
        self.reporter.stop()
        M.L2_VIPS_OWNED.set(0)

    def _hand_over(self, owned: frozenset[IPAddress], snap: ClusterSnapshot | None) -> None:
        """Say "leaving" (we are already silent) and wait, at most ``HANDOVER_TIMEOUT``, until
        every owned VIP that has a next owner was announced by another MAC."""
        live = self.liveness.live()  # as the peers see it until they hear us leave
        t0 = self.now()
        self.liveness.leave()  # first: we are silent, and every ms until this is a gap
        if not owned:
            return
        nxt = successors(snap, live, self.node, owned) if snap is not None else {}
        expected = sorted((v for v, n in nxt.items() if n is not None),
                          key=lambda a: (a.version, int(a)))
        deadline = t0 + HANDOVER_TIMEOUT
        while expected and self.now() < deadline and not all(
                self.responder.foreign_since(v, t0) for v in expected):
            self.sleep(HANDOVER_POLL)
        self.log.info("l2_handover", vips=sorted(str(v) for v in owned),
                      next_owner={str(v): n for v, n in nxt.items()},
                      handed_over=[str(v) for v in expected
                                   if self.responder.foreign_since(v, t0)],
                      unanswered_requests=self.responder.silent_drops(),
                      seconds=round(self.now() - t0, 3))

    # --- internals ---------------------------------------------------------------------------

    def _on_live(self, live: Mapping[str, frozenset[str] | None]) -> None:
        self._replan(*self._live_epoch())

    def _replan(self, live: Mapping[str, frozenset[str] | None], epoch: int = 0) -> None:
        with self._lock:
            snap = self._snapshot
            if snap is None or self._stopping:
                return
            if self.node in live:
                # Our own entry as we publish it now, not as the heartbeat process last
                # echoed it: a fault takes effect here without waiting for the round trip.
                live = dict(live)
                live[self.node] = frozenset(self._published_interfaces())
            plan = plan_l2(snap, live, self.node, self.responder.interfaces())
            old = self._plan.mine if self._plan is not None else {}
            self.responder.set_owned(plan.mine, epoch)
            self._plan = plan
        gained = [v for v in plan.mine if v not in old]
        lost = [v for v in old if v not in plan.mine]
        if gained:
            M.L2_OWNERSHIP_CHANGES.labels("acquired").inc(len(gained))
        if lost:
            M.L2_OWNERSHIP_CHANGES.labels("released").inc(len(lost))
        M.L2_VIPS_OWNED.set(len(plan.mine))
        with self._lock:
            self._count_withheld(plan)
        live_names = sorted(live)
        state = ReportState(
            conditions=service_conditions(snap, plan, live_names, self.node),
            wire=wire_targets(snap, plan, live_names, self.node),
            problems=[(p.ref.kind, p.ref.name, p) for p in plan.local_problems],
            gained=[(v, plan.vips[v].services,
                     f"node {self.node} announces {v} by {'ARP' if v.version == 4 else 'NDP'}"
                     f" ({_where(plan.vips[v].owner_interfaces)})")
                    for v in gained],
        )
        # Cluster-wide problems are reported by one node only: the first live one by name.
        if live_names and live_names[0] == self.node:
            assert state.problems is not None
            state.problems += [(p.ref.kind, p.ref.name, p) for p in plan.problems]
            state.problems += self._build_problems
            state.clear = list(self._stale)
        self.reporter.submit(state)

    def _count_withheld(self, plan: L2Plan) -> None:
        withheld = {v: r for v, p in plan.vips.items() for n, r in p.skipped if n == self.node}
        for reason in H.REASONS:
            M.VIPS_WITHHELD.labels("l2", reason).set(
                sum(1 for r in withheld.values() if r == reason))
        for v, r in withheld.items():
            if self._withheld.get(v) != r:
                M.HEALTH_WITHDRAWALS.labels("l2", r).inc()
                self.log.info("l2_vip_withheld", vip=str(v), reason=r)
        self._withheld = withheld

    def set_stale_conditions(self, services: list[tuple[str, str]]) -> None:
        """Services carrying our condition but holding no address any more."""
        with self._lock:
            self._stale = list(services)

    def set_build_problems(self, problems: Any) -> None:
        """Invalid objects found while building the snapshot: (kind, name, problems)."""
        with self._lock:
            self._build_problems = [(k, n, p) for k, n, ps in problems for p in ps]

    def _on_announced(self, vip: IPAddress) -> None:
        """The responder's first announcement after gaining ``vip`` is on the wire (responder
        thread): the L2Wire condition can now say when; the reporter writes it off this
        thread."""
        self.reporter.poke()

    def _on_duplicate(self, vip: IPAddress, mac: str, iface: str) -> None:
        now = self.now()
        if now - self._dup_last.get(vip, -1e9) < DUPLICATE_REPORT_EVERY:
            return
        self._dup_last[vip] = now
        with self._lock:
            plan = self._plan
        services = plan.vips[vip].services if plan is not None and vip in plan.vips else ()
        msg = (f"node {self.node} owns {vip} but MAC {mac} also announces it on {iface} "
               "(split brain or a foreign device)")
        self.log.warning("l2_duplicate", vip=str(vip), mac=mac, interface=iface)
        self.reporter.submit(ReportState(duplicates=[(vip, services, msg)]))
