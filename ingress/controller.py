"""Ingress controller shell: informers -> debounced sync -> HAProxy, Events, status.

Kubernetes I/O only through ``common.kube``. Informers watch Ingresses, IngressClasses,
Services and EndpointSlices; Secrets are *not* listed cluster-wide: one informer per Secret
referenced by a TLS section of one of our Ingresses (field selector ``metadata.name``), so
the controller reads only what it serves and sees rotations at once.

Reconcile on the shared loop (``common.kube.loop``), with two keys:

- ``SYNC``: every informer event adds it. The loop runs it after ``debounce_s`` of quiet
  (capped at ``max_delay_s`` after the first event), so that a burst (a Deployment rollout,
  ``kubectl apply`` of many objects) becomes one sync. The handler (``sync_once``) returns
  an outcome; a failed sync is retried with the loop's backoff, which events do not cut
  short (``hold_retries``: under endpoint churn a failing sync would otherwise be retried at
  event rate).
- ``HEALTH``: re-added every ``health_s``: checks that HAProxy is alive; a dead one is
  restarted by the full apply of the sync it asks for.

Status writes the API server refuses as such (400/403/422) are reported once and not retried
(``common.kube.refusal``): the sync itself still succeeds.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from common.api.model import ObjectRef
from common.errors import KubeError, Refused
from common.kube.backoff import KeyedBackoff
from common.kube.client import KubeClient
from common.kube.clock import Clock
from common.kube.events import EventRecorder
from common.kube.informer import Informer
from common.kube.loop import ReconcileLoop
from common.kube.refusal import (
    RefusalMemo,
    access_refused_reporter,
    fingerprint,
    report_refusal,
)
from common.kube.resources import (
    CONFIGMAPS,
    ENDPOINTSLICES,
    GATEWAYCLASSES,
    GATEWAYS,
    GRPCROUTES,
    HTTPROUTES,
    INGRESSCLASSES,
    INGRESSES,
    NAMESPACES,
    REFERENCEGRANTS,
    SECRETS,
    SERVICES,
    TCPROUTES,
    TLSROUTES,
)
from common.kube.status import write_status
from common.kube.workqueue import Outcome
from ingress.core.model import Event
from ingress.gateway.model import SERVICE_LABEL, Setup
from ingress.gateway.model import Inputs as GatewayInputs
from ingress.gateway_writer import GatewayWriter
from ingress.sync import Snapshot, Syncer, SyncResult, slices_by_service

log = structlog.get_logger().bind(component="ingress.controller")
Obj = Mapping[str, Any]

# Quiet time before a sync: one rollout step emits several events at once. Short, because a
# route change waits for it (route churn bench: propagation p99 is the figure users see);
# bursts still coalesce, since events that arrive during a sync wait for the next one.
DEBOUNCE_S = 0.01
MAX_DELAY_S = 0.5  # upper bound of debouncing, so a steady event stream still syncs
HEALTH_S = 2.0  # how often the loop checks that HAProxy is alive (restart in ~2 s)
# Failed syncs: the first retry soon (a transient API or reload hiccup), then doubling up to
# half a minute, so a sync that keeps failing costs little and still recovers unattended.
RETRY_BASE_S, RETRY_CAP_S, RETRY_FLOOR_S = 0.2, 30.0, 0.05
SYNC, HEALTH = "sync", "health"  # the loop's keys (see the module docstring)


class IngressController:
    def __init__(self, client: KubeClient, syncer: Syncer, recorder: EventRecorder,
                 publish_service: tuple[str, str] | None = None,
                 namespace: str | None = None, clock: Clock | None = None,
                 debounce_s: float = DEBOUNCE_S, max_delay_s: float = MAX_DELAY_S,
                 health_s: float = HEALTH_S, gateway: Setup | None = None,
                 tcp_services: tuple[str, str] | None = None) -> None:
        self.client = client
        self.gateway = gateway
        self.syncer = syncer
        self.recorder = recorder
        self.publish = publish_service
        self.namespace = namespace
        self.health_s = health_s  # read when run() starts (tests shorten it)
        self.loop: ReconcileLoop[str] = ReconcileLoop(
            "ingress", self.handle, clock=clock, debounce=debounce_s, max_delay=max_delay_s,
            hold_retries=True,
            backoff=KeyedBackoff(base=RETRY_BASE_S, cap=RETRY_CAP_S, floor=RETRY_FLOOR_S),
            events=recorder)
        self.clock: Clock = self.loop.clock
        self._lock = threading.Lock()
        self._refused = access_refused_reporter(recorder, log, "ingress")
        self.informers = {
            "ingresses": Informer(client, INGRESSES, namespace, self._on_event,
                                  on_refused=self._refused),
            "classes": Informer(client, INGRESSCLASSES, None, self._on_event,
                                on_refused=self._refused),
            "services": Informer(client, SERVICES, namespace, self._on_event,
                                 on_refused=self._refused),
            "slices": Informer(client, ENDPOINTSLICES, namespace, self._on_event,
                               on_refused=self._refused),
        }
        if publish_service is not None and namespace not in (None, publish_service[0]):
            self.informers["publish"] = Informer(
                client, SERVICES, publish_service[0], self._on_event,
                field_selector=f"metadata.name={publish_service[1]}", on_refused=self._refused)
        self.tcp_services = tcp_services
        if tcp_services is not None:
            self.informers["tcp-services"] = Informer(
                client, CONFIGMAPS, tcp_services[0], self._on_event,
                field_selector=f"metadata.name={tcp_services[1]}", on_refused=self._refused)
        self.writer: GatewayWriter | None = None
        if gateway is not None:
            # Gateway API: the route kinds, grants and namespaces (allowedRoutes selectors)
            # everywhere; the Gateways' Services come with the Services informer.
            for key, res, ns in (("gatewayclasses", GATEWAYCLASSES, None),
                                 ("gateways", GATEWAYS, namespace),
                                 ("httproutes", HTTPROUTES, namespace),
                                 ("grpcroutes", GRPCROUTES, namespace),
                                 ("tlsroutes", TLSROUTES, namespace),
                                 ("tcproutes", TCPROUTES, namespace),
                                 ("referencegrants", REFERENCEGRANTS, namespace),
                                 ("namespaces", NAMESPACES, None)):
                handler = self._on_event if key == "namespaces" else self._spec_changes()
                self.informers[key] = Informer(client, res, ns, handler,
                                               on_refused=self._refused)
            if namespace not in (None, gateway.namespace):
                self.informers["gateway-services"] = Informer(
                    client, SERVICES, gateway.namespace, self._on_event,
                    label_selector=f"{SERVICE_LABEL}=true", on_refused=self._refused)
            self.writer = GatewayWriter(client, recorder, gateway)
        self.secret_informers: dict[tuple[str, str], Informer] = {}
        self.last_events: set[Event] = set()
        self.last_result: SyncResult | None = None
        self.syncs = 0
        self.ready = threading.Event()
        # Ingress status writes the API server refused as such (400/403/422), by Ingress:
        # not sent again until the Ingress or the published addresses change.
        self._status_refused: RefusalMemo[tuple[str, str]] = RefusalMemo()

    # -- informer plumbing --------------------------------------------------------------
    def _on_event(self, _type: str, _obj: Obj) -> None:
        self.loop.add(SYNC)

    def _spec_changes(self) -> Callable[[str, Obj], None]:
        """An informer handler that asks for a sync unless only the status changed.

        Gateway API objects carry ``metadata.generation``, which the API server bumps on spec
        changes only; most updates to them are the status this controller writes itself, and
        a sync for each (two per route change) would double the work under route churn.
        """
        seen: dict[tuple[str, str], Any] = {}

        def on_event(etype: str, obj: Obj) -> None:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            gen = meta.get("generation")
            if etype == "DELETED":
                seen.pop(key, None)
            elif etype == "MODIFIED" and gen is not None and seen.get(key) == gen:
                return
            else:
                seen[key] = gen
            self.loop.add(SYNC)

        return on_event

    def request_sync(self) -> None:
        self.loop.add(SYNC)

    def start(self, sync_timeout: float = 60.0) -> None:
        # The initial lists build tens of thousands of long-lived, acyclic objects (decoded
        # JSON); the cyclic collector would re-scan the growing heap again and again while
        # they arrive. Off until they are in, then frozen so later full collections skip
        # them (they are still freed by reference counting when the informers drop them).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for inf in self.informers.values():
                inf.start()
            for inf in self.informers.values():
                if not inf.wait_for_sync(sync_timeout):
                    log.warning("informer_sync_timeout", informer=inf.name)
        finally:
            if collecting:
                gc.freeze()
                gc.enable()
        if self.writer is not None:
            self.writer.start()

    def stop(self) -> None:
        self.loop.stop()
        if self.writer is not None:
            self.writer.stop()
        for inf in [*self.informers.values(), *self.secret_informers.values()]:
            try:
                inf.stop()
            except OSError as exc:  # cancelling a watch can race with its socket closing
                log.info("informer_stop_error", informer=inf.name, error=str(exc))

    def _reconcile_secret_informers(self, wanted: frozenset[tuple[str, str]]) -> bool:
        """Start/stop per-Secret informers; True when new ones started (sync again)."""
        started = False
        for key in wanted - set(self.secret_informers):
            ns, name = key
            inf = Informer(self.client, SECRETS, ns, self._on_event,
                           field_selector=f"metadata.name={name}", name=f"secret-{ns}-{name}",
                           on_refused=self._refused)
            inf.start()
            inf.wait_for_sync(10.0)
            self.secret_informers[key] = inf
            started = True
        for key in set(self.secret_informers) - wanted:
            self.secret_informers.pop(key).stop()
        return started

    def snapshot(self) -> Snapshot:
        services = {(str(s["metadata"].get("namespace")), str(s["metadata"].get("name"))): s
                    for s in self.informers["services"].store.list()}
        for extra in ("publish", "gateway-services"):
            if extra in self.informers:
                for s in self.informers[extra].store.list():
                    services[(str(s["metadata"].get("namespace")),
                              str(s["metadata"]["name"]))] = s
        secrets: dict[tuple[str, str], Obj] = {}
        for key, inf in self.secret_informers.items():
            obj = inf.store.get(key[0], key[1])
            if obj is not None:
                secrets[key] = obj
        gateway = None
        if self.gateway is not None:
            gateway = GatewayInputs(
                classes=tuple(self.informers["gatewayclasses"].store.list()),
                gateways=tuple(self.informers["gateways"].store.list()),
                httproutes=tuple(self.informers["httproutes"].store.list()),
                grpcroutes=tuple(self.informers["grpcroutes"].store.list()),
                tlsroutes=tuple(self.informers["tlsroutes"].store.list()),
                tcproutes=tuple(self.informers["tcproutes"].store.list()),
                grants=tuple(self.informers["referencegrants"].store.list()),
                namespaces={str(n["metadata"]["name"]): n
                            for n in self.informers["namespaces"].store.list()},
                services=services, secrets=secrets)
            self._follow_publish_service(services)
        return Snapshot(
            tuple(self.informers["ingresses"].store.list()),
            tuple(self.informers["classes"].store.list()),
            services, slices_by_service(self.informers["slices"].store.list()), secrets,
            gateway, self._tcp_services())

    def _tcp_services(self) -> Obj | None:
        if self.tcp_services is None:
            return None
        return self.informers["tcp-services"].store.get(*self.tcp_services)

    def _follow_publish_service(self, services: Mapping[tuple[str, str], Obj]) -> None:
        """Gateway Services select the pods the ingress Service selects, with its policy."""
        assert self.gateway is not None
        svc = services.get(self.publish) if self.publish else None
        spec = (svc or {}).get("spec") or {}
        selector = spec.get("selector")
        if not isinstance(selector, Mapping) or not selector:
            return
        setup = replace(self.gateway, selector=dict(selector),
                        external_traffic_policy=str(spec.get("externalTrafficPolicy")
                                                    or "Cluster"))
        if setup != self.syncer.gateway:
            self.syncer.gateway = setup

    # -- loop -----------------------------------------------------------------------------
    def run(self) -> None:
        """Process the loop's keys in this thread until ``stop()``."""
        self.loop.add_after(HEALTH, self.health_s)
        self.loop.run()

    def handle(self, key: str) -> Outcome:
        """The loop's handler."""
        if key == HEALTH:
            return self.check_health()
        return self.sync_once()

    def check_health(self) -> Outcome:
        try:
            # Supervision: a dead HAProxy is restarted by a full apply on the next sync.
            if self.ready.is_set() and not self.syncer.plane.running():
                log.warning("haproxy_not_running", tail=self.syncer.plane.log_tail(300))
                self.syncer.applied = None
                self.loop.add(SYNC)
        finally:
            self.loop.add_after(HEALTH, self.health_s)  # periodic, whatever happened
        return Outcome.DONE

    def sync_once(self) -> Outcome:
        with self._lock:
            snap = self.snapshot()
            result = self.syncer.sync(snap)
            if result.model is not None and self._reconcile_secret_informers(
                result.model.secrets_wanted
            ):
                snap = self.snapshot()
                result = self.syncer.sync(snap)
            self.syncs += 1
            self.last_result = result
            self._emit_events(result.events, snap)
            if result.model is not None and result.error is None:
                self.ready.set()
                self._write_status(snap, result)
                self._write_gateway(snap, result)
            if result.error:
                log.warning("sync_failed", error=result.error)
                return Outcome.RETRY
            log.info("synced", reloaded=result.reloaded, runtime=result.runtime_commands,
                     certs=result.cert_updates)
            return Outcome.DONE

    def _object(self, ref: ObjectRef, snap: Snapshot) -> Obj | None:
        key = (ref.namespace or "", ref.name)
        if ref.kind == "Ingress":
            return self.informers["ingresses"].store.get(ref.namespace, ref.name)
        if ref.kind == "Secret":
            return snap.secrets.get(key)
        if ref.kind == "Service":
            return snap.services.get(key)
        if ref.kind == "ConfigMap":
            return snap.tcp_services
        informer = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes", "TLSRoute": "tlsroutes",
                    "TCPRoute": "tcproutes", "Gateway": "gateways"}.get(ref.kind)
        if informer is not None and informer in self.informers:
            return self.informers[informer].store.get(ref.namespace, ref.name)
        return None

    def _emit_events(self, events: list[Event], snap: Snapshot) -> None:
        # The same problem is reported once per change, not once per sync.
        current = set(events)
        for ev in sorted(current - self.last_events, key=repr):
            obj = self._object(ev.ref, snap)
            if obj is None:
                obj = {"apiVersion": "v1", "kind": ev.ref.kind,
                       "metadata": {"name": ev.ref.name, "namespace": ev.ref.namespace}}
            self.recorder.record(dict(obj), ev.type, ev.reason, ev.message)
        self.last_events = current

    def publish_addresses(self, snap: Snapshot) -> list[dict[str, Any]]:
        if self.publish is None:
            return []
        svc = snap.services.get(self.publish)
        if svc is None:
            return []
        out = []
        for item in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            entry = {k: item[k] for k in ("ip", "hostname") if k in item}
            if entry:
                out.append(entry)
        return out

    def _write_gateway(self, snap: Snapshot, result: SyncResult) -> None:
        if self.writer is None or result.plan is None or snap.gateway is None:
            return
        if self.syncer.gateway is None or not self.syncer.gateway.selector:
            # Without the ingress Service's selector a Gateway Service would select nothing.
            log.warning("gateway_waiting_for_publish_service", service=str(self.publish))
            return
        self.writer.setup = self.syncer.gateway

        def by_key(objs: tuple[Obj, ...]) -> dict[tuple[str, str], Obj]:
            return {(str(o["metadata"].get("namespace") or ""), str(o["metadata"]["name"])): o
                    for o in objs}

        g = snap.gateway
        routes = {kind: by_key(objs) for kind, objs in (
            ("HTTPRoute", g.httproutes), ("GRPCRoute", g.grpcroutes), ("TLSRoute", g.tlsroutes),
            ("TCPRoute", g.tcproutes))}
        self.writer.submit(result.plan, {str(c["metadata"]["name"]): c for c in g.classes},
                           by_key(g.gateways), routes, snap.services)

    def _write_status(self, snap: Snapshot, result: SyncResult) -> None:
        assert result.model is not None
        addresses = self.publish_addresses(snap)
        # No address: no ``ingress`` key at all. The API server stores an empty list as
        # absent (omitempty), so wanting ``[]`` would never match what it returns and every
        # sync would rewrite every Ingress status.
        wanted: dict[str, Any] = {"loadBalancer": {"ingress": addresses} if addresses else {}}
        self._status_refused.retain((r.namespace or "", r.name) for r in result.model.ours)
        for ref in result.model.ours:
            obj = self.informers["ingresses"].store.get(ref.namespace, ref.name)
            if obj is None:
                continue
            key, fp = (ref.namespace or "", ref.name), fingerprint(obj, wanted)
            if self._status_refused.blocked(key, fp):
                continue  # refused for this version and content: wait for a change
            try:
                write_status(self.client, INGRESSES, dict(obj), wanted)
                self._status_refused.done(key)
            except Refused as exc:
                # Every sync (endpoint churn) would send it again and be refused again:
                # report once, try again when the Ingress or the addresses change.
                if self._status_refused.refused(key, fp):
                    report_refusal(self.recorder, log, obj, exc, component="ingress",
                                   resource=INGRESSES.plural, field="status.loadBalancer")
            except KubeError as exc:
                # The next informer event (or sync) retries; status is never worth a crash.
                log.warning("status_write_failed", ingress=str(ref), error=str(exc))
