"""Allocator benchmark: 100,000 Services over pools that include an IPv4 /12 and an IPv6 /64.

Run: ``.venv/bin/python -m bench.allocator`` (or ``.venv/bin/python bench/allocator.py``).
Prints total allocation time, per-allocation p50/p99, rebuild-from-status time and peak RSS.
Targets (issue 2): 100,000 allocations < 2 s, rebuild < 3 s, RSS < 300 MB.

The mix (why): mostly single-stack IPv4 from the /12 (the common case, exercises the cursor
and avoidBuggyIPs), IPv6 from the /64 (huge-pool arithmetic), dual-stack from one pool, a
namespace-restricted pool with priority, and sharing groups (the shared-address index).
"""

from __future__ import annotations

import argparse
import ipaddress
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.api.model import (
    IPV4,
    IPV6,
    AddressRange,
    Family,
    FamilyPolicy,
    LBService,
    Pool,
    ServiceAllocation,
    ServicePort,
)
from lb.core.allocator import Allocation, Allocator, Result


def _cidr(text: str) -> AddressRange:
    net = ipaddress.ip_network(text)
    fam: Family = IPV4 if net.version == 4 else IPV6
    return AddressRange(fam, int(net.network_address), int(net.broadcast_address), text)


def pools() -> list[Pool]:
    return [
        Pool(
            "v4-big", (_cidr("10.0.0.0/12"),), avoid_buggy_ips=True,
            created="2024-01-01T00:00:00Z",
        ),
        Pool("v6-big", (_cidr("2001:db8:1::/64"),), created="2024-01-01T00:00:01Z"),
        Pool(
            "dual",
            (_cidr("10.32.0.0/16"), _cidr("2001:db8:2::/64")),
            auto_assign=False,
            created="2024-01-01T00:00:02Z",
        ),
        Pool(
            "team-a",
            (_cidr("10.48.0.0/20"),),
            allocation=ServiceAllocation(priority=10, namespaces=frozenset({"team-a"})),
            created="2024-01-01T00:00:03Z",
        ),
    ]


WEB = frozenset({ServicePort("TCP", 80), ServicePort("TCP", 443)})


def services(n: int) -> list[LBService]:
    out: list[LBService] = []
    for i in range(n):
        kind = i % 20
        ns = "team-a" if kind == 0 else f"ns{i % 97}"
        fams: tuple[Family, ...] = (IPV4,)
        policy: FamilyPolicy = "SingleStack"
        pool: str | None = None
        key: str | None = None
        ports = WEB
        if kind in (1, 2):  # IPv6 single stack from the /64
            fams = (IPV6,)
        elif kind == 3:  # dual stack, both from one pool
            fams, policy, pool = (IPV4, IPV6), "RequireDualStack", "dual"
        elif kind == 4:
            fams, policy, pool = (IPV6, IPV4), "PreferDualStack", "dual"
        elif kind in (5, 6):  # sharing groups of 4 (one port each)
            key = f"grp{i // 80}"
            ports = frozenset({ServicePort("TCP", 8000 + (i // 20) % 4)})
        out.append(
            LBService(
                namespace=ns, name=f"svc{i}", requested_pool=pool, sharing_key=key,
                ports=ports, ip_families=fams, family_policy=policy,
            )
        )
    return out


def _pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


Run = tuple[float, float, list[int], list[Result], Allocator]


def _allocate_all(svcs: list[LBService], labels: Mapping[str, str]) -> Run:
    alloc = Allocator(pools())
    lat: list[int] = []
    clock = time.perf_counter_ns
    results: list[Result] = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for s in svcs:
        a = clock()
        results.append(alloc.allocate(s, labels))
        lat.append(clock() - a)
    return time.perf_counter() - t0, time.process_time() - c0, lat, results, alloc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=100_000, help="number of Services")
    ap.add_argument(
        "--repeat", type=int, default=3,
        help="runs per phase; the best is reported (the machine is shared: the minimum is "
        "the least disturbed measurement), every run is listed",
    )
    args = ap.parse_args(argv)
    svcs = services(args.n)
    labels: Mapping[str, str] = {}
    best: Run | None = None
    totals: list[float] = []
    for _ in range(max(1, args.repeat)):
        run = _allocate_all(svcs, labels)
        totals.append(run[0])
        if best is None or run[0] < best[0]:
            best = run
        del run  # keep only the best run alive: peak RSS is one allocator's worth
    assert best is not None
    total, cpu, lat, results, _ = best
    best = None
    all_totals = ", ".join(f"{t:.3f}" for t in totals)
    ok = sum(isinstance(r, Allocation) for r in results)
    lat.sort()

    # Restart: the statuses are what the controller wrote.
    restarted = [
        LBService(
            namespace=s.namespace, name=s.name, requested_pool=s.requested_pool,
            sharing_key=s.sharing_key, ports=s.ports, ip_families=s.ip_families,
            family_policy=s.family_policy,
            status_ips=r.ips if isinstance(r, Allocation) else (),
        )
        for s, r in zip(svcs, results, strict=True)
    ]
    rebuild = rebuild_cpu = float("inf")
    rebuild_times: list[float] = []
    rebuilt: dict[str, Result] = {}
    fresh = Allocator()
    for _ in range(max(1, args.repeat)):
        fresh = Allocator(pools())
        c1 = time.process_time()
        t1 = time.perf_counter()
        rebuilt = fresh.rebuild((s, labels) for s in restarted)
        wall, used_cpu = time.perf_counter() - t1, time.process_time() - c1
        rebuild_times.append(wall)
        if wall < rebuild:
            rebuild, rebuild_cpu = wall, used_cpu
    all_rebuilds = ", ".join(f"{t:.3f}" for t in rebuild_times)
    same = sum(rebuilt[s.key] == r for s, r in zip(svcs, results, strict=True))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    print(f"services:             {args.n}")
    print(f"allocated:            {ok} (pending {args.n - ok})")
    print(f"allocation total:     {total:.3f} s wall, {cpu:.3f} s CPU   (target < 2 s; "
          f"runs: {all_totals})")
    print(f"per allocation p50:   {_pct(lat, 0.50):.1f} us")
    print(f"per allocation p99:   {_pct(lat, 0.99):.1f} us")
    print(f"rebuild from status:  {rebuild:.3f} s wall, {rebuild_cpu:.3f} s CPU   (target < 3 s;"
          f" runs: {all_rebuilds}; {same} identical to before the restart)")
    print(f"peak RSS:             {peak_mb:.1f} MB   (target < 300 MB)")
    for name, st in sorted(fresh.pool_stats().items()):
        fams = "  ".join(
            f"{f}: total={fs.total} assigned={fs.assigned} available={fs.available}"
            for f, fs in st.families.items()
        )
        print(f"pool {name:8s} {fams}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
