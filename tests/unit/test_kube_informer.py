"""Informer over real HTTP against the emulator, with injected faults.

Each test checks convergence (the informer's cache and the view rebuilt from its callbacks
both equal the server's objects) and the absence of lost or duplicated events.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from common.kube import resources as R
from common.kube.backoff import Backoff
from common.kube.client import KubeClient
from common.kube.clock import Clock
from common.kube.informer import Informer
from lab.emulator import Emulator
from lab.fakeclock import FakeClock

Obj = dict[str, Any]


class View:
    """Applies informer callbacks to a dict, failing on impossible sequences."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objs: dict[tuple[str, str], str] = {}  # key -> resourceVersion
        self.events: list[tuple[str, str, str]] = []
        self.errors: list[str] = []

    def __call__(self, etype: str, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        with self.lock:
            self.events.append((etype, meta["name"], meta["resourceVersion"]))
            if etype == "ADDED":
                if key in self.objs:
                    self.errors.append(f"duplicate ADDED {key}")
                self.objs[key] = meta["resourceVersion"]
            elif etype == "MODIFIED":
                if key not in self.objs:
                    self.errors.append(f"MODIFIED before ADDED {key}")
                elif int(meta["resourceVersion"]) <= int(self.objs[key]):
                    self.errors.append(f"MODIFIED not newer {key}")
                self.objs[key] = meta["resourceVersion"]
            elif etype == "DELETED" and self.objs.pop(key, None) is None:
                self.errors.append(f"DELETED unknown {key}")

    def count(self, etype: str, name: str) -> int:
        with self.lock:
            return sum(1 for t, n, _ in self.events if t == etype and n == name)


def server_state(emu: Emulator) -> dict[tuple[str, str], str]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in emu.store.list(R.SERVICES)}


def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def converged(emu: Emulator, inf: Informer, view: View) -> Callable[[], bool]:
    def check() -> bool:
        want = server_state(emu)
        cache = {(o["metadata"]["namespace"], o["metadata"]["name"]):
                 o["metadata"]["resourceVersion"] for o in inf.store.list()}
        with view.lock:
            return cache == want and view.objs == want
    return check


def drop(emu: Emulator, abrupt: bool) -> None:
    """Drop the informer's watch once it is really open (sync happens before the watch)."""
    assert eventually(lambda: emu.store.watcher_count() >= 1, timeout=5)
    assert emu.drop_watches(abrupt=abrupt) >= 1


def make(emu: Emulator, rand: Callable[[], float] = lambda: 0.5,
         request_timeout: float = 2.0, watch_s: int = 30,
         clock: Clock | None = None) -> tuple[Informer, View]:
    kube = KubeClient.from_environment(server=emu.url, request_timeout=request_timeout,
                                       watch_read_slack=0.5)
    view = View()
    inf = Informer(kube, R.SERVICES, on_event=view, clock=clock,
                   backoff=Backoff(base=0.05, cap=1.0, floor=0.01, rand=rand),
                   watch_timeout_s=lambda: watch_s)
    return inf, view


# The backoff of make(rand=1.0): the top of each full-jitter window, base 0.05 s doubling
# up to the 1 s cap.
CEILINGS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def run_backoff(clock: FakeClock, emu: Emulator, seconds: float) -> list[tuple[float, int]]:
    """Let the informer's backoff run for ``seconds`` of fake time, sleep by sleep.

    Returns (delay asked for, requests since the previous sleep, or since the caller's
    ``emu.reset_counts()`` for the first) for every sleep that started, the one it is parked
    in at the end included. The informer only makes requests between sleeps, so each count
    is exact: no real time decides it."""
    steps: list[tuple[float, int]] = []
    elapsed, seen = 0.0, 0
    while True:
        assert clock.wait_for_sleeps(len(steps) + 1), f"no backoff after {steps}"
        now = emu.count()
        delay = clock.slept[len(steps)]
        steps.append((delay, now - seen))
        seen = now
        if elapsed + delay > seconds:
            return steps
        elapsed += delay
        clock.advance(delay)


def svc(name: str, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "a"}, "spec": {"type": "LoadBalancer",
                                                                  **spec}}


def test_initial_list_then_watch(emu: Emulator) -> None:
    emu.store.create(R.SERVICES, svc("pre"))
    inf, view = make(emu)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        emu.store.create(R.SERVICES, svc("post"))
        emu.store.patch(R.SERVICES, "pre", {"spec": {"ports": [{"port": 80}]}}, "a")
        emu.store.delete(R.SERVICES, "post", "a")
        assert eventually(lambda: view.count("DELETED", "post") == 1)
        assert eventually(converged(emu, inf, view))
        assert [t for t, n, _ in view.events if n == "pre"] == ["ADDED", "MODIFIED"]
        assert inf.lists == 1 and not view.errors
        # DELETED carries the last known object.
        assert inf.store.get("a", "post") is None
    finally:
        inf.stop()


def test_clean_watch_end_resumes_without_relist(emu: Emulator) -> None:
    inf, view = make(emu)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        emu.store.create(R.SERVICES, svc("one"))
        assert eventually(lambda: view.count("ADDED", "one") == 1)
        drop(emu, abrupt=False)
        emu.store.create(R.SERVICES, svc("two"))
        assert eventually(converged(emu, inf, view))
        assert inf.lists == 1 and inf.watches >= 2 and not view.errors
        assert view.count("ADDED", "two") == 1
    finally:
        inf.stop()


def test_abrupt_drop_resumes_from_last_version_and_converges(emu: Emulator) -> None:
    for i in range(5):
        emu.store.create(R.SERVICES, svc(f"s{i}"))
    inf, view = make(emu)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        # Keep the reconnect away while the world changes, then let it through.
        emu.faults.delay("WATCH", "services", 0.3)
        emu.faults.delay("LIST", "services", 0.3)
        drop(emu, abrupt=True)
        emu.store.delete(R.SERVICES, "s0", "a")
        emu.store.patch(R.SERVICES, "s1", {"spec": {"x": 1}}, "a")
        emu.store.create(R.SERVICES, svc("new"))
        assert eventually(converged(emu, inf, view))
        # Resumed from the last resourceVersion: the server replayed what was missed, so no
        # relist was needed (client-go's behaviour after a broken stream).
        assert inf.lists == 1 and inf.watches >= 2 and not view.errors
        assert view.count("DELETED", "s0") == 1 and view.count("ADDED", "new") == 1
        assert view.count("MODIFIED", "s1") == 1
        for i in range(2, 5):  # unchanged objects produce no synthetic events
            assert [t for t, n, _ in view.events if n == f"s{i}"] == ["ADDED"]
    finally:
        inf.stop()


def test_gone_relists_with_synthetic_events(emu: Emulator) -> None:
    for i in range(4):
        emu.store.create(R.SERVICES, svc(f"s{i}", n=i))
    inf, view = make(emu)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        emu.store.create(R.SERVICES, svc("seen"))
        assert eventually(lambda: view.count("ADDED", "seen") == 1)
        # The resumed watch is held back while objects change and history is compacted,
        # so it comes back with a resourceVersion that is gone.
        emu.faults.delay("WATCH", "services", 0.4)
        drop(emu, abrupt=False)
        emu.store.delete(R.SERVICES, "s0", "a")
        emu.store.patch(R.SERVICES, "s1", {"spec": {"n": 100}}, "a")
        emu.store.create(R.SERVICES, svc("late"))
        emu.compact()
        assert eventually(converged(emu, inf, view))
        assert inf.lists == 2 and not view.errors
        deleted = [e for e in view.events if e[0] == "DELETED"]
        assert [(t, n) for t, n, _ in deleted] == [("DELETED", "s0")]
        assert view.count("MODIFIED", "s1") == 1 and view.count("ADDED", "late") == 1
        assert sum(1 for t, _, _ in view.events if t == "ADDED") == 6  # 4 + seen + late
        # Writes after the relist still arrive (the watch restarted from the list's rv).
        emu.store.create(R.SERVICES, svc("after"))
        assert eventually(lambda: view.count("ADDED", "after") == 1)
    finally:
        inf.stop()


def test_deleted_callback_gets_last_known_object(emu: Emulator) -> None:
    got: list[Obj] = []
    inf, _ = make(emu)
    inf.add_handler(lambda t, o: got.append(o) if t == "DELETED" else None)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        emu.store.create(R.SERVICES, {**svc("x"), "status": {"loadBalancer": {"ingress": [
            {"ip": "192.0.2.7"}]}}})
        assert eventually(lambda: inf.store.get("a", "x") is not None)
        emu.faults.delay("WATCH", "services", 0.3)
        drop(emu, abrupt=False)
        emu.store.delete(R.SERVICES, "x", "a")
        emu.compact()  # forces the relist path: the deletion is only seen as absence
        assert eventually(lambda: len(got) == 1)
        assert got[0]["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.7"
    finally:
        inf.stop()


def test_500_storm_is_backed_off(emu: Emulator, clock: FakeClock) -> None:
    # rand=1.0: the largest delays of the full-jitter window (CEILINGS).
    inf, view = make(emu, rand=lambda: 1.0, clock=clock)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        assert eventually(lambda: emu.store.watcher_count() == 1, timeout=5)
        emu.faults.fail("*", "services", 500, count=10_000)
        emu.reset_counts()
        drop(emu, abrupt=True)
        steps = run_backoff(clock, emu, 2.0)
        # The cut stream backs off before anything else (0 requests), then every retry
        # (the watch, then lists: a 500 relists) waits the next, doubled delay. Without
        # backoff this would be hundreds of requests per second (LAB-NOTES).
        assert steps == list(zip(CEILINGS[:6], [0, 1, 1, 1, 1, 1], strict=True)), steps
        storm = emu.count(path="/services")
        assert storm == 5, storm  # in 2 s: at 0.05, 0.15, 0.35, 0.75 and 1.55 s
        assert [v for v, _, _ in emu.log] == ["WATCH", "LIST", "LIST", "LIST", "LIST"]
        assert inf.errors == 6 and inf.lists == 5
        emu.faults.clear()
        clock.advance(clock.slept[-1])
        emu.store.create(R.SERVICES, svc("after-storm"))
        assert eventually(converged(emu, inf, view))
        assert inf.errors == 6 and not view.errors
    finally:
        inf.stop()


def test_throttled_list_honours_retry_after(emu: Emulator) -> None:
    emu.faults.fail("LIST", "services", 429, retry_after=1)
    inf, _ = make(emu, rand=lambda: 0.0)
    t0 = time.monotonic()
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        assert time.monotonic() - t0 >= 0.9  # waited Retry-After, not the 10 ms floor
    finally:
        inf.stop()


def test_slow_list_times_out_and_recovers(emu: Emulator) -> None:
    emu.store.create(R.SERVICES, svc("x"))
    emu.faults.delay("LIST", "services", 8.0)
    inf, view = make(emu, request_timeout=0.5)
    t0 = time.monotonic()
    inf.start()
    try:
        assert inf.wait_for_sync(7)
        assert time.monotonic() - t0 < 6  # the read timeout fired; the 8 s delay did not pass
        assert inf.errors == 1 and inf.lists == 2
        assert eventually(converged(emu, inf, view))
    finally:
        inf.stop()


def test_silent_watch_hits_client_read_timeout(emu: Emulator) -> None:
    # Server timeout 1 s + 0.5 s slack = 1.5 s read timeout; the next watch stalls 10 s.
    inf, view = make(emu, request_timeout=0.5, watch_s=1)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        emu.faults.delay("WATCH", "services", 10.0)
        drop(emu, abrupt=False)
        emu.store.create(R.SERVICES, svc("during"))
        t0 = time.monotonic()
        assert eventually(lambda: view.count("ADDED", "during") == 1, timeout=9)
        assert time.monotonic() - t0 < 8  # recovered long before the stalled watch answered
        assert inf.errors >= 1 and not view.errors
    finally:
        inf.stop()


def test_handler_exception_does_not_kill_informer(emu: Emulator) -> None:
    inf, view = make(emu)
    seen: Counter[str] = Counter()

    def bad(etype: str, obj: Obj) -> None:
        seen[etype] += 1
        raise RuntimeError("consumer bug")

    inf.add_handler(bad)
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        emu.store.create(R.SERVICES, svc("a1"))
        emu.store.create(R.SERVICES, svc("a2"))
        assert eventually(lambda: seen["ADDED"] == 2)
        assert eventually(converged(emu, inf, view))
    finally:
        inf.stop()


def test_stop_is_prompt_and_server_forgets_the_watch() -> None:
    # No bookmark would be due for a minute: the server must notice the hang-up by itself.
    with Emulator(bookmark_interval=60) as emu:
        inf, _ = make(emu, watch_s=300)
        inf.start()
        assert inf.wait_for_sync(5)
        assert eventually(lambda: emu.store.watcher_count() == 1, timeout=5)
        t0 = time.monotonic()
        inf.stop()
        assert time.monotonic() - t0 < 3  # not the 300 s server timeout
        assert eventually(lambda: emu.store.watcher_count() == 0, timeout=3)


def test_concurrent_writes_with_chaos_converge(emu: Emulator) -> None:
    """Writers race the informer while watches drop (both ways) and history is compacted."""
    import random

    inf, view = make(emu)
    inf.start()
    assert inf.wait_for_sync(5)
    rng = random.Random(7)
    stop = threading.Event()

    def writer(wid: int) -> None:
        r = random.Random(wid)
        for i in range(60):
            name = f"w{wid}-{r.randrange(8)}"
            if emu.store.get(R.SERVICES, name, "a") is None:
                emu.store.create(R.SERVICES, svc(name, i=i))
            elif r.random() < 0.3:
                emu.store.delete(R.SERVICES, name, "a")
            else:
                emu.store.patch(R.SERVICES, name, {"spec": {"i": i}}, "a")
            if stop.wait(0.002):
                return

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    try:
        for t in writers:
            t.start()
        for _ in range(6):
            time.sleep(0.05)
            choice = rng.random()
            if choice < 0.4:
                emu.drop_watches(abrupt=rng.random() < 0.5)
            elif choice < 0.7:
                emu.faults.delay("WATCH", "services", 0.05)
                emu.drop_watches(abrupt=False)
                emu.compact()
        for t in writers:
            t.join(20)
        assert eventually(converged(emu, inf, view), timeout=10)
        assert not view.errors, view.errors[:5]
    finally:
        stop.set()
        inf.stop()


def test_persistent_410_after_list_is_backed_off(emu: Emulator, clock: FakeClock) -> None:
    # Every watch is answered 410 for the version its list just returned: relisting at once
    # would spin, so each relist waits the next backoff delay.
    emu.faults.fail("WATCH", "services", 410, count=10_000)
    inf, _ = make(emu, rand=lambda: 1.0, clock=clock)
    emu.reset_counts()
    inf.start()
    try:
        assert inf.wait_for_sync(5)
        steps = run_backoff(clock, emu, 1.5)
        # The first pause follows the initial list and its watch; each later one a relist
        # and its watch.
        assert steps == list(zip(CEILINGS[:5], [2, 2, 2, 2, 2], strict=True)), steps
        lists = emu.count("LIST")
        # In 1.5 s: the initial list and relists at 0.05, 0.15, 0.35 and 0.75 s (a hot
        # loop would list hundreds of times).
        assert lists == 5, lists
        assert emu.count("WATCH") == 5 and inf.lists == 5 and inf.errors == 5
    finally:
        inf.stop()


def test_refused_list_is_reported_once_per_streak(emu: Emulator, clock: FakeClock) -> None:
    """A 403 on list is retried with backoff (RBAC may be fixed without a restart) but the
    user is told once per streak, not on every retry; a successful list ends the streak."""
    kube = KubeClient.from_environment(server=emu.url, request_timeout=2.0)
    refused: list[tuple[str, int | None]] = []
    inf = Informer(kube, R.SERVICES, clock=clock,
                   backoff=Backoff(base=0.05, cap=1.0, floor=0.01, rand=lambda: 1.0),
                   on_refused=lambda res, e: refused.append((str(res), e.status)))
    emu.faults.fail("LIST", "services", 403, count=4)
    inf.start()
    try:
        for _ in range(4):  # four refusals, each followed by a backoff sleep
            assert clock.wait_for_sleeps(len(clock.slept) + 1)
            clock.advance(clock.slept[-1])
        assert inf.wait_for_sync(5)
        assert refused == [("services", 403)]
        assert inf.errors == 4 and inf.refused is None
        # A new streak (the informer relists after a watch error, and is refused again) is
        # reported again: the user fixed RBAC once, then it broke again.
        assert eventually(lambda: emu.store.watcher_count() == 1, timeout=5)
        emu.faults.fail("*", "services", 403, count=2)
        drop(emu, abrupt=True)
        for _ in range(3):
            assert clock.wait_for_sleeps(len(clock.slept) + 1)
            clock.advance(clock.slept[-1])
        assert eventually(lambda: inf.refused is None and len(refused) == 2, timeout=5)
        assert refused == [("services", 403), ("services", 403)]
    finally:
        inf.stop()


def test_access_refused_event_goes_on_the_components_own_pod() -> None:
    from common.errors import Forbidden
    from common.kube.refusal import access_refused_reporter

    recorded: list[tuple[dict[str, Any], str, str, str]] = []
    logged: list[tuple[str, dict[str, Any]]] = []

    class Rec:
        def record(self, involved: dict[str, Any], type_: str, reason: str, message: str,
                   /) -> None:
            recorded.append((involved, type_, reason, message))

    class Log:
        def warning(self, event: str, **kw: Any) -> None:
            logged.append((event, kw))

    err = Forbidden("forbidden", 403, reason="Forbidden",
                    detail='services is forbidden: User "x" cannot list resource "services"')
    report = access_refused_reporter(Rec(), Log(), "speaker",
                                     {"POD_NAME": "portico-speaker-abc",
                                      "POD_NAMESPACE": "portico-system"})
    report(R.SERVICES, err)
    (involved, type_, reason, message), = recorded
    assert involved["kind"] == "Pod" and involved["metadata"] == {
        "name": "portico-speaker-abc", "namespace": "portico-system"}
    assert (type_, reason) == ("Warning", "AccessRefused")
    assert "services" in message and "403 Forbidden" in message and "cannot list" in message
    assert logged[0][0] == "access_refused" and logged[0][1]["status"] == 403
    # Outside a pod (no downward API): the log line only.
    recorded.clear()
    access_refused_reporter(Rec(), Log(), "speaker", {})(R.SERVICES, err)
    assert recorded == []
