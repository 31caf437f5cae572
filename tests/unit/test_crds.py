"""The CRD manifests in charts/portico/crds/: structural-schema rules, printer columns, example
objects validated by OpenAPI (jsonschema) and CEL (celpy), the long patterns checked against a
builder and against common/api/parse.py, and drift between the schemas and the parser.

No API server runs here, so this is the closest check we have of what `kubectl apply` would
accept. Where the API server would default a field, ``apply_defaults`` does the same first.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

# Dev dependencies (pyproject.toml): a missing one is a broken environment, not a skip.
# google-re2 comes with cel-python.
import celpy
import jsonschema
import pytest
import re2
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from common.api import parse_common as limits
from common.api.model import AddressRange, Community
from common.api.parse import (
    parse_address_entry,
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_community,
    parse_ip,
    parse_l2_advertisement,
    parse_pool,
    parse_service,
)
from common.errors import InvalidObject

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "charts" / "portico" / "crds"
KINDS = {
    "IPAddressPool": "ipaddresspools",
    "L2Advertisement": "l2advertisements",
    "BGPAdvertisement": "bgpadvertisements",
    "BGPPeer": "bgppeers",
}
PARSERS: dict[str, Callable[[object], object]] = {
    "IPAddressPool": parse_pool,
    "L2Advertisement": parse_l2_advertisement,
    "BGPAdvertisement": parse_bgp_advertisement,
    "BGPPeer": parse_bgp_peer,
}


# --- pattern builder: the source of the long patterns in the YAML files ----------------------
# Written without backslashes so the same text is valid for Go's RE2 (the API server) and
# Python's re (jsonschema), and needs no escaping in YAML.

OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
V4 = f"({OCTET}[.]){{3}}{OCTET}"
H16 = "[0-9a-fA-F]{1,4}"


def _v6() -> str:
    # RFC 3986 section 3.2.2 IPv6address, with the 32-bit tail (ls32) factored out once.
    ls32 = f"({H16}:{H16}|{V4})"
    heads = [
        f"({H16}:){{6}}",
        f"::({H16}:){{5}}",
        f"({H16})?::({H16}:){{4}}",
        f"(({H16}:){{0,1}}{H16})?::({H16}:){{3}}",
        f"(({H16}:){{0,2}}{H16})?::({H16}:){{2}}",
        f"(({H16}:){{0,3}}{H16})?::{H16}:",
        f"(({H16}:){{0,4}}{H16})?::",
    ]
    tails = f"|(({H16}:){{0,5}}{H16})?::{H16}|(({H16}:){{0,6}}{H16})?::"
    return "((" + "|".join(heads) + f"){ls32}" + tails + ")"


V6 = _v6()
P4 = "(3[0-2]|[12]?[0-9])"
P6 = "(12[0-8]|1[01][0-9]|[1-9]?[0-9])"
U16 = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)"
U32 = (
    "(429496729[0-5]|42949672[0-8][0-9]|4294967[01][0-9]{2}|429496[0-6][0-9]{3}"
    "|42949[0-5][0-9]{4}|4294[0-8][0-9]{5}|429[0-3][0-9]{6}|42[0-8][0-9]{7}"
    "|4[01][0-9]{8}|[1-3][0-9]{9}|[1-9][0-9]{0,8}|0)"
)
IP_PATTERN = f"^({V4}|{V6})$"
IPV4_PATTERN = f"^{V4}$"
POOL_ADDRESS_PATTERN = f"^({V4}/{P4}|{V4} *- *{V4}|{V6}/{P6}|{V6} *- *{V6})$"
COMMUNITY_PATTERN = f"^({U16}:{U16}|{U32}:{U32}:{U32})$"


# --- loading and walking -----------------------------------------------------------------------


def _load(kind: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((CRD_DIR / f"lb.portico.dev_{KINDS[kind]}.yaml")
                                          .read_text()) if d]
    assert len(docs) == 1, f"{kind}: one CRD per file"
    doc: dict[str, Any] = docs[0]
    return doc


CRDS = {kind: _load(kind) for kind in KINDS}


def _version(kind: str) -> dict[str, Any]:
    versions: list[dict[str, Any]] = CRDS[kind]["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = _version(kind)["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _node_at(kind: str, path: str) -> dict[str, Any] | None:
    nodes = dict(_walk(_schema(kind)))
    return nodes.get(path)


# --- the CRD objects ---------------------------------------------------------------------------


def test_every_kind_has_a_file_and_nothing_else_is_there() -> None:
    files = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert files == sorted(f"lb.portico.dev_{p}.yaml" for p in KINDS.values())


@pytest.mark.parametrize("kind", KINDS)
def test_crd_identity(kind: str) -> None:
    crd = CRDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    assert spec["group"] == "lb.portico.dev"
    assert crd["metadata"]["name"] == f"{KINDS[kind]}.lb.portico.dev"
    assert spec["names"]["kind"] == kind and spec["names"]["plural"] == KINDS[kind]
    # Cluster-scoped, as common/api/parse.py and common/kube/resources.py assume.
    assert spec["scope"] == "Cluster"
    version = _version(kind)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


ALLOWED_KEYS = {
    "type", "description", "properties", "items", "additionalProperties", "required", "enum",
    "default", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
    "maxProperties", "pattern", "format", "x-kubernetes-validations",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
}


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    schema = _schema(kind)
    assert schema["type"] == "object"
    assert set(schema["properties"]) >= {"apiVersion", "kind", "metadata", "spec", "status"}
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in _walk(schema):
        where = f"{kind} {path or '<root>'}"
        assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, where
        assert set(node) <= ALLOWED_KEYS, f"{where}: {set(node) - ALLOWED_KEYS}"
        assert not ("properties" in node and "additionalProperties" in node), where
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{where}: arrays need items"
            # CEL cost estimation and request size: every list is bounded.
            assert isinstance(node.get("maxItems"), int), f"{where}: maxItems"
        else:
            assert "items" not in node, where
        # apiVersion/kind are the API server's; date-times have a fixed shape.
        if (node["type"] == "string" and "enum" not in node and path not in (".apiVersion",
                ".kind") and node.get("format") != "date-time"):
            assert isinstance(node.get("maxLength"), int), f"{where}: maxLength"
        if node["type"] == "object" and "additionalProperties" in node:
            assert isinstance(node.get("maxProperties"), int), f"{where}: maxProperties"
        for req in node.get("required", []):
            assert req in node.get("properties", {}), f"{where}: required {req} undeclared"
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []), f"{where}: map key {key} required"


@pytest.mark.parametrize("kind", KINDS)
def test_patterns_compile_in_re2_and_python(kind: str) -> None:
    for path, node in _walk(_schema(kind)):
        if "pattern" in node:
            re.compile(node["pattern"])
            re2.compile(node["pattern"])  # the API server's engine is Go's RE2
            assert node["pattern"].startswith("^") and node["pattern"].endswith("$"), path


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_to_declared_fields(kind: str) -> None:
    columns = _version(kind)["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert names[-1] == "Age" and len(set(names)) == len(names)
    type_map = {"string": {"string", "array"}, "integer": {"integer"}, "boolean": {"boolean"},
                "date": {"string"}}
    for col in columns:
        path = col["jsonPath"]
        if path == ".metadata.creationTimestamp":
            continue
        node = _node_at(kind, path)
        assert node is not None, f"{kind} column {col['name']}: {path} is not in the schema"
        assert node["type"] in type_map[col["type"]], f"{kind} column {col['name']}"


def test_pool_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version("IPAddressPool")[
        "additionalPrinterColumns"]}
    assert columns["Auto Assign"] == ".spec.autoAssign"
    assert columns["Avoid Buggy IPs"] == ".spec.avoidBuggyIPs"
    assert columns["IPv4 Available"] == ".status.ipv4.available"
    assert columns["IPv6 Available"] == ".status.ipv6.available"


def test_pool_counts_are_strings_wide_enough_for_ipv6() -> None:
    for fam in ("ipv4", "ipv6"):
        for field in ("total", "assigned", "available"):
            node = _node_at("IPAddressPool", f".status.{fam}.{field}")
            assert node is not None and node["type"] == "string"
            assert re.fullmatch(node["pattern"], str(2**128))  # a whole IPv6 space fits
            assert not re.fullmatch(node["pattern"], "-1")
            assert not re.fullmatch(node["pattern"], "007")


# --- the long patterns -------------------------------------------------------------------------


def _patterns(kind: str, path: str) -> str:
    node = _node_at(kind, path)
    assert node is not None, path
    pattern: str = node["pattern"]
    return pattern


def test_patterns_match_the_builder() -> None:
    assert _patterns("IPAddressPool", ".spec.addresses[]") == POOL_ADDRESS_PATTERN
    assert _patterns("BGPPeer", ".spec.peerAddress") == IP_PATTERN
    assert _patterns("BGPPeer", ".spec.sourceAddress") == IP_PATTERN
    assert _patterns("BGPPeer", ".spec.routerID") == IPV4_PATTERN
    assert _patterns("BGPAdvertisement", ".spec.communities[]") == COMMUNITY_PATTERN


@st.composite
def ip_texts(draw: st.DrawFn) -> str:
    """Valid addresses in the textual forms people write: compressed, exploded, partly
    compressed, upper case, with an embedded IPv4 tail."""
    if draw(st.booleans()):
        return str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))))
    # Runs of zero groups make '::' placement interesting.
    groups = draw(st.lists(st.sampled_from([0, 0, 0, 1, 0xDB8, 0xFFFF, 0x2001, 0xABC]),
                           min_size=8, max_size=8))
    addr = ipaddress.IPv6Address(int("".join(f"{g:04x}" for g in groups), 16))
    form = draw(st.sampled_from(["compressed", "exploded", "short", "upper", "v4tail"]))
    if form == "compressed":
        return str(addr)
    if form == "exploded":
        return addr.exploded
    if form == "short":
        return ":".join(f"{g:x}" for g in groups)
    if form == "upper":
        return str(addr).upper()
    tail = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    head = ipaddress.IPv6Address(int(addr) & ~0xFFFFFFFF & (2**128 - 1))
    text = str(head)
    # "x:y::" + "a.b.c.d" or "x:...:y:0:0" -> replace the last two groups by the dotted tail
    if text.endswith("::") and draw(st.booleans()):
        # "1:2::" + "192.0.2.1"; invalid when '::' would stand for no group at all.
        return text + str(tail)
    return ":".join(addr.exploded.split(":")[:6]) + ":" + str(tail)


@settings(max_examples=400, deadline=None)
@given(ip_texts())
def test_ip_pattern_accepts_every_address_the_parser_accepts(text: str) -> None:
    assert bool(re.fullmatch(IP_PATTERN, text)) == (parse_ip(text) is not None), text
    assume(parse_ip(text) is not None)
    assert re.fullmatch(IP_PATTERN, text), text


_NOISE = st.text(alphabet="0123456789abcdefABCDEF:.:/- x%", max_size=40)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_NOISE, ip_texts(), st.builds(lambda a, b: f"{a}-{b}", ip_texts(), ip_texts()),
                 st.builds(lambda a, n: f"{a}/{n}", ip_texts(), st.integers(0, 130))))
def test_patterns_agree_with_the_parser(text: str) -> None:
    # The API server must never reject what the parser accepts, and what it accepts the
    # parser either accepts or explains (host bits, reversed range: needs arithmetic).
    assert bool(re.fullmatch(IP_PATTERN, text)) == (parse_ip(text) is not None), text
    parsed = parse_address_entry(text)
    accepted_by_parser = isinstance(parsed, AddressRange)
    pattern_ok = bool(re.fullmatch(POOL_ADDRESS_PATTERN, text))
    if accepted_by_parser:
        assert pattern_ok, text
    elif pattern_ok:
        assert not isinstance(parsed, AddressRange) and parsed[0] in (
            "ReversedRange", "InvalidAddress") and (
            parsed[0] == "ReversedRange" or "host bits" in parsed[1]), (text, parsed)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**33), st.sampled_from(
    [0, 65535, 65536, 2**32 - 1, 2**32])), min_size=1, max_size=4),
       st.booleans())
def test_community_pattern_agrees_with_the_parser(parts: list[int], leading_zero: bool) -> None:
    text = ":".join(str(p) for p in parts)
    if leading_zero:
        text = "0" + text
    assert bool(re.fullmatch(COMMUNITY_PATTERN, text)) == isinstance(
        parse_community(text), Community), text


# --- validating example objects like the API server would --------------------------------------


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Unknown fields are errors (kubectl's default strict field validation)."""
    out = copy.deepcopy(schema)
    for _, node in _walk(out):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
    out["properties"]["metadata"] = {"type": "object"}
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The API server's defaulting: fill absent fields that declare a default."""
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    errors: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": celpy.json_to_cel(value)})
        except Exception as exc:  # a runtime error (e.g. duration('x')) rejects the object
            errors.append(f"{path}: {rule['message']} (evaluation error {exc.__class__.__name__})")
            continue
        if not isinstance(ok, celpy.celtypes.BoolType):
            errors.append(f"{path}: {rule['message']} (evaluation error {ok!r})")
        elif not ok:
            errors.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                errors += _cel_errors(sub, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def _go_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    # jsonschema uses Python's re.search, whose '$' also matches before a final newline;
    # Go's RE2 (the API server) does not, so "192.0.2.0/24\n" must fail here too.
    if isinstance(instance, str) and not re2.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


GoValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": _go_pattern})


def api_server_errors(kind: str, obj: dict[str, Any]) -> list[str]:
    schema = _schema(kind)
    obj = apply_defaults(schema, copy.deepcopy(obj))
    validator = GoValidator(_strict(schema))
    errors = [
        "." + ".".join(str(p) for p in e.absolute_path) + ": " + e.message
        for e in validator.iter_errors(obj)
    ]
    return errors + _cel_errors(schema, obj, "")


def _obj(kind: str, spec: dict[str, Any] | None, name: str = "example") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "lb.portico.dev/v1alpha1", "kind": kind,
                           "metadata": {"name": name}}
    if spec is not None:
        obj["spec"] = spec
    return obj


SEL = {"matchLabels": {"zone": "a", "example.com/tier": "edge"},
       "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]},
                            {"key": "gpu", "operator": "DoesNotExist"}]}

GOOD: list[tuple[str, dict[str, Any] | None]] = [
    ("IPAddressPool", {"addresses": ["192.0.2.0/24"]}),
    ("IPAddressPool", {
        "addresses": ["192.0.2.0/25", "198.51.100.10 - 198.51.100.20", "2001:db8::/64",
                      "2001:db8:1::1-2001:db8:1::ff", "203.0.113.7/32"],
        "autoAssign": False, "avoidBuggyIPs": True,
        "serviceAllocation": {"priority": 10, "namespaces": ["prod", "edge-1"],
                              "namespaceSelectors": [SEL], "serviceSelectors": [{}]}}),
    ("L2Advertisement", None),
    ("L2Advertisement", {"ipAddressPools": ["default"], "ipAddressPoolSelectors": [SEL],
                         "nodeSelectors": [SEL], "interfaces": ["eth0", "bond0.100"]}),
    ("BGPAdvertisement", {}),
    ("BGPAdvertisement", {"ipAddressPools": ["default"], "aggregationLength": 24,
                          "aggregationLengthV6": 64, "localPref": 4294967295,
                          "communities": ["65000:100", "0:0", "65535:65535", "65000:1:2",
                                          "4294967295:4294967295:4294967295"],
                          "peers": ["tor-a"], "nodeSelectors": [SEL]}),
    ("BGPPeer", {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1"}),
    ("BGPPeer", {"myASN": 4294967295, "peerASN": 1, "peerAddress": "2001:db8::1",
                 "sourceAddress": "2001:db8::2", "peerPort": 1179, "holdTime": "3s",
                 "keepaliveTime": "1s", "routerID": "192.0.2.10",
                 "passwordSecret": {"name": "bgp-auth", "namespace": "portico-system",
                                    "key": "md5"},
                 "ebgpMultiHop": True, "nodeSelectors": [SEL]}),
    ("BGPPeer", {"myASN": 64512, "peerASN": 64512, "peerAddress": "192.0.2.1",
                 "holdTime": "0s"}),
    # namespace omitted: the namespace Portico runs in (the only one allowed)
    ("BGPPeer", {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1",
                 "passwordSecret": {"name": "bgp-auth"}}),
    ("BGPPeer", {"myASN": 64512, "peerASN": 64512, "peerAddress": "192.0.2.1",
                 "holdTime": "1m30s", "keepaliveTime": "30s"}),
    # BFD (issue 15): MetalLB's BFDProfile fields, inline; {} = the defaults (300 ms x 3)
    ("BGPPeer", {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1",
                 "bfd": {"receiveInterval": 100, "transmitInterval": 100,
                         "detectMultiplier": 3, "passiveMode": False, "minimumTtl": 254}}),
    ("BGPPeer", {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1", "bfd": {}}),
]


@pytest.mark.parametrize(("kind", "spec"), GOOD)
def test_good_examples_pass_the_api_server_and_the_parser(
    kind: str, spec: dict[str, Any] | None
) -> None:
    obj = _obj(kind, spec)
    assert api_server_errors(kind, obj) == []
    PARSERS[kind](obj)  # raises InvalidObject on disagreement
    # ... and the object as the API server stores it (defaults filled) parses the same way.
    assert PARSERS[kind](apply_defaults(_schema(kind), copy.deepcopy(obj))) == PARSERS[kind](obj)


def _expr(op: str, values: list[str] | None) -> dict[str, Any]:
    e: dict[str, Any] = {"key": "k", "operator": op}
    if values is not None:
        e["values"] = values
    return {"nodeSelectors": [{"matchExpressions": [e]}]}


PEER = {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1"}

# (kind, spec, a fragment of the API server's error, reason the parser gives or None when the
# schema alone catches it, e.g. a wrong type the parser reports as InvalidSpec)
BAD: list[tuple[str, dict[str, Any] | None, str, str | None]] = [
    ("IPAddressPool", None, "'spec' is a required property", "MissingField"),
    ("IPAddressPool", {"addresses": []}, "addresses", "MissingField"),
    ("IPAddressPool", {"addresses": ["192.0.2.0/33"]}, "addresses.0", "InvalidAddress"),
    ("IPAddressPool", {"addresses": ["192.0.2.1"]}, "addresses.0", "InvalidAddress"),
    ("IPAddressPool", {"addresses": ["192.0.2.1-2001:db8::1"]}, "addresses.0",
     "MixedFamilyRange"),
    ("IPAddressPool", {"addresses": ["192.0.2.0/24\n"]}, "addresses.0", "InvalidAddress"),
    ("IPAddressPool", {"addresses": ["192.0.2.0/24"], "autoAssign": "yes"}, "autoAssign",
     "InvalidSpec"),
    ("IPAddressPool", {"addresses": ["192.0.2.0/24"], "serviceAllocation": {"priority": -1}},
     "priority", "InvalidPriority"),
    ("IPAddressPool", {"addresses": ["192.0.2.0/24"],
                       "serviceAllocation": {"namespaces": ["Not_A_Namespace"]}},
     "namespaces.0", "InvalidName"),
    ("IPAddressPool", {"addresses": ["192.0.2.0/24"], "adresses": ["x"]},
     "Additional properties", None),
    ("IPAddressPool", {"addresses": [f"192.0.2.{i}/32" for i in range(129)]}, "addresses",
     "InvalidAddress"),
    ("L2Advertisement", _expr("Matches", ["x"]), "operator", "InvalidSelector"),
    ("L2Advertisement", _expr("In", None), "In and NotIn need at least one value",
     "InvalidSelector"),
    ("L2Advertisement", _expr("NotIn", []), "In and NotIn need at least one value",
     "InvalidSelector"),
    ("L2Advertisement", _expr("Exists", ["x"]), "Exists and DoesNotExist take none",
     "InvalidSelector"),
    ("L2Advertisement", {"nodeSelectors": [{"matchLabels": {"zone": "bad value!"}}]},
     "matchLabels", "InvalidSelector"),
    ("L2Advertisement", {"interfaces": ["eth0/1"]}, "interfaces.0", "InvalidInterface"),
    ("L2Advertisement", {"interfaces": ["a-very-long-interface-name"]}, "interfaces.0",
     "InvalidInterface"),
    ("L2Advertisement", {"ipAddressPools": ["Bad Name"]}, "ipAddressPools.0", "InvalidName"),
    ("BGPAdvertisement", {"aggregationLength": 33}, "aggregationLength",
     "InvalidAggregationLength"),
    ("BGPAdvertisement", {"aggregationLengthV6": 129}, "aggregationLengthV6",
     "InvalidAggregationLength"),
    ("BGPAdvertisement", {"localPref": 4294967296}, "localPref", "InvalidLocalPref"),
    ("BGPAdvertisement", {"communities": ["65536:1"]}, "communities.0", "InvalidCommunity"),
    ("BGPAdvertisement", {"communities": ["1:2:4294967296"]}, "communities.0",
     "InvalidCommunity"),
    ("BGPAdvertisement", {"communities": ["no-export"]}, "communities.0", "InvalidCommunity"),
    ("BGPAdvertisement", {"communities": ["1:2:3:4"]}, "communities.0", "InvalidCommunity"),
    ("BGPPeer", {"peerASN": 65000, "peerAddress": "192.0.2.1"}, "'myASN' is a required",
     "MissingField"),
    ("BGPPeer", dict(PEER, myASN=0), "myASN", "InvalidASN"),
    ("BGPPeer", dict(PEER, peerASN=4294967296), "peerASN", "InvalidASN"),
    ("BGPPeer", dict(PEER, peerAddress="router.example"), "peerAddress", "InvalidAddress"),
    ("BGPPeer", dict(PEER, peerAddress="fe80::1%eth0"), "peerAddress", "InvalidAddress"),
    ("BGPPeer", dict(PEER, sourceAddress="2001:db8::1"), "same IP family", "InvalidAddress"),
    ("BGPPeer", dict(PEER, peerPort=0), "peerPort", "InvalidPort"),
    ("BGPPeer", dict(PEER, holdTime="1s"), "holdTime must be 0s or between 3s",
     "InvalidHoldTime"),
    ("BGPPeer", dict(PEER, holdTime="2s"), "holdTime must be 0s or between 3s",
     "InvalidHoldTime"),
    ("BGPPeer", dict(PEER, holdTime="65536s"), "holdTime must be 0s or between 3s",
     "InvalidHoldTime"),
    ("BGPPeer", dict(PEER, holdTime="90"), "holdTime", "InvalidHoldTime"),
    ("BGPPeer", dict(PEER, holdTime=90), "holdTime", "InvalidHoldTime"),
    ("BGPPeer", dict(PEER, holdTime="9s", keepaliveTime="9s"),
     "keepaliveTime must be more than 0s and less than holdTime", "InvalidKeepaliveTime"),
    ("BGPPeer", dict(PEER, keepaliveTime="90s"),
     "keepaliveTime must be more than 0s and less than holdTime", "InvalidKeepaliveTime"),
    ("BGPPeer", dict(PEER, holdTime="0s", keepaliveTime="5s"),
     "keepaliveTime must be more than 0s", "InvalidKeepaliveTime"),
    ("BGPPeer", dict(PEER, keepaliveTime="0s"),
     "keepaliveTime must be more than 0s", "InvalidKeepaliveTime"),
    ("BGPPeer", dict(PEER, routerID="2001:db8::1"), "routerID", "InvalidRouterID"),
    ("BGPPeer", dict(PEER, routerID="0.0.0.0"), "routerID must not be 0.0.0.0",
     "InvalidRouterID"),
    ("BGPPeer", dict(PEER, passwordSecret={"namespace": "n"}), "'name' is a required",
     "MissingField"),
    ("BGPPeer", dict(PEER, passwordSecret={"name": "s", "namespace": "N_S"}), "namespace",
     "InvalidPasswordSecret"),
    ("BGPPeer", dict(PEER, passwordSecret={"name": "s", "namespace": ""}), "namespace",
     "InvalidPasswordSecret"),
    ("BGPPeer", dict(PEER, passwordSecret={"name": "s", "namespace": "n", "key": "a/b"}),
     "key", "InvalidPasswordSecret"),
    ("BGPPeer", dict(PEER, password="plaintext"), "Additional properties", None),
    ("BGPPeer", dict(PEER, bfd={"receiveInterval": 5}), "receiveInterval", "InvalidBFD"),
    ("BGPPeer", dict(PEER, bfd={"transmitInterval": 60001}), "transmitInterval", "InvalidBFD"),
    ("BGPPeer", dict(PEER, bfd={"detectMultiplier": 1}), "detectMultiplier", "InvalidBFD"),
    ("BGPPeer", dict(PEER, bfd={"minimumTtl": 255}), "minimumTtl", "InvalidBFD"),
    ("BGPPeer", dict(PEER, bfd={"echoMode": True}), "Additional properties", None),
]


@pytest.mark.parametrize(("kind", "spec", "fragment", "reason"), BAD,
                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(BAD)])
def test_bad_examples_are_rejected_by_the_api_server_and_the_parser(
    kind: str, spec: dict[str, Any] | None, fragment: str, reason: str | None
) -> None:
    obj = _obj(kind, spec)
    errors = api_server_errors(kind, obj)
    assert errors, "the API server would accept it"
    assert any(fragment in e for e in errors), errors
    if reason is None:
        return  # an unknown field: the API server rejects it; the parser ignores it (pruned)
    with pytest.raises(InvalidObject) as info:
        PARSERS[kind](obj)
    assert reason in {p.reason for p in info.value.problems}, info.value.problems


# --- drift: the schema limits and defaults equal the parser's ----------------------------------


def test_limits_agree_with_the_parser() -> None:
    def max_items(kind: str, path: str) -> int:
        node = _node_at(kind, path)
        assert node is not None, path
        return int(node["maxItems"])

    assert max_items("IPAddressPool", ".spec.addresses") == limits.MAX_POOL_ADDRESSES
    assert max_items("IPAddressPool", ".spec.serviceAllocation.namespaces") == limits.MAX_NAMES
    assert max_items("L2Advertisement", ".spec.nodeSelectors") == limits.MAX_SELECTORS
    assert max_items("L2Advertisement", ".spec.nodeSelectors[].matchExpressions") == (
        limits.MAX_EXPRESSIONS)
    assert max_items("L2Advertisement", ".spec.interfaces") == limits.MAX_INTERFACES
    assert max_items("BGPAdvertisement", ".spec.communities") == limits.MAX_COMMUNITIES
    assert max_items("BGPAdvertisement", ".spec.peers") == limits.MAX_NAMES


def test_password_secret_required_fields_agree_with_the_parser() -> None:
    """The schema's ``required`` of passwordSecret is exactly what the parser requires: each
    required field left out is MissingField, each optional one may be left out."""
    node = _node_at("BGPPeer", ".spec.passwordSecret")
    assert node is not None
    required = set(node.get("required") or [])
    assert required == {"name"}, "namespace is optional (omitted: Portico's namespace)"
    full = {"name": "s", "namespace": "portico-system", "key": "md5"}
    for field in full:
        partial = {k: v for k, v in full.items() if k != field}
        obj = _obj("BGPPeer", dict(PEER, passwordSecret=partial))
        assert bool(api_server_errors("BGPPeer", obj)) == (field in required), field
        if field in required:
            with pytest.raises(InvalidObject) as info:
                parse_bgp_peer(obj)
            assert [(p.field, p.reason) for p in info.value.problems] == [
                (f"spec.passwordSecret.{field}", "MissingField")]
        else:
            ref = parse_bgp_peer(obj).password_secret
            assert ref is not None and ref.name == "s"
    ref = parse_bgp_peer(_obj("BGPPeer", dict(PEER, passwordSecret={"name": "s"}))
                         ).password_secret
    assert ref is not None and ref.namespace is None and ref.key == "password"


class Recorder(Mapping[str, Any]):
    """A read-only dict that records every key the parser looks up, as a schema path."""

    def __init__(self, data: Mapping[str, Any], path: str, seen: set[str]) -> None:
        self._data, self._path, self._seen = data, path, seen

    def _wrap(self, value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return Recorder(value, path, self._seen)
        if isinstance(value, list):
            return [self._wrap(v, f"{path}[]") for v in value]
        return value

    def __getitem__(self, key: str) -> Any:
        self._seen.add(f"{self._path}.{key}")
        return self._wrap(self._data[key], f"{self._path}.{key}")

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(f"{self._path}.{key}")
        return self._wrap(self._data[key], f"{self._path}.{key}") if key in self._data \
            else default

    def __contains__(self, key: object) -> bool:
        self._seen.add(f"{self._path}.{key}")
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@pytest.mark.parametrize(("kind", "spec"), [g for g in GOOD if g[1]])
def test_every_field_the_parser_reads_is_declared(kind: str, spec: dict[str, Any]) -> None:
    seen: set[str] = set()
    value = PARSERS[kind](Recorder(_obj(kind, spec), "", seen))
    assert value is not None
    declared = {path for path, _ in _walk(_schema(kind))}
    undeclared = {
        p for p in seen
        # metadata is ObjectMeta, and map-typed fields (labels, matchLabels) have data keys.
        if not p.startswith(".metadata") and "{}" not in p and p not in declared
        and not re.search(r"\.matchLabels\.", p)
    }
    assert not undeclared, f"{kind}: the parser reads fields the CRD lacks: {undeclared}"
    assert any(p.startswith(".spec.") for p in seen)


@pytest.mark.parametrize("kind", KINDS)
def test_every_declared_spec_field_is_read_by_the_parser(kind: str) -> None:
    seen: set[str] = set()
    for k, spec in GOOD:
        if k == kind and spec:
            PARSERS[kind](Recorder(_obj(kind, spec), "", seen))
    def norm(paths: set[str]) -> set[str]:
        # Array items are not looked up by key, and every selector is read by one function.
        return {re.sub(r"^.*[sS]electors\[\]", "<selector>", p) for p in paths
                if not p.endswith("[]")}

    declared = {p for p, _ in _walk(_schema(kind)) if p.startswith(".spec.") and "{}" not in p}
    missing = norm(declared) - norm(seen)
    assert not missing, f"{kind}: declared but never read by the parser: {missing}"


def test_recorder_catches_a_misspelt_field() -> None:
    seen: set[str] = set()
    rec = Recorder({"spec": {"avoidBuggyIps": True}}, "", seen)
    spec = rec["spec"]
    spec.get("avoidBuggyIps")
    declared = {p for p, _ in _walk(_schema("IPAddressPool"))}
    assert ".spec.avoidBuggyIps" in seen and ".spec.avoidBuggyIps" not in declared


# --- the examples in docs/api are valid --------------------------------------------------------

DOCS = ROOT / "docs" / "api"


def _doc_blocks() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for doc in sorted(DOCS.glob("*.md")):
        last: dict[str, Any] | None = None
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)):
            obj = yaml.safe_load(block)
            if set(obj) == {"status"} and last is not None:
                obj = dict(last, status=obj["status"])  # a status example for the object above
            else:
                last = obj
            out.append((f"{doc.name}#{i}", obj))
    return out


def test_every_doc_page_exists() -> None:
    assert {p.stem for p in DOCS.glob("*.md")} >= {
        "ipaddresspool", "l2advertisement", "bgpadvertisement", "bgppeer",
        "service-annotations"}


@pytest.mark.parametrize(("where", "obj"), _doc_blocks(), ids=[w for w, _ in _doc_blocks()])
def test_doc_examples_are_valid(where: str, obj: dict[str, Any]) -> None:
    kind = obj["kind"]
    if kind == "Service":
        assert parse_service(obj, None) is not None
        return
    assert obj["apiVersion"] == "lb.portico.dev/v1alpha1"
    assert api_server_errors(kind, obj) == []
    PARSERS[kind](obj)
