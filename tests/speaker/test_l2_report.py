"""Which speaker writes which Service condition, and what it says."""

from __future__ import annotations

import ipaddress

from common.api.model import AddressRange, BGPAdvertisement, L2Advertisement, LBService, Pool
from speaker.core.l2_plan import election_order, plan_l2
from speaker.core.l2_report import service_conditions
from speaker.core.snapshot import ClusterSnapshot, NodeInfo

NODES = ("n1", "n2", "n3")


def pool(name: str, first: str, last: str) -> Pool:
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
    return Pool(name, (AddressRange("IPv4", int(a), int(b), name),))


def snap(advs: tuple[L2Advertisement, ...], bgp: tuple[BGPAdvertisement, ...] = (),
         local: bool = False) -> ClusterSnapshot:
    return ClusterSnapshot(
        services=(LBService("default", "a", status_ips=(ipaddress.ip_address("192.0.2.5"),),
                            traffic_policy="Local" if local else "Cluster"),),
        nodes={n: NodeInfo(n) for n in NODES}, pools=(pool("p", "192.0.2.0", "192.0.2.9"),),
        l2_advertisements=advs, bgp_advertisements=bgp)


def test_exactly_one_writer_which_is_the_owner() -> None:
    s = snap((L2Advertisement("x"),))
    live = {n: None for n in NODES}
    writers = {me: service_conditions(s, plan_l2(s, live, me), live, me) for me in NODES}
    owner = election_order(NODES, ipaddress.ip_address("192.0.2.5"))[0]
    assert [m for m, c in writers.items() if c] == [owner]
    (cond,) = writers[owner]
    assert cond.status == "True" and cond.reason == "Announced" and owner in cond.message


def test_no_owner_still_has_one_writer() -> None:
    s = snap((L2Advertisement("x"),), local=True)
    live = {n: None for n in NODES}
    conds = [c for me in NODES for c in service_conditions(s, plan_l2(s, live, me), live, me)]
    assert len(conds) == 1 and conds[0].reason == "NoReadyEndpoint"
    assert conds[0].status == "False"


def test_bgp_only_vip_gets_no_l2_condition_but_unadvertised_does() -> None:
    live = {n: None for n in NODES}
    s = snap((), bgp=(BGPAdvertisement("b"),))
    assert not any(service_conditions(s, plan_l2(s, live, me), live, me) for me in NODES)
    s2 = snap(())
    conds = [c for me in NODES for c in service_conditions(s2, plan_l2(s2, live, me), live, me)]
    assert [c.reason for c in conds] == ["PoolNotAdvertisedL2"]
