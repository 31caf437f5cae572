"""One synchronisation pass: cluster snapshot -> HAProxy (the orchestration shell).

Decisions are pure (``ingress.core``); this module only sequences them against the data
plane and remembers what the running HAProxy holds (a cache of HAProxy's state, which is
rebuilt by a full apply whenever the process starts):

* render with all slots empty = the *structural* fingerprint; equal to the applied one means
  no reload: endpoint changes become Runtime API commands, certificate content changes
  become ``set ssl cert`` + ``commit ssl cert``;
* otherwise the full render is checked with ``haproxy -c`` in a scratch directory; if the
  check fails, the Ingresses owning the failing lines are quarantined (Event
  ``ConfigRejected``) and the render is retried without them; if no owner is found the last
  good config keeps serving;
* nothing changed -> nothing happens.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from common.api.model import ObjectRef
from ingress.core import tcp_services
from ingress.core.model import (
    MIN_SLOTS,
    Backend,
    Config,
    Endpoint,
    Event,
    Memo,
    Model,
    assign_slots,
    build_model,
    endpoints_for,
    slot_count,
)
from ingress.core.render import (
    MAP_FILES,
    Rendered,
    Settings,
    extend,
    is_plain,
    render,
    spare_name,
)
from ingress.core.runtime import all_commands, map_commands
from ingress.errors import HAProxyError, RuntimeApiError, UnsafeToken
from ingress.gateway.model import GatewayPlan, Setup, build
from ingress.gateway.model import Inputs as GatewayInputs
from ingress.gateway.model import Memo as GatewayMemo
from ingress.gateway.render import pinned as gateway_pinned
from ingress.gateway.render import render_gateway
from ingress.haproxy import DataPlane, certificate_problem

log = structlog.get_logger().bind(component="ingress.sync")
Obj = Mapping[str, Any]

SYNCS = Counter("portico_ingress_syncs_total", "Synchronisation passes", ["result"])
RELOADS = Counter("portico_ingress_reloads_total", "HAProxy reloads (or starts)")
RUNTIME = Counter("portico_ingress_runtime_updates_total", "Runtime API commands sent")
CONFIG_ERRORS = Counter("portico_ingress_config_errors_total", "Renders rejected by haproxy -c")
CERT_UPDATES = Counter("portico_ingress_cert_updates_total", "Certificates rotated at runtime")
BACKENDS = Gauge("portico_ingress_backends", "Backends in the applied config")
SYNC_SECONDS = Histogram("portico_ingress_sync_seconds", "Duration of a synchronisation pass")

MAX_QUARANTINE_ROUNDS = 3  # each round drops the owners named by haproxy -c; then give up


@dataclass(frozen=True, slots=True)
class Snapshot:
    ingresses: tuple[Obj, ...]
    classes: tuple[Obj, ...]
    services: Mapping[tuple[str, str], Obj]
    slices: Mapping[tuple[str, str], tuple[Obj, ...]]  # (namespace, service) -> slices
    secrets: Mapping[tuple[str, str], Obj]
    gateway: GatewayInputs | None = None  # None: Gateway API not enabled
    tcp_services: Obj | None = None  # ingress-nginx's tcp-services ConfigMap, if watched


@dataclass(slots=True)
class SyncResult:
    events: list[Event] = field(default_factory=list)
    reloaded: bool = False
    runtime_commands: int = 0
    cert_updates: int = 0
    error: str | None = None
    model: Model | None = None
    plan: GatewayPlan | None = None


def slices_by_service(slices: Iterable[Obj]) -> dict[tuple[str, str], tuple[Obj, ...]]:
    out: dict[tuple[str, str], list[Obj]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if isinstance(svc, str):
            out.setdefault((str(meta.get("namespace", "")), svc), []).append(sl)
    return {k: tuple(v) for k, v in out.items()}


def _quarantinable(snap: Snapshot) -> list[tuple[str, tuple[Obj, ...]]]:
    """Objects haproxy -c can blame, by kind."""
    out = [("Ingress", snap.ingresses)]
    if snap.gateway is not None:
        g = snap.gateway
        out += [("Gateway", g.gateways), ("HTTPRoute", g.httproutes),
                ("GRPCRoute", g.grpcroutes), ("TLSRoute", g.tlsroutes), ("TCPRoute", g.tcproutes)]
    return out


class Syncer:
    def __init__(self, plane: DataPlane, settings: Settings, cfg: Config | None = None,
                 gateway: Setup | None = None) -> None:
        self.plane = plane
        self.gateway = gateway  # Gateway API: where its Services live, whom they select
        self.plan = GatewayPlan()
        self.tcp: list[tcp_services.TcpService] = []
        self.gw_memo: GatewayMemo = {}
        self.settings = settings
        self.cfg = cfg or Config()
        self.applied: Rendered | None = None  # what the running HAProxy was given
        self.real_backends: set[str] = set()  # backends with a section of their own
        self.aliases: dict[str, str] = {}  # backend -> spare standing in for it
        self.slots: dict[str, int] = {}
        self.assigned: dict[str, tuple[Endpoint | None, ...]] = {}
        self.certs: dict[str, bytes] = {}
        # Ingress (ref) -> resourceVersion that broke haproxy -c; retried when it changes.
        self.quarantine: dict[ObjectRef, str] = {}
        self.memo: Memo = {}  # parse_ingress results by object identity
        # endpoints_for results by backend, valid while the same Service/slice objects stand
        self.ep_memo: dict[str, tuple[Obj | None, tuple[Obj, ...], tuple[Endpoint, ...]]] = {}

    def _model(self, snap: Snapshot, result: SyncResult) -> Model:
        def rv(o: Obj) -> str:
            return str((o.get("metadata") or {}).get("resourceVersion", ""))

        def ref(o: Obj) -> ObjectRef:
            m = o.get("metadata") or {}
            return ObjectRef("Ingress", str(m.get("name", "")), str(m.get("namespace", "")))

        ingresses: Iterable[Obj] = snap.ingresses
        if self.quarantine:
            live = {ObjectRef(kind, str((o.get("metadata") or {}).get("name", "")),
                              str((o.get("metadata") or {}).get("namespace", "")))
                    for kind, objs in _quarantinable(snap) for o in objs}
            self.quarantine = {r: v for r, v in self.quarantine.items() if r in live}
            ingresses = [i for i in snap.ingresses if self.quarantine.get(ref(i)) != rv(i)]
        model = build_model(ingresses, snap.classes, snap.services, snap.secrets, self.cfg,
                            self.memo)
        result.events += model.events
        if self.gateway is not None and snap.gateway is not None:
            gw_in = snap.gateway
            if self.quarantine:
                def keep(kind: str, objs: tuple[Obj, ...]) -> tuple[Obj, ...]:
                    return tuple(o for o in objs if self.quarantine.get(
                        ObjectRef(kind, str((o.get("metadata") or {}).get("name", "")),
                                  str((o.get("metadata") or {}).get("namespace", "")))) != rv(o))
                gw_in = replace(gw_in, gateways=keep("Gateway", gw_in.gateways),
                                httproutes=keep("HTTPRoute", gw_in.httproutes),
                                grpcroutes=keep("GRPCRoute", gw_in.grpcroutes),
                                tlsroutes=keep("TLSRoute", gw_in.tlsroutes),
                                tcproutes=keep("TCPRoute", gw_in.tcproutes))
            plan = build(gw_in, self.gateway, self.gw_memo)
            self.plan = plan
            result.plan = plan
            result.events += plan.events
            model = replace(model, backends={**model.backends, **plan.backends},
                            certs=model.certs + plan.certs,
                            secrets_wanted=model.secrets_wanted | plan.secrets_wanted)
        self.tcp, tcp_backends, tcp_events = tcp_services.parse(
            snap.tcp_services, frozenset({self.settings.http_port, self.settings.https_port}))
        result.events += tcp_events
        if tcp_backends:
            model = replace(model, backends={**model.backends, **tcp_backends})
        certs = []
        for c in model.certs:
            problem = certificate_problem(c.pem)
            if problem:
                result.events.append(Event(c.secret, "Warning", "InvalidSecret", problem))
                continue
            certs.append(c)
        return replace(model, certs=tuple(certs))

    def sync(self, snap: Snapshot) -> SyncResult:
        start = time.monotonic()
        result = SyncResult()
        # A pass allocates ~10 objects per Ingress and frees none of them in cycles; with the
        # collector on, every few thousand allocations it re-scans the informers' 30,000
        # objects: measured, that doubled model build + render at 10,000 Ingresses (0.81 s ->
        # 0.39 s without it). Off for the pass; ``_apply`` collects once after a reload.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._sync(snap, result)
            SYNCS.labels("error" if result.error else "ok").inc()
        finally:
            if collecting:
                gc.enable()
            SYNC_SECONDS.observe(time.monotonic() - start)
        return result

    def _endpoints(self, name: str, be: Backend, snap: Snapshot) -> tuple[Endpoint, ...]:
        key = (be.namespace, be.service)
        svc, slices = snap.services.get(key), snap.slices.get(key, ())
        hit = self.ep_memo.get(name)
        if hit is not None and hit[0] is svc and len(hit[1]) == len(slices) and all(
            a is b for a, b in zip(hit[1], slices, strict=True)
        ):
            return hit[2]
        eps = endpoints_for(be, svc, slices)
        self.ep_memo[name] = (svc, slices, eps)
        return eps

    def _aliases_for(self, model: Model, slots: dict[str, int]) -> dict[str, str] | None:
        """Spare assignments letting this model run on the applied config, or None."""
        pinned = ({model.default_backend} | {r.backend for r in model.routes
                                             if r.kind == "Regex"}
                  | gateway_pinned(self.plan) | {t.backend for t in self.tcp})
        aliases: dict[str, str] = {}
        for name, spare in self.aliases.items():
            be = model.backends.get(name)
            if be is not None and is_plain(be, slots[name]) and name not in pinned:
                aliases[name] = spare
        used = set(aliases.values())
        free = [spare_name(i) for i in range(self.settings.spare_backends)
                if spare_name(i) not in used]
        for name, be in sorted(model.backends.items()):
            if name in self.real_backends or name in aliases:
                continue
            if name in pinned or not is_plain(be, slots[name]) or not free:
                return None
            aliases[name] = free.pop(0)
        return aliases

    def _render(self, model: Model, slots: Mapping[str, int],
                assigned: Mapping[str, tuple[Endpoint | None, ...]] | None,
                aliases: Mapping[str, str] | None = None) -> Rendered:
        """The Ingress config plus the Gateway frontends (when the Gateway API is on)."""
        base = render(model, slots, assigned, self.settings, aliases)
        lines = tcp_services.frontend_lines(self.tcp, self.settings.bind_addresses)
        if self.gateway is None:
            return extend(base, lines, {}, {}) if lines else base
        alias = aliases or {}
        proxy = " accept-proxy" if self.settings.accept_proxy else ""
        gw_lines, maps, files = render_gateway(self.plan, lambda n: alias.get(n, n),
                                               self.settings.bind_addresses, proxy)
        return extend(base, lines + gw_lines, maps, files)

    def _sync(self, snap: Snapshot, result: SyncResult) -> None:
        for _round in range(MAX_QUARANTINE_ROUNDS + 1):
            model = self._model(snap, result)
            result.model = model
            slots: dict[str, int] = {}
            assigned: dict[str, tuple[Endpoint | None, ...]] = {}
            for name, be in model.backends.items():
                before = self.ep_memo.get(name)
                eps = self._endpoints(name, be, snap)
                if before is not None and before[2] is eps and name in self.assigned:
                    # Same endpoints object as last pass: the slots need no new plan.
                    slots[name], assigned[name] = self.slots[name], self.assigned[name]
                    continue
                slots[name] = slot_count(self.slots.get(name), len(eps))
                assigned[name] = assign_slots(self.assigned.get(name, ()), eps, slots[name])
            running = self.plane.running()
            if running and self.applied is not None:
                aliases = self._aliases_for(model, slots)
                if aliases is not None:
                    light = self._render(model, slots, None, aliases)
                    if light.fixed() == self.applied.fixed():
                        self._runtime(model, light, slots, assigned, aliases, result)
                        return
            full = self._render(model, slots, assigned)
            check = self.plane.check(full)
            if check.ok:
                self._apply(full, self._render(model, slots, None), model, slots,
                            assigned, result)
                BACKENDS.set(len(model.backends))
                return
            CONFIG_ERRORS.inc()
            owners = {full.owners[n] for n in check.bad_lines if n in full.owners}
            owners = {o for o in owners
                      if o.kind in ("Ingress", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute",
                                    "TCPRoute")}
            log.warning("config_rejected", output=check.output[-500:], owners=len(owners))
            if not owners:
                result.error = "rendered config failed haproxy -c; last good config kept"
                return
            by_ref = {ObjectRef(kind, str((i.get("metadata") or {}).get("name", "")),
                                str((i.get("metadata") or {}).get("namespace", ""))): i
                      for kind, objs in _quarantinable(snap) for i in objs}
            for o in owners:
                obj = by_ref.get(o)
                if obj is not None:
                    self.quarantine[o] = str((obj.get("metadata") or {}).get("resourceVersion"))
                    result.events.append(Event(o, "Warning", "ConfigRejected",
                                               "HAProxy rejected the configuration rendered "
                                               f"from this {o.kind}; it is not routed"))
        result.error = "config still rejected after quarantining; last good config kept"

    def _apply(self, full: Rendered, fingerprint: Rendered, model: Model, slots: dict[str, int],
               assigned: dict[str, tuple[Endpoint | None, ...]], result: SyncResult) -> None:
        try:
            self.plane.apply(full)
        except (HAProxyError, RuntimeApiError, OSError) as exc:
            result.error = f"apply failed: {exc}"
            self.applied = None  # unknown state: next pass applies again
            return
        RELOADS.inc()
        result.reloaded = True
        # A full render leaves hundreds of thousands of new long-lived objects; collect now,
        # while HAProxy already serves the new config, rather than in the middle of the next
        # (fast-path) sync, where a full collection of a 10,000-Ingress heap costs ~0.3 s.
        gc.collect()
        self.applied = fingerprint  # slots rendered empty: comparable with later renders
        self.real_backends = set(model.backends)
        self.aliases = {}
        self.slots, self.assigned = slots, assigned
        self.certs = dict(full.certs)

    def _runtime(self, model: Model, light: Rendered, slots: dict[str, int],
                 assigned: dict[str, tuple[Endpoint | None, ...]], aliases: dict[str, str],
                 result: SyncResult) -> None:
        assert self.applied is not None
        # Server slots by the name HAProxy knows them under (spares for aliased backends).
        old = {self.aliases.get(n, n): a for n, a in self.assigned.items()}
        new = {aliases.get(n, n): a for n, a in assigned.items()}
        freed = set(self.aliases.values()) - set(aliases.values())
        for spare in freed:
            new[spare] = (None,) * MIN_SLOTS
        try:
            servers = all_commands({k: v for k, v in old.items() if k in new},
                                   {k: v for k, v in new.items() if k not in freed})
            drains = all_commands(old, {k: new[k] for k in freed})
            adds, dels = map_commands(self.applied.parsed_maps, light.parsed_maps)
            commands = servers + adds + dels + drains
            replies = self.plane.runtime.execute(commands)
            bad = [(c, r) for c, r in zip(commands, replies, strict=True)
                   if r and not r.startswith("IP changed") and "no need to change" not in r]
            if bad:
                raise RuntimeApiError(f"{bad[0][0]!r} -> {bad[0][1][:200]!r}")
        except (RuntimeApiError, UnsafeToken) as exc:
            log.warning("runtime_update_failed", error=str(exc))
            self.applied = None  # reapply everything on the next pass
            result.error = str(exc)
            return
        if adds or dels:
            # Keep the files in step so that a restart or reload sees the same maps.
            self.plane.write_maps(light)
            self.applied = Rendered({**self.applied.files, **{
                k: v for k, v in light.files.items() if k in MAP_FILES}},
                self.applied.certs, self.applied.owners, light.parsed_maps)
        RUNTIME.inc(len(commands))
        result.runtime_commands = len(commands)
        self.slots, self.assigned, self.aliases = slots, assigned, aliases
        new_certs = {f"certs/{c.name}.pem": c.pem for c in model.certs}
        for name, pem in new_certs.items():
            if self.certs.get(name) != pem:
                if self.plane.update_cert(name, pem):
                    CERT_UPDATES.inc()
                    result.cert_updates += 1
                    self.certs[name] = pem
                else:
                    self.applied = None
                    result.error = f"certificate {name} rotation failed; reload next pass"
