"""EventRecorder: Event shape, de-duplication, LRU bound, and never raising."""

from __future__ import annotations

from typing import Any

from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.events import EventRecorder
from lab.emulator import Emulator
from lab.fakeclock import FakeClock


def recorder(emu: Emulator, clock: FakeClock, **kw: Any) -> EventRecorder:
    kube = KubeClient.from_environment(server=emu.url, request_timeout=1)
    return EventRecorder(kube, "portico-controller", host="node-1", clock=clock, **kw)


def service(emu: Emulator, name: str = "web") -> dict[str, Any]:
    return emu.store.create(R.SERVICES, {"metadata": {"name": name, "namespace": "shop"}})


def events(emu: Emulator) -> list[dict[str, Any]]:
    return emu.store.list(R.EVENTS)


def test_event_shape(emu: Emulator, clock: FakeClock) -> None:
    svc = service(emu)
    recorder(emu, clock).record(svc, "Normal", "IPAllocated", "assigned 192.0.2.10")
    (ev,) = events(emu)
    assert ev["metadata"]["namespace"] == "shop"
    assert ev["metadata"]["name"].startswith("web.")
    assert ev["involvedObject"] == {
        "kind": "Service", "apiVersion": "v1", "name": "web", "namespace": "shop",
        "uid": svc["metadata"]["uid"], "resourceVersion": svc["metadata"]["resourceVersion"],
    }
    assert (ev["reason"], ev["type"], ev["count"]) == ("IPAllocated", "Normal", 1)
    assert ev["source"] == {"component": "portico-controller", "host": "node-1"}
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2030-01-01T00:00:00Z"


def test_cluster_scoped_object_events_go_to_default(emu: Emulator, clock: FakeClock) -> None:
    pool = emu.store.create(R.IPADDRESSPOOLS, {"metadata": {"name": "p"}})
    recorder(emu, clock).record(pool, "Warning", "PoolOverlap", "overlaps q")
    (ev,) = events(emu)
    assert ev["metadata"]["namespace"] == "default"
    assert ev["involvedObject"]["kind"] == "IPAddressPool"
    assert "namespace" not in ev["involvedObject"]


def test_repeats_within_window_bump_count(emu: Emulator, clock: FakeClock) -> None:
    svc = service(emu)
    rec = recorder(emu, clock)
    rec.record(svc, "Warning", "AllocationFailed", "pool exhausted")
    clock.advance(60)
    rec.record(svc, "Warning", "AllocationFailed", "pool exhausted")
    clock.advance(60)
    rec.record(svc, "Warning", "AllocationFailed", "pool exhausted")
    (ev,) = events(emu)
    assert ev["count"] == 3
    assert ev["firstTimestamp"] == "2030-01-01T00:00:00Z"
    assert ev["lastTimestamp"] == "2030-01-01T00:02:00Z"
    assert emu.count("POST", "/events") == 1 and emu.count("PATCH", "/events/") == 2
    # A different message, reason or type is a different Event.
    rec.record(svc, "Warning", "AllocationFailed", "no pool for IPv6")
    rec.record(svc, "Normal", "AllocationFailed", "pool exhausted")
    assert len(events(emu)) == 3


def test_outside_window_creates_new_event(emu: Emulator, clock: FakeClock) -> None:
    svc = service(emu)
    rec = recorder(emu, clock, window=600)
    rec.record(svc, "Normal", "IPAllocated", "m")
    clock.advance(601)
    rec.record(svc, "Normal", "IPAllocated", "m")
    assert sorted(e["count"] for e in events(emu)) == [1, 1]


def test_expired_event_is_recreated(emu: Emulator, clock: FakeClock) -> None:
    svc = service(emu)
    rec = recorder(emu, clock)
    rec.record(svc, "Normal", "IPAllocated", "m")
    (ev,) = events(emu)
    emu.store.delete(R.EVENTS, ev["metadata"]["name"], "shop")  # TTL expiry
    rec.record(svc, "Normal", "IPAllocated", "m")
    (ev2,) = events(emu)
    assert ev2["count"] == 1 and ev2["metadata"]["name"] != ev["metadata"]["name"]


def test_lru_bounds_memory(emu: Emulator, clock: FakeClock) -> None:
    rec = recorder(emu, clock, max_entries=2)
    a, b, c = service(emu, "a"), service(emu, "b"), service(emu, "c")
    for s in (a, b, c):
        rec.record(s, "Normal", "IPAllocated", "m")
    assert len(rec._seen) == 2
    rec.record(a, "Normal", "IPAllocated", "m")  # a was evicted: a new Event
    assert len(events(emu)) == 4
    rec.record(c, "Normal", "IPAllocated", "m")  # c still cached: bumped
    assert len(events(emu)) == 4


def test_api_failures_never_raise(emu: Emulator, clock: FakeClock) -> None:
    svc = service(emu)
    rec = recorder(emu, clock)
    emu.faults.fail("POST", "/events", 500)
    rec.record(svc, "Warning", "AllocationFailed", "x")
    assert rec.failures == 1 and events(emu) == []
    rec.record(svc, "Warning", "AllocationFailed", "x")
    emu.faults.fail("PATCH", "/events/", 503)
    rec.record(svc, "Warning", "AllocationFailed", "x")
    assert rec.failures == 2
    rec.record({"garbage": True}, "Weird", "not camel", "x\r\ny\x00")  # still no exception
    odd = [e for e in events(emu) if e["reason"] == "not camel"]
    assert odd and odd[0]["type"] == "Warning" and odd[0]["message"] == "x  y "


def test_long_message_truncated(emu: Emulator, clock: FakeClock) -> None:
    recorder(emu, clock).record(service(emu), "Normal", "Long", "x" * 5000)
    assert len(events(emu)[0]["message"]) == 1000
