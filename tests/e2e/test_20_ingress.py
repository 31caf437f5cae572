"""The ingress tier: examples/web-apps.yaml + examples/ingress.yaml (two hosts, TLS) served
through the ingress VIP, HTTP and HTTPS, from outside the cluster."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kit import Client, Cluster, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HOSTS = {"a.demo.example": "web-a-", "b.demo.example": "web-b-"}


@pytest.fixture(scope="module")
def demo(cluster: Cluster) -> Iterator[str]:
    """Applies the examples; yields the CA (the self-signed certificate) in PEM."""
    cluster.apply((EXAMPLES / "web-apps.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        secret = subprocess.run(["bash", str(EXAMPLES / "make-tls-secret.sh"), tmp],
                                capture_output=True, text=True, check=True).stdout
        ca_pem = (Path(tmp) / "tls.crt").read_text()
    cluster.apply(secret)
    cluster.apply((EXAMPLES / "ingress.yaml").read_text())
    try:
        cluster.wait_rollout("deployment", "web-a", "demo")
        cluster.wait_rollout("deployment", "web-b", "demo")
        yield ca_pem
    finally:
        cluster.kubectl("delete", "namespace", "demo", "--wait=false", check=False)


def _ingress_vip(cluster: Cluster) -> str:
    return cluster.service_vip(f"{cluster.release}-ingress", cluster.namespace)


def test_ingress_status_shows_the_ingress_vip(cluster: Cluster, demo: str) -> None:
    vip = _ingress_vip(cluster)

    def probe() -> str | None:
        ingress = cluster.get("ingress", "demo", "demo")
        entries = ingress.get("status", {}).get("loadBalancer", {}).get("ingress") or []
        return vip if any(e.get("ip") == vip for e in entries) else None
    wait_for("Ingress demo/demo status to show the ingress VIP", probe, timeout=60)


def test_both_hosts_answer_through_the_ingress_vip_over_https(
        cluster: Cluster, client: Client, demo: str) -> None:
    vip = _ingress_vip(cluster)
    for host, prefix in HOSTS.items():
        def probe(host: str = host, prefix: str = prefix) -> dict[str, object] | None:
            result = client.request(vip, 443, host=host, scheme="https", ca_pem=demo)
            body = str(result.get("body", ""))
            return result if result.get("status") == 200 and body.startswith(prefix) else None
        result = wait_for(f"https://{host}/ via {vip}", probe, timeout=90, interval=1)
        assert str(result["body"]).startswith(prefix)


def test_plain_http_to_a_tls_host_is_redirected_to_https(
        cluster: Cluster, client: Client, demo: str) -> None:
    # Hosts listed under the Ingress's tls get a 308 to https on port 80 (ssl-redirect on by
    # default, as in ingress-nginx); never the app over plain HTTP.
    vip = _ingress_vip(cluster)
    for host in HOSTS:
        def probe(host: str = host) -> dict[str, object] | None:
            result = client.request(vip, 80, host=host)
            return result if result.get("status") == 308 else None
        result = wait_for(f"http://{host}/ via {vip} redirected", probe, timeout=90, interval=1)
        assert result["location"] == f"https://{host}/", result


def test_unknown_host_is_not_routed_to_an_app(cluster: Cluster, client: Client,
                                              demo: str) -> None:
    vip = _ingress_vip(cluster)
    wait_for("the ingress to serve", lambda: client.request(vip, 80, host="a.demo.example")
             .get("status"), timeout=90)
    result = client.request(vip, 80, host="nobody.demo.example")
    # No default backend: the ingress answers with an error of its own, never with an app.
    assert int(str(result.get("status", 0))) >= 400, result
    assert not str(result.get("body", "")).startswith(("web-a-", "web-b-")), result
