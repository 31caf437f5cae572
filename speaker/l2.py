"""ARP / NDP responder: answers for owned VIPs on raw AF_PACKET sockets (I/O shell).

One long-lived AF_PACKET socket per interface (LAB-NOTES: opening a socket per packet, as
scapy's ``sendp()`` does, costs 20-80 ms; a kept socket sends thousands per second), with a
kernel BPF filter (``speaker.core.bpf``) so that Python only sees ARP / NS / NA frames that
concern our VIPs. What a received frame means — reply, duplicate claim, or a named drop
reason — is decided purely by ``speaker.core.l2_reply.decide`` (frames read at fixed offsets);
this thread only receives, calls it, and sends / reports / counts (drops per interface and
reason in ``Responder.drops()``, not logged: too hot). scapy builds every frame we send.

* ARP request / NS for an owned VIP on an interface it may be answered on -> reply from that
  interface's MAC (NS from ``::`` — duplicate address detection — is answered to ff02::1).
* Takeover: gratuitous ARP (request form, SPA = TPA = VIP, broadcast) / unsolicited NA
  (override flag, to ff02::1) at once and again at ``GARP_SCHEDULE`` offsets, because one
  frame can be lost and a client may be busy.
* For IPv6 VIPs the socket joins the solicited-node multicast group on each interface, so
  that switches with MLD snooping (and NICs with multicast filters) deliver the NS to us.
* Silence (``silence()``, the first step of a graceful stop): from the moment it returns no
  frame of ours leaves any more — no reply, no gratuitous announcement, no probe. Every send
  checks the flag under ``_send_lock``, the lock ``silence()`` takes to set it, so a reply
  being built when it is called is either on the wire before ``silence()`` returns or never.
  The owned set and the kernel filter stay as they were, so that the next owner's
  announcement is still seen (``foreign_since``) — and not reported as a duplicate.
* Queued requests are decided with the ownership they arrived under: before a gained VIP is
  answered, what is already queued on the sockets is handled with the VIPs owned before *and*
  after the change (``_apply_desired``). A request that reached us before we owned its VIP
  reached the previous owner too, which may have answered it; answering it as well would make
  two MACs answer one request. (With up to ``MAX_PRECISE_VIPS`` VIPs the kernel filter never
  queues such a request anyway; the type-only filter beyond that does.)
* Duplicate detection: an ARP frame whose sender address is an owned VIP, or an NA whose
  target is an owned VIP, sent by a MAC that is not ours, means another node claims our VIP
  (partition, misconfiguration, a foreign device). Reported through ``on_duplicate``; a
  while after each takeover and then periodically we also send an RFC 5227 ARP probe /
  DAD-style NS for each owned VIP so that any other claimant answers and gets noticed.
* What the wire saw (``wire()``, for the Service's ``portico.dev/L2Wire`` condition,
  ``speaker.core.l2_report``): per owned VIP the wall-clock time of the last gratuitous ARP /
  unsolicited NA sent and the requests answered since the VIP was gained (reset on every new
  gain, dropped on loss). ``on_announced`` is called (from this thread) when the first
  announcement after a gain is on the wire, so the report can say so at once.
* A link going down makes recv/send raise OSError (ENETDOWN): logged, counted, and the socket
  kept (it works again when the link comes back); interfaces appearing or disappearing are
  picked up by a periodic rescan.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.api.model import IPAddress
from speaker.answer_lease import AnswerLease
from speaker.core.bpf import responder_filter
from speaker.core.l2_reply import (
    ALL_NODES,
    ALL_NODES_MAC,
    ArpReply,
    Drop,
    Duplicate,
    NeighborAdvertisement,
    decide,
)
from speaker.core.l2_report import VipWire

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
# Gratuitous announcements after a takeover, seconds from the takeover: at once, then again
# in case a frame or the client's processing of it was lost (Linux updates an existing
# neighbour entry from any of them).
GARP_SCHEDULE = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0)
DUP_PROBE_FIRST = 1.5  # seconds after takeover: after the previous owner has surely let go
DUP_PROBE_EVERY = 10.0
RESCAN_EVERY = 2.0  # seconds between interface rescans
MAX_FRAMES_PER_WAKE = 256  # bound the work done per socket per wake-up
DEFAULT_EXCLUDED_PREFIXES = ("lo", "docker", "cni", "flannel", "cali", "veth", "cilium",
                             "kube-ipvs", "vxlan", "tunl", "weave", "virbr")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach_filter(sock: socket.socket, prog_bytes: bytes, count: int) -> None:
    buf = ctypes.create_string_buffer(prog_bytes)
    fprog = _SockFprog(count, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def solicited_node(vip: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address("ff02::1:ff00:0") + (int(vip) & 0xFFFFFF)


def interface_mac(name: str) -> str | None:
    try:
        with open(f"/sys/class/net/{name}/address") as f:
            return f.read().strip()
    except OSError:
        return None


def list_interfaces(allowed: frozenset[str] | None) -> list[str]:
    names = [n for _, n in socket.if_nameindex()]
    if allowed is not None:
        return [n for n in names if n in allowed]
    return [n for n in names if not n.startswith(DEFAULT_EXCLUDED_PREFIXES)]


def carrier_up(name: str) -> bool:
    try:
        with open(f"/sys/class/net/{name}/carrier") as f:
            return f.read().strip() == "1"
    except OSError:  # reading carrier of an admin-down link raises EINVAL
        return False


class Metrics:
    """The counters the responder updates; prometheus objects or test doubles."""

    def __init__(self, requests: Any, replies: Any, gratuitous: Any, duplicates: Any,
                 errors: Any) -> None:
        self.requests, self.replies, self.gratuitous = requests, replies, gratuitous
        self.duplicates, self.errors = duplicates, errors


@dataclass
class _Iface:
    name: str
    index: int
    mac: str
    sock: socket.socket
    mc: socket.socket
    groups: dict[ipaddress.IPv6Address, set[ipaddress.IPv6Address]] = field(default_factory=dict)


class Responder:
    def __init__(
        self,
        allowed: frozenset[str] | None,
        metrics: Metrics,
        log: Any,
        on_duplicate: Callable[[IPAddress, str, str], None],
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        on_announced: Callable[[IPAddress], None] | None = None,
    ) -> None:
        self.allowed = allowed
        self.metrics = metrics
        self.log = log
        self.on_duplicate = on_duplicate
        self.now = monotonic
        self._lock = threading.Lock()
        self._desired: dict[IPAddress, frozenset[str] | None] = {}
        self._owned: dict[IPAddress, frozenset[str] | None] = {}
        self._ifaces: dict[str, _Iface] = {}
        self._due: dict[IPAddress, list[float]] = {}  # pending gratuitous sends
        self._probe_due: dict[IPAddress, float] = {}
        self._foreign: dict[IPAddress, float] = {}  # last time another MAC claimed the VIP
        self._drops: dict[tuple[str, Drop], int] = {}  # (interface, reason) -> frames
        self._stale_drops: dict[str, int] = {}  # interface -> requests dropped without a lease
        self._silent_drops = 0  # requests left unanswered after silence() (to the next owner)
        # What the wire saw per owned VIP (``wire()``): wall-clock time of the gain and of the
        # last gratuitous announcement, requests answered since the gain. Under _lock.
        self.wall = wallclock
        self.on_announced = on_announced
        self._gained_at: dict[IPAddress, float] = {}
        self._announced_at: dict[IPAddress, float] = {}
        self._answered: dict[IPAddress, int] = {}
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._next_rescan = 0.0
        # Graceful stop (``silence``): set once, never cleared; the lock orders it with sends.
        self._silent = False
        self._send_lock = threading.Lock()
        # The answer lease (speaker.answer_lease): answer and announce only while it is valid
        # for the epoch of the live map the owned set was planned from. None: no heartbeat
        # process (tests, in-process liveness): always valid.
        self.lease: AnswerLease | None = None
        self._desired_epoch = 0
        self._owned_epoch = 0

    # --- API (any thread) ----------------------------------------------------------------

    def start(self) -> None:
        self._rescan()
        self._thread = threading.Thread(target=self._run, name="l2-responder", daemon=True)
        self._thread.start()

    def set_owned(self, owned: Mapping[IPAddress, frozenset[str] | None],
                  epoch: int = 0) -> None:
        """``epoch``: of the live map ``owned`` was planned from (the answer lease's)."""
        with self._lock:
            self._desired = dict(owned)
            self._desired_epoch = epoch
        self._wake()

    def may_answer(self) -> bool:
        """Whether we may answer and announce: not silenced, and our view is current (the
        lease). Nothing overrides the lease, not even a hand-over (a SIGTERM that finds us
        frozen or re-learning must not answer from a stale plan)."""
        return not self._silent and (self.lease is None
                                     or self.lease.valid(self._owned_epoch, self.now()))

    def silence(self) -> None:
        """Stop answering and announcing, for good (graceful stop, before saying "leaving").

        When this returns, every frame we will ever send is already handed to the kernel:
        ``_send`` checks the flag and sends under the lock taken here. The owned set and the
        kernel filter are kept, so ``foreign_since`` still sees the next owner announce and
        the duplicate detector stays quiet about it (``_duplicate``)."""
        with self._send_lock:
            self._silent = True
        self._wake()

    def silent_drops(self) -> int:
        """Requests for owned VIPs left unanswered since ``silence()`` (the next owner's)."""
        with self._lock:
            return self._silent_drops

    def owned(self) -> frozenset[IPAddress]:
        with self._lock:
            return frozenset(self._owned)

    def interfaces(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ifaces)

    def foreign_since(self, vip: IPAddress, since: float) -> bool:
        """Whether another MAC announced ``vip`` at or after ``since`` (monotonic)."""
        with self._lock:
            t = self._foreign.get(vip)
        return t is not None and t >= since

    def wire(self) -> dict[IPAddress, VipWire]:
        """Per owned VIP: when it was gained, when this node last announced it (gratuitous
        ARP / unsolicited NA; None: not yet), and how many requests it answered since."""
        with self._lock:
            return {v: VipWire(t, self._announced_at.get(v), self._answered.get(v, 0))
                    for v, t in self._gained_at.items()}

    def _count_answer(self, vip: IPAddress) -> None:
        with self._lock:  # the hot path: one dict increment under the lock
            n = self._answered.get(vip)
            if n is not None:  # owned (a reply racing a loss is not counted)
                self._answered[vip] = n + 1

    def drops(self) -> dict[tuple[str, Drop], int]:
        """Received frames neither answered nor reported, per (interface, reason)."""
        with self._lock:
            return dict(self._drops)

    def stale_drops(self) -> dict[str, int]:
        """Requests for owned VIPs left unanswered because the answer lease was not valid."""
        with self._lock:
            return dict(self._stale_drops)

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        for iface in list(self._ifaces.values()):
            self._close(iface)
        self._ifaces.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # --- loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.now()
            timeouts = [self._next_rescan - now]
            timeouts += [d[0] - now for d in self._due.values() if d]
            timeouts += [t - now for t in self._probe_due.values()]
            timeout = max(0.0, min(1.0, *timeouts))
            if timeout < 0.005 and (self._due or self._probe_due) and not self.may_answer():
                timeout = 0.005  # announcements wait for the lease: do not spin meanwhile
            fds: list[Any] = [self._wake_r, *(i.sock for i in self._ifaces.values())]
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except (OSError, ValueError):  # a socket closed under us by a rescan
                ready = []
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            self._apply_desired()
            for iface in list(self._ifaces.values()):
                if iface.sock in ready:
                    self._drain(iface)
            self._send_due()
            if self.now() >= self._next_rescan:
                self._rescan()

    def _drain(self, iface: _Iface) -> None:
        for _ in range(MAX_FRAMES_PER_WAKE):
            try:
                data, addr = iface.sock.recvfrom(2048, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:  # ENETDOWN when the link drops: keep the socket
                self.metrics.errors.labels(iface.name).inc()
                self.log.debug("l2_recv_error", interface=iface.name, error=str(exc))
                return
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            try:
                self._handle(iface, data)
            except Exception as exc:  # a malformed frame must never stop the responder
                self.log.warning("l2_frame_error", interface=iface.name, error=repr(exc))

    # --- frames ----------------------------------------------------------------------------

    def _allowed_on(self, vip: IPAddress, iface: str) -> bool:
        if vip not in self._owned:
            return False
        names = self._owned[vip]
        return names is None or iface in names

    def _handle(self, iface: _Iface, data: bytes) -> None:
        our_macs = frozenset(i.mac for i in self._ifaces.values())
        decision = decide(data, iface.name, self._owned, our_macs)
        if isinstance(decision, ArpReply | NeighborAdvertisement) and self._silent:
            with self._lock:  # handing over: the next owner answers (or nobody, single node)
                self._silent_drops += 1
            return
        if isinstance(decision, ArpReply | NeighborAdvertisement) and not self.may_answer():
            # A stale view (after a stall, or before our replan of a liveness change): the
            # request may be seconds old and the VIP someone else's by now. Drop it.
            with self._lock:
                self._stale_drops[iface.name] = self._stale_drops.get(iface.name, 0) + 1
            return
        match decision:
            case ArpReply(vip, dst_mac, dst_ip):
                self.metrics.requests.labels("arp", iface.name).inc()
                if self._send(iface, self._arp_reply(iface.mac, vip, dst_mac, dst_ip), "arp"):
                    self.metrics.replies.labels("arp", iface.name).inc()
                    self._count_answer(vip)
            case NeighborAdvertisement(vip, dst_mac, dst_ip, solicited):
                self.metrics.requests.labels("ndp", iface.name).inc()
                if self._send(iface, self._na(iface.mac, vip, dst_ip, dst_mac, solicited),
                              "ndp"):
                    self.metrics.replies.labels("ndp", iface.name).inc()
                    self._count_answer(vip)
            case Duplicate(vip, mac, name):
                self._duplicate(vip, mac, name)
            case Drop() as reason:
                key = (iface.name, reason)
                with self._lock:
                    self._drops[key] = self._drops.get(key, 0) + 1

    def _duplicate(self, vip: IPAddress, mac: str, iface: str) -> None:
        with self._lock:
            self._foreign[vip] = self.now()
        if self._silent:
            # Handing over (graceful stop): we went silent before saying "leaving", so this
            # is the next owner taking over as asked — the hand-over's confirmation, not a
            # conflict. Recorded (foreign_since) for the stop to see, not reported.
            return
        self.metrics.duplicates.labels("arp" if vip.version == 4 else "ndp").inc()
        self.on_duplicate(vip, mac, iface)

    def _send(self, iface: _Iface, frame: bytes, proto: str) -> bool:
        # Check the lease again right before the system call: building a frame with scapy
        # takes milliseconds, and a freeze in between must not put a stale answer on the wire
        # when we wake (what is left is the microseconds between this check and send()).
        # The check and the send happen under _send_lock: once silence() has returned,
        # nothing follows (a graceful stop says "leaving" only after that).
        with self._send_lock:
            if self._silent:
                return False
            if not self.may_answer():
                with self._lock:
                    self._stale_drops[iface.name] = self._stale_drops.get(iface.name, 0) + 1
                return False
            try:
                iface.sock.send(frame)
                return True
            except OSError as exc:  # ENETDOWN / ENXIO while the link is down
                err = exc
        self.metrics.errors.labels(iface.name).inc()
        self.log.debug("l2_send_error", interface=iface.name, protocol=proto, error=str(err))
        return False

    @staticmethod
    def _arp_reply(mac: str, vip: ipaddress.IPv4Address, dst_mac: str,
                   dst_ip: ipaddress.IPv4Address) -> bytes:
        from scapy.layers.l2 import ARP, Ether

        return bytes(Ether(src=mac, dst=dst_mac)
                     / ARP(op=2, hwsrc=mac, psrc=str(vip), hwdst=dst_mac, pdst=str(dst_ip)))

    @staticmethod
    def _garp(mac: str, vip: ipaddress.IPv4Address) -> bytes:
        from scapy.layers.l2 import ARP, Ether

        return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                     / ARP(op=1, hwsrc=mac, psrc=str(vip), hwdst="00:00:00:00:00:00",
                           pdst=str(vip)))

    @staticmethod
    def _arp_probe(mac: str, vip: ipaddress.IPv4Address) -> bytes:
        from scapy.layers.l2 import ARP, Ether

        return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                     / ARP(op=1, hwsrc=mac, psrc="0.0.0.0", hwdst="00:00:00:00:00:00",
                           pdst=str(vip)))

    @staticmethod
    def _na(mac: str, vip: ipaddress.IPv6Address, dst_ip: ipaddress.IPv6Address, dst_mac: str,
            solicited: bool) -> bytes:
        """NA for ``vip`` with the override flag, from ``mac`` to ``dst_mac`` / ``dst_ip``."""
        from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
        from scapy.layers.l2 import Ether

        return bytes(Ether(src=mac, dst=dst_mac)
                     / IPv6(src=str(vip), dst=str(dst_ip), hlim=255)
                     / ICMPv6ND_NA(tgt=str(vip), R=0, S=1 if solicited else 0, O=1)
                     / ICMPv6NDOptDstLLAddr(lladdr=mac))

    @staticmethod
    def _dad_ns(mac: str, vip: ipaddress.IPv6Address) -> bytes:
        from scapy.layers.inet6 import ICMPv6ND_NS, IPv6
        from scapy.layers.l2 import Ether

        group = solicited_node(vip)
        eth = "33:33:" + ":".join(f"{b:02x}" for b in group.packed[12:])
        return bytes(Ether(src=mac, dst=eth) / IPv6(src="::", dst=str(group), hlim=255)
                     / ICMPv6ND_NS(tgt=str(vip)))

    # --- ownership changes -----------------------------------------------------------------

    def _ifaces_for(self, vip: IPAddress) -> list[_Iface]:
        names = self._owned.get(vip)
        return [i for n, i in self._ifaces.items() if names is None or n in names]

    def _apply_desired(self) -> None:
        with self._lock:
            desired = dict(self._desired)
            self._owned_epoch = self._desired_epoch
        if desired == self._owned:
            return
        now = self.now()
        gained = [v for v in desired if v not in self._owned]
        lost = [v for v in self._owned if v not in desired]
        changed_ifaces = [v for v in desired if v in self._owned and desired[v] != self._owned[v]]
        for vip in lost:
            self._due.pop(vip, None)
            self._probe_due.pop(vip, None)
        with self._lock:  # what the wire saw starts again with every gain
            wall = self.wall()
            for vip in lost:
                self._gained_at.pop(vip, None)
                self._announced_at.pop(vip, None)
                self._answered.pop(vip, None)
            for vip in gained:
                self._gained_at[vip] = wall
                self._announced_at.pop(vip, None)
                self._answered[vip] = 0
        if gained:
            # What is queued arrived before we owned the gained VIPs — and reached their
            # previous owner too, which may have answered it: decide it with what we own both
            # before and after, so that no request is answered by two MACs (module docstring).
            steady = {v: i for v, i in self._owned.items() if v in desired and desired[v] == i}
            with self._lock:
                self._owned = steady
            for iface in list(self._ifaces.values()):
                self._drain(iface)
        with self._lock:
            self._owned = desired
        self._refilter()
        for vip in [*gained, *changed_ifaces]:
            self._due[vip] = [now + d for d in GARP_SCHEDULE]
            self._probe_due[vip] = now + DUP_PROBE_FIRST
        self._send_due()
        if gained or lost:
            self.log.info("l2_ownership", gained=[str(v) for v in gained],
                          lost=[str(v) for v in lost])

    def _refilter(self) -> None:
        """Install the BPF filter and multicast memberships for the current owned set."""
        for iface in self._ifaces.values():
            vips = [v for v in self._owned if self._allowed_on(v, iface.name)]
            self._install_filter(iface, vips)
            want: dict[ipaddress.IPv6Address, set[ipaddress.IPv6Address]] = {}
            for v in vips:
                if isinstance(v, ipaddress.IPv6Address):
                    want.setdefault(solicited_node(v), set()).add(v)
            for group in [g for g in iface.groups if g not in want]:
                self._membership(iface, group, join=False)
                del iface.groups[group]
            for group, members in want.items():
                if group not in iface.groups:
                    self._membership(iface, group, join=True)
                iface.groups[group] = members

    def _install_filter(self, iface: _Iface, vips: list[IPAddress]) -> None:
        prog = responder_filter(vips)
        try:
            attach_filter(iface.sock, b"".join(i.pack() for i in prog), len(prog))
        except OSError as exc:
            self.log.error("l2_filter_failed", interface=iface.name, error=str(exc))

    def _membership(self, iface: _Iface, group: ipaddress.IPv6Address, join: bool) -> None:
        opt = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
        try:
            iface.mc.setsockopt(socket.IPPROTO_IPV6, opt,
                                group.packed + struct.pack("@I", iface.index))
        except OSError as exc:
            self.log.warning("l2_multicast_membership_failed", interface=iface.name,
                             group=str(group), join=join, error=str(exc))

    def _send_due(self) -> None:
        if not self.may_answer():
            return  # kept pending: sent once the view is current (if the VIP is still ours)
        now = self.now()
        for vip, due in list(self._due.items()):
            if not due or due[0] > now:
                continue
            while due and due[0] <= now:
                due.pop(0)
            sent = False
            for iface in self._ifaces_for(vip):
                if isinstance(vip, ipaddress.IPv4Address):
                    frame, proto = self._garp(iface.mac, vip), "arp"
                else:
                    frame = self._na(iface.mac, vip, ALL_NODES, ALL_NODES_MAC, False)
                    proto = "ndp"
                if self._send(iface, frame, proto):
                    self.metrics.gratuitous.labels(proto, iface.name).inc()
                    sent = True
            if sent:
                self._announced(vip)
            if not due:
                del self._due[vip]
        for vip, t in list(self._probe_due.items()):
            if t > now:
                continue
            self._probe_due[vip] = now + DUP_PROBE_EVERY
            for iface in self._ifaces_for(vip):
                if isinstance(vip, ipaddress.IPv4Address):
                    self._send(iface, self._arp_probe(iface.mac, vip), "arp")
                else:
                    self._send(iface, self._dad_ns(iface.mac, vip), "ndp")

    def _announced(self, vip: IPAddress) -> None:
        with self._lock:
            if vip not in self._gained_at:
                return
            first = vip not in self._announced_at
            self._announced_at[vip] = self.wall()
        if first and self.on_announced is not None:
            try:
                self.on_announced(vip)
            except Exception as exc:  # reporting must never stop the responder
                self.log.warning("l2_on_announced_failed", vip=str(vip), error=repr(exc))

    # --- interfaces ----------------------------------------------------------------------

    def _open(self, name: str) -> _Iface | None:
        mac = interface_mac(name)
        if mac is None:
            return None
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            # Filter first (accept nothing), then bind: no unfiltered frame is ever queued.
            prog = responder_filter([])
            attach_filter(sock, b"".join(i.pack() for i in prog), len(prog))
            sock.bind((name, ETH_P_ALL))
            mc = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as exc:
            sock.close()
            self.log.warning("l2_open_failed", interface=name, error=str(exc))
            return None
        return _Iface(name, socket.if_nametoindex(name), mac, sock, mc)

    def _close(self, iface: _Iface) -> None:
        for s in (iface.sock, iface.mc):
            with contextlib.suppress(OSError):
                s.close()

    def _rescan(self) -> None:
        self._next_rescan = self.now() + RESCAN_EVERY
        try:
            present = set(list_interfaces(self.allowed))
        except OSError:
            return
        changed = False
        for name in [n for n in self._ifaces if n not in present]:
            self._close(self._ifaces.pop(name))
            changed = True
        for name in sorted(present - set(self._ifaces)):
            iface = self._open(name)
            if iface is not None:
                with self._lock:
                    self._ifaces[name] = iface
                changed = True
                self.log.info("l2_interface", interface=name, mac=iface.mac)
        for iface in self._ifaces.values():
            mac = interface_mac(iface.name)
            if mac and mac != iface.mac:
                iface.mac = mac
        if changed:
            self._refilter()
            now = self.now()
            for vip in self._owned:  # announce on interfaces that just appeared
                self._due.setdefault(vip, [now])

