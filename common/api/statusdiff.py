"""Pure JSON merge-patch (RFC 7386) diff/apply and status-condition helpers.

Used to write only what changed (DESIGN.md habit 5): ``merge_diff(old, new)`` is the smallest
merge patch turning ``old`` into ``new``, or None when they are equal, so callers skip the
API call entirely.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

JSON = Any


def merge_diff(old: Mapping[str, JSON], new: Mapping[str, JSON]) -> dict[str, JSON] | None:
    """Minimal merge patch from ``old`` to ``new`` (None when nothing changed).

    Removed keys become ``null``; nested objects are diffed recursively; lists and scalars
    are replaced whole (merge patch has no list operations). A ``None`` value in ``new``
    means "absent" as in merge patch itself.
    """
    patch: dict[str, JSON] = {}
    for key, old_value in old.items():
        if old_value is not None and new.get(key) is None:
            patch[key] = None
    for key, value in new.items():
        if value is None:
            continue
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_diff(before, value)
            if sub is not None:
                patch[key] = sub
        elif before != value or type(before) is not type(value):
            patch[key] = _strip_nulls(value)
    return patch or None


def _strip_nulls(value: JSON) -> JSON:
    if isinstance(value, Mapping):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def apply_merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7386 application; returns a new value and never mutates its arguments."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, JSON] = (
        copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    )
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def status_patch(old: Mapping[str, JSON], new: Mapping[str, JSON]) -> dict[str, JSON] | None:
    """Merge patch of only the changed fields, None when nothing changed.

    Works at whatever level it is given: pass two whole objects and PATCH the result to the
    ``/status`` subresource, or pass two ``status`` dicts and wrap the result yourself as
    ``{"status": patch}``.
    """
    return merge_diff(old, new)


def format_time(t: datetime | str) -> str:
    if isinstance(t, str):
        return t
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(conditions: Sequence[Mapping[str, JSON]] | None, type: str) -> (
    Mapping[str, JSON] | None
):
    for c in conditions or ():
        if c.get("type") == type:
            return c
    return None


def set_condition(
    conditions: Sequence[Mapping[str, JSON]] | None,
    type: str,
    status: str | bool,
    reason: str,
    message: str,
    now: datetime | str,
    observed_generation: int | None = None,
) -> list[dict[str, JSON]]:
    """A new conditions list with ``type`` set (metav1.Condition shape).

    lastTransitionTime moves only when ``status`` changes, so re-applying the same condition
    yields an identical list and therefore no status patch. Order of other conditions is kept.
    """
    status_s = ("True" if status else "False") if isinstance(status, bool) else status
    if status_s not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True/False/Unknown, not {status_s!r}")
    out: list[dict[str, JSON]] = []
    found = False
    for c in conditions or ():
        if c.get("type") != type:
            out.append(dict(c))
            continue
        found = True
        same = c.get("status") == status_s
        new: dict[str, JSON] = {
            "type": type,
            "status": status_s,
            "reason": reason,
            "message": message,
            "lastTransitionTime": (
                c.get("lastTransitionTime") if same and c.get("lastTransitionTime")
                else format_time(now)
            ),
        }
        if observed_generation is not None:
            new["observedGeneration"] = observed_generation
        out.append(new)
    if not found:
        cond: dict[str, JSON] = {
            "type": type,
            "status": status_s,
            "reason": reason,
            "message": message,
            "lastTransitionTime": format_time(now),
        }
        if observed_generation is not None:
            cond["observedGeneration"] = observed_generation
        out.append(cond)
    return out


def remove_condition(
    conditions: Sequence[Mapping[str, JSON]] | None, type: str
) -> list[dict[str, JSON]]:
    return [dict(c) for c in conditions or () if c.get("type") != type]
