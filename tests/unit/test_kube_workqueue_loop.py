"""The shared reconcile loop (common.kube.loop on common.kube.workqueue), on a fake clock:
debounce, maximum delay, retry backoff (and holding retries), give-up with a reason the user
sees, reprocess-all, periodic keys. No sleeps: time moves only when a test advances it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from common.kube.backoff import KeyedBackoff
from common.kube.loop import ReconcileLoop
from common.kube.workqueue import GiveUp, Outcome, Result, WorkQueue, process_one
from lab.fakeclock import FakeClock

SVC = {"apiVersion": "v1", "kind": "Service",
       "metadata": {"name": "web", "namespace": "default", "uid": "u1"}}


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def record(self, involved: dict[str, Any], type_: str, reason: str, message: str,
               /) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, message))


def backoff() -> KeyedBackoff[str]:
    # rand=1.0: delays are the top of the jitter window (1, 2, 4, 8, 8 s), so predictable.
    return KeyedBackoff(base=1.0, cap=8.0, floor=0.0, rand=lambda: 1.0)


class Recorder:
    """A handler that records (key, fake time) and returns scripted outcomes."""

    def __init__(self, clock: FakeClock, *results: Result) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.results = list(results)

    def __call__(self, key: str) -> Result:
        self.calls.append((key, self.clock.monotonic()))
        return self.results.pop(0) if self.results else Outcome.DONE


def drain(loop: ReconcileLoop[str]) -> int:
    n = 0
    while loop.step():
        n += 1
    return n


def test_debounce_waits_for_quiet_then_runs_once() -> None:
    clock = FakeClock()
    h = Recorder(clock)
    loop = ReconcileLoop("t-debounce", h, clock=clock, debounce=0.05, max_delay=1.0)
    for i in range(100):  # a burst: 100 informer events within 40 ms
        if i:
            clock.advance(0.0004)
        loop.add("world")
    assert drain(loop) == 0
    clock.advance(0.0499)  # 49.9 ms of quiet since the last add: not yet
    assert drain(loop) == 0
    clock.advance(0.0002)
    assert drain(loop) == 1 and [k for k, _ in h.calls] == ["world"]
    clock.advance(10)
    assert drain(loop) == 0  # nothing left over from the burst


def test_max_delay_bounds_debounce_under_steady_churn() -> None:
    clock = FakeClock()
    h = Recorder(clock)
    loop = ReconcileLoop("t-maxdelay", h, clock=clock, debounce=0.05, max_delay=0.2)
    for _ in range(100):  # an event every 10 ms for a second: never 50 ms of quiet
        loop.add("world")
        clock.advance(0.01)
        loop.step()
    # One run per 200 ms (the first add after a run starts the next round's clock), where
    # the debounce alone would never have let one through.
    times = [round(t, 3) for _, t in h.calls]
    assert times == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_debounce_default_is_off_and_add_is_ready_at_once() -> None:
    clock = FakeClock()
    h = Recorder(clock)
    loop = ReconcileLoop("t-nodebounce", h, clock=clock)
    loop.add("a")
    assert loop.queue.delayed() == [] and drain(loop) == 1


def test_invalid_debounce_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        WorkQueue("bad", debounce=-1)
    with pytest.raises(ValueError):
        WorkQueue("bad", debounce=1.0, max_delay=0.5)


def test_retry_backoff_and_adds_during_it_without_hold() -> None:
    """client-go semantics (the default): an add during the backoff is processed (after
    the debounce); the failure count keeps growing until a DONE."""
    clock = FakeClock()
    h = Recorder(clock, Outcome.RETRY, Outcome.RETRY, Outcome.DONE)
    # (Times are multiples of 1/8 s: exact in binary, so sums of them compare equal.)
    loop = ReconcileLoop("t-retry", h, clock=clock, debounce=0.125, backoff=backoff())
    loop.add("k")
    clock.advance(0.125)
    assert drain(loop) == 1 and loop.queue.delayed() == [(1.125, "k")]
    loop.add("k")  # an event during the backoff
    clock.advance(0.125)
    assert drain(loop) == 1  # ran at 0.25, failed again: backoff 2 s
    assert loop.queue.failures("k") == 2
    clock.advance(0.875)
    assert drain(loop) == 1  # the first retry, scheduled for 1.125, still fires: DONE
    assert loop.queue.failures("k") == 0
    assert [t for _, t in h.calls] == [0.125, 0.25, 1.125]


def test_hold_retries_merges_adds_into_the_pending_retry() -> None:
    clock = FakeClock()
    h = Recorder(clock, Outcome.RETRY, Outcome.RETRY, Outcome.DONE)
    loop = ReconcileLoop("t-hold", h, clock=clock, debounce=0.125, max_delay=0.5,
                         hold_retries=True, backoff=backoff())
    loop.add("k")
    clock.advance(0.125)
    assert drain(loop) == 1  # fails at 0.125: retry at 1.125
    for _ in range(7):  # steady churn during the backoff does not make it run earlier
        loop.add("k")
        clock.advance(0.125)
        assert drain(loop) == 0
    clock.advance(0.125)
    assert drain(loop) == 1  # 1.125: fails again: retry in 2 s
    clock.advance(1.875)
    loop.add("k")
    assert drain(loop) == 0
    clock.advance(0.125)
    assert drain(loop) == 1  # 3.125: DONE
    assert [t for _, t in h.calls] == [0.125, 1.125, 3.125]
    loop.add("k")  # no retry pending any more: debounced as usual
    clock.advance(0.125)
    assert drain(loop) == 1 and loop.queue.failures("k") == 0


def test_hold_retries_an_add_while_processing_does_not_jump_the_retry() -> None:
    clock = FakeClock()
    loop: ReconcileLoop[str]

    def handler(key: str) -> Result:
        loop.add(key)  # an informer event while the handler runs
        clock.advance(0.2)  # ... and its debounce elapses before the handler returns
        loop.queue.try_get()  # promotes due keys: "k" is marked to run again when done
        return Outcome.RETRY

    loop = ReconcileLoop("t-hold-busy", handler, clock=clock, debounce=0.1, hold_retries=True,
                         backoff=backoff())
    loop.add_after("k", 0)
    assert loop.step()
    assert loop.queue.try_get() is None  # not re-queued: the retry (in 1 s) comes first
    assert loop.queue.delayed() == [(1.2, "k")]


def test_give_up_with_reason_reports_once_and_does_not_retry() -> None:
    clock = FakeClock()
    events = Events()
    reported: list[tuple[str, GiveUp]] = []
    gave = GiveUp("StatusWriteRefused", "HTTP 403 Forbidden: no", involved=SVC)
    h = Recorder(clock, gave)
    loop = ReconcileLoop("t-giveup", h, clock=clock, backoff=backoff(), events=events,
                         on_give_up=lambda k, g: reported.append((k, g)))
    before = REGISTRY.get_sample_value("portico_workqueue_outcomes_total",
                                       {"queue": "t-giveup", "outcome": "give_up"}) or 0.0
    loop.add("svc:default/web")
    with capture_logs() as logs:
        assert loop.step()
    clock.advance(3600)
    assert drain(loop) == 0 and loop.queue.delayed() == []  # never retried by itself
    assert loop.queue.failures("svc:default/web") == 0
    assert events.events == [("web", "Warning", "StatusWriteRefused", "HTTP 403 Forbidden: no")]
    assert reported == [("svc:default/web", gave)]
    [line] = [e for e in logs if e["event"] == "gave_up"]
    assert (line["reason"], line["message"], line["key"]) == (
        "StatusWriteRefused", "HTTP 403 Forbidden: no", "svc:default/web")
    assert REGISTRY.get_sample_value("portico_workqueue_outcomes_total",
                                     {"queue": "t-giveup", "outcome": "give_up"}) == before + 1
    loop.add("svc:default/web")  # the object's next change brings the key back
    assert loop.step() and len(h.calls) == 2


def test_give_up_without_object_and_failing_report_keep_the_worker_alive() -> None:
    clock = FakeClock()
    events = Events()

    def boom(_k: str, _g: GiveUp) -> None:
        raise RuntimeError("report bug")

    h = Recorder(clock, GiveUp("Unfixable", "no object to blame"), Outcome.DONE)
    loop = ReconcileLoop("t-giveup2", h, clock=clock, events=events, on_give_up=boom)
    loop.add("a")
    loop.add("b")
    assert drain(loop) == 2 and events.events == []


def test_plain_give_up_still_means_already_reported() -> None:
    clock = FakeClock()
    events = Events()
    loop = ReconcileLoop("t-giveup3", Recorder(clock, Outcome.GIVE_UP), clock=clock,
                         events=events)
    loop.add("a")
    assert loop.step() and events.events == [] and loop.queue.delayed() == []


def test_reprocess_all_requeues_every_key_through_the_debounce() -> None:
    clock = FakeClock()
    h = Recorder(clock, Outcome.REPROCESS_ALL)
    loop = ReconcileLoop("t-reprocess", h, clock=clock, debounce=0.05,
                         reprocess_all=lambda: ["s1", "s2"])
    loop.add("pools")
    clock.advance(0.05)
    assert drain(loop) == 1
    assert drain(loop) == 0  # the re-added keys debounce too
    clock.advance(0.05)
    assert drain(loop) == 2 and [k for k, _ in h.calls] == ["pools", "s1", "s2"]


def test_periodic_key_survives_an_earlier_debounced_run() -> None:
    clock = FakeClock()
    h = Recorder(clock)
    loop = ReconcileLoop("t-periodic", h, clock=clock, debounce=0.125)
    loop.add_after("k", 2.0)  # e.g. a health check
    loop.add("k")  # and an event
    clock.advance(0.125)
    assert drain(loop) == 1
    assert loop.queue.delayed() == [(2.0, "k")]
    clock.advance(1.875)
    assert drain(loop) == 1 and [t for _, t in h.calls] == [0.125, 2.0]


def test_handler_crash_is_a_retry() -> None:
    clock = FakeClock()

    def crash(_k: str) -> Result:
        raise RuntimeError("bug")

    loop = ReconcileLoop("t-crash", crash, clock=clock, backoff=backoff())
    loop.add("k")
    assert loop.step() and loop.queue.delayed() == [(1.0, "k")]


def test_run_and_start_process_until_stop() -> None:
    clock = FakeClock()
    done = threading.Event()

    def handler(_k: str) -> Result:
        done.set()
        return Outcome.DONE

    loop = ReconcileLoop("t-run", handler, clock=clock, debounce=0.05)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    loop.add("k")
    assert not done.wait(0.05)  # the fake clock stands still: the debounce never ends
    clock.advance(0.05)
    assert done.wait(5)
    loop.stop()
    t.join(5)
    assert not t.is_alive()

    done.clear()
    loop2 = ReconcileLoop("t-start", handler, clock=clock)
    [w] = loop2.start()
    loop2.add("k")
    assert done.wait(5)
    loop2.stop(5)
    assert not w.is_alive()


def test_process_one_accepts_a_give_up_result_directly() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("t-direct", clock=clock)
    seen: list[GiveUp] = []
    q.add("k")
    assert process_one(q, lambda _k: GiveUp("Bad", "m"), block=False,
                       on_give_up=lambda _k, g: seen.append(g))
    assert seen == [GiveUp("Bad", "m")]
