"""MetalLB's configuration -> Portico's, as data (``portico migrate metallb``; pure).

Input: MetalLB's objects as read from the API (dicts): ``metallb.io/v1beta1`` IPAddressPool,
L2Advertisement, BGPAdvertisement, Community, BFDProfile and ``metallb.io/v1beta2`` BGPPeer (the
storage versions of MetalLB v0.15 and v0.16; v0.16's new fields are handled too). Output:
``lb.portico.dev/v1alpha1`` objects, in the order they should be applied (pools first), a
list of what could not be carried over, each naming the MetalLB object and field, and notes
(what the converted objects need from Portico's installation; not losses).

What carries over unchanged: names (Services' ``metallb.io/address-pool`` annotations keep
naming the same pools, and Portico reads that annotation), labels (pool selectors keep
matching), every field that has a Portico twin. What changes shape: Community aliases are
inlined into BGPAdvertisements, a BGPPeer's ``bfdProfile`` becomes its ``spec.bfd`` (the
profile's timers inline, MetalLB's defaults written out), ``large:A:B:C`` becomes
``A:B:C``, ranges lose their spaces, CIDRs with host bits become their network (what MetalLB
used), Go durations become whole seconds, a BGPPeer's ``localASN`` (v0.16: the ASN shown to
that peer) becomes its ``myASN``, ``passwordSecret`` gains the key MetalLB implies
(``password``) and moves to Portico's namespace. Every converted object is checked with
Portico's own parsers; one they refuse is left out and listed.

MetalLB objects outside its namespace are ignored by MetalLB itself; the shell reads only
that namespace. Portico's objects are cluster-scoped.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.api.model import BFD_CHART_VALUE
from common.api.parse import (
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_community,
    parse_l2_advertisement,
    parse_pool,
)
from common.errors import InvalidObject

Obj = dict[str, Any]

API_VERSION = "lb.portico.dev/v1alpha1"
METALLB_V1BETA1 = "metallb.io/v1beta1"
METALLB_V1BETA2 = "metallb.io/v1beta2"
# Where a converted object came from (an annotation: labels are left exactly as they were,
# because ipAddressPoolSelectors select pools by them).
ANN_MIGRATED_FROM = "lb.portico.dev/migrated-from"
# MetalLB reads a BGP password from this key of its (basic-auth) Secret.
METALLB_PASSWORD_KEY = "password"

# BFD: MetalLB's BFDProfile fields that Portico's BGPPeer spec.bfd has under the same name,
# unit (ms) and bounds (MetalLB's and FRR bfdd's), and MetalLB's default for each (FRR's:
# what MetalLB's bfdd runs with when the profile leaves a field out).
BFD_INT_FIELDS: dict[str, tuple[int, int, int]] = {  # field: (minimum, maximum, default)
    "receiveInterval": (10, 60000, 300),
    "transmitInterval": (10, 60000, 300),
    "detectMultiplier": (2, 255, 3),
    "minimumTtl": (1, 254, 254),
}
# Written out even when the profile leaves them to the default (the timers decide how fast a
# dead node is noticed: the converted peer says so itself); minimumTtl and passiveMode only
# when set.
BFD_TIMERS = ("receiveInterval", "transmitInterval", "detectMultiplier")
BFD_FIELDS = (*BFD_INT_FIELDS, "passiveMode", "echoMode", "echoInterval")

# Fields copied as they are (same name, same meaning, same shape).
POOL_FIELDS = ("addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation")
L2_FIELDS = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "interfaces")
BGP_ADV_FIELDS = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors",
                  "aggregationLength", "aggregationLengthV6", "localPref", "peers",
                  "communities")
PEER_FIELDS = ("myASN", "peerASN", "peerAddress", "sourceAddress", "peerPort", "holdTime",
               "keepaliveTime", "routerID", "ebgpMultiHop", "nodeSelectors", "password",
               "passwordSecret", "localASN", "bfdProfile")
# Advertisement fields of MetalLB (v0.16) with no Portico equivalent, and why.
ADV_UNSUPPORTED = {
    "serviceSelectors": "Portico announces every Service of the selected pools; restrict "
                        "which Services use a pool with its serviceAllocation."
                        "serviceSelectors instead",
    "preferredNodeSelectors": "Portico picks the announcing node by a hash over the "
                              "eligible nodes; use nodeSelectors to restrict them",
    "asPathPrepend": "Portico does not prepend to the AS path",
}
# BGPPeer fields of MetalLB with no Portico equivalent, and the value that means "unused".
PEER_UNSUPPORTED: dict[str, object] = {
    "vrf": "", "interface": "", "dynamicASN": "", "connectTime": "",
    "disableMP": False, "dualStackAddressFamily": False, "enableGracefulRestart": False,
}
PEER_WHY = {
    "vrf": "Portico peers only from the node's default VRF",
    "interface": "BGP unnumbered is not supported: set peerAddress",
    "dynamicASN": "Portico needs a numeric peerASN",
    "connectTime": "exabgp retries connections on its own schedule",
    "disableMP": "Portico always negotiates the address family of the peer's address",
    "dualStackAddressFamily": "one session carries one address family in Portico",
    "enableGracefulRestart": "Portico withdraws routes on shutdown instead (graceful "
                             "restart is not negotiated)",
}

_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Loss:
    """Something of MetalLB's configuration that Portico's objects do not carry."""

    kind: str  # MetalLB kind
    name: str
    field: str  # "" for the whole object
    message: str

    def __str__(self) -> str:
        where = f"{self.kind} {self.name}" + (f" {self.field}" if self.field else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class MetalLBConfig:
    """MetalLB's objects of one namespace, as read from the API."""

    namespace: str = "metallb-system"
    pools: Sequence[Mapping[str, Any]] = ()
    l2_advertisements: Sequence[Mapping[str, Any]] = ()
    bgp_advertisements: Sequence[Mapping[str, Any]] = ()
    bgp_peers: Sequence[Mapping[str, Any]] = ()
    communities: Sequence[Mapping[str, Any]] = ()
    bfd_profiles: Sequence[Mapping[str, Any]] = ()


@dataclass(slots=True)
class Conversion:
    objects: list[Obj] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    # What the objects need beyond being applied (e.g. a Helm value); not losses, so
    # --strict ignores them.
    notes: list[str] = field(default_factory=list)


def go_duration_seconds(text: str) -> float | None:
    """A Go ``time.Duration`` string (``90s``, ``1m30s``, ``500ms``) in seconds; None if
    it is not one (Go's own grammar, minus the sign, which a timer never has)."""
    if not text or text == "0":
        return 0.0 if text == "0" else None
    pos, total = 0, 0.0
    for m in _GO_DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def convert_address(entry: object) -> str | None:
    """One MetalLB address entry in Portico's spelling, or None if MetalLB would refuse it
    too. ``a - b`` ranges lose their spaces; CIDRs are masked as ``net.ParseCIDR`` does."""
    if not isinstance(entry, str):
        return None
    text = entry.strip()
    if "-" in text:
        first, _, last = text.partition("-")
        try:
            start = ipaddress.ip_address(first.strip())
            end = ipaddress.ip_address(last.strip())
        except ValueError:
            return None
        if start.version != end.version or int(start) > int(end):
            return None
        return f"{start}-{end}"
    if "/" not in text:
        return None  # net.ParseCIDR needs the prefix length
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def convert_community(text: object, aliases: Mapping[str, str]) -> str | None:
    """A MetalLB community (``A:B``, ``large:A:B:C`` or a Community alias) in Portico's
    spelling (``A:B`` or ``A:B:C``, decimal without leading zeros); None if unknown."""
    if not isinstance(text, str):
        return None
    value = aliases.get(text, text).strip()
    parts = value.split(":")
    if len(parts) == 4 and parts[0] == "large":
        parts = parts[1:]
    elif len(parts) != 2:
        return None
    if not all(p.isdigit() and p.isascii() for p in parts):
        return None
    out = ":".join(str(int(p)) for p in parts)
    return out if not isinstance(parse_community(out), str) else None


class _Converter:
    def __init__(self, config: MetalLBConfig, portico_namespace: str) -> None:
        self.config = config
        self.portico_namespace = portico_namespace
        self.result = Conversion()
        # BFDProfiles by name (names are unique in a namespace) and the spec.bfd each became.
        self.profiles = {str((p.get("metadata") or {}).get("name") or ""): p
                         for p in config.bfd_profiles}
        self.bfd_done: dict[str, Obj] = {}

    def lose(self, kind: str, name: str, field: str, message: str) -> None:
        self.result.losses.append(Loss(kind, name, field, message))

    def _base(self, kind: str, source_version: str, obj: Mapping[str, Any]) -> Obj:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        out_meta: Obj = {"name": name}
        labels = meta.get("labels")
        if isinstance(labels, Mapping) and labels:
            out_meta["labels"] = {str(k): str(v) for k, v in sorted(labels.items())}
        out_meta["annotations"] = {
            ANN_MIGRATED_FROM: f"{source_version} {kind} {self.config.namespace}/{name}"}
        return {"apiVersion": API_VERSION, "kind": kind, "metadata": out_meta, "spec": {}}

    def _unknown_fields(self, kind: str, name: str, spec: Mapping[str, Any],
                        known: Sequence[str]) -> None:
        for key in sorted(set(spec) - set(known)):
            self.lose(kind, name, f"spec.{key}", "is not a field Portico knows; left out")

    def _unsupported_adv_fields(self, kind: str, name: str, spec: Mapping[str, Any]) -> None:
        for key, why in ADV_UNSUPPORTED.items():
            if spec.get(key) not in (None, [], 0):
                self.lose(kind, name, f"spec.{key}", f"left out: {why}")

    def _checked(self, obj: Obj, parse: Any, kind: str) -> None:
        """Keep ``obj`` only if Portico's own parser accepts it."""
        try:
            parse(obj)
        except InvalidObject as e:
            problems = "; ".join(f"{p.field}: {p.message}" for p in e.problems)
            self.lose(kind, obj["metadata"]["name"], "",
                      f"Portico would refuse the converted object ({problems}); left out")
            return
        self.result.objects.append(obj)

    # --- one method per kind -------------------------------------------------------------

    def pool(self, src: Mapping[str, Any]) -> None:
        kind = "IPAddressPool"
        out = self._base(kind, METALLB_V1BETA1, src)
        name = out["metadata"]["name"]
        spec = src.get("spec") or {}
        self._unknown_fields(kind, name, spec, POOL_FIELDS)
        addresses = []
        for i, entry in enumerate(spec.get("addresses") or []):
            converted = convert_address(entry)
            if converted is None:
                self.lose(kind, name, f"spec.addresses[{i}]",
                          f"{entry!r} is not a CIDR or an a-b range; left out")
            else:
                addresses.append(converted)
        out["spec"]["addresses"] = addresses
        for key in POOL_FIELDS[1:]:
            if key in spec:
                out["spec"][key] = spec[key]
        self._checked(out, parse_pool, kind)

    def l2(self, src: Mapping[str, Any]) -> None:
        kind = "L2Advertisement"
        out = self._base(kind, METALLB_V1BETA1, src)
        spec = src.get("spec") or {}
        self._unsupported_adv_fields(kind, out["metadata"]["name"], spec)
        self._unknown_fields(kind, out["metadata"]["name"], spec,
                             L2_FIELDS + tuple(ADV_UNSUPPORTED))
        out["spec"] = {k: spec[k] for k in L2_FIELDS if spec.get(k) not in (None, [])}
        self._checked(out, parse_l2_advertisement, kind)

    def bgp_advertisement(self, src: Mapping[str, Any], aliases: Mapping[str, str]) -> None:
        kind = "BGPAdvertisement"
        out = self._base(kind, METALLB_V1BETA1, src)
        name = out["metadata"]["name"]
        spec = src.get("spec") or {}
        self._unsupported_adv_fields(kind, name, spec)
        self._unknown_fields(kind, name, spec, BGP_ADV_FIELDS + tuple(ADV_UNSUPPORTED))
        for key in BGP_ADV_FIELDS:
            if key != "communities" and spec.get(key) not in (None, []):
                out["spec"][key] = spec[key]
        communities = []
        for i, text in enumerate(spec.get("communities") or []):
            converted = convert_community(text, aliases)
            if converted is None:
                self.lose(kind, name, f"spec.communities[{i}]",
                          f"{text!r} is neither a community nor a Community alias of "
                          f"{self.config.namespace}; left out")
            elif converted not in communities:
                communities.append(converted)
        if communities:
            out["spec"]["communities"] = communities
        self._checked(out, parse_bgp_advertisement, kind)

    def peer(self, src: Mapping[str, Any]) -> None:
        kind = "BGPPeer"
        out = self._base(kind, METALLB_V1BETA2, src)
        name = out["metadata"]["name"]
        spec = src.get("spec") or {}
        self._unknown_fields(kind, name, spec, PEER_FIELDS + tuple(PEER_UNSUPPORTED))
        fatal = False
        for key, unused in PEER_UNSUPPORTED.items():
            value = spec.get(key)
            if value is not None and value != unused:
                self.lose(kind, name, f"spec.{key}", f"{value!r}: {PEER_WHY[key]}")
                fatal = fatal or key in ("interface", "dynamicASN", "vrf")
        for key in ("myASN", "peerASN"):
            if not spec.get(key):
                self.lose(kind, name, f"spec.{key}", "is missing or 0; Portico needs an ASN")
                fatal = True
        if not spec.get("peerAddress"):
            self.lose(kind, name, "spec.peerAddress", "is missing")
            fatal = True
        if fatal:
            self.lose(kind, name, "", "the peer is not converted (see above)")
            return
        profile = spec.get("bfdProfile")
        bfd = None
        if profile not in (None, ""):
            if not isinstance(profile, str) or profile not in self.profiles:
                self.lose(kind, name, "spec.bfdProfile",
                          f"{profile!r} is not a BFDProfile of {self.config.namespace} "
                          "(MetalLB refuses such a configuration); the peer is converted "
                          "without BFD")
            else:
                bfd = self.bfd(profile)
        for key in ("myASN", "peerASN", "peerAddress", "sourceAddress", "peerPort",
                    "routerID", "ebgpMultiHop", "nodeSelectors"):
            if spec.get(key) not in (None, "", []):
                out["spec"][key] = spec[key]
        if spec.get("localASN"):
            # FRR's `local-as ASN no-prepend replace-as`: the peer sees only localASN, which
            # is what a Portico peer's own myASN is.
            out["spec"]["myASN"] = spec["localASN"]
        for key in ("holdTime", "keepaliveTime"):
            text = spec.get(key)
            if text in (None, ""):
                continue
            seconds = go_duration_seconds(str(text))
            if seconds is None or seconds != int(seconds):
                self.lose(kind, name, f"spec.{key}",
                          f"{text!r} is not a whole number of seconds; left at Portico's "
                          "default")
                continue
            out["spec"][key] = f"{int(seconds)}s"
        if spec.get("password"):
            # Never copied into output that is printed: the user moves it into a Secret.
            self.lose(kind, name, "spec.password",
                      "a plain-text password is not carried over: put it in a Secret in "
                      f"namespace {self.portico_namespace} and set spec.passwordSecret")
        secret = spec.get("passwordSecret")
        if isinstance(secret, Mapping) and secret.get("name"):
            source_ns = str(secret.get("namespace") or self.config.namespace)
            out["spec"]["passwordSecret"] = {"name": str(secret["name"]),
                                             "namespace": self.portico_namespace,
                                             "key": METALLB_PASSWORD_KEY}
            if source_ns != self.portico_namespace:
                self.lose(kind, name, "spec.passwordSecret",
                          f"copy Secret {source_ns}/{secret['name']} to namespace "
                          f"{self.portico_namespace} (Portico's speaker reads Secrets only "
                          "there)")
        if bfd is not None:
            out["spec"]["bfd"] = dict(bfd)
        self._checked(out, parse_bgp_peer, kind)

    def bfd(self, profile: str) -> Obj:
        """BFDProfile ``profile`` as a BGPPeer's ``spec.bfd``; its losses are listed once,
        when the first peer names it (a profile no peer uses does nothing in MetalLB)."""
        if profile in self.bfd_done:
            return self.bfd_done[profile]
        kind = "BFDProfile"
        spec = self.profiles[profile].get("spec") or {}
        self._unknown_fields(kind, profile, spec, BFD_FIELDS)
        out: Obj = {}
        for key, (low, high, default) in BFD_INT_FIELDS.items():
            value = spec.get(key)
            if value is None:
                if key in BFD_TIMERS:
                    out[key] = default
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                self.lose(kind, profile, f"spec.{key}",
                          f"{value!r} is not an integer in {low}..{high} (MetalLB refuses "
                          f"it too); left at the default, {default}")
                if key in BFD_TIMERS:
                    out[key] = default
                continue
            out[key] = value
        passive = spec.get("passiveMode")
        if passive is True:
            out["passiveMode"] = True
        elif passive not in (None, False):
            self.lose(kind, profile, "spec.passiveMode",
                      f"{passive!r} is not a boolean; left at the default, false")
        if spec.get("echoMode") not in (None, False):
            self.lose(kind, profile, "spec.echoMode",
                      "Portico's bfdd does not run echo mode; left out: the session detects "
                      "failures with control packets alone (receiveInterval x "
                      "detectMultiplier)")
            if spec.get("echoInterval") is not None:
                # Without echo mode FRR ignores the echo interval: nothing else is lost.
                self.lose(kind, profile, "spec.echoInterval",
                          f"{spec['echoInterval']!r}: left out with echoMode")
        self.bfd_done[profile] = out
        return out

    def aliases(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for obj in self.config.communities:
            name = (obj.get("metadata") or {}).get("name", "")
            for i, entry in enumerate((obj.get("spec") or {}).get("communities") or []):
                if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                    if entry["name"] in out:
                        self.lose("Community", str(name), f"spec.communities[{i}]",
                                  f"alias {entry['name']!r} is defined twice; the first wins")
                        continue
                    out[entry["name"]] = str(entry.get("value") or "")
        return out


def _by_name(objs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(objs, key=lambda o: str((o.get("metadata") or {}).get("name") or ""))


def convert(config: MetalLBConfig, portico_namespace: str = "portico-system") -> Conversion:
    """MetalLB's configuration -> Portico objects (pools, L2Advertisements, BGPPeers,
    BGPAdvertisements; by name within each kind) and the losses, in that order."""
    c = _Converter(config, portico_namespace)
    aliases = c.aliases()
    for obj in _by_name(config.pools):
        c.pool(obj)
    for obj in _by_name(config.l2_advertisements):
        c.l2(obj)
    for obj in _by_name(config.bgp_peers):
        c.peer(obj)
    for obj in _by_name(config.bgp_advertisements):
        c.bgp_advertisement(obj, aliases)
    with_bfd = [o["metadata"]["name"] for o in c.result.objects
                if o["kind"] == "BGPPeer" and "bfd" in o["spec"]]
    if with_bfd:
        c.result.notes.append(
            f"BGPPeer {', '.join(with_bfd)}: spec.bfd works only when Portico's Helm chart is "
            f"installed with --set {BFD_CHART_VALUE} (the speaker's container then gets the "
            "capabilities FRR bfdd needs; without it the session runs without BFD and the "
            "peer gets a BFDUnavailable Event); the router must run BFD on its neighbor "
            "too, as it did for MetalLB")
    return c.result
