"""Zero-failure updates under wrk load: Runtime API endpoint changes, seamless reloads,
long-lived (upgraded) connections surviving both."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from lab.ingress_kit import (
    Backend,
    Harness,
    ingress,
    path,
    rule,
    start_backend,
    wrk_load,
)

from .conftest import need_wrk

pytestmark = pytest.mark.lab


@pytest.fixture
def pool() -> Iterator[list[Backend]]:
    made = [start_backend(f"P{i}") for i in range(4)]
    yield made
    for b in made:
        b.stop()


def test_100_endpoint_changes_under_load_without_reload(hx: Harness, pool: list[Backend]) -> None:
    need_wrk()
    hx.world.backend_service("svc", pool[:2])
    hx.world.add(ingress("i", [rule("load.example.com", path("/", "Prefix", "svc"))]))
    hx.sync()
    before = hx.plane.master.show_proc()
    url = f"http://127.0.0.1:{hx.settings.http_port}/"
    commands = 0
    with wrk_load(url, "load.example.com", seconds=8) as box:
        time.sleep(0.5)
        for i in range(100):
            # Rotate through subsets of 1-3 backends; never zero (that would be a real 503).
            subset = [pool[(i + k) % 4] for k in range(1 + i % 3)]
            hx.world.set_endpoints("svc", [("127.0.0.1", b.port) for b in subset])
            res = hx.sync()
            assert not res.reloaded
            commands += res.runtime_commands
            time.sleep(0.05)
    (w,) = box
    after = hx.plane.master.show_proc()
    assert (after.master_pid, after.reloads) == (before.master_pid, before.reloads)
    assert commands >= 100
    assert w.requests > 1000, w.output
    assert (w.non_2xx, w.socket_errors) == (0, 0), w.output


def test_20_reloads_under_load_without_failures(hx: Harness, pool: list[Backend]) -> None:
    need_wrk()
    hx.world.backend_service("svc", pool[:2])
    hx.world.add(ingress("i", [rule("load.example.com", path("/", "Prefix", "svc"))]))
    hx.sync()
    before = hx.plane.master.show_proc()
    url = f"http://127.0.0.1:{hx.settings.http_port}/"
    with wrk_load(url, "load.example.com", seconds=10) as box:
        time.sleep(0.5)
        for i in range(20):
            hx.world.add(ingress(f"n{i}", [rule(f"n{i}.example.com",
                                                 path("/", "Prefix", "svc", 80))],
                                 annotations={"ingress.portico.dev/proxy-read-timeout":
                                              str(30 + i)}))
            assert hx.sync().reloaded
            time.sleep(0.15)
    (w,) = box
    after = hx.plane.master.show_proc()
    assert after.master_pid == before.master_pid and after.reloads == before.reloads + 20
    assert w.requests > 1000, w.output
    assert (w.non_2xx, w.socket_errors) == (0, 0), w.output


def _upgrade(port: int, host: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
              "Upgrade: echo\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "connection closed during upgrade"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _echo(s: socket.socket, text: str) -> bytes:
    s.sendall(text.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        assert chunk, "tunnel closed"
        data += chunk
    return data


def test_long_lived_connection_survives_other_changes_and_reloads(
    hx: Harness, pool: list[Backend]
) -> None:
    hx.world.backend_service("ws", [pool[0]])
    hx.world.backend_service("other", [pool[1]])
    hx.world.add(ingress("ws", [rule("ws.example.com", path("/", "Prefix", "ws"))]),
                 ingress("other", [rule("other.example.com", path("/", "Prefix", "other"))]))
    hx.sync()
    s = _upgrade(hx.settings.http_port, "ws.example.com")
    try:
        assert _echo(s, "hello") == b"P0:hello\n"
        for i in range(20):  # endpoint changes of ANOTHER backend (runtime API)
            hx.world.set_endpoints("other", [("127.0.0.1", pool[1 + i % 3].port)])
            assert not hx.sync().reloaded
            assert _echo(s, f"r{i}") == f"P0:r{i}\n".encode()
        hx.world.add(ingress("third", [rule("third.example.com",
                                             path("/", "Prefix", "other"))],
                             annotations={"ingress.portico.dev/proxy-read-timeout": "5"}))
        assert hx.sync().reloaded  # a structural change: the old worker keeps the tunnel
        assert _echo(s, "after-reload") == b"P0:after-reload\n"
    finally:
        s.close()


def test_new_ingresses_go_live_without_reload_through_spares(
    hx: Harness, pool: list[Backend]
) -> None:
    spares = hx.settings.spare_backends
    hx.world.backend_service("base", [pool[0]])
    hx.world.add(ingress("base", [rule("base.example.com", path("/", "Prefix", "base"))]))
    hx.sync()
    reloads = hx.plane.master.show_proc().reloads
    # New hosts and paths on an existing backend: maps only.
    hx.world.add(ingress("more", [rule("more.example.com", path("/x", "Exact", "base"))]))
    assert not hx.sync().reloaded
    assert hx.get("more.example.com", "/x").name == "P0"
    assert hx.get("more.example.com", "/y").status == 404
    # New Services: each takes a spare backend, until they run out.
    for i in range(spares):
        svc = f"new{i}"
        hx.world.backend_service(svc, [pool[1 + i % 3]])
        hx.world.add(ingress(svc, [rule(f"{svc}.example.com", path("/", "Prefix", svc))]))
        res = hx.sync()
        assert not res.reloaded and res.runtime_commands > 0
        assert hx.get(f"{svc}.example.com", "/").name == pool[1 + i % 3].name
    assert hx.plane.master.show_proc().reloads == reloads
    # Endpoint change of an aliased backend: runtime, on the spare.
    hx.world.set_endpoints("new0", [("127.0.0.1", pool[3].port)])
    assert not hx.sync().reloaded
    assert hx.get("new0.example.com", "/").name == "P3"
    # Deleting an aliased Ingress frees its spare (drained), still no reload.
    del hx.world.ingresses[("default", "new1")]
    assert not hx.sync().reloaded
    assert hx.get("new1.example.com", "/").status == 404
    # Spares exhausted (one freed, so two more): the second costs one reload that renders
    # every backend for real; all routes keep working.
    for svc in ("extra0", "extra1"):
        hx.world.backend_service(svc, [pool[2]])
        hx.world.add(ingress(svc, [rule(f"{svc}.example.com", path("/", "Prefix", svc))]))
    assert hx.sync().reloaded
    assert hx.plane.master.show_proc().reloads == reloads + 1
    assert not hx.syncer.aliases
    for i in range(spares):
        if i != 1:
            want = "P3" if i == 0 else pool[1 + i % 3].name
            assert hx.get(f"new{i}.example.com", "/").name == want
    assert hx.get("extra1.example.com", "/").name == "P2"
    assert hx.get("more.example.com", "/x").name == "P0"
