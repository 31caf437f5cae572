"""Ingress status writes the API server refuses as such (422 Invalid, 403 Forbidden): one
Warning Event, no retry at every sync, another try once the Ingress changes. The shell runs
against the API emulator; no HAProxy is needed (only the status writer is exercised)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from common.api.model import ObjectRef
from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.events import EventRecorder
from ingress.controller import IngressController
from ingress.sync import SyncResult
from lab.emulator import Emulator
from lab.ingress_kit import CLASS, ingress, path, rule, service
from lab.wait import wait_until

VIP = "192.0.2.10"
STATUS = r"/ingresses/web/status"


@pytest.fixture
def ctl() -> Iterator[tuple[Emulator, IngressController]]:
    emu = Emulator(bookmark_interval=0.5).start()
    emu.store.create(R.INGRESSCLASSES, CLASS)
    lb_svc = service("ingress", ns="portico-system")
    lb_svc["status"] = {"loadBalancer": {"ingress": [{"ip": VIP}]}}
    emu.store.create(R.SERVICES, lb_svc, "portico-system")
    emu.store.create(R.INGRESSES, ingress("web", [rule("a.example", path("/", "Prefix", "a", 80))]),
                     "default")
    client = KubeClient.from_environment(server=emu.url)
    c = IngressController(client, None, EventRecorder(client, "ingress"),  # type: ignore[arg-type]
                          publish_service=("portico-system", "ingress"))
    c.start(sync_timeout=10)
    try:
        yield emu, c
    finally:
        c.stop()
        emu.stop()


def write(c: IngressController) -> None:
    model: Any = SimpleNamespace(ours=(ObjectRef("Ingress", "web", "default"),))
    c._write_status(c.snapshot(), SyncResult(model=model))


def refused_events(emu: Emulator) -> list[dict[str, Any]]:
    return [e for e in emu.store.list(R.EVENTS)
            if e["involvedObject"]["name"] == "web" and e["reason"] == "StatusWriteRefused"]


@pytest.mark.parametrize("code", [422, 403])
def test_refused_ingress_status_is_reported_once_and_retried_after_a_change(
        ctl: tuple[Emulator, IngressController], code: int) -> None:
    emu, c = ctl
    rule_ = emu.faults.fail("PATCH", STATUS, code, count=100)
    for _ in range(10):  # ten syncs (endpoint churn): one request, one Event
        write(c)
    assert rule_.hits == 1 and emu.count("PATCH", "/ingresses/web/status") == 1
    [ev] = refused_events(emu)
    assert ev["type"] == "Warning" and f"HTTP {code}" in ev["message"]
    assert f"injected fault {code}" in ev["message"]
    # The user edits the Ingress: the informer shows a new version, worth another try.
    obj = emu.store.get(R.INGRESSES, "web", "default")
    assert obj is not None
    old_rv = obj["metadata"]["resourceVersion"]
    emu.store.patch(R.INGRESSES, "web", {"metadata": {"labels": {"edited": "yes"}}}, "default")
    wait_until(lambda: (c.informers["ingresses"].store.get("default", "web") or {})
             .get("metadata", {}).get("resourceVersion") != old_rv)
    emu.faults.clear()
    write(c)
    assert emu.count("PATCH", "/ingresses/web/status") == 2
    got = emu.store.get(R.INGRESSES, "web", "default")
    assert got is not None and got["status"]["loadBalancer"]["ingress"] == [{"ip": VIP}]
    assert len(refused_events(emu)) == 1


def test_transient_failure_is_retried_at_the_next_sync(
        ctl: tuple[Emulator, IngressController]) -> None:
    emu, c = ctl
    emu.faults.fail("PATCH", STATUS, 500, count=2)
    for _ in range(3):
        write(c)
    assert emu.count("PATCH", "/ingresses/web/status") == 3
    assert not refused_events(emu)
