"""Scheduled faults: the next N requests matching (verb, path regex) fail or are delayed.

Verbs: the HTTP method, or the finer Kubernetes verb of a GET (``LIST``, ``WATCH``, ``GET`` on
one object); a rule for ``GET`` matches all three, ``*`` matches everything. The regex is
searched in the path plus query string, e.g. ``r"/services"`` or ``r"watch=1"``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass
class FaultRule:
    verb: str
    path: re.Pattern[str]
    remaining: int
    status: int | None = None  # answer with this HTTP status (a metav1.Status body)
    delay: float = 0.0  # seconds to stall before answering (or failing)
    retry_after: int | None = None
    # For WATCH requests answered 410: send it as an ERROR event in a 200 stream, as the
    # real API server does, instead of an HTTP 410.
    as_watch_event: bool = True
    hits: int = 0

    def matches(self, http_method: str, verb: str, target: str) -> bool:
        if self.verb not in ("*", http_method, verb):
            return False
        return self.path.search(target) is not None


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []

    def fail(
        self, verb: str, path: str, status: int, count: int = 1,
        retry_after: int | None = None, delay: float = 0.0, as_watch_event: bool = True,
    ) -> FaultRule:
        """The next ``count`` matching requests answer ``status`` (500, 409, 410, 429, ...)."""
        rule = FaultRule(verb.upper(), re.compile(path), count, status, delay, retry_after,
                         as_watch_event)
        with self._lock:
            self.rules.append(rule)
        return rule

    def delay(self, verb: str, path: str, seconds: float, count: int = 1) -> FaultRule:
        """The next ``count`` matching requests stall ``seconds`` and are then served."""
        rule = FaultRule(verb.upper(), re.compile(path), count, None, seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def take(self, http_method: str, verb: str, target: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.remaining > 0 and rule.matches(http_method, verb, target):
                    rule.remaining -= 1
                    rule.hits += 1
                    if rule.remaining == 0:
                        self.rules.remove(rule)
                    return rule
            return None

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
