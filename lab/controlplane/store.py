"""Test-setup access to a real API server with the emulator store's call shapes.

Tests and the lab were written against ``lab.emulator``'s store (``create``, ``get``,
``list``, ``update``, ``patch``, ``delete``); ``ApiStore`` gives the same calls over a real
kube-apiserver with admin credentials, so a test body runs unchanged on either. Where the
real server differs, it wins: ``create`` and ``update`` write ``.status`` through the status
subresource in a second request (the server ignores it on the main resource), and
``update`` overwrites whatever version is current unless asked to check it (test setup,
not a controller; custom resources refuse a PUT without a resourceVersion, so it reads the
current one first).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from common.errors import Conflict, NotFound
from common.kube.client import KubeClient
from common.kube.resources import Resource

Obj = dict[str, Any]


class ApiStore:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    @staticmethod
    def _ns(res: Resource, obj: Obj, namespace: str | None) -> str | None:
        if not res.namespaced:
            return None
        return namespace or (obj.get("metadata") or {}).get("namespace") or "default"

    def create(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        ns = self._ns(res, obj, namespace)
        body = copy.deepcopy(obj)
        status = body.pop("status", None) if res.status_subresource else None
        created = self.client.create(res, body, ns)
        if status:
            created = self.client.patch(res, created["metadata"]["name"], {"status": status},
                                        ns, subresource="status")
        return created

    def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self.client.get(res, name, namespace if res.namespaced else None)
        except NotFound:
            return None

    def list(self, res: Resource, namespace: str | None = None) -> list[Obj]:
        return self.client.list(res, namespace)[0]

    def update(self, res: Resource, obj: Obj, *, check_rv: bool = False,
               status: bool = False) -> Obj:
        """PUT the object (spec, metadata); with ``status=True`` also its status."""
        body = copy.deepcopy(obj)
        meta = body.setdefault("metadata", {})
        ns = self._ns(res, body, None)
        new_status = body.pop("status", None) if res.status_subresource else None
        if check_rv:
            out = self.client.replace(res, meta["name"], body, ns)
        else:
            out = self._last_writer_wins(res, body, ns)
        if status and new_status is not None:
            out = self.client.patch(res, meta["name"], {"status": new_status}, ns,
                                    subresource="status")
        return out

    def _last_writer_wins(self, res: Resource, body: Obj, ns: str | None) -> Obj:
        # Custom resources refuse a PUT without metadata.resourceVersion (core kinds allow
        # it): take the current version, and again if a controller wrote in between.
        name = body["metadata"]["name"]
        for _ in range(10):
            current = self.client.get(res, name, ns)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return self.client.replace(res, name, body, ns)
            except Conflict:
                continue
        raise Conflict(f"{res} {name}: still conflicting after 10 attempts", 409)

    def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None) -> Obj:
        """Merge patch; a ``status`` key goes to the status subresource."""
        ns = namespace if res.namespaced else None
        if res.namespaced and ns is None:
            ns = "default"
        body = dict(patch)
        status = body.pop("status", None) if res.status_subresource else None
        out: Obj = {}
        if body:
            out = self.client.patch(res, name, body, ns)
        if status is not None:
            out = self.client.patch(res, name, {"status": status}, ns, subresource="status")
        return out

    def delete(self, res: Resource, name: str, namespace: str | None = None) -> None:
        with contextlib.suppress(NotFound):
            self.client.delete(res, name, namespace if res.namespaced else None)
