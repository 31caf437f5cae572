"""Minimal status patches, conditions, and write_status over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.api.statusdiff import apply_merge_patch
from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.status import find_condition, merge_diff, set_condition, status_patch, write_status
from lab.emulator import Emulator

T0 = datetime(2030, 1, 1, tzinfo=UTC)
T1 = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)


def test_no_change_is_none() -> None:
    s = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}, "conditions": []}
    assert status_patch(s, dict(s)) is None
    assert status_patch({}, {}) is None


def test_only_changed_fields() -> None:
    old = {"a": 1, "nested": {"x": 1, "y": 2}, "gone": "z", "list": [1, 2]}
    new = {"a": 1, "nested": {"x": 1, "y": 3}, "list": [1, 2], "added": True}
    assert status_patch(old, new) == {"nested": {"y": 3}, "gone": None, "added": True}
    # lists are replaced whole, as merge patch demands
    assert status_patch({"l": [1, 2]}, {"l": [1]}) == {"l": [1]}
    # None in new means absent
    assert status_patch({"a": 1}, {"a": None}) == {"a": None}
    assert status_patch({"a": None}, {}) is None
    # type changes are changes (1 vs True, dict vs scalar)
    assert status_patch({"a": 1}, {"a": True}) == {"a": True}
    assert status_patch({"a": {"b": 1}}, {"a": 5}) == {"a": 5}


@pytest.mark.parametrize("old,new", [
    ({}, {"a": {"b": {"c": 1}}}),
    ({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}, "d": "e"}),
    ({"x": {"y": {"z": 1}}}, {"x": {}}),
    ({"k": "v"}, {}),
])
def test_diff_then_apply_round_trips(old: dict[str, object], new: dict[str, object]) -> None:
    patch = merge_diff(old, new)
    assert patch is not None
    assert apply_merge_patch(old, patch) == new


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    c1 = set_condition([], "Ready", True, "Allocated", "ok", T0)
    assert c1 == [{"type": "Ready", "status": "True", "reason": "Allocated", "message": "ok",
                   "lastTransitionTime": "2030-01-01T00:00:00Z"}]
    c2 = set_condition(c1, "Ready", "True", "Allocated", "ok", T1)
    assert c2 == c1 and status_patch({"conditions": c1}, {"conditions": c2}) is None
    c3 = set_condition(c2, "Ready", True, "Reallocated", "moved", T1)
    assert c3[0]["lastTransitionTime"] == "2030-01-01T00:00:00Z"  # reason change only
    c4 = set_condition(c3, "Ready", False, "PoolExhausted", "none left", T1)
    assert c4[0]["lastTransitionTime"] == "2030-01-01T00:05:00Z"
    c5 = set_condition(c4, "Other", "Unknown", "Init", "", T1, observed_generation=3)
    assert [c["type"] for c in c5] == ["Ready", "Other"]
    assert find_condition(c5, "Other") == c5[1] and c5[1]["observedGeneration"] == 3
    with pytest.raises(ValueError):
        set_condition([], "Ready", "maybe", "R", "", T0)


def test_write_status_patches_only_on_change(emu: Emulator) -> None:
    kube = KubeClient.from_environment(server=emu.url)
    svc = kube.create(R.SERVICES, {"metadata": {"name": "s", "namespace": "a"},
                                   "spec": {"type": "LoadBalancer"}})
    want = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]},
            "conditions": set_condition([], "Ready", True, "IPAllocated", "ok", T0)}
    got = write_status(kube, R.SERVICES, svc, want)
    assert got is not None and got["status"] == want
    assert emu.count("PATCH", "/services/s/status") == 1
    assert write_status(kube, R.SERVICES, got, want) is None  # no request at all
    assert emu.count("PATCH") == 1
    want2 = {**want, "loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}
    got2 = write_status(kube, R.SERVICES, got, want2)
    assert got2 is not None and got2["status"] == want2
    body_sent = [t for v, t, _ in emu.log if v == "PATCH"]
    assert len(body_sent) == 2


def test_write_status_to_cluster_scoped_crd(emu: Emulator) -> None:
    kube = KubeClient.from_environment(server=emu.url)
    pool = kube.create(R.IPADDRESSPOOLS, {"metadata": {"name": "p"}, "spec": {}})
    got = write_status(kube, R.IPADDRESSPOOLS, pool, {"ipv4": {"total": 256}})
    assert got is not None and got["status"] == {"ipv4": {"total": 256}}
    assert emu.count("PATCH", "/ipaddresspools/p/status") == 1
