"""A work queue with client-go's guarantees, and the runner loop that owns retries.

- A key is queued at most once (adds while queued are merged: bursts are debounced).
- A key is never handed to two workers at once: adding a key that is being processed marks it
  dirty and it is queued again when the worker calls done().
- Rate-limited re-adds use per-key exponential backoff with full jitter, reset when the
  handler reports DONE (or GIVE_UP).
- Optional debounce (``debounce``/``max_delay``, 0 by default: adds are ready at once): a key
  is ready once ``debounce`` seconds passed without another add, but never later than
  ``max_delay`` after the first add that is still pending, so a steady stream of events still
  gets processed. Meant for keys that stand for a whole snapshot (speaker, ingress): a burst
  of informer events (a rollout, ``kubectl apply`` of many objects) becomes one rebuild.
- Optional ``hold_retries``: a key waiting for its rate-limited retry is not processed
  earlier because it was added again; the retry reads the newest state anyway. For a
  whole-snapshot key, unrelated churn would otherwise turn a failing handler's backoff into
  a retry at event rate. Off by default (client-go: an add is processed without waiting).
- Sections in take order (``in_turn``): several workers can run a critical section one at a
  time in exactly the order their keys were taken from the queue - the order one worker
  would have run them in - while the rest of their handlers runs in parallel.

Handlers return an ``Outcome`` (or a ``GiveUp`` carrying what the user is told) and never
sleep or retry themselves (DESIGN.md habit 2). All timing is on the injectable ``Clock``.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import structlog
from prometheus_client import Counter, Gauge

from common.kube.backoff import KeyedBackoff
from common.kube.clock import Clock, RealClock

K = TypeVar("K", bound=Hashable)

log = structlog.get_logger("common.kube.workqueue")

DEPTH = Gauge("portico_workqueue_depth", "Keys waiting to be processed.", ["queue"])
OUTCOMES = Counter(
    "portico_workqueue_outcomes_total", "Handler outcomes per queue.", ["queue", "outcome"]
)

# When the clock is not the real one, a blocked get() re-checks the (fake) time this often in
# real seconds: advancing a FakeClock does not wake this queue's condition variable.
_FAKE_CLOCK_POLL_S = 0.01


class Outcome(enum.Enum):
    DONE = "done"  # success: forget the key's failures
    RETRY = "retry"  # transient failure: re-add with per-key backoff
    REPROCESS_ALL = "reprocess_all"  # e.g. a config change: re-queue every known key
    GIVE_UP = "give_up"  # permanent failure (already reported to the user): drop the key


@dataclass(frozen=True, slots=True)
class GiveUp:
    """``Outcome.GIVE_UP`` with the reason the user is shown (DESIGN.md habit 9).

    Retrying cannot help (the API server refuses the write as such, the object is invalid):
    the loop drops the key and forgets its failures, logs ``reason``/``message``, counts it as
    ``give_up`` and hands it to the ``on_give_up`` callback, which reports it (a Warning Event
    on ``involved``, a status condition). The key's next add brings it back.
    """

    reason: str  # CamelCase, as Events and conditions spell reasons
    message: str
    involved: Mapping[str, Any] | None = None  # the object the Event belongs on, if any


Result: TypeAlias = Outcome | GiveUp  # what a handler returns


class _Turns:
    """Tickets 0, 1, 2, ... take their turn in order; each turn ends (``finish``) once.

    A ticket whose holder never needs the turn is finished without taking it; finishing is
    idempotent and may happen out of order (later tickets wait until every earlier one is
    finished). The thread in its turn is remembered so that a nested section is a no-op.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0  # the ticket whose turn it is (or will be once it asks)
        self._finished: set[int] = set()  # finished tickets above _next
        self._owner: int | None = None  # thread ident in its turn

    def wait_for(self, ticket: int) -> None:
        with self._cond:
            while self._next != ticket:
                self._cond.wait()
            self._owner = threading.get_ident()

    def finish(self, ticket: int) -> None:
        with self._cond:
            if ticket < self._next or ticket in self._finished:
                return
            if ticket == self._next:
                self._owner = None
            self._finished.add(ticket)
            while self._next in self._finished:
                self._finished.remove(self._next)
                self._next += 1
            self._cond.notify_all()

    def finished(self, ticket: int) -> bool:
        with self._cond:
            return ticket < self._next or ticket in self._finished

    def mine(self) -> bool:
        with self._cond:
            return self._owner == threading.get_ident()

    def held(self) -> bool:
        with self._cond:
            return self._owner is not None


class WorkQueue(Generic[K]):
    def __init__(
        self,
        name: str = "default",
        clock: Clock | None = None,
        backoff: KeyedBackoff[K] | None = None,
        debounce: float = 0.0,
        max_delay: float | None = None,
        hold_retries: bool = False,
    ) -> None:
        if debounce < 0 or (max_delay is not None and max_delay < debounce):
            raise ValueError("need debounce >= 0 and max_delay >= debounce")
        self.name = name
        self.clock: Clock = clock or RealClock()
        self.backoff: KeyedBackoff[K] = backoff or KeyedBackoff()
        self.debounce = debounce
        self.max_delay = max_delay
        self.hold_retries = hold_retries
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []  # heap of (due, seq, key)
        self._due: dict[K, float] = {}  # when a delayed key is due: min of the two below
        self._after: dict[K, float] = {}  # earliest add_after / retry due time
        self._quiet: dict[K, tuple[float, float]] = {}  # debounced add: (first add, due)
        self._retrying: set[K] = set()  # re-add scheduled by add_rate_limited (hold_retries)
        self._seq = itertools.count()
        self._shutdown = False
        # Take order: every take gets the next ticket; done() finishes it (see in_turn).
        self._take_seq = itertools.count()
        self._tickets: dict[K, int] = {}
        self._turns = _Turns()

    # ----- adding -------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Something about ``key`` changed: process it (after the debounce, if configured)."""
        with self._cond:
            if self._shutdown or key in self._dirty:
                return  # queued already (or again once its worker is done): sees this change
            if self.hold_retries and key in self._retrying:
                return  # its retry is scheduled and will read the newest state
            if self.debounce <= 0:
                self._add_locked(key)
                return
            now = self.clock.monotonic()
            first = self._quiet[key][0] if key in self._quiet else now
            due = now + self.debounce
            if self.max_delay is not None:
                due = min(due, first + self.max_delay)
            self._quiet[key] = (first, due)
            self._schedule_locked(key)

    def _add_locked(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            DEPTH.labels(self.name).set(len(self._queue))
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Ready ``delay`` seconds from now (an earlier schedule wins); ``delay <= 0``: now,
        without debounce (the caller chose the time)."""
        with self._cond:
            self._add_after_locked(key, delay)

    def _add_after_locked(self, key: K, delay: float) -> None:
        if delay <= 0:
            self._add_locked(key)
            return
        if self._shutdown:
            return
        due = self.clock.monotonic() + delay
        if key in self._after and self._after[key] <= due:
            return  # an earlier wake-up is already scheduled
        self._after[key] = due
        self._schedule_locked(key)

    def _schedule_locked(self, key: K) -> None:
        """Keep the heap entry of ``key`` at the earlier of its add_after and debounce times
        (stale heap entries are skipped when they surface)."""
        times = [t for t in (self._after.get(key),
                             self._quiet[key][1] if key in self._quiet else None)
                 if t is not None]
        if not times:
            self._due.pop(key, None)
            return
        due = min(times)
        if self._due.get(key) == due:
            return
        self._due[key] = due
        heapq.heappush(self._delayed, (due, next(self._seq), key))
        self._cond.notify()

    def add_rate_limited(self, key: K) -> float:
        delay = self.backoff.next(key)
        with self._cond:
            if self.hold_retries:
                # The retry is the next run: an add that arrived while the handler ran (a
                # pending debounce, or a re-queue when its worker is done) must not jump it.
                self._quiet.pop(key, None)
                if key in self._processing:
                    self._dirty.discard(key)
                if delay > 0:  # (a 0 delay queues it now: no retry left to wait for)
                    self._retrying.add(key)
            self._add_after_locked(key, delay)
            if self.hold_retries:
                self._schedule_locked(key)
        return delay

    def forget(self, key: K) -> None:
        self.backoff.forget(key)

    def failures(self, key: K) -> int:
        return self.backoff.failures(key)

    # ----- taking -------------------------------------------------------------------------

    def _promote_locked(self) -> float | None:
        """Move due delayed keys to the queue; return the next due time (or None)."""
        now = self.clock.monotonic()
        while self._delayed:
            due, _, key = self._delayed[0]
            if self._due.get(key) != due:
                heapq.heappop(self._delayed)  # superseded by an earlier schedule
                continue
            if due > now:
                return due
            heapq.heappop(self._delayed)
            del self._due[key]
            # Only what is due fires: a later add_after (a periodic check) stays scheduled.
            if key in self._after and self._after[key] <= now:
                del self._after[key]
                self._retrying.discard(key)
            if key in self._quiet and self._quiet[key][1] <= now:
                del self._quiet[key]
            self._add_locked(key)
            self._schedule_locked(key)
        return None

    def try_get(self) -> K | None:
        """Non-blocking get (what fake-clock unit tests use)."""
        with self._cond:
            self._promote_locked()
            return self._take_locked()

    def _take_locked(self) -> K | None:
        if not self._queue:
            return None
        key = self._queue.popleft()
        DEPTH.labels(self.name).set(len(self._queue))
        self._dirty.discard(key)
        self._processing.add(key)
        self._tickets[key] = next(self._take_seq)
        return key

    def get(self, timeout: float | None = None) -> K | None:
        """Block until a key is ready; None on shutdown or after ``timeout`` real seconds."""
        real = isinstance(self.clock, RealClock)
        deadline = None if timeout is None else RealClock().monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                next_due = self._promote_locked()
                key = self._take_locked()
                if key is not None:
                    return key
                wait: float | None = None
                if next_due is not None:
                    wait = (
                        next_due - self.clock.monotonic() if real else _FAKE_CLOCK_POLL_S
                    )
                if deadline is not None:
                    left = deadline - RealClock().monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            ticket = self._tickets.pop(key, None)
            if key in self._dirty:
                self._queue.append(key)
                DEPTH.labels(self.name).set(len(self._queue))
                self._cond.notify()
        if ticket is not None:
            self._turns.finish(ticket)  # a handler that never asked for its turn passes it

    # ----- sections in take order ---------------------------------------------------------

    @contextlib.contextmanager
    def in_turn(self, key: K) -> Iterator[None]:
        """Run the block once every key taken before ``key`` has had its turn (or finished
        processing without asking for one), and before any key taken after it: with several
        workers, the blocks run one at a time and in the order one worker would run them.

        One turn per take: a second block for the same take, or a block for a key that is
        not being processed (direct calls in tests), queues up behind every key taken so far.
        A nested block in the thread whose turn it is runs at once.
        """
        if self._turns.mine():
            yield
            return
        with self._cond:
            ticket = self._tickets.get(key)
            if ticket is None or self._turns.finished(ticket):
                ticket = next(self._take_seq)
        self._turns.wait_for(ticket)
        try:
            yield
        finally:
            self._turns.finish(ticket)

    def turn_held(self) -> bool:
        """Is some thread inside an ``in_turn`` block right now?"""
        return self._turns.held()

    # ----- state --------------------------------------------------------------------------

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    @property
    def is_shutdown(self) -> bool:
        with self._cond:
            return self._shutdown

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def delayed(self) -> list[tuple[float, K]]:
        """(due, key) of scheduled re-adds, soonest first."""
        with self._cond:
            return sorted(((due, key) for key, due in self._due.items()), key=lambda x: x[0])

    def processing(self) -> set[K]:
        with self._cond:
            return set(self._processing)


def process_one(
    queue: WorkQueue[K],
    handler: Callable[[K], Result],
    reprocess_all: Callable[[], Iterable[K]] | None = None,
    timeout: float | None = None,
    block: bool = True,
    on_give_up: Callable[[K, GiveUp], None] | None = None,
) -> bool:
    """Take one key, run the handler, apply its outcome. False when nothing was taken.

    ``on_give_up`` reports a ``GiveUp`` to the user (Event, condition); a plain
    ``Outcome.GIVE_UP`` means the handler reported it already.
    """
    key = queue.get(timeout) if block else queue.try_get()
    if key is None:
        return False
    try:
        try:
            result: object = handler(key)
        except Exception:
            # A bug in a handler must not kill the worker or lose the key.
            log.exception("handler_crashed", queue=queue.name, key=str(key))
            result = Outcome.RETRY
        gave_up = result if isinstance(result, GiveUp) else None
        if gave_up is not None:
            outcome = Outcome.GIVE_UP
        elif isinstance(result, Outcome):
            outcome = result
        else:
            log.error("handler_bad_outcome", queue=queue.name, key=str(key),
                      outcome=repr(result))
            outcome = Outcome.RETRY
        OUTCOMES.labels(queue.name, outcome.value).inc()
        if outcome is Outcome.DONE:
            queue.forget(key)
        elif outcome is Outcome.RETRY:
            delay = queue.add_rate_limited(key)
            log.info("retry", queue=queue.name, key=str(key), failures=queue.failures(key),
                     retry_in=round(delay, 3))
        elif outcome is Outcome.REPROCESS_ALL:
            queue.forget(key)
            for k in reprocess_all() if reprocess_all else ():
                queue.add(k)
        elif gave_up is None:  # plain GIVE_UP: the handler has told the user already
            queue.forget(key)
            log.warning("gave_up", queue=queue.name, key=str(key))
        else:
            queue.forget(key)
            log.warning("gave_up", queue=queue.name, key=str(key), reason=gave_up.reason,
                        message=gave_up.message)
            if on_give_up is not None:
                try:
                    on_give_up(key, gave_up)
                except Exception:  # reporting must not kill the worker either
                    log.exception("give_up_report_failed", queue=queue.name, key=str(key))
    finally:
        queue.done(key)
    return True


def run_workers(
    queue: WorkQueue[K],
    handler: Callable[[K], Result],
    workers: int = 1,
    reprocess_all: Callable[[], Iterable[K]] | None = None,
    on_give_up: Callable[[K, GiveUp], None] | None = None,
) -> list[threading.Thread]:
    """Start ``workers`` daemon threads that process until ``queue.shutdown()``."""

    def loop() -> None:
        while not queue.is_shutdown:
            process_one(queue, handler, reprocess_all, timeout=1.0, on_give_up=on_give_up)

    threads = [
        threading.Thread(target=loop, name=f"{queue.name}-worker-{i}", daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    return threads
