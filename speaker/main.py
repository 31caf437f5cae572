"""``portico speaker``: informers -> debounced ClusterSnapshot -> announcers (L2, BGP).

Runs on every node (DaemonSet, host network). Owns the speaker's reconcile: every informer
event adds the one key ``SNAPSHOT`` to the shared reconcile loop (``common.kube.loop``), which
runs the handler after a short quiet period (``DEBOUNCE``, capped by ``DEBOUNCE_MAX`` under a
steady stream of events) and retries it with backoff when an announcer failed; the handler
rebuilds one ClusterSnapshot from the informers' stores and hands it to every announcer.
Liveness changes do not go through this loop: the layer-2 announcer replans on them directly.

SIGTERM/SIGINT: each announcer stops gracefully (L2 hands its VIPs over, BGP withdraws),
then the process exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from common import logs
from common.cli import add_common_arguments, new_parser
from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.clock import Clock
from common.kube.events import EventRecorder
from common.kube.informer import Informer
from common.kube.loop import ReconcileLoop
from common.kube.refusal import access_refused_reporter
from common.kube.serve import start_http_server
from common.kube.status import find_condition
from common.kube.workqueue import Outcome
from speaker.announcer import Announcer
from speaker.core.build import build_snapshot
from speaker.core.health import NodeHealth
from speaker.core.l2_report import CONDITION_TYPE, WIRE_CONDITION_TYPE
from speaker.core.liveness import (
    DEFAULT_HOLDDOWN,
    DEFAULT_INTERVAL,
    DEFAULT_MAX_AGE,
    DEFAULT_TIMEOUT,
    LivenessConfig,
)
from speaker.errors import LivenessKeyError
from speaker.health import HealthMonitor
from speaker.l2_announcer import L2Announcer
from speaker.report import WIRE_REPORT_INTERVAL
from speaker.secrets import PasswordSecrets

DEBOUNCE = 0.02  # s of quiet before rebuilding: coalesces the bursts one change causes
DEBOUNCE_MAX = 0.2  # s: never postpone a rebuild longer than this under constant churn
SYNC_TIMEOUT = 60.0  # s to wait for informers at start before carrying on anyway
# s a rebuild in progress at SIGTERM may take to finish before the announcers stop (a rebuild
# of thousands of Services takes well under a second; the kubelet grants 30 s in all).
STOP_TIMEOUT = 10.0
SNAPSHOT = "snapshot"  # the loop's one key: the handler rebuilds everything from the stores


DESCRIPTION = """\
Announces the addresses (VIPs) of LoadBalancer Services from this node: answers ARP (IPv4)
and NDP (IPv6) for the VIPs this node owns (layer 2), and advertises routes to BGP peers
through an exabgp child process.

Runs on every node (DaemonSet, host network). The speakers send each other UDP heartbeats to
move a VIP off a failed node in well under a second; on SIGTERM a speaker hands its VIPs over
and withdraws its BGP routes before it exits."""


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("speaker", DESCRIPTION)
    add_common_arguments(p, "0.0.0.0:7473")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), metavar="NAME",
                   help="name of the Node this speaker runs on; required (default: $NODE_NAME"
                        + (", currently %(default)s)" if os.environ.get("NODE_NAME") else ")"))
    p.add_argument("--lb-class", default=None, metavar="CLASS",
                   help="also announce Services whose spec.loadBalancerClass is CLASS "
                        "(default: only Services without a loadBalancerClass)")
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "portico-system"),
                   help="the namespace Portico runs in: BGPPeer password Secrets are read "
                        "from here and nowhere else (default: $POD_NAMESPACE, or "
                        "portico-system when unset; currently %(default)s)")
    p.add_argument("--liveness-port", type=int, default=7946, metavar="PORT",
                   help="UDP port of the heartbeats between speakers; the same on every node")
    p.add_argument("--liveness-interface", default=None, metavar="IFACE",
                   help="interface carrying the node's InternalIP: no carrier there means "
                        "this node is cut off and must not own VIPs (default: none; the node "
                        "counts as cut off when no heartbeat can be sent)")
    p.add_argument("--heartbeat-interval", type=float, default=DEFAULT_INTERVAL,
                   metavar="SECONDS", help="time between two heartbeats to each other speaker")
    p.add_argument("--liveness-timeout", type=float, default=DEFAULT_TIMEOUT,
                   metavar="SECONDS",
                   help="silence after which another speaker counts as dead and its VIPs move; "
                        "keep it above the longest pause a node may have plus the interval")
    p.add_argument("--liveness-holddown", type=float, default=DEFAULT_HOLDDOWN,
                   metavar="SECONDS",
                   help="a speaker seen to die (silence, stall, cut, crash) counts as live again "
                        "only after it has been heard without a break for this long: one failure "
                        "moves its VIPs once, and they come back at the earliest this much later")
    p.add_argument("--liveness-in-process", action="store_true",
                   help="run the heartbeats in the speaker process instead of a real-time child "
                        "process (debugging; CPU load then delays heartbeats)")
    p.add_argument("--liveness-key-file", default=None, metavar="PATH",
                   help="file with the heartbeat keys, one per line: heartbeats are signed "
                        "(HMAC-SHA256) with the first and accepted under any, and the file is "
                        "re-read when it changes (key rotation); the chart mounts its Secret "
                        "here. Without it heartbeats are not authenticated and anyone on the "
                        "node network can move VIPs (default: none)")
    p.add_argument("--liveness-max-age", type=float, default=DEFAULT_MAX_AGE,
                   metavar="SECONDS",
                   help="heartbeats whose send time differs from this node's clock by more "
                        "are refused (replay protection); keep it above the clock skew "
                        "between nodes plus the longest pause a node may have")
    p.add_argument("--interfaces", default="", metavar="IFACE,...",
                   help="comma-separated interfaces layer 2 may answer on (default: all "
                        "except loopback and container/overlay devices)")
    p.add_argument("--exabgp", default=os.path.join(os.path.dirname(sys.executable), "exabgp"),
                   metavar="PATH",
                   help="the exabgp executable run as the BGP process (default: the one next "
                        "to the Python interpreter, %(default)s)")
    p.add_argument("--state-dir", default="/var/run/portico-speaker", metavar="DIR",
                   help="directory for the BGP process's configuration file and API socket")
    p.add_argument("--wire-report-interval", type=float, default=WIRE_REPORT_INTERVAL,
                   metavar="SECONDS",
                   help="refresh the figures of a Service's portico.dev/L2Wire condition "
                        "(last gratuitous ARP / NA, requests answered) at most this often, "
                        "and only when they changed; 0: write it only when ownership changes "
                        "(default: %(default)s)")
    p.add_argument("--no-bgp", action="store_true",
                   help="do not start the BGP announcer (layer 2 only)")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.node_name:
        p.error("--node-name (or env NODE_NAME) is required")
    if args.liveness_max_age <= 0:
        p.error("--liveness-max-age must be positive")
    if args.liveness_holddown < 0:
        p.error("--liveness-holddown must not be negative")
    if not args.wire_report_interval >= 0:  # also refuses nan
        p.error("--wire-report-interval must not be negative")
    for value in (args.node_name, args.interfaces, args.namespace):
        if any(c in value for c in "\r\n\0"):
            p.error("arguments must not contain CR, LF or NUL")
    return args


class Speaker:
    RESOURCES = (R.SERVICES, R.ENDPOINTSLICES, R.NODES, R.IPADDRESSPOOLS,
                 R.L2ADVERTISEMENTS, R.BGPADVERTISEMENTS, R.BGPPEERS)

    def __init__(self, args: argparse.Namespace, log: Any, clock: Clock | None = None) -> None:
        self.args = args
        self.log = log
        self.client = KubeClient.from_environment(kubeconfig=args.kubeconfig,
                                                  server=args.server)
        self.events = EventRecorder(self.client, "portico-speaker", host=args.node_name)
        self.stopping = threading.Event()
        self.loop: ReconcileLoop[str] = ReconcileLoop(
            "speaker", self.reconcile, clock=clock, debounce=DEBOUNCE, max_delay=DEBOUNCE_MAX,
            events=self.events)
        self.rebuilds = 0  # for tests and debugging
        refused = access_refused_reporter(self.events, log, "speaker")
        self.informers = {
            res: Informer(self.client, res, on_event=self._on_event, on_refused=refused)
            for res in self.RESOURCES
        }
        self.secrets = PasswordSecrets(self.client, args.namespace, log)
        ifaces = frozenset(i for i in args.interfaces.split(",") if i) or None
        self.l2 = L2Announcer(
            args.node_name, self.client, self.events, self.lookup, log, ifaces,
            args.liveness_port, args.liveness_interface,
            LivenessConfig(interval=args.heartbeat_interval, timeout=args.liveness_timeout,
                           max_age=args.liveness_max_age, holddown=args.liveness_holddown),
            key_file=args.liveness_key_file, heartbeat_process=not args.liveness_in_process,
            log_level=args.log_level, wire_report_interval=args.wire_report_interval)
        self.announcers: list[Announcer] = [self.l2]
        self.bgp: Announcer | None = None
        # Carrier of the speaker's interfaces and the opt-in VIP probes (speaker.health).
        self.health = HealthMonitor(ifaces, self._on_health, log)

    def _on_event(self, _type: str, _obj: dict[str, Any]) -> None:
        # Informer threads only enqueue: the snapshot is rebuilt whole, so one key will do.
        self.loop.add(SNAPSHOT)

    def lookup(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        inf = self.informers.get(res)
        if inf is None:
            return None
        return inf.store.get(namespace, name)

    def _on_health(self, health: NodeHealth) -> None:
        """A local fault appeared or cleared: both announcers act on it at once."""
        for a in self.announcers:
            set_health = getattr(a, "set_health", None)
            if set_health is not None:
                set_health(health)

    def synced(self) -> bool:
        return all(i.has_synced() for i in self.informers.values())

    def _start_bgp(self) -> None:
        if self.args.no_bgp:
            return
        try:
            # Imported here, by a plain statement the import contracts can see: a node
            # with --no-bgp never loads the BGP side.
            from speaker.bgp.announcer import BgpAnnouncer
        except ImportError as exc:
            self.log.info("bgp_announcer_unavailable", error=str(exc))
            return
        try:
            self.bgp = BgpAnnouncer(self.args.node_name, self.client, self.events, self.args.exabgp,
                           self.args.state_dir)
            self.announcers.append(self.bgp)
        except Exception as exc:  # BGP trouble must not take layer 2 down
            self.log.error("bgp_announcer_failed", error=repr(exc))

    def reconcile(self, _key: str) -> Outcome:
        """The loop's handler."""
        if not self.synced():
            # A snapshot of half-listed stores would withdraw what the missing objects
            # announce; the informers' own events bring the key back too.
            return Outcome.RETRY
        return self.rebuild()

    def rebuild(self) -> Outcome:
        """Build the snapshot and hand it to every announcer; RETRY when one of them failed
        (syncing an announcer again with the same snapshot is harmless)."""
        self.rebuilds += 1
        st = {res: inf.store.list() for res, inf in self.informers.items()}
        secrets, secret_errors = self.secrets.read(st[R.BGPPEERS])
        result = build_snapshot(
            services=st[R.SERVICES], endpoint_slices=st[R.ENDPOINTSLICES], nodes=st[R.NODES],
            pools=st[R.IPADDRESSPOOLS], l2_advertisements=st[R.L2ADVERTISEMENTS],
            bgp_advertisements=st[R.BGPADVERTISEMENTS], bgp_peers=st[R.BGPPEERS],
            secrets=secrets, secret_errors=secret_errors, namespace=self.args.namespace,
            lb_class=self.args.lb_class)
        self.l2.set_build_problems(result.problems)
        self.health.set_targets((vip, port) for s in result.snapshot.services
                                for vip in s.status_ips for port in s.health_probe)
        announced = {s.key for s in result.snapshot.services}
        self.l2.set_stale_conditions([
            (o["metadata"].get("namespace", ""), o["metadata"].get("name", ""))
            for o in st[R.SERVICES]
            if f"{o['metadata'].get('namespace', '')}/{o['metadata'].get('name', '')}"
            not in announced
            and any(find_condition((o.get("status") or {}).get("conditions"), t)
                    for t in (CONDITION_TYPE, WIRE_CONDITION_TYPE))])
        outcome = Outcome.DONE
        for a in self.announcers:
            try:
                a.sync(result.snapshot)
            except Exception as exc:  # one announcer failing must not stop the other
                self.log.error("announcer_sync_failed", announcer=type(a).__name__,
                               error=repr(exc))
                outcome = Outcome.RETRY
        return outcome

    def stop(self) -> None:
        """Ask ``run`` to stop (signal handlers call this: it only sets an Event)."""
        self.stopping.set()

    def run(self) -> int:
        self.l2.start()
        responder = getattr(self.l2, "responder", None)  # tests may stand in for layer 2
        if responder is not None:
            self.health.set_interfaces(responder.interfaces())
        self.health.start()
        for inf in self.informers.values():
            inf.start()
        server = start_http_server(self.args.metrics_addr, self.synced)
        deadline = time.monotonic() + SYNC_TIMEOUT
        while not self.synced() and not self.stopping.is_set() and time.monotonic() < deadline:
            self.stopping.wait(0.02)
        self.log.info("informers_synced", synced=self.synced())
        self._start_bgp()
        self.loop.add(SNAPSHOT)  # first snapshot even if no informer event arrived
        self.loop.start()
        self.stopping.wait()
        # The rebuild in hand finishes (no half-synced announcer), then no other starts.
        self.loop.stop(STOP_TIMEOUT)
        self.log.info("stopping", graceful=True)
        for a in self.announcers:  # layer 2 first: its hand-over is the time-critical one
            try:
                a.stop(graceful=True)
            except Exception as exc:
                self.log.error("announcer_stop_failed", announcer=type(a).__name__,
                               error=repr(exc))
        self.health.stop()
        for inf in self.informers.values():
            inf.stop()
        server.shutdown()
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    log = logs.configure("speaker", args.log_level).bind(node=args.node_name)
    try:
        speaker = Speaker(args, log)
    except LivenessKeyError as exc:
        # Without its key a speaker would hear nobody and claim every VIP: refuse to start
        # (the kubelet restarts it; the Secret may just not be mounted yet).
        log.error("liveness_key_file_unusable", error=str(exc))
        return 1

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        speaker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Import scapy now (about 0.8 s): the first takeover must not pay for it.
    import scapy.layers.inet6
    import scapy.layers.l2  # noqa: F401

    return speaker.run()


if __name__ == "__main__":
    sys.exit(main())
