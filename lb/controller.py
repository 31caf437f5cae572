"""The lb controller: Services of type LoadBalancer + IPAddressPools -> VIPs in Service status.

Thin shell around the pure allocator (``lb.core.allocator``) and status builders
(``lb.core.status``). Informers feed one work queue; ONE worker thread owns the allocator, so
allocation decisions are strictly sequential and deterministic (the allocator is not
thread-safe, and one worker easily keeps up: allocation costs microseconds, the API write is
the expensive part).

Start-up order is what keeps addresses stable across restarts and leader changes:
1. informers list Services, pools and Namespaces (watches start from those lists);
2. pools are applied, then the allocator is *rebuilt from Service statuses* (Services that
   already show addresses first), before any single event is handled;
3. only then the worker starts; every Service is queued once so that statuses converge.

Queue keys: ``svc:<ns>/<name>``, ``pools`` (re-read every pool), ``ns:<name>`` (a
Namespace's labels changed: its Services are re-evaluated against serviceAllocation
namespace selectors), ``poolstatus`` (debounced pool status write).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from lb import metrics
from lb.core.allocator import Allocation, Allocator, Pending
from lb.core.model import FieldProblem, LBService, Pool, family_of
from lb.core.parse import parse_namespace_labels, parse_pool, parse_service
from lb.core.parse_service import status_ips_of
from lb.core.status import (
    Verdict,
    pool_status,
    released_service_status,
    service_status,
    verdict_for,
    verdict_for_problems,
)
from lb.errors import Conflict, InvalidObject, KubeError, NotFound
from lb.kube.backoff import Backoff
from lb.kube.client import KubeClient
from lb.kube.clock import Clock, RealClock
from lb.kube.events import EventRecorder
from lb.kube.informer import Informer
from lb.kube.resources import IPADDRESSPOOLS, NAMESPACES, SERVICES, Resource
from lb.kube.status import merge_diff
from lb.kube.workqueue import Outcome, WorkQueue, run_workers

log = structlog.get_logger("lb.controller")

POOLS_KEY = "pools"
POOL_STATUS_KEY = "poolstatus"
# Pool status is a summary: coalesce the writes of an allocation burst (100k Services at
# start) into one write per pool per second instead of one per allocation.
POOL_STATUS_DEBOUNCE_S = 1.0

Obj = dict[str, Any]


def _svc_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"svc:{meta.get('namespace', '')}/{meta.get('name', '')}"


class Controller:
    def __init__(self, kube: KubeClient, lb_class: str | None = None,
                 clock: Clock | None = None, events: EventRecorder | None = None,
                 backoff: Callable[[], Backoff] | None = None) -> None:
        self.kube = kube
        self.lb_class = lb_class
        self.clock: Clock = clock or RealClock()
        self.events = events or EventRecorder(kube, "portico-controller", clock=self.clock)
        self.allocator = Allocator()
        self.queue: WorkQueue[str] = WorkQueue("controller", clock=self.clock)
        def informer(res: Resource, handler: Callable[[str, Obj], None]) -> Informer:
            return Informer(kube, res, on_event=handler, clock=self.clock,
                            backoff=backoff() if backoff else None)

        self.services = informer(SERVICES, self._on_service)
        self.pools = informer(IPADDRESSPOOLS, self._on_pool)
        self.namespaces = informer(NAMESPACES, self._on_namespace)
        # Last valid spec of every pool: an invalid edit keeps the previous spec in force.
        self._good_pools: dict[str, Pool] = {}
        self._pool_parse_problems: dict[str, list[FieldProblem]] = {}
        self._ready = threading.Event()
        self._workers: list[threading.Thread] = []

    # ----- lifecycle ----------------------------------------------------------------------

    def start(self, sync_timeout: float | None = None) -> None:
        for inf in (self.namespaces, self.pools, self.services):
            inf.start()
        for inf in (self.namespaces, self.pools, self.services):
            if not inf.wait_for_sync(sync_timeout):
                raise KubeError(f"informer {inf.name} did not sync")
        self._apply_pools()
        self._rebuild()
        self._workers = run_workers(self.queue, self.handle, workers=1,
                                    reprocess_all=self._all_keys)
        self._ready.set()
        log.info("controller_started", services=len(self.services.store),
                 pools=len(self._good_pools))

    def stop(self) -> None:
        self.queue.shutdown()
        for inf in (self.services, self.pools, self.namespaces):
            inf.stop()

    def ready(self) -> bool:
        return self._ready.is_set()

    # ----- event handlers (informer threads): only enqueue -----------------------------------

    def _on_service(self, etype: str, obj: Obj) -> None:
        self.queue.add(_svc_key(obj))

    def _on_pool(self, etype: str, obj: Obj) -> None:
        self.queue.add(POOLS_KEY)

    def _on_namespace(self, etype: str, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        self.queue.add(f"ns:{name}")

    def _all_keys(self) -> list[str]:
        return [_svc_key(o) for o in self.services.store.list()] + [POOLS_KEY]

    # ----- the worker -------------------------------------------------------------------------

    def handle(self, key: str) -> Outcome:
        started = time.perf_counter()
        kind = key.split(":", 1)[0]
        try:
            if key == POOLS_KEY:
                return self._sync_pools()
            if key == POOL_STATUS_KEY:
                return self._write_pool_statuses()
            if kind == "ns":
                return self._sync_namespace(key[3:])
            return self._sync_service(key[4:])
        except KubeError as e:
            metrics.RECONCILE_ERRORS.labels(kind).inc()
            log.warning("reconcile_failed", key=key, error=str(e), status=e.status)
            return Outcome.RETRY
        finally:
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)

    # ----- namespaces ---------------------------------------------------------------------------

    def _namespace_labels(self, namespace: str) -> Mapping[str, str]:
        obj = self.namespaces.store.get(None, namespace)
        if obj is None:
            return {}
        try:
            return parse_namespace_labels(obj)[1]
        except InvalidObject:
            return {}

    def _sync_namespace(self, name: str) -> Outcome:
        for obj in self.services.store.list():
            if (obj.get("metadata") or {}).get("namespace") == name:
                self.queue.add(_svc_key(obj))
        return Outcome.DONE

    # ----- pools --------------------------------------------------------------------------------

    def _apply_pools(self) -> set[str]:
        seen: set[str] = set()
        for obj in self.pools.store.list():
            name = str((obj.get("metadata") or {}).get("name", ""))
            seen.add(name)
            try:
                pool = parse_pool(obj)
            except InvalidObject as e:
                old = self._pool_parse_problems.get(name)
                self._pool_parse_problems[name] = e.problems
                if old != e.problems:
                    log.warning("pool_invalid", object=name, problems=str(e),
                                keeping_last_good=name in self._good_pools)
                    self.events.warning(obj, e.problems[0].reason, str(e))
                continue
            self._pool_parse_problems.pop(name, None)
            self._good_pools[name] = pool
        for gone in set(self._good_pools) - seen:
            del self._good_pools[gone]
        for gone in set(self._pool_parse_problems) - seen:
            del self._pool_parse_problems[gone]
        return self.allocator.set_pools(self._good_pools.values())

    def _sync_pools(self) -> Outcome:
        for key in sorted(self._apply_pools()):
            self.queue.add(f"svc:{key}")
        self.queue.add_after(POOL_STATUS_KEY, 0)
        return Outcome.DONE

    def _write_pool_statuses(self) -> Outcome:
        stats = self.allocator.pool_stats()
        problems: dict[str, list[FieldProblem]] = {}
        for p in self.allocator.pool_problems():
            problems.setdefault(p.ref.name, []).append(p)
        now = self.clock.now()
        outcome = Outcome.DONE
        for obj in self.pools.store.list():
            name = str((obj.get("metadata") or {}).get("name", ""))
            parse_problems = self._pool_parse_problems.get(name, [])
            new = pool_status(obj.get("status"), stats.get(name), problems.get(name, []),
                              parse_problems, name in self._good_pools and bool(parse_problems),
                              now)
            for family, fam in (stats[name].families.items() if name in stats else ()):
                metrics.POOL_TOTAL.labels(name, family).set(fam.total)
                metrics.POOL_ASSIGNED.labels(name, family).set(fam.assigned)
            try:
                self._patch_status(IPADDRESSPOOLS, obj, new)
            except NotFound:
                continue  # deleted meanwhile; its informer event re-syncs pools
            except KubeError as e:
                log.warning("pool_status_failed", object=name, error=str(e))
                outcome = Outcome.RETRY
        return outcome

    def _pool_status_dirty(self) -> None:
        self.queue.add_after(POOL_STATUS_KEY, POOL_STATUS_DEBOUNCE_S)

    # ----- services -----------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Restore allocations from Service statuses before handling any single event.

        Invalid Services that show addresses take part with only what they hold (no
        request: the request is what is invalid), so a restart never hands their addresses
        to someone else; their own reconcile then reports the problem.
        """
        entries: list[tuple[LBService, Mapping[str, str]]] = []
        for obj in self.services.store.list():
            try:
                svc = parse_service(obj, self.lb_class)
            except InvalidObject:
                svc = _held_only(obj)
            if svc is not None:
                entries.append((svc, self._namespace_labels(svc.namespace)))
        results = self.allocator.rebuild(entries)
        restored = sum(isinstance(r, Allocation) for r in results.values())
        log.info("allocations_rebuilt", services=len(entries), allocated=restored)
        for obj in self.services.store.list():
            self.queue.add(_svc_key(obj))
        self._pool_status_dirty()

    def _sync_service(self, name: str) -> Outcome:
        namespace, _, svc_name = name.partition("/")
        obj = self.services.store.get(namespace, svc_name)
        if obj is None:
            self._release(name, None)
            return Outcome.DONE
        try:
            svc = parse_service(obj, self.lb_class)
        except InvalidObject as e:
            return self._invalid_service(name, obj, e)
        if svc is None:
            self._release(name, obj)
            return Outcome.DONE
        before = self.allocator.allocation(name)
        result = self.allocator.allocate(svc, self._namespace_labels(namespace))
        self._wake(self.allocator.requeue())
        verdict = verdict_for(result)
        if isinstance(result, Pending):
            metrics.ALLOCATION_FAILURES.labels(result.reason).inc()
        if before != self.allocator.allocation(name):
            self._pool_status_dirty()
        return self._write_service(obj, verdict, before, result)

    def _invalid_service(self, key: str, obj: Obj, e: InvalidObject) -> Outcome:
        held = self.allocator.allocation(key)
        verdict = verdict_for_problems(e.problems, held)
        metrics.ALLOCATION_FAILURES.labels(verdict.reason).inc()
        log.warning("service_invalid", object=key, problems=str(e))
        try:
            changed = self._patch_status(SERVICES, obj, service_status(
                obj.get("status"), verdict, self.clock.now()))
        except Conflict:
            return Outcome.RETRY
        if changed:
            self.events.warning(obj, verdict.reason, verdict.message)
        # The user must edit the Service; its next change brings it back here.
        return Outcome.DONE

    def _write_service(self, obj: Obj, verdict: Verdict, before: Allocation | None,
                       result: Allocation | Pending) -> Outcome:
        try:
            changed = self._patch_status(SERVICES, obj, service_status(
                obj.get("status"), verdict, self.clock.now()), optimistic=True)
        except Conflict:
            # Someone wrote the Service since our informer saw it: re-read and decide again.
            return Outcome.RETRY
        except NotFound:
            return Outcome.DONE
        if isinstance(result, Allocation):
            if result != before or changed:
                self.events.normal(obj, verdict.reason, verdict.message)
                log.info("ip_allocated", object=_svc_key(obj)[4:],
                         ips=[str(i) for i in result.ips], pool=result.pool)
        elif changed:
            self.events.warning(obj, "AllocationFailed", f"{verdict.reason}: {verdict.message}")
            log.info("allocation_pending", object=_svc_key(obj)[4:], reason=verdict.reason,
                     message=verdict.message)
        return Outcome.DONE

    def _release(self, key: str, obj: Obj | None) -> None:
        held = self.allocator.allocation(key)
        was_pending = key in self.allocator.pending()
        if held is None and not was_pending:
            return
        self._wake(self.allocator.release(key))
        self._pool_status_dirty()
        if held is not None:
            log.info("ip_released", object=key, ips=[str(i) for i in held.ips])
        if obj is not None:
            # Still exists but is no longer ours (type or class changed): clean our status.
            new = released_service_status(obj.get("status"), held.ips if held else ())
            try:
                self._patch_status(SERVICES, obj, new)
            except KubeError as e:
                log.warning("status_cleanup_failed", object=key, error=str(e))
            if held is not None:
                self.events.normal(obj, "IPReleased",
                                   f"released {', '.join(str(i) for i in held.ips)}")

    def _wake(self, keys: set[str]) -> None:
        for k in sorted(keys):
            self.queue.add(f"svc:{k}")

    # ----- writes -------------------------------------------------------------------------------

    def _patch_status(self, res: Resource, obj: Obj, new_status: Obj,
                      optimistic: bool = False) -> bool:
        """PATCH only the changed status fields; False when nothing changed.

        ``optimistic`` adds the resourceVersion we decided on as a precondition: an address
        decision based on a stale Service must not be written (409 -> re-read, decide again).
        """
        diff = merge_diff(obj.get("status") or {}, new_status)
        if diff is None:
            return False
        meta = obj.get("metadata") or {}
        patch: Obj = {"status": diff}
        if optimistic and meta.get("resourceVersion"):
            patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        self.kube.patch(res, str(meta.get("name")), patch, namespace=meta.get("namespace"),
                        subresource="status")
        return True


def _held_only(obj: Obj) -> LBService | None:
    """The part of an invalid Service the allocator needs to keep its addresses: who it is
    and what its status shows (no request: the request is what is invalid)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        return None
    ips = status_ips_of(obj)
    if not ips:
        return None
    families = tuple(dict.fromkeys(family_of(ip) for ip in ips))
    return LBService(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
        status_ips=ips, ip_families=families,
        family_policy="RequireDualStack" if len(families) == 2 else "SingleStack",
    )
