"""The heartbeat process: liveness in a small process of its own, at real-time priority.

Why a process. Under CPU hogs at a higher priority (nice -10 on every core) a nice-0 thread
waits tens to hundreds of milliseconds for a CPU, and under memory pressure its page faults
stall it; a 200 ms liveness timeout cannot survive either. A real-time thread (SCHED_FIFO)
preempts every normal task at once, and ``mlockall`` keeps its pages resident — but a thread
inside the speaker would still need the speaker's GIL, held by informer or responder threads
that the hogs keep off the CPU (priority inversion). So the heartbeat loop
(``speaker.liveness.Liveness``, unchanged) runs here, in ``python -m speaker.heartbeat``, a
child of the speaker with its own interpreter: SCHED_FIFO priority ``RT_PRIORITY``, all memory
locked, nothing else to do. It needs CAP_SYS_NICE and CAP_IPC_LOCK (the chart adds both);
without them it logs ``heartbeat_priority_unavailable`` and runs at normal priority (the
timeout must then be raised above the node's worst scheduling delay).

Fate sharing. The child dies with the speaker (PR_SET_PDEATHSIG, and EOF on the control
socket) — so a crashed speaker's port-unreachable is still seen by peers — and it stops
heartbeating while the speaker is stopped (SIGSTOP: ``/proc/PID/stat`` state T), so a frozen
speaker's VIPs move; see ``Liveness._speaker_frozen``. A stop of both (the process group, a
frozen container or VM) is a stall of the child itself (rule S of ``speaker.core.liveness``).

Interface. ``HeartbeatProcess`` has the methods of ``Liveness`` the layer-2 announcer uses
(``set_nodes``, ``set_synced``, ``set_interfaces``, ``live``, ``start``, ``leave``, ``stop``)
plus ``epoch``; messages are JSON on a SOCK_SEQPACKET socketpair. Live maps arrive with their
epoch; the answer lease (``speaker.answer_lease``) is shared memory the child writes and the
responder reads. Metrics counted in the child are sent to the speaker twice a second.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from common.api.model import IPAddress
from speaker.answer_lease import AnswerLease
from speaker.core.liveness import LivenessConfig
from speaker.errors import LivenessKeyError

RT_PRIORITY = 10  # SCHED_FIFO 1..99: above every normal task, below kernel threads (50)
START_TIMEOUT = 30.0  # s for the child to start (imports on a loaded node) before giving up
METRICS_EVERY = 0.5  # s between metric flushes from the child
MAX_MSG = 1 << 20
PR_SET_PDEATHSIG = 1
MCL_CURRENT, MCL_FUTURE = 1, 2

LiveMap = Mapping[str, frozenset[str] | None]


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.send(json.dumps(msg, separators=(",", ":")).encode())


def _live_to_json(live: LiveMap) -> dict[str, list[str] | None]:
    return {n: (sorted(i) if i is not None else None) for n, i in live.items()}


class HeartbeatProcess:
    """Speaker side: starts the child and mirrors ``Liveness``'s interface."""

    def __init__(
        self,
        node: str,
        port: int,
        config: LivenessConfig,
        on_change: Callable[[LiveMap], None],
        log: Any,
        metrics: Any,
        liveness_interface: str | None = None,
        key_file: str | None = None,
        log_level: str = "info",
        python: str = sys.executable,
    ) -> None:
        self.on_change = on_change
        self.log = log
        self.metrics = metrics
        self.lease = AnswerLease()
        self._lock = threading.Lock()
        self._live: dict[str, frozenset[str] | None] = {}
        self.epoch = 0
        self._left = threading.Event()
        self._started = threading.Event()
        self._fatal: str | None = None
        self._stopping = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ctl = ours
        argv = [python, "-m", "speaker.heartbeat", "--node", node, "--port", str(port),
                "--interval", repr(config.interval), "--timeout", repr(config.timeout),
                "--join-delay", repr(config.join_delay), "--max-age", repr(config.max_age),
                "--stall", repr(config.stall), "--holddown", repr(config.holddown),
                "--ctl-fd", str(theirs.fileno()), "--lease-fd", str(self.lease.fd),
                "--watch-pid", str(os.getpid()), "--log-level", log_level]
        if liveness_interface:
            argv += ["--liveness-interface", liveness_interface]
        if key_file:
            argv += ["--key-file", key_file]
        self.proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(), self.lease.fd))
        theirs.close()
        self._reader = threading.Thread(target=self._read, name="heartbeat-ctl", daemon=True)
        self._reader.start()
        if not self._started.wait(START_TIMEOUT) or self._fatal is not None:
            self._stopping = True
            self._kill()
            raise LivenessKeyError(self._fatal or "heartbeat process did not start")

    # --- Liveness interface ----------------------------------------------------------------

    def set_nodes(self, nodes: Mapping[str, Iterable[IPAddress]]) -> None:
        self._cmd({"op": "nodes", "nodes": {n: sorted(str(a) for a in addrs)
                                            for n, addrs in nodes.items()}})

    def set_synced(self, synced: bool) -> None:
        self._cmd({"op": "synced", "v": synced})

    def set_interfaces(self, names: Iterable[str]) -> None:
        self._cmd({"op": "ifaces", "v": sorted(names)})

    def live(self) -> dict[str, frozenset[str] | None]:
        with self._lock:
            return dict(self._live)

    def live_epoch(self) -> tuple[dict[str, frozenset[str] | None], int]:
        with self._lock:
            return dict(self._live), self.epoch

    def start(self) -> None:
        pass  # the child runs from construction on (it must say ready=False meanwhile)

    def leave(self) -> None:
        self._left.clear()
        self._cmd({"op": "leave"})
        self._left.wait(1.0)

    def stop(self) -> None:
        self._stopping = True
        self._cmd({"op": "stop"})
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self._kill()
        with contextlib.suppress(OSError):
            self.ctl.close()

    # --- internals ---------------------------------------------------------------------------

    def _cmd(self, msg: dict[str, Any]) -> None:
        try:
            _send(self.ctl, msg)
        except OSError as exc:
            self.log.error("heartbeat_process_unreachable", error=str(exc), op=msg["op"])

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def _read(self) -> None:
        while True:
            try:
                data = self.ctl.recv(MAX_MSG)
            except OSError:
                data = b""
            if not data:
                if not self._started.is_set():
                    self._fatal = self._fatal or "heartbeat process exited at start"
                    self._started.set()
                elif not self._stopping:
                    # Without it our view of who is live is frozen and the answer lease runs
                    # out (the responder goes silent, peers move our VIPs): stop gracefully so
                    # that the kubelet restarts the whole speaker.
                    self.log.error("heartbeat_process_exited", code=self.proc.poll())
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            msg = json.loads(data)
            op = msg.get("op")
            if op == "live":
                live = {n: (frozenset(i) if i is not None else None)
                        for n, i in msg["live"].items()}
                with self._lock:
                    self._live, self.epoch = live, int(msg["epoch"])
                try:
                    self.on_change(live)
                except Exception as exc:
                    self.log.error("liveness_callback_failed", error=repr(exc))
            elif op == "metrics":
                self._metrics(msg)
            elif op == "left":
                self._left.set()
            elif op == "started":
                self._started.set()
            elif op == "fatal":
                self._fatal = str(msg.get("error"))
                self._stopping = True  # its exit is expected: the constructor raises
                self._started.set()

    def _metrics(self, msg: dict[str, Any]) -> None:
        if msg.get("sent"):
            self.metrics.heartbeats_sent.inc(msg["sent"])
        if msg.get("received"):
            self.metrics.heartbeats_received.inc(msg["received"])
        for reason, n in (msg.get("rejected") or {}).items():
            self.metrics.heartbeats_rejected.labels(reason).inc(n)
        if msg.get("keys") is not None:
            self.metrics.liveness_keys.set(msg["keys"])
        if msg.get("live_nodes") is not None:
            self.metrics.live_nodes.set(msg["live_nodes"])


# --- the child ----------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self, by: int = 1) -> None:
        self.n += by


class _Labelled:
    def __init__(self) -> None:
        self.counts: dict[str, _Counter] = {}

    def labels(self, label: str) -> _Counter:
        return self.counts.setdefault(label, _Counter())


class _Gauge:
    def __init__(self) -> None:
        self.value: float | None = None

    def set(self, value: float) -> None:
        self.value = value


class ChildMetrics:
    """What ``Liveness`` updates, counted locally and flushed to the speaker as deltas."""

    def __init__(self) -> None:
        self.heartbeats_sent, self.heartbeats_received = _Counter(), _Counter()
        self.heartbeats_rejected = _Labelled()
        self.liveness_keys, self.live_nodes = _Gauge(), _Gauge()

    def flush(self) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "op": "metrics", "sent": self.heartbeats_sent.n,
            "received": self.heartbeats_received.n,
            "rejected": {r: c.n for r, c in self.heartbeats_rejected.counts.items() if c.n},
            "keys": self.liveness_keys.value, "live_nodes": self.live_nodes.value}
        self.heartbeats_sent.n = self.heartbeats_received.n = 0
        for c in self.heartbeats_rejected.counts.values():
            c.n = 0
        return msg


def realtime(log: Any, priority: int = RT_PRIORITY) -> bool:
    """SCHED_FIFO for this thread (and the threads it starts later) and all memory locked."""
    ok = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        ok = False
        log.warning("heartbeat_priority_unavailable", what="SCHED_FIFO", error=exc.strerror,
                    hint="grant CAP_SYS_NICE, or raise --liveness-timeout above the node's "
                         "worst scheduling delay")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        ok = False
        log.warning("heartbeat_priority_unavailable", what="mlockall",
                    error=os.strerror(ctypes.get_errno()), hint="grant CAP_IPC_LOCK")
    return ok


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def child_main(argv: list[str]) -> int:
    from common import logs
    from speaker.liveness import Liveness

    p = argparse.ArgumentParser(prog="speaker.heartbeat")
    p.add_argument("--node", required=True)
    p.add_argument("--port", type=int, required=True)
    for name in ("interval", "timeout", "join-delay", "max-age", "stall", "holddown"):
        p.add_argument(f"--{name}", type=float, required=True)
    p.add_argument("--ctl-fd", type=int, required=True)
    p.add_argument("--lease-fd", type=int, required=True)
    p.add_argument("--watch-pid", type=int, required=True)
    p.add_argument("--liveness-interface", default=None)
    p.add_argument("--key-file", default=None)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    _die_with_parent(args.watch_pid)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the speaker stops us (after leaving)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = logs.configure("speaker", args.log_level).bind(node=args.node, part="heartbeat")
    ctl = socket.socket(fileno=args.ctl_fd)
    send_lock = threading.Lock()

    def send(msg: dict[str, Any]) -> None:
        with send_lock, contextlib.suppress(OSError):
            _send(ctl, msg)

    realtime(log)  # before any thread starts: they inherit the policy
    config = LivenessConfig(interval=args.interval, timeout=args.timeout,
                            join_delay=args.join_delay, max_age=args.max_age,
                            stall=args.stall, holddown=args.holddown)
    metrics = ChildMetrics()
    lease = AnswerLease(args.lease_fd)
    holder: list[Liveness] = []

    def on_change(live: LiveMap) -> None:
        send({"op": "live", "epoch": holder[0].epoch if holder else 0,
              "live": _live_to_json(live)})

    try:
        lv = Liveness(args.node, args.port, config, on_change, log, metrics,
                      liveness_interface=args.liveness_interface, key_file=args.key_file,
                      lease=lease, watch_pid=args.watch_pid)
    except (LivenessKeyError, OSError) as exc:
        send({"op": "fatal", "error": str(exc)})
        return 1
    holder.append(lv)
    lv.start()
    send({"op": "started"})
    stop = threading.Event()

    def flush() -> None:
        while not stop.wait(METRICS_EVERY):
            send(metrics.flush())

    threading.Thread(target=flush, name="metrics", daemon=True).start()
    while True:
        try:
            data = ctl.recv(MAX_MSG)
        except OSError:
            data = b""
        if not data:
            break  # the speaker is gone
        msg = json.loads(data)
        op = msg.get("op")
        if op == "nodes":
            lv.set_nodes({n: [ipaddress.ip_address(a) for a in addrs]
                          for n, addrs in msg["nodes"].items()})
        elif op == "synced":
            lv.set_synced(bool(msg["v"]))
        elif op == "ifaces":
            lv.set_interfaces(msg["v"])
        elif op == "leave":
            lv.leave()
            send({"op": "left"})
        elif op == "stop":
            break
    stop.set()
    lv.stop()
    send(metrics.flush())
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
