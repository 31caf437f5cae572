"""A clock for tests that moves only when told (the real one is ``common.kube.clock``).

Test-only: product code takes a ``common.kube.clock.Clock`` and never imports this module.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

# A fixed, obviously fake epoch so that timestamps in golden files are reproducible.
_FAKE_EPOCH = datetime(2030, 1, 1, tzinfo=UTC)

# How often a thread blocked on a FakeClock re-checks a threading.Event it also waits for.
# Events are set by other threads without telling the clock, so they need a (real) poll.
_EVENT_POLL_S = 0.01


class FakeClock:
    """A clock that advances only through ``advance()`` (or by itself in auto-advance mode).

    ``sleep``/``wait`` block the calling thread until another thread advances the fake time
    past the deadline. With ``auto_advance=True`` a sleep instead moves the clock forward by
    itself at once, which suits single-threaded code under test (e.g. a retry loop).
    ``sleepers`` counts threads currently blocked, so a test can wait until a worker is
    parked before advancing.
    """

    def __init__(self, start: datetime = _FAKE_EPOCH, auto_advance: bool = False) -> None:
        self._wall0 = start
        self._t = 0.0
        self._cond = threading.Condition()
        self._auto = auto_advance
        self.sleepers = 0
        self.slept: list[float] = []  # every requested sleep, in order, for assertions

    def now(self) -> datetime:
        with self._cond:
            return self._wall0 + timedelta(seconds=self._t)

    def monotonic(self) -> float:
        with self._cond:
            return self._t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._cond:
            self._t += seconds
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        self._block(seconds, None)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return self._block(seconds, event)

    def wait_for_sleepers(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block (real time) until at least ``n`` threads are sleeping on this clock."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.sleepers < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, _EVENT_POLL_S))
            return True

    def wait_for_sleeps(self, total: int, timeout: float = 5.0) -> bool:
        """Block (real time) until ``total`` sleeps have started since creation and a thread
        is parked in one: "the worker went round its loop and is waiting again"."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.slept) < total or self.sleepers < 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, _EVENT_POLL_S))
            return True

    def _block(self, seconds: float, event: threading.Event | None) -> bool:
        with self._cond:
            self.slept.append(seconds)
            if event is not None and event.is_set():
                return True
            if self._auto:
                self._t += max(0.0, seconds)
                self._cond.notify_all()
                return event is not None and event.is_set()
            deadline = self._t + seconds
            self.sleepers += 1
            self._cond.notify_all()
            try:
                while self._t < deadline:
                    if event is not None and event.is_set():
                        return True
                    self._cond.wait(_EVENT_POLL_S if event is not None else None)
            finally:
                self.sleepers -= 1
            return event is not None and event.is_set()
