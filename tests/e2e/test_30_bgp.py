"""BGP: the speakers peer with an FRR router (kind: a container on the kind network; lab: the
router namespace), announce a VIP from a BGP-advertised pool, and the router reaches the
Service through the nodes (ECMP)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.kit import (
    Cluster,
    Router,
    lb_service,
    manifest,
    namespace,
    wait_for,
    web_app,
)

pytestmark = pytest.mark.e2e

NS = "e2e-bgp"
ROUTER_ASN = 64500
NODE_ASN = 64512
BGP_RANGE = os.environ.get("PORTICO_E2E_BGP_RANGE", "")


@pytest.fixture(scope="module")
def router(bgp_routers: Callable[[int, int], Router]) -> Iterator[Router]:
    """An FRR router peering with every node (the runner's: see tests/e2e/conftest.py)."""
    if not BGP_RANGE:
        pytest.skip("PORTICO_E2E_BGP_RANGE not set (kind/run-e2e.sh sets it)")
    yield bgp_routers(ROUTER_ASN, NODE_ASN)


@pytest.fixture(scope="module")
def bgp_objects(cluster: Cluster, router: Router) -> Iterator[None]:
    router_ip = router.address
    objects = manifest(
        {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "IPAddressPool",
         "metadata": {"name": "e2e-bgp"},
         "spec": {"addresses": [BGP_RANGE]}},
        {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "BGPPeer",
         "metadata": {"name": "e2e-router"},
         "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": router_ip,
                  "holdTime": "9s", "keepaliveTime": "3s"}},
        {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "BGPAdvertisement",
         "metadata": {"name": "e2e-bgp"},
         "spec": {"ipAddressPools": ["e2e-bgp"], "peers": ["e2e-router"]}},
        namespace(NS),
        web_app("routed", NS, replicas=2),
    )
    cluster.apply(objects)
    try:
        cluster.wait_rollout("deployment", "routed", NS)
        yield
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        cluster.delete(objects)


def test_vip_is_routed_by_bgp_through_the_nodes(cluster: Cluster, router: Router,
                                                bgp_objects: None) -> None:
    cluster.apply(manifest(lb_service("routed", NS, app="routed", pool="e2e-bgp")))
    vip = cluster.service_vip("routed", NS)
    nodes = set(cluster.node_addresses().values())

    # Every node with a speaker (all three: the control plane is tolerated by default)
    # announces the VIP; the router installs it with one next hop per node (ECMP).
    def all_nodes() -> list[str] | None:
        hops = router.routes(vip)
        return hops if set(hops) == nodes else None
    hops = wait_for(f"BGP route to {vip}/32 via every node", all_nodes, timeout=90, interval=2)
    assert set(hops) == nodes

    # The router reaches the Service through that route.
    body = wait_for(f"http://{vip}/ from the router", lambda: router.http_get(vip),
                    timeout=60, interval=1)
    assert body.startswith("routed-")


def test_withdrawn_when_service_is_deleted(cluster: Cluster, router: Router,
                                           bgp_objects: None) -> None:
    cluster.apply(manifest(lb_service("shortlived", NS, app="routed", pool="e2e-bgp")))
    vip = cluster.service_vip("shortlived", NS)
    wait_for(f"BGP route to {vip}/32", lambda: router.routes(vip) or None, timeout=90,
             interval=2)
    cluster.kubectl("delete", "service", "shortlived", "-n", NS)
    wait_for(f"withdrawal of {vip}/32", lambda: True if not router.routes(vip) else None,
             timeout=60, interval=1)
