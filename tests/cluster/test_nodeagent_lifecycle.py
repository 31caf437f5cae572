"""The real node lifecycle controller sees a node whose agent stopped, or whose link to the
API server was cut: its Ready condition turns Unknown and the node is tainted unreachable;
an agent back (or the link back) makes it Ready again.

The session's control plane runs kube-controller-manager with its default 50 s
``--node-monitor-grace-period``; this module starts its own with a short one (4 s, checked
every second) so the flip takes seconds, not a minute. The agents renew their Leases every
second, the kubelet's ratio of renewal to grace period kept roughly (10 s : 40-50 s).
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.kube import resources as R
from common.kube.client import KubeClient
from lab import netns
from lab.controlplane.cluster import ControlPlane
from lab.nodeagent import labkit
from lab.topology import Lab
from lab.wait import wait_until

pytestmark = pytest.mark.lab

GRACE_S = 4
LEASE_RENEW_S = 1.0
UNREACHABLE = "node.kubernetes.io/unreachable"


def eventually(check: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> Any:
    return wait_until(check, timeout, interval, what)


@pytest.fixture(scope="module")
def plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    # A node lifecycle controller that gives up on a node after GRACE_S without a Lease
    # renewal (or status heartbeat).
    cp = ControlPlane(extra_sans=(labkit.API_HOST,), controller_manager_args=(
        f"--node-monitor-grace-period={GRACE_S}s", "--node-monitor-period=1s"))
    cp.start()
    try:
        yield cp
    finally:
        cp.keep_logs = cp.keep_logs or request.session.testsfailed > 0
        cp.stop()


def ready(api: KubeClient, node: str) -> tuple[str, str]:
    obj = api.get(R.NODES, node)
    cond = next((c for c in obj["status"].get("conditions") or [] if c["type"] == "Ready"), {})
    return str(cond.get("status")), str(cond.get("reason"))


def tainted(api: KubeClient, node: str) -> bool:
    return any(t.get("key") == UNREACHABLE for t in api.get(R.NODES, node)["spec"].get(
        "taints") or [])


def test_the_lifecycle_controller_sees_a_stopped_agent_and_a_cut_link(
        plane: ControlPlane) -> None:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    api = KubeClient.from_environment(kubeconfig=str(plane.kubeconfig))
    figures: dict[str, float] = {}
    flags = ("--lease-renew-interval", str(LEASE_RENEW_S), "--status-update-interval", "1")
    with Lab(nodes_count=2, start_controller=False, start_backends=False,
             control_plane=plane, node_agents=True, node_agent_args=flags) as lab:
        try:
            for n in lab.nodes:
                eventually(lambda n=n: ready(api, n.name) == ("True", "KubeletReady")
                           and not tainted(api, n.name), 30, f"{n.name} Ready")

            # The agent stops: no more renewals; after the grace period the controller says
            # Unknown and taints the node unreachable. The other node stays Ready.
            t0 = time.monotonic()
            lab.stop_proc("agent-node2", signal.SIGTERM, wait=15.0)
            eventually(lambda: ready(api, "node2")[0] == "Unknown" and tainted(api, "node2"),
                       GRACE_S + 15, "node2 Unknown and unreachable")
            figures["agent stopped -> Ready=Unknown (s)"] = round(time.monotonic() - t0, 2)
            assert ready(api, "node2")[1] == "NodeStatusUnknown"
            assert ready(api, "node1") == ("True", "KubeletReady")
            t0 = time.monotonic()
            labkit.start_agent(lab, "node2", *flags)
            eventually(lambda: ready(api, "node2")[0] == "True" and not tainted(api, "node2"),
                       30, "node2 Ready again")
            figures["agent back -> Ready, untainted (s)"] = round(time.monotonic() - t0, 2)

            # The node's link to the API server is cut (its management port at the api
            # namespace's bridge): the same, then back once the link is.
            t0 = time.monotonic()
            netns.link_set(lab.api, "pl-m1", False)
            try:
                eventually(lambda: ready(api, "node1")[0] == "Unknown", GRACE_S + 15,
                           "node1 Unknown with its link cut")
                figures["link cut -> Ready=Unknown (s)"] = round(time.monotonic() - t0, 2)
            finally:
                netns.link_set(lab.api, "pl-m1", True)
            t0 = time.monotonic()
            eventually(lambda: ready(api, "node1")[0] == "True" and not tainted(api, "node1"),
                       30, "node1 Ready with its link back")
            figures["link back -> Ready (s)"] = round(time.monotonic() - t0, 2)
        finally:
            print(f"\nnode lifecycle figures: {json.dumps(figures)}")
            for n in lab.nodes:
                lab.stop_proc(f"agent-{n.name}", signal.SIGTERM, wait=15.0)
                with contextlib.suppress(Exception):
                    api.delete(R.NODES, n.name)
