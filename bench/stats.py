"""Figures the benchmarks share (pure)."""

from __future__ import annotations

import math


def pct(values: list[float], p: float) -> float:
    """The p-th percentile by nearest rank (p99 of 10 values is the largest); NaN if empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]
