"""What the controller writes into Service and IPAddressPool status, computed purely.

The controller shell diffs the result against the object it read and patches only what
changed (``common.api.statusdiff``), so calling these on every reconcile is free when nothing
moved. Conditions use metav1.Condition; our Service condition type is domain-prefixed so it
never collides with conditions written by other controllers on the same Service.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.api.model import (
    IPV4,
    IPV6,
    REASON_CONFLICTING_ANNOTATIONS,
    FieldProblem,
    IPAddress,
)
from common.api.statusdiff import find_condition, remove_condition, set_condition
from lb.core.allocator import Allocation, Pending, PoolStats

# Service condition: True with reason IPAllocated, or False with the allocator's reason
# (PoolExhausted, AddressInUse, ...) or the parser's (InvalidAnnotation, ...).
SERVICE_CONDITION = "lb.portico.dev/AddressAllocated"
REASON_ALLOCATED = "IPAllocated"
# Present (True) only while spellings of one annotation disagree (Portico's and MetalLB's,
# see common.api.model.annotation_spellings); removed once they agree or only one is left.
ANNOTATION_CONFLICT_CONDITION = "lb.portico.dev/AnnotationConflict"

# Pool conditions.
POOL_READY = "Ready"
POOL_CONFLICTING = "Conflicting"
POOL_VALID = "Valid"

# metav1.Condition.message is limited to 32768 bytes; Events are far smaller in practice and
# a condition that lists dozens of problems is unreadable anyway.
MAX_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one Service reconcile, as the user will read it."""

    ips: tuple[IPAddress, ...] | None  # None: leave status addresses as they are
    allocated: bool
    reason: str
    message: str


def verdict_for(result: Allocation | Pending) -> Verdict:
    if isinstance(result, Allocation):
        addrs = ", ".join(str(ip) for ip in result.ips)
        return Verdict(result.ips, True, REASON_ALLOCATED,
                       f"assigned {addrs} from pool {result.pool}")
    return Verdict((), False, result.reason, result.message)


def verdict_for_problems(problems: Sequence[FieldProblem], held: Allocation | None) -> Verdict:
    """An invalid Service keeps what it holds (nothing is lost because of one bad edit)."""
    text = "; ".join(f"{p.field}: {p.message}" for p in problems)
    if held is not None:
        text += f" (keeping {', '.join(str(ip) for ip in held.ips)} until the spec is fixed)"
    reason = problems[0].reason if problems else "InvalidSpec"
    return Verdict(None, held is not None, reason, clip(text))


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ingress(ips: Sequence[IPAddress], current: Sequence[Mapping[str, Any]]) -> list[Any]:
    """status.loadBalancer.ingress for ``ips``; keeps existing entries (and their extra
    fields such as ipMode or ports) when the addresses are the same, so no needless patch."""
    if [e.get("ip") for e in current] == [str(ip) for ip in ips]:
        return [dict(e) for e in current]
    return [{"ip": str(ip)} for ip in ips]


def service_status(status: Mapping[str, Any] | None, verdict: Verdict,
                   now: datetime | str) -> dict[str, Any]:
    new: dict[str, Any] = copy.deepcopy(dict(status or {}))
    if verdict.ips is not None:
        lb = dict(new.get("loadBalancer") or {})
        lb["ingress"] = _ingress(verdict.ips, lb.get("ingress") or [])
        if not lb["ingress"]:
            lb.pop("ingress")
        new["loadBalancer"] = lb
    new["conditions"] = set_condition(
        new.get("conditions"), SERVICE_CONDITION, verdict.allocated, verdict.reason,
        clip(verdict.message), now,
    )
    return new


def annotation_conflict_status(status: Mapping[str, Any], conflicts: Sequence[str],
                               now: datetime | str) -> dict[str, Any]:
    """``status`` with the annotation-conflict condition set (conflicts) or removed (none)."""
    new: dict[str, Any] = dict(status)
    if conflicts:
        new["conditions"] = set_condition(
            new.get("conditions"), ANNOTATION_CONFLICT_CONDITION, True,
            REASON_CONFLICTING_ANNOTATIONS, clip("; ".join(conflicts)), now)
    elif find_condition(new.get("conditions"), ANNOTATION_CONFLICT_CONDITION) is not None:
        new["conditions"] = remove_condition(new.get("conditions"),
                                             ANNOTATION_CONFLICT_CONDITION)
    return new


def new_annotation_conflict(old: Mapping[str, Any] | None,
                            new: Mapping[str, Any]) -> str | None:
    """The conflict message to announce (Warning Event) when ``new`` shows a conflict that
    ``old`` did not show in the same words; None otherwise (no Event on every resync)."""
    after = find_condition(new.get("conditions"), ANNOTATION_CONFLICT_CONDITION)
    if after is None:
        return None
    before = find_condition((old or {}).get("conditions"), ANNOTATION_CONFLICT_CONDITION)
    if before is not None and before.get("message") == after.get("message"):
        return None
    return str(after.get("message"))


def released_service_status(status: Mapping[str, Any] | None,
                            ours: Sequence[IPAddress]) -> dict[str, Any]:
    """A Service that stopped being ours: drop the addresses we gave it and our condition,
    leave anything another controller wrote."""
    new: dict[str, Any] = copy.deepcopy(dict(status or {}))
    mine = {str(ip) for ip in ours}
    lb = dict(new.get("loadBalancer") or {})
    kept = [e for e in lb.get("ingress") or [] if e.get("ip") not in mine]
    if kept:
        lb["ingress"] = kept
    else:
        lb.pop("ingress", None)
    new["loadBalancer"] = lb
    conditions = remove_condition(
        remove_condition(new.get("conditions"), SERVICE_CONDITION),
        ANNOTATION_CONFLICT_CONDITION)
    if conditions:
        new["conditions"] = conditions
    else:
        new.pop("conditions", None)
    return new


def pool_status(status: Mapping[str, Any] | None, stats: PoolStats | None,
                pool_problems: Sequence[FieldProblem],
                parse_problems: Sequence[FieldProblem], serving_last_good: bool,
                now: datetime | str) -> dict[str, Any]:
    """Counts per family (decimal strings: a /64 exceeds int64) and conditions.

    ``stats`` is None when the pool has never had a valid spec (nothing is served from it).
    ``serving_last_good``: the current spec is invalid and the last valid one stays in force,
    so that one typo never releases the addresses a pool has handed out.
    """
    new: dict[str, Any] = copy.deepcopy(dict(status or {}))
    for family, key in ((IPV4, "ipv4"), (IPV6, "ipv6")):
        fam = stats.families.get(family) if stats else None
        if fam is None:
            new.pop(key, None)
        else:
            new[key] = {"total": str(fam.total), "assigned": str(fam.assigned),
                        "available": str(fam.available)}
    conds = new.get("conditions")
    if parse_problems:
        text = "; ".join(f"{p.field}: {p.message}" for p in parse_problems)
        if serving_last_good:
            text += " (the last valid spec stays in force)"
        conds = set_condition(conds, POOL_VALID, False, parse_problems[0].reason, clip(text), now)
    else:
        conds = set_condition(conds, POOL_VALID, True, "Valid", "spec is valid", now)
    overlap = [p for p in pool_problems if p.reason != "InvalidRange"]
    if stats is not None and stats.conflicting:
        text = "; ".join(p.message for p in overlap) or (
            f"overlaps pool {stats.conflicts_with}")
        conds = set_condition(conds, POOL_CONFLICTING, True, "PoolOverlap", clip(text), now)
    else:
        conds = set_condition(conds, POOL_CONFLICTING, False, "NoOverlap",
                              "no overlap with other pools", now)
    ready = stats is not None and not stats.conflicting
    if ready:
        conds = set_condition(conds, POOL_READY, True, "PoolReady", "pool serves addresses", now)
    elif stats is None:
        conds = set_condition(conds, POOL_READY, False, "InvalidSpec",
                              "no valid spec: the pool serves no addresses", now)
    else:
        conds = set_condition(conds, POOL_READY, False, "PoolOverlap",
                              "overlaps an older pool: no new addresses are given from it; "
                              "addresses already held stay", now)
    new["conditions"] = conds
    return new
