"""The installed release itself: every component's pods run and are ready, one controller
replica holds the Lease, and a new LoadBalancer Service answers from outside the cluster
(the time it takes is printed: the figure a user waits for after ``kubectl apply``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.e2e.kit import Client, Cluster, lb_service, manifest, namespace, wait_for, web_app

pytestmark = pytest.mark.e2e

NS = "e2e-install"
POOL = os.environ.get("PORTICO_E2E_L2_POOL", "e2e")
COMPONENTS = {"controller", "speaker", "ingress"}


def _ready(pod: dict[str, object]) -> bool:
    status = pod.get("status") or {}
    assert isinstance(status, dict)
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


def test_every_component_runs_and_is_ready(cluster: Cluster) -> None:
    pods = cluster.list("pods", cluster.namespace,
                        selector=f"app.kubernetes.io/instance={cluster.release}")
    by_component: dict[str, list[str]] = {}
    for pod in pods:
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component", "")
        by_component.setdefault(component, []).append(pod["metadata"]["name"])
        assert _ready(pod), f"{pod['metadata']['name']} is not Running and Ready"
    assert set(by_component) == COMPONENTS, by_component
    nodes = cluster.list("nodes")
    assert len(by_component["speaker"]) == len(nodes), "one speaker per node (DaemonSet)"
    assert len(by_component["controller"]) == 2, "two controller replicas (Lease election)"
    # The workloads count them ready too.
    fullname = cluster.release
    cluster.wait_rollout("deployment", f"{fullname}-controller", cluster.namespace, timeout=30)
    cluster.wait_rollout("daemonset", f"{fullname}-speaker", cluster.namespace, timeout=30)
    cluster.wait_rollout("deployment", f"{fullname}-ingress", cluster.namespace, timeout=30)

    def holder() -> str | None:
        lease = cluster.get("lease", "portico-controller", cluster.namespace)
        name = str(lease.get("spec", {}).get("holderIdentity") or "")
        return name or None
    leader = wait_for("a controller holding the Lease", holder, timeout=30)
    assert any(leader.startswith(p) for p in by_component["controller"]), (
        f"the Lease is held by {leader!r}, not by a controller pod "
        f"{by_component['controller']}")


@pytest.fixture(scope="module")
def quick_app(cluster: Cluster) -> Iterator[None]:
    cluster.apply(manifest(namespace(NS), web_app("quick", NS, replicas=1)))
    try:
        cluster.wait_rollout("deployment", "quick", NS)
        yield
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_new_service_answers_from_outside(cluster: Cluster, client: Client,
                                          quick_app: None) -> None:
    t0 = time.monotonic()
    cluster.apply(manifest(lb_service("quick", NS, app="quick", pool=POOL)))
    vip = cluster.service_vip("quick", NS, timeout=60)
    assigned = time.monotonic() - t0

    def answer() -> str | None:
        result = client.request(vip, 80, timeout=1.0)
        body = str(result.get("body", ""))
        return body if result.get("status") == 200 and body.startswith("quick-") else None
    body = wait_for(f"http://{vip}/ to answer", answer, timeout=60, interval=0.1)
    answered = time.monotonic() - t0
    print(f"\nService create -> VIP {vip} in status {assigned:.2f}s, -> answers from the "
          f"client {answered:.2f}s (pod {body})")
