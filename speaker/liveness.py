"""UDP heartbeat loop around the pure ``speaker.core.liveness.Membership`` (I/O shell).

One receiving socket on the liveness port; one *connected* UDP socket per peer for sending,
because on a connected socket the kernel reports the peer host's ICMP port-unreachable as
ECONNREFUSED: when a speaker dies but its node stays up (crash, SIGKILL, OOM kill), we learn it
one heartbeat interval later instead of after the full timeout. Heartbeats are accepted only
from an address of the Node they name (a misrouted or stale packet cannot vouch for another
node). See the pure module for the timing argument.

Authentication (``speaker.core.liveness_auth``): every heartbeat is sealed with the first key
of ``key_file`` and accepted under any of its keys; the pure ``Membership.observe`` then
rejects stale and replayed ones. The key file is checked every ``KEY_CHECK_INTERVAL`` and
re-read when it changed (a Secret volume is updated by the kubelet swapping a symlink, so the
path's inode changes), which is what makes key rotation possible without restarting
speakers. Every rejected datagram is counted by reason; logged at most once per reason and
source every ``REJECT_LOG_PERIOD`` (a flood of forgeries must not flood the log).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from common.api.model import IPAddress
from speaker.answer_lease import AnswerLease
from speaker.core.liveness import MAX_HEARTBEAT_BYTES, LivenessConfig, Membership
from speaker.core.liveness_auth import (
    FOREIGN_ADDRESS,
    INSECURE_KEY,
    KeyFile,
    RateLimitedLog,
    open_sealed,
    parse_keys,
    seal,
)
from speaker.errors import LivenessKeyError
from speaker.l2 import carrier_up

TICK = 0.01  # seconds: expiry is checked at least this often (bounds detection jitter)
LEAVE_REPEATS = 3  # leaving beats sent on a graceful stop (UDP may drop one)
# s between checks of the key file: a stat() per second is nothing; the kubelet itself takes
# up to a minute or more to push a Secret change to the volume, so this adds no real delay.
KEY_CHECK_INTERVAL = 1.0
REJECT_LOG_PERIOD = 10.0  # s: per reason and source, at most one log line
MAX_KEY_FILE_BYTES = 64 * 1024  # a handful of keys; anything bigger is not a key file

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
        key_file: str | None = None,
        wall: Callable[[], float] = time.time,
        lease: AnswerLease | None = None,
        watch_pid: int | None = None,
    ) -> None:
        self.node = node
        self.port = port
        self.config = config
        self.on_change = on_change
        self.log = log
        self.metrics = metrics
        self.iface = liveness_interface
        self.now = monotonic
        self.wall = wall
        self.key_file = key_file
        self._keys: tuple[bytes, ...] = (INSECURE_KEY,)
        self._key_sig: tuple[int, ...] | None = None
        self._next_key_check = 0.0
        self._reject_log = RateLimitedLog(REJECT_LOG_PERIOD)
        self._lock = threading.RLock()
        if key_file is None:
            log.warning("liveness_unauthenticated",
                        message="no --liveness-key-file: anyone on the node network can forge "
                                "heartbeats and move VIPs")
            metrics.liveness_keys.set(0)
        else:
            self._load_keys(initial=True)
        self.membership = Membership(node, secrets.token_hex(8), monotonic(), config)
        self._peers: dict[str, tuple[IPAddress, socket.socket]] = {}
        self._node_addrs: dict[str, frozenset[IPAddress]] = {}
        self._stop = threading.Event()
        self._last_live: dict[str, frozenset[str] | None] | None = None
        self._send_failures = 0
        # The answer lease (speaker.answer_lease): epoch of the live map last handed out, and
        # the speaker process whose stops (SIGSTOP) we mirror (None: in-process, no lease).
        self.lease = lease
        self.lease_for = config.timeout / 2
        self.epoch = 0
        self.watch_pid = watch_pid
        self._frozen_since: float | None = None
        self.stalls = 0  # stalls of this loop seen (rule S), for logs and tests
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
            self.membership.set_members(nodes, self.now())
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
        """Graceful stop: tell every peer at once (several times) that we are leaving. The
        layer-2 announcer silences its responder *before* calling this (peers move our VIPs
        as soon as they hear it); later heartbeats keep saying ``leaving`` until ``stop``."""
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
                now = self.now()
                # Rule S: notice our own stall BEFORE reading what queued up meanwhile.
                gap = self.membership.tick(now)
                if gap:
                    self.stalls += 1
                    self.log.warning("liveness_stall", seconds=round(gap, 3),
                                     relearning=self.membership.relearning(now))
                frozen = self._speaker_frozen(now)
                if self.rx in ready:
                    self._drain()
                for name, (_, sock) in list(self._peers.items()):
                    if sock in ready:
                        self._peer_error(name, sock)
                if self.key_file is not None and now >= self._next_key_check:
                    self._next_key_check = now + KEY_CHECK_INTERVAL
                    self._load_keys()
                if now >= next_send:
                    next_send = now + self.config.interval
                    if self.iface is not None:
                        self.membership.set_isolated(not carrier_up(self.iface), now)
                    if not frozen:  # a stopped speaker cannot answer: stop vouching for it
                        self._send_beats()
            self._notify()

    def _speaker_frozen(self, now: float) -> bool:
        """Whether the speaker process we serve (``watch_pid``) is stopped (SIGSTOP, state T).
        We then fall silent like it, so peers take its VIPs over; when it runs again, its plan
        is stale: re-learn first (rule S, without extending ages: we kept listening)."""
        if self.watch_pid is None:
            return False
        try:
            with open(f"/proc/{self.watch_pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError) as exc:
            # Gone (then PR_SET_PDEATHSIG and the closed control socket end us too) or /proc
            # hidden from us: stop watching rather than stop heartbeating.
            self.log.warning("speaker_state_unreadable", pid=self.watch_pid, error=str(exc))
            self.watch_pid = None
            return False
        frozen = state in (b"T", b"t")
        if frozen and self._frozen_since is None:
            self._frozen_since = now
            self.log.warning("speaker_stopped", pid=self.watch_pid)
        elif not frozen and self._frozen_since is not None:
            gap = now - self._frozen_since
            self._frozen_since = None
            self.membership.stalled(gap, now, extend=False)
            self.log.warning("speaker_resumed", pid=self.watch_pid, seconds=round(gap, 3))
        return frozen

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
            src = _unmap(addr[0])
            hb = open_sealed(data, self._keys)
            if isinstance(hb, str):
                self._reject(hb, src)
                continue
            if src not in self._node_addrs.get(hb.node, frozenset()):
                self._reject(FOREIGN_ADDRESS, src, hb.node)
                continue
            wall = self.wall()
            verdict = self.membership.observe(hb, self.now(), wall)
            if verdict in ("stale", "replayed"):
                # skew: how far the sender's clock (or a replay) is from ours, for the operator
                self._reject(verdict, src, hb.node, skew=round(wall - hb.sent_at, 3))
                continue
            self.metrics.heartbeats_received.inc()

    def _reject(self, reason: str, src: IPAddress | None, node: str | None = None,
                **extra: float) -> None:
        self.metrics.heartbeats_rejected.labels(reason).inc()
        suppressed = self._reject_log.allow(f"{reason} {src}", self.now())
        if suppressed is not None:
            self.log.warning("heartbeat_rejected", reason=reason, source=str(src),
                             claimed_node=node, suppressed=suppressed, **extra)

    def _load_keys(self, initial: bool = False) -> None:
        """Re-read the key file if it changed. At start a missing or useless file is fatal
        (LivenessKeyError); later it is logged and the keys in use are kept."""
        assert self.key_file is not None
        try:
            st = os.stat(self.key_file)
            sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if sig == self._key_sig:
                return
            with open(self.key_file, "rb") as f:
                data = f.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            if initial:
                raise LivenessKeyError(f"cannot read liveness key file {self.key_file}: "
                                       f"{exc.strerror}") from exc
            if self._key_sig is not None:  # once per change, not every second
                self.log.error("liveness_keys_unreadable", file=self.key_file,
                               error=exc.strerror, keeping=len(self._keys))
                self._key_sig = None
            return
        self._key_sig = sig
        parsed = (parse_keys(data) if len(data) <= MAX_KEY_FILE_BYTES
                  else KeyFile((), ("file larger than 64 KiB",)))
        for problem in parsed.problems:
            self.log.warning("liveness_key_file_problem", file=self.key_file, problem=problem)
        if not parsed.keys:
            if initial:
                raise LivenessKeyError(f"no usable key in liveness key file {self.key_file}")
            self.log.error("liveness_keys_unusable", file=self.key_file, keeping=len(self._keys))
            return
        if parsed.keys != self._keys:
            with self._lock:
                self._keys = parsed.keys
            self.metrics.liveness_keys.set(len(parsed.keys))
            # ids, never keys: compare them across nodes during a rotation
            self.log.info("liveness_keys_loaded", file=self.key_file, keys=len(parsed.keys),
                          signing=parsed.ids[0], ids=parsed.ids)

    def _peer_error(self, name: str, sock: socket.socket) -> None:
        try:
            sock.recv(64)
        except ConnectionRefusedError:
            self.membership.refused(name, self.now())
        except OSError:
            pass

    def _send_beats(self) -> None:
        now = self.now()
        beat = seal(self.membership.heartbeat(now, self.wall()), self._keys[0])
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
            now = self.now()
            live = dict(self.membership.live(now))
            changed = live != self._last_live
            if changed:
                self._last_live = live
                self.epoch += 1  # before handing it out: the old plan may answer no more
            if self.lease is not None:
                ok = self._frozen_since is None and not self.membership.relearning(now)
                self.lease.write(self.epoch, now + self.lease_for if ok else 0.0)
        if changed:
            self.metrics.live_nodes.set(len(live))
            self.log.info("liveness_change", live=sorted(live), epoch=self.epoch)
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


