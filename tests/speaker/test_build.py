"""Snapshot building from API dicts, including hostile and invalid objects."""

from __future__ import annotations

import ipaddress

from speaker.core.build import build_snapshot, endpoints_by_service, node_info


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
