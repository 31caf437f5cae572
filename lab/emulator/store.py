"""The emulator's object store: resourceVersions, history for watches, watcher fan-out.

Stored objects are never mutated after insertion (every write builds a new dict), so history
entries and watcher queues can share them; callers outside get deep copies.

Costs: a write is O(watchers of that resource); a watch from resourceVersion N bisects the
resource's history (O(log n)) and replays only the newer events; nothing rescans the log.
"""

from __future__ import annotations

import bisect
import builtins
import copy
import queue
import random
import string
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.kube.resources import Resource

from .kinds import served
from .selectors import Pred

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)

# Per-resource retained watch history; older resourceVersions get 410 Gone (the real API
# server keeps roughly 5 minutes of etcd history by default).
DEFAULT_HISTORY = 10_000


class ApiError(Exception):
    """An API-level failure, rendered by the server as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass
class WatchEvent:
    rv: int
    type: str
    obj: Obj
    old: Obj | None = None


# Sentinels a watcher's queue can carry besides WatchEvents.
DROP_CLEAN = "drop-clean"
DROP_ABRUPT = "drop-abrupt"


@dataclass(eq=False)
class Watcher:
    res: Resource
    match: Pred
    q: queue.Queue[WatchEvent | str] = field(default_factory=queue.Queue)


@dataclass
class _Kind:
    res: Resource
    objects: dict[Key, Obj] = field(default_factory=dict)
    history: list[WatchEvent] = field(default_factory=list)
    history_rvs: list[int] = field(default_factory=list)
    compacted_rv: int = 0  # events with rv <= this are gone
    watchers: set[Watcher] = field(default_factory=set)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _suffix() -> str:
    # Kubernetes' generateName suffix: 5 characters from a consonant-digit alphabet.
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))


_NAME_CHARS = set(string.ascii_lowercase + string.digits + "-.")


class Store:
    def __init__(
        self, resources: Iterable[Resource] | None = None, history_limit: int = DEFAULT_HISTORY
    ) -> None:
        self.lock = threading.RLock()
        # Start above 0: "0" in a watch means "any version, send the current state first", so
        # a real server never hands out 0 and an empty list must not return it either.
        self._rv = 1
        self._kinds: dict[Resource, _Kind] = {}
        self.history_limit = history_limit
        for r in served() if resources is None else resources:
            self.register(r)

    # ----- registry -----------------------------------------------------------------------

    def register(self, res: Resource) -> None:
        with self.lock:
            self._kinds.setdefault(res, _Kind(res))

    @property
    def resources(self) -> list[Resource]:
        return list(self._kinds)

    def _kind(self, res: Resource) -> _Kind:
        try:
            return self._kinds[res]
        except KeyError:
            raise ApiError(404, "NotFound", f"the server could not find resource {res}") from None

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    # ----- internals ----------------------------------------------------------------------

    def _key(self, res: Resource, namespace: str | None, name: str) -> Key:
        return ((namespace or "") if res.namespaced else "", name)

    def _record(self, kind: _Kind, ev: WatchEvent) -> None:
        kind.history.append(ev)
        kind.history_rvs.append(ev.rv)
        # Trim in batches so the list slicing cost is amortised O(1) per write.
        if len(kind.history) > 2 * self.history_limit:
            drop = len(kind.history) - self.history_limit
            kind.compacted_rv = kind.history_rvs[drop - 1]
            del kind.history[:drop]
            del kind.history_rvs[:drop]
        for w in kind.watchers:
            w.q.put(ev)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    # ----- writes (HTTP semantics selected by flags) -------------------------------------

    def create(
        self, res: Resource, obj: Obj, namespace: str | None = None, *, keep_status: bool = True
    ) -> Obj:
        """Create; ``keep_status=False`` drops .status like the API server does on POST."""
        with self.lock:
            kind = self._kind(res)
            new = copy.deepcopy(obj)
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise ApiError(400, "BadRequest", "metadata must be an object")
            if res.namespaced:
                ns = namespace or meta.get("namespace")
                if not ns:
                    raise ApiError(400, "BadRequest", "a namespace is required")
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise ApiError(
                        400, "BadRequest",
                        "the namespace of the provided object does not match the namespace "
                        "sent on the request",
                    )
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            if not meta.get("name"):
                gen = meta.get("generateName")
                if not gen:
                    raise ApiError(
                        422, "Invalid", "metadata.name: Required value: name or generateName "
                        "is required",
                    )
                for _ in range(10):
                    meta["name"] = f"{gen}{_suffix()}"
                    if self._key(res, meta.get("namespace"), meta["name"]) not in kind.objects:
                        break
            name = str(meta["name"])
            if not set(name) <= _NAME_CHARS or len(name) > 253:
                raise ApiError(422, "Invalid", f"metadata.name: Invalid value: {name!r}")
            key = self._key(res, meta.get("namespace"), name)
            if key in kind.objects:
                raise ApiError(
                    409, "AlreadyExists", f'{res} "{name}" already exists'
                )
            if res.status_subresource and not keep_status:
                new.pop("status", None)
            new["apiVersion"], new["kind"] = res.api_version, res.kind
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            meta.pop("deletionTimestamp", None)
            meta["resourceVersion"] = str(self._next_rv())
            kind.objects[key] = new
            self._record(kind, WatchEvent(self._rv, "ADDED", new))
            return copy.deepcopy(new)

    def _replace(
        self, res: Resource, key: Key, body: Obj, mode: str, check_rv: bool
    ) -> Obj:
        """mode: 'main' (status kept from the old object when the kind has a status
        subresource), 'status' (only .status taken from body), 'direct' (everything)."""
        kind = self._kind(res)
        old = kind.objects.get(key)
        if old is None:
            raise ApiError(404, "NotFound", f'{res} "{key[1]}" not found')
        bmeta = body.get("metadata") or {}
        brv = bmeta.get("resourceVersion")
        if check_rv and brv and str(brv) != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {res} "{key[1]}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        if mode == "status":
            new = copy.deepcopy(old)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(body)
            meta = new.setdefault("metadata", {})
            # Identity and system fields are owned by the server.
            for f in ("uid", "creationTimestamp", "name", "namespace", "generation",
                      "deletionTimestamp"):
                if f in old["metadata"]:
                    meta[f] = old["metadata"][f]
                else:
                    meta.pop(f, None)
            if mode == "main" and res.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            new["apiVersion"], new["kind"] = res.api_version, res.kind
            spec_old = {k: v for k, v in old.items() if k not in ("metadata", "status")}
            spec_new = {k: v for k, v in new.items() if k not in ("metadata", "status")}
            if spec_old != spec_new:
                meta["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)  # a no-op write: no new resourceVersion, no event
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            meta["resourceVersion"] = str(self._next_rv())
            del kind.objects[key]
            self._record(kind, WatchEvent(self._rv, "DELETED", new, old))
            return copy.deepcopy(new)
        meta["resourceVersion"] = str(self._next_rv())
        kind.objects[key] = new
        self._record(kind, WatchEvent(self._rv, "MODIFIED", new, old))
        return copy.deepcopy(new)

    def replace(
        self, res: Resource, name: str, body: Obj, namespace: str | None = None,
        *, mode: str = "direct", check_rv: bool = True,
    ) -> Obj:
        with self.lock:
            return self._replace(res, self._key(res, namespace, name), body, mode, check_rv)

    def update(self, res: Resource, obj: Obj, *, check_rv: bool = False) -> Obj:
        """Direct-access replace (status included); for test setup."""
        meta = obj.get("metadata") or {}
        return self.replace(
            res, meta["name"], obj, meta.get("namespace"), mode="direct", check_rv=check_rv
        )

    def patch(
        self, res: Resource, name: str, patch: Any, namespace: str | None = None,
        *, mode: str = "direct", patch_type: str = "merge",
    ) -> Obj:
        with self.lock:
            key = self._key(res, namespace, name)
            old = self._kind(res).objects.get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{res} "{name}" not found')
            if patch_type == "json":
                body = _json_patch(old, patch)
            else:
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
                body = merge_patch(old, patch)
            # A patch carrying metadata.resourceVersion is a precondition (optimistic lock).
            check = isinstance(patch, dict) and bool(
                (patch.get("metadata") or {}).get("resourceVersion")
            )
            return self._replace(res, key, body, mode, check)

    def delete(
        self, res: Resource, name: str, namespace: str | None = None,
        resource_version: str | None = None,
    ) -> Obj | None:
        with self.lock:
            kind = self._kind(res)
            key = self._key(res, namespace, name)
            old = kind.objects.get(key)
            if old is None:
                return None
            if resource_version and resource_version != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'{res} "{name}": precondition failed')
            if old["metadata"].get("finalizers"):
                if old["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(old)
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["resourceVersion"] = str(self._next_rv())
                kind.objects[key] = new
                self._record(kind, WatchEvent(self._rv, "MODIFIED", new, old))
                return copy.deepcopy(new)
            new = copy.deepcopy(old)
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            del kind.objects[key]
            self._record(kind, WatchEvent(self._rv, "DELETED", new, old))
            return copy.deepcopy(new)

    # ----- reads --------------------------------------------------------------------------

    def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj | None:
        with self.lock:
            obj = self._kind(res).objects.get(self._key(res, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, res: Resource, namespace: str | None = None, match: Pred | None = None
    ) -> builtins.list[Obj]:
        return self.list_with_rv(res, namespace, match)[0]

    def list_with_rv(
        self, res: Resource, namespace: str | None = None, match: Pred | None = None,
        offset: int = 0, limit: int = 0,
    ) -> tuple[builtins.list[Obj], int]:
        """Matching objects in key order (``offset``/``limit``: one page of them). Only the
        page is copied: copying all 10,000 objects for every 500-item page made paged lists
        quadratic."""
        return self.list_page(res, namespace, match, offset, limit)[:2]

    def list_page(
        self, res: Resource, namespace: str | None = None, match: Pred | None = None,
        offset: int = 0, limit: int = 0,
    ) -> tuple[builtins.list[Obj], int, int]:
        """(page, resourceVersion, number of matching objects)."""
        with self.lock:
            objs = [
                o for k, o in sorted(self._kind(res).objects.items())
                if (not namespace or k[0] == namespace) and (match is None or match(o))
            ]
            page = objs[offset:offset + limit] if limit > 0 else objs[offset:]
            return copy.deepcopy(page), self._rv, len(objs)

    # ----- watch --------------------------------------------------------------------------

    def subscribe(
        self, res: Resource, since: int | None, match: Pred
    ) -> tuple[Watcher, builtins.list[WatchEvent]]:
        """Register a watcher and return the events it must replay first.

        ``since=None`` (resourceVersion "" or "0"): synthetic ADDED for every current object.
        Raises ApiError(410) when ``since`` is older than the retained history.
        """
        with self.lock:
            kind = self._kind(res)
            if since is None:
                replay = [
                    WatchEvent(int(o["metadata"]["resourceVersion"]), "ADDED", o)
                    for _, o in sorted(kind.objects.items())
                ]
            else:
                if since < kind.compacted_rv:
                    raise ApiError(
                        410, "Expired",
                        f"too old resource version: {since} ({kind.compacted_rv})",
                    )
                start = bisect.bisect_right(kind.history_rvs, since)
                replay = kind.history[start:]
            w = Watcher(res, match)
            kind.watchers.add(w)
            return w, replay

    def compacted_rv(self, res: Resource) -> int:
        with self.lock:
            return self._kind(res).compacted_rv

    def unsubscribe(self, w: Watcher) -> None:
        with self.lock:
            self._kind(w.res).watchers.discard(w)

    def bookmark_rv(self, w: Watcher) -> int | None:
        """The current resourceVersion if every event up to it is already in ``w``'s queue
        or sent (a bookmark must never skip an undelivered event)."""
        with self.lock:
            return self._rv if w.q.empty() else None

    def drop_watches(self, abrupt: bool = False) -> int:
        with self.lock:
            n = 0
            for kind in self._kinds.values():
                for w in kind.watchers:
                    w.q.put(DROP_ABRUPT if abrupt else DROP_CLEAN)
                    n += 1
                kind.watchers.clear()
            return n

    def compact(self) -> None:
        """Forget all history: every resourceVersion before now answers 410 Gone."""
        with self.lock:
            for kind in self._kinds.values():
                kind.history.clear()
                kind.history_rvs.clear()
                kind.compacted_rv = self._rv
            # Writes after this get rv > compacted; a watch from the current rv stays valid.

    def watcher_count(self) -> int:
        with self.lock:
            return sum(len(k.watchers) for k in self._kinds.values())


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch(target: Obj, ops: Any) -> Obj:
    """RFC 6902 subset: add, remove, replace, test."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise ApiError(422, "Invalid", "bad JSON patch operation")
        parts = _pointer(str(op["path"]))
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.get(p)
            if parent is None:
                raise ApiError(422, "Invalid", f"path {op['path']} does not exist")
        last = parts[-1]
        kind = op.get("op")
        try:
            if kind == "test":
                cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
                if cur != op.get("value"):
                    raise ApiError(422, "Invalid", f"test failed at {op['path']}")
            elif kind == "remove":
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            elif kind in ("add", "replace"):
                if isinstance(parent, list):
                    if last == "-":
                        parent.append(op.get("value"))
                    elif kind == "add":
                        parent.insert(int(last), op.get("value"))
                    else:
                        parent[int(last)] = op.get("value")
                else:
                    if kind == "replace" and last not in parent:
                        raise ApiError(422, "Invalid", f"path {op['path']} does not exist")
                    parent[last] = op.get("value")
            else:
                raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(422, "Invalid", f"JSON patch failed at {op['path']}: {e}") from e
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386, section 2), written here from the RFC rather than taken
    from the product (whose own implementation the emulator must be able to catch out)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
