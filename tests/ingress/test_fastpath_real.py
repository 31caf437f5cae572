"""The per-request fast path (roots.map) answers exactly like the full routing rules, also
across Runtime API map changes; HAProxy start failures report only their own output."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ingress.core.model import build_model
from ingress.core.render import ROOTS_MAP, Rendered, Settings, render
from ingress.core.runtime import map_commands
from ingress.errors import HAProxyError
from ingress.haproxy import DataPlane
from lab.ingress_kit import CLASS, Backends, Harness, ingress, path, rule

from .conftest import need_haproxy


def _roots(*ings: dict[str, object]) -> dict[str, str]:
    r = render(build_model(list(ings), [CLASS], {}, {}), {}, None, Settings())
    assert r.entries is not None
    return dict(r.entries[ROOTS_MAP])


def test_roots_hold_only_hosts_whose_single_rule_is_prefix_root() -> None:
    got = _roots(
        ingress("a", [rule("root.example.com", path("/", "Prefix", "s"))]),
        ingress("b", [rule("two.example.com", path("/", "Prefix", "s"),
                           path("/x", "Prefix", "t"))]),
        ingress("c", [rule("exact.example.com", path("/", "Exact", "s"))]),
        ingress("d", [rule("*.w.example.com", path("/", "Prefix", "s"))]),
        ingress("e", [rule(None, path("/", "Prefix", "s"))]),
        ingress("f", [rule("impl.example.com", path("/", "ImplementationSpecific", "s"))]),
    )
    assert sorted(got) == ["impl.example.com", "root.example.com"]


def test_roots_map_is_added_last_and_removed_first() -> None:
    old: dict[str, dict[str, str]] = {"exact.map": {}, "prefix.map": {}, "hosts.map": {},
                                      ROOTS_MAP: {}}
    new: dict[str, dict[str, str]] = {"exact.map": {"h/": "b"}, "prefix.map": {"h/": "b"},
                                      "hosts.map": {"h": "h"}, ROOTS_MAP: {"h": "b"}}
    adds, dels = map_commands(old, new)
    assert [c.split()[2] for c in adds] == ["exact.map", "prefix.map", "hosts.map", ROOTS_MAP]
    adds, dels = map_commands(new, old)
    assert [c.split()[2] for c in dels] == [ROOTS_MAP, "hosts.map", "exact.map", "prefix.map"]


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.mark.lab
def test_root_host_fast_path_matches_full_rules_and_follows_runtime_changes(
    hx: Harness, backends: Backends
) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.backend_service("svc-b", [backends["B"]])
    hx.world.add(ingress("r", [rule("r.example.com", path("/", "Prefix", "svc-a"))]))
    assert hx.sync().reloaded
    # Normal form (roots.map), other spellings (normalised rules): the same backend.
    for host in ("r.example.com", "R.Example.COM", f"r.example.com:{hx.settings.http_port}"):
        for target in ("/", "/deep/path?q=1", "/x"):
            assert hx.get(host, target).name == "A", (host, target)
    # "OPTIONS *" has no path: no Prefix rule matches it, fast path or not (default: 404).
    out = _raw(hx.settings.http_port,
               b"OPTIONS * HTTP/1.1\r\nHost: r.example.com\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404"), out[:100]
    # The host gains a path: roots.map loses it at run time (no reload), /api is routed.
    hx.world.add(ingress("r2", [rule("r.example.com", path("/api", "Prefix", "svc-b"))]))
    res = hx.sync()
    assert res.error is None and not res.reloaded and res.runtime_commands > 0
    assert hx.get("r.example.com", "/api/v1").name == "B"
    assert hx.get("r.example.com", "/apix").name == "A"
    assert hx.get("r.example.com", "/").name == "A"


@pytest.mark.lab
def test_start_failure_reports_only_this_attempts_output(tmp_path: Path) -> None:
    need_haproxy()
    plane = DataPlane(str(tmp_path / "s"))
    plane.prepare()
    errors = []
    for word in ("bogusfirst", "bogussecond", "bogusthird"):
        bad = Rendered({"haproxy.cfg": f"global\n    {word} 1\n"}, {})
        with pytest.raises(HAProxyError) as exc:
            plane.apply(bad)
        errors.append(str(exc.value))
    plane.stop()
    assert "bogusthird" in errors[2]
    assert "bogusfirst" not in errors[2] and "bogussecond" not in errors[2]
    # It does not grow with retries (same failure, same size within a little noise).
    assert len(errors[2]) < 1.5 * len(errors[0]) + 200
