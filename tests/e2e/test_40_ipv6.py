"""IPv6: a single-stack IPv6 LoadBalancer Service gets a VIP from an IPv6 pool, one worker
answers NDP for it, and the client reaches the pods over IPv6.

Needs an IPv6 pool announced by layer 2 (``PORTICO_E2E_L2_POOL6``/``PORTICO_E2E_L2_RANGE6``):
the lab runner makes one; kind/run-e2e.sh makes none (the kind network's IPv6 subnet is not
set up by it), so there this test says so and skips."""

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

NS = "e2e-ipv6"
POOL6 = os.environ.get("PORTICO_E2E_L2_POOL6", "")
RANGE6 = os.environ.get("PORTICO_E2E_L2_RANGE6", "")


@pytest.fixture(scope="module")
def app6(cluster: Cluster) -> Iterator[None]:
    if not POOL6:
        pytest.skip("no IPv6 pool: PORTICO_E2E_L2_POOL6 not set (the lab runner sets it; "
                    "kind/run-e2e.sh makes an IPv4 pool only)")
    cluster.apply(manifest(namespace(NS), web_app("six", NS, replicas=2)))
    try:
        cluster.wait_rollout("deployment", "six", NS)
        yield
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_ipv6_service_gets_a_vip_and_answers_over_ipv6(
        cluster: Cluster, client: Client, machines: Machines, app6: None) -> None:
    svc = lb_service("six", NS, app="six", pool=POOL6)
    svc["spec"].update(ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")
    cluster.apply(manifest(svc))
    vip = cluster.service_vip("six", NS)
    assert ":" in vip, f"an IPv6 VIP, not {vip}"
    if RANGE6:
        assert in_range(vip, RANGE6), f"VIP {vip} is outside pool range {RANGE6}"

    def answer() -> dict[str, object] | None:
        result = client.request(vip, 80)
        ok = result.get("status") == 200 and str(result.get("body", "")).startswith("six-")
        return result if ok else None
    wait_for(f"six-* to answer on http://[{vip}]/", answer, timeout=60, interval=0.5)

    mac = client.neighbour_mac(vip)
    assert mac, f"client has no neighbour entry for {vip}"
    owners = [n for n in cluster.node_addresses() if machines.mac(n) == mac]
    assert owners, f"{vip} resolved to {mac}, which is no node of the cluster"
    assert "control-plane" not in owners[0]
