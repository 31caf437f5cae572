"""The Ingress spec's path-matching table, host rules and defaults, through real HAProxy.

Table: kubernetes.io/docs/concepts/services-networking/ingress/#examples (every row).
Each row gets its own host; path i of a row routes to backend "ABC"[i]; misses go to the
default backend D (a separate Ingress's spec.defaultBackend).
"""

from __future__ import annotations

import socket

import pytest

from lab.ingress_kit import Backends, Harness, get, ingress, path, rule

# (kind(s), paths, request path, expected backend or "D" for the default backend)
TABLE: list[tuple[list[str], list[str], str, str]] = [
    (["Prefix"], ["/"], "/", "A"),
    (["Prefix"], ["/"], "/anything/at/all", "A"),
    (["Exact"], ["/foo"], "/foo", "A"),
    (["Exact"], ["/foo"], "/bar", "D"),
    (["Exact"], ["/foo"], "/foo/", "D"),
    (["Exact"], ["/foo/"], "/foo", "D"),
    (["Prefix"], ["/foo"], "/foo", "A"),
    (["Prefix"], ["/foo"], "/foo/", "A"),
    (["Prefix"], ["/foo/"], "/foo", "A"),
    (["Prefix"], ["/foo/"], "/foo/", "A"),
    (["Prefix"], ["/aaa/bb"], "/aaa/bbb", "D"),
    (["Prefix"], ["/aaa/bbb"], "/aaa/bbb", "A"),
    (["Prefix"], ["/aaa/bbb/"], "/aaa/bbb", "A"),
    (["Prefix"], ["/aaa/bbb"], "/aaa/bbb/", "A"),
    (["Prefix"], ["/aaa/bbb"], "/aaa/bbb/ccc", "A"),
    (["Prefix"], ["/aaa/bbb"], "/aaa/bbbxyz", "D"),
    (["Prefix", "Prefix"], ["/", "/aaa"], "/aaa/ccc", "B"),
    (["Prefix", "Prefix", "Prefix"], ["/", "/aaa", "/aaa/bbb"], "/aaa/bbb", "C"),
    (["Prefix", "Prefix", "Prefix"], ["/", "/aaa", "/aaa/bbb"], "/ccc", "A"),
    (["Prefix"], ["/aaa"], "/ccc", "D"),
    (["Prefix", "Exact"], ["/foo", "/foo"], "/foo", "B"),
    # Extra rows: query strings are not part of the path; ImplementationSpecific = Prefix.
    (["Exact"], ["/foo"], "/foo?x=1", "A"),
    (["ImplementationSpecific"], ["/imp"], "/imp/x", "A"),
    (["ImplementationSpecific"], ["/imp"], "/impx", "D"),
]


@pytest.fixture
def table_world(hx: Harness, backends: Backends) -> Harness:
    for name in "ABCD":
        hx.world.backend_service(f"svc-{name.lower()}", [backends[name]])
    for row, (kinds, paths, _req, _exp) in enumerate(TABLE):
        hx.world.add(ingress(f"row{row}", [rule(
            f"row{row}.example.com",
            *[path(p, k, f"svc-{'abc'[i]}") for i, (k, p) in enumerate(zip(kinds, paths,
                                                                          strict=True))],
        )]))
    hx.world.add(ingress("zz-default", [], default=("svc-d", 80), created="2025-02-01T00:00:00Z"))
    res = hx.sync()
    assert not [e for e in res.events if e.type == "Warning"], res.events
    return hx


@pytest.mark.lab
def test_spec_path_table(table_world: Harness) -> None:
    failures = []
    for row, (kinds, paths, req, expected) in enumerate(TABLE):
        got = table_world.get(f"row{row}.example.com", req).name
        if got != expected:
            failures.append(f"row {row}: {kinds} {paths} GET {req} -> {got}, want {expected}")
    assert not failures, "\n".join(failures)


@pytest.mark.lab
def test_hosts_and_wildcards(hx: Harness, backends: Backends) -> None:
    for name in "ABCD":
        hx.world.backend_service(f"svc-{name.lower()}", [backends[name]])
    hx.world.add(
        ingress("exact", [rule("foo.bar.com", path("/", "Prefix", "svc-a"))]),
        ingress("wild", [rule("*.bar.com", path("/", "Prefix", "svc-b"))]),
        ingress("nohost", [rule(None, path("/", "Prefix", "svc-c"))]),
    )
    hx.sync()
    assert hx.get("foo.bar.com", "/").name == "A"  # exact beats wildcard
    assert hx.get("FOO.Bar.com:8080", "/").name == "A"  # case and port ignored
    assert hx.get("baz.bar.com", "/x").name == "B"  # wildcard, one label
    assert hx.get("bar.com", "/").name == "C"  # wildcard needs a label: falls to host-less
    assert hx.get("a.baz.bar.com", "/").name == "C"  # only ONE label matches the wildcard
    assert hx.get("other.example", "/").name == "C"
    # Odd literal hosts select exactly what normalisation would (fast and slow path agree).
    assert hx.get("*.bar.com", "/").name == "B"
    assert hx.get("_", "/").name == "C"
    assert hx.get("BAZ.BAR.COM", "/").name == "B"
    # HTTP/1.0 without any Host header: the rules without host apply.
    with socket.create_connection(("127.0.0.1", hx.settings.http_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b'"name": "C"' in data


@pytest.mark.lab
def test_builtin_404_and_503_without_endpoints(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("i", [rule("h.example.com", path("/up", "Prefix", "svc-a"),
                                    path("/down", "Prefix", "svc-empty"),
                                    path("/none", "Prefix", "svc-missing"))]))
    hx.world.backend_service("svc-empty", [])
    hx.sync()
    assert hx.get("h.example.com", "/up").name == "A"
    assert hx.get("h.example.com", "/down").status == 503
    assert hx.get("h.example.com", "/none").status == 503
    nf = hx.get("h.example.com", "/elsewhere")
    assert nf.status == 404 and b"404" in nf.body


@pytest.mark.lab
def test_forwarded_headers(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("i", [rule("h.example.com", path("/", "Prefix", "svc-a"))]))
    hx.sync()
    r = hx.get("h.example.com", "/", headers={"X-Forwarded-Proto": "https"})
    seen = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"  # client's claim replaced, not trusted


@pytest.mark.lab
def test_service_port_by_name(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("i", [rule("h.example.com", path("/", "Prefix", "svc-a", "http"))]))
    hx.sync()
    assert hx.get("h.example.com", "/").name == "A"


@pytest.mark.lab
def test_unknown_port_is_503(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("i", [rule("h.example.com", path("/", "Prefix", "svc-a", 81))]))
    hx.sync()
    assert get(hx.settings.http_port, "h.example.com", "/").status == 503


@pytest.mark.lab
def test_encoded_slash_path_is_refused_like_empty_segments(hx: Harness,
                                                           backends: Backends) -> None:
    # The API server refuses '%2F' in Exact/Prefix paths (as '//', '/./', '/../'): HAProxy
    # would route on segments a decoding backend sees differently.
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("i", [rule("h.example.com", path("/a%2Fb", "Prefix", "svc-a"),
                                    path("/c%2fd", "Exact", "svc-a"),
                                    path("/x//y", "Prefix", "svc-a"),
                                    path("/ok", "Prefix", "svc-a"))]))
    res = hx.sync()
    assert [(e.reason, e.message) for e in res.events if e.type == "Warning"] == [
        ("InvalidIngress", "spec.rules[0].http.paths[0].path: must not contain '%2F' "
                           "(an encoded '/')"),
        ("InvalidIngress", "spec.rules[0].http.paths[1].path: must not contain '%2F' "
                           "(an encoded '/')"),
        ("InvalidIngress", "spec.rules[0].http.paths[2].path: must not contain empty "
                           "segments ('//')")]
    assert hx.get("h.example.com", "/ok/x").name == "A"
    for target in ("/a%2Fb", "/a%2Fb/x", "/c%2fd"):
        assert hx.get("h.example.com", target).status == 404, target
