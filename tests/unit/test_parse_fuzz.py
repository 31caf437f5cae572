"""Hostile input: whatever dict reaches a parser, it returns a value or raises InvalidObject.

Two generators: free-form JSON-ish values (mostly caught at the top), and valid objects with
one or more fields replaced by random JSON, which reaches the deep code paths.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.api.model import ANN_ADDRESS_POOL, ANN_ALLOW_SHARED_IP, ANN_LOADBALANCER_IPS
from common.api.parse import (
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_l2_advertisement,
    parse_namespace_labels,
    parse_pool,
    parse_service,
)
from common.errors import InvalidObject

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["192.0.2.1", "2001:db8::1", "192.0.2.0/24", "a-b", "90s", "0s", "In",
                     "Exists", "LoadBalancer", "IPv4", "IPv6", "65000:1", "\r\n", "\x00",
                     "fe80::1%eth0", "1.2.3.4-::1", "TCP", "Local", "RequireDualStack"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=12), st.integers()),
                                            inner, max_size=4)),
    max_leaves=20,
)

SEL = {"matchLabels": {"a": "b"},
       "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}
VALID: dict[str, dict[str, Any]] = {
    "pool": {"metadata": {"name": "p", "labels": {"x": "y"}, "creationTimestamp": "t"},
             "spec": {"addresses": ["192.0.2.0/24", "2001:db8::1-2001:db8::9"],
                      "autoAssign": True, "avoidBuggyIPs": False,
                      "serviceAllocation": {"priority": 1, "namespaces": ["a"],
                                            "namespaceSelectors": [SEL],
                                            "serviceSelectors": [SEL]}}},
    "l2": {"metadata": {"name": "l2"},
           "spec": {"ipAddressPools": ["p"], "ipAddressPoolSelectors": [SEL],
                    "nodeSelectors": [SEL], "interfaces": ["eth0"]}},
    "bgpadv": {"metadata": {"name": "b"},
               "spec": {"ipAddressPools": ["p"], "ipAddressPoolSelectors": [SEL],
                        "aggregationLength": 24, "aggregationLengthV6": 64, "localPref": 100,
                        "communities": ["65000:1", "1:2:3"], "peers": ["x"],
                        "nodeSelectors": [SEL]}},
    "peer": {"metadata": {"name": "peer"},
             "spec": {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1",
                      "sourceAddress": "192.0.2.2", "peerPort": 179, "holdTime": "9s",
                      "keepaliveTime": "3s", "routerID": "192.0.2.3",
                      "passwordSecret": {"name": "s", "namespace": "n", "key": "k"},
                      "ebgpMultiHop": True, "nodeSelectors": [SEL]}},
    "svc": {"metadata": {"name": "s", "namespace": "n", "uid": "u", "labels": {"a": "b"},
                         "annotations": {ANN_LOADBALANCER_IPS: "192.0.2.1,2001:db8::1",
                                         ANN_ADDRESS_POOL: "p", ANN_ALLOW_SHARED_IP: "k"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                     "selector": {"a": "b"}, "externalTrafficPolicy": "Local",
                     "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"],
                     "clusterIPs": ["10.0.0.1"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}},
    "ns": {"metadata": {"name": "ns", "labels": {"a": "b"}}},
}
PARSERS: dict[str, Callable[[Any], object]] = {
    "pool": parse_pool,
    "l2": parse_l2_advertisement,
    "bgpadv": parse_bgp_advertisement,
    "peer": parse_bgp_peer,
    "svc": lambda obj: parse_service(obj, None),
    "ns": parse_namespace_labels,
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    obj = copy.copy(obj)
    obj[path[0]] = _replace(obj[path[0]], path[1:], new)
    return obj


def _survives(kind: str, obj: Any) -> None:
    try:
        PARSERS[kind](obj)
    except InvalidObject as exc:
        assert exc.problems, "InvalidObject without a problem"
        for p in exc.problems:
            assert p.reason and p.reason[0].isupper() and p.message, p
            # messages are repr-quoted: no raw control character reaches an Event or a log
            assert not any(c in p.message + p.field for c in "\r\n\x00"), p


def test_every_valid_template_parses() -> None:
    for kind, obj in VALID.items():
        assert PARSERS[kind](copy.deepcopy(obj)) is not None, kind


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), JSON)
def test_free_form_json_never_crashes_a_parser(kind: str, obj: Any) -> None:
    _survives(kind, obj)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), JSON, JSON)
def test_objects_with_random_top_level_parts(kind: str, meta: Any, spec: Any) -> None:
    _survives(kind, {"metadata": meta, "spec": spec})
    _survives(kind, {"metadata": {"name": "n", "namespace": "x"}, "spec": spec})


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), st.data())
def test_valid_objects_with_fields_replaced_never_crash(kind: str, data: st.DataObject) -> None:
    obj: Any = copy.deepcopy(VALID[kind])
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(obj)
        path = data.draw(st.sampled_from(paths))
        obj = _replace(obj, path, data.draw(JSON))
    _survives(kind, obj)
