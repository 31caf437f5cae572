"""Clocks: the Clock protocol and the real one (the fake one for tests is ``lab.fakeclock``).

Every time-dependent piece of common.kube (backoff, informer, work queue, leader election, event
de-duplication) takes a ``Clock`` so that unit tests never sleep (DESIGN.md habit 7).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC (for timestamps written to the API)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for durations, expiry, backoff)."""
        ...

    def sleep(self, seconds: float) -> None: ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until ``event`` is set; True when the event is set."""
        ...


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


def rfc3339(t: datetime) -> str:
    """Kubernetes ``Time``: second precision, UTC, trailing Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(t: datetime) -> str:
    """Kubernetes ``MicroTime`` (Lease renewTime/acquireTime, Event eventTime)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
