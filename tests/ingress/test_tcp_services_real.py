"""ingress-nginx's tcp-services ConfigMap through real HAProxy, and its parse (bad entries)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from ingress.core.tcp_services import parse, pod_port
from ingress.sync import Snapshot
from lab.ingress_kit import Backend, Harness, free_port, get, service

pytestmark = pytest.mark.lab


def configmap(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "tcp-services", "namespace": "portico"}, "data": data}


def test_entries_and_problems() -> None:
    services, backends, events = parse(configmap({
        "5432": "db/postgres:5432",
        "6379": "cache/redis:6379:PROXY",
        "8883": "mqtt/broker:mqtt::PROXY",
        "22": "git/ssh:22",
        "x": "db/postgres:5432",
        "70000": "db/postgres:5432",
        "1234": "db/Bad_Name:5432",
        "1235": "no-slash:80",
    }))
    by_port = {s.port: s for s in services}
    assert sorted(by_port) == [22, 5432, 6379, 8883]
    assert by_port[22].pod_port == pod_port(22) == 10022  # no privilege needed
    assert by_port[6379].accept_proxy and not by_port[5432].accept_proxy
    assert backends[by_port[8883].backend].gw is not None
    assert backends[by_port[8883].backend].gw.send_proxy  # type: ignore[union-attr]
    assert backends[by_port[8883].backend].port == "mqtt"
    assert sorted(e.message.split("]")[0] for e in events) == [
        "data['1234'", "data['1235'", "data['70000'", "data['x'"]
    assert {e.reason for e in events} == {"InvalidTCPService"}


def test_tcp_service_passes_bytes_and_proxy_protocol(hx: Harness,
                                                     backends: dict[str, Backend]) -> None:
    hx.world.backend_service("svc-a", [backends["A"]], ns="db")
    # A raw TCP server that records what arrives first (to see the PROXY header).
    seen: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    hx.world.add(service("raw", "db", 7000))
    hx.world.set_endpoints("raw", [("127.0.0.1", srv.getsockname()[1])], ns="db")
    plain, proxied = free_port(), free_port()
    snap = hx.world.snapshot()
    snap = Snapshot(snap.ingresses, snap.classes, snap.services, snap.slices, snap.secrets,
                    None, configmap({str(plain): "db/svc-a:80",
                                     str(proxied): "db/raw:7000::PROXY"}))
    res = hx.syncer.sync(snap)
    assert res.error is None, res.error
    try:
        assert get(plain, "anything", "/x").name == "A"  # HTTP bytes through a TCP port
        with socket.create_connection(("127.0.0.1", proxied), timeout=5) as c:
            c.sendall(b"hello")
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                for _ in range(50):  # bounded: until the payload arrived
                    data += conn.recv(1000)
                    if b"hello" in data:
                        break
                seen.append(data)
        assert seen[0].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
        assert seen[0].endswith(b"hello")
    finally:
        srv.close()
