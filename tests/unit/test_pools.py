"""common.api.pools: how the pool configuration is read, and which pool holds an address."""

from __future__ import annotations

import ipaddress

from common.api.model import AddressRange, Pool, ServiceAllocation
from common.api.pools import (
    R_DUPLICATE_POOL,
    R_INVALID_RANGE,
    R_POOL_OVERLAP,
    PoolLayout,
    pool_holding,
)

IP = ipaddress.ip_address


def rng(first: str, last: str) -> AddressRange:
    a, b = IP(first), IP(last)
    return AddressRange("IPv4" if a.version == 4 else "IPv6", int(a), int(b), f"{a}-{b}")


def pool(name: str, first: str, last: str, created: str = "", **kw: object) -> Pool:
    return Pool(name, (rng(first, last),), created=created, **kw)  # type: ignore[arg-type]


def test_disjoint_pools_each_hold_their_own_addresses() -> None:
    pools = [pool("a", "192.0.2.0", "192.0.2.9"), pool("b", "2001:db8::", "2001:db8::ff")]
    assert pool_holding(IP("192.0.2.9"), pools) == pools[0]
    assert pool_holding(IP("2001:db8::1"), pools) == pools[1]
    assert pool_holding(IP("192.0.2.10"), pools) is None
    assert pool_holding(IP("192.0.2.1"), []) is None


def test_overlap_the_older_accepted_pool_holds_the_address_whatever_the_names() -> None:
    # "a-new" sorts first by name and by preference; it is newer, hence conflicting.
    older = pool("z-old", "192.0.2.0", "192.0.2.255", created="2024-01-01T00:00:00Z")
    newer = pool("a-new", "192.0.2.0", "192.0.2.15", created="2024-02-01T00:00:00Z",
                 allocation=ServiceAllocation(priority=1))
    layout = PoolLayout([newer, older])
    assert layout.spaces["a-new"].conflicts_with == "z-old"
    assert not layout.spaces["z-old"].conflicting
    assert [p.reason for p in layout.problems] == [R_POOL_OVERLAP]
    assert "192.0.2.0-192.0.2.15" in layout.problems[0].message
    assert layout.holding(IP("192.0.2.5")) == older
    # A Service allowed only in the conflicting pool keeps its address there.
    sp = layout.home((("IPv4", int(IP("192.0.2.5"))),), allowed={"a-new"})
    assert sp is not None and sp.name == "a-new"


def test_address_only_in_a_conflicting_pool_is_held_by_it() -> None:
    a = pool("a", "192.0.2.0", "192.0.2.9", created="1")
    b = pool("b", "192.0.2.5", "192.0.2.20", created="2")
    assert pool_holding(IP("192.0.2.15"), [a, b]) == b
    assert pool_holding(IP("192.0.2.7"), [a, b]) == a


def test_avoid_buggy_ips_addresses_are_in_no_pool_but_still_overlap() -> None:
    a = pool("a", "192.0.2.0", "192.0.2.255", created="1", avoid_buggy_ips=True)
    b = pool("b", "192.0.2.255", "192.0.2.255", created="2")
    layout = PoolLayout([a, b])
    assert layout.holding(IP("192.0.2.0")) is None
    assert layout.holding(IP("192.0.2.1")) == a
    assert layout.spaces["b"].conflicts_with == "a"  # judged on configured ranges
    assert layout.holding(IP("192.0.2.255")) == b


def test_invalid_ranges_and_duplicates_are_reported_and_skipped() -> None:
    bad = Pool("a", (rng("192.0.2.9", "192.0.2.0"), rng("192.0.2.10", "192.0.2.20")))
    dup = pool("a", "198.51.100.0", "198.51.100.9")
    layout = PoolLayout([bad, dup])
    assert [(p.field, p.reason) for p in layout.problems] == [
        ("spec.addresses[0]", R_INVALID_RANGE), ("metadata.name", R_DUPLICATE_POOL)]
    assert layout.holding(IP("192.0.2.15")) == bad
    assert layout.holding(IP("192.0.2.5")) is None
    assert layout.holding(IP("198.51.100.1")) is None  # the duplicate counts for nothing


def test_dual_stack_home_needs_every_address_in_one_pool() -> None:
    v4 = pool("v4", "192.0.2.0", "192.0.2.9")
    dual = Pool("dual", (rng("198.51.100.0", "198.51.100.9"), rng("2001:db8::", "2001:db8::9")))
    layout = PoolLayout([v4, dual])
    six = ("IPv6", int(IP("2001:db8::1")))
    sp = layout.home((("IPv4", int(IP("198.51.100.1"))), six))
    assert sp is not None and sp.name == "dual"
    assert layout.home((("IPv4", int(IP("192.0.2.1"))), six)) is None
