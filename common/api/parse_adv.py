"""L2Advertisement, BGPAdvertisement and BGPPeer -> model values.

See ``common.api.parse`` for the conventions. Durations (``holdTime``, ``keepaliveTime``) are
strings like MetalLB's (``"90s"``, ``"1m30s"``) restricted to whole hours, minutes and seconds,
because BGP timers are whole seconds on the wire (RFC 4271 section 4.2).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from common.api.model import (
    BFDSettings,
    BGPAdvertisement,
    BGPPeer,
    Community,
    L2Advertisement,
    LabelSelector,
    SecretKeyRef,
)
from common.api.parse_common import (
    MAX_COMMUNITIES,
    MAX_INTERFACES,
    UINT16_MAX,
    UINT32_MAX,
    Ctx,
    ip_field,
    metadata,
    name_list,
    selector_list,
    short,
    valid_label_name,
    valid_subdomain,
)

# Linux interface names: at most 15 bytes (IFNAMSIZ 16 with the NUL). We allow a safe subset
# of what the kernel accepts, since the names end up in BPF filters and log lines.
INTERFACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
# Digits without leading zeros: "065000:100" is rejected like the CRD pattern rejects it.
_NUMBER = r"(0|[1-9][0-9]{0,9})"
COMMUNITY = re.compile(rf"{_NUMBER}:{_NUMBER}(:{_NUMBER})?")
# Go-style duration restricted to whole h/m/s (the CRD pattern is the same).
DURATION = re.compile(r"(?:([0-9]{1,5})h)?(?:([0-9]{1,5})m)?(?:([0-9]{1,5})s)?")
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
# RFC 4271 4.2: hold time is 0 (no keepalives) or at least 3 s; it is a 16-bit field.
MIN_HOLD_TIME = 3
MAX_HOLD_TIME = UINT16_MAX
DEFAULT_HOLD_TIME = 90  # MetalLB's and most routers' default


def parse_community(text: str) -> Community | str:
    """``"65000:100"`` (standard, 16-bit halves, RFC 1997) or ``"65000:1:2"`` (large,
    32-bit parts, RFC 8092) -> Community, or an error message."""
    if not COMMUNITY.fullmatch(text):
        return (f"{short(text)} is not a community: write ASN:VALUE (standard, e.g. 65000:100) "
                "or ASN:A:B (large, e.g. 65000:1:2) with decimal numbers")
    parts = tuple(int(p) for p in text.split(":"))
    limit = UINT32_MAX if len(parts) == 3 else UINT16_MAX
    if any(p > limit for p in parts):
        kind = "large" if len(parts) == 3 else "standard"
        return f"{short(text)}: every part of a {kind} community must be 0..{limit}"
    return Community(parts)


def parse_duration(text: str) -> int | None:
    """``"90s"``, ``"1m30s"``, ``"0s"`` -> seconds; None when not of that form."""
    m = DURATION.fullmatch(text)
    if m is None or not text:
        return None
    h, mins, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mins * 60 + s


def _interfaces(ctx: Ctx, spec: Mapping[str, object]) -> tuple[str, ...]:
    items = ctx.get_list(spec, "interfaces", "spec.interfaces", MAX_INTERFACES,
                         reason="InvalidInterface")
    out: list[str] = []
    for path, text in ctx.str_items(items, "spec.interfaces", 15, reason="InvalidInterface"):
        if not INTERFACE_NAME.fullmatch(text):
            ctx.add(path, f"{short(text)} is not an interface name (letters, digits, '_', '.', "
                    "'-', at most 15, starting with a letter or digit)", "InvalidInterface")
        elif text not in out:
            out.append(text)
    return tuple(out)


def _spec(ctx: Ctx, obj: object) -> Mapping[str, object]:
    if not isinstance(obj, Mapping):
        return {}
    # An advertisement with no spec at all is meaningful (every pool, every node).
    return ctx.get_map(obj, "spec", "spec") or {}


def _pool_selection(
    ctx: Ctx, spec: Mapping[str, object]
) -> tuple[tuple[str, ...], tuple[LabelSelector, ...]]:
    """``spec.ipAddressPools`` and ``spec.ipAddressPoolSelectors``, alike in both kinds of
    advertisement (``model.SelectsPools``)."""
    return (
        name_list(ctx, spec, "ipAddressPools", "spec.ipAddressPools", "IPAddressPool"),
        selector_list(ctx, spec, "ipAddressPoolSelectors", "spec.ipAddressPoolSelectors"),
    )


def parse_l2_advertisement(obj: object) -> L2Advertisement:
    ctx = Ctx("L2Advertisement", obj)
    name, _, _ = metadata(ctx, obj, namespaced=False)
    spec = _spec(ctx, obj)
    pools, pool_selectors = _pool_selection(ctx, spec)
    adv = L2Advertisement(
        name=name,
        ip_address_pools=pools,
        ip_address_pool_selectors=pool_selectors,
        node_selectors=selector_list(ctx, spec, "nodeSelectors", "spec.nodeSelectors"),
        interfaces=_interfaces(ctx, spec),
    )
    ctx.done()
    return adv


def _communities(ctx: Ctx, spec: Mapping[str, object]) -> tuple[Community, ...]:
    items = ctx.get_list(spec, "communities", "spec.communities", MAX_COMMUNITIES,
                         reason="InvalidCommunity")
    out: list[Community] = []
    for path, text in ctx.str_items(items, "spec.communities", 32, reason="InvalidCommunity"):
        parsed = parse_community(text)
        if isinstance(parsed, str):
            ctx.add(path, parsed, "InvalidCommunity")
        elif parsed not in out:
            out.append(parsed)
    return tuple(out)


def parse_bgp_advertisement(obj: object) -> BGPAdvertisement:
    ctx = Ctx("BGPAdvertisement", obj)
    name, _, _ = metadata(ctx, obj, namespaced=False)
    spec = _spec(ctx, obj)
    agg4 = ctx.get_int(spec, "aggregationLength", "spec.aggregationLength", 0, 32,
                       reason="InvalidAggregationLength")
    agg6 = ctx.get_int(spec, "aggregationLengthV6", "spec.aggregationLengthV6", 0, 128,
                       reason="InvalidAggregationLength")
    pools, pool_selectors = _pool_selection(ctx, spec)
    adv = BGPAdvertisement(
        name=name,
        ip_address_pools=pools,
        ip_address_pool_selectors=pool_selectors,
        aggregation_length=32 if agg4 is None else agg4,
        aggregation_length_v6=128 if agg6 is None else agg6,
        local_pref=ctx.get_int(spec, "localPref", "spec.localPref", 0, UINT32_MAX,
                               reason="InvalidLocalPref"),
        communities=_communities(ctx, spec),
        peers=name_list(ctx, spec, "peers", "spec.peers", "BGPPeer"),
        node_selectors=selector_list(ctx, spec, "nodeSelectors", "spec.nodeSelectors"),
    )
    ctx.done()
    return adv


def _duration(ctx: Ctx, spec: Mapping[str, object], key: str, reason: str) -> int | None:
    path = f"spec.{key}"
    text = ctx.get_str(spec, key, path, 20, reason=reason)
    if text is None:
        if key in spec and spec[key] is not None:
            return -1  # wrong type, already reported
        return None
    seconds = parse_duration(text)
    if seconds is None:
        ctx.add(path, f"{short(text)} is not a duration; write whole seconds, minutes or hours "
                "like \"90s\" or \"1m30s\"", reason)
        return -1
    return seconds


def _secret_ref(ctx: Ctx, spec: Mapping[str, object]) -> SecretKeyRef | None:
    p = "spec.passwordSecret"
    raw = ctx.get_map(spec, "passwordSecret", p, reason="InvalidPasswordSecret")
    if raw is None:
        return None
    reason = "InvalidPasswordSecret"
    before = len(ctx.problems)
    name = ctx.get_str(raw, "name", f"{p}.name", 253, required=True, reason=reason)
    if name is not None and not valid_subdomain(name):
        ctx.add(f"{p}.name", f"{short(name)} is not a valid Secret name", reason)
    # Optional: the Secret must live in the namespace Portico runs in, which this object
    # cannot know (BGPPeer is cluster-scoped, the CRD is not templated). Omitted means that
    # namespace; another one is checked by the speaker, which knows its own namespace, and
    # reported there (PasswordSecretNamespace) instead of being read.
    namespace = ctx.get_str(raw, "namespace", f"{p}.namespace", 63, reason=reason)
    if namespace is not None and not valid_label_name(namespace):
        ctx.add(f"{p}.namespace", f"{short(namespace)} is not a valid namespace name", reason)
    key = ctx.get_str(raw, "key", f"{p}.key", 253, reason=reason)
    if key is not None and not SECRET_KEY.fullmatch(key):
        ctx.add(f"{p}.key", f"{short(key)} is not a valid Secret key", reason)
    if len(ctx.problems) > before or name is None:
        return None
    return SecretKeyRef(namespace=namespace, name=name, key=key or "password")


def parse_bgp_peer(obj: object) -> BGPPeer:
    ctx = Ctx("BGPPeer", obj)
    name, _, _ = metadata(ctx, obj, namespaced=False)
    spec = ctx.get_map(obj, "spec", "spec", required=True) if isinstance(obj, Mapping) else None
    if spec is None:
        ctx.fail()  # without a spec every required field would be reported again
    my_asn = ctx.get_int(spec, "myASN", "spec.myASN", 1, UINT32_MAX, reason="InvalidASN",
                         required=True)
    peer_asn = ctx.get_int(spec, "peerASN", "spec.peerASN", 1, UINT32_MAX, reason="InvalidASN",
                           required=True)
    peer = ip_field(ctx, spec, "peerAddress", "spec.peerAddress", required=True)
    source = ip_field(ctx, spec, "sourceAddress", "spec.sourceAddress")
    if peer is not None and source is not None and peer.version != source.version:
        ctx.add("spec.sourceAddress", f"{source} and peerAddress {peer} are of different "
                "IP families", "InvalidAddress")
    port = ctx.get_int(spec, "peerPort", "spec.peerPort", 1, UINT16_MAX, reason="InvalidPort")

    hold = _duration(ctx, spec, "holdTime", "InvalidHoldTime")
    if hold is not None and hold >= 0 and hold != 0 and not (
        MIN_HOLD_TIME <= hold <= MAX_HOLD_TIME
    ):
        ctx.add("spec.holdTime", f"{hold}s is not allowed: hold time is 0 (no keepalives) or "
                f"{MIN_HOLD_TIME}..{MAX_HOLD_TIME} seconds (RFC 4271)", "InvalidHoldTime")
        hold = -1
    keepalive = _duration(ctx, spec, "keepaliveTime", "InvalidKeepaliveTime")
    effective_hold = DEFAULT_HOLD_TIME if hold is None else hold
    if keepalive is not None and keepalive >= 0 and effective_hold >= 0:
        if effective_hold == 0 and keepalive != 0:
            ctx.add("spec.keepaliveTime", "must be unset or 0s when holdTime is 0s (a hold time "
                    "of 0 disables keepalives)", "InvalidKeepaliveTime")
        elif effective_hold > 0 and not 0 < keepalive < effective_hold:
            ctx.add("spec.keepaliveTime", f"{keepalive}s must be more than 0s and less than the "
                    f"hold time ({effective_hold}s)", "InvalidKeepaliveTime")

    router_id: ipaddress.IPv4Address | None = None
    rid = ip_field(ctx, spec, "routerID", "spec.routerID", reason="InvalidRouterID")
    if rid is not None:
        if isinstance(rid, ipaddress.IPv4Address) and int(rid) != 0:
            router_id = rid
        else:
            ctx.add("spec.routerID", f"{rid} is not a router ID (a non-zero IPv4 address, "
                    "RFC 6286)", "InvalidRouterID")
    secret = _secret_ref(ctx, spec)
    multihop = ctx.get_bool(spec, "ebgpMultiHop", "spec.ebgpMultiHop", False)
    selectors = selector_list(ctx, spec, "nodeSelectors", "spec.nodeSelectors")
    bfd = _bfd(ctx, spec)
    ctx.done()
    assert my_asn is not None and peer_asn is not None and peer is not None  # else done() raised
    return BGPPeer(
        name=name, my_asn=my_asn, peer_asn=peer_asn, peer_address=peer,
        source_address=source, peer_port=179 if port is None else port,
        hold_time=effective_hold,
        keepalive_time=keepalive if keepalive is not None and keepalive >= 0 else None,
        router_id=router_id, password_secret=secret, ebgp_multihop=multihop,
        node_selectors=selectors, bfd=bfd,
    )


# BFD timer bounds: MetalLB's BFDProfile (and FRR bfdd's own limits) — 10 ms .. 60 s, a
# detect multiplier of 2..255; minimumTtl 1..254 (only for multi-hop sessions).
BFD_MIN_INTERVAL_MS, BFD_MAX_INTERVAL_MS = 10, 60000


def _bfd(ctx: Ctx, spec: Mapping[str, object]) -> BFDSettings | None:
    """``spec.bfd``: absent = off; ``{}`` = on with the defaults (300 ms x 3, as MetalLB)."""
    m = ctx.get_map(spec, "bfd", "spec.bfd")
    if m is None:
        return None
    d = BFDSettings()
    rx = ctx.get_int(m, "receiveInterval", "spec.bfd.receiveInterval", BFD_MIN_INTERVAL_MS,
                     BFD_MAX_INTERVAL_MS, reason="InvalidBFD")
    tx = ctx.get_int(m, "transmitInterval", "spec.bfd.transmitInterval", BFD_MIN_INTERVAL_MS,
                     BFD_MAX_INTERVAL_MS, reason="InvalidBFD")
    mult = ctx.get_int(m, "detectMultiplier", "spec.bfd.detectMultiplier", 2, 255,
                       reason="InvalidBFD")
    ttl = ctx.get_int(m, "minimumTtl", "spec.bfd.minimumTtl", 1, 254, reason="InvalidBFD")
    passive = ctx.get_bool(m, "passiveMode", "spec.bfd.passiveMode", False)
    return BFDSettings(
        receive_interval=d.receive_interval if rx is None else rx,
        transmit_interval=d.transmit_interval if tx is None else tx,
        detect_multiplier=d.detect_multiplier if mult is None else mult,
        passive_mode=passive, minimum_ttl=d.minimum_ttl if ttl is None else ttl)
