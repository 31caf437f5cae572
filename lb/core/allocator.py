"""The pure VIP allocator: which address(es) each LoadBalancer Service gets from which pool.

No I/O, no clock, deterministic: the same calls in the same order give the same results. The
controller owns the Kubernetes side (watching, status writes, Events, retries); this module
only decides. Allocation state is a cache of Service status: ``rebuild`` restores it from the
addresses Services already show, so a restart never moves or steals an address.

API (the controller is written against this)
--------------------------------------------
``Allocator(pools=())``
``set_pools(pools) -> set[str]``
    Replace the pool configuration. Re-applying identical pools is a no-op returning ``set()``.
    Otherwise every allocation that is still valid is kept (never moved); one that is valid
    only through another pool is re-homed (its ``Allocation.pool`` changes); the rest are
    released. Returns the keys the controller must re-process: released and re-homed
    Services, plus every pending Service (new or larger pools may now fit them).
``allocate(svc, namespace_labels) -> Allocation | Pending``
    Idempotent. Order of preference: (1) the Service's current allocation, if still valid for
    its current request; (2) its ``status_ips`` when they form a valid allocation and are free
    or shareable (restore); (3) a new allocation, which still prefers the previously held /
    status addresses per family ("sticky"), then addresses already used by compatible
    sharers of its sharing key, then the lowest free address. A change of ``ip_families`` /
    ``family_policy`` always re-evaluates (so SingleStack -> PreferDualStack can gain the
    second family). When ``allocate`` frees addresses (a re-evaluation) or creates a new
    shareable address, pending Services that might now fit are queued: call ``requeue()``.
``release(key) -> set[str]``
    Forget the Service; an address is free when its last sharer leaves. Returns the pending
    keys that might now fit (also drains ``requeue()``).
``requeue() -> set[str]``
    Drain the pending keys woken by earlier ``allocate`` calls.
``rebuild(services) -> dict[str, Allocation | Pending]``
    Start-up: forget all Service state (pools stay), restore every Service whose status
    addresses are valid (sorted by key), then allocate the rest (status holders whose restore
    failed first, then the others, by key), then re-process woken pending Services until
    nothing changes.
``allocation(key) -> Allocation | None``, ``allocations() -> dict[str, Allocation]``,
``pending() -> dict[str, Pending]``
``pool_stats() -> dict[str, PoolStats]``
    Per pool: ``families[IPv4|IPv6] -> FamilyStats(total, assigned, available)`` (exact ints,
    a /64 is 2**64), ``conflicting`` and ``conflicts_with``.
``pool_problems() -> list[FieldProblem]``
    ``PoolOverlap`` (on the newer pool), ``InvalidRange`` (reversed / out-of-family range, the
    range is skipped, the rest of the pool works), ``DuplicatePool``.

Keys are ``namespace/name``. The controller loop: on a Service event call ``allocate`` and
write the result, then re-process ``requeue()``; on delete call ``release`` and re-process
what it returns; on a pool event call ``set_pools`` and re-process what it returns; on a
namespace label change re-process that namespace's Services; at start ``set_pools`` then
``rebuild``. Re-processing until these sets are empty reaches a state where no pending
Service could be satisfied (checked by tests/unit/test_allocator_property.py).

Rules
-----
* Pool eligibility for a Service: if the Service names a pool (``requested_pool``), only that
  pool (``UnknownPool`` if absent). Otherwise every pool with ``autoAssign`` or containing one
  of the Service's requested addresses. In both cases a pool with ``serviceAllocation`` serves
  only Services it matches (namespaces, namespace selectors, service selectors, ANDed) - also
  for requested addresses. Order: pools with ``serviceAllocation`` by (priority, unset last,
  name), then generic pools by name. The same rules decide whether an existing allocation is
  still valid (so turning ``autoAssign`` off releases unrequested allocations).
* Overlapping pools: pools are accepted oldest first (``Pool.created``, then name); a pool
  overlapping an already accepted pool is *conflicting* (``pool_problems`` reports
  ``PoolOverlap``). A conflicting pool allocates nothing new (not even requested addresses:
  ``PoolConflict``), but allocations it already holds stay valid (so adding an overlapping
  pool, or a restart, never moves an address). Addresses are unique across all pools, so an
  overlap can never hand one address to two Services that may not share it. Accepted pools
  are therefore pairwise disjoint. Overlap is judged on the configured ranges (before
  avoidBuggyIPs).
* The pool an allocation names is a function of the configuration, not of history: the
  first allowed pool holding all its addresses, accepted pools before conflicting ones (so a
  rebuild names the same pool as the live state). Valid ranges, usable addresses, overlaps,
  both orders and this choice are ``common.api.pools.PoolLayout``'s, which the speakers use
  to find the pool (hence the advertisements) of a VIP: they name the pool this one names.
* Pool counts per family: ``total`` = usable addresses (avoidBuggyIPs excluded),
  ``assigned`` = distinct in-use addresses inside the pool's usable set (whichever pool the
  holder's allocation names; a shared address counts once), ``available = total - assigned``.
* Sharing: same non-empty sharing key, disjoint (protocol, port) sets, and traffic policies
  Cluster+Cluster or Local+Local with identical selectors. Checked against every holder
  (``_sharing_problem``, the one place this rule is written).
* Families: SingleStack -> ``ip_families[0]``; RequireDualStack -> both families, from one
  pool; PreferDualStack -> both from one pool if any pool can, else the required family
  (the requested family if an address is requested, else the primary). A requested address
  must be of a family the Service asks for (else ``InvalidRequest``); a dual-stack request
  with two addresses needs both in one pool.
* Lowest free address first within a pool; deterministic.

Pending reasons: InvalidRequest, UnknownPool, PoolConflict, NoPoolMatches,
FamilyUnavailable, AddressNotInPool, AddressInUse, SharingConflict, PoolExhausted.

Performance: per pool and family a free-address cursor over the sorted intervals plus a heap
of addresses released below the cursor (lowest-first in amortised O(log n)); in-use addresses
in one dict per family; counts are maintained incrementally. Nothing enumerates a range.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from common.api.addrset import IntervalSet, UsableSet, is_buggy
from common.api.model import (
    ANN_ADDRESS_POOL,
    FAMILIES,
    IPV4,
    IPV6,
    Family,
    FieldProblem,
    IPAddress,
    LBService,
    Pool,
    family_of,
)
from common.api.pools import PoolLayout, PoolSpace, address

__all__ = [
    "Allocation",
    "Allocator",
    "FamilyStats",
    "Pending",
    "PoolStats",
    "Result",
]

# --- results ---------------------------------------------------------------------------------

R_INVALID_REQUEST = "InvalidRequest"
R_UNKNOWN_POOL = "UnknownPool"
R_POOL_CONFLICT = "PoolConflict"
R_NO_POOL_MATCHES = "NoPoolMatches"
R_FAMILY_UNAVAILABLE = "FamilyUnavailable"
R_ADDRESS_NOT_IN_POOL = "AddressNotInPool"
R_ADDRESS_IN_USE = "AddressInUse"
R_SHARING_CONFLICT = "SharingConflict"
R_POOL_EXHAUSTED = "PoolExhausted"
# Pool problems (PoolOverlap, InvalidRange, DuplicatePool) come from common.api.pools.


@dataclass(frozen=True, slots=True)
class Allocation:
    """Addresses held by a Service (primary family first) and the pool they are valid in."""

    ips: tuple[IPAddress, ...]
    pool: str


@dataclass(frozen=True, slots=True)
class Pending:
    """Why a Service has no address: CamelCase reason plus a message naming pool/address."""

    reason: str
    message: str


Result = Allocation | Pending


@dataclass(frozen=True, slots=True)
class FamilyStats:
    total: int
    assigned: int
    available: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    families: Mapping[Family, FamilyStats] = field(default_factory=dict)
    conflicting: bool = False
    conflicts_with: str | None = None


# --- internal state --------------------------------------------------------------------------


def _ints(result: Allocation) -> tuple[tuple[Family, int], ...]:
    """(family, int) pairs of an allocation. Derived on demand rather than stored: every
    stored object costs garbage-collector time on the 100,000-Service path."""
    return tuple((IPV4 if ip.version == 4 else IPV6, int(ip)) for ip in result.ips)


class _Space:
    """One pool's usable addresses of one family, with a lowest-free cursor.

    Invariant: every free usable address below ``cur`` is in ``heap`` (which may also hold
    stale entries, dropped lazily). So the lowest free address is the lowest live heap entry,
    else the first free usable address at or after ``cur``. The cursor only moves forward
    over in-use addresses, so its total work is bounded by the number of allocations.
    """

    __slots__ = (
        "assigned", "avoid", "ci", "cur", "ends", "family", "heap", "pool_name", "starts",
        "total", "usable",
    )

    def __init__(self, pool_name: str, family: Family, usable: UsableSet) -> None:
        self.pool_name = pool_name
        self.family = family
        self.usable = usable
        self.starts = usable.space.starts
        self.ends = usable.space.ends
        self.avoid = usable.avoid_buggy
        self.total = usable.size
        self.assigned = 0
        self.ci = 0
        self.cur = 0
        self.heap: list[int] = []
        self.reset()

    def reset(self) -> None:
        self.ci = 0
        self.cur = self.starts[0] if self.starts else 0
        self.heap = []

    def contains(self, n: int) -> bool:
        i = bisect_right(self.starts, n) - 1
        if i < 0 or n > self.ends[i]:
            return False
        return not (self.avoid and (n & 0xFF) in (0, 0xFF))

    def peek_free(self, used: Mapping[int, object]) -> int | None:
        """Lowest free usable address (not consumed: the caller marks it used)."""
        heap = self.heap
        while heap:
            n = heap[0]
            if n in used:
                heapq.heappop(heap)
                continue
            return n
        starts, ends, avoid = self.starts, self.ends, self.avoid
        i, c = self.ci, self.cur
        count = len(starts)
        while i < count:
            if c > ends[i]:
                i += 1
                if i < count:
                    c = starts[i]
                continue
            if avoid and (c & 0xFF) in (0, 0xFF):
                c += 1
                continue
            if c in used:
                c += 1
                continue
            self.ci, self.cur = i, c
            return c
        self.ci, self.cur = i, c
        return None

    def freed(self, n: int) -> None:
        """``n`` (usable here) became free: keep the cursor invariant."""
        if self.ci >= len(self.starts) or n < self.cur:
            heapq.heappush(self.heap, n)


class _PoolState:
    """A pool of the layout (``common.api.pools``) with its allocation state per family."""

    __slots__ = (
        "conflicting", "conflicts_with", "fams", "name", "pool", "raw", "restricted", "spaces",
    )

    def __init__(self, ps: PoolSpace, spaces: dict[Family, _Space]) -> None:
        self.pool = ps.pool
        self.raw: Mapping[Family, IntervalSet] = ps.raw
        self.name = ps.name
        self.spaces = spaces
        self.fams = frozenset(spaces)
        self.restricted = ps.pool.allocation is not None
        self.conflicting = ps.conflicting
        self.conflicts_with = ps.conflicts_with

    def selects(self, svc: LBService, namespace_labels: Mapping[str, str]) -> bool:
        alloc = self.pool.allocation
        return alloc is None or alloc.matches(svc.namespace, namespace_labels, svc.labels)

    def contains_all(self, ips: Iterable[tuple[Family, int]]) -> bool:
        for f, n in ips:
            sp = self.spaces.get(f)
            if sp is None or not sp.contains(n):
                return False
        return True


class _Use:
    """An address shared by two or more compatible Services. An address with one holder is
    stored as that LBService itself (no extra objects: fewer objects for the garbage
    collector to scan is a large part of the 100,000-Service budget)."""

    __slots__ = ("holders", "sharing_key")

    def __init__(self, holders: dict[str, LBService], sharing_key: str | None) -> None:
        self.holders = holders
        self.sharing_key = sharing_key


_Entry = LBService | _Use


def _holders(entry: _Entry) -> dict[str, LBService]:
    if isinstance(entry, _Use):
        return entry.holders
    return {entry.key: entry}


class _PendingRec:
    __slots__ = ("nsl", "pools", "result", "svc")

    def __init__(
        self, svc: LBService, nsl: Mapping[str, str], result: Pending, pools: frozenset[str]
    ) -> None:
        self.svc = svc
        self.nsl = nsl
        self.result = result
        # pools whose address changes could satisfy this Service (empty: only a config or
        # Service change can)
        self.pools = pools


class _Plan:
    __slots__ = ("requested", "required", "required_set", "wanted")

    def __init__(
        self, wanted: tuple[Family, ...], required: tuple[Family, ...], requested: dict[Family, int]
    ) -> None:
        self.wanted = wanted
        self.required = required
        self.required_set = frozenset(required)
        self.requested = requested


def _sharing_problem(svc: LBService, holder: LBService) -> str | None:
    """Why ``svc`` may not share an address with ``holder`` (None: it may): the one sharing
    rule. A common non-empty sharing key, disjoint (protocol, port) sets, the same traffic
    policy, and for Local the same selector (the same endpoints, hence the same announcing
    nodes). Cheap when they may share: the message is built only for a refusal."""
    if svc.sharing_key is None or holder.sharing_key != svc.sharing_key:
        return f"held by Service {holder.key} without a common sharing key"
    if not svc.ports.isdisjoint(holder.ports):
        ports = ", ".join(f"{p.protocol}/{p.port}" for p in sorted(svc.ports & holder.ports))
        return f"ports {ports} are also used by Service {holder.key}"
    if svc.traffic_policy != holder.traffic_policy:
        return (
            f"externalTrafficPolicy {svc.traffic_policy} cannot share with "
            f"{holder.traffic_policy} (Service {holder.key})"
        )
    if svc.traffic_policy == "Local" and svc.selector != holder.selector:
        return f"externalTrafficPolicy Local needs the same selector as Service {holder.key}"
    return None


def _compatible(svc: LBService, entry: _Entry) -> bool:
    """May ``svc`` hold this in-use address (it may already be one of the holders)? Only if
    it may share with every other holder."""
    if not isinstance(entry, _Use):
        if entry.name == svc.name and entry.namespace == svc.namespace:
            return True
        return _sharing_problem(svc, entry) is None
    key = svc.key
    return all(
        _sharing_problem(svc, h) is None for hk, h in entry.holders.items() if hk != key
    )


class Allocator:
    """See the module docstring for the API and the rules."""

    def __init__(self, pools: Iterable[Pool] = ()) -> None:
        self._pool_input: list[Pool] = []
        self._layout = PoolLayout(())
        self._pools: dict[str, _PoolState] = {}
        self._order: list[_PoolState] = []
        self._keep_order: list[_PoolState] = []
        self._auto_restricted: list[_PoolState] = []
        self._auto_generic: list[_PoolState] = []
        # accepted (non-conflicting) pools are disjoint: one sorted interval index per family
        self._idx_starts: dict[Family, list[int]] = {IPV4: [], IPV6: []}
        self._idx_ends: dict[Family, list[int]] = {IPV4: [], IPV6: []}
        self._idx_spaces: dict[Family, list[_Space]] = {IPV4: [], IPV6: []}
        self._conflict_spaces: dict[Family, list[_Space]] = {IPV4: [], IPV6: []}
        self._problems: list[FieldProblem] = []
        self._used: dict[Family, dict[int, _Entry]] = {IPV4: {}, IPV6: {}}
        self._shared: dict[Family, dict[str, set[int]]] = {IPV4: {}, IPV6: {}}
        # per allocated Service: its result, and the inputs it was decided for (three flat
        # dicts instead of a record object per Service: fewer objects for the collector)
        self._results: dict[str, Allocation] = {}
        self._svcs: dict[str, LBService] = {}
        self._nsls: dict[str, Mapping[str, str]] = {}
        self._pending: dict[str, _PendingRec] = {}
        self._woken: set[str] = set()
        self._plan_cache: dict[tuple[tuple[Family, ...], str], _Plan | Pending] = {}
        pools = list(pools)
        if pools:
            self.set_pools(pools)

    # --- queries -----------------------------------------------------------------------------

    def allocation(self, key: str) -> Allocation | None:
        return self._results.get(key)

    def pending(self) -> dict[str, Pending]:
        return {k: p.result for k, p in self._pending.items()}

    def allocations(self) -> dict[str, Allocation]:
        return dict(self._results)

    def pool_problems(self) -> list[FieldProblem]:
        return list(self._problems)

    def pool_stats(self) -> dict[str, PoolStats]:
        out: dict[str, PoolStats] = {}
        for name, st in self._pools.items():
            # a configured family with no usable address (say, only .0/.255 addresses and
            # avoidBuggyIPs) is shown with zero counts rather than hidden
            fams = {f: FamilyStats(0, 0, 0) for f in st.raw}
            fams.update(
                (f, FamilyStats(sp.total, sp.assigned, sp.total - sp.assigned))
                for f, sp in st.spaces.items()
            )
            out[name] = PoolStats(fams, st.conflicting, st.conflicts_with)
        return out

    # --- pools -------------------------------------------------------------------------------

    def set_pools(self, pools: Iterable[Pool]) -> set[str]:
        new_input = sorted(pools, key=lambda p: p.name)
        if new_input == self._pool_input and (self._pools or not new_input):
            return set()
        self._pool_input = new_input
        old = self._pools
        # Valid ranges, usable addresses, overlaps and orders: the rules the speakers read
        # the same configuration with.
        layout = PoolLayout(new_input)
        states: dict[str, _PoolState] = {}
        for name, ps in layout.spaces.items():
            prev = old.get(name)
            spaces: dict[Family, _Space] = {}
            for f, usable in ps.usable.items():
                sp = prev.spaces.get(f) if prev is not None else None
                if sp is None or sp.usable != usable:
                    sp = _Space(name, f, usable)
                    used = self._used[f]
                    sp.assigned = sum(1 for n in used if sp.contains(n))
                spaces[f] = sp
            states[name] = _PoolState(ps, spaces)
        for f in FAMILIES:
            entries = sorted(
                (s, e, st.spaces[f])
                for st in states.values() if not st.conflicting and f in st.spaces
                for s, e in st.spaces[f].usable.space
            )
            self._idx_starts[f] = [s for s, _, _ in entries]
            self._idx_ends[f] = [e for _, e, _ in entries]
            self._idx_spaces[f] = [sp for _, _, sp in entries]
            self._conflict_spaces[f] = [
                st.spaces[f] for st in states.values() if st.conflicting and f in st.spaces
            ]
        self._layout = layout
        self._pools = states
        self._order = [states[ps.name] for ps in layout.preference]
        self._keep_order = [states[ps.name] for ps in layout.home_order]
        live_auto = [st for st in self._order if st.pool.auto_assign and not st.conflicting]
        self._auto_restricted = [st for st in live_auto if st.restricted]
        self._auto_generic = [st for st in live_auto if not st.restricted]
        self._problems = list(layout.problems)

        # Re-validate allocations whose pool changed (an unchanged pool keeps them valid).
        touched: set[str] = set()
        for key, cur in list(self._results.items()):
            before = old.get(cur.pool)
            now = states.get(cur.pool)
            if (
                before is not None and now is not None and before.pool == now.pool
                and not before.conflicting and not now.conflicting
            ):
                # still the one accepted pool holding these addresses: still valid, same home
                continue
            rsvc = self._svcs[key]
            plan = self._plan(rsvc)
            home = None if isinstance(plan, Pending) else self._fit_existing(
                rsvc, self._nsls[key], plan, _ints(cur))
            if home is None:
                touched.add(key)
                self._drop(key)
            elif home.name != cur.pool:
                touched.add(key)
                self._results[key] = Allocation(cur.ips, home.name)
        self._woken.clear()
        return touched | set(self._pending)

    def _spaces_containing(self, f: Family, n: int) -> list[_Space]:
        out: list[_Space] = []
        i = bisect_right(self._idx_starts[f], n) - 1
        if i >= 0 and n <= self._idx_ends[f][i]:
            sp = self._idx_spaces[f][i]
            if sp.contains(n):
                out.append(sp)
        for sp in self._conflict_spaces[f]:
            if sp.contains(n):
                out.append(sp)
        return out

    # --- Services ----------------------------------------------------------------------------

    def allocate(self, svc: LBService, namespace_labels: Mapping[str, str]) -> Result:
        key = svc.key
        cur = self._results.get(key)
        if (
            cur is None and not svc.status_ips and not svc.requested_ips
            and svc.requested_pool is None and svc.sharing_key is None
            and svc.family_policy == "SingleStack" and len(svc.ip_families) == 1
        ):
            # Hot path (a new single-stack Service asking for nothing special): the lowest
            # free address of the first autoAssign pool that selects it. Anything else, and
            # every failure, takes the general path below, which gives the same answer.
            f = svc.ip_families[0]
            used = self._used.get(f)
            if used is not None:
                for group in (self._auto_restricted, self._auto_generic):
                    for pst in group:
                        sp = pst.spaces.get(f)
                        if sp is None or (
                            pst.restricted and not pst.selects(svc, namespace_labels)
                        ):
                            continue
                        n = sp.peek_free(used)
                        if n is not None:
                            return self._commit(svc, namespace_labels, pst, ((f, n),))
        plan = self._plan(svc)
        if isinstance(plan, Pending):
            if cur is not None:
                self._drop(key)
            return self._set_pending(svc, namespace_labels, plan, frozenset())
        prior: dict[Family, int] = {}
        if cur is not None:
            old = self._svcs[key]
            held = _ints(cur)
            if old.ip_families == svc.ip_families and old.family_policy == svc.family_policy:
                st = self._fit_existing(svc, namespace_labels, plan, held)
                if st is not None:
                    return self._keep(key, cur, held, svc, namespace_labels, st)
            prior = dict(held)
            self._drop(key)
        elif svc.status_ips:
            ips = self._ordered(plan, [(family_of(ip), int(ip)) for ip in svc.status_ips])
            st = self._fit_existing(svc, namespace_labels, plan, ips)
            if st is not None:
                return self._commit(svc, namespace_labels, st, ips)
            for f, n in ips:
                prior.setdefault(f, n)
        return self._fresh(svc, namespace_labels, plan, prior)

    def release(self, key: str) -> set[str]:
        if key in self._results:
            self._drop(key)
        self._pending.pop(key, None)
        return self.requeue()

    def requeue(self) -> set[str]:
        woken = {k for k in self._woken if k in self._pending}
        self._woken.clear()
        return woken

    def rebuild(
        self, services: Iterable[tuple[LBService, Mapping[str, str]]]
    ) -> dict[str, Result]:
        self._results.clear()
        self._svcs.clear()
        self._nsls.clear()
        self._pending.clear()
        self._woken.clear()
        for f in FAMILIES:
            self._used[f].clear()
            self._shared[f].clear()
        for st in self._pools.values():
            for sp in st.spaces.values():
                sp.reset()
                sp.assigned = 0
        items = sorted(services, key=lambda t: (t[0].namespace, t[0].name))
        results: dict[str, Result] = {}
        retry: list[tuple[LBService, Mapping[str, str]]] = []
        rest: list[tuple[LBService, Mapping[str, str]]] = []
        for svc, nsl in items:
            if not svc.status_ips:
                rest.append((svc, nsl))
                continue
            plan = self._plan(svc)
            if isinstance(plan, Pending):
                results[svc.key] = self._set_pending(svc, nsl, plan, frozenset())
                continue
            status = svc.status_ips
            ips = self._ordered(plan, [(family_of(ip), int(ip)) for ip in status])
            home = self._fit_existing(svc, nsl, plan, ips)
            if home is None:
                retry.append((svc, nsl))
            else:
                # reuse the status address objects when already in family order
                objs = status if len(status) == 1 else None
                results[svc.key] = self._commit(svc, nsl, home, ips, objs)
        for svc, nsl in retry + rest:
            results[svc.key] = self.allocate(svc, nsl)
        while True:
            woken = self.requeue()
            if not woken:
                break
            for k in sorted(woken):
                pr = self._pending[k]
                results[k] = self.allocate(pr.svc, pr.nsl)
        return results

    # --- decisions ---------------------------------------------------------------------------

    @staticmethod
    def _ordered(plan: _Plan, ips: list[tuple[Family, int]]) -> tuple[tuple[Family, int], ...]:
        if len(ips) == 1:
            return (ips[0],)
        rank = {f: i for i, f in enumerate(plan.wanted)}
        return tuple(sorted(ips, key=lambda t: (rank.get(t[0], len(rank)), t[1])))

    def _plan(self, svc: LBService) -> _Plan | Pending:
        """Families to allocate. Plans without requested addresses are few (families x
        policy), so they are cached: this is on the hot path."""
        if svc.requested_ips:
            return self._make_plan(svc)
        ck = (svc.ip_families, svc.family_policy)
        plan = self._plan_cache.get(ck)
        if plan is None:
            plan = self._plan_cache[ck] = self._make_plan(svc)
        return plan

    @staticmethod
    def _make_plan(svc: LBService) -> _Plan | Pending:
        fams = svc.ip_families or (IPV4,)
        if len(set(fams)) != len(fams) or any(f not in FAMILIES for f in fams):
            return Pending(R_INVALID_REQUEST, f"invalid ipFamilies {list(fams)}")
        policy = svc.family_policy
        if policy == "SingleStack":
            wanted = fams[:1]
        elif policy == "RequireDualStack":
            if len(fams) != 2:
                return Pending(
                    R_INVALID_REQUEST,
                    f"ipFamilyPolicy RequireDualStack needs two ipFamilies, got {list(fams)}",
                )
            wanted = fams
        else:
            wanted = fams
        requested: dict[Family, int] = {}
        for ip in svc.requested_ips:
            f = family_of(ip)
            if f in requested:
                return Pending(
                    R_INVALID_REQUEST,
                    f"two requested {f} addresses: {address(f, requested[f])}, {ip}",
                )
            if f not in wanted:
                return Pending(
                    R_INVALID_REQUEST,
                    f"requested address {ip} is {f}, but the Service asks for "
                    f"{'/'.join(wanted)} ({policy})",
                )
            requested[f] = int(ip)
        if policy == "PreferDualStack":
            required = tuple(f for f in wanted if f in requested) or wanted[:1]
        else:
            required = wanted
        return _Plan(wanted, required, requested)

    def _candidates(
        self, svc: LBService, nsl: Mapping[str, str], plan: _Plan, keep: bool
    ) -> list[_PoolState] | Pending:
        """Pools allowed for ``svc`` in preference order. ``keep``: for validating existing
        addresses (conflicting pools allowed)."""
        name = svc.requested_pool
        if name is not None:
            st = self._pools.get(name)
            if st is None:
                return Pending(
                    R_UNKNOWN_POOL,
                    f"pool {name!r} (annotation {svc.pool_annotation}) does not exist",
                )
            if not st.selects(svc, nsl):
                return Pending(
                    R_NO_POOL_MATCHES,
                    f"pool {name} is named by the Service but its serviceAllocation "
                    "does not select this Service",
                )
            if st.conflicting and not keep:
                return Pending(
                    R_POOL_CONFLICT,
                    f"pool {name} overlaps the older pool {st.conflicts_with} and allocates "
                    "no new addresses",
                )
            return [st]
        requested = plan.requested
        if not keep and not requested:
            # hot path: precomputed autoAssign pools, restricted ones filtered per Service
            out = [st for st in self._auto_restricted if st.selects(svc, nsl)]
            out += self._auto_generic
            if not out:
                return Pending(R_NO_POOL_MATCHES, self._no_pool_message(svc))
            return out
        out = []
        for st in self._keep_order if keep else self._order:
            if st.conflicting and not keep:
                continue
            if not st.pool.auto_assign and not (
                requested and any(
                    f in st.spaces and st.spaces[f].contains(n) for f, n in requested.items()
                )
            ):
                continue
            if st.restricted and not st.selects(svc, nsl):
                continue
            out.append(st)
        if not out and not keep:
            return Pending(R_NO_POOL_MATCHES, self._no_pool_message(svc))
        return out

    def _no_pool_message(self, svc: LBService) -> str:
        if not self._pools:
            return "no IPAddressPool exists"
        live = [st for st in self._order if not st.conflicting]
        if not any(st.pool.auto_assign for st in live):
            return (
                "no pool has autoAssign enabled; name a pool with annotation "
                f"{ANN_ADDRESS_POOL} or request an address"
            )
        return (
            f"no pool selects Service {svc.key}: every autoAssign pool is restricted by "
            "serviceAllocation to other namespaces or Services"
        )

    def _fit_existing(
        self,
        svc: LBService,
        nsl: Mapping[str, str],
        plan: _Plan,
        ips: Sequence[tuple[Family, int]],
    ) -> _PoolState | None:
        """The pool in which ``ips`` form a valid allocation for ``svc`` now, or None.

        The pool is a function of the current configuration only (never of history), so a
        rebuild finds the same pool as the live state: accepted pools first (they are
        disjoint, so at most one contains the addresses), then conflicting ones, each group
        in preference order."""
        requested = plan.requested
        if len(ips) == 1:  # fast path (rebuild of single-stack Services)
            f, n = ips[0]
            if plan.required != (f,):
                return None
            if requested and (len(requested) > 1 or requested.get(f) != n):
                return None
        else:
            fams = [f for f, _ in ips]
            fset = set(fams)
            if not ips or len(fset) != len(fams):
                return None
            if not fset.issubset(plan.wanted) or not fset.issuperset(plan.required):
                return None
            held = dict(ips)
            for f, n in requested.items():
                if held.get(f) != n:
                    return None
        for f, n in ips:
            use = self._used[f].get(n)
            if use is not None and not _compatible(svc, use):
                return None
        cands = self._candidates(svc, nsl, plan, keep=True)
        if isinstance(cands, Pending):
            return None
        home = self._layout.home(ips, {st.name for st in cands})
        return None if home is None else self._pools[home.name]

    def _free_or_compatible(self, svc: LBService, f: Family, n: int) -> bool:
        use = self._used[f].get(n)
        return use is None or _compatible(svc, use)

    def _pick(
        self, svc: LBService, sp: _Space, plan: _Plan, prior: Mapping[Family, int]
    ) -> int | None:
        f = sp.family
        n = plan.requested.get(f)
        if n is not None:
            return n if self._free_or_compatible(svc, f, n) else None
        p = prior.get(f)
        if p is not None and sp.contains(p) and self._free_or_compatible(svc, f, p):
            return p
        sk = svc.sharing_key
        if sk is not None:
            addrs = self._shared[f].get(sk)
            if addrs:
                used = self._used[f]
                for a in sorted(addrs):
                    if sp.contains(a) and _compatible(svc, used[a]):
                        return a
        return sp.peek_free(self._used[f])

    def _rank(
        self, svc: LBService, st: _PoolState, plan: _Plan, prior: Mapping[Family, int]
    ) -> int:
        for f, p in prior.items():
            sp = st.spaces.get(f)
            if sp is not None and sp.contains(p) and self._free_or_compatible(svc, f, p):
                return 0
        sk = svc.sharing_key
        if sk is not None:
            for f in plan.wanted:
                sp = st.spaces.get(f)
                if sp is None:
                    continue
                used = self._used[f]
                for a in self._shared[f].get(sk, ()):
                    if sp.contains(a) and _compatible(svc, used[a]):
                        return 1
        return 2

    def _fresh(
        self, svc: LBService, nsl: Mapping[str, str], plan: _Plan, prior: Mapping[Family, int]
    ) -> Result:
        cands = self._candidates(svc, nsl, plan, keep=False)
        if isinstance(cands, Pending):
            return self._set_pending(svc, nsl, cands, frozenset())
        if not prior and not plan.requested and svc.sharing_key is None and len(plan.wanted) == 1:
            # hot path: one family, nothing requested or shared: lowest free in pool order
            f = plan.wanted[0]
            used = self._used[f]
            for st in cands:
                sp = st.spaces.get(f)
                if sp is not None:
                    n = sp.peek_free(used)
                    if n is not None:
                        return self._commit(svc, nsl, st, ((f, n),))
            # fall through: the general path below finds the right Pending reason
        required = plan.required
        need = plan.required_set
        if not any(need <= st.fams for st in cands):
            return self._set_pending(svc, nsl, self._family_pending(cands, plan), frozenset())
        requested = plan.requested
        if requested:
            inside = [st for st in cands if st.contains_all(requested.items())]
            if not inside:
                return self._set_pending(svc, nsl, self._not_in_pool(svc, plan, cands),
                                         frozenset())
            cands = inside
        if (prior or svc.sharing_key is not None) and len(cands) > 1:
            cands = sorted(cands, key=lambda st: self._rank(svc, st, plan, prior))
        attempts = [plan.wanted, required] if len(plan.wanted) > len(required) else [required]
        for fams in attempts:
            for st in cands:
                picks: list[tuple[Family, int]] = []
                for f in fams:
                    sp = st.spaces.get(f)
                    if sp is None:
                        break
                    n = self._pick(svc, sp, plan, prior)
                    if n is None:
                        break
                    picks.append((f, n))
                else:
                    return self._commit(svc, nsl, st, tuple(picks))
        pools = frozenset(st.name for st in cands)
        if requested:
            for f, n in requested.items():
                use = self._used[f].get(n)
                if use is None or _compatible(svc, use):
                    continue
                hmap = _holders(use)
                holders = sorted(hmap)
                if svc.sharing_key is not None and use.sharing_key == svc.sharing_key:
                    why = next(
                        (w for h in holders
                         if (w := _sharing_problem(svc, hmap[h])) is not None),
                        "incompatible",
                    )
                    msg = f"requested address {address(f, n)} cannot be shared: {why}"
                    return self._set_pending(svc, nsl, Pending(R_SHARING_CONFLICT, msg), pools)
                msg = (
                    f"requested address {address(f, n)} is in use by Service(s) "
                    f"{', '.join(holders)}"
                )
                return self._set_pending(svc, nsl, Pending(R_ADDRESS_IN_USE, msg), pools)
        return self._set_pending(svc, nsl, self._exhausted(svc, plan, cands, prior), pools)

    def _family_pending(self, cands: list[_PoolState], plan: _Plan) -> Pending:
        names = ", ".join(st.name for st in cands)
        missing = [f for f in plan.required if not any(f in st.spaces for st in cands)]
        if missing:
            msg = f"no pool allowed for this Service has {' or '.join(missing)} addresses " \
                  f"(allowed pools: {names})"
        else:
            msg = (
                f"no single pool allowed for this Service has both {' and '.join(plan.required)}"
                f" addresses (RequireDualStack takes both from one pool; allowed: {names})"
            )
        return Pending(R_FAMILY_UNAVAILABLE, msg)

    def _not_in_pool(self, svc: LBService, plan: _Plan, cands: list[_PoolState]) -> Pending:
        parts: list[str] = []
        for f, n in plan.requested.items():
            ip = address(f, n)
            if any(f in st.spaces and st.spaces[f].contains(n) for st in cands):
                continue
            raw = [st for st in self._pools.values()
                   if f in st.spaces and n in st.spaces[f].usable.space]
            if not raw:
                parts.append(f"requested address {ip} is not in any allowed pool")
                continue
            st = raw[0]
            if st.spaces[f].avoid and is_buggy(n):
                why = "ends in .0 or .255 and the pool has avoidBuggyIPs"
            elif svc.requested_pool is not None and svc.requested_pool != st.name:
                why = f"the Service asks for pool {svc.requested_pool}"
            elif st.conflicting:
                why = f"the pool overlaps the older pool {st.conflicts_with}"
            else:
                why = "the pool's serviceAllocation does not select this Service"
            parts.append(f"requested address {ip} lies in pool {st.name}, but {why}")
        if not parts:
            parts.append(
                "requested addresses "
                + ", ".join(str(address(f, n)) for f, n in plan.requested.items())
                + " are not in one common pool"
            )
        return Pending(R_ADDRESS_NOT_IN_POOL, "; ".join(parts))

    def _exhausted(
        self, svc: LBService, plan: _Plan, cands: list[_PoolState], prior: Mapping[Family, int]
    ) -> Pending:
        names = ", ".join(st.name for st in cands)
        empty = [
            f for f in plan.required
            if not any(
                f in st.spaces and self._pick(svc, st.spaces[f], plan, prior) is not None
                for st in cands
            )
        ]
        if empty:
            msg = f"no free {' or '.join(empty)} address in pool(s) {names}"
        else:
            msg = (
                f"no single pool has a free address of each family {'/'.join(plan.required)} "
                f"(pools: {names})"
            )
        return Pending(R_POOL_EXHAUSTED, msg)

    # --- state changes -----------------------------------------------------------------------

    def _set_pending(
        self, svc: LBService, nsl: Mapping[str, str], result: Pending, pools: frozenset[str]
    ) -> Pending:
        self._pending[svc.key] = _PendingRec(svc, nsl, result, pools)
        return result

    def _commit(
        self,
        svc: LBService,
        nsl: Mapping[str, str],
        st: _PoolState,
        picks: tuple[tuple[Family, int], ...],
        ip_objs: tuple[IPAddress, ...] | None = None,
    ) -> Allocation:
        key = svc.key
        sk = svc.sharing_key
        for f, n in picks:
            used = self._used[f]
            use = used.get(n)
            if use is None:
                used[n] = svc
                # Count n in every pool whose usable set holds it (_spaces_containing, inlined
                # for the hot path): an accepted home pool is the only accepted one holding n.
                if st.conflicting:
                    i = bisect_right(self._idx_starts[f], n) - 1
                    if i >= 0 and n <= self._idx_ends[f][i]:
                        sp = self._idx_spaces[f][i]
                        if sp.contains(n):
                            sp.assigned += 1
                else:
                    st.spaces[f].assigned += 1
                conflict = self._conflict_spaces[f]
                if conflict:
                    for sp in conflict:
                        if sp.contains(n):
                            sp.assigned += 1
                if sk is not None:
                    self._shared[f].setdefault(sk, set()).add(n)
                    if self._pending:
                        self._wake(f, n)
            elif isinstance(use, _Use):
                use.holders[key] = svc
            elif use.name == svc.name and use.namespace == svc.namespace:
                used[n] = svc
            else:
                used[n] = _Use({use.key: use, key: svc}, sk)
        if ip_objs is None:
            if len(picks) == 1:
                f, n = picks[0]
                ip_objs = (address(f, n),)
            else:
                ip_objs = tuple(address(f, n) for f, n in picks)
        result = Allocation(ip_objs, st.name)
        self._results[key] = result
        self._svcs[key] = svc
        self._nsls[key] = nsl
        self._pending.pop(key, None)
        return result

    def _keep(
        self,
        key: str,
        cur: Allocation,
        held: tuple[tuple[Family, int], ...],
        svc: LBService,
        nsl: Mapping[str, str],
        st: _PoolState,
    ) -> Allocation:
        old = self._svcs[key]
        changed = (
            old.sharing_key != svc.sharing_key
            or old.ports != svc.ports
            or old.traffic_policy != svc.traffic_policy
            or old.selector != svc.selector
        )
        for f, n in held:
            used = self._used[f]
            use = used[n]
            if isinstance(use, _Use):
                # shared: the sharing key cannot have changed (sharing needs a common key)
                use.holders[svc.key] = svc
            else:
                used[n] = svc
                if use.sharing_key != svc.sharing_key:
                    if use.sharing_key is not None:
                        self._unshare(f, use.sharing_key, n)
                    if svc.sharing_key is not None:
                        self._shared[f].setdefault(svc.sharing_key, set()).add(n)
            if changed:
                self._wake(f, n)
        self._svcs[key] = svc
        self._nsls[key] = nsl
        if st.name != cur.pool:
            cur = self._results[key] = Allocation(cur.ips, st.name)
        return cur

    def _unshare(self, f: Family, sk: str, n: int) -> None:
        addrs = self._shared[f].get(sk)
        if addrs is not None:
            addrs.discard(n)
            if not addrs:
                del self._shared[f][sk]

    def _drop(self, key: str) -> None:
        cur = self._results.pop(key)
        del self._svcs[key]
        del self._nsls[key]
        for f, n in _ints(cur):
            used = self._used[f]
            use = used[n]
            if isinstance(use, _Use):
                use.holders.pop(key, None)
                if len(use.holders) == 1:
                    used[n] = next(iter(use.holders.values()))
            else:
                del used[n]
                for sp in self._spaces_containing(f, n):
                    sp.assigned -= 1
                    sp.freed(n)
                if use.sharing_key is not None:
                    self._unshare(f, use.sharing_key, n)
            self._wake(f, n)

    def _wake(self, f: Family, n: int) -> None:
        if not self._pending:
            return
        names = {sp.pool_name for sp in self._spaces_containing(f, n)}
        for k, pr in self._pending.items():
            if not pr.pools.isdisjoint(names):
                self._woken.add(k)
