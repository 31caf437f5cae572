"""List-then-watch cache of one resource, with relist on 410 and backoff on errors.

Loop (client-go reflector semantics, DESIGN.md habit 4):
  list -> replace the store, emit synthetic ADDED/MODIFIED/DELETED for the differences
  watch from the list's resourceVersion (server timeoutSeconds + client read timeout)
    - events update the store and the last resourceVersion; bookmarks update only the latter
    - the watch ended cleanly (server timeout, clean drop): watch again from the last
      resourceVersion, no relist
    - 410 Gone: relist at once (history compacted; nothing to wait for)
    - a stream cut or refused by the network (no HTTP status): back off, then watch again
      from the last resourceVersion (client-go does the same; the server answers 410 if that
      is too old)
    - an HTTP error, or a watch that ends immediately without events: back off with full
      jitter, then relist
"""

from __future__ import annotations

import builtins
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import Counter

from common.errors import Gone, KubeError, Refused, Throttled
from common.kube.backoff import Backoff
from common.kube.client import KubeClient, WatchHandle, watch_timeout
from common.kube.clock import Clock, RealClock
from common.kube.resources import Resource, object_key, resource_version

Obj = dict[str, Any]
Handler = Callable[[str, Obj], None]

log = structlog.get_logger("common.kube.informer")

RELISTS = Counter(
    "portico_informer_relists_total", "Informer (re)lists by resource and cause.",
    ["resource", "cause"],
)

# Page size of the (re)list, as client-go's reflector: bounds the API server's memory per
# request on large clusters.
LIST_PAGE = 500

# A watch that ends sooner than this without delivering anything is treated as a failure
# (a server or proxy closing streams at once would otherwise become a hot reconnect loop).
MIN_HEALTHY_WATCH_S = 1.0


class Store:
    """Thread-safe cache keyed by (namespace, name); objects are shared, treat as read-only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Obj] = {}

    def get(self, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            return self._items.get((namespace or "", name))

    def list(self) -> list[Obj]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> builtins.list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _put(self, obj: Obj) -> Obj | None:
        with self._lock:
            key = object_key(obj)
            old = self._items.get(key)
            self._items[key] = obj
            return old

    def _pop(self, obj: Obj) -> Obj | None:
        with self._lock:
            return self._items.pop(object_key(obj), None)

    def _replace(self, objs: builtins.list[Obj]) -> builtins.list[tuple[str, Obj]]:
        """Swap in a fresh list; returns the synthetic events that explain the change."""
        fresh = {object_key(o): o for o in objs}
        events: builtins.list[tuple[str, Obj]] = []
        with self._lock:
            for key, old in self._items.items():
                if key not in fresh:
                    events.append(("DELETED", old))
            for key, obj in fresh.items():
                prev = self._items.get(key)
                if prev is None:
                    events.append(("ADDED", obj))
                elif resource_version(prev) != resource_version(obj):
                    events.append(("MODIFIED", obj))
            self._items = fresh
        return events


class Informer:
    def __init__(
        self,
        client: KubeClient,
        res: Resource,
        namespace: str | None = None,
        on_event: Handler | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout_s: Callable[[], int] | None = None,
        name: str | None = None,
        on_refused: Callable[[Resource, Refused], None] | None = None,
    ) -> None:
        self.client = client
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.clock: Clock = clock or RealClock()
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._watch_timeout = watch_timeout_s or (lambda: watch_timeout(random.random))
        self.store = Store()
        self._handlers: list[Handler] = [on_event] if on_event else []
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: WatchHandle | None = None
        self.name = name or f"informer-{res.plural}"
        self.last_resource_version = ""
        # Counters for tests and debugging.
        self.lists = 0
        self.watches = 0
        self.errors = 0
        # A refused list/watch (400/403/422) is reported once per streak through on_refused
        # (an Event the user sees), not on every retry; a successful list ends the streak.
        self._on_refused = on_refused
        self.refused: Refused | None = None

    def add_handler(self, handler: Handler) -> None:
        """Add a callback; call before start() so it sees the initial ADDED events."""
        self._handlers.append(handler)

    # ----- lifecycle ----------------------------------------------------------------------

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop; a watch blocked on a silent stream is cut off at once."""
        self._stop.set()
        handle = self._handle
        if handle is not None:
            handle.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    # ----- loop ---------------------------------------------------------------------------

    def run(self) -> None:
        need_list = True
        cause = "initial"
        while not self._stop.is_set():
            just_listed = need_list
            if need_list:
                try:
                    self._list(cause)
                    need_list = False
                except KubeError as e:
                    self._fail("list", e)
                    continue
            # Real time on purpose: this guards against a hot reconnect loop on the network,
            # which a fake clock in tests would otherwise misreport as an instant watch.
            started = time.monotonic()
            delivered = 0
            try:
                self.watches += 1
                self._handle = WatchHandle()
                if self._stop.is_set():
                    return
                for etype, obj in self.client.watch(
                    self.res, self.last_resource_version, namespace=self.namespace,
                    label_selector=self.label_selector, field_selector=self.field_selector,
                    timeout_seconds=self._watch_timeout(), handle=self._handle,
                ):
                    if self._stop.is_set():
                        return
                    delivered += 1
                    self._apply(etype, obj)
            except Gone as e:
                need_list, cause = True, "gone"
                if just_listed and delivered == 0:
                    # 410 for the version a list just returned: relisting at once would spin.
                    self._fail("watch", e)
                else:
                    log.info("watch_expired", resource=str(self.res), error=str(e))
                continue
            except KubeError as e:
                if self._stop.is_set():
                    return
                healthy = delivered > 0 or time.monotonic() - started >= MIN_HEALTHY_WATCH_S
                if healthy:
                    self.backoff.reset()  # it was healthy until now: a fresh failure streak
                self._fail("watch", e)
                # A stream cut or refused by the network (no HTTP status: reset, apiserver
                # restart, load balancer) resumes from the last resourceVersion after the
                # backoff, as client-go's reflector does: the server replays what was missed,
                # or says 410 and we relist. Relisting 10,000 objects per informer after every
                # network blip is what this avoids. An HTTP error status relists.
                if e.status is not None:
                    need_list, cause = True, "error"
                continue
            if self._stop.is_set():
                return
            # The stream ended cleanly: resume from the last resourceVersion seen.
            if delivered == 0 and time.monotonic() - started < MIN_HEALTHY_WATCH_S:
                self._fail("watch", KubeError("watch ended at once without events"))
                need_list, cause = True, "error"
            else:
                self.backoff.reset()

    def _fail(self, what: str, e: KubeError) -> None:
        self.errors += 1
        if isinstance(e, Refused) and self.refused is None:
            self.refused = e
            if self._on_refused is not None:
                try:
                    self._on_refused(self.res, e)
                except Exception:  # reporting must not stop the informer
                    log.exception("on_refused_failed", resource=str(self.res))
        delay = self.backoff.next()
        if isinstance(e, Throttled) and e.retry_after:
            delay = max(delay, min(e.retry_after, self.backoff.cap))
        log.warning(f"{what}_failed", resource=str(self.res), error=str(e),
                    retry_in=round(delay, 3))
        self.clock.wait(self._stop, delay)

    def _list(self, cause: str) -> None:
        self.lists += 1
        RELISTS.labels(self.res.plural, cause).inc()
        items, rv = self.client.list(
            self.res, namespace=self.namespace, label_selector=self.label_selector,
            field_selector=self.field_selector, limit=LIST_PAGE,
        )
        events = self.store._replace(items)
        self.last_resource_version = rv
        if self.refused is not None:
            log.info("access_restored", resource=str(self.res))
            self.refused = None
        self._synced.set()
        log.debug("listed", resource=str(self.res), items=len(items), rv=rv, cause=cause,
                  changes=len(events))
        for etype, obj in events:
            self._emit(etype, obj)

    def _apply(self, etype: str, obj: Obj) -> None:
        rv = resource_version(obj)
        if etype == "BOOKMARK":
            if rv:
                self.last_resource_version = rv
            return
        if etype == "DELETED":
            last = self.store._pop(obj)
            # The callback gets the last object we knew (its status may matter to the
            # consumer), falling back to what the server sent.
            self._emit("DELETED", last if last is not None else obj)
        else:
            old = self.store._put(obj)
            # ADDED for something we already hold (watch replay after a clean resume) is a
            # modification from the consumer's point of view; an identical one is a no-op.
            if old is not None and resource_version(old) == rv:
                pass
            else:
                self._emit("ADDED" if old is None else "MODIFIED", obj)
        if rv:
            self.last_resource_version = rv

    def _emit(self, etype: str, obj: Obj) -> None:
        for handler in self._handlers:
            try:
                handler(etype, obj)
            except Exception:  # a consumer bug must not kill the informer
                log.exception("handler_failed", resource=str(self.res), event_type=etype)
