"""The reconcile loop every component runs: a ``WorkQueue`` plus the handler that drains it.

Owns, for the controller's per-object keys and for the speaker's and ingress's
whole-snapshot keys alike (DESIGN.md habit 2):

- when a key runs: debounce and maximum delay of informer bursts, per-key retry backoff,
  periodic keys (``add_after``), all on the injectable ``Clock`` (habit 7: tests step it);
- what an outcome means: ``Outcome.DONE``/``RETRY``/``REPROCESS_ALL``/``GIVE_UP`` and
  ``GiveUp(reason, message, involved)``, logged with fixed keys and counted in
  ``portico_workqueue_outcomes_total``; a ``GiveUp`` with an ``involved`` object becomes a
  Warning Event on it (habit 9), then the ``on_give_up`` callback runs (a condition, say).

Handlers only decide and write; they never sleep, loop or retry themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from common.kube.backoff import KeyedBackoff
from common.kube.clock import Clock
from common.kube.refusal import Recorder
from common.kube.workqueue import GiveUp, Result, WorkQueue, process_one, run_workers

K = TypeVar("K", bound=Hashable)


class ReconcileLoop(Generic[K]):
    """``handler(key) -> Outcome | GiveUp`` run by the loop; see the module docstring.

    ``run()`` processes in the calling thread, ``start(workers)`` in daemon threads; both end
    at ``stop()``. ``step()`` processes one ready key without blocking (fake-clock tests).
    """

    def __init__(
        self,
        name: str,
        handler: Callable[[K], Result],
        *,
        clock: Clock | None = None,
        debounce: float = 0.0,
        max_delay: float | None = None,
        hold_retries: bool = False,
        backoff: KeyedBackoff[K] | None = None,
        reprocess_all: Callable[[], Iterable[K]] | None = None,
        events: Recorder | None = None,
        on_give_up: Callable[[K, GiveUp], None] | None = None,
    ) -> None:
        self.queue: WorkQueue[K] = WorkQueue(name, clock=clock, backoff=backoff,
                                             debounce=debounce, max_delay=max_delay,
                                             hold_retries=hold_retries)
        self.handler = handler
        self.reprocess_all = reprocess_all
        self.events = events
        self.on_give_up = on_give_up
        self._threads: list[threading.Thread] = []

    @property
    def clock(self) -> Clock:
        return self.queue.clock

    def add(self, key: K) -> None:
        self.queue.add(key)

    def add_after(self, key: K, delay: float) -> None:
        self.queue.add_after(key, delay)

    def step(self) -> bool:
        """Process one key that is ready now; False when none is."""
        return process_one(self.queue, self.handler, self.reprocess_all, block=False,
                           on_give_up=self._gave_up)

    def run(self) -> None:
        """Process keys in this thread until ``stop()``."""
        while not self.queue.is_shutdown:
            process_one(self.queue, self.handler, self.reprocess_all, on_give_up=self._gave_up)

    def start(self, workers: int = 1) -> list[threading.Thread]:
        self._threads = run_workers(self.queue, self.handler, workers, self.reprocess_all,
                                    on_give_up=self._gave_up)
        return self._threads

    def stop(self, timeout: float | None = None) -> None:
        """Take no more keys; wait up to ``timeout`` for started workers to finish the key in
        hand (a key being processed is never cut short)."""
        self.queue.shutdown()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def _gave_up(self, key: K, gave_up: GiveUp) -> None:
        if self.events is not None and gave_up.involved is not None:
            self.events.record(dict(gave_up.involved), "Warning", gave_up.reason,
                               gave_up.message)
        if self.on_give_up is not None:
            self.on_give_up(key, gave_up)
