"""ingress.controller.IngressController on the shared reconcile loop (common.kube.loop), on
a fake clock: a burst of informer events is one sync, a failed sync is retried with the
loop's backoff (which events do not cut short), the HAProxy health check is a periodic key,
and a status write refused with 403 or 422 ends in one Event, not in retries. The informers
run against the API emulator; the Syncer is a stand-in (no HAProxy needed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from common.api.model import ObjectRef
from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.events import EventRecorder
from ingress.controller import DEBOUNCE_S, HEALTH, HEALTH_S, SYNC, IngressController
from ingress.sync import Snapshot, SyncResult
from lab.emulator import Emulator
from lab.fakeclock import FakeClock
from lab.ingress_kit import CLASS, ingress, path, rule, service
from lab.wait import wait_until

VIP = "192.0.2.10"
STATUS = r"/ingresses/web/status"


class Plane:
    def __init__(self) -> None:
        self.alive = True

    def running(self) -> bool:
        return self.alive

    def log_tail(self, _n: int) -> str:
        return "haproxy: gone"


class StubSyncer:
    """Answers like ingress.sync.Syncer: every Ingress of the snapshot is ours."""

    def __init__(self) -> None:
        self.plane = Plane()
        self.applied: object | None = "config"
        self.snapshots: list[Snapshot] = []
        self.errors: list[str] = []  # the next syncs fail with these

    def sync(self, snap: Snapshot) -> SyncResult:
        self.snapshots.append(snap)
        ours = tuple(ObjectRef("Ingress", i["metadata"]["name"], i["metadata"]["namespace"])
                     for i in snap.ingresses)
        model: Any = SimpleNamespace(ours=ours, secrets_wanted=frozenset())
        return SyncResult(model=model, error=self.errors.pop(0) if self.errors else None)


class World:
    def __init__(self, emu: Emulator, ctl: IngressController, syncer: StubSyncer,
                 clock: FakeClock) -> None:
        self.emu, self.ctl, self.syncer, self.clock = emu, ctl, syncer, clock
        # Handlers run in order: once this one saw an event, the controller has queued it.
        self.seen: list[str] = []  # resourceVersions of the Ingress events
        self.events = 0  # events of every informer
        ctl.informers["ingresses"].add_handler(
            lambda _t, obj: self.seen.append(obj["metadata"]["resourceVersion"]))
        for inf in ctl.informers.values():
            inf.add_handler(self._count)

    def _count(self, _type: str, _obj: Any) -> None:
        self.events += 1

    def step(self) -> bool:
        return self.ctl.loop.step()

    def refused_events(self) -> list[dict[str, Any]]:
        return [e for e in self.emu.store.list(R.EVENTS)
                if e["involvedObject"]["name"] == "web" and e["reason"] == "StatusWriteRefused"]

    def patch_web(self, n: int) -> None:
        """``n`` edits of the Ingress; returns once the controller has queued all of them."""
        for i in range(n):
            obj = self.emu.store.patch(R.INGRESSES, "web",
                                       {"metadata": {"labels": {"edit": str(i)}}}, "default")
        rv = obj["metadata"]["resourceVersion"]
        wait_until(lambda: rv in self.seen)


@pytest.fixture
def world() -> Iterator[World]:
    emu = Emulator(bookmark_interval=0.5).start()
    emu.store.create(R.INGRESSCLASSES, CLASS)
    lb_svc = service("ingress", ns="portico-system")
    lb_svc["status"] = {"loadBalancer": {"ingress": [{"ip": VIP}]}}
    emu.store.create(R.SERVICES, lb_svc, "portico-system")
    emu.store.create(R.INGRESSES, ingress("web", [rule("a.example", path("/", "Prefix", "a"))]),
                     "default")
    client = KubeClient.from_environment(server=emu.url)
    clock = FakeClock()
    syncer = StubSyncer()
    ctl = IngressController(client, syncer, EventRecorder(client, "ingress"),  # type: ignore[arg-type]
                            publish_service=("portico-system", "ingress"), clock=clock)
    w = World(emu, ctl, syncer, clock)
    ctl.start(sync_timeout=10)
    # The initial ADDED events (class, Service, Ingress) are queued before time moves.
    wait_until(lambda: w.events == 3)
    try:
        yield w
    finally:
        ctl.stop()
        emu.stop()


def test_a_burst_of_events_is_one_sync(world: World) -> None:
    w = world
    w.ctl.request_sync()
    assert not w.step()  # debouncing: the fake clock has not moved
    w.clock.advance(DEBOUNCE_S)
    assert w.step() and not w.step()
    assert w.ctl.syncs == 1 and w.ctl.ready.is_set()
    w.patch_web(20)  # twenty edits (plus our own status write): each an informer event
    assert not w.step()
    w.clock.advance(DEBOUNCE_S)
    assert w.step() and not w.step()
    assert w.ctl.syncs == 2
    labels = w.syncer.snapshots[-1].ingresses[0]["metadata"]["labels"]
    assert labels == {"edit": "19"}  # the one sync saw the newest state


def test_failed_sync_is_retried_with_backoff_that_events_do_not_cut_short(
        world: World) -> None:
    w = world
    w.syncer.errors = ["apply failed: boom"]
    w.ctl.request_sync()
    w.clock.advance(DEBOUNCE_S)
    assert w.step() and w.ctl.syncs == 1 and not w.ctl.ready.is_set()
    [(due, key)] = w.ctl.loop.queue.delayed()
    assert key == SYNC and due > w.clock.monotonic()
    w.patch_web(3)  # churn while the retry waits
    assert w.ctl.loop.queue.delayed() == [(due, SYNC)]
    w.clock.advance((due - w.clock.monotonic()) / 2)
    assert not w.step()
    w.clock.advance(due - w.clock.monotonic())
    assert w.step() and w.ctl.syncs == 2 and w.ctl.ready.is_set()
    assert w.ctl.loop.queue.failures(SYNC) == 0


def test_health_check_is_periodic_and_restarts_a_dead_haproxy(world: World) -> None:
    w = world
    t = threading.Thread(target=w.ctl.run, daemon=True)
    t.start()
    w.ctl.request_sync()
    w.clock.advance(DEBOUNCE_S)
    wait_until(lambda: w.ctl.syncs == 1)
    wait_until(lambda: len(w.seen) == 2)  # our status write comes back as an event ...
    w.clock.advance(DEBOUNCE_S)
    wait_until(lambda: w.ctl.syncs == 2)  # ... and is synced (status unchanged: no more)
    wait_until(lambda: any(k == HEALTH for _, k in w.ctl.loop.queue.delayed()))
    w.clock.advance(HEALTH_S)  # HAProxy alive: the check only schedules the next one
    wait_until(lambda: [k for _, k in w.ctl.loop.queue.delayed()] == [HEALTH]
             and w.ctl.loop.queue.delayed()[0][0] > w.clock.monotonic())
    assert w.ctl.syncs == 2 and w.syncer.applied == "config"
    w.syncer.plane.alive = False
    w.clock.advance(HEALTH_S)
    wait_until(lambda: w.syncer.applied is None)  # the next sync is a full apply
    w.clock.advance(DEBOUNCE_S)
    wait_until(lambda: w.ctl.syncs == 3)
    w.ctl.stop()
    t.join(5)
    assert not t.is_alive()


@pytest.mark.parametrize("code", [403, 422])
def test_refused_status_write_ends_in_one_event_not_in_retries(
        world: World, code: int) -> None:
    w = world
    rule_ = w.emu.faults.fail("PATCH", STATUS, code, count=1000)
    for _ in range(5):  # five syncs (endpoint churn, say)
        w.ctl.request_sync()
        w.clock.advance(DEBOUNCE_S)
        assert w.step()
        # The sync succeeded: nothing is scheduled again, no failure counted.
        assert w.ctl.loop.queue.delayed() == [] and w.ctl.loop.queue.failures(SYNC) == 0
    assert w.ctl.syncs == 5
    assert rule_.hits == 1 and w.emu.count("PATCH", "/ingresses/web/status") == 1
    [ev] = w.refused_events()
    assert ev["type"] == "Warning" and f"HTTP {code}" in ev["message"]
    w.clock.advance(3600)  # an hour later: still nothing retried by itself
    assert not w.step() and rule_.hits == 1
