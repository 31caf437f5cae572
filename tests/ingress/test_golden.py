"""Golden files for every rendered artifact (UPDATE_GOLDEN=1 regenerates them)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from ingress.core.model import Endpoint, build_model
from ingress.core.render import Settings, render
from lab.ingress_kit import CLASS, ingress, path, rule

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "ingress"
N = "nginx.ingress.kubernetes.io/"
# Shape-valid PEM (content is not parsed by the renderer; the adapter checks it with openssl).
PEM = b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nREVG\n-----END PRIVATE KEY-----\n"


def scenario() -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    secret = {"metadata": {"name": "shop-tls", "namespace": "shop"}, "type": "kubernetes.io/tls",
              "data": {"tls.crt": base64.b64encode(PEM).decode(),
                       "tls.key": base64.b64encode(KEY).decode()}}
    ings = [
        ingress("shop", [rule("shop.example.com", path("/", "Prefix", "web"),
                              path("/api", "Prefix", "api", 8080),
                              path("/healthz", "Exact", "web"))], ns="shop",
                tls=[{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                annotations={N + "proxy-body-size": "8m", N + "proxy-read-timeout": "120"}),
        ingress("wild", [rule("*.apps.example.com", path("/", "Prefix", "apps", "http"))],
                annotations={N + "affinity": "cookie", N + "session-cookie-name": "route",
                             N + "whitelist-source-range": "192.0.2.0/24,2001:db8::/32"}),
        ingress("legacy", [rule("legacy.example.com",
                                path("/old(/|$)(.*)", "ImplementationSpecific", "legacy"))],
                annotations={N + "use-regex": "true", N + "rewrite-target": "/new/$2",
                             N + "backend-protocol": "HTTPS"}),
        ingress("grpc", [rule("grpc.example.com", path("/", "Prefix", "grpc", 50051))],
                annotations={N + "backend-protocol": "GRPC", N + "ssl-redirect": "false"}),
        ingress("moved", [rule("moved.example.com", path("/", "Prefix", "web"))],
                annotations={N + "permanent-redirect": "https://shop.example.com/a%2Fb?x=1&y=2"}),
        ingress("fallback", [rule(None, path("/", "Prefix", "web"))], default=("web", 80)),
    ]
    return ings, {("shop", "shop-tls"): secret}


def rendered_files() -> dict[str, str]:
    ings, secrets = scenario()
    m = build_model(ings, [CLASS], {}, secrets)
    assert not m.events, m.events
    slots = {name: 4 for name in m.backends}
    assigned = {name: (Endpoint("10.0.0.1", 8080), None, Endpoint("2001:db8::5", 8080), None)
                for name in m.backends}
    r = render(m, slots, assigned, Settings(run_dir="/var/run/portico-ingress/run"))
    files = dict(r.files)
    files.update({k: v.decode() for k, v in r.certs.items()})
    return files


@pytest.mark.parametrize("name", sorted(rendered_files()))
def test_golden(name: str) -> None:
    got = rendered_files()[name]
    target = GOLDEN / name.replace("/", "__")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(got)
    assert target.exists(), f"missing golden {target}; run with UPDATE_GOLDEN=1"
    assert got == target.read_text(), f"{name} differs from {target}"


def test_render_is_deterministic_under_input_order() -> None:
    ings, secrets = scenario()
    a = render(build_model(ings, [CLASS], {}, secrets), {}, None, Settings())
    b = render(build_model(list(reversed(ings)), [CLASS], {}, secrets), {}, None, Settings())
    assert a.files == b.files
