"""The speakers find a VIP's pool the way the allocator assigned it (common.api.pools).

Before, with overlapping pools, the layer-2 planner counted every pool whose ranges contain
the VIP and the BGP planner took the first such pool by name: either could apply the
advertisements of a pool the allocator did not assign the address from (so BGP withdrew a
VIP whose pool is advertised, and layer 2 announced one through a conflicting pool's
advertisement), and the two announcers disagreed with each other.
"""

from __future__ import annotations

import ipaddress

from common.api.model import L2Advertisement, LBService, Pool
from common.api.pools import PoolLayout
from lab.bgp_kit import adv, node, peer, pool, snapshot, svc
from lb.core.allocator import Allocation, Allocator
from speaker.core import bgp as core
from speaker.core.l2_plan import ANNOUNCED, NOT_ADVERTISED, OUTSIDE_POOLS, plan_l2
from speaker.core.snapshot import ClusterSnapshot, NodeInfo

# "a-new" sorts first by name but is the newer pool: conflicting, it allocates nothing.
OLD = Pool("z-old", pool("x", "203.0.113.0/24").ranges, created="2024-01-01T00:00:00Z")
NEW = Pool("a-new", pool("x", "203.0.113.0/28").ranges, created="2024-02-01T00:00:00Z")
POOLS = [NEW, OLD]
NODES = [node("n1", "192.0.2.11")]
PEERS = [peer("r4", "192.0.2.1")]


def _allocated() -> tuple[LBService, Allocation]:
    alloc = Allocator(POOLS)
    res = alloc.allocate(LBService("default", "a"), {})
    assert isinstance(res, Allocation)
    return svc("a", str(res.ips[0])), res


def test_allocator_and_speakers_name_the_same_pool() -> None:
    s, res = _allocated()
    vip = s.status_ips[0]
    assert vip in ipaddress.ip_network("203.0.113.0/28")  # in both pools
    assert res.pool == "z-old"
    holder = PoolLayout(POOLS).holding(vip)
    assert holder is not None and holder.name == res.pool


def test_bgp_announces_under_the_assigned_pools_advertisement() -> None:
    s, _ = _allocated()
    plan = core.plan("n1", snapshot([s], NODES, POOLS, [adv("old-only", "z-old")], PEERS))
    assert {r.prefix for r in plan.routes["192.0.2.1"]} == {f"{s.status_ips[0]}/32"}
    plan = core.plan("n1", snapshot([s], NODES, POOLS, [adv("new-only", "a-new")], PEERS))
    assert not plan.routes["192.0.2.1"]


def test_layer2_applies_only_the_assigned_pools_advertisement() -> None:
    s, _ = _allocated()
    vip = s.status_ips[0]

    def reason(*pools: str) -> str:
        snap = ClusterSnapshot(services=(s,), nodes={"n1": NodeInfo("n1")}, pools=tuple(POOLS),
                               l2_advertisements=(L2Advertisement("l2", pools),))
        p = plan_l2(snap, {"n1": None}, "n1").vips[vip]
        assert p.pools == ("z-old",)
        return p.reason

    assert reason("z-old") == ANNOUNCED
    assert reason("a-new") == NOT_ADVERTISED


def test_an_address_avoid_buggy_ips_excludes_is_in_no_pool() -> None:
    p = Pool("p", pool("x", "203.0.113.0/24").ranges, avoid_buggy_ips=True)
    s = svc("a", "203.0.113.0")
    snap = ClusterSnapshot(services=(s,), nodes={"n1": NodeInfo("n1")}, pools=(p,),
                           l2_advertisements=(L2Advertisement("all"),))
    assert plan_l2(snap, {"n1": None}, "n1").vips[s.status_ips[0]].reason == OUTSIDE_POOLS
    assert not core.plan("n1", snapshot([s], NODES, [p], [adv("all")], PEERS)).routes["192.0.2.1"]
    # ... and the allocator does not keep it either: it moves the Service to a usable address.
    res = Allocator([p]).allocate(
        LBService("default", "a", status_ips=s.status_ips), {})
    assert isinstance(res, Allocation) and res.ips != s.status_ips
