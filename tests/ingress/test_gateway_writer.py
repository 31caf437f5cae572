"""The Gateway API writer: statuses as the spec words them, other controllers' route entries
kept, nothing written twice, the Gateways' Services created, patched and removed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from common.kube.client import KubeClient
from common.kube.events import EventRecorder
from common.kube.resources import Resource
from ingress.gateway.model import SERVICE_LABEL, Inputs, build, service_name
from ingress.gateway_writer import GatewayWriter
from lab.gateway_kit import (
    backend_ref,
    gateway,
    gateway_class,
    http_rule,
    httproute,
    listener,
    setup,
)

NOW = datetime(2026, 12, 7, tzinfo=UTC)


class Recorder:
    """A KubeClient stand-in that records writes (the writer only creates, patches, deletes)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, Any]] = []

    def create(self, res: Resource, body: Any, namespace: str | None = None) -> Any:
        self.calls.append(("create", res.plural, body["metadata"]["name"], body))
        return body

    def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None,
              subresource: str | None = None) -> Any:
        self.calls.append(("patch", res.plural + (f"/{subresource}" if subresource else ""),
                           name, patch))
        return patch

    def delete(self, res: Resource, name: str, namespace: str | None = None,
               uid: str | None = None) -> None:
        self.calls.append(("delete", res.plural, name, uid))


def writer() -> tuple[GatewayWriter, Recorder]:
    rec = Recorder()
    client = cast(KubeClient, rec)
    return GatewayWriter(client, EventRecorder(client, "test"), setup(), now=lambda: NOW), rec


def key(o: dict[str, Any]) -> tuple[str, str]:
    return (o["metadata"].get("namespace", ""), o["metadata"]["name"])


def write(w: GatewayWriter, inp: Inputs, services: dict[tuple[str, str], Any] | None = None,
          routes: list[dict[str, Any]] | None = None) -> None:
    plan = build(inp, setup())
    w.write(plan, {c["metadata"]["name"]: c for c in inp.classes},
            {key(g): g for g in inp.gateways},
            {"HTTPRoute": {key(r): r for r in (routes or list(inp.httproutes))}},
            services or dict(inp.services))


def status_of(rec: Recorder, plural: str, name: str) -> dict[str, Any]:
    (patch,) = [c[3] for c in rec.calls if c[:3] == ("patch", plural + "/status", name)]
    return cast(dict[str, Any], patch["status"])


def test_statuses_carry_generation_and_spec_reasons() -> None:
    w, rec = writer()
    gw = gateway("gw", listener("http"), listener("udp", 53, "UDP"))
    gw["metadata"]["generation"] = 3
    svc = {"metadata": {"name": "svc", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}
    inp = Inputs(classes=(gateway_class(),), gateways=(gw,),
                 httproutes=(httproute("r", http_rule(backend_ref("svc"))),),
                 services={("default", "svc"): svc})
    write(w, inp)
    st = status_of(rec, "gateways", "gw")
    conds = {c["type"]: c for c in st["conditions"]}
    assert (conds["Accepted"]["status"], conds["Accepted"]["reason"]) == ("True",
                                                                          "ListenersNotValid")
    assert conds["Accepted"]["observedGeneration"] == 3
    # No address yet (the Service was just created): not Programmed, and why.
    assert conds["Programmed"]["reason"] == "AddressNotAssigned"
    assert [li["attachedRoutes"] for li in st["listeners"]] == [1, 0]
    gc = status_of(rec, "gatewayclasses", "portico")
    assert {"name": "HTTPRoute"} in gc["supportedFeatures"]
    created = [c for c in rec.calls if c[0] == "create"]
    assert [c[2] for c in created] == [service_name("default", "gw")]


def test_only_invalid_listeners_mean_not_accepted() -> None:
    w, rec = writer()
    inp = Inputs(classes=(gateway_class(),), gateways=(gateway("gw", listener("u", 53, "UDP")),))
    write(w, inp)
    conds = {c["type"]: c for c in status_of(rec, "gateways", "gw")["conditions"]}
    assert (conds["Accepted"]["status"], conds["Accepted"]["reason"]) == ("False",
                                                                          "ListenersNotValid")
    assert conds["Programmed"]["status"] == "False"


def test_other_controllers_route_entries_are_kept_and_nothing_is_rewritten() -> None:
    w, rec = writer()
    route = httproute("r", http_rule(backend_ref("missing")))
    theirs = {"parentRef": {"name": "elsewhere"}, "controllerName": "example.com/other",
              "conditions": [{"type": "Accepted", "status": "True"}]}
    route["status"] = {"parents": [theirs]}
    inp = Inputs(classes=(gateway_class(),), gateways=(gateway("gw", listener("http")),),
                 httproutes=(route,))
    write(w, inp)
    parents = status_of(rec, "httproutes", "r")["parents"]
    assert parents[0] == theirs
    ours = {c["type"]: c["reason"] for c in parents[1]["conditions"]}
    assert ours == {"Accepted": "Accepted", "ResolvedRefs": "BackendNotFound"}
    # The same plan and objects again: no route status write at all.
    before = len([c for c in rec.calls if c[1] == "httproutes/status"])
    write(w, inp)
    assert len([c for c in rec.calls if c[1] == "httproutes/status"]) == before


def test_service_of_a_deleted_gateway_is_removed() -> None:
    w, rec = writer()
    stale = {"metadata": {"name": "portico-gw-0123456789", "namespace": "portico", "uid": "u1",
                          "labels": {SERVICE_LABEL: "true"}}, "spec": {}}
    other = {"metadata": {"name": "unrelated", "namespace": "portico", "uid": "u2"}, "spec": {}}
    inp = Inputs(classes=(gateway_class(),))
    write(w, inp, services={("portico", "portico-gw-0123456789"): stale,
                            ("portico", "unrelated"): other})
    assert [c for c in rec.calls if c[0] == "delete"] == [
        ("delete", "services", "portico-gw-0123456789", "u1")]
