"""Layer-2 planning and election (pure)."""

from __future__ import annotations

import ipaddress
from collections import Counter

from common.api.model import (
    LABEL_EXCLUDE_LB,
    AddressRange,
    L2Advertisement,
    LabelSelector,
    LBService,
    Pool,
)
from speaker.core.l2_plan import (
    ANNOUNCED,
    NO_ELIGIBLE_NODE,
    NO_LIVE_NODE,
    NO_READY_ENDPOINT,
    NOT_ADVERTISED,
    OUTSIDE_POOLS,
    UNKNOWN_INTERFACE,
    UNKNOWN_POOL,
    election_order,
    plan_l2,
    reporter,
)
from speaker.core.snapshot import ClusterSnapshot, Endpoint, NodeInfo

V4 = ipaddress.IPv4Address
NODES = ("n1", "n2", "n3")


def pool(name: str = "p", first: str = "192.0.2.200", last: str = "192.0.2.239",
         labels: dict[str, str] | None = None) -> Pool:
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
    fam = "IPv4" if a.version == 4 else "IPv6"
    return Pool(name, (AddressRange(fam, int(a), int(b), f"{a}-{b}"),), labels=labels or {})


def svc(name: str, *ips: str, local: bool = False) -> LBService:
    return LBService("default", name, status_ips=tuple(ipaddress.ip_address(i) for i in ips),
                     traffic_policy="Local" if local else "Cluster")


def snap(services: tuple[LBService, ...], advs: tuple[L2Advertisement, ...] | None = None,
         nodes: dict[str, NodeInfo] | None = None, pools: tuple[Pool, ...] | None = None,
         endpoints: dict[str, tuple[Endpoint, ...]] | None = None) -> ClusterSnapshot:
    return ClusterSnapshot(
        services=services,
        nodes=nodes if nodes is not None else {n: NodeInfo(n) for n in NODES},
        pools=pools if pools is not None else (pool(),),
        l2_advertisements=advs if advs is not None else (L2Advertisement("all"),),
        endpoints=endpoints or {},
    )


def live(*names: str) -> dict[str, frozenset[str] | None]:
    return {n: None for n in names}


def test_every_speaker_computes_the_same_single_owner() -> None:
    s = snap((svc("a", "192.0.2.200"), svc("b", "192.0.2.201")))
    owners = []
    for me in NODES:
        plan = plan_l2(s, live(*NODES), me)
        owners.append({v: p.owner for v, p in plan.vips.items()})
        for vip in plan.mine:
            assert plan.vips[vip].owner == me
    assert owners[0] == owners[1] == owners[2]
    vip = V4("192.0.2.200")
    assert owners[0][vip] == election_order(NODES, vip)[0]
    assert plan_l2(s, live(*NODES), owners[0][vip]).vips[vip].reason == ANNOUNCED


def test_election_spreads_vips_and_moves_only_the_dead_nodes_vips() -> None:
    vips = [f"192.0.2.{i}" for i in range(200, 240)]
    s = snap(tuple(svc(f"s{i}", v) for i, v in enumerate(vips)))
    before = {v: p.owner for v, p in plan_l2(s, live(*NODES), "n1").vips.items()}
    counts = Counter(before.values())
    assert set(counts) == set(NODES) and min(counts.values()) >= 5
    after = {v: p.owner for v, p in plan_l2(s, live("n1", "n3"), "n1").vips.items()}
    for vip, owner in before.items():
        if owner != "n2":
            assert after[vip] == owner
        else:
            assert after[vip] in ("n1", "n3")


def test_shared_vip_has_one_owner_and_lists_all_services() -> None:
    s = snap((svc("a", "192.0.2.210"), svc("b", "192.0.2.210")))
    plan = plan_l2(s, live(*NODES), "n1")
    p = plan.vips[V4("192.0.2.210")]
    assert p.services == ("default/a", "default/b") and p.owner is not None


def test_excluded_and_unready_nodes_are_not_eligible() -> None:
    nodes = {"n1": NodeInfo("n1", {LABEL_EXCLUDE_LB: ""}), "n2": NodeInfo("n2", ready=False),
             "n3": NodeInfo("n3")}
    s = snap((svc("a", "192.0.2.200"),), nodes=nodes)
    p = plan_l2(s, live(*NODES), "n1").vips[V4("192.0.2.200")]
    assert p.candidates == ("n3",) and p.owner == "n3"
    s2 = snap((svc("a", "192.0.2.200"),), nodes={"n1": nodes["n1"]})
    assert plan_l2(s2, live("n1"), "n1").vips[V4("192.0.2.200")].reason == NO_ELIGIBLE_NODE


def test_node_selectors_restrict_candidates() -> None:
    nodes = {n: NodeInfo(n, {"zone": "a" if n != "n3" else "b"}) for n in NODES}
    adv = L2Advertisement("z", node_selectors=(LabelSelector(match_labels=(("zone", "b"),)),))
    s = snap((svc("a", "192.0.2.200"),), advs=(adv,), nodes=nodes)
    p = plan_l2(s, live(*NODES), "n1").vips[V4("192.0.2.200")]
    assert p.candidates == ("n3",)
    assert plan_l2(s, live("n1", "n2"), "n1").vips[V4("192.0.2.200")].reason == NO_LIVE_NODE


def test_local_policy_follows_ready_endpoints() -> None:
    vip = V4("192.0.2.220")
    ep = {"default/a": (Endpoint("n2", True), Endpoint("n3", False))}
    s = snap((svc("a", str(vip), local=True),), endpoints=ep)
    p = plan_l2(s, live(*NODES), "n1").vips[vip]
    assert p.candidates == ("n2",) and p.owner == "n2"
    s2 = snap((svc("a", str(vip), local=True),), endpoints={"default/a": (Endpoint("n3", True),)})
    assert plan_l2(s2, live(*NODES), "n1").vips[vip].owner == "n3"
    s3 = snap((svc("a", str(vip), local=True),))
    p3 = plan_l2(s3, live(*NODES), "n1").vips[vip]
    assert p3.owner is None and p3.reason == NO_READY_ENDPOINT


def test_local_sharing_uses_intersection_then_union() -> None:
    vip = "192.0.2.221"
    both = (svc("a", vip, local=True), svc("b", vip, local=True))
    ep = {"default/a": (Endpoint("n1", True), Endpoint("n2", True)),
          "default/b": (Endpoint("n2", True), Endpoint("n3", True))}
    assert plan_l2(snap(both, endpoints=ep), live(*NODES), "n1").vips[V4(vip)].candidates == (
        "n2",)
    ep2 = {"default/a": (Endpoint("n1", True),), "default/b": (Endpoint("n3", True),)}
    cands = plan_l2(snap(both, endpoints=ep2), live(*NODES), "n1").vips[V4(vip)].candidates
    assert set(cands) == {"n1", "n3"}


def test_interfaces_restrict_nodes_and_are_reported() -> None:
    adv = L2Advertisement("eth1", interfaces=("eth1",))
    s = snap((svc("a", "192.0.2.200"),), advs=(adv,))
    lv = {"n1": frozenset({"eth0"}), "n2": frozenset({"eth0", "eth1"}), "n3": frozenset({"eth0"})}
    plan = plan_l2(s, lv, "n1", my_interfaces=frozenset({"eth0"}))
    p = plan.vips[V4("192.0.2.200")]
    assert p.candidates == ("n2",) and p.owner_interfaces == frozenset({"eth1"})
    assert [x.reason for x in plan.local_problems] == [UNKNOWN_INTERFACE]
    assert plan_l2(s, lv, "n2").mine == {V4("192.0.2.200"): frozenset({"eth1"})}


def test_unadvertised_and_outside_addresses_and_unknown_pool() -> None:
    adv = L2Advertisement("only-q", ip_address_pools=("q", "ghost"))
    s = snap((svc("a", "192.0.2.200"), svc("b", "198.51.100.7")), advs=(adv,),
             pools=(pool(), pool("q", "203.0.113.10", "203.0.113.20")))
    plan = plan_l2(s, live(*NODES), "n1")
    assert plan.vips[V4("192.0.2.200")].reason == NOT_ADVERTISED
    assert plan.vips[V4("198.51.100.7")].reason == OUTSIDE_POOLS
    assert not plan.mine
    assert [(p.reason, p.field) for p in plan.problems] == [(UNKNOWN_POOL, "spec.ipAddressPools")]
    assert "ghost" in plan.problems[0].message


def test_pool_selector_and_ipv6() -> None:
    adv = L2Advertisement("sel", ip_address_pool_selectors=(
        LabelSelector(match_labels=(("l2", "yes"),)),))
    p6 = pool("v6", "2001:db8::200", "2001:db8::2ff", labels={"l2": "yes"})
    s = snap((svc("a", "2001:db8::205"),), advs=(adv,), pools=(pool(), p6))
    plan = plan_l2(s, live(*NODES), "n1")
    assert plan.vips[ipaddress.IPv6Address("2001:db8::205")].owner in NODES


def test_reporter_is_owner_or_first_live_node() -> None:
    s = snap((svc("a", "192.0.2.200", local=True),))
    p = plan_l2(s, live(*NODES), "n1").vips[V4("192.0.2.200")]
    assert p.owner is None
    assert reporter(p, NODES) == election_order(NODES, p.vip)[0]
    assert reporter(p, ()) is None
