"""IntervalSet / UsableSet: exact arithmetic, never enumeration."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.api.addrset import IntervalSet, UsableSet, count_buggy, count_residue, is_buggy


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def net(text: str) -> tuple[int, int]:
    n = ipaddress.ip_network(text)
    return int(n.network_address), int(n.broadcast_address)


def test_normalises_sorts_and_merges_overlapping_and_adjacent() -> None:
    s = IntervalSet([(10, 20), (1, 3), (4, 5), (15, 30), (40, 40)])
    assert s.intervals() == ((1, 5), (10, 30), (40, 40))
    assert s.size == 5 + 21 + 1
    assert s == IntervalSet([(1, 5), (10, 30), (40, 40)])
    assert hash(s) == hash(IntervalSet([(40, 40), (1, 5), (10, 30)]))


def test_reversed_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="reversed"):
        IntervalSet([(5, 4)])
    with pytest.raises(ValueError):
        IntervalSet.single(2, 1)


def test_empty_set() -> None:
    e = IntervalSet()
    assert not e and e.size == 0 and e.first() is None and e.last() is None
    assert 0 not in e
    assert e.lowest_not_in(IntervalSet()) is None
    assert (IntervalSet([(1, 2)]) - IntervalSet([(0, 9)])) == e


def test_huge_sets_are_exact_and_cheap() -> None:
    v6_64 = IntervalSet([net("2001:db8::/64")])
    assert v6_64.size == 2**64
    whole = IntervalSet([(0, 2**128 - 1)])
    assert whole.size == 2**128
    holes = whole - IntervalSet([(5, 5), (2**127, 2**127 + 9)])
    assert holes.size == 2**128 - 11
    assert holes.lowest_not_in(IntervalSet([(0, 4)])) == 6
    assert len(holes.intervals()) == 3


def test_contains_and_next_at_or_after() -> None:
    s = IntervalSet([(10, 12), (20, 20)])
    assert 10 in s and 12 in s and 20 in s
    assert 9 not in s and 13 not in s and 21 not in s
    assert "10" not in s
    assert s.next_at_or_after(0) == 10
    assert s.next_at_or_after(11) == 11
    assert s.next_at_or_after(13) == 20
    assert s.next_at_or_after(21) is None


def test_algebra_examples() -> None:
    a = IntervalSet([(0, 9), (20, 29)])
    b = IntervalSet([(5, 24)])
    assert (a | b).intervals() == ((0, 29),)
    assert (a & b).intervals() == ((5, 9), (20, 24))
    assert (a - b).intervals() == ((0, 4), (25, 29))
    assert (b - a).intervals() == ((10, 19),)
    assert a.overlaps(b) and not a.overlaps(IntervalSet([(10, 19)]))
    assert IntervalSet([(1, 2)]).issubset(a) and not b.issubset(a)
    assert a.count_between(8, 21) == 4
    assert a.lowest_not_in(IntervalSet([(0, 9), (20, 20)])) == 21
    assert a.lowest_not_in(a) is None


small = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=6).map(
    lambda xs: [(a, a + d) for a, d in xs]
)


def elems(pairs: list[tuple[int, int]]) -> set[int]:
    return {n for a, b in pairs for n in range(a, b + 1)}


@settings(max_examples=300, deadline=None)
@given(small, small)
def test_algebra_matches_python_sets(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> None:
    a, b = IntervalSet(x), IntervalSet(y)
    ea, eb = elems(x), elems(y)
    for got, want in ((a | b, ea | eb), (a & b, ea & eb), (a - b, ea - eb)):
        assert elems(list(got.intervals())) == want
        assert got.size == len(want)
        assert got == IntervalSet((n, n) for n in want)  # canonical form
    assert a.overlaps(b) == bool(ea & eb)
    assert a.lowest_not_in(b) == (min(ea - eb) if ea - eb else None)
    for n in range(0, 72):
        assert (n in a) == (n in ea)
        nxt = [m for m in ea if m >= n]
        assert a.next_at_or_after(n) == (min(nxt) if nxt else None)


def test_buggy_arithmetic() -> None:
    assert is_buggy(v4("10.0.0.0")) and is_buggy(v4("10.0.0.255")) and not is_buggy(v4("10.0.1.1"))
    assert count_residue(0, 255, 0) == 1
    assert count_residue(1, 254, 0) == 0
    assert count_buggy(*net("10.0.0.0/8")) == 2 * 2**16
    assert count_buggy(*net("10.0.0.0/31")) == 1
    for first in range(0, 600, 37):
        for last in range(first, 900, 53):
            brute = sum(1 for n in range(first, last + 1) if n % 256 in (0, 255))
            assert count_buggy(first, last) == brute


def test_usable_set_with_avoid_buggy_is_lazy_and_exact() -> None:
    slash8 = UsableSet(IntervalSet([net("10.0.0.0/8")]), avoid_buggy=True)
    assert slash8.size == 2**24 - 2 * 2**16
    assert len(slash8.space.intervals()) == 1  # never split into 65k pieces
    assert slash8.first() == v4("10.0.0.1")
    assert v4("10.0.0.0") not in slash8 and v4("10.0.0.255") not in slash8
    assert v4("10.0.1.1") in slash8
    # .254 -> skip .255 and .0 -> .1
    assert slash8.next_at_or_after(v4("10.0.0.255")) == v4("10.0.1.1")
    used = IntervalSet([(v4("10.0.0.1"), v4("10.0.0.254"))])
    assert slash8.lowest_not_in(used) == v4("10.0.1.1")
    assert slash8.count_between(v4("10.0.0.0"), v4("10.0.1.255")) == 508
    plain = UsableSet(IntervalSet([net("10.0.0.0/8")]))
    assert plain.size == 2**24 and plain.first() == v4("10.0.0.0")


def test_usable_set_tiny_ranges() -> None:
    only_buggy = UsableSet(IntervalSet([(v4("192.0.2.255"), v4("192.0.3.0"))]), avoid_buggy=True)
    assert only_buggy.size == 0 and not only_buggy and only_buggy.first() is None
    assert UsableSet(IntervalSet([net("192.0.2.7/32")]), True).size == 1
    assert UsableSet(IntervalSet([net("192.0.2.0/31")]), True).size == 1
    assert UsableSet(IntervalSet([net("2001:db8::/127")])).size == 2
