"""UDP heartbeat loop around the pure ``speaker.core.liveness.Membership`` (I/O shell).

One receiving socket on the liveness port; one *connected* UDP socket per peer for sending,
because on a connected socket the kernel reports the peer host's ICMP port-unreachable as
ECONNREFUSED: when a speaker dies but its node stays up (crash, SIGKILL, OOM kill), we learn it
one heartbeat interval later instead of after the full timeout. Heartbeats are accepted only
from an address of the Node they name (a misrouted or stale packet cannot vouch for another
node). See the pure module for the timing argument.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from common.api.model import IPAddress
from speaker.core.liveness import MAX_HEARTBEAT_BYTES, Heartbeat, LivenessConfig, Membership
from speaker.l2 import carrier_up

TICK = 0.01  # seconds: expiry is checked at least this often (bounds detection jitter)
LEAVE_REPEATS = 3  # leaving beats sent on a graceful stop (UDP may drop one)

LiveMap = Mapping[str, frozenset[str] | None]


class Liveness:
    def __init__(
        self,
        node: str,
        port: int,
        config: LivenessConfig,
        on_change: Callable[[LiveMap], None],
        log: Any,
        metrics: Any,
        liveness_interface: str | None = None,
        bind_addr: str = "::",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.port = port
        self.config = config
        self.on_change = on_change
        self.log = log
        self.metrics = metrics
        self.iface = liveness_interface
        self.now = monotonic
        self.membership = Membership(node, secrets.token_hex(8), monotonic(), config)
        self._lock = threading.RLock()
        self._peers: dict[str, tuple[IPAddress, socket.socket]] = {}
        self._node_addrs: dict[str, frozenset[IPAddress]] = {}
        self._stop = threading.Event()
        self._last_live: dict[str, frozenset[str] | None] | None = None
        self._send_failures = 0
        self.rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.rx.bind((bind_addr, port))
        self.rx.setblocking(False)
        self._thread: threading.Thread | None = None

    # --- inputs (any thread) -----------------------------------------------------------------

    def set_nodes(self, nodes: Mapping[str, Iterable[IPAddress]]) -> None:
        """Members and where their speakers listen (first IPv4 address, else IPv6)."""
        with self._lock:
            self.membership.set_members(nodes)
            self.membership.forget_departed()
            self._node_addrs = {n: frozenset(a) for n, a in nodes.items()}
            for name in [n for n in self._peers if n not in nodes or n == self.node]:
                _, sock = self._peers.pop(name)
                sock.close()
            for name, addrs in nodes.items():
                if name == self.node:
                    continue
                target = _pick(addrs)
                cur = self._peers.get(name)
                if target is None:
                    if cur:
                        cur[1].close()
                        del self._peers[name]
                    continue
                if cur is None or cur[0] != target:
                    if cur:
                        cur[1].close()
                    self._peers[name] = (target, self._connect(target))

    def set_synced(self, synced: bool) -> None:
        with self._lock:
            self.membership.set_synced(synced, self.now())

    def set_interfaces(self, names: Iterable[str]) -> None:
        with self._lock:
            self.membership.set_interfaces(names)

    def live(self) -> dict[str, frozenset[str] | None]:
        with self._lock:
            return dict(self.membership.live(self.now()))

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)
        self._thread.start()

    def leave(self) -> None:
        """Graceful stop: tell every peer at once (several times) that we are leaving."""
        with self._lock:
            self.membership.leave()
            for i in range(LEAVE_REPEATS):
                self._send_beats()
                if i + 1 < LEAVE_REPEATS:
                    time.sleep(0.005)  # spread the copies a little: one burst can drop whole
        self._notify()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        with self._lock:
            for _, sock in self._peers.values():
                sock.close()
            self._peers.clear()
        self.rx.close()

    # --- loop ------------------------------------------------------------------------------

    def _connect(self, addr: IPAddress) -> socket.socket:
        fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # no route yet: retried by the next send
            sock.connect((str(addr), self.port))
        return sock

    def _run(self) -> None:
        next_send = self.now()
        while not self._stop.is_set():
            now = self.now()
            with self._lock:
                socks = [s for _, s in self._peers.values()]
            wait = max(0.0, min(TICK, next_send - now))
            try:
                ready, _, _ = select.select([self.rx, *socks], [], [], wait)
            except (OSError, ValueError):
                ready = []
            with self._lock:
                if self.rx in ready:
                    self._drain()
                for name, (_, sock) in list(self._peers.items()):
                    if sock in ready:
                        self._peer_error(name, sock)
                now = self.now()
                if now >= next_send:
                    next_send = now + self.config.interval
                    if self.iface is not None:
                        self.membership.set_isolated(not carrier_up(self.iface), now)
                    self._send_beats()
            self._notify()

    def _drain(self) -> None:
        # Read everything queued before judging anyone: after a stall of this process the
        # backlog proves the peers were alive meanwhile.
        for _ in range(10_000):
            try:
                data, addr = self.rx.recvfrom(MAX_HEARTBEAT_BYTES + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            hb = Heartbeat.decode(data)
            if hb is None:
                self.metrics.heartbeats_invalid.inc()
                continue
            src = _unmap(addr[0])
            if src not in self._node_addrs.get(hb.node, frozenset()):
                self.metrics.heartbeats_invalid.inc()
                continue
            self.metrics.heartbeats_received.inc()
            self.membership.observe(hb, self.now())

    def _peer_error(self, name: str, sock: socket.socket) -> None:
        try:
            sock.recv(64)
        except ConnectionRefusedError:
            self.membership.refused(name, self.now())
        except OSError:
            pass

    def _send_beats(self) -> None:
        now = self.now()
        beat = self.membership.heartbeat(now).encode()
        failures = 0
        for name, (addr, sock) in self._peers.items():
            try:
                sock.send(beat)
                self.metrics.heartbeats_sent.inc()
            except ConnectionRefusedError:
                self.membership.refused(name, now)
            except OSError as exc:
                failures += 1
                if exc.errno == errno.EDESTADDRREQ:  # connect failed earlier: retry it
                    with contextlib.suppress(OSError):
                        sock.connect((str(addr), self.port))
        # Every send failing (no route: our link is down) means we are cut off.
        if self._peers and failures == len(self._peers):
            self._send_failures += 1
        else:
            self._send_failures = 0
        if self.iface is None:
            self.membership.set_isolated(self._send_failures >= 2, now)

    def _notify(self) -> None:
        with self._lock:
            live = dict(self.membership.live(self.now()))
        if live != self._last_live:
            self._last_live = live
            self.metrics.live_nodes.set(len(live))
            self.log.info("liveness_change", live=sorted(live))
            try:
                self.on_change(live)
            except Exception as exc:
                self.log.error("liveness_callback_failed", error=repr(exc))


def _pick(addrs: Iterable[IPAddress]) -> IPAddress | None:
    ordered = sorted(addrs, key=lambda a: (a.version, int(a)))
    return ordered[0] if ordered else None


def _unmap(text: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


