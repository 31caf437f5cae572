"""Gateway API model (pure): hostnames, attachment, statuses with the spec's reasons, ports."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.gateway.model import (
    Inputs,
    allocate_ports,
    build,
    host_matches,
    intersect,
    service_name,
)
from lab.gateway_kit import (
    backend_ref,
    gateway,
    gateway_class,
    http_rule,
    httproute,
    listener,
    reference_grant,
    setup,
)

SVC = {"metadata": {"name": "svc", "namespace": "default"},
       "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
OTHER_SVC = {"metadata": {"name": "svc", "namespace": "other"},
             "spec": {"ports": [{"port": 80}]}}


def plan(*objs: dict[str, Any], services: dict[tuple[str, str], Any] | None = None,
         namespaces: dict[str, Any] | None = None) -> Any:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        kinds.setdefault(o["kind"], []).append(o)
    inp = Inputs(classes=tuple(kinds.get("GatewayClass", [gateway_class()])),
                 gateways=tuple(kinds.get("Gateway", [])),
                 httproutes=tuple(kinds.get("HTTPRoute", [])),
                 grpcroutes=tuple(kinds.get("GRPCRoute", [])),
                 grants=tuple(kinds.get("ReferenceGrant", [])),
                 namespaces=namespaces or {},
                 services=services if services is not None else {
                     ("default", "svc"): SVC, ("other", "svc"): OTHER_SVC})
    return build(inp, setup())


def conds(entry: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    return {c[0]: (c[1], c[2]) for c in entry["conditions"]}


@pytest.mark.parametrize(("pattern", "host", "hit"), [
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com", True),  # Gateway API: one or more labels
    ("*.example.com", "example.com", False),
    ("a.example.com", "a.example.com", True),
    ("a.example.com", "b.example.com", False),
])
def test_wildcards_match_one_or_more_labels(pattern: str, host: str, hit: bool) -> None:
    assert host_matches(pattern, host) is hit


@pytest.mark.parametrize(("lis", "route", "want"), [
    (None, [], ["_"]),
    (None, ["a.com"], ["a.com"]),
    ("a.com", [], ["a.com"]),
    ("*.foo.com", ["x.foo.com", "bar.com"], ["x.foo.com"]),
    ("x.foo.com", ["*.foo.com"], ["x.foo.com"]),
    ("*.foo.com", ["*.a.foo.com"], ["*.a.foo.com"]),
    ("*.a.foo.com", ["*.foo.com"], ["*.a.foo.com"]),
    ("a.com", ["b.com"], []),
])
def test_hostname_intersection(lis: str | None, route: list[str], want: list[str]) -> None:
    assert intersect(lis, route) == want


def test_class_and_gateway_accepted_and_listeners_programmed() -> None:
    p = plan(gateway("gw", listener("http")), httproute("r", http_rule(backend_ref("svc"))))
    assert conds({"conditions": p.class_status["portico"]})["Accepted"] == (True, "Accepted")
    st = p.gateway_status[("default", "gw")]
    li = st["listeners"][0]
    assert conds(li)["Programmed"] == (True, "Programmed")
    assert li["attachedRoutes"] == 1
    assert li["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                                    {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}]
    parent = p.route_status[("HTTPRoute", "default", "r")][0]
    assert conds(parent) == {"Accepted": (True, "Accepted"),
                             "ResolvedRefs": (True, "ResolvedRefs")}
    assert p.services[service_name("default", "gw")]["spec"]["type"] == "LoadBalancer"


def test_other_controllers_objects_are_not_touched() -> None:
    p = plan(gateway_class("theirs", "example.com/other"),
             gateway("gw", listener("http"), cls="theirs"),
             httproute("r", http_rule(backend_ref("svc"))))
    assert not p.gateway_status and not p.route_status and not p.services


@pytest.mark.parametrize(("route", "reason"), [
    (httproute("r", http_rule(backend_ref("svc")),
               parents=[{"name": "gw", "sectionName": "nope"}]), "NoMatchingParent"),
    (httproute("r", http_rule(backend_ref("svc")), ns="other",
               parents=[{"name": "gw", "namespace": "default"}]), "NotAllowedByListeners"),
    (httproute("r", http_rule(backend_ref("svc")), hostnames=["b.com"]),
     "NoMatchingListenerHostname"),
])
def test_route_not_accepted_reasons(route: dict[str, Any], reason: str) -> None:
    p = plan(gateway("gw", listener("http", hostname="a.com")), route)
    key = ("HTTPRoute", route["metadata"]["namespace"], "r")
    assert conds(p.route_status[key][0])["Accepted"] == (False, reason)
    assert p.gateway_status[("default", "gw")]["listeners"][0]["attachedRoutes"] == 0
    assert not p.rules


def test_allowed_routes_selector() -> None:
    gw = gateway("gw", listener("http", allowedRoutes={"namespaces": {
        "from": "Selector", "selector": {"matchLabels": {"team": "a"}}}}))
    route = httproute("r", http_rule(backend_ref("svc")), ns="other",
                      parents=[{"name": "gw", "namespace": "default"}])
    labelled = {"other": {"metadata": {"name": "other", "labels": {"team": "a"}}}}
    assert conds(plan(gw, route, namespaces=labelled).route_status[
        ("HTTPRoute", "other", "r")][0])["Accepted"][0] is True
    assert conds(plan(gw, route).route_status[
        ("HTTPRoute", "other", "r")][0])["Accepted"] == (False, "NotAllowedByListeners")


@pytest.mark.parametrize(("ref", "reason"), [
    (backend_ref("missing"), "BackendNotFound"),
    (backend_ref("svc", kind="Unknown", group="example.com"), "InvalidKind"),
    (backend_ref("svc", namespace="other"), "RefNotPermitted"),
])
def test_backend_ref_problems_answer_500(ref: dict[str, Any], reason: str) -> None:
    p = plan(gateway("gw", listener("http")), httproute("r", http_rule(ref)))
    parent = p.route_status[("HTTPRoute", "default", "r")][0]
    assert conds(parent)["ResolvedRefs"] == (False, reason)
    assert conds(parent)["Accepted"] == (True, "Accepted")
    assert [r.targets for r in p.rules] == [(("", 1),)]  # "" = answer 500


def test_reference_grant_permits_cross_namespace_backend() -> None:
    p = plan(gateway("gw", listener("http")),
             httproute("r", http_rule(backend_ref("svc", namespace="other"))),
             reference_grant("g", "other", "HTTPRoute", "default", "Service"))
    parent = p.route_status[("HTTPRoute", "default", "r")][0]
    assert conds(parent)["ResolvedRefs"] == (True, "ResolvedRefs")
    assert p.rules[0].targets[0][0].startswith("be_other_svc_80_")


def test_listener_conflicts_and_unsupported() -> None:
    p = plan(gateway("gw", listener("a", 80, "HTTP"), listener("b", 80, "HTTPS"),
                     listener("c", 81, "HTTP", "x.com"), listener("d", 81, "HTTP", "x.com"),
                     listener("e", 82, "UDP"),
                     listener("f", 83, "HTTP", allowedRoutes={"kinds": [{"kind": "FooRoute"}]})))
    by = {li["name"]: conds(li) for li in p.gateway_status[("default", "gw")]["listeners"]}
    assert by["a"]["Conflicted"] == (True, "ProtocolConflict")
    assert by["c"]["Conflicted"] == (True, "HostnameConflict")
    assert by["e"]["Accepted"] == (False, "UnsupportedProtocol")
    assert by["f"]["ResolvedRefs"] == (False, "InvalidRouteKinds")
    assert by["f"]["Programmed"][0] is False
    assert not p.frontends


def test_https_listener_needs_a_permitted_valid_secret() -> None:
    lis = listener("https", 443, "HTTPS", tls={"certificateRefs": [
        {"name": "cert", "namespace": "other"}]})
    p = plan(gateway("gw", lis))
    st = conds(p.gateway_status[("default", "gw")]["listeners"][0])
    assert st["ResolvedRefs"] == (False, "RefNotPermitted")
    p = plan(gateway("gw", lis), reference_grant("g", "other", "Gateway", "default", "Secret"))
    st = conds(p.gateway_status[("default", "gw")]["listeners"][0])
    assert st["ResolvedRefs"] == (False, "InvalidCertificateRef")  # granted, but missing


def test_ports_are_stable_and_distinct() -> None:
    a = gateway("a", listener("h", 80), listener("s", 443, "HTTP"))
    b = gateway("b", listener("h", 80))
    first = allocate_ports([a, b], {}, setup())
    assert len({tp for t in first.values() for tp in t.values()}) == 3
    # Recorded on the Services: a new Gateway never moves them, even on a hash collision.
    services = {("portico", service_name("default", n)): {"spec": {"ports": [
        {"port": p, "targetPort": tp} for p, tp in first[("default", n)].items()]}}
        for n in ("a", "b")}
    c = gateway("c", listener("h", 80))
    again = allocate_ports([c, b, a], services, setup())
    assert again[("default", "a")] == first[("default", "a")]
    assert again[("default", "b")] == first[("default", "b")]
    assert again[("default", "c")][80] not in {
        tp for t in first.values() for tp in t.values()}


def test_precedence_exact_then_longest_prefix_then_more_headers() -> None:
    rules = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "backendRefs": [backend_ref("svc")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/a"},
                      "headers": [{"name": "x", "value": "1"}]}],
         "backendRefs": [backend_ref("svc")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/a/b"}}],
         "backendRefs": [backend_ref("svc")]},
        {"matches": [{"path": {"type": "Exact", "value": "/a"}}],
         "backendRefs": [backend_ref("svc")]},
    ]
    p = plan(gateway("gw", listener("http")), httproute("r", *rules))
    assert [(r.match.path_kind, r.match.path, len(r.match.headers)) for r in p.rules] == [
        ("Exact", "/a", 0), ("Prefix", "/a/b", 0), ("Prefix", "/a", 1), ("Prefix", "/", 0)]


def test_unsafe_filter_values_are_refused_not_rendered() -> None:
    rule = http_rule(backend_ref("svc"), filters=[{
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {"set": [{"name": "X", "value": "a'b"}]}}])
    p = plan(gateway("gw", listener("http")), httproute("r", rule))
    parent = p.route_status[("HTTPRoute", "default", "r")][0]
    assert conds(parent)["ResolvedRefs"] == (False, "UnsupportedValue")


def test_grpc_matches_are_path_matches_on_service_and_method() -> None:
    rule = {"matches": [
        {"method": {"service": "echo.Echo", "method": "Say"}},
        {"method": {"service": "echo.Echo"}},
        {"method": {"method": "Say"}},
        {"method": {"type": "RegularExpression", "service": "echo\\..*", "method": "S.*"}},
        {"headers": [{"name": "x-v", "value": "1"}]},
    ], "backendRefs": [backend_ref("svc")]}
    route = httproute("g", rule)
    route["kind"] = "GRPCRoute"
    p = plan(gateway("gw", listener("http")), route)
    got = {(r.match.path_kind, r.match.path, len(r.match.headers)) for r in p.rules}
    assert got == {("Exact", "/echo.Echo/Say", 0), ("Regex", "/echo\\.Echo/[^/]+", 0),
                   ("Regex", "/[^/]+/Say", 0), ("Regex", "/echo\\..*/S.*", 0),
                   ("Prefix", "/", 1)}
    # gRPC backends speak HTTP/2 (cleartext) whatever the Service says.
    assert all(b.ann.backend_protocol == "GRPC" for b in p.backends.values())
