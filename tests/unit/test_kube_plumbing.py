"""Backoff, clocks, resource paths and the health/metrics server."""

from __future__ import annotations

import threading
import time

import pytest
import urllib3
from prometheus_client import CollectorRegistry, Counter

from common.errors import KubeError
from common.kube import resources as R
from common.kube.backoff import Backoff, KeyedBackoff, full_jitter
from common.kube.clock import rfc3339, rfc3339_micro
from common.kube.serve import parse_addr, start_http_server
from lab.fakeclock import FakeClock


def test_full_jitter_window() -> None:
    assert full_jitter(0, 0.5, 30, lambda: 1.0) == 0.5
    assert full_jitter(3, 0.5, 30, lambda: 1.0) == 4.0
    assert full_jitter(10, 0.5, 30, lambda: 1.0) == 30.0
    assert full_jitter(10_000, 0.5, 30, lambda: 1.0) == 30.0  # no overflow
    assert full_jitter(3, 0.5, 30, lambda: 0.25) == 1.0


def test_backoff_floor_and_reset() -> None:
    b = Backoff(base=0.1, cap=1.0, floor=0.05, rand=lambda: 0.0)
    assert [b.next() for _ in range(3)] == [0.05, 0.05, 0.05]
    b2 = Backoff(base=0.1, cap=1.0, floor=0.0, rand=lambda: 1.0)
    assert [round(b2.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b2.reset()
    assert b2.next() == 0.1
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


def test_keyed_backoff_is_per_key() -> None:
    kb: KeyedBackoff[str] = KeyedBackoff(base=1, cap=10, floor=0, rand=lambda: 1.0)
    assert (kb.next("a"), kb.next("a"), kb.next("b")) == (1, 2, 1)
    kb.forget("a")
    assert kb.next("a") == 1 and kb.failures("b") == 1


def test_fake_clock_blocks_until_advanced() -> None:
    clock = FakeClock()
    woke = threading.Event()

    def sleeper() -> None:
        clock.sleep(5)
        woke.set()

    t = threading.Thread(target=sleeper)
    t.start()
    assert clock.wait_for_sleepers(1)
    clock.advance(4.9)
    assert not woke.wait(0.05)
    clock.advance(0.1)
    assert woke.wait(5)
    assert rfc3339(clock.now()) == "2030-01-01T00:00:05Z"
    assert rfc3339_micro(clock.now()) == "2030-01-01T00:00:05.000000Z"
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_fake_clock_wait_returns_on_event_and_auto_advance() -> None:
    clock = FakeClock()
    ev = threading.Event()
    threading.Timer(0.05, ev.set).start()
    assert clock.wait(ev, 100) is True and clock.monotonic() == 0
    auto = FakeClock(auto_advance=True)
    auto.sleep(3)
    assert auto.wait(threading.Event(), 2) is False
    assert auto.monotonic() == 5 and auto.slept == [3, 2]


def test_resource_paths() -> None:
    assert R.SERVICES.api_path("a", "b", "status") == "/api/v1/namespaces/a/services/b/status"
    assert R.SERVICES.api_path() == "/api/v1/services"
    assert R.NODES.api_path("ignored", "n1") == "/api/v1/nodes/n1"
    assert R.LEASES.api_path("kube-system", "x") == (
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x")
    assert R.BGPPEERS.api_path(None, "p") == "/apis/lb.portico.dev/v1alpha1/bgppeers/p"
    assert R.INGRESSES.api_version == "networking.k8s.io/v1"
    for bad in ("a/b", "..", "x\r\n", "", "q?x"):
        with pytest.raises(KubeError):
            R.SERVICES.api_path("ns", bad)
    with pytest.raises(KubeError):
        R.SERVICES.api_path("ns", None, "status")
    assert R.object_key({"metadata": {"name": "n"}}) == ("", "n")


def test_parse_addr() -> None:
    assert parse_addr(":9100") == ("0.0.0.0", 9100)
    assert parse_addr("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_addr("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError):
        parse_addr("nope")


def test_health_server() -> None:
    ready = threading.Event()

    def is_ready() -> bool:
        if not ready.is_set():
            return False
        raise RuntimeError("broken check")  # must become 503, not a crash

    registry = CollectorRegistry()
    Counter("probe_total", "A metric only this registry has.", registry=registry).inc()
    srv = start_http_server("127.0.0.1:0", is_ready, registry=registry)
    http = urllib3.PoolManager(retries=False, timeout=2)
    base = f"http://127.0.0.1:{srv.port}"
    try:
        assert http.request("GET", base + "/healthz").status == 200
        assert http.request("GET", base + "/readyz").status == 503
        ready.set()
        assert http.request("GET", base + "/readyz").status == 503
        m = http.request("GET", base + "/metrics")
        assert m.status == 200 and b"probe_total 1.0" in m.data
        assert http.request("GET", base + "/nope").status == 404
    finally:
        t0 = time.monotonic()
        srv.shutdown()
        assert time.monotonic() - t0 < 3


def test_http_server_start_does_no_reverse_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binding must not resolve the address back to a name: in a node namespace without a
    resolver that stalled a component's start for seconds."""
    import socket

    def no_dns(*_args: object) -> str:
        raise AssertionError("socket.getfqdn called")

    monkeypatch.setattr(socket, "getfqdn", no_dns)
    srv = start_http_server("127.0.0.1:0", lambda: True, registry=CollectorRegistry())
    try:
        resp = urllib3.request("GET", f"http://127.0.0.1:{srv.port}/healthz", timeout=5)
        assert resp.status == 200
    finally:
        srv.shutdown()
