"""A LoadBalancer Service gets a VIP from the pool and answers from the kind network
(outside the cluster), announced by ARP from one worker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.kit import (
    Client,
    Cluster,
    Machines,
    in_range,
    lb_service,
    manifest,
    namespace,
    wait_for,
    web_app,
)

pytestmark = pytest.mark.e2e

NS = "e2e-service"
POOL = os.environ.get("PORTICO_E2E_L2_POOL", "e2e")


@pytest.fixture(scope="module")
def apps(cluster: Cluster) -> Iterator[None]:
    objects = manifest(namespace(NS), web_app("hello", NS, replicas=2),
                       web_app("lonely", NS, replicas=1))
    cluster.apply(objects)
    try:
        cluster.wait_rollout("deployment", "hello", NS)
        cluster.wait_rollout("deployment", "lonely", NS)
        yield
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _answer(client: Client, vip: str, prefix: str) -> dict[str, object]:
    def probe() -> dict[str, object] | None:
        result = client.request(vip, 80)
        ok = result.get("status") == 200 and str(result.get("body", "")).startswith(prefix)
        return result if ok else None
    return wait_for(f"{prefix}* to answer on http://{vip}/", probe, timeout=60, interval=0.5)


def _owner(cluster: Cluster, client: Client, machines: Machines, vip: str) -> str:
    mac = client.neighbour_mac(vip)
    assert mac, f"client has no ARP entry for {vip}"
    owners = [n for n in cluster.node_addresses() if machines.mac(n) == mac]
    assert owners, f"{vip} resolved to {mac}, which is no node of the cluster"
    return owners[0]


def test_service_gets_vip_from_pool_and_answers(cluster: Cluster, client: Client,
                                                machines: Machines, apps: None) -> None:
    cluster.apply(manifest(lb_service("hello", NS, app="hello", pool=POOL)))
    vip = cluster.service_vip("hello", NS)
    l2_range = os.environ.get("PORTICO_E2E_L2_RANGE", "")
    if l2_range:
        assert in_range(vip, l2_range), f"VIP {vip} is outside pool range {l2_range}"

    result = _answer(client, vip, "hello-")
    assert result["status"] == 200

    owner = _owner(cluster, client, machines, vip)
    assert "control-plane" not in owner, "the e2e L2Advertisement selects workers only"


def test_local_traffic_policy_announces_from_the_endpoint_node(
        cluster: Cluster, client: Client, machines: Machines, apps: None) -> None:
    cluster.apply(manifest(lb_service("lonely", NS, app="lonely", pool=POOL,
                                      traffic_policy="Local")))
    vip = cluster.service_vip("lonely", NS)
    _answer(client, vip, "lonely-")
    pods = cluster.list("pods", NS, selector="app=lonely")
    endpoint_nodes = {p["spec"]["nodeName"] for p in pods if p["status"].get("phase") == "Running"}
    owner = _owner(cluster, client, machines, vip)
    if "control-plane" in next(iter(endpoint_nodes)):
        pytest.skip("the only endpoint landed on the control plane, which does not announce")
    assert owner in endpoint_nodes, (
        f"externalTrafficPolicy Local: {vip} must be announced from {endpoint_nodes}, "
        f"not from {owner}")


def test_released_address_can_be_requested_again(cluster: Cluster, apps: None) -> None:
    cluster.apply(manifest(lb_service("first", NS, app="hello", pool=POOL)))
    vip = cluster.service_vip("first", NS)
    cluster.kubectl("delete", "service", "first", "-n", NS)
    cluster.apply(manifest(lb_service("second", NS, app="hello", pool=POOL, ips=vip)))
    assert cluster.service_vip("second", NS) == vip
