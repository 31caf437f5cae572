"""speaker.main.Speaker on the shared reconcile loop (common.kube.loop), on a fake clock:
informer bursts become one rebuild, a steady stream still rebuilds every DEBOUNCE_MAX, a
failed announcer sync is retried by the loop, and stop() lets the rebuild in hand finish
before the announcers stop gracefully. The informers run against the API emulator; the
announcer is a stand-in (the real ones are exercised by tests/lab)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from common.kube import resources as R
from lab.emulator import Emulator
from lab.fakeclock import FakeClock
from lab.wait import wait_until
from speaker.core.snapshot import ClusterSnapshot
from speaker.main import DEBOUNCE, DEBOUNCE_MAX, SNAPSHOT, Speaker, parse_args


class FakeL2:
    """What Speaker needs of the layer-2 announcer."""

    def __init__(self) -> None:
        self.snapshots: list[ClusterSnapshot] = []
        self.fail = 0  # the next ``fail`` syncs raise
        self.stopped: list[bool] = []
        self.started = False

    def start(self) -> None:
        self.started = True

    def sync(self, snapshot: ClusterSnapshot) -> None:
        self.snapshots.append(snapshot)
        if self.fail:
            self.fail -= 1
            raise OSError("netlink hiccup")

    def stop(self, graceful: bool) -> None:
        self.stopped.append(graceful)

    def set_build_problems(self, problems: Any) -> None:
        pass

    def set_stale_conditions(self, services: Any) -> None:
        pass


def _close_real_l2(sp: Speaker) -> None:
    """The real announcer was built (it binds its liveness socket) but never started."""
    sp.l2.liveness.rx.close()
    for fd in (sp.l2.responder._wake_r, sp.l2.responder._wake_w):
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def world() -> Iterator[tuple[Emulator, Speaker, FakeL2, FakeClock]]:
    emu = Emulator(bookmark_interval=0.5).start()
    clock = FakeClock()
    args = parse_args(["--node-name", "n1", "--server", emu.url, "--liveness-port", "0",
                       "--liveness-in-process",
                       "--no-bgp", "--metrics-addr", "127.0.0.1:0", "--interfaces", "lo"])
    sp = Speaker(args, structlog.get_logger(), clock=clock)
    _close_real_l2(sp)
    fake = FakeL2()
    sp.l2 = fake  # type: ignore[assignment]
    sp.announcers = [fake]
    try:
        yield emu, sp, fake, clock
    finally:
        sp.stop()
        sp.loop.stop(5)
        for inf in sp.informers.values():
            inf.stop()
        emu.stop()


def _sync_informers(sp: Speaker) -> None:
    for inf in sp.informers.values():
        inf.start()
    for inf in sp.informers.values():
        assert inf.wait_for_sync(10)


def test_a_burst_of_informer_events_is_one_rebuild(
        world: tuple[Emulator, Speaker, FakeL2, FakeClock]) -> None:
    _emu, sp, fake, clock = world
    _sync_informers(sp)
    for _ in range(50):  # what the informers call for each event
        sp._on_event("MODIFIED", {})
    assert not sp.loop.step()
    clock.advance(DEBOUNCE)
    assert sp.loop.step() and not sp.loop.step()
    assert sp.rebuilds == 1 and len(fake.snapshots) == 1


def test_steady_events_still_rebuild_every_debounce_max(
        world: tuple[Emulator, Speaker, FakeL2, FakeClock]) -> None:
    _emu, sp, _fake, clock = world
    _sync_informers(sp)
    tick = 1 / 128  # < DEBOUNCE: never a quiet period; a power of two keeps sums exact
    times = []
    for _ in range(128):
        sp._on_event("MODIFIED", {})
        clock.advance(tick)
        if sp.loop.step():
            times.append(clock.monotonic())
    assert len(times) == 4  # at 26/128, 52/128, ...: the first tick past DEBOUNCE_MAX
    assert all(DEBOUNCE_MAX <= b - a <= DEBOUNCE_MAX + tick
               for a, b in zip([0.0, *times], times, strict=False))


def test_failed_announcer_sync_is_retried_by_the_loop(
        world: tuple[Emulator, Speaker, FakeL2, FakeClock]) -> None:
    _emu, sp, fake, clock = world
    _sync_informers(sp)
    fake.fail = 1
    sp._on_event("ADDED", {})
    clock.advance(DEBOUNCE)
    assert sp.loop.step() and len(fake.snapshots) == 1
    [(due, key)] = sp.loop.queue.delayed()  # the loop owns the retry, with backoff
    assert key == SNAPSHOT and due > clock.monotonic()
    assert not sp.loop.step()
    clock.advance(due - clock.monotonic())
    assert sp.loop.step() and len(fake.snapshots) == 2
    assert sp.loop.queue.delayed() == [] and sp.loop.queue.failures(SNAPSHOT) == 0


def test_rebuild_waits_for_synced_informers(
        world: tuple[Emulator, Speaker, FakeL2, FakeClock]) -> None:
    _emu, sp, fake, clock = world
    sp._on_event("ADDED", {})
    clock.advance(DEBOUNCE)
    assert sp.loop.step() and fake.snapshots == []  # not listed yet: retry later
    _sync_informers(sp)
    [(due, _)] = sp.loop.queue.delayed()
    clock.advance(due - clock.monotonic())
    assert sp.loop.step() and len(fake.snapshots) == 1


def test_run_rebuilds_on_bursts_and_stops_gracefully(
        world: tuple[Emulator, Speaker, FakeL2, FakeClock]) -> None:
    emu, sp, fake, clock = world
    # Handlers run in order: once this one saw an event, the speaker has queued it.
    seen: list[str] = []
    sp.informers[R.SERVICES].add_handler(lambda _t, obj: seen.append(obj["metadata"]["name"]))
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(sp.run()), daemon=True)
    t.start()
    wait_until(lambda: sp.loop.queue.delayed() != [])  # synced; the first rebuild is queued
    clock.advance(DEBOUNCE)
    wait_until(lambda: len(fake.snapshots) == 1)
    for i in range(20):
        emu.store.create(R.SERVICES, {"apiVersion": "v1", "kind": "Service",
                                      "metadata": {"name": f"s{i}", "namespace": "default"},
                                      "spec": {"type": "LoadBalancer"}}, "default")
    wait_until(lambda: len(seen) == 20)
    assert len(fake.snapshots) == 1  # the fake clock stands still: still debouncing
    clock.advance(DEBOUNCE)
    wait_until(lambda: len(fake.snapshots) == 2)
    assert sp.rebuilds == 2 and fake.started and fake.stopped == []
    sp.stop()
    t.join(10)
    assert not t.is_alive() and result == [0]
    assert fake.stopped == [True]  # graceful: L2 hands its VIPs over
    assert sp.loop.queue.is_shutdown
