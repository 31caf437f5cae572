"""Writes what the Gateway API plan asks of the cluster (the I/O shell of ingress.gateway).

* The Gateways' LoadBalancer Services in Portico's namespace: created, patched to the plan,
  deleted when their Gateway is gone (found by label, so nothing is leaked).
* Statuses: GatewayClass, Gateway (addresses from its Service, listeners), and our entries of
  each route's ``status.parents`` (other controllers' entries are kept). Conditions keep
  their lastTransitionTime while their status stands and carry the object's generation, so
  an unchanged plan writes nothing.

Every write is independent: a refused or failed one is logged (and, for 400/403/422,
reported once as an Event) and the others go on.

Writes run on a loop of their own (``submit`` hands over the latest plan; a plan superseded
before it was written is skipped), so that a thousand status writes after a start never hold
up the data plane: the sync that changes HAProxy does not wait for the API server. Route
statuses go out on a few connections at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import structlog

from common.api.statusdiff import merge_diff, set_condition
from common.errors import KubeError, Refused
from common.kube.client import KubeClient
from common.kube.events import EventRecorder
from common.kube.loop import ReconcileLoop
from common.kube.refusal import RefusalMemo, fingerprint, report_refusal
from common.kube.resources import (
    GATEWAYCLASSES,
    GATEWAYS,
    GRPCROUTES,
    HTTPROUTES,
    SERVICES,
    TCPROUTES,
    TLSROUTES,
    Resource,
)
from common.kube.status import write_status
from common.kube.workqueue import Outcome
from ingress.gateway.model import FEATURES, SERVICE_LABEL, Cond, GatewayPlan, Setup

log = structlog.get_logger().bind(component="ingress.gateway")
ROUTE_RESOURCES = {"HTTPRoute": HTTPROUTES, "GRPCRoute": GRPCROUTES, "TLSRoute": TLSROUTES,
                   "TCPRoute": TCPROUTES}
WRITERS = 4  # route status writes in flight at once (API Priority and Fairness shares them)
Obj = Mapping[str, Any]


def _conditions(old: Any, conds: tuple[Cond, ...], generation: int | None,
                now: datetime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for typ, status, reason, message in conds:
        prior = [c for c in (old or []) if isinstance(c, Mapping) and c.get("type") == typ]
        out += set_condition(prior, typ, status, reason, message[:1000], now, generation)
    return out


class GatewayWriter:
    def __init__(self, client: KubeClient, recorder: EventRecorder, setup: Setup,
                 now: Callable[[], datetime] | None = None) -> None:
        self.client = client
        self.recorder = recorder
        self.setup = setup
        self.now = now or (lambda: datetime.now(UTC))
        self._refused: RefusalMemo[tuple[str, str, str]] = RefusalMemo()
        self._lock = threading.Lock()
        self._pending: tuple[Any, ...] | None = None
        self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="gateway-status")
        # Route -> (the object, our entries) last found up to date or written: an unchanged
        # route costs one identity check per plan, not a diff (1,000 routes, every sync).
        self._done: dict[tuple[str, str, str], tuple[Obj, Any]] = {}
        self.loop: ReconcileLoop[str] = ReconcileLoop("gateway-status", self._handle,
                                                      debounce=0.02, max_delay=0.5)

    def start(self) -> None:
        self.loop.start(1)

    def stop(self) -> None:
        self.loop.stop(5.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, plan: GatewayPlan, classes: Mapping[str, Obj],
               gateways: Mapping[tuple[str, str], Obj],
               routes: Mapping[str, Mapping[tuple[str, str], Obj]],
               services: Mapping[tuple[str, str], Obj]) -> None:
        """Write this plan soon, on the writer's loop (the latest plan wins)."""
        with self._lock:
            self._pending = (plan, classes, gateways, routes, services)
        self.loop.add("write")

    def _handle(self, _key: str) -> Outcome:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.write(*pending)
        return Outcome.DONE

    def write(self, plan: GatewayPlan, classes: Mapping[str, Obj],
              gateways: Mapping[tuple[str, str], Obj],
              routes: Mapping[str, Mapping[tuple[str, str], Obj]],
              services: Mapping[tuple[str, str], Obj]) -> None:
        """``routes``: by kind (HTTPRoute, TLSRoute, TCPRoute), then (namespace, name)."""
        now = self.now()
        self._services(plan, services)
        for name, conds in plan.class_status.items():
            gc = classes.get(name)
            if gc is None:
                continue
            gen = (gc.get("metadata") or {}).get("generation")
            old = (gc.get("status") or {})
            want = {"conditions": _conditions(old.get("conditions"), conds, gen, now),
                    "supportedFeatures": [{"name": f} for f in sorted(FEATURES)]}
            self._status(GATEWAYCLASSES, gc, want, "status")
        for key, st in plan.gateway_status.items():
            gw = gateways.get(key)
            if gw is None:
                continue
            self._gateway(gw, st, services.get((self.setup.namespace, st["service"])), now)
        jobs: list[tuple[tuple[str, str, str], Obj, Any, Any]] = []
        done: dict[tuple[str, str, str], tuple[Obj, Any]] = {}
        for rkey, parents in plan.route_status.items():
            kind, ns, name = rkey
            route = routes.get(kind, {}).get((ns, name))
            if route is None or kind not in ROUTE_RESOURCES:
                continue
            last = self._done.get(rkey)
            if last is not None and last[0] is route and last[1] == parents:
                done[rkey] = last
                continue
            jobs.append((rkey, route, parents,
                         self._pool.submit(self._route, ROUTE_RESOURCES[kind], route, parents,
                                           now)))
        for rkey, route, parents, job in jobs:
            if job.result():
                done[rkey] = (route, parents)
        self._done = done

    def _route(self, res: Resource, route: Obj, parents: list[dict[str, Any]],
               now: datetime) -> bool:
        gen = (route.get("metadata") or {}).get("generation")
        old = list(((route.get("status") or {}).get("parents")) or [])
        ours = [p for p in old if p.get("controllerName") == self.setup.controller_name]
        others = [p for p in old if p.get("controllerName") != self.setup.controller_name]
        new = []
        for p in parents:
            prior: Mapping[str, Any] = next(
                (o for o in ours if o.get("parentRef") == p["parentRef"]), {})
            new.append({"parentRef": p["parentRef"], "controllerName": p["controllerName"],
                        "conditions": _conditions(prior.get("conditions"),
                                                  p["conditions"], gen, now)})
        return self._status(res, route, {"parents": others + new}, "status.parents")

    def _gateway(self, gw: Obj, st: Mapping[str, Any], svc: Obj | None, now: datetime) -> None:
        meta = gw.get("metadata") or {}
        gen = meta.get("generation")
        old = gw.get("status") or {}
        ips = [str(i["ip"]) for i in (((svc or {}).get("status") or {}).get("loadBalancer")
                                      or {}).get("ingress") or [] if i.get("ip")]
        def has(li: Mapping[str, Any], typ: str) -> bool:
            return any(c[0] == typ and c[1] for c in li["conditions"])

        accepted = [li for li in st["listeners"] if has(li, "Accepted")]
        conds: list[Cond] = []
        if st.get("addresses_problem"):
            conds.append(("Accepted", False, "UnsupportedAddress", st["addresses_problem"]))
        elif not accepted:
            # The spec's ListenersNotValid: False when no listener can be served at all,
            # True when some can.
            conds.append(("Accepted", False, "ListenersNotValid",
                          "No listener is valid (see status.listeners)"))
        elif len(accepted) < len(st["listeners"]):
            conds.append(("Accepted", True, "ListenersNotValid",
                          "Some listeners are not valid (see status.listeners)"))
        else:
            conds.append(("Accepted", True, "Accepted", "Gateway accepted"))
        if not accepted:
            conds.append(("Programmed", False, "Invalid", "No listener can be served"))
        elif ips:
            conds.append(("Programmed", True, "Programmed",
                          f"Served at {', '.join(ips)} by the ingress tier"))
        else:
            conds.append(("Programmed", False, "AddressNotAssigned",
                          f"Waiting for an address on Service {self.setup.namespace}/"
                          f"{st['service']}"))
        old_listeners = {li.get("name"): li for li in old.get("listeners") or []}
        listeners = []
        for li in st["listeners"]:
            prior = old_listeners.get(li["name"], {})
            listeners.append({"name": li["name"], "supportedKinds": li["supportedKinds"],
                              "attachedRoutes": li["attachedRoutes"],
                              "conditions": _conditions(prior.get("conditions"),
                                                        li["conditions"], gen, now)})
        want: dict[str, Any] = {
            "conditions": _conditions(old.get("conditions"), tuple(conds), gen, now),
            "listeners": listeners,
        }
        if ips:
            want["addresses"] = [{"type": "IPAddress", "value": ip} for ip in ips]
        else:
            want["addresses"] = None
        self._status(GATEWAYS, gw, want, "status")

    def _status(self, res: Resource, obj: Obj, want: dict[str, Any], field: str) -> bool:
        """True when the object's status is as wanted (now or already)."""
        meta = obj.get("metadata") or {}
        key = (res.kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        fp = fingerprint(obj, want)
        if self._refused.blocked(key, fp):
            return False
        try:
            write_status(self.client, res, dict(obj), want)
            self._refused.done(key)
            return True
        except Refused as exc:
            if self._refused.refused(key, fp):
                report_refusal(self.recorder, log, obj, exc, component="ingress",
                               resource=res.plural, field=field)
        except KubeError as exc:
            log.warning("status_write_failed", kind=res.kind, name=key[2], namespace=key[1],
                        error=str(exc))
        return False

    def _services(self, plan: GatewayPlan, services: Mapping[tuple[str, str], Obj]) -> None:
        ns = self.setup.namespace
        for name, body in plan.services.items():
            have = services.get((ns, name))
            try:
                if have is None:
                    self.client.create(SERVICES, body, namespace=ns)
                    log.info("gateway_service_created", service=name,
                             gateway=body["metadata"]["annotations"])
                    continue
                hm = have.get("metadata") or {}
                labels: dict[str, Any] = dict(hm.get("labels") or {})
                annotations: dict[str, Any] = dict(hm.get("annotations") or {})
                current = {"metadata": {"labels": labels, "annotations": annotations},
                           "spec": {k: (have.get("spec") or {}).get(k)
                                    for k in body["spec"]}}
                wanted: dict[str, Any] = {"metadata": {
                    "labels": {**labels, **body["metadata"]["labels"]},
                    "annotations": {**annotations, **body["metadata"]["annotations"]}},
                    "spec": body["spec"]}
                if "lb.portico.dev/loadBalancerIPs" not in body["metadata"]["annotations"]:
                    wanted["metadata"]["annotations"].pop("lb.portico.dev/loadBalancerIPs", None)
                patch = merge_diff(current, wanted)
                if patch is not None:
                    self.client.patch(SERVICES, name, patch, namespace=ns)
            except KubeError as exc:
                log.warning("gateway_service_write_failed", service=name, error=str(exc))
        for (sns, sname), svc in services.items():
            labels = (svc.get("metadata") or {}).get("labels") or {}
            if sns != ns or labels.get(SERVICE_LABEL) != "true" or sname in plan.services:
                continue
            try:
                self.client.delete(SERVICES, sname, namespace=ns,
                                   uid=(svc.get("metadata") or {}).get("uid"))
                log.info("gateway_service_deleted", service=sname)
            except KubeError as exc:
                log.warning("gateway_service_delete_failed", service=sname, error=str(exc))
