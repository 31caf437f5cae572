"""core/v1 Event recording with de-duplication, bounded memory, and no exceptions out.

The same (object, reason, message, type) seen again within ``window`` seconds bumps the
existing Event's ``count`` and ``lastTimestamp`` (one PATCH) instead of creating a new Event,
as kubectl users expect ("x5 over 3m"). The correlation cache is an LRU of ``max_entries``.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog

from common.errors import KubeError, NotFound
from common.kube.client import KubeClient
from common.kube.clock import Clock, RealClock, rfc3339
from common.kube.resources import EVENTS, Resource

log = structlog.get_logger("common.kube.events")

# client-go's event correlator aggregates within 10 minutes; we use the same window.
DEDUP_WINDOW_S = 600.0
# Enough for every object of a large cluster to have a few distinct live events.
MAX_ENTRIES = 4096
# events.k8s.io/v1 caps the note at 1 KiB; staying under it keeps Events readable in kubectl
# and valid if they are ever read through the newer API.
MAX_MESSAGE = 1000
_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

NORMAL = "Normal"
WARNING = "Warning"


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    last: float  # monotonic


class EventRecorder:
    def __init__(
        self,
        client: KubeClient,
        component: str,
        host: str | None = None,
        clock: Clock | None = None,
        window: float = DEDUP_WINDOW_S,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.clock: Clock = clock or RealClock()
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()
        self.failures = 0  # API errors swallowed (for tests and metrics)

    def record(
        self,
        involved: dict[str, Any],
        type: str,
        reason: str,
        message: str,
        action: str | None = None,
        resource: Resource | None = None,
    ) -> None:
        """Record an Event about ``involved`` (the object dict). Never raises."""
        try:
            self._record(involved, type, reason, message, action, resource)
        except Exception:  # the caller's reconcile must never fail because of an Event
            self.failures += 1
            log.exception("event_record_failed", reason=reason)

    def normal(self, involved: dict[str, Any], reason: str, message: str) -> None:
        self.record(involved, NORMAL, reason, message)

    def warning(self, involved: dict[str, Any], reason: str, message: str) -> None:
        self.record(involved, WARNING, reason, message)

    def _record(
        self, involved: dict[str, Any], type: str, reason: str, message: str,
        action: str | None, resource: Resource | None,
    ) -> None:
        meta = involved.get("metadata") or {}
        name = str(meta.get("name") or "")
        obj_ns = str(meta.get("namespace") or "")
        # Events about cluster-scoped objects live in "default", as kubectl looks for them.
        ns = obj_ns or "default"
        if type not in (NORMAL, WARNING):
            log.error("event_bad_type", type=type, reason=reason)
            type = WARNING
        if not _CAMEL.match(reason):
            log.error("event_reason_not_camelcase", reason=reason)
        message = _CONTROL.sub(" ", message)[:MAX_MESSAGE]
        kind = str(involved.get("kind") or (resource.kind if resource else ""))
        api_version = str(
            involved.get("apiVersion") or (resource.api_version if resource else "")
        )
        uid = str(meta.get("uid") or "")
        obj_id = uid or f"{kind}/{obj_ns}/{name}"
        key = (obj_id, reason, message, type)
        now_mono = self.clock.monotonic()
        stamp = rfc3339(self.clock.now())
        log.info("event", object=f"{obj_ns}/{name}" if obj_ns else name, kind=kind,
                 type=type, reason=reason, message=message)

        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now_mono - seen.last > self.window:
                del self._seen[key]
                seen = None
            if seen is not None:
                self._seen.move_to_end(key)
        if seen is not None:
            try:
                self.client.patch(
                    EVENTS, seen.name, {"count": seen.count + 1, "lastTimestamp": stamp},
                    namespace=seen.namespace,
                )
                with self._lock:
                    seen.count += 1
                    seen.last = now_mono
                return
            except NotFound:
                pass  # the Event expired (default TTL 1 h) or was deleted: create a new one
            except KubeError as e:
                self.failures += 1
                log.warning("event_patch_failed", reason=reason, error=str(e))
                return

        event_name = f"{name[:200] or 'object'}.{uuid.uuid4().hex[:16]}"
        involved_ref: dict[str, Any] = {"kind": kind, "apiVersion": api_version, "name": name}
        if obj_ns:
            involved_ref["namespace"] = obj_ns
        if uid:
            involved_ref["uid"] = uid
        if meta.get("resourceVersion"):
            involved_ref["resourceVersion"] = str(meta["resourceVersion"])
        source: dict[str, str] = {"component": self.component}
        if self.host:
            source["host"] = self.host
        body: dict[str, Any] = {
            "metadata": {"name": event_name, "namespace": ns},
            "involvedObject": involved_ref,
            "reason": reason,
            "message": message,
            "type": type,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host or self.component,
        }
        if action:
            body["action"] = action
        try:
            self.client.create(EVENTS, body, namespace=ns)
        except KubeError as e:
            self.failures += 1
            log.warning("event_create_failed", reason=reason, error=str(e))
            return
        with self._lock:
            self._seen[key] = _Seen(event_name, ns, 1, now_mono)
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
