"""BGP scale: time until FRR has all of N VIPs installed (kernel), and the withdraw time.

Run as root:  .venv/bin/python bench/bgp_scale.py [--sizes 1000 10000] [--family 4|6]

Topology: lab.frr.BgpLab (namespaces pb-*), one FRR bgpd router, one or two speakers
(BgpAnnouncer driving exabgp inside node namespaces). IPv4 VIPs come from the benchmarking
range 198.18.0.0/15, IPv6 from 2001:db8:ffff::/64. Measured from the moment the speakers are
handed the snapshot (sessions already established) until the router's kernel holds every
prefix (with every speaker as next hop), then from an empty snapshot until none is left.
Also measures: Service delete -> withdrawn at the router, SIGTERM-style graceful stop ->
withdrawn, and a silent node death (hold time 3 s) -> healed. Target: 10,000 in < 10 s.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.frr import BgpLab, FrrRouter, RouterNeighbor, bgp_lab
from lb.logs import configure
from speaker.bgp.announcer import BgpAnnouncer
from tests.lab.bgp_helpers import (
    NODE_ASN,
    ROUTER_ASN,
    FakeEvents,
    FakeKube,
    adv,
    exabgp_wrapper,
    node,
    peer,
    pool,
    snapshot,
    svc,
    wait_for,
)

MAX_WAIT_S = 120.0  # bounded: a run that has not converged by then is reported as failed


def vips(n: int, family: int) -> list[str]:
    base = ipaddress.ip_address("198.18.0.1" if family == 4 else "2001:db8:ffff::1")
    return [str(base + i) for i in range(n)]


def run(lab: BgpLab, work: Path, sizes: list[int], family: int, speakers: int) -> None:
    nbrs = [RouterNeighbor(lab.node_v4(i) if family == 4 else lab.node_v6(i), NODE_ASN)
            for i in range(1, speakers + 1)]
    router = FrrRouter(lab.router, ROUTER_ASN, lab.ROUTER_V4, nbrs, workdir=work / "frr")
    router.start()
    anns: list[BgpAnnouncer] = []
    try:
        nodes = [node(f"n{i}", lab.node_v4(i), lab.node_v6(i)) for i in range(1, speakers + 1)]
        raddr = lab.ROUTER_V4 if family == 4 else lab.ROUTER_V6
        common = dict(nodes=nodes, pools=[pool("bench", "198.18.0.0/15",
                                               "2001:db8:ffff::/64")],
                      advs=[adv("all")], peers=[peer("r", raddr)])
        for i in range(1, speakers + 1):
            a = BgpAnnouncer(f"n{i}", FakeKube(), FakeEvents(),
                             exabgp_wrapper(lab.node(i), work), str(work / f"state-{i}"))
            anns.append(a)
            a.sync(snapshot(**common))  # type: ignore[arg-type]
        wait_for(lambda: all(a.session_states().get(raddr) == "up" for a in anns), 30)
        for n in sizes:
            services = [svc(f"s{k}", ip) for k, ip in enumerate(vips(n, family))]
            full = snapshot(services=services, **common)  # type: ignore[arg-type]
            t0 = time.monotonic()
            for a in anns:
                a.sync(full)
            wait_for(lambda n=n: router.kernel_route_count(family) >= n, MAX_WAIT_S, 0.1)
            t_first = time.monotonic() - t0
            # ... and every prefix has every speaker as a next hop (ECMP complete)
            wait_for(lambda n=n: sum(len(g) == speakers for g in
                                     router.kernel_routes(family).values()) >= n,
                     MAX_WAIT_S, 0.2)
            t_ann = time.monotonic() - t0
            t0 = time.monotonic()
            for a in anns:
                a.sync(snapshot(**common))  # type: ignore[arg-type]
            wait_for(lambda: router.kernel_route_count(family) == 0, MAX_WAIT_S, 0.1)
            t_wd = time.monotonic() - t0
            print(f"IPv{family} speakers={speakers} vips={n:>6}: all installed in {t_first:6.2f}s"
                  f" (all ECMP-complete {t_ann:6.2f}s)  all withdrawn in {t_wd:6.2f}s",
                  flush=True)
        # single-Service latencies
        one = [svc("one", vips(1, family)[0])]
        plen = 32 if family == 4 else 128
        prefix = f"{vips(1, family)[0]}/{plen}"
        for a in anns:
            a.sync(snapshot(services=one, **common))  # type: ignore[arg-type]
        wait_for(lambda: len(router.kernel_routes(family).get(prefix, [])) == speakers, 30)
        t0 = time.monotonic()
        for a in anns:
            a.sync(snapshot(**common))  # type: ignore[arg-type]
        wait_for(lambda: prefix not in router.kernel_routes(family), 30, 0.005)
        print(f"IPv{family} Service delete -> withdrawn at router: "
              f"{time.monotonic() - t0:.3f}s", flush=True)
        for a in anns:
            a.sync(snapshot(services=one, **common))  # type: ignore[arg-type]
        wait_for(lambda: len(router.kernel_routes(family).get(prefix, [])) == speakers, 30)
        stoppers = [threading.Thread(target=a.stop, args=(True,)) for a in anns]
        t0 = time.monotonic()
        for t in stoppers:
            t.start()
        wait_for(lambda: prefix not in router.kernel_routes(family), 30, 0.005)
        print(f"IPv{family} graceful stop (SIGTERM path) -> withdrawn at router: "
              f"{time.monotonic() - t0:.3f}s", flush=True)
        for t in stoppers:
            t.join(60)
        anns.clear()
    finally:
        for a in anns:
            a.stop(graceful=False)
        router.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--family", type=int, choices=[4, 6], default=4)
    ap.add_argument("--speakers", type=int, choices=[1, 2], default=2)
    ap.add_argument("--work", default="/tmp/pb-bench")
    args = ap.parse_args()
    work = Path(args.work)
    configure("bench", "warning")  # per-route debug lines would dominate the measurement
    with bgp_lab("pb-", nodes=2) as lab:
        run(lab, work, args.sizes, args.family, args.speakers)


if __name__ == "__main__":
    main()
