"""BgpAnnouncer: the speaker's BGP announcer (``Announcer`` protocol: sync / stop).

``sync`` only stores the newest snapshot and wakes a worker thread, so it never blocks. The
worker owns everything else, in one place, so there are no races between decisions:
plan (pure, ``speaker.core.bgp``) -> exabgp configuration (restart exabgp when it changes or
died, with exponential backoff) -> per established session, diff announced vs wanted routes
and send withdraw/announce commands one at a time, each waiting for exabgp's ack -> ask
exabgp what it actually holds per neighbor (``show neighbor summary`` + ``show adj-rib out``,
every 30 s and 2 s after a change at the earliest) -> status.

exabgp session events arrive on the API reader thread and are queued for the worker: "up"
resets the session's announced set so the full route set is re-sent; "down" too, so that
nothing is assumed about what a router kept.

BFD: when a BGPPeer has ``spec.bfd``, the worker also runs FRR ``bfdd`` (``speaker.bgp.bfdd``)
with the configuration ``speaker.core.bgp_bfd`` renders, restarting it when it died or the
configuration changed (same backoff as exabgp) and stopping it after the sessions closed.

Health (``speaker.core.health``): VIPs this node withholds (probe failed, no local endpoint
under ETP Local) are withdrawn; each change gives the Service an Event (``BGPWithdrawn`` with
the reason, ``BGPAnnouncing`` when it is back) and ``portico_speaker_vips_withheld``.

Graceful stop (SIGTERM), and the last BGPPeer of this node going away: withdraw everything on
every established session, then close each with NOTIFICATION Cease/Administrative Shutdown
(``teardown_command``; ``exabgp_run`` makes exabgp send it although graceful restart was
negotiated), wait until exabgp reports each session down (at most ``TEARDOWN_WAIT_S``), then
SIGTERM exabgp. A router that receives the NOTIFICATION ends the session at once, without
graceful-restart helper mode: nothing is kept as stale, no restart timer runs. Without the
Cease (exabgp's own SIGTERM closes with a bare FIN) the router would hold the session's
graceful-restart state for the restart time (120 s). Non-graceful: kill exabgp; routers then
keep our routes as stale for the graceful-restart time, which is what a speaker restart on a
live node wants (the restarted speaker re-announces and the stale marks clear).
"""

from __future__ import annotations

import ipaddress
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from common.api.model import GROUP, VERSION, BGPPeer, FieldProblem, ObjectRef
from common.errors import Refused
from common.kube.refusal import RefusalMemo, report_refusal
from speaker import metrics as speaker_metrics
from speaker.bgp import metrics
from speaker.bgp.bfdd import BfddProcess
from speaker.bgp.process import ExaBgpProcess, Redactor
from speaker.core import bgp as core
from speaker.core import health as H
from speaker.core.bgp_bfd import render_bfdd_config
from speaker.core.bgp_exabgp import (
    SHOW_ADJ_RIB_OUT,
    SHOW_NEIGHBOR_SUMMARY,
    ApiMessage,
    PeerRib,
    Shutdown,
    StateEvent,
    announce_commands,
    eor_command,
    parse_rib_report,
    render_config,
    teardown_command,
    withdraw_commands,
)
from speaker.core.snapshot import ClusterSnapshot
from speaker.errors import ExaBgpError

# lazy proxy: resolves at first use, so the speaker's common.logs.configure() applies
log = structlog.get_logger(component="speaker-bgp")

ACK_TIMEOUT_S = 30.0  # a 500-NLRI command is parsed in well under 1 s; 30 s means wedged
TICK_S = 1.0  # worker wakes at least this often: backoff expiry, status retries
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
# After the withdraw acks, exabgp still has to put the UPDATEs on the wire before SIGTERM
# closes the socket; its reactor loop runs every few ms, 0.3 s is ample and bounded.
FLUSH_BEFORE_CLOSE_S = 0.3
# After "teardown", exabgp sends the NOTIFICATION on its next reactor pass (milliseconds) and
# reports the session down; 2 s bounds the wait if a report never comes (the kubelet grants
# the whole speaker 30 s).
TEARDOWN_WAIT_S = 2.0
STATUS_MESSAGE_MAX = 1024  # the CRD's maxLength of status.nodes.*.message: longer is a 422
# exabgp's own view (adj-RIB-out + FSM state) is polled every RIB_POLL_S, and after a change
# the worker applied (routes sent, a session state change) once RIB_MIN_GAP_S has passed since
# the previous poll: a burst of changes costs one poll per 2 s, not one per change. Each poll
# is two API commands whose answers are one line per route (10,000 routes: 0.09 s of exabgp's
# time with process.SHOW_CHUNK, so a 30 s period costs it ~0.3 %).
RIB_POLL_S = 30.0
RIB_MIN_GAP_S = 2.0
# status.nodes.*.advertisedPrefixes lists at most this many (the CRD's maxItems; the count is
# always exact): 10,000 prefixes per node and peer would make the BGPPeer object huge.
STATUS_PREFIXES_MAX = 100
# exabgp's lower-case FSM names -> the BGP FSM names users know (RFC 4271 section 8.2.2)
FSM_NAMES = {"idle": "Idle", "connect": "Connect", "active": "Active", "opensent": "OpenSent",
             "openconfirm": "OpenConfirm", "established": "Established"}


class PatchClient(Protocol):
    def patch(
        self, res: Any, name: str, patch: Any, namespace: str | None = None,
        subresource: str | None = None, patch_type: str = "merge",
    ) -> Any: ...


class Recorder(Protocol):
    def record(
        self, involved: dict[str, Any], type_: str, reason: str, message: str,
        action: str | None = None, resource: Any = None,
    ) -> None: ...


def _network_key(prefix: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(prefix)
    return (net.version, int(net.network_address), net.prefixlen)


def _involved(ref: ObjectRef) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": ref.kind,
            "metadata": {"name": ref.name}}


class BgpAnnouncer:
    def __init__(
        self,
        node_name: str,
        kube: PatchClient,
        events: Recorder,
        exabgp_path: str,
        state_dir: str,
        graceful_restart_time: int = 120,
    ) -> None:
        self.node = node_name
        self.kube = kube
        self.events = events
        self.graceful_restart_time = graceful_restart_time
        self.redact = Redactor()
        self._messages: queue.Queue[ApiMessage] = queue.Queue()
        self.proc = ExaBgpProcess(exabgp_path, state_dir, self._on_message, self.redact)
        self._latest: ClusterSnapshot | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._graceful = True
        self._config: str | None = None
        self._backoff = BACKOFF_MIN_S
        self._next_start = 0.0
        self._plan = core.BgpPlan()
        self._state: dict[str, str] = {}  # neighbor -> connected|up|down
        self._since: dict[str, str] = {}  # neighbor -> RFC 3339 time of the last change
        self._announced: dict[str, frozenset[core.Route]] = {}
        self._eor_sent: set[str] = set()  # neighbors told End-of-RIB since they came up
        self._reported: set[FieldProblem | core.PeerProblem] = set()
        self._status_written: dict[str, dict[str, Any] | None] = {}
        # Status writes the API server refused (400/403/422), by peer: not sent again until
        # the entry or the peer's spec changes (retrying every tick would be refused again).
        self._status_refused: RefusalMemo[str] = RefusalMemo()
        self._peer_specs: dict[str, BGPPeer] = {}
        self._clock = time.monotonic  # replaced by a fake clock in unit tests
        self._rib: dict[str, PeerRib] = {}  # neighbor -> exabgp's last answer
        self._rib_polled: float | None = None  # clock time of the last poll; None: never
        self._rib_changed = False  # the worker changed something since the last poll
        self.updates_sent = 0
        self.bfd = BfddProcess(state_dir)
        self._bfd_next_start = 0.0
        self._bfd_backoff = BACKOFF_MIN_S
        self._bfd_failure_reported = False
        self._health = H.HEALTHY
        self._withheld: dict[Any, str] = {}
        self._planned_vips: frozenset[Any] = frozenset()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"bgp-{node_name}")
        self._thread.start()

    # --- Announcer protocol -------------------------------------------------------------------

    def sync(self, snapshot: ClusterSnapshot) -> None:
        with self._lock:
            self._latest = snapshot
        self._wake.set()

    def set_health(self, health: H.NodeHealth) -> None:
        """This node's faults changed (speaker.health): replan now, not at the next tick."""
        with self._lock:
            self._health = health
        self._wake.set()

    def stop(self, graceful: bool = True) -> None:
        self._graceful = graceful
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=60)

    # --- introspection for tests and the speaker ----------------------------------------------

    def session_states(self) -> dict[str, str]:
        return dict(self._state)

    def announced(self) -> dict[str, frozenset[core.Route]]:
        return dict(self._announced)

    # --- worker -------------------------------------------------------------------------------

    def _on_message(self, msg: ApiMessage) -> None:  # API reader thread
        self._messages.put(msg)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(TICK_S)
            self._wake.clear()
            if self._stopping.is_set():
                self._shutdown()
                return
            try:
                self._handle_messages()
                self._reconcile()
            except ExaBgpError as e:
                self._exabgp_failed(str(e))
            except Exception:  # never let a bug kill the announcer; retry on the next tick
                log.exception("bgp_reconcile_failed", node=self.node)

    def _handle_messages(self) -> None:
        while True:
            try:
                msg = self._messages.get_nowait()
            except queue.Empty:
                return
            if isinstance(msg, StateEvent) and msg.neighbor in self._state:
                self._set_state(msg.neighbor, msg.state, msg.reason)
            elif isinstance(msg, Shutdown):
                log.info("exabgp_shutting_down", node=self.node)

    def _session(self, neighbor: str) -> core.Session | None:
        return next((s for s in self._plan.sessions if s.neighbor == neighbor), None)

    def _set_state(self, neighbor: str, state: str, reason: str = "") -> None:
        old = self._state.get(neighbor)
        if old == state:
            return
        self._state[neighbor] = state
        self._since[neighbor] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # up: send the full set; down: the router dropped (or will drop) what we sent
        self._announced[neighbor] = frozenset()
        self._eor_sent.discard(neighbor)
        s = self._session(neighbor)
        peer = s.peer if s else neighbor
        metrics.SESSIONS_UP.labels(self.node, peer).set(1 if state == "up" else 0)
        metrics.PREFIXES_ANNOUNCED.labels(self.node, peer).set(0)
        self._rib_changed = True
        log.info("bgp_session_state", node=self.node, peer=peer, neighbor=neighbor,
                 state=state, reason=reason)
        if state == "up":
            self.events.record(_involved(core.peer_ref(peer)), "Normal", "SessionUp",
                               f"node {self.node}: BGP session with {neighbor} established")
        elif old == "up" and state == "down":
            self.events.record(_involved(core.peer_ref(peer)), "Warning", "SessionDown",
                               f"node {self.node}: BGP session with {neighbor} went down"
                               + (f": {reason}" if reason else ""))

    def _reconcile(self) -> None:
        with self._lock:
            snap, health = self._latest, self._health
        if snap is None:
            return
        plan = core.plan(self.node, snap, health)
        self._plan = plan
        self._peer_specs = {p.name: p for p in snap.bgp_peers}
        self.redact.set(s.password for s in plan.sessions if s.password)
        self._report(plan)
        self._report_withheld(plan)
        self._sync_bfd(plan)
        if not plan.sessions:
            if self.proc.alive():
                self._withdraw_all()
                self._teardown_sessions()
                self.proc.terminate()
            self._config = None
            self._reset_sessions(plan)
            self._write_status(plan)
            return
        config = render_config(plan.sessions, self.proc.relay_argv(), self.graceful_restart_time)
        if config != self._config or not self.proc.alive():
            if self.proc.alive():
                # Peers changed: restart with the new configuration (sessions re-establish
                # in ~1 s; graceful restart keeps the router forwarding meanwhile).
                log.info("exabgp_reconfigure", node=self.node)
                self.proc.kill()
            if time.monotonic() < self._next_start:
                self._reset_sessions(plan)
                self._write_status(plan)
                return
            self._reset_sessions(plan)
            self._config = config
            metrics.EXABGP_RESTARTS.labels(self.node).inc()
            self.proc.start(config)
            self._backoff = BACKOFF_MIN_S
        for s in plan.sessions:
            if self._state.get(s.neighbor) != "up":
                continue
            self._sync_routes(s, plan.routes.get(s.neighbor, frozenset()))
        self._poll_rib(plan)
        self._write_status(plan)

    def _poll_rib(self, plan: core.BgpPlan) -> None:
        """Ask exabgp what it holds for each neighbor (adj-RIB-out) and its FSM state; the
        answer goes to the status, ``portico_bgp_prefixes_advertised`` and a log line."""
        if not self.proc.alive():
            self._rib = {}
            self._rib_polled = None
            return
        now = self._clock()
        if self._rib_polled is not None:
            since = now - self._rib_polled
            if since < RIB_MIN_GAP_S or (since < RIB_POLL_S and not self._rib_changed):
                return
        self._rib_polled = now
        self._rib_changed = False
        summary = self.proc.query(SHOW_NEIGHBOR_SUMMARY, ACK_TIMEOUT_S)
        rib_out = self.proc.query(SHOW_ADJ_RIB_OUT, ACK_TIMEOUT_S)
        if summary is None or rib_out is None:
            # Our own fixed commands were refused: a bug or another exabgp version.
            log.error("exabgp_command_rejected", node=self.node, kind="show")
            return
        report = parse_rib_report(summary, rib_out)
        for s in plan.sessions:
            new = report.get(s.neighbor)
            old = self._rib.get(s.neighbor)
            advertised = new.advertised if new else frozenset()
            metrics.PREFIXES_ADVERTISED.labels(self.node, s.peer).set(len(advertised))
            if new == old:
                continue
            configured = {r.prefix for r in self._announced.get(s.neighbor, frozenset())}
            log.info("bgp_adj_rib_out", node=self.node, peer=s.peer, neighbor=s.neighbor,
                     session_state=new.state if new else "unknown",
                     advertised=len(advertised), configured=len(configured),
                     missing=len(configured - advertised), extra=len(advertised - configured))
        self._rib = report

    def _rib_fields(self, neighbor: str | None) -> dict[str, Any]:
        """Status fields from exabgp's last answer (``Unknown``/0/[] without one)."""
        # exabgp not running (died, backoff): its last answer is stale, not shown
        rib = self._rib.get(neighbor) if neighbor and self.proc.alive() else None
        if rib is None:
            return {"sessionState": "Unknown", "advertisedPrefixCount": 0,
                    "advertisedPrefixes": []}
        adv = sorted(rib.advertised, key=_network_key)
        return {"sessionState": FSM_NAMES.get(rib.state, "Unknown"),
                "advertisedPrefixCount": len(adv),
                "advertisedPrefixes": adv[:STATUS_PREFIXES_MAX]}

    def _reset_sessions(self, plan: core.BgpPlan) -> None:
        wanted = {s.neighbor for s in plan.sessions}
        for n in list(self._state):
            if n not in wanted or not self.proc.alive():
                self._state.pop(n, None)
                self._announced.pop(n, None)
                self._eor_sent.discard(n)
        for s in plan.sessions:
            if s.neighbor not in self._state:
                self._state[s.neighbor] = "down"
                self._since[s.neighbor] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                self._announced[s.neighbor] = frozenset()
                self._eor_sent.discard(s.neighbor)
                metrics.SESSIONS_UP.labels(self.node, s.peer).set(0)

    def _sync_routes(self, s: core.Session, desired: frozenset[core.Route]) -> None:
        withdraw, announce = core.diff_routes(self._announced.get(s.neighbor, frozenset()),
                                              desired)
        if not withdraw and not announce:
            self._send_eor(s)
            return
        cmds = [(c, n, "withdraw") for c, n in withdraw_commands(s.neighbor, withdraw)]
        cmds += [(c, n, "announce") for c, n in announce_commands(s.neighbor, announce)]
        for cmd, count, kind in cmds:
            if not self.proc.send(cmd, ACK_TIMEOUT_S):
                # Our own grammar was refused: a bug, not a transient; retrying would loop.
                log.error("exabgp_command_rejected", node=self.node, peer=s.peer, kind=kind,
                          nlri=count)
                continue
            self.updates_sent += count
            metrics.UPDATES_SENT.labels(self.node, s.peer, kind).inc(count)
        self._announced[s.neighbor] = desired
        self._rib_changed = True
        self._send_eor(s)
        metrics.PREFIXES_ANNOUNCED.labels(self.node, s.peer).set(len(desired))
        log.info("bgp_routes_synced", node=self.node, peer=s.peer, withdrawn=len(withdraw),
                 announced=len(announce), total=len(desired))

    def _send_eor(self, s: core.Session) -> None:
        if s.neighbor in self._eor_sent:
            return
        if not self.proc.send(eor_command(s.neighbor, s.family), ACK_TIMEOUT_S):
            log.error("exabgp_command_rejected", node=self.node, peer=s.peer, kind="eor")
        self._eor_sent.add(s.neighbor)

    def _withdraw_all(self) -> None:
        sent = False
        for n, routes in list(self._announced.items()):
            if self._state.get(n) != "up" or not routes:
                continue
            for cmd, _count in withdraw_commands(n, routes):
                self.proc.send(cmd, ACK_TIMEOUT_S)
                sent = True
            self._announced[n] = frozenset()
        if sent:
            time.sleep(FLUSH_BEFORE_CLOSE_S)

    def _teardown_sessions(self) -> None:
        """Close every established session with NOTIFICATION Cease/Administrative Shutdown and
        wait (bounded) until exabgp reports each one down."""
        up = sorted(n for n, st in self._state.items() if st == "up")
        if not up or not self.proc.ceases:
            return
        for n in up:
            if not self.proc.send(teardown_command(n), ACK_TIMEOUT_S):
                log.error("exabgp_command_rejected", node=self.node, neighbor=n, kind="teardown")
        pending = set(up)
        deadline = time.monotonic() + TEARDOWN_WAIT_S
        while pending and (left := deadline - time.monotonic()) > 0:
            try:
                msg = self._messages.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(msg, StateEvent) and msg.state == "down":
                pending.discard(msg.neighbor)
                self._state[msg.neighbor] = "down"
                self._announced[msg.neighbor] = frozenset()
                s = self._session(msg.neighbor)
                metrics.SESSIONS_UP.labels(self.node, s.peer if s else msg.neighbor).set(0)
                log.info("bgp_session_closed", node=self.node, neighbor=msg.neighbor,
                         reason=msg.reason)
        if pending:
            log.warning("bgp_teardown_unconfirmed", node=self.node, neighbors=sorted(pending))

    def _exabgp_failed(self, why: str) -> None:
        log.warning("exabgp_failed", node=self.node, error=self.redact(why),
                    retry_in=self._backoff)
        self.proc.kill()
        self._config = None
        for n in list(self._state):
            self._set_state(n, "down", "exabgp restarted")
        self._next_start = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def _shutdown(self) -> None:
        try:
            self._handle_messages()
            if self._graceful and self.proc.alive():
                self._withdraw_all()
                self._teardown_sessions()
                self.proc.terminate()
            else:
                self.proc.kill()
        except ExaBgpError as e:
            log.warning("bgp_shutdown_error", node=self.node, error=self.redact(str(e)))
            self.proc.kill()
        self.bfd.stop()  # after the Cease: BFD going down first would reset the sessions
        log.info("bgp_stopped", node=self.node, graceful=self._graceful)

    def _sync_bfd(self, plan: core.BgpPlan) -> None:
        config = render_bfdd_config(plan.sessions)
        if config is None:
            if self.bfd.alive():
                log.info("bfdd_stop", node=self.node)
            self.bfd.stop()
            return
        if config == self.bfd.config and self.bfd.alive():
            return
        if self.bfd.config is not None and not self.bfd.alive():
            log.warning("bfdd_died", node=self.node, retry_in=self._bfd_backoff)
            self.bfd.stop()
            self._bfd_next_start = time.monotonic() + self._bfd_backoff
            self._bfd_backoff = min(self._bfd_backoff * 2, BACKOFF_MAX_S)
        if time.monotonic() < self._bfd_next_start:
            return
        try:
            self.bfd.start(config)
            self._bfd_backoff = BACKOFF_MIN_S
            self._bfd_failure_reported = False
        except (OSError, RuntimeError) as e:
            log.warning("bfdd_start_failed", node=self.node, error=str(e),
                        retry_in=self._bfd_backoff)
            if not self._bfd_failure_reported:  # once per failure streak, not per retry
                self._bfd_failure_reported = True
                for peer in sorted({s.peer for s in plan.sessions if s.bfd is not None}):
                    self.events.record(
                        _involved(core.peer_ref(peer)), "Warning", "BFDUnavailable",
                        f"node {self.node}: cannot run FRR bfdd ({e}); the BGP session runs "
                        f"without BFD (the speaker retries every {BACKOFF_MAX_S:.0f} s at most)")
            self._bfd_next_start = time.monotonic() + self._bfd_backoff
            self._bfd_backoff = min(self._bfd_backoff * 2, BACKOFF_MAX_S)

    def _report_withheld(self, plan: core.BgpPlan) -> None:
        now = {v: r for v, (r, _svcs) in plan.withheld.items()}
        for reason in H.REASONS:
            speaker_metrics.VIPS_WITHHELD.labels("bgp", reason).set(
                sum(1 for r in now.values() if r == reason))
        # Events only for a VIP this node announced before (a node that never had a local
        # endpoint is not news), or whose reason changed.
        gone = [(v, r, plan.withheld[v][1]) for v, r in now.items()
                if (v in self._planned_vips or v in self._withheld)
                and self._withheld.get(v) != r]
        back = [v for v in self._withheld if v not in now and v in plan.vips]
        for vip, reason, services in gone:
            speaker_metrics.HEALTH_WITHDRAWALS.labels("bgp", reason).inc()
            log.info("bgp_vip_withheld", node=self.node, vip=str(vip), reason=reason)
            why = ("no ready endpoint on this node (externalTrafficPolicy Local)"
                   if reason == H.NO_LOCAL_ENDPOINT else
                   "its health probe through the node failed")
            for key in services:
                self._service_event(key, "Warning", "BGPWithdrawn",
                                    f"node {self.node} does not announce {vip}: {reason} ({why})")
        old = self._withheld
        for vip in back:
            for key in self._services_of(vip):
                self._service_event(key, "Normal", "BGPAnnouncing",
                                    f"node {self.node} announces {vip} again "
                                    f"({old[vip]} cleared)")
        self._withheld = now
        self._planned_vips = plan.vips

    def _services_of(self, vip: Any) -> list[str]:
        snap = self._latest
        return [s.key for s in (snap.services if snap else ()) if vip in s.status_ips]

    def _service_event(self, key: str, type_: str, reason: str, message: str) -> None:
        ns, name = key.split("/", 1)
        self.events.record({"apiVersion": "v1", "kind": "Service",
                            "metadata": {"namespace": ns, "name": name}}, type_, reason, message)

    # --- user-visible outcome -----------------------------------------------------------------

    def _report(self, plan: core.BgpPlan) -> None:
        current: set[FieldProblem | core.PeerProblem] = set(plan.problems)
        current |= set(plan.peer_problems.values())
        for p in sorted(current - self._reported, key=str):
            if isinstance(p, FieldProblem):
                log.warning("bgp_invalid_input", node=self.node, object=str(p.ref),
                            field=p.field, reason=p.reason, message=p.message)
                self.events.record(_involved(p.ref), "Warning", p.reason, p.message)
            else:
                log.warning("bgp_peer_unusable", node=self.node, peer=p.peer, reason=p.reason)
                self.events.record(_involved(core.peer_ref(p.peer)), "Warning", p.reason,
                                   f"node {self.node}: {p.message}")
        self._reported = current

    def _peer_status(self, plan: core.BgpPlan, peer: str) -> dict[str, Any]:
        prob = plan.peer_problems.get(peer)
        if prob is not None:
            return {"state": "Down", "reason": prob.reason,
                    "message": prob.message[:STATUS_MESSAGE_MAX], **self._rib_fields(None)}
        s = next((x for x in plan.sessions if x.peer == peer), None)
        if s is None:
            return {"state": "Down", "reason": "NoSession", "message": "no session planned",
                    **self._rib_fields(None)}
        state = self._state.get(s.neighbor, "down")
        entry: dict[str, Any] = {"neighbor": s.neighbor,
                                 "since": self._since.get(s.neighbor, "")}
        if state == "up":
            entry.update(state="Established", reason="SessionEstablished",
                         message=f"established with {s.neighbor}",
                         prefixes=len(self._announced.get(s.neighbor, ())))
        else:
            msg = f"no established BGP session with {s.neighbor}"
            if s.password is not None:
                msg += ("; TCP-MD5 is enabled: if the password does not match the router's, "
                        "the router drops our connection attempts silently")
            entry.update(state="Connect" if self.proc.alive() else "Down",
                         reason="SessionNotEstablished", message=msg, prefixes=0)
        entry.update(self._rib_fields(s.neighbor))
        return entry

    def _write_status(self, plan: core.BgpPlan) -> None:
        from common.kube.resources import BGPPEERS  # the I/O shell's resource table

        wanted: dict[str, dict[str, Any] | None] = {p: self._peer_status(plan, p)
                                                    for p in plan.peers}
        for p in self._status_written:
            if p not in wanted:
                wanted[p] = None  # no longer applies to this node: remove our entry
        self._status_refused.retain(wanted)
        for peer, entry in wanted.items():
            if self._status_written.get(peer, "unset") == entry:
                continue
            fp = (self._peer_specs.get(peer), repr(entry))
            if self._status_refused.blocked(peer, fp):
                continue  # refused as such: wait for the entry or the peer to change
            try:
                self.kube.patch(BGPPEERS, peer, {"status": {"nodes": {self.node: entry}}},
                                subresource="status")
            except Refused as e:
                if self._status_refused.refused(peer, fp):
                    report_refusal(self.events, log, _involved(core.peer_ref(peer)), e,
                                   component="speaker", resource=BGPPEERS.plural,
                                   field=f"status.nodes.{self.node}")
                continue
            except Exception as e:  # transient: retried on the next tick
                log.warning("bgp_status_write_failed", node=self.node, peer=peer,
                            error=type(e).__name__)
                continue
            self._status_refused.done(peer)
            if entry is None:
                self._status_written.pop(peer, None)
            else:
                self._status_written[peer] = entry
