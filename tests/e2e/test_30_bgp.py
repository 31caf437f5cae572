"""BGP: the speakers peer with an FRR router in a container on the kind network, announce a
VIP from a BGP-advertised pool, and the router reaches the Service through the nodes (ECMP)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.kit import (
    Cluster,
    container_ip,
    docker,
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
FRR_IMAGE = os.environ.get("PORTICO_E2E_FRR_IMAGE", "quay.io/frrouting/frr:9.1.0")
BGP_RANGE = os.environ.get("PORTICO_E2E_BGP_RANGE", "")

DAEMONS = """\
zebra=yes
bgpd=yes
vtysh_enable=yes
zebra_options="  -A 127.0.0.1 -s 90000000"
bgpd_options="   -A 127.0.0.1"
"""


def frr_config(neighbours: list[str]) -> str:
    lines = [
        "frr defaults traditional",
        "hostname e2e-router",
        "log stdout informational",
        f"router bgp {ROUTER_ASN}",
        # FRR 8+ drops eBGP routes without an explicit policy unless told otherwise.
        " no bgp ebgp-requires-policy",
        " bgp bestpath as-path multipath-relax",
    ]
    lines += [f" neighbor {n} remote-as {NODE_ASN}" for n in neighbours]
    lines += [" address-family ipv4 unicast", "  maximum-paths 8", " exit-address-family", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def router(cluster: Cluster,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An FRR container on the kind network peering with every node; yields (name, ip)."""
    if not BGP_RANGE:
        pytest.skip("PORTICO_E2E_BGP_RANGE not set (kind/run-e2e.sh sets it)")
    name = f"portico-e2e-frr-{uuid.uuid4().hex[:8]}"
    nodes = sorted(cluster.node_addresses().values())
    # Mounted as FRR's whole /etc/frr (its start script chowns it), so it must outlive the
    # container: a pytest temporary directory, not a `with` block.
    conf_dir = tmp_path_factory.mktemp("frr")
    (conf_dir / "daemons").write_text(DAEMONS)
    (conf_dir / "vtysh.conf").write_text("service integrated-vtysh-config\n")
    (conf_dir / "frr.conf").write_text(frr_config(nodes))
    conf_dir.chmod(0o755)
    docker("run", "-d", "--name", name, "--network", "kind",
           "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", "--cap-add", "SYS_ADMIN",
           "-v", f"{conf_dir}:/etc/frr", FRR_IMAGE)
    try:
        yield name, container_ip(name)
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def bgp_objects(cluster: Cluster, router: tuple[str, str]) -> Iterator[None]:
    _, router_ip = router
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


def _routes(router: str, vip: str) -> list[str]:
    out = docker("exec", router, "vtysh", "-c", f"show ip route {vip}/32 json", check=False)
    try:
        data = json.loads(out or "{}")
    except json.JSONDecodeError:
        return []
    hops: list[str] = []
    for route in data.get(f"{vip}/32", []):
        if route.get("protocol") == "bgp" and route.get("selected"):
            hops += [h["ip"] for h in route.get("nexthops", []) if h.get("ip")]
    return sorted(set(hops))


def test_vip_is_routed_by_bgp_through_the_nodes(cluster: Cluster, router: tuple[str, str],
                                                bgp_objects: None) -> None:
    name, _ = router
    cluster.apply(manifest(lb_service("routed", NS, app="routed", pool="e2e-bgp")))
    vip = cluster.service_vip("routed", NS)
    nodes = set(cluster.node_addresses().values())

    # Every node with a speaker (all three: the control plane is tolerated by default)
    # announces the VIP; the router installs it with one next hop per node (ECMP).
    def all_nodes() -> list[str] | None:
        hops = _routes(name, vip)
        return hops if set(hops) == nodes else None
    hops = wait_for(f"BGP route to {vip}/32 via every node", all_nodes, timeout=90, interval=2)
    assert set(hops) == nodes

    # The router reaches the Service through that route (busybox wget in the FRR image).
    body = wait_for(f"http://{vip}/ from the router",
                    lambda: (docker("exec", name, "wget", "-q", "-T", "3", "-O", "-",
                                    f"http://{vip}/", check=False) or None),
                    timeout=60, interval=1)
    assert body.startswith("routed-")


def test_withdrawn_when_service_is_deleted(cluster: Cluster, router: tuple[str, str],
                                           bgp_objects: None) -> None:
    name, _ = router
    cluster.apply(manifest(lb_service("shortlived", NS, app="routed", pool="e2e-bgp")))
    vip = cluster.service_vip("shortlived", NS)
    wait_for(f"BGP route to {vip}/32", lambda: _routes(name, vip) or None, timeout=90,
             interval=2)
    cluster.kubectl("delete", "service", "shortlived", "-n", NS)
    wait_for(f"withdrawal of {vip}/32", lambda: True if not _routes(name, vip) else None,
             timeout=60, interval=1)
