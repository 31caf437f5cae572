"""Layer-2 failover as a client sees it: outage per scenario over many trials.

    sudo .venv/bin/python -m bench.l2_failover [--trials 20] [--png PATH]

Builds the namespace lab (lab.topology: 3 nodes, router, client, API emulator, controller if
present, one real speaker per node), gives a Service a VIP, and runs a 100 Hz prober in the
client namespace:

* data path: ICMP echo to the VIP through the client kernel (so the client's real ARP cache
  decides where packets go — exactly what an application sees); each reply is attributed to
  the node by the source MAC of the reply frame (an AF_PACKET socket on the client's NIC);
* control path: an ARP "who-has VIP" every 10 ms from a made-up sender (so the client's own
  ARP cache is never refreshed by it), recording every MAC that answers — two MACs answering
  the same round is a split brain.

Scenarios, each ``--trials`` times against the current owner of the VIP:
  (a) kill  — the owner's speaker gets SIGKILL (the node itself stays up)
  (b) cut   — the owner's cable is pulled at the switch (node unreachable)
  (c) term  — the owner's speaker gets SIGTERM (graceful hand-over)
after each trial the speaker is restarted / the cable re-plugged and the VIP returns.

Printed per scenario: lost probes and data-path outage (longest run of lost echo replies x
10 ms) as p50/p99/max; "arp gap" (longest time no MAC answered ARP for the VIP); takeover
time (fault -> first ARP answer from the new owner); split-brain rounds (more than one MAC
answering one ARP round; a run longer than one probe interval counts as split brain).
Targets: (a), (b) p99 outage < 1 s; (c) zero lost probes; no split brain anywhere.
Note (a): the killed speaker's node still delivers traffic sent to its MAC, so the data path
often loses nothing; the ARP gap shows the takeover itself.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import netns
from lab.topology import PROBE_MAC, Lab, wait_until

INTERVAL = 0.01  # 100 Hz probes
VIP = "192.0.2.210"
SETTLE = 0.6  # s of steady probing before a fault
OBSERVE = 3.0  # s after the fault that a trial records
ICMP_ID = os.getpid() & 0xFFFF
# Unassigned addresses of segment A (outside the VIP pool .192/27 and every host).
ARP_SENDERS = [f"192.0.2.{i}" for i in range(240, 248)]
ARP_SENDER_INDEX = {ipaddress.IPv4Address(a).packed: i for i, a in enumerate(ARP_SENDERS)}


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

    def __init__(self, ns: str, iface: str, vip: str) -> None:
        self.ns, self.iface, self.vip = ns, iface, vip
        self.vip_b = ipaddress.IPv4Address(vip).packed
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

    def _run(self) -> None:
        from lab.probe import arp_request

        icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        icmp.setblocking(False)
        pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        pkt.bind((self.iface, 0x0003))
        pkt.setblocking(False)
        # The sender address cycles through ARP_SENDERS so that each reply names its round
        # (replies are addressed to the asking IP): a late answer is never mistaken for an
        # answer to the next round.
        arps = [arp_request(PROBE_MAC, ip, self.vip) for ip in ARP_SENDERS]
        self._ready.set()
        seq = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_t:
                rec = self.rec
                seq += 1
                rec.sent[seq] = now
                # EHOSTUNREACH while no neighbour answers: that probe is simply lost.
                with contextlib.suppress(OSError):
                    icmp.sendto(_echo(seq), (self.vip, 0))
                rec.arp_rounds.append(now)
                with contextlib.suppress(OSError):
                    pkt.send(arps[(len(rec.arp_rounds) - 1) % len(arps)])
                # Fixed schedule, not "now + interval": a late tick does not shift the rest.
                next_t += INTERVAL
                if next_t < now:
                    next_t = now + INTERVAL
            ready, _, _ = select.select([pkt, icmp], [], [], max(0.0, next_t - time.monotonic()))
            if icmp in ready:
                while True:  # replies are read from the packet socket; just drain
                    try:
                        icmp.recv(2048)
                    except BlockingIOError:
                        break
            if pkt in ready:
                self._read(pkt)
        icmp.close()
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
            if etype == 0x0800 and data[23] == 1:  # IPv4 ICMP
                ihl = (data[14] & 0x0F) * 4
                icmp_off = 14 + ihl
                if (data[26:30] == self.vip_b and data[icmp_off] == 0
                        and int.from_bytes(data[icmp_off + 4:icmp_off + 6], "big") == ICMP_ID):
                    seq = int.from_bytes(data[icmp_off + 6:icmp_off + 8], "big")
                    self.rec.replies.append((t, seq, _mac(data[6:12])))
            elif (etype == 0x0806 and int.from_bytes(data[20:22], "big") == 2
                  and data[28:32] == self.vip_b and _mac(data[32:38]) == PROBE_MAC):
                # Round: the latest one sent from the address this reply answers.
                k = len(ARP_SENDERS)
                residue = ARP_SENDER_INDEX.get(bytes(data[38:42]))
                last = len(self.rec.arp_rounds) - 1
                if residue is not None and last >= 0:
                    rnd = last - ((last - residue) % k)
                    if rnd >= 0:
                        self.rec.arp_replies.append((t, rnd, _mac(data[22:28])))


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
    return Trial(scenario, owner, lab.node_by_mac(new_mac) if new_mac else None, lost,
                 longest * INTERVAL, gap_best * INTERVAL, takeover, split_best, rec, t_fault)


def current_owner(lab: Lab, vip: str) -> tuple[str, str]:
    macs = wait_until(lambda: (m := lab.who_has(vip, timeout=0.2)) and len(m) == 1 and m, 20,
                      what="a single owner")
    mac = next(iter(macs))
    node = lab.node_by_mac(mac)
    assert node is not None
    return node, mac


def run_trial(lab: Lab, prober: Prober, scenario: str) -> Trial:
    owner, owner_mac = current_owner(lab, VIP)
    time.sleep(SETTLE)
    prober.reset()
    time.sleep(SETTLE)
    t_fault = time.monotonic()
    if scenario == "kill":
        lab.stop_proc(f"speaker-{owner}", signal.SIGKILL)
    elif scenario == "cut":
        lab.cut_link(owner)
    elif scenario == "term":
        threading.Thread(target=lab.stop_proc, args=(f"speaker-{owner}", signal.SIGTERM),
                         daemon=True).start()
    time.sleep(OBSERVE)
    rec = prober.reset()
    trial = analyse(scenario, owner, owner_mac, rec, t_fault, lab)
    # Restore, and wait until the VIP is back with its hash winner (the restarted node).
    if scenario == "cut":
        lab.cut_link(owner, up=True)
    else:
        lab.stop_proc(f"speaker-{owner}", signal.SIGKILL, wait=5)
        lab.start_speaker(owner)
    wait_until(lambda: lab.who_has(VIP, timeout=0.2) == {owner_mac}, 20,
               what="VIP back on the original owner")
    return trial


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def timeline_png(trial: Trial, lab: Lab, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    names = sorted({lab.node_by_mac(m) or m for _, _, m in trial.record.replies}
                   | {lab.node_by_mac(m) or m for _, _, m in trial.record.arp_replies})
    ypos = {n: i for i, n in enumerate(names)}
    for kind, rows, marker, dy in (("ICMP echo reply", trial.record.replies, "|", 0.1),
                                   ("ARP reply", trial.record.arp_replies, ".", -0.1)):
        xs = [t - trial.t_fault for t, _, _ in rows]
        ys = [ypos[lab.node_by_mac(m) or m] + dy for _, _, m in rows]
        ax.scatter(xs, ys, marker=marker, s=30, label=kind)
    lost_x = [t - trial.t_fault for s, t in trial.record.sent.items()
              if s not in {q for _, q, _ in trial.record.replies}]
    if lost_x:
        ax.scatter(lost_x, [-0.8] * len(lost_x), marker="x", color="red", s=12,
                   label="lost probe")
    ax.axvline(0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks([*ypos.values(), -0.8], [*ypos, "lost"])
    ax.set_xlabel(f"seconds since fault ({trial.scenario}: owner {trial.owner})")
    ax.set_title(f"Portico L2 failover, 100 Hz probes per node MAC — scenario "
                 f"{trial.scenario}: outage {trial.outage * 1000:.0f} ms, "
                 f"takeover {(trial.takeover or float('nan')) * 1000:.0f} ms")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.l2_failover")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--scenarios", default="kill,cut,term")
    ap.add_argument("--png", default="/tmp/portico-bench/l2_failover_timeline.png")
    ap.add_argument("--png-scenario", default="cut")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.trials > 200:  # bounded load loop
        ap.error("--trials must be 1..200")
    reason = netns.available()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 2
    scenarios = [s for s in args.scenarios.split(",") if s]
    results: dict[str, list[Trial]] = {s: [] for s in scenarios}
    with Lab(nodes_count=3) as lab:
        lab.add_pool("a4", ["192.0.2.192/27"])
        lab.add_l2("seg-a", ipAddressPools=["a4"])
        lab.start_speakers()
        lab.wait_speakers_live()
        lab.add_service("bench", ips=[VIP])
        wait_until(lambda: lab.service_ips("bench") == [VIP], 20, what="VIP assigned")
        current_owner(lab, VIP)
        prober = Prober(lab.client, "pl-eth0", VIP)
        prober.start()
        try:
            for sc in scenarios:
                for i in range(args.trials):
                    tr = run_trial(lab, prober, sc)
                    results[sc].append(tr)
                    print(f"{sc:5} #{i + 1:2}: owner {tr.owner} -> {tr.new_owner}  "
                          f"lost {tr.lost:3}  outage {tr.outage * 1000:6.0f} ms  "
                          f"arp gap {tr.arp_gap * 1000:5.0f} ms  takeover "
                          f"{(tr.takeover or float('nan')) * 1000:6.0f} ms  "
                          f"split {tr.split_rounds}", flush=True)
        finally:
            prober.stop()
            print(f"lab logs: {lab.dir}", file=sys.stderr)
        print()
        print(f"{'scenario':10} {'n':>3} {'outage p50/p99/max (ms)':>26} {'lost max':>9} "
              f"{'arp gap p50/p99/max (ms)':>26} {'takeover p50/p99/max (ms)':>27} "
              f"{'split brain':>11}")
        ok = True
        for sc, trials in results.items():
            if not trials:
                continue
            out = [t.outage * 1000 for t in trials]
            gap = [t.arp_gap * 1000 for t in trials]
            tk = [t.takeover * 1000 for t in trials if t.takeover is not None]
            split = sum(1 for t in trials if t.split_rounds > 1)
            print(f"{sc:10} {len(trials):3} "
                  f"{pct(out, 50):8.0f}/{pct(out, 99):6.0f}/{max(out):6.0f}     "
                  f"{max(t.lost for t in trials):9} "
                  f"{pct(gap, 50):8.0f}/{pct(gap, 99):6.0f}/{max(gap):6.0f}     "
                  f"{pct(tk, 50):9.0f}/{pct(tk, 99):6.0f}/{max(tk, default=float('nan')):6.0f}"
                  f"     {split:>6} of {len(trials)}")
            if sc in ("kill", "cut") and pct(out, 99) >= 1000:
                ok = False
            if sc == "term" and max(t.lost for t in trials) > 0:
                ok = False
            if split:
                ok = False
        print("split brain: two MACs answering one ARP round for longer than one probe "
              "interval (10 ms) —", "never" if all(
                  t.split_rounds <= 1 for ts in results.values() for t in ts) else "SEEN")
        pick = results.get(args.png_scenario) or next(iter(results.values()))
        if pick:
            worst = max(pick, key=lambda t: t.outage)
            timeline_png(worst, lab, Path(args.png))
            print(f"timeline of one {worst.scenario} trial (worst outage): {args.png}")
        print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
