"""Snapshot building from API dicts, including hostile and invalid objects."""

from __future__ import annotations

import ipaddress

from speaker.core.build import (
    build_snapshot,
    endpoints_by_service,
    node_info,
    referenced_secrets,
)
from speaker.core.snapshot import SecretReadError


def svc(name: str, ip: str | None, cls: str | None = None, bad: bool = False) -> dict:  # type: ignore[type-arg]
    ann = {"lb.portico.dev/loadBalancerIPs": "not-an-ip"} if bad else {}
    spec: dict = {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],  # type: ignore[type-arg]
                  "externalTrafficPolicy": "Local"}
    if cls:
        spec["loadBalancerClass"] = cls
    return {"metadata": {"name": name, "namespace": "default", "annotations": ann},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": ip}] if ip else []}}}


def test_services_with_addresses_and_invalid_ones_keep_their_status() -> None:
    res = build_snapshot(
        services=[svc("a", "192.0.2.1"), svc("b", None), svc("c", "192.0.2.3", cls="other"),
                  svc("d", "192.0.2.4", bad=True), {"junk": 1}],  # type: ignore[list-item]
        endpoint_slices=[], nodes=[], pools=[], l2_advertisements=[])
    keys = [s.key for s in res.snapshot.services]
    assert keys == ["default/a", "default/d"]
    d = res.snapshot.services[1]
    assert d.status_ips == (ipaddress.ip_address("192.0.2.4"),) and d.traffic_policy == "Local"


def test_invalid_advertisement_is_left_out_and_reported() -> None:
    bad = {"metadata": {"name": "bad"}, "spec": {"nodeSelectors": [
        {"matchExpressions": [{"key": "k", "operator": "Near"}]}]}}
    good = {"metadata": {"name": "good"}, "spec": {"ipAddressPools": ["p"]}}
    res = build_snapshot(services=[], endpoint_slices=[], nodes=[], pools=[],
                         l2_advertisements=[bad, good])
    assert [a.name for a in res.snapshot.l2_advertisements] == ["good"]
    kind, name, problems = res.problems[0]
    assert (kind, name) == ("L2Advertisement", "bad") and problems
    assert problems[0].field.startswith("spec.nodeSelectors")


def test_nodes_and_endpoints() -> None:
    n = node_info({"metadata": {"name": "n1", "labels": {"a": "b"}}, "status": {
        "addresses": [{"type": "InternalIP", "address": "192.0.2.11"},
                      {"type": "Hostname", "address": "n1"},
                      {"type": "InternalIP", "address": "bogus"}],
        "conditions": [{"type": "Ready", "status": "False"}]}})
    assert n is not None and not n.ready and n.labels == {"a": "b"}
    assert n.addresses == (ipaddress.ip_address("192.0.2.11"),)
    assert node_info({"metadata": {}}) is None
    eps = endpoints_by_service([{
        "metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": "a"}},
        "endpoints": [{"nodeName": "n1", "conditions": {"ready": True}},
                      {"nodeName": "n2", "conditions": {"ready": False}},
                      {"nodeName": "n3"}, "junk"]}])
    assert [(e.node, e.ready) for e in eps["default/a"]] == [
        ("n1", True), ("n2", False), ("n3", True)]


def _peer(name: str, secret: dict | None) -> dict:  # type: ignore[type-arg]
    spec: dict = {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1"}  # type: ignore[type-arg]
    if secret is not None:
        spec["passwordSecret"] = secret
    return {"metadata": {"name": name}, "spec": spec}


PEERS = [_peer("omitted", {"name": "a"}), _peer("same", {"name": "b", "namespace": "portico"}),
         _peer("other", {"name": "c", "namespace": "kube-system"}), _peer("none", None),
         _peer("invalid", {"name": "Bad!"})]


def test_only_secrets_in_porticos_namespace_are_referenced() -> None:
    """Nothing outside the namespace Portico runs in is ever read (RBAC would refuse it)."""
    assert referenced_secrets(PEERS, "portico") == {("portico", "a"), ("portico", "b")}
    assert referenced_secrets(PEERS, "kube-system") == {("kube-system", "a"),
                                                        ("kube-system", "c")}


def test_snapshot_keeps_secrets_and_errors_of_referenced_secrets_only() -> None:
    res = build_snapshot(
        services=[], endpoint_slices=[], nodes=[], pools=[], l2_advertisements=[],
        bgp_peers=PEERS, namespace="portico",
        secrets={("portico", "a"): {"password": b"x"}, ("kube-system", "c"): {"password": b"y"},
                 ("portico", "unrelated"): {"password": b"z"}},
        secret_errors={("portico", "b"): SecretReadError(403, "forbidden"),
                       ("kube-system", "c"): SecretReadError(403, "forbidden")})
    snap = res.snapshot
    assert snap.namespace == "portico"
    assert set(snap.secrets) == {("portico", "a")}
    assert set(snap.secret_errors) == {("portico", "b")}
