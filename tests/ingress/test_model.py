"""Pure routing model, annotations, slots and runtime commands (no I/O, no sleeps)."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.core.annotations import parse_annotations
from ingress.core.model import (
    Config,
    Endpoint,
    assign_slots,
    build_model,
    endpoints_for,
    slot_count,
)
from ingress.core.runtime import runtime_token, slot_commands
from ingress.core.validate import host_problem, path_problem, regex_problem
from ingress.errors import UnsafeToken
from lab.ingress_kit import CLASS, endpoint_slice, ingress, path, rule, service

N = "nginx.ingress.kubernetes.io/"
P = "ingress.portico.dev/"


def model(*ings: dict[str, Any], classes: list[dict[str, Any]] | None = None) -> Any:
    return build_model(list(ings), classes if classes is not None else [CLASS], {}, {})


def test_older_ingress_wins_conflicts_and_loser_gets_event() -> None:
    old = ingress("old", [rule("h.com", path("/a", "Prefix", "svc-old"))],
                  created="2024-01-01T00:00:00Z", ns="zz")
    new = ingress("new", [rule("h.com", path("/a/", "Prefix", "svc-new"),
                               path("/a", "Exact", "svc-new"))],
                  created="2025-01-01T00:00:00Z", ns="aa")
    for order in ((old, new), (new, old)):
        m = model(*order)
        routes = {(r.path, r.kind): r.backend for r in m.routes}
        assert "svc-old" in routes[("/a", "Prefix")]  # '/a/' equals '/a' for Prefix
        assert "svc-new" in routes[("/a", "Exact")]  # different kind: no conflict
        assert [(e.ref.name, e.reason) for e in m.events] == [("new", "RouteConflict")]


def test_same_age_tie_breaks_on_namespace_then_name() -> None:
    a = ingress("b", [rule("h.com", path("/", "Prefix", "svc-1"))], ns="a")
    b = ingress("a", [rule("h.com", path("/", "Prefix", "svc-2"))], ns="b")
    m = model(b, a)
    assert [r.owner.namespace for r in m.routes] == ["a"]


def test_default_backend_oldest_wins() -> None:
    a = ingress("a", [], default=("svc-a", 80), created="2024-01-01T00:00:00Z")
    b = ingress("b", [], default=("svc-b", 80), created="2023-01-01T00:00:00Z")
    m = model(a, b)
    assert m.default_backend is not None and "svc-b" in m.default_backend
    assert [(e.ref.name, e.reason) for e in m.events] == [("a", "RouteConflict")]


@pytest.mark.parametrize(("cls", "legacy", "default", "ours"), [
    ("portico", None, False, True),
    ("nginx", None, True, False),
    (None, "portico", False, True),
    (None, "nginx", True, False),
    (None, None, True, True),
    (None, None, False, False),
])
def test_class_resolution(cls: str | None, legacy: str | None, default: bool, ours: bool) -> None:
    ic: dict[str, Any] = {"metadata": {"name": "portico", "annotations": {}},
                          "spec": {"controller": "portico.dev/ingress"}}
    if default:
        ic["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] = "true"
    ing = ingress("i", [rule("h.com", path("/", "Prefix", "s"))], cls=cls,
                  annotations={"kubernetes.io/ingress.class": legacy} if legacy else None)
    m = build_model([ing], [ic], {}, {}, Config())
    assert bool(m.ours) is ours
    assert bool(m.routes) is ours


def test_other_controller_class_is_ignored_silently() -> None:
    other = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    m = model(ingress("i", [rule("bad host", path("/", "Prefix", "s"))], cls="nginx"),
              classes=[CLASS, other])
    assert not m.ours and not m.routes and not m.events


def test_invalid_annotation_rejects_whole_ingress_and_names_key() -> None:
    m = model(ingress("i", [rule("h.com", path("/", "Prefix", "s"))],
                      annotations={N + "whitelist-source-range": "10.0.0.0/8 ; allow all"}))
    assert not m.routes
    assert m.events[0].reason == "InvalidAnnotation"
    assert "whitelist-source-range" in m.events[0].message


def test_annotations_parse_and_alias() -> None:
    r = parse_annotations({N + "ssl-redirect": "false", P + "ssl-redirect": "true",
                           N + "proxy-read-timeout": "30", N + "proxy-send-timeout": "90",
                           N + "proxy-body-size": "8m", N + "affinity": "cookie",
                           N + "configuration-snippet": "more_set_headers x", N + "foo": "1",
                           N + "backend-protocol": "grpc"})
    a = r.value
    assert a.ssl_redirect is True  # portico name wins over the nginx one
    assert a.server_timeout_s == 90 and a.body_limit == 8 * 1024**2
    assert a.affinity_cookie == "PORTICO_AFFINITY" and a.backend_protocol == "GRPC"
    assert not r.errors
    keys = {k for k, _ in r.warnings}
    assert keys == {N + "configuration-snippet", N + "foo"}


@pytest.mark.parametrize(("key", "value"), [
    ("ssl-redirect", "yes"), ("proxy-read-timeout", "0"), ("proxy-read-timeout", "99999"),
    ("proxy-body-size", "1t"), ("backend-protocol", "FCGI"), ("affinity", "ip"),
    ("session-cookie-name", "a b"), ("rewrite-target", "/x'y"), ("rewrite-target", "/${X}"),
    ("permanent-redirect", "javascript:alert(1)"), ("permanent-redirect", "https://a/\r\nX: y"),
    ("permanent-redirect", "https://u:p@evil.example.com/"), ("permanent-redirect", "//a.com/"),
    ("permanent-redirect", "https://a.com/it's"), ("permanent-redirect", "https://a.com/%ci"),
    ("permanent-redirect", "https://a.com/%"), ("permanent-redirect", "https://a.com:99999/"),
    ("permanent-redirect", "https://a.com/{x}"), ("permanent-redirect", "https://a.com/a b"),
    ("allowlist-source-range", "1.2.3.4/33"), ("use-regex", "1"),
])
def test_annotation_values_rejected(key: str, value: str) -> None:
    assert parse_annotations({P + key: value}).errors


@pytest.mark.parametrize("url", [
    "https://example.com/new?x=1&y=2", "https://example.com", "http://example.com:8080/a#top",
    "https://example.com/a%2Fb?q=%41%2f", "https://[2001:db8::1]:8443/x", "https://192.0.2.1/",
    "https://example.com/p;v=1/(x)/$y/*!,~", "https://Example.COM/Path",
])
def test_permanent_redirect_accepts_absolute_urls(url: str) -> None:
    r = parse_annotations({N + "permanent-redirect": url})
    assert not r.errors and r.value.permanent_redirect == url


def test_bad_redirect_event_names_annotation_and_spares_other_ingresses() -> None:
    m = model(ingress("bad", [rule("bad.com", path("/", "Prefix", "s"))],
                      annotations={N + "permanent-redirect": "https://a.com/it's"}),
              ingress("good", [rule("good.com", path("/", "Prefix", "s"))],
                      annotations={N + "permanent-redirect": "https://a.com/?x=1&y=2"}))
    assert [(e.ref.name, e.reason) for e in m.events] == [("bad", "InvalidAnnotation")]
    assert N + "permanent-redirect" in m.events[0].message
    assert {r.owner.name for r in m.routes} == {"good"}


def test_tls_without_secret_name_is_a_tls_host_with_the_default_certificate() -> None:
    m = model(ingress("i", [rule("a.com", path("/", "Prefix", "s")),
                            rule("b.com", path("/", "Prefix", "s"))],
                      tls=[{"hosts": ["a.com"]}, {"hosts": ["b.com"], "secretName": ""}]),
              ingress("plain", [rule("c.com", path("/", "Prefix", "s"))]))
    assert not m.events
    assert not m.certs and not m.secrets_wanted
    redirect = {r.host: m.backends[r.backend].ssl_redirect for r in m.routes}
    assert redirect == {"a.com": True, "b.com": True, "c.com": False}


def test_tls_with_a_bad_secret_name_still_warns() -> None:
    m = model(ingress("i", [rule("a.com", path("/", "Prefix", "s"))],
                      tls=[{"hosts": ["a.com"], "secretName": "Bad_Name"}, "x"]))
    assert [e.message for e in m.events] == [
        "spec.tls[0].secretName: not a DNS-1123 name", "spec.tls[1]: must be an object"]


def test_encoded_slash_path_gets_the_same_event_as_empty_segments() -> None:
    m = model(ingress("i", [rule("a.com", path("/a%2Fb", "Prefix", "s"),
                                 path("/a//b", "Exact", "s"), path("/ok", "Prefix", "s"))]))
    assert [(e.reason, e.message) for e in m.events] == [
        ("InvalidIngress", "spec.rules[0].http.paths[0].path: must not contain '%2F' "
                           "(an encoded '/')"),
        ("InvalidIngress", "spec.rules[0].http.paths[1].path: must not contain empty "
                           "segments ('//')")]
    assert [r.path for r in m.routes] == ["/ok"]


def test_service_port_by_name_and_ready_endpoints() -> None:
    m = model(ingress("i", [rule("h.com", path("/", "Prefix", "svc", "web"))]))
    be = next(iter(m.backends.values()))
    svc = service("svc", port=8080, port_name="web")
    sl = endpoint_slice("svc", [("10.0.0.2", 9000), ("10.0.0.1", 9000)], port_name="web")
    not_ready = endpoint_slice("svc", [("10.0.0.3", 9000)], port_name="web", ready=False)
    bogus = endpoint_slice("svc", [("10.0.0.1;shutdown", 9000)], port_name="web")
    assert endpoints_for(be, svc, [sl, not_ready, bogus]) == (
        Endpoint("10.0.0.1", 9000), Endpoint("10.0.0.2", 9000))
    assert endpoints_for(be, None, [sl]) == ()  # Service missing -> no endpoints -> 503


def test_slots_grow_by_powers_of_two_and_keep_surviving_endpoints() -> None:
    assert slot_count(None, 0) == 4 and slot_count(None, 5) == 8 and slot_count(8, 2) == 8
    e = [Endpoint(f"10.0.0.{i}", 80) for i in range(6)]
    first = assign_slots((), tuple(e[:3]), 4)
    assert first == (e[0], e[1], e[2], None)
    second = assign_slots(first, (e[1], e[2], e[4]), 4)
    assert second == (None, e[1], e[2], e[4])  # e1/e2 stay; the empty slot is filled first
    # Enable the new endpoint before draining the old one: never zero ready servers.
    assert slot_commands("be_x", first, second) == [
        "set server be_x/s4 addr 10.0.0.4 port 80", "set server be_x/s4 state ready",
        "set server be_x/s1 state maint"]
    assert slot_commands("be_x", second, second) == []
    third = assign_slots(second, (e[1], e[2], e[4], e[5]), 4)
    assert third == (e[5], e[1], e[2], e[4])
    moved = assign_slots(third, (e[0], e[2], e[4], e[5]), 4)
    assert moved == (e[5], e[0], e[2], e[4])
    assert slot_commands("be_x", third, moved) == [
        "set server be_x/s2 state maint", "set server be_x/s2 addr 10.0.0.0 port 80",
        "set server be_x/s2 state ready"]


@pytest.mark.parametrize("bad", ["a b", "x;shutdown", "x\nset", "", "a" * 3000, "a\\b", "a\tb"])
def test_runtime_token_refuses(bad: str) -> None:
    with pytest.raises(UnsafeToken):
        runtime_token(bad)


@pytest.mark.parametrize(("host", "ok"), [
    ("foo.com", True), ("*.foo.com", True), ("FOO.com", False), ("*.*.foo.com", False),
    ("foo.*.com", False), ("-foo.com", False), ("1.2.3.4", False), ("a" * 64 + ".com", False),
    ("foo.com.", False), ("foo_bar.com", False), ("", False),
])
def test_host_validation(host: str, ok: bool) -> None:
    assert (host_problem(host) is None) is ok


@pytest.mark.parametrize(("p", "ok"), [
    ("/", True), ("/a/b-c_d.e~f", True), ("/%41x", True), ("/%zz", False), ("a", False),
    ("/%2Fx", False), ("/a%2fb", False), ("/a/%2F", False), ("/%252F", True),
    ("/a b", False), ("/a#b", False), ("/../etc", False), ("/a//b", False), ("/a?b", False),
    ("/$x", False), ("/{x}", False), ("/a'b", False), ("/a\\b", False),
])
def test_path_validation(p: str, ok: bool) -> None:
    assert (path_problem(p) is None) is ok


def test_regex_validation() -> None:
    assert regex_problem("/x(/|$)(.*)") is None
    assert regex_problem("/x(") is not None
    assert regex_problem("/x{2}") is not None
    assert regex_problem("/x\\d") is not None  # class escapes are not allow-listed
