"""The lb controller: Services of type LoadBalancer + IPAddressPools -> VIPs in Service status.

Thin shell around the pure allocator (``lb.core.allocator``) and status builders
(``lb.core.status``). Informers feed one work queue served by ``workers`` threads.

Decisions are serialized, writes are not: allocation costs microseconds, the status PATCH (a
round trip of milliseconds) is the expensive part, so one thread writing one status at a time
caps throughput at 1/round-trip. Every worker reads or changes the allocator and the pool
state only in its *decision turn* (``WorkQueue.in_turn``): one worker at a time, in the order
the keys were taken from the queue - the very order a single worker would decide in, so
decisions stay sequential and deterministic (the allocator is not thread-safe either). The
write of a decision that only *adds* (a first address, a Pending verdict, the same allocation
again) is made after the turn has passed on, in parallel with other workers' writes. A
decision that *frees* an address (a Service that changed its request or stopped being a
LoadBalancer) is written before the turn passes on: no other Service is handed that address
before the write that takes it from its holder has been answered, so the controller does not
make two Services show one address at once. As with a single worker, two cases are left to
convergence: addresses a pool edit releases leave their holders' status when those Services
are processed, and a freeing write that fails is retried with the address already free.
The work queue still hands a key to one worker at a time (``common.kube.workqueue``), so the
writes of one Service stay ordered, and each write carries the resourceVersion its decision
was made on (optimistic precondition).

Start-up order is what keeps addresses stable across restarts and leader changes:
1. informers list Services, pools and Namespaces (watches start from those lists);
2. pools are applied, then the allocator is *rebuilt from Service statuses* (Services that
   already show addresses first), before any single event is handled;
3. only then the workers start; every Service is queued once so that statuses converge.

Queue keys: ``svc:<ns>/<name>``, ``pools`` (re-read every pool), ``ns:<name>`` (a
Namespace's labels changed: its Services are re-evaluated against serviceAllocation
namespace selectors), ``poolstatus`` (debounced pool status write).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog

from common.api.model import (
    REASON_CONFLICTING_ANNOTATIONS,
    FieldProblem,
    LBService,
    Pool,
    family_of,
)
from common.api.parse import parse_namespace_labels, parse_pool, parse_service
from common.api.parse_service import status_ips_of
from common.errors import Conflict, InvalidObject, KubeError, NotFound, Refused
from common.kube.backoff import Backoff
from common.kube.client import KubeClient
from common.kube.clock import Clock, RealClock
from common.kube.events import EventRecorder
from common.kube.informer import Informer
from common.kube.loop import ReconcileLoop
from common.kube.refusal import REFUSED_WRITES, access_refused_reporter, report_refusal
from common.kube.resources import IPADDRESSPOOLS, NAMESPACES, SERVICES, Resource
from common.kube.status import merge_diff
from common.kube.workqueue import Outcome, WorkQueue
from lb import metrics
from lb.core.allocator import Allocation, Allocator, Pending
from lb.core.status import (
    Verdict,
    annotation_conflict_status,
    new_annotation_conflict,
    pool_status,
    released_service_status,
    service_status,
    verdict_for,
    verdict_for_problems,
)

log = structlog.get_logger("lb.controller")

POOLS_KEY = "pools"
POOL_STATUS_KEY = "poolstatus"
# Pool status is a summary: coalesce the writes of an allocation burst (100k Services at
# start) into one write per pool per second instead of one per allocation.
POOL_STATUS_DEBOUNCE_S = 1.0
COMPONENT = "controller"  # metric label of refused writes
# Concurrent status writers. On the real kube-apiserver (bench/real_scale.py) one writer
# spends most of its time waiting for round trips; a few overlap them. More than the API
# server can usefully run in parallel only adds 429s (API Priority and Fairness) and memory.
DEFAULT_WORKERS = 4
MAX_WORKERS = 16  # common.kube.client.POOL_MAXSIZE holds this many writers plus the watches

_P = ParamSpec("_P")
_R = TypeVar("_R")

Obj = dict[str, Any]


def _svc_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"svc:{meta.get('namespace', '')}/{meta.get('name', '')}"


def _in_turn(key: str) -> Callable[[Callable[Concatenate[Controller, _P], _R]],
                                    Callable[Concatenate[Controller, _P], _R]]:
    """Run the whole method in the decision turn of ``key`` (it reads or changes allocator or
    pool state, and its writes are rare: pools, pool status)."""
    def wrap(method: Callable[Concatenate[Controller, _P], _R],
             ) -> Callable[Concatenate[Controller, _P], _R]:
        def in_turn(self: Controller, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            with self.queue.in_turn(key):
                return method(self, *args, **kwargs)
        return in_turn
    return wrap


class Controller:
    def __init__(self, kube: KubeClient, lb_class: str | None = None,
                 clock: Clock | None = None, events: EventRecorder | None = None,
                 backoff: Callable[[], Backoff] | None = None,
                 workers: int = DEFAULT_WORKERS) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be within 1..{MAX_WORKERS}, got {workers}")
        self.kube = kube
        self.workers = workers
        self.lb_class = lb_class
        self.clock: Clock = clock or RealClock()
        self.events = events or EventRecorder(kube, "portico-controller", clock=self.clock)
        self.allocator = Allocator()
        # The one reconcile loop every component runs (common.kube.loop); the controller's
        # keys are per object, so no debounce: a key queued twice is merged anyway.
        self.loop: ReconcileLoop[str] = ReconcileLoop("controller", self.handle,
                                                      clock=self.clock,
                                                      reprocess_all=self._all_keys)
        self.queue: WorkQueue[str] = self.loop.queue
        refused = access_refused_reporter(self.events, log, "controller")

        def informer(res: Resource, handler: Callable[[str, Obj], None]) -> Informer:
            return Informer(kube, res, on_event=handler, clock=self.clock,
                            backoff=backoff() if backoff else None, on_refused=refused)

        self.services = informer(SERVICES, self._on_service)
        self.pools = informer(IPADDRESSPOOLS, self._on_pool)
        self.namespaces = informer(NAMESPACES, self._on_namespace)
        # Last valid spec of every pool: an invalid edit keeps the previous spec in force.
        self._good_pools: dict[str, Pool] = {}
        self._pool_parse_problems: dict[str, list[FieldProblem]] = {}
        # Pools whose status write was refused (400/403/422), by the resourceVersion it was
        # refused for: not written again until the pool changes (common.kube.refusal).
        self._pool_status_refused: dict[str, str] = {}
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
        self._workers = self.loop.start(self.workers)
        self._ready.set()
        log.info("controller_started", services=len(self.services.store),
                 pools=len(self._good_pools))

    def stop(self) -> None:
        self.loop.stop(timeout=0)  # take no more keys; the workers end on their own
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
        except NotFound as e:
            # Only status writes reach the API from here, so a 404 means the object was
            # deleted after the informer showed it. Its DELETED event queues the key again
            # (and releases what it held); retrying before that would only repeat the 404,
            # and there is no one left to tell. Not a refusal: nothing to report.
            log.info("reconcile_object_gone", key=key, error=str(e))
            return Outcome.DONE
        except Refused as e:
            # A refusal the write paths did not attribute to an object (they report and give
            # up themselves): retrying cannot succeed, the key's next event brings it back.
            REFUSED_WRITES.labels(COMPONENT, kind, str(e.status)).inc()
            log.warning("reconcile_refused", key=key, status=e.status, reason=e.reason,
                        fields=list(e.fields), error=str(e))
            return Outcome.GIVE_UP
        except KubeError as e:
            # Anything else may pass (5xx, 429, 401 with a rotated token, timeouts): the loop
            # retries with backoff.
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

    @_in_turn(POOLS_KEY)
    def _sync_pools(self) -> Outcome:
        for key in sorted(self._apply_pools()):
            self.queue.add(f"svc:{key}")
        self.queue.add_after(POOL_STATUS_KEY, 0)
        return Outcome.DONE

    @_in_turn(POOL_STATUS_KEY)
    def _write_pool_statuses(self) -> Outcome:
        stats = self.allocator.pool_stats()
        problems: dict[str, list[FieldProblem]] = {}
        for p in self.allocator.pool_problems():
            problems.setdefault(p.ref.name, []).append(p)
        now = self.clock.now()
        outcome = Outcome.DONE
        pools = self.pools.store.list()
        for gone in set(self._pool_status_refused) - {
                str((o.get("metadata") or {}).get("name", "")) for o in pools}:
            del self._pool_status_refused[gone]
        for obj in pools:
            name = str((obj.get("metadata") or {}).get("name", ""))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            parse_problems = self._pool_parse_problems.get(name, [])
            new = pool_status(obj.get("status"), stats.get(name), problems.get(name, []),
                              parse_problems, name in self._good_pools and bool(parse_problems),
                              now)
            for family, fam in (stats[name].families.items() if name in stats else ()):
                metrics.POOL_TOTAL.labels(name, family).set(fam.total)
                metrics.POOL_ASSIGNED.labels(name, family).set(fam.assigned)
            if self._pool_status_refused.get(name) == version:
                continue  # refused for this version of the pool: wait for it to change
            try:
                self._patch_status(IPADDRESSPOOLS, obj, new)
                self._pool_status_refused.pop(name, None)
            except NotFound:
                continue  # deleted meanwhile; its informer event re-syncs pools
            except Refused as e:
                # Reported once; the pool's next change (new resourceVersion) tries again.
                # The other pools' statuses are still written: outcome stays DONE.
                self._pool_status_refused[name] = version
                report_refusal(self.events, log, obj, e, component=COMPONENT,
                               resource=IPADDRESSPOOLS.plural)
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
        # _release and _invalid_service run inside this turn too.
        with self.queue.in_turn(f"svc:{name}"):
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
            if frees_address(before, result):
                # The Service gives up (part of) what it shows: written before the turn passes
                # on, so nobody is handed that address while this status still shows it.
                return self._write_service(obj, verdict, before, result,
                                           svc.annotation_conflicts)
        # Only adds (a first address, a Pending verdict, the same allocation again): the
        # decision is committed in the allocator, the write runs in parallel with others'.
        return self._write_service(obj, verdict, before, result, svc.annotation_conflicts)

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
        except NotFound:
            return Outcome.DONE  # deleted meanwhile: its DELETED event brings the key back
        except Refused as e:
            return self._status_refused(SERVICES, obj, e)
        if changed:
            self.events.warning(obj, verdict.reason, verdict.message)
        # The user must edit the Service; its next change brings it back here.
        return Outcome.DONE

    def _write_service(self, obj: Obj, verdict: Verdict, before: Allocation | None,
                       result: Allocation | Pending, conflicts: tuple[str, ...] = (),
                       ) -> Outcome:
        new_status = annotation_conflict_status(
            service_status(obj.get("status"), verdict, self.clock.now()), conflicts,
            self.clock.now())
        announce = new_annotation_conflict(obj.get("status"), new_status)
        try:
            changed = self._patch_status(SERVICES, obj, new_status, optimistic=True)
        except Conflict:
            # Someone wrote the Service since our informer saw it: re-read and decide again.
            return Outcome.RETRY
        except NotFound:
            return Outcome.DONE
        except Refused as e:
            # The allocation stays held in memory (no one else gets the address); the
            # Service's next change writes it again.
            return self._status_refused(SERVICES, obj, e)
        if announce is not None:
            # Portico's and MetalLB's spellings of an annotation disagree: served with the
            # winner, and the user is told once which one (the condition stays meanwhile).
            self.events.warning(obj, REASON_CONFLICTING_ANNOTATIONS, announce)
            log.warning("annotation_conflict", object=_svc_key(obj)[4:], message=announce)
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
            except Refused as e:
                report_refusal(self.events, log, obj, e, component=COMPONENT,
                               resource=SERVICES.plural)
            except KubeError as e:
                log.warning("status_cleanup_failed", object=key, error=str(e))
            if held is not None:
                self.events.normal(obj, "IPReleased",
                                   f"released {', '.join(str(i) for i in held.ips)}")

    def _wake(self, keys: set[str]) -> None:
        for k in sorted(keys):
            self.queue.add(f"svc:{k}")

    # ----- writes -------------------------------------------------------------------------------

    def _status_refused(self, res: Resource, obj: Obj, e: Refused) -> Outcome:
        """400/403/422 on a status write: the same write would be refused again, so report
        it once (Warning Event on the object, log line, metric) and give up. Nothing is
        lost: the object's next informer event queues its key again."""
        report_refusal(self.events, log, obj, e, component=COMPONENT, resource=res.plural)
        return Outcome.GIVE_UP

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


def frees_address(before: Allocation | None, result: Allocation | Pending) -> bool:
    """Does this decision take an address (or its pool) away from a Service that held it?"""
    return before is not None and result != before


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
