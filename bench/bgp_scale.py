"""BGP scale: time until FRR has all of N VIPs installed (kernel), and the withdraw time.

Run as root:  .venv/bin/python bench/bgp_scale.py [--sizes 1000 10000] [--speakers 1 2]
              [--family 4|6] [--repeat N]

Default: the issue's case (1,000 and 10,000 IPv4 VIPs), with 1 and with 2 speakers (ECMP).
Target: 10,000 in < 10 s.

Topology: lab.frr.BgpLab (namespaces pb-*): one FRR bgpd/zebra router and one or two
"speakers". Each speaker is a real process in its node namespace (lab/bgp_runner.py:
the speaker's BgpAnnouncer, its exabgp child and the API relay, as in ``portico speaker``)
fed a pickled ClusterSnapshot on SIGHUP; the informer side of the speaker is not part of this
measurement. IPv4 VIPs come from the benchmarking range 198.18.0.0/15, IPv6 from
2001:db8:ffff::/64.

Measured from the moment the new snapshot is handed to the speakers (sessions already
established) until the router's kernel holds every prefix ("installed"), and until every
prefix has every speaker as a next hop ("ECMP-complete"); then from an empty snapshot until
the kernel holds none. The router's kernel table is polled with a period of 5 % of the time
elapsed (10 ms ... 0.5 s): the error is a few % of the figure while polling, which dumps up to
10,000 routes each time, costs the 2-core machine little (its CPU is printed as "poll").

Per phase the CPU seconds of every process involved are printed (speaker = announcer process,
exabgp, relay, bgpd, zebra, poll = this process and its `ip` children), to show where the time
goes. Also measured: Service delete -> withdrawn at the router, and speaker SIGTERM ->
withdrawn.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pickle
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import cpu_seconds
from lab.bgp_kit import (
    EXABGP,
    NODE_ASN,
    REPO,
    ROUTER_ASN,
    adv,
    children,
    node,
    peer,
    pool,
    snapshot,
    svc,
)
from lab.frr import BgpLab, FrrRouter, RouterNeighbor, bgp_lab
from lab.wait import wait_until
from speaker.core.snapshot import ClusterSnapshot

MAX_WAIT_S = 120.0  # bounded: a run that has not converged by then is reported as failed
POLL_FRACTION = 0.05  # poll period = 5 % of the elapsed time ...
POLL_MIN_S, POLL_MAX_S = 0.01, 0.5  # ... within these bounds


def vips(n: int, family: int) -> list[str]:
    base = ipaddress.ip_address("198.18.0.1" if family == 4 else "2001:db8:ffff::1")
    return [str(base + i) for i in range(n)]


def self_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the `ip` polls, once reaped
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Phase:
    first: float  # s until every prefix is present (or absent, for a withdraw)
    complete: float  # s until every prefix has every speaker as next hop
    cpu: dict[str, float]
    polls: int


class Bench:
    def __init__(self, lab: BgpLab, work: Path, family: int, speakers: int,
                 exabgp: str = EXABGP) -> None:
        self.lab, self.work, self.family, self.speakers = lab, work, family, speakers
        self.exabgp = exabgp
        raddr = lab.ROUTER_V4 if family == 4 else lab.ROUTER_V6
        self.raddr = raddr
        nbrs = [RouterNeighbor(lab.node_v4(i) if family == 4 else lab.node_v6(i), NODE_ASN)
                for i in range(1, speakers + 1)]
        self.router = FrrRouter(lab.router, ROUTER_ASN, lab.ROUTER_V4, nbrs,
                                workdir=work / "frr")
        self.common = dict(
            nodes=[node(f"n{i}", lab.node_v4(i), lab.node_v6(i))
                   for i in range(1, speakers + 1)],
            pools=[pool("bench", "198.18.0.0/15", "2001:db8:ffff::/64")],
            advs=[adv("all")], peers=[peer("r", raddr)])
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def snap(self, services: list[object] | None = None) -> ClusterSnapshot:
        return snapshot(services=services or [], **self.common)  # type: ignore[arg-type]

    def snap_path(self, i: int) -> Path:
        return self.work / f"snap-{i}.pickle"

    def start_speaker(self, i: int) -> None:
        self.snap_path(i).write_bytes(pickle.dumps(self.snap()))
        log = open(self.work / f"speaker-{i}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[i] = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.node(i), sys.executable, "-m",
             "lab.bgp_runner", f"n{i}", str(self.snap_path(i)), self.exabgp,
             str(self.work / f"state-{i}"), "warning"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.router.start()
        for i in range(1, self.speakers + 1):
            self.start_speaker(i)
        want = {n.address: "Established" for n in self.router.neighbors}
        wait_until(lambda: self.router.neighbor_states() == want, 30, 0.1)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.router.stop()

    def push(self, snap: ClusterSnapshot) -> None:
        """Write every speaker's snapshot first, then signal them all (timing starts here)."""
        data = pickle.dumps(snap)
        for i in self.procs:
            self.snap_path(i).write_bytes(data)

    def signal_all(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGHUP)

    def pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"speaker": [], "exabgp": [], "relay": []}
        for p in self.procs.values():
            out["speaker"].append(p.pid)
            for pid, comm in children(p.pid):
                out["exabgp" if comm == "exabgp" else "relay"].append(pid)
        for d, pid in self.router.pids().items():
            out[d] = [pid]
        return out

    def cpu(self, pids: dict[str, list[int]]) -> dict[str, float]:
        c = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        c["poll"] = self_cpu()
        return c

    def phase(self, snap: ClusterSnapshot, done: Callable[[dict[int, int]], bool],
              complete: Callable[[dict[int, int]], bool]) -> Phase:
        self.push(snap)
        pids = self.pids()
        before = self.cpu(pids)
        t0 = time.monotonic()
        self.signal_all()
        first = None
        polls = 0
        while True:
            hist = self.router.kernel_nexthop_histogram(self.family)
            polls += 1
            now = time.monotonic() - t0
            if first is None and done(hist):
                first = now
            if first is not None and complete(hist):
                break
            if now > MAX_WAIT_S:
                raise RuntimeError(f"not converged after {MAX_WAIT_S}s: {hist}")
            time.sleep(min(POLL_MAX_S, max(POLL_MIN_S, POLL_FRACTION * now)))
        after = self.cpu(pids)
        return Phase(first, now, {k: after[k] - before[k] for k in after}, polls)

    def run_size(self, n: int) -> tuple[Phase, Phase]:
        k = self.speakers
        full = self.snap([svc(f"s{j}", ip) for j, ip in enumerate(vips(n, self.family))])
        ann = self.phase(full, lambda h: sum(h.values()) >= n,
                         lambda h: sum(v for hops, v in h.items() if hops >= k) >= n)
        wd = self.phase(self.snap(), lambda h: not h, lambda h: not h)
        return ann, wd

    def latencies(self) -> tuple[float, float]:
        plen = 32 if self.family == 4 else 128
        ip = vips(1, self.family)[0]
        prefix = f"{ip}/{plen}"

        def gws() -> list[str]:
            return self.router.kernel_routes(self.family).get(prefix, [])

        one = self.snap([svc("one", ip)])
        self.push(one)
        self.signal_all()
        wait_until(lambda: len(gws()) == self.speakers, 30)
        self.push(self.snap())
        t0 = time.monotonic()
        self.signal_all()
        wait_until(lambda: not gws(), 30, 0.005)
        delete = time.monotonic() - t0
        self.push(one)
        self.signal_all()
        wait_until(lambda: len(gws()) == self.speakers, 30)
        t0 = time.monotonic()
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        wait_until(lambda: not gws(), 30, 0.005)
        term = time.monotonic() - t0
        for p in self.procs.values():
            p.wait(30)
        return delete, term


def fmt_cpu(cpu: dict[str, float]) -> str:
    order = ["speaker", "exabgp", "relay", "bgpd", "zebra", "poll"]
    return " ".join(f"{k}={cpu.get(k, 0.0):.2f}" for k in order)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--speakers", type=int, nargs="+", choices=[1, 2], default=[1, 2])
    ap.add_argument("--family", type=int, choices=[4, 6], default=4)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", default="/tmp/pb-bench")
    ap.add_argument("--exabgp", default=EXABGP,
                    help="exabgp executable (e.g. a wrapper running it under cProfile)")
    ap.add_argument("--nlri-per-command", type=int, default=None,
                    help="A/B: override speaker.core.bgp_exabgp.NLRI_PER_COMMAND")
    ap.add_argument("--reactor-speed", default=None,
                    help="A/B: override speaker.bgp.process.REACTOR_SPEED")
    ap.add_argument("--idle", type=float, default=0.0,
                    help="also print exabgp's CPU share over this many idle seconds")
    args = ap.parse_args()
    work = Path(args.work)
    # read by lab/bgp_runner.py (the speakers inherit this environment)
    if args.nlri_per_command:
        os.environ["PORTICO_BENCH_NLRI_PER_COMMAND"] = str(args.nlri_per_command)
    if args.reactor_speed:
        os.environ["PORTICO_BENCH_REACTOR_SPEED"] = args.reactor_speed
    print(f"# IPv{args.family}, FRR 8.4 bgpd+zebra, exabgp 5.0.15, {os.cpu_count()} CPUs; "
          "CPU seconds per phase: " + fmt_cpu({}).replace("=0.00", ""), flush=True)
    with bgp_lab("pb-", nodes=2) as lab:
        for k in args.speakers:
            b = Bench(lab, work / f"s{k}", args.family, k, args.exabgp)
            try:
                b.start()
                if args.idle:
                    pids = b.pids()
                    c0 = b.cpu(pids)
                    time.sleep(args.idle)
                    c1 = b.cpu(pids)
                    print(f"speakers={k}: idle, sessions up: exabgp CPU "
                          f"{100 * (c1['exabgp'] - c0['exabgp']) / (k * args.idle):.1f} % "
                          "of a core per speaker", flush=True)
                for n in args.sizes:
                    runs = [b.run_size(n) for _ in range(args.repeat)]
                    for ann, wd in runs:
                        print(f"speakers={k} vips={n:>6}: installed {ann.first:6.2f}s "
                              f"ECMP-complete {ann.complete:6.2f}s ({ann.polls} polls) | "
                              f"cpu {fmt_cpu(ann.cpu)}", flush=True)
                        print(f"speakers={k} vips={n:>6}: withdrawn {wd.complete:6.2f}s "
                              f"({wd.polls} polls) | cpu {fmt_cpu(wd.cpu)}", flush=True)
                    if args.repeat > 1:
                        med = statistics.median
                        print(f"speakers={k} vips={n:>6}: median of {args.repeat}: "
                              f"installed {med(a.complete for a, _ in runs):.2f}s, "
                              f"withdrawn {med(w.complete for _, w in runs):.2f}s", flush=True)
                delete, term = b.latencies()
                print(f"speakers={k}: Service delete -> withdrawn at router {delete:.3f}s; "
                      f"speaker SIGTERM -> withdrawn {term:.3f}s", flush=True)
            finally:
                b.stop()


if __name__ == "__main__":
    main()
