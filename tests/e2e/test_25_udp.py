"""UDP beside the ingress tier (docs/gateway.md "UDP"): examples/udp-service.yaml, a
LoadBalancer Service mixing UDP and TCP on one VIP, answers datagrams from outside."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kit import Client, Cluster, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "udp-service.yaml"
POOL = os.environ.get("PORTICO_E2E_L2_POOL", "e2e")


@pytest.fixture(scope="module")
def udp_app(cluster: Cluster) -> Iterator[str]:
    text = EXAMPLE.read_text().replace("lb.portico.dev/address-pool: demo",
                                       f"lb.portico.dev/address-pool: {POOL}")
    cluster.apply(text)
    try:
        cluster.wait_rollout("deployment", "names", "udp-demo")
        yield cluster.service_vip("names", "udp-demo")
    finally:
        cluster.kubectl("delete", "namespace", "udp-demo", "--wait=false", check=False)


def test_udp_datagrams_reach_the_pods_through_the_vip(udp_app: str, client: Client) -> None:
    vip = udp_app
    answer = wait_for(f"a datagram answer from {vip}:53/udp",
                      lambda: client.udp_request(vip, 53), timeout=60, interval=0.5)
    assert answer.startswith("names-"), answer
    # Datagrams from new source ports reach both pods through kube-proxy (once both pods'
    # endpoints are in its rules: an endpoint can reach them a moment after the rollout).
    seen: set[str] = set()

    def both() -> set[str] | None:
        for _ in range(10):
            got = client.udp_request(vip, 53)
            if got and got.startswith("names-"):
                seen.add(got)
        return seen if len(seen) == 2 else None

    wait_for(f"datagrams to {vip}:53/udp answered by both pods", both, timeout=60,
             interval=0.5)
