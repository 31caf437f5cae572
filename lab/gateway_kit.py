"""Gateway API objects for tests and benchmarks, and a harness world that serves them.

The objects are plain dicts shaped as the API server returns them (metadata with a
generation and a creationTimestamp, so that statuses and precedence can be checked).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ingress.gateway.model import CONTROLLER_NAME, Inputs, Setup
from ingress.sync import Snapshot
from lab.ingress_kit import Harness

_AGE = itertools.count()


def _meta(name: str, ns: str | None, created: str | None = None) -> dict[str, Any]:
    n = next(_AGE)  # objects made later are younger (route precedence breaks ties by age)
    m: dict[str, Any] = {"name": name, "generation": 1, "resourceVersion": "1",
                         "creationTimestamp": created or
                         f"2026-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"}
    if ns is not None:
        m["namespace"] = ns
    return m


def gateway_class(name: str = "portico", controller: str = CONTROLLER_NAME) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": _meta(name, None), "spec": {"controllerName": controller}}


def listener(name: str, port: int = 80, protocol: str = "HTTP", hostname: str | None = None,
             **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": port, "protocol": protocol, **extra}
    if hostname is not None:
        out["hostname"] = hostname
    return out


def gateway(name: str, *listeners: dict[str, Any], ns: str = "default",
            cls: str = "portico", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": _meta(name, ns),
            "spec": {"gatewayClassName": cls, "listeners": list(listeners), **spec}}


def backend_ref(svc: str, port: int = 80, weight: int | None = None,
                **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": svc, "port": port, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def http_rule(*backends: dict[str, Any], path: str | None = None, ptype: str = "PathPrefix",
              **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"backendRefs": list(backends), **extra}
    if path is not None:
        rule.setdefault("matches", [{"path": {"type": ptype, "value": path}}])
    return rule


def httproute(name: str, *rules: dict[str, Any], parents: list[dict[str, Any]] | None = None,
              hostnames: list[str] | None = None, ns: str = "default",
              gateway_name: str = "gw") -> dict[str, Any]:
    spec: dict[str, Any] = {"parentRefs": parents or [{"name": gateway_name}],
                            "rules": list(rules)}
    if hostnames:
        spec["hostnames"] = hostnames
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": _meta(name, ns), "spec": spec}


def reference_grant(name: str, ns: str, from_kind: str, from_ns: str, to_kind: str,
                    to_name: str | None = None) -> dict[str, Any]:
    to: dict[str, Any] = {"group": "", "kind": to_kind}
    if to_name:
        to["name"] = to_name
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
            "metadata": _meta(name, ns),
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": from_kind,
                               "namespace": from_ns}], "to": [to]}}


def setup(namespace: str = "portico") -> Setup:
    return Setup(namespace=namespace, selector={"app.kubernetes.io/component": "ingress"})


@dataclass
class GatewayWorld:
    """Gateway API objects next to a harness's Ingress world."""

    classes: list[dict[str, Any]] = field(default_factory=lambda: [gateway_class()])
    gateways: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    routes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    grants: list[dict[str, Any]] = field(default_factory=list)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, *objs: dict[str, Any]) -> None:
        for o in objs:
            key = (o["metadata"].get("namespace", ""), o["metadata"]["name"])
            if o["kind"] == "Gateway":
                self.gateways[key] = o
            elif o["kind"] in ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"):
                self.routes[key] = o
            elif o["kind"] == "ReferenceGrant":
                self.grants.append(o)
            elif o["kind"] == "GatewayClass":
                self.classes.append(o)
            elif o["kind"] == "Namespace":
                self.namespaces[o["metadata"]["name"]] = o

    def inputs(self, hx: Harness) -> Inputs:
        def of(kind: str) -> tuple[dict[str, Any], ...]:
            return tuple(r for r in self.routes.values() if r["kind"] == kind)

        return Inputs(classes=tuple(self.classes), gateways=tuple(self.gateways.values()),
                      httproutes=of("HTTPRoute"), grpcroutes=of("GRPCRoute"),
                      tlsroutes=of("TLSRoute"),
                      tcproutes=of("TCPRoute"), grants=tuple(self.grants),
                      namespaces=dict(self.namespaces), services=dict(hx.world.services),
                      secrets=dict(hx.world.secrets))

    def sync(self, hx: Harness) -> Any:
        """One pass of the harness's Syncer with these objects (Gateway API on)."""
        if hx.syncer.gateway is None:
            hx.syncer.gateway = setup()
        snap = hx.world.snapshot()
        full = Snapshot(snap.ingresses, snap.classes, snap.services, snap.slices,
                        snap.secrets, self.inputs(hx))
        res = hx.syncer.sync(full)
        assert res.error is None, res.error
        return res
