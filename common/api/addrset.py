"""Address sets as sorted, disjoint, inclusive integer intervals.

The allocator never enumerates a range and never counts addresses one by one: an IPv6 /64
(2**64 addresses) costs the same as a /32. Everything here is arithmetic on interval
endpoints, with ``bisect`` for membership.

``IntervalSet`` is immutable (a value): set algebra returns new sets, so a pool's address
space can be shared, compared and cached freely.

``UsableSet`` is an ``IntervalSet`` plus MetalLB's ``avoidBuggyIPs`` rule (skip IPv4
addresses ending in .0 and .255, which some old client stacks treat as network/broadcast
addresses even inside larger prefixes). The rule is applied lazily and arithmetically: a /8
with avoidBuggyIPs stays one interval, its size is computed by counting residues modulo 256,
and "next usable address" just steps over the (at most two) excluded values in a row.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator

# avoidBuggyIPs works on the last octet of an IPv4 address: residues modulo 256.
_OCTET = 256
_BUGGY_RESIDUES = (0, 255)


def count_residue(first: int, last: int, residue: int, modulus: int = _OCTET) -> int:
    """How many n in [first, last] have n % modulus == residue (0 if the range is empty)."""
    if last < first:
        return 0
    return (last - residue) // modulus - (first - 1 - residue) // modulus


def is_buggy(n: int) -> bool:
    """True for an IPv4 address (as int) ending in .0 or .255."""
    return (n & 0xFF) in _BUGGY_RESIDUES


def count_buggy(first: int, last: int) -> int:
    """Number of .0 / .255 addresses in [first, last], arithmetically."""
    return sum(count_residue(first, last, r) for r in _BUGGY_RESIDUES)


class IntervalSet:
    """An immutable set of integers stored as sorted disjoint inclusive [first, last] intervals.

    Adjacent intervals are merged, so two equal sets have equal representations (``==`` and
    ``hash`` are structural). Iterating yields intervals, never elements; ``size`` is exact.
    """

    __slots__ = ("_ends", "_starts")

    _starts: tuple[int, ...]
    _ends: tuple[int, ...]

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        pairs = sorted(intervals)
        starts: list[int] = []
        ends: list[int] = []
        for first, last in pairs:
            if last < first:
                raise ValueError(f"reversed interval [{first}, {last}]")
            if ends and first <= ends[-1] + 1:
                if last > ends[-1]:
                    ends[-1] = last
            else:
                starts.append(first)
                ends.append(last)
        self._starts = tuple(starts)
        self._ends = tuple(ends)

    @classmethod
    def _make(cls, starts: list[int], ends: list[int]) -> IntervalSet:
        """Build from already normalised (sorted, disjoint, non-adjacent) lists."""
        out = cls.__new__(cls)
        out._starts = tuple(starts)
        out._ends = tuple(ends)
        return out

    @classmethod
    def single(cls, first: int, last: int) -> IntervalSet:
        if last < first:
            raise ValueError(f"reversed interval [{first}, {last}]")
        return cls._make([first], [last])

    # --- inspection -----------------------------------------------------------------------

    @property
    def starts(self) -> tuple[int, ...]:
        return self._starts

    @property
    def ends(self) -> tuple[int, ...]:
        return self._ends

    def intervals(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    @property
    def size(self) -> int:
        """Exact number of elements (a Python int: 2**64 is fine)."""
        return sum(self._ends) - sum(self._starts) + len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __hash__(self) -> int:
        return hash((self._starts, self._ends))

    def __repr__(self) -> str:
        body = ", ".join(f"[{a}, {b}]" for a, b in self)
        return f"IntervalSet({body})"

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        i = bisect_right(self._starts, n) - 1
        return i >= 0 and n <= self._ends[i]

    def first(self) -> int | None:
        return self._starts[0] if self._starts else None

    def last(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def next_at_or_after(self, n: int) -> int | None:
        """Smallest element >= n, or None."""
        i = bisect_right(self._starts, n) - 1
        if i >= 0 and n <= self._ends[i]:
            return n
        if i + 1 < len(self._starts):
            return self._starts[i + 1]
        return None

    def count_between(self, first: int, last: int) -> int:
        """Exact number of elements in [first, last]."""
        return self.intersection(IntervalSet.single(first, last)).size if first <= last else 0

    # --- algebra --------------------------------------------------------------------------

    def union(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet(list(self) + list(other))

    __or__ = union

    def intersection(self, other: IntervalSet) -> IntervalSet:
        a_s, a_e, b_s, b_e = self._starts, self._ends, other._starts, other._ends
        i = j = 0
        starts: list[int] = []
        ends: list[int] = []
        while i < len(a_s) and j < len(b_s):
            lo = max(a_s[i], b_s[j])
            hi = min(a_e[i], b_e[j])
            if lo <= hi:
                starts.append(lo)
                ends.append(hi)
            if a_e[i] < b_e[j]:
                i += 1
            else:
                j += 1
        return IntervalSet._make(starts, ends)

    __and__ = intersection

    def difference(self, other: IntervalSet) -> IntervalSet:
        starts: list[int] = []
        ends: list[int] = []
        b_s, b_e = other._starts, other._ends
        j = 0
        for first, last in self:
            cur = first
            # skip subtrahend intervals entirely left of this one
            while j < len(b_s) and b_e[j] < cur:
                j += 1
            k = j
            while k < len(b_s) and b_s[k] <= last:
                if b_s[k] > cur:
                    starts.append(cur)
                    ends.append(b_s[k] - 1)
                cur = max(cur, b_e[k] + 1)
                if cur > last:
                    break
                k += 1
            if cur <= last:
                starts.append(cur)
                ends.append(last)
        return IntervalSet._make(starts, ends)

    __sub__ = difference

    def overlaps(self, other: IntervalSet) -> bool:
        return bool(self.intersection(other))

    def issubset(self, other: IntervalSet) -> bool:
        return not self.difference(other)

    def lowest_not_in(self, used: IntervalSet) -> int | None:
        """Smallest element of self that is not in ``used`` (None if self ⊆ used)."""
        b_s, b_e = used._starts, used._ends
        for first, last in self:
            cur = first
            j = bisect_right(b_s, cur) - 1
            if j < 0:
                return cur
            while j < len(b_s) and b_s[j] <= cur:
                if b_e[j] >= cur:
                    cur = b_e[j] + 1
                j += 1
            if cur <= last:
                return cur
        return None


class UsableSet:
    """A pool's usable addresses of one family: an ``IntervalSet`` minus, if ``avoid_buggy``,
    every address ending in .0 or .255 (IPv4 only; the caller passes avoid_buggy=False for
    IPv6, where the rule does not apply)."""

    __slots__ = ("avoid_buggy", "space")

    def __init__(self, space: IntervalSet, avoid_buggy: bool = False) -> None:
        self.space = space
        self.avoid_buggy = avoid_buggy

    def __repr__(self) -> str:
        return f"UsableSet({self.space!r}, avoid_buggy={self.avoid_buggy})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UsableSet):
            return NotImplemented
        return self.space == other.space and self.avoid_buggy == other.avoid_buggy

    def __hash__(self) -> int:
        return hash((self.space, self.avoid_buggy))

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int) or n not in self.space:
            return False
        return not (self.avoid_buggy and is_buggy(n))

    @property
    def size(self) -> int:
        total = self.space.size
        if self.avoid_buggy:
            total -= sum(count_buggy(a, b) for a, b in self.space)
        return total

    def __bool__(self) -> bool:
        return self.size > 0

    def next_at_or_after(self, n: int) -> int | None:
        """Smallest usable element >= n. At most a few steps: .255 is followed by .0, then .1."""
        space = self.space
        cur: int | None = space.next_at_or_after(n)
        while cur is not None and self.avoid_buggy and is_buggy(cur):
            cur = space.next_at_or_after(cur + 1)
        return cur

    def first(self) -> int | None:
        s = self.space.first()
        return None if s is None else self.next_at_or_after(s)

    def lowest_not_in(self, used: IntervalSet) -> int | None:
        """Smallest usable element not in ``used``. The excluded .0/.255 addresses are only
        ever consulted next to a candidate, so the cost is O(intervals * log)."""
        cur = self.first()
        while cur is not None:
            if cur not in used:
                return cur
            # jump past the used interval containing cur
            i = bisect_right(used.starts, cur) - 1
            cur = self.next_at_or_after(used.ends[i] + 1)
        return None

    def count_between(self, first: int, last: int) -> int:
        """Exact number of usable elements in [first, last]."""
        if last < first:
            return 0
        part = self.space.intersection(IntervalSet.single(first, last))
        return UsableSet(part, self.avoid_buggy).size


__all__ = [
    "IntervalSet",
    "UsableSet",
    "count_buggy",
    "count_residue",
    "is_buggy",
]
