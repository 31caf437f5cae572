"""WorkQueue semantics with a fake clock (no sleeps)."""

from __future__ import annotations

import itertools
import threading

from common.kube.backoff import KeyedBackoff
from common.kube.workqueue import Outcome, WorkQueue, process_one, run_workers
from lab.fakeclock import FakeClock


def make(clock: FakeClock | None = None) -> tuple[WorkQueue[str], FakeClock]:
    clock = clock or FakeClock()
    # rand=1.0: delays are the top of the jitter window, so they are predictable.
    q: WorkQueue[str] = WorkQueue(
        "test", clock=clock, backoff=KeyedBackoff(base=1.0, cap=8.0, floor=0.0,
                                                  rand=lambda: 1.0))
    return q, clock


def drain(q: WorkQueue[str]) -> list[str]:
    out = []
    while (k := q.try_get()) is not None:
        out.append(k)
        q.done(k)
    return out


def test_dedup_while_queued_and_fifo() -> None:
    q, _ = make()
    for k in ("a", "b", "a", "c", "b"):
        q.add(k)
    assert len(q) == 3
    assert drain(q) == ["a", "b", "c"]


def test_key_never_processed_twice_at_once() -> None:
    q, _ = make()
    q.add("a")
    assert q.try_get() == "a"
    q.add("a")  # changed while being processed
    assert q.try_get() is None  # not handed to a second worker
    q.done("a")
    assert q.try_get() == "a"  # processed again afterwards, once
    q.done("a")
    assert q.try_get() is None


def test_retry_backoff_grows_caps_and_resets_on_done() -> None:
    q, clock = make()
    outcomes = iter([Outcome.RETRY] * 5 + [Outcome.DONE])
    calls: list[float] = []

    def handler(key: str) -> Outcome:
        calls.append(clock.monotonic())
        return next(outcomes)

    q.add("k")
    assert process_one(q, handler, block=False)
    expected = [1.0, 2.0, 4.0, 8.0, 8.0]  # exponential, capped at 8
    for delay in expected:
        assert q.delayed() == [(clock.monotonic() + delay, "k")]
        clock.advance(delay - 0.001)
        assert not process_one(q, handler, block=False)  # not yet due
        clock.advance(0.001)
        assert process_one(q, handler, block=False)
    assert [round(b - a, 3) for a, b in itertools.pairwise(calls)] == expected
    assert q.failures("k") == 0 and q.delayed() == []


def test_give_up_forgets_and_drops() -> None:
    q, _ = make()
    q.add("k")
    process_one(q, lambda k: Outcome.RETRY, block=False)
    assert q.failures("k") == 1
    q.add("k")  # an informer event arrives meanwhile: processed now, not after the delay
    assert process_one(q, lambda k: Outcome.GIVE_UP, block=False)
    assert q.failures("k") == 0 and len(q) == 0


def test_reprocess_all() -> None:
    q, _ = make()
    q.add("pool")
    seen: list[str] = []

    def handler(key: str) -> Outcome:
        seen.append(key)
        return Outcome.REPROCESS_ALL if key == "pool" else Outcome.DONE

    process_one(q, handler, reprocess_all=lambda: ["s1", "s2"], block=False)
    while process_one(q, handler, block=False):
        pass
    assert seen == ["pool", "s1", "s2"]


def test_handler_exception_and_bad_outcome_become_retry() -> None:
    q, clock = make()
    q.add("k")

    def boom(key: str) -> Outcome:
        raise RuntimeError("bug")

    assert process_one(q, boom, block=False)
    assert q.failures("k") == 1
    clock.advance(1.0)
    assert process_one(q, lambda k: None, block=False)  # type: ignore[arg-type,return-value]
    assert q.failures("k") == 2


def test_add_after_keeps_earliest() -> None:
    q, clock = make()
    q.add_after("k", 10)
    q.add_after("k", 3)
    q.add_after("k", 20)
    assert q.delayed() == [(3.0, "k")]
    clock.advance(3)
    assert drain(q) == ["k"]
    clock.advance(20)
    assert drain(q) == []  # superseded schedules do not fire


def test_blocking_get_wakes_on_add_and_shutdown() -> None:
    q, _clock = make()
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    q.add("x")
    t.join(5)
    assert got == ["x"]
    q.done("x")
    t2 = threading.Thread(target=lambda: got.append(q.get()))
    t2.start()
    q.shutdown()
    t2.join(5)
    assert got == ["x", None] and not t2.is_alive()
    q.add("y")  # ignored after shutdown
    assert len(q) == 0


def test_blocking_get_sees_fake_clock_delays() -> None:
    q, clock = make()
    q.add_after("later", 30)
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    clock.advance(30)
    t.join(5)
    assert got == ["later"]


def test_workers_process_each_key_exclusively() -> None:
    q: WorkQueue[int] = WorkQueue("par")
    active: set[int] = set()
    lock = threading.Lock()
    clash: list[int] = []
    done: list[int] = []
    finished = threading.Event()

    def handler(key: int) -> Outcome:
        with lock:
            if key in active:
                clash.append(key)
            active.add(key)
        threading.Event().wait(0.001)
        with lock:
            active.discard(key)
            done.append(key)
            if len(done) >= 200:
                finished.set()
        return Outcome.DONE

    threads = run_workers(q, handler, workers=4)
    for i in range(400):
        q.add(i % 5)
        if len(done) >= 200:
            break
        threading.Event().wait(0.0005)
    finished.wait(10)
    q.shutdown()
    for t in threads:
        t.join(5)
    assert not clash and set(done) <= set(range(5))
