"""Services written for MetalLB keep working unedited: the controller honours MetalLB's
annotations (metallb.io/, metallb.universe.tf/), Portico's own win, and a disagreement
between spellings is a Warning Event plus a condition naming the annotations."""

from __future__ import annotations

from typing import Any

from common.api.model import REASON_CONFLICTING_ANNOTATIONS
from common.kube.resources import IPADDRESSPOOLS, SERVICES
from lb.core.status import ANNOTATION_CONFLICT_CONDITION

from .conftest import Lab, eventually, eventually_passes, pool, service


def _conflict(lab: Lab, name: str) -> dict[str, Any] | None:
    for c in (lab.svc(name).get("status") or {}).get("conditions") or []:
        if c["type"] == ANNOTATION_CONFLICT_CONDITION:
            return dict(c)
    return None


def test_metallb_annotations_are_honoured_on_the_real_server(lab: Lab) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("default-pool", "192.0.2.0/28"))
    lab.store.create(IPADDRESSPOOLS, pool("edge", "198.51.100.0/28", autoAssign=False))
    # metallb.io/ spelling: a fixed address.
    lab.store.create(SERVICES, service(
        "fixed", annotations={"metallb.io/loadBalancerIPs": "192.0.2.9"}), namespace="default")
    # deprecated metallb.universe.tf/ spelling: a pool that is not auto-assigned.
    lab.store.create(SERVICES, service(
        "pooled", annotations={"metallb.universe.tf/address-pool": "edge"}),
        namespace="default")
    # Two Services sharing one address with MetalLB's sharing key (different ports).
    for name, port in (("dns-udp", 53), ("dns-tcp", 5353)):
        lab.store.create(SERVICES, service(
            name, ports=[("TCP", port)],
            annotations={"metallb.io/allow-shared-ip": "dns",
                         "metallb.io/loadBalancerIPs": "198.51.100.7",
                         "metallb.io/address-pool": "edge"}, selector={"app": "dns"}),
            namespace="default")
    lab.start()
    assert lab.wait_ips("fixed") == ["192.0.2.9"]
    assert lab.wait_ips("pooled") == ["198.51.100.0"]
    assert lab.wait_ips("dns-udp") == lab.wait_ips("dns-tcp") == ["198.51.100.7"]
    for name in ("fixed", "pooled", "dns-udp", "dns-tcp"):
        assert _conflict(lab, name) is None
    # A MetalLB annotation naming a pool that does not exist: the message names it.
    lab.store.create(SERVICES, service(
        "lost", annotations={"metallb.io/address-pool": "gone"}), namespace="default")
    cond = lab.wait_reason("lost", "UnknownPool")
    assert "metallb.io/address-pool" in cond["message"]


def test_portico_annotation_wins_and_the_conflict_is_reported(lab: Lab) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("new", "192.0.2.0/28", autoAssign=False))
    lab.store.create(IPADDRESSPOOLS, pool("old", "198.51.100.0/28", autoAssign=False))
    lab.store.create(SERVICES, service("web", annotations={
        "lb.portico.dev/address-pool": "new", "metallb.io/address-pool": "old"}),
        namespace="default")
    lab.start()
    assert lab.wait_ips("web") == ["192.0.2.0"]
    cond = eventually(lambda: _conflict(lab, "web"))
    assert cond["status"] == "True"
    assert cond["reason"] == REASON_CONFLICTING_ANNOTATIONS
    assert "lb.portico.dev/address-pool='new'" in cond["message"]
    assert "metallb.io/address-pool='old'" in cond["message"]
    events = eventually(lambda: lab.events("web", REASON_CONFLICTING_ANNOTATIONS))
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert "lb.portico.dev/address-pool is used" in events[0]["message"]

    # The user removes MetalLB's annotation: the condition goes, the address stays.
    obj = lab.svc("web")
    del obj["metadata"]["annotations"]["metallb.io/address-pool"]
    lab.store.update(SERVICES, obj)

    def resolved() -> None:
        assert _conflict(lab, "web") is None
        assert lab.ips("web") == ["192.0.2.0"]
    eventually_passes(resolved)
    assert len(lab.events("web", REASON_CONFLICTING_ANNOTATIONS)) == 1
    lab.assert_consistent()
