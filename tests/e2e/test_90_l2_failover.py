"""Layer-2 failover: the node answering ARP for a VIP dies suddenly (kind: its container is
stopped; lab: its cables are cut); another worker takes the VIP over (gratuitous ARP) and the
client reaches the Service again.

Runs last (file order): it kills a worker, then starts it again for whatever runs after.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.e2e.kit import (
    Client,
    Cluster,
    Machines,
    lb_service,
    manifest,
    namespace,
    wait_for,
    web_app,
)

pytestmark = pytest.mark.e2e

NS = "e2e-failover"
POOL = os.environ.get("PORTICO_E2E_L2_POOL", "e2e")
# Design goal: node death detected in well under a second, plus gratuitous ARP. The bound is
# generous because CI machines stall; the measured figure is printed either way.
MAX_OUTAGE_S = 20.0
PROBE_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def pinned_app(cluster: Cluster) -> Iterator[None]:
    # The backends live on the control plane, which is never stopped and never announces
    # (the e2e L2Advertisement selects workers): only the announcement moves.
    objects = manifest(namespace(NS), web_app("steady", NS, replicas=2, on_control_plane=True))
    cluster.apply(objects)
    try:
        cluster.wait_rollout("deployment", "steady", NS)
        yield
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_vip_moves_to_the_other_worker_when_the_owner_stops(
        cluster: Cluster, client: Client, machines: Machines, pinned_app: None) -> None:
    cluster.apply(manifest(lb_service("steady", NS, app="steady", pool=POOL)))
    vip = cluster.service_vip("steady", NS)
    wait_for(f"http://{vip}/", lambda: client.request(vip).get("status") == 200 or None,
             timeout=60, interval=0.5)

    macs = {node: machines.mac(node) for node in cluster.node_addresses()}
    before = client.neighbour_mac(vip)
    owner = next((n for n, m in macs.items() if m == before), None)
    assert owner is not None, f"{vip} resolved to {before}, no node has that MAC"
    assert "control-plane" not in owner

    machines.stop(owner)  # a sudden node death, no graceful handover
    stopped_at = time.monotonic()
    try:
        # Bounded loop: at most MAX_OUTAGE_S * 2 of probing, PROBE_TIMEOUT_S per request.
        deadline = stopped_at + MAX_OUTAGE_S * 2
        answered_at = None
        while time.monotonic() < deadline:
            if client.request(vip, timeout=PROBE_TIMEOUT_S).get("status") == 200:
                answered_at = time.monotonic()
                break
            time.sleep(0.1)
        assert answered_at is not None, f"{vip} did not answer within {MAX_OUTAGE_S * 2:.0f}s"
        outage = answered_at - stopped_at
        after = client.neighbour_mac(vip)
        new_owner = next((n for n, m in macs.items() if m == after), None)
        print(f"\nfailover: {owner} -> {new_owner}, outage {outage:.2f}s (measured from "
              f"the node's death to the first answer, probe timeout {PROBE_TIMEOUT_S}s)")
        assert new_owner not in (None, owner), f"VIP still resolves to {after}"
        assert "control-plane" not in str(new_owner)
        assert outage < MAX_OUTAGE_S, f"failover took {outage:.1f}s"
    finally:
        machines.start(owner)

        def ready() -> bool | None:
            node = cluster.get("node", owner)
            conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
            return True if conditions.get("Ready") == "True" else None
        wait_for(f"node {owner} Ready again", ready, timeout=180, interval=3)
