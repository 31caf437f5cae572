"""Node-local health for announcements: carrier of the speaker's interfaces and VIP probes.

The decisions are pure (``speaker.core.health``, ``speaker.core.netlink``); this module owns the
two threads that feed them:

* ``link``: a NETLINK_ROUTE socket subscribed to RTMGRP_LINK, started with a dump of every
  link, so carrier changes arrive as kernel events (no polling);
* ``probe``: every ``INTERVAL`` a non-blocking TCP connect to each (VIP, port) of the Services
  annotated ``lb.portico.dev/health-probe``, all targets in parallel, each bounded by
  ``TIMEOUT``; results go through ``ProbeTracker`` (FALL/RISE hysteresis).

Whenever the published health changes, ``on_change(health)`` runs (on one of these threads):
the announcers replan at once. Bounded work: one connect per target per interval, at most
``MAX_TARGETS`` targets.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from common.api.model import IPAddress
from speaker import metrics as M
from speaker.core import health as H
from speaker.core import netlink as NL

MAX_TARGETS = 512  # (VIP, port) pairs probed per interval: one connect each, every 100 ms


class HealthMonitor:
    def __init__(
        self,
        interfaces: Iterable[str] | None,
        on_change: Callable[[H.NodeHealth], None],
        log: Any,
        interval: float = H.INTERVAL,
        timeout: float = H.TIMEOUT,
    ) -> None:
        self.watched = frozenset(interfaces) if interfaces is not None else None
        self.on_change = on_change
        self.log = log
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._carrier: dict[str, bool] = {}
        self._tracker = H.ProbeTracker()
        self._published = H.HEALTHY
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._nl: socket.socket | None = None

    # --- inputs ------------------------------------------------------------------------------

    def set_targets(self, targets: Iterable[H.Target]) -> None:
        wanted = sorted(set(targets), key=lambda t: (t[0].version, int(t[0]), t[1]))
        if len(wanted) > MAX_TARGETS:
            self.log.warning("health_probe_targets_capped", wanted=len(wanted), probed=MAX_TARGETS)
            wanted = wanted[:MAX_TARGETS]
        with self._lock:
            self._tracker.set_targets(wanted)
        self._publish()

    def set_interfaces(self, interfaces: Iterable[str] | None) -> None:
        with self._lock:
            self.watched = frozenset(interfaces) if interfaces is not None else None
        self._publish()

    # --- outputs -----------------------------------------------------------------------------

    def health(self) -> H.NodeHealth:
        with self._lock:
            return self._published

    def carrier_down(self) -> frozenset[str]:
        with self._lock:
            return self._down_locked()

    def describe(self, vip: IPAddress) -> str:
        with self._lock:
            return self._tracker.describe(vip)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        try:
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            nl.bind((0, NL.RTMGRP_LINK))
            nl.send(NL.dump_request())
            self._nl = nl
            self._spawn("health-link", self._link_loop)
        except OSError as exc:  # no netlink (not Linux): carrier is simply not watched
            self.log.warning("link_watch_unavailable", error=str(exc))
        self._spawn("health-probe", self._probe_loop)

    def stop(self) -> None:
        self._stop.set()
        if self._nl is not None:
            with contextlib.suppress(OSError):
                self._nl.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(2)
        if self._nl is not None:
            self._nl.close()

    def _spawn(self, name: str, fn: Callable[[], None]) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    # --- internals ---------------------------------------------------------------------------

    def _down_locked(self) -> frozenset[str]:
        return frozenset(n for n, up in self._carrier.items()
                         if not up and (self.watched is None or n in self.watched))

    def _publish(self) -> None:
        with self._lock:
            new = H.NodeHealth(self._down_locked(), self._tracker.failed_vips())
            old, self._published = self._published, new
        if new == old:
            return
        for reason, count in ((H.INTERFACE_DOWN, len(new.down_interfaces)),
                              (H.PROBE_FAILED, len(new.failed_vips))):
            M.HEALTH_FAULTS.labels(reason).set(count)
        self.log.info("node_health_changed",
                      interfaces_down=sorted(new.down_interfaces),
                      probe_failed=[str(v) for v in sorted(new.failed_vips, key=str)])
        try:
            self.on_change(new)
        except Exception as exc:  # a replan bug must not stop the watcher
            self.log.error("health_callback_failed", error=repr(exc))

    def _link_loop(self) -> None:
        assert self._nl is not None
        while not self._stop.is_set():
            try:
                data = self._nl.recv(65536)
            except OSError as exc:
                if self._stop.is_set():
                    return
                if exc.errno == errno.ENOBUFS:  # we fell behind: re-read the whole state
                    with contextlib.suppress(OSError):
                        self._nl.send(NL.dump_request())
                    continue
                self.log.warning("link_watch_failed", error=str(exc))
                return
            if not data:
                return
            events, _done = NL.parse(data)
            changed = False
            with self._lock:
                for ev in events:
                    if ev.deleted:
                        changed |= self._carrier.pop(ev.name, None) is not None
                    elif self._carrier.get(ev.name) != ev.carrier:
                        self._carrier[ev.name] = ev.carrier
                        changed = True
            if changed:
                self._publish()

    def _probe_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                targets = self._tracker.targets()
            if targets:
                results = probe_all(targets, self.timeout)
                changed = False
                with self._lock:
                    for t, (ok, err) in results.items():
                        changed |= self._tracker.record(t, ok, err)
                M.HEALTH_PROBES.labels("ok").inc(sum(1 for ok, _ in results.values() if ok))
                M.HEALTH_PROBES.labels("failed").inc(
                    sum(1 for ok, _ in results.values() if not ok))
                if changed:
                    self._publish()
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # stalled (or probes took long): do not burst to catch up
                next_at = now
            self._stop.wait(next_at - now)


def probe_all(targets: list[H.Target], timeout: float) -> dict[H.Target, tuple[bool, str]]:
    """One TCP connect to each target, all in flight at once; (ok, error) per target.

    Success = the three-way handshake completed (the path through kube-proxy to a listening
    endpoint works); the connection is closed at once with RST (SO_LINGER 0), so nothing is
    left in TIME_WAIT and the server sees an aborted connection, no request.
    """
    out: dict[H.Target, tuple[bool, str]] = {}
    pending: dict[int, tuple[socket.socket, H.Target]] = {}
    poller = select.poll()
    for t in targets:
        vip, port = t
        fam = socket.AF_INET if vip.version == 4 else socket.AF_INET6
        s = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        err = s.connect_ex((str(vip), port))
        if err == 0:
            out[t] = (True, "")
            s.close()
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            pending[s.fileno()] = (s, t)
            poller.register(s.fileno(), select.POLLOUT)
        else:
            out[t] = (False, errno.errorcode.get(err, str(err)))
            s.close()
    deadline = time.monotonic() + timeout
    while pending and (left := deadline - time.monotonic()) > 0:
        for fd, _ev in poller.poll(left * 1000):
            s, t = pending.pop(fd)
            poller.unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            out[t] = (err == 0, "" if err == 0 else errno.errorcode.get(err, str(err)))
            s.close()
    for s, t in pending.values():
        out[t] = (False, "timeout")
        s.close()
    return out
