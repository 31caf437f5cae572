"""Polling with a deadline, for tests and benchmarks that wait on real processes.

One helper, so that every wait has the same semantics: success is a truthy value (``None``
is not success: a check made of asserts belongs in ``eventually_passes``-style helpers that
say so), the deadline is real time, and a timeout raises AssertionError naming what was
awaited and the last value seen. Unit tests of timing use ``lab.fakeclock`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll ``pred`` until it returns a truthy value (returned); AssertionError naming
    ``what`` after ``timeout`` seconds. The value is typed ``Any``: checks are often
    ``a and b`` expressions whose static type says less than the caller knows."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)
