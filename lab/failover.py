"""Failover as a client sees it: a 100 Hz prober and the analysis of one trial.

Shared by ``bench/l2_failover.py`` (many trials, percentiles, a PNG) and the demo (one
trial, printed). The prober runs in the client namespace:

* data path: ICMP echo to the VIP through the client kernel (so the client's real ARP cache
  decides where packets go, exactly what an application sees); each reply is attributed to
  the node by the source MAC of the reply frame (an AF_PACKET socket on the client's NIC);
* control path: an ARP "who-has VIP" every 10 ms from a made-up sender (so the client's own
  ARP cache is never refreshed by it), recording every MAC that answers: two MACs answering
  one round is an overlap (split brain) — a single round is enough to count.

``NdpProber`` does the same for an IPv6 VIP: ICMPv6 echo through the client kernel (its
neighbour cache) and a Neighbor Solicitation per round from made-up senders.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab import netns
from lab.topology import PROBE_IP6_A, PROBE_MAC, Lab
from lab.wait import wait_until

INTERVAL = 0.01  # 100 Hz probes
ICMP_ID = os.getpid() & 0xFFFF
# Unassigned addresses of segment A (outside the VIP pool .192/27 and every host).
ARP_SENDERS = [f"192.0.2.{i}" for i in range(240, 248)]
ARP_SENDER_INDEX = {ipaddress.IPv4Address(a).packed: i for i, a in enumerate(ARP_SENDERS)}
# The same for NDP: unassigned addresses of segment A's IPv6 prefix (hosts are ::1, ::11-::13,
# ::64; VIPs live in 2001:db8:a::1:0/112).
NS_SENDERS = [f"2001:db8:a::f{i:x}" for i in range(8)]
NS_SENDER_INDEX = {ipaddress.IPv6Address(a).packed: i for i, a in enumerate(NS_SENDERS)}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _echo(seq: int) -> bytes:
    payload = b"portico-l2-probe"
    hdr = struct.pack("!BBHHH", 8, 0, 0, ICMP_ID, seq & 0xFFFF)
    return struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ICMP_ID, seq & 0xFFFF) + payload


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass
class Record:
    sent: dict[int, float] = field(default_factory=dict)  # echo seq -> time
    replies: list[tuple[float, int, str]] = field(default_factory=list)  # (t, seq, mac)
    arp_rounds: list[float] = field(default_factory=list)  # send time of each ARP round
    arp_replies: list[tuple[float, int, str]] = field(default_factory=list)  # (t, round, mac)


class Prober:
    """100 Hz ICMP + ARP prober; runs in a thread inside the client namespace."""

    def __init__(self, ns: str, iface: str, vip: str, realtime: bool = False) -> None:
        self.ns, self.iface, self.vip = ns, iface, vip
        self.vip_b = ipaddress.ip_address(vip).packed
        # SCHED_FIFO for the probe thread: a measurement that CPU hogs cannot delay
        self.realtime = realtime
        self._seq = 0  # the last probe number sent
        self.rec = Record()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = netns.start_thread_in_netns(self.ns, self._run, "prober")
        if not self._ready.wait(10):
            raise RuntimeError("prober did not start")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def reset(self) -> Record:
        old, self.rec = self.rec, Record()
        return old

    DATA_ETHERTYPE = 0x0800
    SEQ_BITS = 16  # an echo's sequence number: wraps after 65536 probes (11 min at 100 Hz)

    def _unwrap(self, seq: int) -> int:
        """The probe number a reply's (wrapped) sequence number stands for: the latest one
        sent with those low bits (without this, every reply after the first wrap would count
        as lost)."""
        mask = (1 << self.SEQ_BITS) - 1
        last = self._seq
        return last - ((last - seq) & mask)

    # The data path, one probe per tick; subclasses change what a probe is (SynProber).
    def _data_socket(self) -> socket.socket:
        icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        icmp.setblocking(False)
        return icmp

    def _send_data(self, sock: socket.socket, seq: int) -> None:
        sock.sendto(_echo(seq), (self.vip, 0))

    def _data_reply(self, data: bytes) -> int | None:
        """The probe sequence number an IPv4 frame answers, or None: an ICMP echo reply."""
        if data[23] != 1:
            return None
        icmp_off = 14 + (data[14] & 0x0F) * 4
        if (data[26:30] == self.vip_b and data[icmp_off] == 0
                and int.from_bytes(data[icmp_off + 4:icmp_off + 6], "big") == ICMP_ID):
            return int.from_bytes(data[icmp_off + 6:icmp_off + 8], "big")
        return None

    def _requests(self) -> list[bytes]:
        """The control-path request of each sender address, in round order."""
        from lab.probe import arp_request

        return [arp_request(PROBE_MAC, ip, self.vip) for ip in ARP_SENDERS]

    def _ctl_reply(self, data: bytes) -> tuple[int, str] | None:
        """(sender index, answering MAC) if ``data`` answers one of our rounds."""
        if (int.from_bytes(data[12:14], "big") == 0x0806
                and int.from_bytes(data[20:22], "big") == 2
                and data[28:32] == self.vip_b and _mac(data[32:38]) == PROBE_MAC):
            residue = ARP_SENDER_INDEX.get(bytes(data[38:42]))
            if residue is not None:
                return residue, _mac(data[22:28])
        return None

    def _other(self, pkt: socket.socket, data: bytes) -> None:
        """A frame that answers no probe (``_NdpRounds`` answers neighbour solicitations for
        its made-up senders here)."""

    def _run(self) -> None:
        if self.realtime:
            with contextlib.suppress(OSError):  # pid 0: this thread only
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
        data_sock = self._data_socket()
        pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        pkt.bind((self.iface, 0x0003))
        pkt.setblocking(False)
        # The sender address cycles through ARP_SENDERS so that each reply names its round
        # (replies are addressed to the asking IP): a late answer is never mistaken for an
        # answer to the next round.
        arps = self._requests()
        self._ready.set()
        seq = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_t:
                rec = self.rec
                seq += 1
                self._seq = seq
                rec.sent[seq] = now
                # EHOSTUNREACH while no neighbour answers: that probe is simply lost.
                with contextlib.suppress(OSError):
                    self._send_data(data_sock, seq)
                rec.arp_rounds.append(now)
                with contextlib.suppress(OSError):
                    pkt.send(arps[(len(rec.arp_rounds) - 1) % len(arps)])
                # Fixed schedule, not "now + interval": a late tick does not shift the rest.
                next_t += INTERVAL
                if next_t < now:
                    next_t = now + INTERVAL
            ready, _, _ = select.select([pkt, data_sock], [], [],
                                        max(0.0, next_t - time.monotonic()))
            if data_sock in ready:
                while True:  # replies are read from the packet socket; just drain
                    try:
                        data_sock.recv(2048)
                    except BlockingIOError:
                        break
            if pkt in ready:
                self._read(pkt)
        data_sock.close()
        pkt.close()

    def _read(self, pkt: socket.socket) -> None:
        while True:
            try:
                data, addr = pkt.recvfrom(2048)
            except BlockingIOError:
                return
            t = time.monotonic()
            if addr[2] == socket.PACKET_OUTGOING or len(data) < 42:
                continue
            etype = int.from_bytes(data[12:14], "big")
            if etype == self.DATA_ETHERTYPE:
                seq = self._data_reply(data)
                if seq is not None:
                    self.rec.replies.append((t, self._unwrap(seq), _mac(data[6:12])))
                    continue
            got = self._ctl_reply(data)
            if got is None:
                self._other(pkt, data)
            else:
                # Round: the latest one sent from the address this reply answers.
                residue, mac = got
                k = len(ARP_SENDERS)
                last = len(self.rec.arp_rounds) - 1
                if last >= 0:
                    rnd = last - ((last - residue) % k)
                    if rnd >= 0:
                        self.rec.arp_replies.append((t, rnd, mac))


@dataclass
class Trial:
    scenario: str
    owner: str
    new_owner: str | None
    lost: int
    outage: float  # s, longest run of lost echoes x interval
    arp_gap: float  # s, longest stretch with no ARP answer
    takeover: float | None  # s, fault -> first ARP answer from another MAC
    split_rounds: int  # longest run of ARP rounds answered by >1 MAC
    record: Record
    t_fault: float
    # Overlaps: ARP/NDP rounds answered by more than one MAC (a single round counts).
    overlap_rounds: int = 0
    # Moves of the answer: how often the set of answering MACs changed from one single MAC to
    # another single MAC across rounds (gaps ignored): 1 = one takeover, 2 = there and back.
    moves: int = 0
    # Answers from the faulted owner's MAC to rounds sent after the takeover (a frozen speaker
    # that wakes and answers stale questions shows up here).
    late_answers: int = 0


def analyse(scenario: str, owner: str, owner_mac: str, rec: Record, t_fault: float,
            lab: Lab) -> Trial:
    got = {seq for _, seq, _ in rec.replies}
    seqs = sorted(s for s, t in rec.sent.items() if t <= rec.sent[max(rec.sent)] - 0.2)
    run = longest = lost = 0
    for s in seqs:
        if s in got:
            run = 0
        else:
            lost += 1
            run += 1
            longest = max(longest, run)
    # ARP: per round, the set of MACs answering.
    by_round: dict[int, set[str]] = {}
    for _, rnd, mac in rec.arp_replies:
        by_round.setdefault(rnd, set()).add(mac)
    nrounds = len(rec.arp_rounds)
    gap = gap_best = split = split_best = 0
    for r in range(1, nrounds - 5):  # the last rounds may still have replies in flight
        macs = by_round.get(r, set())
        gap = 0 if macs else gap + 1
        gap_best = max(gap_best, gap)
        split = split + 1 if len(macs) > 1 else 0
        split_best = max(split_best, split)
    takeover = next((t - t_fault for t, _, mac in sorted(rec.arp_replies)
                     if t > t_fault and mac != owner_mac), None)
    new_mac = next((mac for t, _, mac in sorted(rec.arp_replies, reverse=True)), None)
    overlaps, moves, late = count_overlaps(by_round, nrounds, owner_mac, rec, t_fault, takeover)
    return Trial(scenario, owner, lab.node_by_mac(new_mac) if new_mac else None, lost,
                 longest * INTERVAL, gap_best * INTERVAL, takeover, split_best, rec, t_fault,
                 overlaps, moves, late)


def count_overlaps(by_round: dict[int, set[str]], nrounds: int, owner_mac: str, rec: Record,
                   t_fault: float, takeover: float | None) -> tuple[int, int, int]:
    """(rounds answered by two or more MACs, moves of the single answering MAC, answers of
    ``owner_mac`` to rounds sent after the takeover). Every round counts, even a lone one:
    two MACs answering one request means a client may have cached either."""
    overlaps = sum(1 for r in range(nrounds) if len(by_round.get(r, ())) > 1)
    moves, current = 0, None
    for r in range(nrounds):
        macs = by_round.get(r, set())
        if len(macs) == 1:
            mac = next(iter(macs))
            if current is not None and mac != current:
                moves += 1
            current = mac
    late = 0
    if takeover is not None:
        t_take = t_fault + takeover
        late = sum(1 for r in range(nrounds) if rec.arp_rounds[r] > t_take
                   and owner_mac in by_round.get(r, ()))
    return overlaps, moves, late


def speaker_group_signal(lab: Lab, node: str, sig: int) -> None:
    """``sig`` to the speaker's process group: the speaker and its heartbeat process (the lab
    starts each speaker in a session of its own, so its PID is the group's id) — how a frozen
    container or a stalled machine stops both."""
    proc = lab.procs[f"speaker-{node}"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, sig)


def log_events(lab: Lab, event: str, skip_empty_gain: bool = False) -> int:
    """How many ``event`` lines all speakers' logs hold (``l2_ownership`` lines that gain no
    VIP are not takeovers and are skipped with ``skip_empty_gain``)."""
    n = 0
    for node in lab.nodes:
        path = lab.dir / f"speaker-{node.name}.log"
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            for line in f:
                if f"event='{event}'" in line and not (skip_empty_gain and "gained=[]" in line):
                    n += 1
    return n


def current_owner(lab: Lab, vip: str) -> tuple[str, str]:
    macs = wait_until(lambda: (m := lab.who_has(vip, timeout=0.2)) and len(m) == 1 and m, 20,
                      what="a single owner")
    mac = next(iter(macs))
    node = lab.node_by_mac(mac)
    assert node is not None
    return node, mac




# ---- lab cluster: faults to a node's speaker container (lab.nodeagent runs the pods) --------

# The lab's node agent reports a container as ``portico-lab://<main PID>``; the launcher execs
# into the command in a session of its own, so that PID is also the container's process group:
# every process of the container (the speaker and, for Portico, its heartbeat child) is in it.
CONTAINER_ID_PREFIX = "portico-lab://"


def container_pid(pod: dict[str, Any], container: str) -> int | None:
    """Main PID (= process group) of the running ``container`` of ``pod``, from its status."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") != container or "running" not in (cs.get("state") or {}):
            continue
        cid = str(cs.get("containerID") or "")
        if cid.startswith(CONTAINER_ID_PREFIX) and cid[len(CONTAINER_ID_PREFIX):].isdigit():
            return int(cid[len(CONTAINER_ID_PREFIX):])
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in st.get("conditions") or [])


@dataclass
class SpeakerPods:
    """The speaker DaemonSet's pods of one load balancer in the lab cluster (Portico's or
    MetalLB's), found by namespace, node and container name; ``api(method, path)`` is the
    control plane's admin request (``ControlPlane.api``)."""

    api: Callable[[str, str], Any]
    namespace: str
    container: str = "speaker"

    def pod(self, node: str) -> dict[str, Any] | None:
        """The node's live (not terminating) pod that has the speaker container."""
        items = self.api("GET", f"/api/v1/namespaces/{self.namespace}/pods"
                                f"?fieldSelector=spec.nodeName%3D{node}")["items"]
        for pod in items:
            names = {c.get("name") for c in (pod.get("spec") or {}).get("containers") or []}
            if self.container in names and not pod["metadata"].get("deletionTimestamp"):
                return dict(pod)
        return None

    def pid(self, node: str) -> int:
        pod = self.pod(node)
        pid = container_pid(pod, self.container) if pod else None
        if pid is None:
            raise RuntimeError(f"no running {self.container} container on {node}")
        return pid

    @staticmethod
    def signal_group(pid: int, sig: int) -> None:
        """``sig`` to every process of the container whose main PID is ``pid`` (its process
        group), after checking that ``pid`` still leads its group (not a reused PID)."""
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) != pid:
                raise RuntimeError(f"PID {pid} no longer leads its container's group")
            os.killpg(pid, sig)

    def signal(self, node: str, sig: int) -> int:
        pid = self.pid(node)
        self.signal_group(pid, sig)
        return pid

    def delete(self, node: str) -> str:
        """Delete the node's speaker pod with its default grace period (``kubectl delete
        pod``: the node agent sends SIGTERM, then SIGKILL after the grace period; the
        DaemonSet makes a new pod); returns the deleted pod's uid."""
        pod = self.pod(node)
        if pod is None:
            raise RuntimeError(f"no {self.container} pod on {node}")
        meta = pod["metadata"]
        self.api("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{meta['name']}")
        return str(meta["uid"])

    def wait_ready(self, node: str, timeout: float, not_pid: int | None = None,
                   not_uid: str | None = None) -> float:
        """Wait until the node's speaker pod is Running and Ready with a container other
        than ``not_pid`` (restarted) in a pod other than ``not_uid`` (recreated); seconds
        waited."""
        t0 = time.monotonic()

        def ready() -> bool:
            pod = self.pod(node)
            if pod is None or not pod_ready(pod) or pod["metadata"]["uid"] == not_uid:
                return False
            pid = container_pid(pod, self.container)
            return pid is not None and pid != not_pid

        wait_until(ready, timeout, interval=0.2,
                   what=f"{self.namespace} {self.container} pod on {node} Running and Ready")
        return time.monotonic() - t0


# ---- TCP SYN data path (the lab cluster: kube-proxy forwards TCP to the Service's ports only,
# so nothing answers an ICMP echo to a VIP there, as on a real cluster) ---------------------

SYN_PORTS = (1024, 30000)  # source ports cycle through 1024..30999: 300 s before a reuse


def _pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The pseudo-header a TCP checksum covers: IPv4's (RFC 793) for 4-byte addresses,
    IPv6's (RFC 8200 section 8.1) for 16-byte ones."""
    if len(src) == 16:
        return src + dst + struct.pack("!I3xB", length, proto)
    return src + dst + struct.pack("!BBH", 0, proto, length)


def _syn(src: bytes, dst: bytes, sport: int, dport: int, isn: int) -> bytes:
    # 20-byte TCP header, SYN only, window 64240; checksum over the pseudo-header of the
    # addresses' family (raw IPv6 sockets leave a TCP checksum as it is, so it is ours).
    hdr = struct.pack("!HHIIBBHHH", sport, dport, isn, 0, 0x50, 0x02, 64240, 0, 0)
    pseudo = _pseudo_header(src, dst, socket.IPPROTO_TCP, len(hdr))
    return hdr[:16] + struct.pack("!H", _checksum(pseudo + hdr)) + hdr[18:]


def l4_of(data: bytes) -> tuple[int, bytes, int] | None:
    """(protocol, source address, offset of the layer-4 header) of an Ethernet frame carrying
    IPv4 or IPv6 (no IPv6 extension headers: a SYN-ACK has none), else None."""
    if len(data) < 34:
        return None
    etype = int.from_bytes(data[12:14], "big")
    if etype == 0x0800:
        return data[23], bytes(data[26:30]), 14 + (data[14] & 0x0F) * 4
    if etype == 0x86DD and len(data) >= 54:
        return data[20], bytes(data[22:38]), 54
    return None


class SynProber(Prober):
    """Like ``Prober``, but the data path is a TCP SYN to ``vip:port`` every 10 ms (from the
    client's kernel route and ARP cache, like the echo), and a reply is the SYN-ACK (its source
    MAC names the node that forwarded it). Each probe's sequence number is the SYN's initial
    sequence number, read back from the SYN-ACK's acknowledgement; each probe uses a new source
    port, so every probe is a new connection to kube-proxy's conntrack. The client's kernel
    answers each SYN-ACK with a RST (no socket), which closes the half-open connection at the
    backend. ARP rounds as in ``Prober``; ``Syn6Prober`` is the same over IPv6 with NDP
    rounds (the SYN code here serves both families: it follows the VIP's)."""

    SEQ_BITS = 32  # the SYN's initial sequence number carries the probe number

    def __init__(self, ns: str, iface: str, vip: str, src: str, port: int = 80) -> None:
        super().__init__(ns, iface, vip)
        self.src, self.port = src, port
        self.src_b = ipaddress.ip_address(src).packed
        if len(self.src_b) != len(self.vip_b):
            raise ValueError(f"source {src} and VIP {vip} are of different families")

    def _sport(self, seq: int) -> int:
        return SYN_PORTS[0] + seq % SYN_PORTS[1]

    def _data_socket(self) -> socket.socket:
        family = socket.AF_INET6 if len(self.vip_b) == 16 else socket.AF_INET
        tcp = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
        tcp.bind((self.src, 0))
        tcp.setblocking(False)
        return tcp

    def _send_data(self, sock: socket.socket, seq: int) -> None:
        sock.sendto(_syn(self.src_b, self.vip_b, self._sport(seq), self.port, seq),
                    (self.vip, 0))

    def _data_reply(self, data: bytes) -> int | None:
        """A SYN-ACK from vip:port to this probe's source port: its sequence number."""
        l4 = l4_of(data)
        if l4 is None:
            return None
        proto, src, off = l4
        if (proto == socket.IPPROTO_TCP and len(data) >= off + 20 and src == self.vip_b
                and int.from_bytes(data[off:off + 2], "big") == self.port
                and data[off + 13] & 0x12 == 0x12):  # SYN-ACK
            seq = (int.from_bytes(data[off + 8:off + 12], "big") - 1) & 0xFFFFFFFF
            if self._sport(seq) == int.from_bytes(data[off + 2:off + 4], "big"):
                return seq
        return None


# ---- IPv6: ICMPv6 echo data path and Neighbor Solicitation rounds ----------------------------


def _echo6(seq: int) -> bytes:
    # The kernel fills in the ICMPv6 checksum on raw IPPROTO_ICMPV6 sockets.
    return struct.pack("!BBHHH", 128, 0, 0, ICMP_ID, seq & 0xFFFF) + b"portico-l2-probe"


class _NdpRounds(Prober):
    """The IPv6 control path, shared by ``NdpProber`` and ``Syn6Prober``: a Neighbor
    Solicitation for the VIP every 10 ms from ``NS_SENDERS`` in turn (the NA is addressed to
    the asking IP, which names its round), and IPv6 frames as the data path's replies."""

    DATA_ETHERTYPE = 0x86DD

    def _requests(self) -> list[bytes]:
        from lab.probe import neighbor_solicitation

        return [neighbor_solicitation(PROBE_MAC, ip, self.vip) for ip in NS_SENDERS]

    def _ctl_reply(self, data: bytes) -> tuple[int, str] | None:
        return na_reply(data, self.vip_b)

    def _other(self, pkt: socket.socket, data: bytes) -> None:
        # A node whose NA comes from its kernel (MetalLB answers through an ICMPv6 socket,
        # Portico builds the frame itself) must first resolve the asking address: the
        # made-up senders answer like any IPv6 host, from PROBE_MAC (so the client's own
        # kernel and neighbour cache stay out of it).
        answer = answer_ns_for_senders(data)
        if answer is not None:
            with contextlib.suppress(OSError):
                pkt.send(answer)


def na_reply(data: bytes, vip_b: bytes) -> tuple[int, str] | None:
    """(sender index, answering MAC) if ``data`` is a Neighbor Advertisement for ``vip_b``
    sent to one of ``NS_SENDERS`` (the round's asking address)."""
    if (len(data) >= 78 and int.from_bytes(data[12:14], "big") == 0x86DD
            and data[20] == 58 and data[54] == 136 and data[62:78] == vip_b):
        residue = NS_SENDER_INDEX.get(bytes(data[38:54]))
        if residue is not None:
            return residue, _mac(data[6:12])
    return None


# Addresses the probes ask from (NS_SENDERS, and lab.topology's PROBE_IP6_A for Lab.who_has):
# a node that resolves one of them gets PROBE_MAC.
_MADE_UP6 = frozenset([*NS_SENDER_INDEX, ipaddress.IPv6Address(PROBE_IP6_A).packed])


def neighbor_advertisement(src_mac: str, target: bytes, dst_mac: bytes, dst: bytes) -> bytes:
    """A solicited NA (flags S and O) for ``target`` from ``src_mac`` to ``dst`` /
    ``dst_mac``, with the target link-layer address option (RFC 4861 section 4.4)."""
    mac = bytes.fromhex(src_mac.replace(":", ""))
    icmp = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + target + bytes((2, 1)) + mac
    csum = _checksum(_pseudo_header(target, dst, 58, len(icmp)) + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + target + dst
    return dst_mac + mac + b"\x86\xdd" + ip6 + icmp


def answer_ns_for_senders(data: bytes, senders: frozenset[bytes] = _MADE_UP6,
                          src_mac: str = PROBE_MAC) -> bytes | None:
    """The NA that answers ``data`` if it is a Neighbor Solicitation (not DAD) for one of
    ``senders``; addressed to the soliciting MAC (the frame's source) and address."""
    if (len(data) >= 78 and int.from_bytes(data[12:14], "big") == 0x86DD
            and data[20] == 58 and data[54] == 135 and bytes(data[62:78]) in senders
            and any(data[22:38])):
        return neighbor_advertisement(src_mac, bytes(data[62:78]), bytes(data[6:12]),
                                      bytes(data[22:38]))
    return None


class NdpProber(_NdpRounds):
    """``Prober`` for an IPv6 VIP: ICMPv6 echo through the client kernel (its neighbour cache
    decides where packets go) and NDP rounds (``_NdpRounds``)."""

    def _data_socket(self) -> socket.socket:
        icmp = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        icmp.setblocking(False)
        return icmp

    def _send_data(self, sock: socket.socket, seq: int) -> None:
        sock.sendto(_echo6(seq), (self.vip, 0))

    def _data_reply(self, data: bytes) -> int | None:
        if (len(data) >= 62 and data[20] == 58 and data[54] == 129
                and data[22:38] == self.vip_b
                and int.from_bytes(data[58:60], "big") == ICMP_ID):
            return int.from_bytes(data[60:62], "big")
        return None


class Syn6Prober(_NdpRounds, SynProber):
    """``SynProber`` for an IPv6 VIP (the lab cluster: kube-proxy answers TCP to the
    Service's ports only): a TCP SYN to ``[vip]:port`` every 10 ms through the client kernel
    (its neighbour cache decides where it goes), the SYN-ACK attributed to a node by its
    source MAC, and NDP rounds (``_NdpRounds``)."""
