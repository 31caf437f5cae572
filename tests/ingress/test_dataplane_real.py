"""Data-plane behaviours: PROXY protocol, metrics, idempotence, bad renders, slot growth."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from ingress.core.render import Rendered
from ingress.haproxy import CheckResult
from lab.ingress_kit import (
    Backends,
    Harness,
    harness,
    ingress,
    path,
    rule,
    start_backend,
)

from .conftest import need_haproxy

pytestmark = pytest.mark.lab


def test_proxy_protocol_sets_client_address(tmp_path: Path, backends: Backends) -> None:
    need_haproxy()
    with harness(tmp_path / "s", accept_proxy=True) as hx:
        hx.world.backend_service("svc-a", [backends["A"]])
        hx.world.add(ingress("i", [rule("p.example.com", path("/", "Prefix", "svc-a"))]))
        hx.sync()
        with socket.create_connection(("127.0.0.1", hx.settings.http_port), timeout=5) as s:
            s.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n"
                      b"GET / HTTP/1.1\r\nHost: p.example.com\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert b'"x-forwarded-for": "203.0.113.7"' in data.lower()


def test_metrics_exporter_and_idempotent_sync(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("i", [rule("m.example.com", path("/", "Prefix", "svc-a"))]))
    assert hx.sync().reloaded
    again = hx.sync()  # nothing changed: no reload, no command
    assert not again.reloaded and again.runtime_commands == 0
    assert hx.get("m.example.com", "/").name == "A"
    url = f"http://{hx.settings.metrics_bind}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert "haproxy_backend_http_responses_total" in body


def test_slot_growth_reloads_once_then_serves_all(hx: Harness) -> None:
    pool = [start_backend(f"G{i}") for i in range(6)]
    try:
        hx.world.backend_service("svc", pool[:2])
        hx.world.add(ingress("i", [rule("g.example.com", path("/", "Prefix", "svc"))]))
        hx.sync()
        hx.world.set_endpoints("svc", [("127.0.0.1", b.port) for b in pool[:4]])
        assert not hx.sync().reloaded  # 4 fit the minimum slots
        hx.world.set_endpoints("svc", [("127.0.0.1", b.port) for b in pool])
        assert hx.sync().reloaded  # 6 > 4: grow to 8 slots
        seen = {hx.get("g.example.com", "/").name for _ in range(24)}
        assert seen == {b.name for b in pool}
        hx.world.set_endpoints("svc", [("127.0.0.1", pool[0].port)])
        assert not hx.sync().reloaded  # shrinking keeps the 8 slots: no reload
        assert {hx.get("g.example.com", "/").name for _ in range(8)} == {"G0"}
    finally:
        for b in pool:
            b.stop()


def test_rejected_render_quarantines_owner_and_keeps_others(
    hx: Harness, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.backend_service("svc-b", [backends["B"]])
    hx.world.add(ingress("good", [rule("good.example.com", path("/", "Prefix", "svc-a"))]))
    hx.sync()
    real_check = hx.plane.check

    def picky(rendered: Rendered) -> CheckResult:
        # Pretend HAProxy rejects the section of svc-b's backend (owned by "poison").
        lines = rendered.files["haproxy.cfg"].splitlines()
        bad = tuple(i + 1 for i, ln in enumerate(lines)
                    if ln.startswith("backend be_default_svc-b"))
        if bad:
            return CheckResult(False, f"[ALERT] parsing [haproxy.cfg:{bad[0]}] : boom", bad)
        return real_check(rendered)

    monkeypatch.setattr(hx.plane, "check", picky)
    hx.world.add(
        ingress("poison", [rule("poison.example.com", path("/", "Prefix", "svc-b"))],
                annotations={"ingress.portico.dev/proxy-read-timeout": "9"}),
        ingress("other", [rule("other.example.com", path("/", "Prefix", "svc-a"))],
                annotations={"ingress.portico.dev/proxy-read-timeout": "7"}),
    )
    res = hx.syncer.sync(hx.world.snapshot())
    assert res.error is None and res.reloaded
    assert [(e.ref.name, e.reason) for e in res.events if e.reason == "ConfigRejected"] == [
        ("poison", "ConfigRejected")]
    assert hx.get("other.example.com", "/").name == "A"
    assert hx.get("good.example.com", "/").name == "A"
    assert hx.get("poison.example.com", "/").status == 404
    # Unchanged object: stays quarantined without another check.
    assert ("default", "poison") in {(r.namespace, r.name) for r in hx.syncer.quarantine}
    # A new resourceVersion is tried again (and fixed here by dropping the fake failure).
    monkeypatch.setattr(hx.plane, "check", real_check)
    hx.world.ingresses[("default", "poison")]["metadata"]["resourceVersion"] = "2"
    hx.sync()
    assert hx.get("poison.example.com", "/").name == "B"
