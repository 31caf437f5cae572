"""The e2e suite's second runner: the lab cluster (``lab.labcluster.LabCluster``: the real
control plane, node namespaces with node agents and kube-proxy, Portico from
``helm install charts/portico``) instead of kind.

What the kind runner does with Docker, done here with the lab:

| kind (kit)                            | lab (this module)                                   |
|---------------------------------------|-----------------------------------------------------|
| kubectl from PATH, kind's kubeconfig  | ``make binaries``' kubectl, the admin kubeconfig    |
| client container on the kind network  | the client namespace ``pl-TAG-cl`` (192.0.2.100 on  |
|                                       | segment A): requests and its neighbour table there  |
| node container MAC / ``docker stop``  | the node's segment-A MAC / its cables cut at the    |
|                                       | switch (segment A and management): a dead node as   |
|                                       | the network and the API server see it               |
| FRR container on the kind network     | FRR (zebra + bgpd) in the lab's router namespace    |
| run-e2e.sh's pools from the kind net  | ``LabCluster``'s pools from the lab's VIP ranges    |

The lab's ranges reach the tests the way run-e2e.sh passes kind's: ``PORTICO_E2E_L2_POOL``,
``PORTICO_E2E_L2_RANGE`` and ``PORTICO_E2E_BGP_RANGE`` (``ENVIRONMENT``), plus an IPv6 pool
(``PORTICO_E2E_L2_POOL6``/``_RANGE6``) that run-e2e.sh does not make.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from lab import netns, probe
from lab.controlplane import binaries
from lab.labcluster import BGP_RANGE, L2_POOL, L2_POOL6, L2_RANGE, L2_RANGE6, LabCluster
from lab.topology import Lab
from tests.e2e.kit import Client, Cluster, E2EError, Machines, frr_route_next_hops, run

ENVIRONMENT = {"PORTICO_E2E_L2_POOL": L2_POOL, "PORTICO_E2E_L2_RANGE": L2_RANGE,
               "PORTICO_E2E_L2_POOL6": L2_POOL6, "PORTICO_E2E_L2_RANGE6": L2_RANGE6,
               "PORTICO_E2E_BGP_RANGE": BGP_RANGE}


def why_unusable() -> str | None:
    """None when the lab cluster can run here; the reason to skip otherwise (not root: the
    only reason; a missing binary or tool is an error the fixture raises)."""
    if os.geteuid() != 0:
        return ("e2e skipped: no PORTICO_E2E_KUBECONFIG (kind/run-e2e.sh) and not root "
                "(the lab cluster needs network namespaces)")
    return netns.available()


def cluster_of(lc: LabCluster) -> Cluster:
    assert lc.lab is not None
    return Cluster(kubeconfig=str(lc.kubeconfig), name=f"lab-{lc.lab.tag}",
                   namespace=lc.namespace, release=lc.release, image="portico",
                   kubectl_binary=str(binaries.binary("kubectl")))


class LabClient(Client):
    """The lab's client namespace as the e2e client: the same probe program as in kind's
    client container, run there with this interpreter."""

    def __init__(self, lab: Lab) -> None:  # no container to start: the lab's namespace
        self.name = lab.client
        self.python = sys.executable

    def close(self) -> None:
        pass  # the namespace is the lab's

    def exec(self, *argv: str, input_text: str | None = None, check: bool = True) -> str:
        words = list(argv)
        if words and words[0] == "python3":
            words[0] = self.python
        return run(["ip", "netns", "exec", self.name, *words], input_text=input_text,
                   check=check).stdout


class LabMachines(Machines):
    """Lab nodes as machines: their segment-A MAC, and a sudden death as cables cut."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def mac(self, node: str) -> str:
        try:
            return self.lab.node(node).mac_a
        except StopIteration:
            raise E2EError(f"{node} is no node of lab {self.lab.tag}") from None

    def stop(self, node: str) -> None:
        # Segment A (the client's and the other speakers' network) and the management link
        # (the node agent's path to the API server) unplugged at the switch: the node's
        # interfaces lose carrier, its speaker's heartbeats stop, its Lease is not renewed.
        self.lab.cut_link(node, up=False, mgmt=True)

    def start(self, node: str) -> None:
        self.lab.cut_link(node, up=True, mgmt=True)


class LabRouter:
    """FRR (zebra + bgpd) in the lab's router namespace (192.0.2.1 on segment A), peering
    with every node; the client reaches the BGP range through it (``Lab(routed_vips=True)``)."""

    def __init__(self, lab: Lab, router_asn: int, node_asn: int, hold_time: int = 9) -> None:
        from lab.frr import RouterNeighbor

        self.lab = lab
        self.router = lab.start_frr(router_asn, [RouterNeighbor(n.ip4, node_asn,
                                                                hold_time=hold_time)
                                                 for n in lab.nodes])
        self.address = self.router.router_id

    def routes(self, vip: str) -> list[str]:
        return frr_route_next_hops(
            self.router.vtysh(f"show ip route {vip}/32 json", check=False), vip)

    def http_get(self, vip: str) -> str | None:
        return netns.run_in_netns(self.lab.router, lambda: probe.http_get(vip, 80, 3.0))

    def close(self) -> None:
        self.router.stop()


def print_figures(lc: LabCluster, extra: dict[str, Any] | None = None) -> None:
    figures = {**lc.figures, **(extra or {})}
    print(f"\nlab cluster figures: {figures}", file=sys.stderr)


def describe(lc: LabCluster) -> str:
    """kubectl views for a failure message."""
    try:
        return lc.kubectl("get", "nodes,pods,svc", "-A", "-o", "wide", check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(kubectl failed: {exc})"
