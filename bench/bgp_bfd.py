"""BFD: time from a node's silent death to its route gone at the router (issue 15).

Run as root:  .venv/bin/python -m bench.bgp_bfd [--trials 10] [--interval-ms 100]
              [--multiplier 3] [--no-bfd]

Lab: ``lab.topology.Lab(routed_vips=True)`` with 3 nodes, the real controller and speakers,
FRR (zebra, bgpd, bfdd) in the router namespace with ``neighbor X bfd profile portico``; the
BGPPeer asks for ``spec.bfd`` with the same timers, so each speaker runs FRR bfdd beside
exabgp. One Cluster Service: the router's kernel has its VIP with ECMP over the 3 nodes.

Silent death = the node's cable is cut at the switch (``pl-aK`` down in the switch
namespace): the router hears nothing more from it — no FIN, no withdraw, no NOTIFICATION.
Measured: from the cut until the router's kernel no longer lists that node as a next hop of
the VIP (polled with ``ip -n ROUTER route``, every ~5 ms). The cut link is then restored and
the next trial waits until the session and BFD are up again. Trials rotate over the nodes.

``--no-bfd``: the same without BFD (hold time 3 s) for comparison (fewer trials suffice).

The machine is a shared 2-vCPU VM; figures are noisy (stalls of 150-350 ms happen).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.stats import pct
from common.kube import resources as R
from lab import netns
from lab.bgp_kit import NODE_ASN, ROUTER_ASN
from lab.frr import RouterNeighbor
from lab.topology import VIP_BGP4, Lab
from lab.wait import wait_until

ROUTER4 = "192.0.2.1"
TRIAL_TIMEOUT_S = 10.0  # a trial that sees no withdrawal within this is reported as such
RECOVER_TIMEOUT_S = 60.0


def gateways(router_ns: str, vip: str) -> list[str]:
    out = subprocess.run(["ip", "-n", router_ns, "-j", "-4", "route", "show", f"{vip}/32"],
                         capture_output=True, text=True, timeout=10, check=False).stdout
    routes = json.loads(out or "[]")
    if not routes:
        return []
    r = routes[0]
    return sorted(h["gateway"] for h in r.get("nexthops", [])) or [r.get("gateway", "")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--multiplier", type=int, default=3)
    ap.add_argument("--no-bfd", action="store_true")
    args = ap.parse_args(argv)
    reason = netns.available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    bfd = not args.no_bfd
    ms, mult = args.interval_ms, args.multiplier
    with Lab(nodes_count=3, start_controller=True, routed_vips=True) as lab:
        router = lab.start_frr(ROUTER_ASN, [RouterNeighbor(n.ip4, NODE_ASN, hold_time=3,
                                                           bfd=bfd) for n in lab.nodes],
                               bfd=bfd, bfd_timers=(ms, ms, mult))
        st = lab.store
        st.create(R.IPADDRESSPOOLS, {"metadata": {"name": "routed"},
                                     "spec": {"addresses": [VIP_BGP4]}})
        st.create(R.BGPADVERTISEMENTS, {"metadata": {"name": "routed"},
                                        "spec": {"ipAddressPools": ["routed"]}})
        spec = {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER4,
                "holdTime": "3s"}
        if bfd:
            spec["bfd"] = {"receiveInterval": ms, "transmitInterval": ms,
                           "detectMultiplier": mult}
        st.create(R.BGPPEERS, {"metadata": {"name": "rt4"}, "spec": spec})
        lab.start_speakers()
        lab.add_service("web", annotations={"lb.portico.dev/address-pool": "routed"})
        vip = wait_until(lambda: lab.service_ips("web"), 30, what="VIP")[0]
        all_gw = sorted(n.ip4 for n in lab.nodes)

        def healthy() -> bool:
            if gateways(lab.router, vip) != all_gw:
                return False
            return not bfd or router.bfd_peers() == {n.ip4: "up" for n in lab.nodes}

        times: list[float] = []
        missed = 0
        for i in range(args.trials):
            wait_until(healthy, RECOVER_TIMEOUT_S, interval=0.2,
                       what="all sessions (and BFD) up, ECMP over every node")
            node = lab.nodes[i % len(lab.nodes)]
            rest = [g for g in all_gw if g != node.ip4]
            t0 = time.monotonic()
            netns.link_set(lab.sw, f"pl-a{node.index}", False)
            try:
                took = None
                while time.monotonic() - t0 < TRIAL_TIMEOUT_S:
                    if gateways(lab.router, vip) == rest:
                        took = time.monotonic() - t0
                        break
                    time.sleep(0.005)
            finally:
                netns.link_set(lab.sw, f"pl-a{node.index}", True)
            if took is None:
                missed += 1
                print(f"trial {i + 1}: {node.name}: no withdrawal within {TRIAL_TIMEOUT_S} s")
            else:
                times.append(took)
                print(f"trial {i + 1}: {node.name}: route gone after {took * 1000:.0f} ms")
            sys.stdout.flush()
        mode = f"BFD {ms} ms x {mult}" if bfd else "no BFD (hold time 3 s)"
        if times:
            print(f"\n{mode}: link cut -> route gone at the router, n={len(times)}: "
                  f"p50 {pct(times, 50) * 1000:.0f} ms, p99 {pct(times, 99) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms; missed {missed}")
        else:
            print(f"\n{mode}: no trial saw a withdrawal (missed {missed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
