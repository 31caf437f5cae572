"""IPAddressPool -> :class:`common.api.model.Pool` (conventions: ``common.api.parse``)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from common.api.model import AddressRange, Pool, ServiceAllocation, family_of
from common.api.parse_common import (
    INT32_MAX,
    MAX_ADDRESS_TEXT,
    MAX_POOL_ADDRESSES,
    Ctx,
    labels_of,
    metadata,
    name_list,
    parse_ip,
    selector_list,
    short,
)

# Prefix lengths are written without leading zeros; the CRD pattern insists too, and
# ``ipaddress`` would otherwise read "/024" as /24 while the API server rejects it.
_PREFIX_LEN = re.compile(r"0|[1-9][0-9]{0,2}")


def parse_address_entry(text: str) -> AddressRange | tuple[str, str]:
    """One ``spec.addresses`` entry: a CIDR or an ``a-b`` range (spaces allowed around '-').

    Returns the range, or (reason, message). Never enumerates: a range is (first, last).
    A CIDR with host bits set is rejected rather than silently widened, because the user
    almost certainly meant something else ("192.0.2.10/24" is rarely a whole /24 on purpose).
    """
    if "-" in text:
        left, _, right = text.partition("-")
        a, b = parse_ip(left.strip(" ")), parse_ip(right.strip(" "))
        if a is None or b is None:
            bad = left if a is None else right
            return "InvalidAddress", (
                f"{short(text)}: {short(bad.strip(' '))} is not an IP address "
                "(write a CIDR like 192.0.2.0/24 or a range like 192.0.2.10-192.0.2.20)"
            )
        if a.version != b.version:
            return "MixedFamilyRange", f"{short(text)} mixes IPv4 and IPv6"
        if int(a) > int(b):
            return "ReversedRange", f"{short(text)}: the first address is after the last one"
        return AddressRange(family_of(a), int(a), int(b), text)
    addr_text, slash, length = text.partition("/")
    if not slash:
        single = parse_ip(text)
        hint = f"for one address write {single}/{single.max_prefixlen}" if single else (
            "write a CIDR like 192.0.2.0/24 or a range like 192.0.2.10-192.0.2.20")
        return "InvalidAddress", f"{short(text)} is neither a CIDR nor a range ({hint})"
    addr = parse_ip(addr_text)
    if addr is None:
        return "InvalidAddress", f"{short(text)}: {short(addr_text)} is not an IP address"
    if not _PREFIX_LEN.fullmatch(length) or int(length) > addr.max_prefixlen:
        return "InvalidAddress", (
            f"{short(text)}: prefix length {short(length)} is not 0..{addr.max_prefixlen}"
        )
    net = ipaddress.ip_network(f"{addr}/{length}", strict=False)
    if net.network_address != addr:
        return "InvalidAddress", (
            f"{short(text)} has host bits set; did you mean {net.with_prefixlen}?"
        )
    return AddressRange(family_of(addr), int(net.network_address),
                        int(net.broadcast_address), text)


def _addresses(ctx: Ctx, spec: Mapping[str, object]) -> tuple[AddressRange, ...]:
    items = ctx.get_list(spec, "addresses", "spec.addresses", MAX_POOL_ADDRESSES,
                         required=True, reason="InvalidAddress")
    if items is None:
        return ()
    if not items:
        ctx.add("spec.addresses", "needs at least one CIDR or range", "MissingField")
    ranges: list[tuple[int, AddressRange]] = []
    for i, item in enumerate(items):
        path = f"spec.addresses[{i}]"
        text = ctx.str_value(item, path, MAX_ADDRESS_TEXT, reason="InvalidAddress")
        if text is None:
            continue
        parsed = parse_address_entry(text)
        if isinstance(parsed, tuple):
            ctx.add(path, parsed[1], parsed[0])
        else:
            ranges.append((i, parsed))
    # Overlaps inside one pool would make its counts wrong (an address counted twice); the
    # check sorts the ranges and compares neighbours, so it costs O(n log n), not O(addresses).
    ordered = sorted(ranges, key=lambda ir: (ir[1].family, ir[1].first, ir[0]))
    reach: tuple[int, AddressRange] | None = None  # the range reaching furthest so far
    for i, r in ordered:
        if reach is not None and reach[1].family == r.family and r.first <= reach[1].last:
            ctx.add(f"spec.addresses[{i}]",
                    f"{short(r.text)} overlaps {short(reach[1].text)} "
                    f"(spec.addresses[{reach[0]}])", "OverlappingRanges")
        if reach is None or reach[1].family != r.family or r.last > reach[1].last:
            reach = (i, r)
    return tuple(r for _, r in ranges)


def _allocation(ctx: Ctx, spec: Mapping[str, object]) -> ServiceAllocation | None:
    raw = ctx.get_map(spec, "serviceAllocation", "spec.serviceAllocation")
    if raw is None:
        return None
    p = "spec.serviceAllocation"
    return ServiceAllocation(
        priority=ctx.get_int(raw, "priority", f"{p}.priority", 0, INT32_MAX,
                             reason="InvalidPriority"),
        namespaces=frozenset(name_list(ctx, raw, "namespaces", f"{p}.namespaces",
                                       "namespace", label=True)),
        namespace_selectors=selector_list(ctx, raw, "namespaceSelectors",
                                          f"{p}.namespaceSelectors"),
        service_selectors=selector_list(ctx, raw, "serviceSelectors", f"{p}.serviceSelectors"),
    )


def parse_pool(obj: object) -> Pool:
    """An IPAddressPool object (dict) -> Pool; raises InvalidObject listing every problem."""
    ctx = Ctx("IPAddressPool", obj)
    name, _, meta = metadata(ctx, obj, namespaced=False)
    spec = ctx.get_map(obj, "spec", "spec", required=True) if isinstance(obj, Mapping) else None
    ranges = _addresses(ctx, spec) if spec is not None else ()
    spec = spec or {}
    auto_assign = ctx.get_bool(spec, "autoAssign", "spec.autoAssign", True)
    avoid_buggy = ctx.get_bool(spec, "avoidBuggyIPs", "spec.avoidBuggyIPs", False)
    allocation = _allocation(ctx, spec)
    labels = labels_of(ctx, meta)
    created = ctx.get_str(meta, "creationTimestamp", "metadata.creationTimestamp", 64) or ""
    ctx.done()
    return Pool(name=name, ranges=ranges, auto_assign=auto_assign,
                avoid_buggy_ips=avoid_buggy, allocation=allocation, labels=labels,
                created=created)
