"""WorkQueue.in_turn: sections one at a time, in the order keys were taken from the queue."""

from __future__ import annotations

import threading

import pytest

from common.kube.workqueue import WorkQueue

JOIN_S = 10.0  # bound of every join (reached only if the code under test hangs)


def take_all(q: WorkQueue[str], *keys: str) -> None:
    for k in keys:
        q.add(k)
    for k in keys:
        assert q.try_get() == k


def run_in_turn(q: WorkQueue[str], key: str, order: list[str]) -> threading.Thread:
    def body() -> None:
        with q.in_turn(key):
            order.append(key)
    t = threading.Thread(target=body)
    t.start()
    return t


def test_turns_follow_take_order_whoever_asks_first() -> None:
    q: WorkQueue[str] = WorkQueue()
    take_all(q, "a", "b", "c")
    order: list[str] = []
    tc = run_in_turn(q, "c", order)  # asks first, was taken last
    tb = run_in_turn(q, "b", order)
    with q.in_turn("a"):
        order.append("a")
    tb.join(JOIN_S)
    tc.join(JOIN_S)
    assert order == ["a", "b", "c"]


def test_a_key_that_never_asks_passes_its_turn_when_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    take_all(q, "a", "b")
    order: list[str] = []
    tb = run_in_turn(q, "b", order)
    q.done("a")  # a's handler needed no turn
    tb.join(JOIN_S)
    assert order == ["b"] and not tb.is_alive()
    q.done("b")
    with q.in_turn("later"):  # not being processed: queues behind everything taken so far
        assert q.turn_held()
    assert not q.turn_held()


def test_nested_sections_in_the_owning_thread_run_at_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    take_all(q, "a", "b")
    with q.in_turn("a"):
        with q.in_turn("b"):  # e.g. a decorated method called from within a's turn
            assert q.turn_held()
        assert q.turn_held()
    assert not q.turn_held()


def test_an_exception_in_a_section_passes_the_turn() -> None:
    q: WorkQueue[str] = WorkQueue()
    take_all(q, "a", "b")
    order: list[str] = []
    tb = run_in_turn(q, "b", order)
    with pytest.raises(RuntimeError), q.in_turn("a"):
        raise RuntimeError("handler bug")
    tb.join(JOIN_S)
    assert order == ["b"]


def test_a_second_section_of_one_take_queues_behind_later_takes() -> None:
    q: WorkQueue[str] = WorkQueue()
    take_all(q, "a", "b")
    order: list[str] = []
    with q.in_turn("a"):
        order.append("a1")
    again = threading.Thread(target=lambda: run_in_turn(q, "a", order).join(JOIN_S))
    again.start()
    with q.in_turn("b"):
        order.append("b")
    again.join(JOIN_S)
    assert order == ["a1", "b", "a"]


def test_done_and_retake_gives_a_new_turn() -> None:
    q: WorkQueue[str] = WorkQueue()
    take_all(q, "a")
    with q.in_turn("a"):
        pass
    q.add("a")  # re-added while processing: queued again at done()
    q.done("a")
    assert q.try_get() == "a"
    with q.in_turn("a"):
        assert q.turn_held()
