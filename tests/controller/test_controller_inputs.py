"""Every bad input gets a clear condition / Event and leaves unrelated objects alone."""

from __future__ import annotations

import pytest

from common.errors import KubeError
from common.kube.resources import IPADDRESSPOOLS, SERVICES

from .conftest import Lab, eventually, eventually_passes, pool, service


@pytest.fixture
def running(lab: Lab) -> Lab:
    """A healthy pool and a healthy Service that no bad input may disturb."""
    lab.store.create(IPADDRESSPOOLS, pool("main", "192.0.2.0/28"))
    lab.store.create(SERVICES, service("bystander"), namespace="default")
    lab.start()
    assert lab.wait_ips("bystander") == ["192.0.2.0"]
    return lab


def _bystander_untouched(lab: Lab) -> None:
    assert lab.ips("bystander") == ["192.0.2.0"]
    cond = lab.condition("bystander")
    assert cond is not None and cond["status"] == "True"
    lab.assert_consistent()


@pytest.mark.parametrize(
    ("addresses", "reason", "field", "server_refuses"),
    [
        # The CRD schema's patterns keep malformed addresses out: the real server answers 422
        # and the controller never sees the pool. The parser agrees (tests/unit/test_crds.py).
        (["198.51.100.0/33"], "InvalidAddress", "spec.addresses[0]", True),
        (["198.51.100.1-2001:db8::1"], "MixedFamilyRange", "spec.addresses[0]", True),
        (["not-an-address"], "InvalidAddress", "spec.addresses[0]", True),
        # Well-formed but meaningless: only the controller can tell.
        (["198.51.100.10-198.51.100.5"], "ReversedRange", "spec.addresses[0]", False),
        (["198.51.100.0/28", "198.51.100.8-198.51.100.20"], "OverlappingRanges",
         "spec.addresses[1]", False),
    ],
)
def test_invalid_pool_reported_and_ignored(running: Lab, addresses: list[str], reason: str,
                                           field: str, server_refuses: bool) -> None:
    if server_refuses:
        with pytest.raises(KubeError) as refused:
            running.store.create(IPADDRESSPOOLS, pool("bad", *addresses))
        assert refused.value.status == 422 and field in str(refused.value)
        _bystander_untouched(running)
        return
    running.store.create(IPADDRESSPOOLS, pool("bad", *addresses))

    def check() -> None:
        conds = {c["type"]: c for c in running.pool_status("bad").get("conditions", [])}
        assert conds["Valid"]["status"] == "False"
        assert conds["Valid"]["reason"] == reason
        assert field in conds["Valid"]["message"]
        assert conds["Ready"]["status"] == "False"
    eventually_passes(check)
    assert running.events("bad", reason), "no Event for the invalid pool"
    _bystander_untouched(running)


def test_invalid_edit_keeps_last_good_pool(running: Lab) -> None:
    obj = running.store.get(IPADDRESSPOOLS, "main")
    assert obj is not None
    # Well-formed for the schema (the server stores it), wrong for the controller.
    obj["spec"]["addresses"] = ["192.0.2.0/28", "198.51.100.10-198.51.100.5"]
    running.store.update(IPADDRESSPOOLS, obj)
    eventually(lambda: any(c["type"] == "Valid" and c["status"] == "False"
                           and "last valid spec" in c["message"]
                           for c in running.pool_status("main").get("conditions", [])))
    # The typo releases nothing and the pool keeps serving new Services.
    running.store.create(SERVICES, service("after"), namespace="default")
    assert running.wait_ips("after") == ["192.0.2.1"]
    _bystander_untouched(running)


def test_overlapping_pool_marks_newer_conflicting(running: Lab) -> None:
    running.store.create(IPADDRESSPOOLS, pool("newer", "192.0.2.8/29"))

    def check() -> None:
        newer = {c["type"]: c for c in running.pool_status("newer").get("conditions", [])}
        older = {c["type"]: c for c in running.pool_status("main").get("conditions", [])}
        assert newer["Conflicting"]["status"] == "True"
        assert newer["Conflicting"]["reason"] == "PoolOverlap"
        assert "main" in newer["Conflicting"]["message"]
        assert older["Conflicting"]["status"] == "False"
    eventually_passes(check)
    running.store.create(SERVICES, service("wants-newer", annotations={
        "lb.portico.dev/address-pool": "newer"}), namespace="default")
    running.wait_reason("wants-newer", "PoolConflict")
    _bystander_untouched(running)


@pytest.mark.parametrize(
    ("annotations", "spec", "reason"),
    [
        ({"lb.portico.dev/address-pool": "nope"}, {}, "UnknownPool"),
        ({"lb.portico.dev/loadBalancerIPs": "203.0.113.5"}, {}, "AddressNotInPool"),
        ({"lb.portico.dev/loadBalancerIPs": "192.0.2.0"}, {}, "AddressInUse"),
        ({"lb.portico.dev/loadBalancerIPs": "192.0.2.3,192.0.2.4"}, {}, "DuplicateIPFamily"),
        ({"lb.portico.dev/loadBalancerIPs": "192.0.2.3"}, {"loadBalancerIP": "192.0.2.4"},
         "ConflictingAddressRequest"),
        ({}, {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}, "FamilyUnavailable"),
        ({"lb.portico.dev/loadBalancerIPs": "192.0.2.3\r\nX: y"}, {}, "InvalidAnnotation"),
    ],
)
def test_bad_service_request_pending_with_reason(running: Lab, annotations: dict[str, str],
                                                 spec: dict[str, object], reason: str) -> None:
    running.store.create(SERVICES, service("bad", annotations=annotations, **spec),
                         namespace="default")
    cond = running.wait_reason("bad", reason)
    assert cond["status"] == "False" and cond["message"]
    assert running.ips("bad") == []
    eventually(lambda: running.events("bad"))
    _bystander_untouched(running)


def test_sharing_conflict(running: Lab) -> None:
    share = {"lb.portico.dev/allow-shared-ip": "k", "lb.portico.dev/loadBalancerIPs": "192.0.2.9"}
    running.store.create(SERVICES, service("dns-tcp", ports=[("TCP", 53)], annotations=share),
                         namespace="default")
    running.store.create(SERVICES, service("dns-udp", ports=[("UDP", 53)], annotations=share),
                         namespace="default")
    assert running.wait_ips("dns-tcp") == ["192.0.2.9"]
    assert running.wait_ips("dns-udp") == ["192.0.2.9"]  # tcp/53 and udp/53 do not clash
    running.store.create(SERVICES, service("clash", ports=[("TCP", 53)], annotations=share),
                         namespace="default")
    running.wait_reason("clash", "SharingConflict")
    local = dict(share, **{"lb.portico.dev/loadBalancerIPs": "192.0.2.9"})
    running.store.create(SERVICES, service("local", ports=[("TCP", 8053)], annotations=local,
                                           externalTrafficPolicy="Local"), namespace="default")
    running.wait_reason("local", "SharingConflict")
    _bystander_untouched(running)


def test_pool_exhausted_then_served_when_freed(lab: Lab) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("tiny", "192.0.2.10/32"))
    lab.store.create(SERVICES, service("first"), namespace="default")
    lab.start()
    assert lab.wait_ips("first") == ["192.0.2.10"]
    lab.store.create(SERVICES, service("second"), namespace="default")
    cond = lab.wait_reason("second", "PoolExhausted")
    assert "tiny" in cond["message"]
    eventually(lambda: lab.events("second", "AllocationFailed"))
    lab.store.delete(SERVICES, "first", "default")
    assert lab.wait_ips("second") == ["192.0.2.10"]


def test_invalid_edit_of_service_keeps_its_address(running: Lab) -> None:
    obj = running.svc("bystander")
    obj["metadata"]["annotations"] = {"lb.portico.dev/loadBalancerIPs": "not-an-ip"}
    running.store.update(SERVICES, obj)
    cond = running.wait_reason("bystander", "InvalidAnnotation")
    assert "keeping 192.0.2.0" in cond["message"]
    assert running.ips("bystander") == ["192.0.2.0"]
    # Nobody else gets the address meanwhile.
    running.store.create(SERVICES, service("other"), namespace="default")
    assert running.wait_ips("other") == ["192.0.2.1"]
