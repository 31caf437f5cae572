"""Status writes that send only what changed, and only when something changed."""

from __future__ import annotations

from typing import Any

from common.api.statusdiff import (
    apply_merge_patch,
    find_condition,
    merge_diff,
    remove_condition,
    set_condition,
    status_patch,
)
from common.kube.client import KubeClient
from common.kube.resources import Resource

__all__ = [
    "apply_merge_patch", "find_condition", "merge_diff", "remove_condition",
    "set_condition", "status_patch", "write_status",
]


def write_status(
    client: KubeClient,
    res: Resource,
    obj: dict[str, Any],
    new_status: dict[str, Any],
) -> dict[str, Any] | None:
    """PATCH ``/status`` with the diff between ``obj['status']`` and ``new_status``.

    Returns the updated object, or None when nothing changed (no request is made). A merge
    patch without a resourceVersion does not conflict with concurrent writers of *other*
    fields; the informer brings the next change. Raises common.errors.KubeError subclasses.
    """
    diff = merge_diff(obj.get("status") or {}, new_status)
    if diff is None:
        return None
    meta = obj.get("metadata") or {}
    subresource = "status" if res.status_subresource else None
    return client.patch(
        res, str(meta.get("name")), {"status": diff},
        namespace=meta.get("namespace"), subresource=subresource,
    )
