"""common/api/parse.py: good paths, and one test per bad input with the exact field and reason."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from common.api.model import (
    ANN_ADDRESS_POOL,
    ANN_ALLOW_SHARED_IP,
    ANN_LOADBALANCER_IPS,
    AddressRange,
    Community,
    LabelSelector,
    ObjectRef,
    Requirement,
    SecretKeyRef,
    ServiceAllocation,
    ServicePort,
)
from common.api.parse import (
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_duration,
    parse_l2_advertisement,
    parse_label_selector,
    parse_namespace_labels,
    parse_pool,
    parse_service,
)
from common.errors import InvalidObject

IPS_FIELD = f"metadata.annotations[{ANN_LOADBALANCER_IPS!r}]"


def problems(fn: Any, *args: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidObject) as info:
        fn(*args)
    return [(p.field, p.reason) for p in info.value.problems]


def only(fn: Any, *args: Any) -> tuple[str, str]:
    found = problems(fn, *args)
    assert len(found) == 1, found
    return found[0]


# --- IPAddressPool -----------------------------------------------------------------------------


def pool(*addresses: Any, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p1", "labels": {"tier": "edge"},
                         "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {"addresses": list(addresses), **spec}}


def test_pool_good_path_cidrs_and_ranges_of_both_families() -> None:
    p = parse_pool(pool("192.0.2.0/24", "198.51.100.10 - 198.51.100.20", "2001:db8::/64",
                        "2001:db8:1::5-2001:db8:1::5", "203.0.113.7/32"))
    assert p.name == "p1" and p.labels == {"tier": "edge"}
    assert p.created == "2024-05-01T10:00:00Z"
    assert p.auto_assign is True and p.avoid_buggy_ips is False and p.allocation is None
    v4 = int(ipaddress.IPv4Address("192.0.2.0"))
    assert p.ranges[0] == AddressRange("IPv4", v4, v4 + 255, "192.0.2.0/24")
    assert p.ranges[1].size == 11
    assert p.ranges[2].size == 2**64  # never enumerated
    assert p.ranges[3].size == 1 and p.ranges[4].size == 1
    assert p.families() == {"IPv4", "IPv6"}


def test_pool_flags_and_service_allocation() -> None:
    p = parse_pool(pool("192.0.2.0/28", autoAssign=False, avoidBuggyIPs=True,
                        serviceAllocation={
                            "priority": 5, "namespaces": ["prod", "prod"],
                            "namespaceSelectors": [{"matchLabels": {"team": "a"}}],
                            "serviceSelectors": [{"matchExpressions": [
                                {"key": "app", "operator": "NotIn", "values": ["x"]}]}]}))
    assert p.auto_assign is False and p.avoid_buggy_ips is True
    assert p.allocation == ServiceAllocation(
        priority=5, namespaces=frozenset({"prod"}),
        namespace_selectors=(LabelSelector((("team", "a"),)),),
        service_selectors=(LabelSelector((), (Requirement("app", "NotIn",
                                                          frozenset({"x"})),)),))


def test_pool_all_prefix_lengths_at_the_edges() -> None:
    p = parse_pool(pool("0.0.0.0/0", "::/0"))
    assert [r.size for r in p.ranges] == [2**32, 2**128]
    p = parse_pool(pool("192.0.2.1/32", "192.0.2.2/31", "2001:db8::1/128", "2001:db8::2/127"))
    assert [r.size for r in p.ranges] == [1, 2, 1, 2]


@pytest.mark.parametrize(("entry", "reason"), [
    ("192.0.2.0/33", "InvalidAddress"),
    ("192.0.2.0/", "InvalidAddress"),
    ("192.0.2.0/024", "InvalidAddress"),
    ("192.0.2.0/-1", "InvalidAddress"),
    ("192.0.2.0/255.255.255.0", "InvalidAddress"),
    ("192.0.2/24", "InvalidAddress"),
    ("2001:db8::/129", "InvalidAddress"),
    ("192.0.2.1", "InvalidAddress"),
    ("pool.example.com", "InvalidAddress"),
    ("", "InvalidAddress"),
    ("fe80::%eth0/64", "InvalidAddress"),
    ("192.0.2.1-", "InvalidAddress"),
    ("192.0.2.1-192.0.2.300", "InvalidAddress"),
    ("192.0.2.1-192.0.2.5-192.0.2.9", "InvalidAddress"),
    ("192.0.2.1/24", "InvalidAddress"),  # host bits set
    ("2001:db8::1/64", "InvalidAddress"),
    ("192.0.2.20-192.0.2.10", "ReversedRange"),
    ("2001:db8::9-2001:db8::1", "ReversedRange"),
    ("192.0.2.1-2001:db8::1", "MixedFamilyRange"),
    ("2001:db8::1-192.0.2.1", "MixedFamilyRange"),
    ("192.0.2.0/24\n", "InvalidAddress"),
    ("192.0.2.0/24\x00", "InvalidAddress"),
])
def test_pool_bad_address_entry(entry: str, reason: str) -> None:
    assert only(parse_pool, pool("198.51.100.0/24", entry)) == ("spec.addresses[1]", reason)


def test_pool_host_bits_message_suggests_the_network() -> None:
    with pytest.raises(InvalidObject) as info:
        parse_pool(pool("192.0.2.10/24"))
    assert "did you mean 192.0.2.0/24" in str(info.value)
    assert "IPAddressPool p1: spec.addresses[0]" in str(info.value)


def test_pool_overlapping_ranges_inside_one_pool() -> None:
    found = problems(parse_pool, pool("192.0.2.0/24", "2001:db8::/64", "192.0.2.10-192.0.2.20",
                                      "198.51.100.0/24", "2001:db8::5/128"))
    assert found == [("spec.addresses[2]", "OverlappingRanges"),
                     ("spec.addresses[4]", "OverlappingRanges")]
    # Touching is not overlapping.
    parse_pool(pool("192.0.2.0/25", "192.0.2.128-192.0.2.255"))


def test_pool_collects_every_problem_at_once() -> None:
    found = problems(parse_pool, pool("x", "192.0.2.9-192.0.2.1", 7, autoAssign="yes",
                                      serviceAllocation={"priority": True}))
    assert found == [("spec.addresses[0]", "InvalidAddress"),
                     ("spec.addresses[1]", "ReversedRange"),
                     ("spec.addresses[2]", "InvalidAddress"),
                     ("spec.autoAssign", "InvalidSpec"),
                     ("spec.serviceAllocation.priority", "InvalidPriority")]


def test_pool_missing_and_empty_addresses() -> None:
    assert only(parse_pool, {"metadata": {"name": "p"}, "spec": {}}) == (
        "spec.addresses", "MissingField")
    assert only(parse_pool, pool()) == ("spec.addresses", "MissingField")
    assert only(parse_pool, {"metadata": {"name": "p"}}) == ("spec", "MissingField")
    assert only(parse_pool, pool(*[f"192.0.2.{i}/32" for i in range(129)])) == (
        "spec.addresses", "InvalidAddress")


def test_pool_bad_namespace_names_and_priority() -> None:
    assert only(parse_pool, pool("192.0.2.0/24", serviceAllocation={
        "namespaces": ["ok", "Not_OK"]})) == ("spec.serviceAllocation.namespaces[1]",
                                               "InvalidName")
    assert only(parse_pool, pool("192.0.2.0/24", serviceAllocation={"priority": -1})) == (
        "spec.serviceAllocation.priority", "InvalidPriority")
    assert only(parse_pool, pool("192.0.2.0/24", serviceAllocation={"priority": 1.5})) == (
        "spec.serviceAllocation.priority", "InvalidPriority")


def test_problem_names_the_object() -> None:
    with pytest.raises(InvalidObject) as info:
        parse_pool(pool("nope"))
    (p,) = info.value.problems
    assert p.ref == ObjectRef("IPAddressPool", "p1")


# --- label selectors ---------------------------------------------------------------------------

REF = ObjectRef("L2Advertisement", "adv")


def test_selector_good_path() -> None:
    sel = parse_label_selector({
        "matchLabels": {"example.com/zone": "a", "tier": ""},
        "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]},
                             {"key": "gpu", "operator": "Exists"},
                             {"key": "spot", "operator": "DoesNotExist", "values": []}]},
        REF, "spec.nodeSelectors[0]")
    assert sel.matches({"example.com/zone": "a", "tier": "", "rack": "r2", "gpu": "1"})
    assert not sel.matches({"example.com/zone": "a", "tier": "", "rack": "r3", "gpu": "1"})
    assert parse_label_selector({}, REF, "x") == LabelSelector()


@pytest.mark.parametrize(("sel", "field"), [
    ({"matchExpressions": [{"key": "a", "operator": "Matches", "values": ["x"]}]},
     "s.matchExpressions[0].operator"),
    ({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]},
     "s.matchExpressions[0].operator"),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "s.matchExpressions[0].values"),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]},
     "s.matchExpressions[0].values"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "s.matchExpressions[0].values"),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]},
     "s.matchExpressions[0].values"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "s.matchExpressions[0].key"),
    ({"matchExpressions": [{"key": "-bad", "operator": "Exists"}]},
     "s.matchExpressions[0].key"),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["bad value"]}]},
     "s.matchExpressions[0].values[0]"),
    ({"matchExpressions": "a in (b)"}, "s.matchExpressions"),
    ({"matchExpressions": ["a"]}, "s.matchExpressions[0]"),
    ({"matchLabels": {"zone": "a b"}}, "s.matchLabels['zone']"),
    ({"matchLabels": {"zone": 5}}, "s.matchLabels['zone']"),
    ({"matchLabels": {"Bad Key": "a"}}, "s.matchLabels"),
    ({"matchLabels": {"a" * 64: "a"}}, "s.matchLabels"),
    ({"matchLabels": {"UPPER.example.com/x": "a"}}, "s.matchLabels"),
    ({"matchLabels": {"x": "v\n"}}, "s.matchLabels['x']"),
    ({"matchLabels": ["a=b"]}, "s.matchLabels"),
    ("zone=a", "s"),
])
def test_selector_bad_input(sel: Any, field: str) -> None:
    assert only(parse_label_selector, sel, REF, "s") == (field, "InvalidSelector")


# --- L2Advertisement --------------------------------------------------------------------------


def test_l2_advertisement_good_and_empty() -> None:
    adv = parse_l2_advertisement({"metadata": {"name": "l2"}, "spec": {
        "ipAddressPools": ["a", "b", "a"], "interfaces": ["eth0", "bond0.100", "eth0"],
        "nodeSelectors": [{"matchLabels": {"zone": "x"}}],
        "ipAddressPoolSelectors": [{"matchLabels": {"tier": "edge"}}]}})
    assert adv.ip_address_pools == ("a", "b") and adv.interfaces == ("eth0", "bond0.100")
    assert adv.node_selectors == (LabelSelector((("zone", "x"),)),)
    empty = parse_l2_advertisement({"metadata": {"name": "all"}})
    assert empty.ip_address_pools == () and empty.interfaces == ()


@pytest.mark.parametrize(("spec", "problem"), [
    ({"interfaces": ["eth0/1"]}, ("spec.interfaces[0]", "InvalidInterface")),
    ({"interfaces": ["x" * 16]}, ("spec.interfaces[0]", "InvalidInterface")),
    ({"interfaces": ["eth0;reboot"]}, ("spec.interfaces[0]", "InvalidInterface")),
    ({"interfaces": [""]}, ("spec.interfaces[0]", "InvalidInterface")),
    ({"interfaces": "eth0"}, ("spec.interfaces", "InvalidInterface")),
    ({"ipAddressPools": ["Bad Pool"]}, ("spec.ipAddressPools[0]", "InvalidName")),
    ({"ipAddressPools": [3]}, ("spec.ipAddressPools[0]", "InvalidName")),
    ({"nodeSelectors": [{"matchExpressions": [{"key": "a", "operator": "Foo"}]}]},
     ("spec.nodeSelectors[0].matchExpressions[0].operator", "InvalidSelector")),
    ({"ipAddressPoolSelectors": {"matchLabels": {}}},
     ("spec.ipAddressPoolSelectors", "InvalidSelector")),
])
def test_l2_advertisement_bad_input(spec: dict[str, Any], problem: tuple[str, str]) -> None:
    assert only(parse_l2_advertisement, {"metadata": {"name": "l2"}, "spec": spec}) == problem


# --- BGPAdvertisement -------------------------------------------------------------------------


def test_bgp_advertisement_good_path_and_defaults() -> None:
    adv = parse_bgp_advertisement({"metadata": {"name": "b"}, "spec": {
        "ipAddressPools": ["p"], "aggregationLength": 24, "aggregationLengthV6": 64,
        "localPref": 4294967295, "peers": ["tor-a"],
        "communities": ["65000:100", "0:0", "65535:65535", "65000:1:2",
                        "4294967295:0:4294967295", "65000:100"]}})
    assert (adv.aggregation_length, adv.aggregation_length_v6, adv.local_pref) == (
        24, 64, 4294967295)
    assert adv.communities == (Community((65000, 100)), Community((0, 0)),
                               Community((65535, 65535)), Community((65000, 1, 2)),
                               Community((4294967295, 0, 4294967295)))
    assert adv.communities[3].large and not adv.communities[0].large
    assert str(adv.communities[3]) == "65000:1:2"
    d = parse_bgp_advertisement({"metadata": {"name": "d"}})
    assert (d.aggregation_length, d.aggregation_length_v6, d.local_pref, d.communities) == (
        32, 128, None, ())
    z = parse_bgp_advertisement({"metadata": {"name": "z"},
                                 "spec": {"aggregationLength": 0, "aggregationLengthV6": 0}})
    assert (z.aggregation_length, z.aggregation_length_v6) == (0, 0)


@pytest.mark.parametrize("community", [
    "65536:1", "1:65536", "4294967296:1:1", "1:1:4294967296", "65000", "65000:", ":100",
    "65000:100:", "1:2:3:4", "a:b", "065000:100", "-1:100", " 65000:100", "65000:100\r",
    "no-export", "65000.100", "",
])
def test_bgp_advertisement_malformed_community(community: str) -> None:
    obj = {"metadata": {"name": "b"}, "spec": {"communities": ["65000:1", community]}}
    assert only(parse_bgp_advertisement, obj) == ("spec.communities[1]", "InvalidCommunity")


@pytest.mark.parametrize(("spec", "problem"), [
    ({"aggregationLength": 33}, ("spec.aggregationLength", "InvalidAggregationLength")),
    ({"aggregationLength": -1}, ("spec.aggregationLength", "InvalidAggregationLength")),
    ({"aggregationLength": "24"}, ("spec.aggregationLength", "InvalidAggregationLength")),
    ({"aggregationLengthV6": 129}, ("spec.aggregationLengthV6", "InvalidAggregationLength")),
    ({"localPref": 2**32}, ("spec.localPref", "InvalidLocalPref")),
    ({"localPref": -5}, ("spec.localPref", "InvalidLocalPref")),
    ({"communities": [65000]}, ("spec.communities[0]", "InvalidCommunity")),
    ({"peers": ["Peer_A"]}, ("spec.peers[0]", "InvalidName")),
])
def test_bgp_advertisement_bad_input(spec: dict[str, Any], problem: tuple[str, str]) -> None:
    assert only(parse_bgp_advertisement, {"metadata": {"name": "b"}, "spec": spec}) == problem


# --- BGPPeer -----------------------------------------------------------------------------------


def peer(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1"}
    base.update(spec)
    return {"metadata": {"name": "tor-a"}, "spec": {k: v for k, v in base.items()
                                                    if v is not None}}


def test_bgp_peer_defaults() -> None:
    p = parse_bgp_peer(peer())
    assert (p.name, p.my_asn, p.peer_asn, str(p.peer_address)) == (
        "tor-a", 64512, 65000, "192.0.2.1")
    assert (p.peer_port, p.hold_time, p.keepalive_time, p.router_id, p.password_secret,
            p.ebgp_multihop, p.source_address) == (179, 90, None, None, None, False, None)


def test_bgp_peer_full() -> None:
    p = parse_bgp_peer(peer(myASN=4294967295, peerASN=1, peerAddress="2001:db8::1",
                            sourceAddress="2001:db8::2", peerPort=1179, holdTime="1m30s",
                            keepaliveTime="30s", routerID="192.0.2.10", ebgpMultiHop=True,
                            passwordSecret={"name": "bgp", "namespace": "portico-system"},
                            nodeSelectors=[{"matchLabels": {"rack": "r1"}}]))
    assert p.my_asn == 4294967295 and p.peer_asn == 1 and p.peer_port == 1179
    assert p.source_address == ipaddress.IPv6Address("2001:db8::2")
    assert (p.hold_time, p.keepalive_time) == (90, 30)
    assert p.router_id == ipaddress.IPv4Address("192.0.2.10") and p.ebgp_multihop
    assert p.password_secret == SecretKeyRef("portico-system", "bgp", "password")
    assert p.node_selectors == (LabelSelector((("rack", "r1"),)),)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0), ("3s", 3), ("90s", 90), ("1m30s", 90), ("1h", 3600), ("2m", 120),
    ("1h1m1s", 3661), ("", None), ("90", None), ("1.5s", None), ("-3s", None), ("1s1m", None),
    ("3 s", None), ("100000s", None),
])
def test_durations(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_hold_time_zero_and_three_are_allowed() -> None:
    assert parse_bgp_peer(peer(holdTime="0s")).hold_time == 0
    assert parse_bgp_peer(peer(holdTime="0s", keepaliveTime="0s")).keepalive_time == 0
    assert parse_bgp_peer(peer(holdTime="3s")).hold_time == 3
    assert parse_bgp_peer(peer(holdTime="3s", keepaliveTime="1s")).keepalive_time == 1
    assert parse_bgp_peer(peer(holdTime="18h12m15s")).hold_time == 65535


@pytest.mark.parametrize(("spec", "problem"), [
    ({"myASN": 0}, ("spec.myASN", "InvalidASN")),
    ({"myASN": 2**32}, ("spec.myASN", "InvalidASN")),
    ({"peerASN": -1}, ("spec.peerASN", "InvalidASN")),
    ({"peerASN": "65000"}, ("spec.peerASN", "InvalidASN")),
    ({"peerASN": True}, ("spec.peerASN", "InvalidASN")),
    ({"peerASN": 65000.0}, ("spec.peerASN", "InvalidASN")),
    ({"myASN": None}, ("spec.myASN", "MissingField")),
    ({"peerAddress": None}, ("spec.peerAddress", "MissingField")),
    ({"peerAddress": "router.example.com"}, ("spec.peerAddress", "InvalidAddress")),
    ({"peerAddress": "192.0.2.256"}, ("spec.peerAddress", "InvalidAddress")),
    ({"peerAddress": "192.0.2.0/24"}, ("spec.peerAddress", "InvalidAddress")),
    ({"peerAddress": "fe80::1%eth0"}, ("spec.peerAddress", "InvalidAddress")),
    ({"peerAddress": " 192.0.2.1"}, ("spec.peerAddress", "InvalidAddress")),
    ({"sourceAddress": "nope"}, ("spec.sourceAddress", "InvalidAddress")),
    ({"sourceAddress": "2001:db8::1"}, ("spec.sourceAddress", "InvalidAddress")),
    ({"peerPort": 0}, ("spec.peerPort", "InvalidPort")),
    ({"peerPort": 65536}, ("spec.peerPort", "InvalidPort")),
    ({"holdTime": "1s"}, ("spec.holdTime", "InvalidHoldTime")),
    ({"holdTime": "2s"}, ("spec.holdTime", "InvalidHoldTime")),
    ({"holdTime": "65536s"}, ("spec.holdTime", "InvalidHoldTime")),
    ({"holdTime": "90"}, ("spec.holdTime", "InvalidHoldTime")),
    ({"holdTime": 90}, ("spec.holdTime", "InvalidHoldTime")),
    ({"holdTime": "soon"}, ("spec.holdTime", "InvalidHoldTime")),
    ({"keepaliveTime": "90s"}, ("spec.keepaliveTime", "InvalidKeepaliveTime")),
    ({"keepaliveTime": "91s"}, ("spec.keepaliveTime", "InvalidKeepaliveTime")),
    ({"holdTime": "9s", "keepaliveTime": "9s"}, ("spec.keepaliveTime", "InvalidKeepaliveTime")),
    ({"holdTime": "9s", "keepaliveTime": "10s"},
     ("spec.keepaliveTime", "InvalidKeepaliveTime")),
    ({"keepaliveTime": "0s"}, ("spec.keepaliveTime", "InvalidKeepaliveTime")),
    ({"holdTime": "0s", "keepaliveTime": "30s"}, ("spec.keepaliveTime", "InvalidKeepaliveTime")),
    ({"keepaliveTime": "fast"}, ("spec.keepaliveTime", "InvalidKeepaliveTime")),
    ({"routerID": "2001:db8::1"}, ("spec.routerID", "InvalidRouterID")),
    ({"routerID": "0.0.0.0"}, ("spec.routerID", "InvalidRouterID")),
    ({"routerID": "router-1"}, ("spec.routerID", "InvalidRouterID")),
    ({"passwordSecret": {"name": "s", "namespace": ""}},
     ("spec.passwordSecret.namespace", "InvalidPasswordSecret")),
    ({"passwordSecret": {"name": "s", "namespace": 7}},
     ("spec.passwordSecret.namespace", "InvalidPasswordSecret")),
    ({"passwordSecret": {"namespace": "n"}}, ("spec.passwordSecret.name", "MissingField")),
    ({"passwordSecret": {"name": "S!", "namespace": "n"}},
     ("spec.passwordSecret.name", "InvalidPasswordSecret")),
    ({"passwordSecret": {"name": "s", "namespace": "N_S"}},
     ("spec.passwordSecret.namespace", "InvalidPasswordSecret")),
    ({"passwordSecret": {"name": "s", "namespace": "n", "key": "a/b"}},
     ("spec.passwordSecret.key", "InvalidPasswordSecret")),
    ({"passwordSecret": "s"}, ("spec.passwordSecret", "InvalidPasswordSecret")),
    ({"ebgpMultiHop": "true"}, ("spec.ebgpMultiHop", "InvalidSpec")),
    ({"nodeSelectors": [{"matchExpressions": [{"key": "a", "operator": "In"}]}]},
     ("spec.nodeSelectors[0].matchExpressions[0].values", "InvalidSelector")),
])
def test_bgp_peer_bad_input(spec: dict[str, Any], problem: tuple[str, str]) -> None:
    assert only(parse_bgp_peer, peer(**spec)) == problem


def test_bgp_peer_password_key_and_message_never_show_a_password() -> None:
    p = parse_bgp_peer(peer(passwordSecret={"name": "s", "namespace": "n", "key": "md5"}))
    assert p.password_secret == SecretKeyRef("n", "s", "md5")


def test_bgp_peer_password_secret_namespace_is_optional() -> None:
    """Omitted: the namespace Portico runs in. Given: kept as written, whatever it is — the
    parser cannot know where Portico runs; the speaker compares and reports a mismatch."""
    p = parse_bgp_peer(peer(passwordSecret={"name": "s"}))
    assert p.password_secret == SecretKeyRef(None, "s", "password")
    assert p.password_secret.allowed_in("portico-system")
    other = parse_bgp_peer(peer(passwordSecret={"name": "s", "namespace": "kube-system"}))
    assert other.password_secret is not None
    assert not other.password_secret.allowed_in("portico-system")
    assert other.password_secret.allowed_in("kube-system")


# --- Service -----------------------------------------------------------------------------------


def svc(annotations: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80}],
                            "selector": {"app": "web"}}
    base.update(spec)
    meta: dict[str, Any] = {"name": "web", "namespace": "prod", "uid": "u-1",
                            "labels": {"team": "a"}}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {k: v for k, v in base.items() if v is not None}}


def test_service_good_path() -> None:
    obj = svc({ANN_LOADBALANCER_IPS: "192.0.2.10, 2001:db8::10", ANN_ADDRESS_POOL: "edge",
               ANN_ALLOW_SHARED_IP: "dns-1.a_b"},
              ports=[{"port": 53, "protocol": "UDP"}, {"port": 53}, {"port": 80,
                                                                     "protocol": "TCP"}],
              externalTrafficPolicy="Local", ipFamilyPolicy="RequireDualStack",
              ipFamilies=["IPv6", "IPv4"], selector={"b": "2", "a": "1"})
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"hostname": "x"},
                                                  {"ip": "2001:db8::10"}]}}
    s = parse_service(obj, None)
    assert s is not None
    assert (s.namespace, s.name, s.uid, s.labels) == ("prod", "web", "u-1", {"team": "a"})
    assert s.requested_ips == (ipaddress.ip_address("192.0.2.10"),
                               ipaddress.ip_address("2001:db8::10"))
    assert (s.requested_pool, s.sharing_key, s.traffic_policy) == ("edge", "dns-1.a_b", "Local")
    assert s.ports == {ServicePort("UDP", 53), ServicePort("TCP", 53), ServicePort("TCP", 80)}
    assert s.selector == (("a", "1"), ("b", "2"))
    assert (s.ip_families, s.family_policy) == (("IPv6", "IPv4"), "RequireDualStack")
    assert s.status_ips == (ipaddress.ip_address("192.0.2.10"),
                            ipaddress.ip_address("2001:db8::10"))


def test_service_defaults() -> None:
    s = parse_service(svc(), None)
    assert s is not None
    assert (s.requested_ips, s.requested_pool, s.sharing_key, s.traffic_policy) == (
        (), None, None, "Cluster")
    assert (s.ip_families, s.family_policy, s.status_ips) == (("IPv4",), "SingleStack", ())


def test_service_families_follow_cluster_ips_when_ip_families_is_absent() -> None:
    s = parse_service(svc(clusterIPs=["2001:db8::1"]), None)
    assert s is not None and s.ip_families == ("IPv6",)
    s = parse_service(svc(clusterIP="10.96.0.1", ipFamilyPolicy="PreferDualStack"), None)
    assert s is not None and s.ip_families == ("IPv4", "IPv6")
    s = parse_service(svc({ANN_LOADBALANCER_IPS: "2001:db8::7"}), None)
    assert s is not None and s.ip_families == ("IPv6",)


def test_service_explicit_families_are_honoured() -> None:
    s = parse_service(svc(ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4"]), None)
    assert s is not None and s.ip_families == ("IPv4",)  # single-stack cluster
    s = parse_service(svc(ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv6"]), None)
    assert s is not None and s.ip_families == ("IPv6", "IPv4")
    s = parse_service(svc(ipFamilies=["IPv6"]), None)
    assert s is not None and (s.ip_families, s.family_policy) == (("IPv6",), "SingleStack")


def test_service_legacy_load_balancer_ip_is_honoured() -> None:
    s = parse_service(svc(loadBalancerIP="192.0.2.7"), None)
    assert s is not None and s.requested_ips == (ipaddress.ip_address("192.0.2.7"),)
    s = parse_service(svc({ANN_LOADBALANCER_IPS: ""}, loadBalancerIP="192.0.2.7"), None)
    assert s is not None and len(s.requested_ips) == 1


@pytest.mark.parametrize(("obj", "lb_class", "ours"), [
    (svc(type="ClusterIP"), None, False),
    (svc(type="NodePort"), "portico", False),
    (svc(type=None), None, False),
    (svc(), None, True),
    (svc(), "portico", True),
    (svc(loadBalancerClass="portico"), "portico", True),
    (svc(loadBalancerClass="other"), "portico", False),
    (svc(loadBalancerClass="portico"), None, False),
    ({"metadata": {"name": "x"}}, None, False),
])
def test_service_ownership(obj: dict[str, Any], lb_class: str | None, ours: bool) -> None:
    assert (parse_service(obj, lb_class) is not None) == ours


def test_service_not_ours_is_not_validated() -> None:
    assert parse_service(svc({ANN_LOADBALANCER_IPS: "garbage"}, type="ClusterIP"), None) is None


@pytest.mark.parametrize(("obj", "problem"), [
    (svc({ANN_LOADBALANCER_IPS: "192.0.2.1,192.0.2.2"}), (IPS_FIELD, "DuplicateIPFamily")),
    (svc({ANN_LOADBALANCER_IPS: "2001:db8::1,2001:db8::2"}, ipFamilies=["IPv6"]),
     (IPS_FIELD, "DuplicateIPFamily")),
    (svc({ANN_LOADBALANCER_IPS: "192.0.2.1"}, loadBalancerIP="192.0.2.1"),
     ("spec.loadBalancerIP", "ConflictingAddressRequest")),
    (svc({ANN_LOADBALANCER_IPS: "192.0.2.1\n"}), (IPS_FIELD, "InvalidAnnotation")),
    (svc({ANN_LOADBALANCER_IPS: "192.0.2.1\r"}), (IPS_FIELD, "InvalidAnnotation")),
    (svc({ANN_LOADBALANCER_IPS: "192.0.2.1\x00"}), (IPS_FIELD, "InvalidAnnotation")),
    (svc({ANN_LOADBALANCER_IPS: "192.0.2.1,"}), (IPS_FIELD, "InvalidAnnotation")),
    (svc({ANN_LOADBALANCER_IPS: "192.0.2.0/24"}), (IPS_FIELD, "InvalidAnnotation")),
    (svc({ANN_LOADBALANCER_IPS: "fe80::1%eth0"}, ipFamilies=["IPv6"]),
     (IPS_FIELD, "InvalidAnnotation")),
    (svc({ANN_LOADBALANCER_IPS: 17}), (IPS_FIELD, "InvalidAnnotation")),
    (svc({ANN_LOADBALANCER_IPS: "2001:db8::1"}, ipFamilies=["IPv4"]),
     (IPS_FIELD, "RequestedFamilyMismatch")),
    (svc(loadBalancerIP="not-an-ip"), ("spec.loadBalancerIP", "InvalidAddress")),
    (svc({ANN_ADDRESS_POOL: "Bad Pool"}),
     (f"metadata.annotations[{ANN_ADDRESS_POOL!r}]", "InvalidAnnotation")),
    (svc({ANN_ADDRESS_POOL: "edge\r\nX-Injected: 1"}),
     (f"metadata.annotations[{ANN_ADDRESS_POOL!r}]", "InvalidAnnotation")),
    (svc({ANN_ALLOW_SHARED_IP: "key with spaces"}),
     (f"metadata.annotations[{ANN_ALLOW_SHARED_IP!r}]", "InvalidAnnotation")),
    (svc({ANN_ALLOW_SHARED_IP: "k\x00"}),
     (f"metadata.annotations[{ANN_ALLOW_SHARED_IP!r}]", "InvalidAnnotation")),
    (svc({ANN_ALLOW_SHARED_IP: "k" * 254}),
     (f"metadata.annotations[{ANN_ALLOW_SHARED_IP!r}]", "InvalidAnnotation")),
    (svc(ports=[{"port": 0}]), ("spec.ports[0].port", "InvalidPort")),
    (svc(ports=[{"port": 80, "protocol": "ICMP"}]), ("spec.ports[0].protocol", "InvalidPort")),
    (svc(ports=[{"protocol": "TCP"}]), ("spec.ports[0].port", "MissingField")),
    (svc(ports="80"), ("spec.ports", "InvalidPort")),
    (svc(externalTrafficPolicy="Global"), ("spec.externalTrafficPolicy", "InvalidSpec")),
    (svc(ipFamilyPolicy="DualStack"), ("spec.ipFamilyPolicy", "InvalidIPFamilies")),
    (svc(ipFamilies=["IPv4", "IPv4"]), ("spec.ipFamilies[1]", "InvalidIPFamilies")),
    (svc(ipFamilies=["IPv5"]), ("spec.ipFamilies[0]", "InvalidIPFamilies")),
    (svc(ipFamilies=["IPv4", "IPv6"]), ("spec.ipFamilies", "InvalidIPFamilies")),
    (svc(selector={"app": 3}), ("spec.selector.app", "InvalidSpec")),
])
def test_service_bad_input(obj: dict[str, Any], problem: tuple[str, str]) -> None:
    assert only(parse_service, obj, None) == problem


def test_service_problem_names_the_service() -> None:
    with pytest.raises(InvalidObject) as info:
        parse_service(svc({ANN_LOADBALANCER_IPS: "192.0.2.1,192.0.2.2"}), None)
    assert info.value.problems[0].ref == ObjectRef("Service", "web", "prod")
    assert str(info.value).startswith("Service prod/web: metadata.annotations[")


def test_service_garbage_in_status_is_ignored_not_an_error() -> None:
    obj = svc()
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "nonsense"}, "x", {"ip": 5},
                                                  {"ip": "192.0.2.9"}]}}
    s = parse_service(obj, None)
    assert s is not None and s.status_ips == (ipaddress.ip_address("192.0.2.9"),)


def test_service_metadata_problems() -> None:
    found = problems(parse_service, {"metadata": {"name": 5}, "spec": {"type": "LoadBalancer"}},
                     None)
    assert found == [("metadata.name", "InvalidSpec"), ("metadata.namespace", "MissingField")]


# --- Namespace ---------------------------------------------------------------------------------


def test_namespace_labels() -> None:
    assert parse_namespace_labels({"metadata": {"name": "prod", "labels": {"team": "a"}}}) == (
        "prod", {"team": "a"})
    assert parse_namespace_labels({"metadata": {"name": "x"}}) == ("x", {})
    assert only(parse_namespace_labels, {"metadata": {"name": "x", "labels": ["a"]}}) == (
        "metadata.labels", "InvalidSpec")
    assert only(parse_namespace_labels, {}) == ("metadata", "MissingField")
    assert only(parse_namespace_labels, {"metadata": {"name": ""}}) == (
        "metadata.name", "MissingField")
