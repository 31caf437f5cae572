"""MetalLB's Service annotations (metallb.io/, metallb.universe.tf/) read by Portico's parser,
their precedence against lb.portico.dev/, and the conflict condition the controller writes."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from common.api.model import (
    ANN_ADDRESS_POOL,
    ANN_ALLOW_SHARED_IP,
    ANN_LOADBALANCER_IPS,
    REASON_CONFLICTING_ANNOTATIONS,
    LBService,
    annotation_spellings,
)
from common.api.parse import parse_service
from common.errors import InvalidObject
from lb.core.allocator import Allocator, Pending
from lb.core.status import (
    ANNOTATION_CONFLICT_CONDITION,
    SERVICE_CONDITION,
    Verdict,
    annotation_conflict_status,
    new_annotation_conflict,
    released_service_status,
    service_status,
)

NOW = "2026-12-07T00:00:00Z"
LATER = "2026-12-07T00:01:00Z"


def svc(annotations: dict[str, Any], **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80}],
                            "selector": {"app": "web"}}
    base.update(spec)
    return {"metadata": {"name": "web", "namespace": "prod", "uid": "u-1",
                         "annotations": annotations}, "spec": base}


def parsed(annotations: dict[str, Any], **spec: Any) -> LBService:
    s = parse_service(svc(annotations, **spec), None)
    assert s is not None
    return s


def test_spellings_in_precedence_order() -> None:
    assert annotation_spellings(ANN_LOADBALANCER_IPS) == (
        "lb.portico.dev/loadBalancerIPs", "metallb.io/loadBalancerIPs",
        "metallb.universe.tf/loadBalancerIPs")
    assert annotation_spellings(ANN_ADDRESS_POOL)[1:] == (
        "metallb.io/address-pool", "metallb.universe.tf/address-pool")
    assert annotation_spellings(ANN_ALLOW_SHARED_IP)[2] == "metallb.universe.tf/allow-shared-ip"


@pytest.mark.parametrize("prefix", ["metallb.io/", "metallb.universe.tf/"])
def test_metallb_spellings_alone_are_honoured(prefix: str) -> None:
    s = parsed({prefix + "loadBalancerIPs": "192.0.2.10, 2001:db8::10",
                prefix + "address-pool": " edge ", prefix + "allow-shared-ip": "dns"},
               ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    assert s.requested_ips == (ipaddress.ip_address("192.0.2.10"),
                               ipaddress.ip_address("2001:db8::10"))
    assert (s.requested_pool, s.sharing_key) == ("edge", "dns")
    assert s.pool_annotation == prefix + "address-pool"
    assert s.annotation_conflicts == ()


def test_portico_wins_and_the_conflict_names_both_annotations() -> None:
    s = parsed({ANN_ADDRESS_POOL: "portico-pool", "metallb.io/address-pool": "old-pool",
                "metallb.universe.tf/address-pool": "portico-pool"})
    assert s.requested_pool == "portico-pool"
    assert s.pool_annotation == ANN_ADDRESS_POOL
    (msg,) = s.annotation_conflicts
    assert msg == ("annotation lb.portico.dev/address-pool='portico-pool' disagrees with "
                   "metallb.io/address-pool='old-pool'; lb.portico.dev/address-pool is used")


def test_metallb_io_wins_over_the_deprecated_prefix() -> None:
    s = parsed({"metallb.io/allow-shared-ip": "a", "metallb.universe.tf/allow-shared-ip": "b"})
    assert s.sharing_key == "a"
    assert s.annotation_conflicts == (
        "annotation metallb.io/allow-shared-ip='a' disagrees with "
        "metallb.universe.tf/allow-shared-ip='b'; metallb.io/allow-shared-ip is used",)


def test_equal_values_in_several_spellings_are_no_conflict() -> None:
    s = parsed({ANN_LOADBALANCER_IPS: "192.0.2.10,2001:db8::10",
                "metallb.io/loadBalancerIPs": "192.0.2.10, 2001:db8::10",
                "metallb.universe.tf/loadBalancerIPs": " 192.0.2.10 ,2001:db8::10"},
               ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    assert s.annotation_conflicts == ()
    assert len(s.requested_ips) == 2


def test_a_present_but_empty_winner_hides_the_others_like_metallb() -> None:
    # MetalLB: a metallb.io/ key that is present wins even when empty.
    s = parsed({"metallb.io/loadBalancerIPs": "", "metallb.universe.tf/loadBalancerIPs":
                "192.0.2.10"})
    assert s.requested_ips == ()
    assert len(s.annotation_conflicts) == 1


def test_conflict_is_not_part_of_service_equality() -> None:
    a = parsed({"metallb.io/address-pool": "edge"})
    b = parsed({ANN_ADDRESS_POOL: "edge", "metallb.io/address-pool": "other"})
    assert a == b


def test_errors_name_the_spelling_in_force() -> None:
    with pytest.raises(InvalidObject) as info:
        parse_service(svc({"metallb.io/loadBalancerIPs": "192.0.2.300"}), None)
    assert [(p.field, p.reason) for p in info.value.problems] == [
        ("metadata.annotations['metallb.io/loadBalancerIPs']", "InvalidAnnotation")]
    with pytest.raises(InvalidObject) as info:
        parse_service(svc({"metallb.universe.tf/loadBalancerIPs": "192.0.2.3"},
                          loadBalancerIP="192.0.2.3"), None)
    (p,) = info.value.problems
    assert p.reason == "ConflictingAddressRequest"
    assert "metallb.universe.tf/loadBalancerIPs" in p.message
    with pytest.raises(InvalidObject) as info:
        parse_service(svc({"metallb.io/address-pool": "Bad_Name"}), None)
    assert info.value.problems[0].field == "metadata.annotations['metallb.io/address-pool']"


def test_control_characters_in_a_losing_spelling_are_quoted_in_the_message() -> None:
    s = parsed({ANN_ADDRESS_POOL: "edge", "metallb.io/address-pool": "x\r\ny"})
    (msg,) = s.annotation_conflicts
    assert "\n" not in msg and "\\r\\n" in msg


def test_unknown_pool_message_names_the_metallb_annotation() -> None:
    alloc = Allocator()
    result = alloc.allocate(parsed({"metallb.io/address-pool": "missing"}), {})
    assert isinstance(result, Pending)
    assert "annotation metallb.io/address-pool" in result.message


def test_conflict_condition_set_kept_and_removed() -> None:
    verdict = Verdict((ipaddress.ip_address("192.0.2.10"),), True, "IPAllocated", "ok")
    base = service_status(None, verdict, NOW)
    first = annotation_conflict_status(base, ["a disagrees with b"], NOW)
    cond = [c for c in first["conditions"] if c["type"] == ANNOTATION_CONFLICT_CONDITION]
    assert cond == [{"type": ANNOTATION_CONFLICT_CONDITION, "status": "True",
                     "reason": REASON_CONFLICTING_ANNOTATIONS,
                     "message": "a disagrees with b", "lastTransitionTime": NOW}]
    assert new_annotation_conflict(base, first) == "a disagrees with b"
    # Same conflict on the next reconcile: identical status, no second Event.
    again = annotation_conflict_status(service_status(first, verdict, LATER),
                                       ["a disagrees with b"], LATER)
    assert again == first
    assert new_annotation_conflict(first, again) is None
    # Another conflict: announced again.
    other = annotation_conflict_status(first, ["c disagrees with d"], LATER)
    assert new_annotation_conflict(first, other) == "c disagrees with d"
    # Resolved: the condition goes, the allocation condition stays.
    gone = annotation_conflict_status(first, [], LATER)
    assert [c["type"] for c in gone["conditions"]] == [SERVICE_CONDITION]
    assert new_annotation_conflict(first, gone) is None
    # A status without the condition is left as it is (no patch of an idle Service).
    assert annotation_conflict_status(base, [], LATER) == base


def test_released_service_drops_the_conflict_condition() -> None:
    verdict = Verdict((ipaddress.ip_address("192.0.2.10"),), True, "IPAllocated", "ok")
    status = annotation_conflict_status(service_status(None, verdict, NOW), ["x"], NOW)
    released = released_service_status(status, (ipaddress.ip_address("192.0.2.10"),))
    assert "conditions" not in released
