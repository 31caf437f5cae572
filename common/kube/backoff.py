"""Exponential backoff with full jitter, capped (AWS architecture blog, "full jitter").

Full jitter spreads retries of many clients hitting the same failing API server over the whole
window instead of synchronising them; the cap bounds the worst-case reaction time once the
server is back.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def full_jitter(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Delay for the ``attempt``-th consecutive failure (0-based): U(0, min(cap, base*2^n))."""
    # 2**60 already exceeds any sane cap; clamp the exponent so huge attempt counts don't
    # overflow a float.
    ceiling = min(cap, base * (2.0 ** min(attempt, 60)))
    return ceiling * rand()


class Backoff:
    """Consecutive-failure backoff for one loop: ``next()`` after a failure, ``reset()`` after
    a success. ``floor`` keeps a minimal pause so that a storm of instant failures can never
    become a hot loop even when the random draw is close to 0."""

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        floor: float = 0.05,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base or floor < 0:
            raise ValueError("need 0 < base <= cap and floor >= 0")
        self.base, self.cap, self.floor = base, cap, floor
        self._rand = rand
        self.attempts = 0

    def next(self) -> float:
        delay = max(self.floor, full_jitter(self.attempts, self.base, self.cap, self._rand))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


class KeyedBackoff(Generic[K]):
    """Per-key consecutive-failure counts (work-queue rate limiter); thread-safe."""

    def __init__(
        self,
        base: float = 0.05,
        cap: float = 60.0,
        floor: float = 0.005,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.floor = base, cap, floor
        self._rand = rand
        self._failures: dict[K, int] = {}
        self._lock = threading.Lock()

    def next(self, key: K) -> float:
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        return max(self.floor, full_jitter(n, self.base, self.cap, self._rand))

    def failures(self, key: K) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        with self._lock:
            self._failures.pop(key, None)
