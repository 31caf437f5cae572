"""Which pool holds an address: the one rule the allocator and the speakers share.

The allocator decides which pool an allocation belongs to (its Event says "assigned ... from
pool P"); the speakers must pick the same pool, since it decides which advertisements apply
to the address. Both read the pool configuration through ``PoolLayout``:

* Valid ranges: a range that is reversed, of an unknown family or outside its family's
  address space is skipped (``InvalidRange``); the rest of the pool works. Of two pools with
  one name the first in input order counts (``DuplicatePool``).
* Usable addresses: the valid ranges minus, with ``avoidBuggyIPs``, every IPv4 address ending
  in .0 or .255. A family without any usable address is no family of the pool.
* Overlaps: pools are accepted oldest first (``Pool.created``, then name); a pool whose valid
  configured ranges (before avoidBuggyIPs) overlap an already accepted pool is *conflicting*
  (``PoolOverlap``, naming the older pool). Accepted pools are therefore pairwise disjoint.
* Preference order: pools with ``serviceAllocation`` by (priority, unset last, name), then
  generic pools by name.
* Home order: accepted pools before conflicting ones, each group in preference order.
* The pool holding an address (or the addresses of one allocation): the first pool in home
  order whose usable addresses contain it (all of them), optionally among the pools a
  Service is allowed to use. Without overlaps at most one pool holds any address; with
  overlaps the accepted pool wins, so a conflicting pool never takes over an address.

Pure: no I/O; building a layout costs O(pools^2 x ranges), a lookup O(pools x log ranges).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from common.api.addrset import IntervalSet, UsableSet
from common.api.model import (
    FAMILIES,
    IPV4,
    IPV6,
    Family,
    FieldProblem,
    IPAddress,
    ObjectRef,
    Pool,
    family_of,
)

__all__ = [
    "R_DUPLICATE_POOL",
    "R_INVALID_RANGE",
    "R_POOL_OVERLAP",
    "PoolLayout",
    "PoolSpace",
    "address",
    "pool_holding",
    "preference_key",
    "range_problem",
]

R_POOL_OVERLAP = "PoolOverlap"
R_INVALID_RANGE = "InvalidRange"
R_DUPLICATE_POOL = "DuplicatePool"

POOL_KIND = "IPAddressPool"
_FAMILY_MAX = {IPV4: (1 << 32) - 1, IPV6: (1 << 128) - 1}


def address(family: Family, n: int) -> IPAddress:
    """The address ``n`` of ``family`` (``ipaddress.ip_address(n)`` would guess the family)."""
    return ipaddress.IPv4Address(n) if family == IPV4 else ipaddress.IPv6Address(n)


def range_problem(family: Family, first: int, last: int) -> str | None:
    """Why a configured range cannot be used (None: it can)."""
    if family not in _FAMILY_MAX:
        return f"unknown address family {family!r}"
    if last < first:
        return "range is reversed (first address after last)"
    if first < 0 or last > _FAMILY_MAX[family]:
        return f"range is outside the {family} address space"
    return None


def preference_key(pool: Pool) -> tuple[int, bool, int, str]:
    """Pools with ``serviceAllocation`` by (priority, unset last, name), then the others by
    name."""
    alloc = pool.allocation
    if alloc is None:
        return (1, False, 0, pool.name)
    return (0, alloc.priority is None, alloc.priority or 0, pool.name)


@dataclass(frozen=True, slots=True, eq=False)
class PoolSpace:
    """One pool as the layout reads it."""

    pool: Pool
    # valid configured ranges per family (overlaps are judged on these)
    raw: Mapping[Family, IntervalSet]
    # usable addresses per family; only families with at least one usable address
    usable: Mapping[Family, UsableSet]
    # the older accepted pool this one overlaps (None: accepted)
    conflicts_with: str | None = None

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def conflicting(self) -> bool:
        return self.conflicts_with is not None

    def contains(self, family: Family, n: int) -> bool:
        usable = self.usable.get(family)
        return usable is not None and n in usable


class PoolLayout:
    """The pool configuration, read once: valid ranges, usable addresses, overlaps, orders.

    ``spaces``: by pool name, in name order. ``preference``: every pool in preference order;
    ``home_order``: accepted pools, then conflicting ones, each in preference order.
    ``problems``: per pool in name order its ``DuplicatePool`` / ``InvalidRange`` problems,
    then the ``PoolOverlap`` problems, oldest pool first.
    """

    __slots__ = ("home_order", "preference", "problems", "spaces")

    def __init__(self, pools: Iterable[Pool]) -> None:
        problems: list[FieldProblem] = []
        raws: dict[str, tuple[Pool, dict[Family, IntervalSet]]] = {}
        for pool in sorted(pools, key=lambda p: p.name):  # stable: the first duplicate wins
            ref = ObjectRef(POOL_KIND, pool.name)
            if pool.name in raws:
                problems.append(
                    FieldProblem(ref, "metadata.name", "duplicate pool name", R_DUPLICATE_POOL)
                )
                continue
            per_family: dict[Family, list[tuple[int, int]]] = {}
            for i, r in enumerate(pool.ranges):
                bad = range_problem(r.family, r.first, r.last)
                if bad:
                    problems.append(FieldProblem(
                        ref, f"spec.addresses[{i}]", f"{r.text!r}: {bad}", R_INVALID_RANGE))
                    continue
                per_family.setdefault(r.family, []).append((r.first, r.last))
            raws[pool.name] = (
                pool, {f: IntervalSet(per_family[f]) for f in FAMILIES if f in per_family}
            )

        # Overlaps: oldest first wins, the newer pool is conflicting. Configured ranges, not
        # usable addresses: an overlap is a configuration error even where avoidBuggyIPs
        # leaves nothing to allocate.
        conflicts: dict[str, str] = {}
        accepted: list[tuple[str, dict[Family, IntervalSet]]] = []
        for pool, raw in sorted(raws.values(), key=lambda t: (t[0].created, t[0].name)):
            for older, older_raw in accepted:
                common = [(f, space & older_raw[f]) for f, space in raw.items() if f in older_raw]
                common = [(f, c) for f, c in common if c]
                if common:
                    conflicts[pool.name] = older
                    f, c = common[0]
                    lo, hi = c.intervals()[0]
                    span = str(address(f, lo)) if lo == hi else \
                        f"{address(f, lo)}-{address(f, hi)}"
                    problems.append(FieldProblem(
                        ObjectRef(POOL_KIND, pool.name), "spec.addresses",
                        f"overlaps the older pool {older} (for example {span}); this pool "
                        "allocates no new addresses until the overlap is removed",
                        R_POOL_OVERLAP,
                    ))
                    break
            else:
                accepted.append((pool.name, raw))

        self.spaces: dict[str, PoolSpace] = {}
        for name, (pool, raw) in raws.items():
            usable: dict[Family, UsableSet] = {}
            for f, space in raw.items():
                u = UsableSet(space, pool.avoid_buggy_ips and f == IPV4)
                if u:
                    usable[f] = u
            self.spaces[name] = PoolSpace(pool, raw, usable, conflicts.get(name))
        self.preference: tuple[PoolSpace, ...] = tuple(
            sorted(self.spaces.values(), key=lambda s: preference_key(s.pool)))
        self.home_order: tuple[PoolSpace, ...] = tuple(
            sorted(self.preference, key=lambda s: s.conflicting))  # stable
        self.problems: tuple[FieldProblem, ...] = tuple(problems)

    def home(
        self, ips: Sequence[tuple[Family, int]], allowed: Container[str] | None = None
    ) -> PoolSpace | None:
        """The first pool in home order (among ``allowed`` pool names, if given) whose usable
        addresses contain every one of ``ips``; None if there is none."""
        for sp in self.home_order:
            if allowed is not None and sp.name not in allowed:
                continue
            if all(sp.contains(f, n) for f, n in ips):
                return sp
        return None

    def holding(self, ip: IPAddress) -> Pool | None:
        """The pool holding ``ip`` (see the module docstring), or None."""
        sp = self.home(((family_of(ip), int(ip)),))
        return None if sp is None else sp.pool


def pool_holding(ip: IPAddress, pools: Iterable[Pool]) -> Pool | None:
    """The pool holding ``ip``. For many addresses build one ``PoolLayout`` and ask it."""
    return PoolLayout(pools).holding(ip)
