"""Property test: random Service / pool / namespace operations and restarts against a
brute-force oracle over tiny pools.

A small controller model re-processes the keys the allocator hands back (``set_pools``,
``release``, ``requeue``) until nothing changes, as the real controller does. After every
step the invariants of issue 2 are checked by brute force (the universe is 12 IPv4 addresses
around a .255/.0 boundary and 8 IPv6 addresses, so every address can be enumerated here,
in the test, never in the allocator):

* no address is held by two Services unless sharing allows it;
* every held address lies in an allowed pool of its Service (autoAssign, serviceAllocation,
  requested pool/addresses, family policy);
* pool counts equal a brute-force recount;
* every pending Service has a CamelCase reason and a message;
* no pending Service could be satisfied right now (a pending Service gets an address as soon
  as one is free);
* allocations still valid after a pool change are not moved; a restart (rebuild from the
  Service statuses) reproduces every allocation exactly.

The test counts the operations it executes and asserts at least 10,000.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from common.api.model import (
    IPV4,
    IPV6,
    AddressRange,
    Family,
    FamilyPolicy,
    IPAddress,
    LabelSelector,
    LBService,
    Pool,
    ServiceAllocation,
    ServicePort,
)
from lb.core.allocator import Allocation, Allocator, Pending

V4_LO = int(ipaddress.IPv4Address("192.0.2.250"))
V4_HI = int(ipaddress.IPv4Address("192.0.3.5"))  # crosses .255 and .0: avoidBuggyIPs matters
V6_LO = int(ipaddress.IPv6Address("2001:db8::"))
V6_HI = V6_LO + 7
UNIVERSE: dict[Family, tuple[int, int]] = {IPV4: (V4_LO, V4_HI), IPV6: (V6_LO, V6_HI)}

POOL_NAMES = ["pa", "pb", "pc"]
NAMESPACES = ["ns1", "ns2"]
SVC_NAMES = ["s0", "s1", "s2", "s3", "s4", "s5"]
PORTS = [ServicePort("TCP", 80), ServicePort("TCP", 53), ServicePort("UDP", 53)]
CAMEL = re.compile(r"^[A-Z][A-Za-z]+$")

OPS = {"count": 0}  # operations executed across all examples
MIN_OPS = 10_000


def _ip(f: Family, n: int) -> IPAddress:
    return ipaddress.IPv4Address(n) if f == IPV4 else ipaddress.IPv6Address(n)


# --- strategies ------------------------------------------------------------------------------


@st.composite
def ranges(draw: st.DrawFn, family: Family) -> AddressRange:
    lo, hi = UNIVERSE[family]
    a = draw(st.integers(lo, hi))
    # narrow ranges: pools fill up, so exhaustion, sharing and waking are common
    b = draw(st.integers(a, min(hi, a + 2)))
    return AddressRange(family, a, b, f"{_ip(family, a)}-{_ip(family, b)}")


service_allocations = st.one_of(
    st.none(),
    st.none(),
    st.builds(
        ServiceAllocation,
        priority=st.sampled_from([None, 1, 2]),
        namespaces=st.sampled_from([frozenset(), frozenset({"ns1"})]),
        namespace_selectors=st.sampled_from([(), (LabelSelector((("team", "a"),)),)]),
        service_selectors=st.sampled_from([(), (LabelSelector((("app", "web"),)),)]),
    ),
)


@st.composite
def pool_specs(draw: st.DrawFn) -> tuple[tuple[AddressRange, ...], bool, bool,
                                         ServiceAllocation | None]:
    rs = draw(st.lists(st.one_of(ranges(IPV4), ranges(IPV6)), min_size=1, max_size=2))
    return (
        tuple(rs),
        draw(st.sampled_from([True, True, True, False])),  # autoAssign mostly on
        draw(st.booleans()),
        draw(service_allocations),
    )


FAMILY_CHOICES: list[tuple[tuple[Family, ...], FamilyPolicy]] = [
    ((IPV4,), "SingleStack"),
    ((IPV4,), "SingleStack"),
    ((IPV4,), "SingleStack"),
    ((IPV4,), "SingleStack"),
    ((IPV6,), "SingleStack"),
    ((IPV4, IPV6), "PreferDualStack"),
    ((IPV6, IPV4), "PreferDualStack"),
    ((IPV4, IPV6), "RequireDualStack"),
    ((IPV6, IPV4), "RequireDualStack"),
    ((IPV4,), "RequireDualStack"),  # invalid on purpose
]


@st.composite
def requested(draw: st.DrawFn, fams: tuple[Family, ...]) -> tuple[IPAddress, ...]:
    """Mostly nothing; else addresses of the Service's own families (valid requests), now and
    then of any family (invalid ones), sometimes just outside the pools' universe."""
    n = draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 1, len(fams)]))
    out: list[IPAddress] = []
    for i in range(n):
        f = draw(st.sampled_from([fams[i % len(fams)]] * 8 + [IPV4, IPV6]))
        lo, hi = UNIVERSE[f]
        out.append(_ip(f, draw(st.integers(lo - 1, hi + 1))))
    return tuple(out)


@st.composite
def service_specs(draw: st.DrawFn) -> LBService:
    fams, policy = draw(st.sampled_from(FAMILY_CHOICES))
    return LBService(
        namespace=draw(st.sampled_from(NAMESPACES)),
        name=draw(st.sampled_from(SVC_NAMES)),
        labels=draw(st.sampled_from([{}, {"app": "web"}])),
        requested_ips=draw(requested(fams)),
        requested_pool=draw(st.sampled_from([None] * 16 + ["pa", "pa", *POOL_NAMES, "nope"])),
        sharing_key=draw(st.sampled_from([None, "k1", "k1", "k2"])),
        ports=frozenset(draw(st.lists(st.sampled_from(PORTS), max_size=2))),
        traffic_policy=draw(st.sampled_from(["Cluster", "Cluster", "Local"])),
        selector=draw(st.sampled_from([(("app", "a"),), (("app", "b"),)])),
        ip_families=fams,
        family_policy=policy,
    )


# --- the oracle ------------------------------------------------------------------------------


def usable(pool: Pool, f: Family) -> set[int]:
    out: set[int] = set()
    for r in pool.ranges:
        if r.family == f:
            out.update(range(r.first, r.last + 1))
    if pool.avoid_buggy_ips and f == IPV4:
        out = {n for n in out if n % 256 not in (0, 255)}
    return out


def conflicting(pools: Mapping[str, Pool]) -> set[str]:
    accepted: list[set[tuple[Family, int]]] = []
    out: set[str] = set()
    for p in sorted(pools.values(), key=lambda p: (p.created, p.name)):
        space = {(r.family, n) for r in p.ranges for n in range(r.first, r.last + 1)}
        if any(space & a for a in accepted):
            out.add(p.name)
        else:
            accepted.append(space)
    return out


def plan(svc: LBService) -> tuple[tuple[Family, ...], dict[Family, int]] | None:
    """(required families, requested per family), or None for an invalid request."""
    fams = svc.ip_families
    if svc.family_policy == "SingleStack":
        wanted = fams[:1]
    elif svc.family_policy == "RequireDualStack":
        if len(fams) != 2:
            return None
        wanted = fams
    else:
        wanted = fams
    req: dict[Family, int] = {}
    for ip in svc.requested_ips:
        f: Family = IPV4 if ip.version == 4 else IPV6
        if f in req or f not in wanted:
            return None
        req[f] = int(ip)
    if svc.family_policy == "PreferDualStack":
        required = tuple(f for f in wanted if f in req) or wanted[:1]
    else:
        required = wanted
    return required, req


def allowed(pool: Pool, svc: LBService, nsl: Mapping[str, str]) -> bool:
    """May ``pool`` hold addresses of ``svc`` (ignoring overlap conflicts)?"""
    if svc.requested_pool is not None and svc.requested_pool != pool.name:
        return False
    if pool.allocation is not None and not pool.allocation.matches(
        svc.namespace, nsl, svc.labels
    ):
        return False
    if svc.requested_pool is None and not pool.auto_assign:
        return any(
            int(ip) in usable(pool, IPV4 if ip.version == 4 else IPV6) for ip in svc.requested_ips
        )
    return True


def may_share(a: LBService, b: LBService) -> bool:
    if a.sharing_key is None or a.sharing_key != b.sharing_key:
        return False
    if a.ports & b.ports or a.traffic_policy != b.traffic_policy:
        return False
    return a.traffic_policy == "Cluster" or a.selector == b.selector


# --- the machine -----------------------------------------------------------------------------


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pools: dict[str, Pool] = {}
        self.clock = 0  # creationTimestamp source: newer pools sort later
        self.ns_labels: dict[str, dict[str, str]] = {ns: {} for ns in NAMESPACES}
        self.svcs: dict[str, LBService] = {}
        self.alloc = Allocator()

    # controller model ------------------------------------------------------------------------

    def _status(self, key: str, result: Allocation | Pending) -> None:
        ips = result.ips if isinstance(result, Allocation) else ()
        s = self.svcs[key]
        self.svcs[key] = LBService(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                                      "status_ips": ips})

    def _converge(self, keys: set[str]) -> None:
        queue = set(keys)
        rounds = 0
        while queue:
            rounds += 1
            assert rounds < 10_000, "controller did not converge"
            key = min(queue)
            queue.discard(key)
            if key not in self.svcs:
                continue
            s = self.svcs[key]
            self._status(key, self.alloc.allocate(s, self.ns_labels[s.namespace]))
            queue |= self.alloc.requeue()

    def _apply_pools(self) -> None:
        before = {k: self.alloc.allocation(k) for k in self.svcs}
        keep = {k for k, a in before.items() if a is not None and self._still_valid(k, a)}
        self._converge(self.alloc.set_pools(self.pools.values()))
        for k in keep:
            now = self.alloc.allocation(k)
            assert now is not None and now.ips == before[k].ips, (k, before[k], now)  # type: ignore[union-attr]

    def _still_valid(self, key: str, a: Allocation) -> bool:
        """Would ``a`` be valid under the *new* pools (``self.pools``)? Brute force."""
        s = self.svcs[key]
        nsl = self.ns_labels[s.namespace]
        p = plan(s)
        assert p is not None
        held = {(IPV4 if ip.version == 4 else IPV6): int(ip) for ip in a.ips}
        for pool in self.pools.values():
            if allowed(pool, s, nsl) and all(n in usable(pool, f) for f, n in held.items()):
                return True
        return False

    def _step(self) -> None:
        OPS["count"] += 1

    # rules -----------------------------------------------------------------------------------

    @initialize(
        v4=ranges(IPV4), v6=ranges(IPV6), buggy=st.booleans(),
        svcs=st.lists(service_specs(), min_size=3, max_size=8),
    )
    def start(
        self, v4: AddressRange, v6: AddressRange, buggy: bool, svcs: list[LBService]
    ) -> None:
        """Start with one generic dual-stack autoAssign pool and a few Services, so that
        pools are contended from the first step."""
        self.upsert_pool("pa", ((v4, v6), True, buggy, None))
        for s in svcs:
            self.upsert_service(s)

    @rule(s=service_specs())
    def upsert_service(self, s: LBService) -> None:
        self._step()
        old = self.svcs.get(s.key)
        status = old.status_ips if old is not None else ()
        self.svcs[s.key] = LBService(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                                        "status_ips": status})
        self._converge({s.key})

    @rule(s=service_specs())
    def upsert_service_again(self, s: LBService) -> None:
        """Services change far more often than pools: a second rule doubles their weight."""
        self.upsert_service(s)

    @rule(data=st.data())
    def delete_existing_service(self, data: st.DataObject) -> None:
        if not self.svcs:
            return
        key = data.draw(st.sampled_from(sorted(self.svcs)))
        ns, name = key.split("/")
        self.delete_service(name, ns)

    def delete_service(self, name: str, ns: str) -> None:
        self._step()
        key = f"{ns}/{name}"
        self.svcs.pop(key, None)
        self._converge(self.alloc.release(key))

    @rule(name=st.sampled_from(POOL_NAMES), spec=pool_specs())
    def upsert_pool(
        self,
        name: str,
        spec: tuple[tuple[AddressRange, ...], bool, bool, ServiceAllocation | None],
    ) -> None:
        self._step()
        rs, auto, buggy, sa = spec
        old = self.pools.get(name)
        if old is None:
            self.clock += 1
        created = old.created if old is not None else f"2024-01-01T00:{self.clock:05d}Z"
        self.pools[name] = Pool(name, rs, auto_assign=auto, avoid_buggy_ips=buggy,
                                allocation=sa, created=created)
        self._apply_pools()

    @rule(name=st.sampled_from(POOL_NAMES))
    def delete_pool(self, name: str) -> None:
        self._step()
        self.pools.pop(name, None)
        self._apply_pools()

    @rule()
    def reapply_same_pools(self) -> None:
        self._step()
        before = self.alloc.allocations()
        assert self.alloc.set_pools(list(self.pools.values())) == set()
        assert self.alloc.allocations() == before

    @rule(ns=st.sampled_from(NAMESPACES), labels=st.sampled_from([{}, {"team": "a"}]))
    def relabel_namespace(self, ns: str, labels: dict[str, str]) -> None:
        self._step()
        self.ns_labels[ns] = labels
        self._converge({k for k, s in self.svcs.items() if s.namespace == ns})

    @rule()
    def restart(self) -> None:
        self._step()
        before = self.alloc.allocations()
        pending_before = set(self.alloc.pending())
        fresh = Allocator(self.pools.values())
        out = fresh.rebuild((s, self.ns_labels[s.namespace]) for s in self.svcs.values())
        assert set(out) == set(self.svcs)
        assert {k: r for k, r in out.items() if isinstance(r, Allocation)} == before
        assert set(fresh.pending()) == pending_before
        assert fresh.pool_stats() == self.alloc.pool_stats()
        self.alloc = fresh
        for k, r in out.items():
            self._status(k, r)

    # invariants ------------------------------------------------------------------------------

    @invariant()
    def every_service_is_allocated_or_pending(self) -> None:
        allocs = self.alloc.allocations()
        pend = self.alloc.pending()
        assert set(allocs) | set(pend) == set(self.svcs)
        assert not set(allocs) & set(pend)
        for k, a in allocs.items():
            assert self.svcs[k].status_ips == a.ips
        for k, p in pend.items():
            assert CAMEL.match(p.reason) and p.message, (k, p)
            assert self.svcs[k].status_ips == ()
            assert (p.reason == "InvalidRequest") == (plan(self.svcs[k]) is None), (k, p)

    @invariant()
    def no_forbidden_sharing(self) -> None:
        holders: dict[tuple[Family, int], list[LBService]] = {}
        for k, a in self.alloc.allocations().items():
            for ip in a.ips:
                holders.setdefault((IPV4 if ip.version == 4 else IPV6, int(ip)), []).append(
                    self.svcs[k]
                )
        for addr, hs in holders.items():
            for i, x in enumerate(hs):
                for y in hs[i + 1:]:
                    assert may_share(x, y), (addr, x.key, y.key)

    @invariant()
    def every_address_in_an_allowed_pool(self) -> None:
        for k, a in self.alloc.allocations().items():
            s = self.svcs[k]
            p = plan(s)
            assert p is not None, k
            required, req = p
            pool = self.pools[a.pool]
            assert allowed(pool, s, self.ns_labels[s.namespace]), (k, a)
            fams = [IPV4 if ip.version == 4 else IPV6 for ip in a.ips]
            assert len(set(fams)) == len(fams)
            assert set(required) <= set(fams) <= set(s.ip_families), (k, a, required)
            if s.family_policy == "SingleStack":
                assert fams == [s.ip_families[0]]
            held = dict(zip(fams, (int(ip) for ip in a.ips), strict=True))
            for f, n in req.items():
                assert held.get(f) == n, (k, a, "requested address not held")
            for f, n in held.items():
                assert n in usable(pool, f), (k, a)

    @invariant()
    def counts_equal_brute_force(self) -> None:
        used: set[tuple[Family, int]] = {
            (IPV4 if ip.version == 4 else IPV6, int(ip))
            for a in self.alloc.allocations().values() for ip in a.ips
        }
        stats = self.alloc.pool_stats()
        assert set(stats) == set(self.pools)
        bad = conflicting(self.pools)
        for name, pool in self.pools.items():
            assert stats[name].conflicting == (name in bad)
            for f in (IPV4, IPV6):
                u = usable(pool, f)
                if not any(r.family == f for r in pool.ranges):
                    assert f not in stats[name].families
                    continue
                fs = stats[name].families[f]
                assigned = sum(1 for n in u if (f, n) in used)
                assert (fs.total, fs.assigned, fs.available) == (
                    len(u), assigned, len(u) - assigned), (name, f, fs)

    @invariant()
    def no_pending_service_could_be_satisfied(self) -> None:
        holders: dict[tuple[Family, int], list[LBService]] = {}
        for k, a in self.alloc.allocations().items():
            for ip in a.ips:
                holders.setdefault((IPV4 if ip.version == 4 else IPV6, int(ip)), []).append(
                    self.svcs[k]
                )
        bad = conflicting(self.pools)
        for k, pend in self.alloc.pending().items():
            s = self.svcs[k]
            p = plan(s)
            if p is None:
                continue
            required, req = p
            nsl = self.ns_labels[s.namespace]
            for pool in self.pools.values():
                if pool.name in bad or not allowed(pool, s, nsl):
                    continue
                ok = True
                for f in required:
                    cands = [req[f]] if f in req else sorted(usable(pool, f))
                    if not any(
                        n in usable(pool, f)
                        and all(may_share(s, h) for h in holders.get((f, n), []))
                        for n in cands
                    ):
                        ok = False
                        break
                assert not ok, (k, pend, f"pool {pool.name} could serve it")


def test_allocator_state_machine() -> None:
    OPS["count"] = 0
    # 10,000+ operations: examples x steps, counted below (hypothesis may stop an example
    # early, so the count is asserted, not assumed).
    run_state_machine_as_test(
        AllocatorMachine,
        settings=settings(
            max_examples=260,
            stateful_step_count=50,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert OPS["count"] >= MIN_OPS, OPS["count"]
