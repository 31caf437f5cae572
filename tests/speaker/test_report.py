"""speaker.report.Reporter: Service condition writes the API server refuses (422/403) are
reported once and not sent again until the Service or the wanted condition changes; other
failures are retried with the next state."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import Forbidden, Invalid, KubeError
from common.kube import resources as R
from speaker.core.l2_report import CONDITION_TYPE, ServiceCondition
from speaker.report import Reporter, ReportState


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.lines.append(("error", event, kw))


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def record(self, involved: dict[str, Any], type_: str, reason: str, message: str,
               action: str | None = None, resource: Any = None) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, message))

    def warning(self, involved: dict[str, Any], reason: str, message: str) -> None:
        self.record(involved, "Warning", reason, message)

    def normal(self, involved: dict[str, Any], reason: str, message: str) -> None:
        self.record(involved, "Normal", reason, message)


class Client:
    def __init__(self, error: KubeError | None) -> None:
        self.error = error
        self.replaces = 0

    def replace(self, res: Any, name: str, body: Any, namespace: str | None = None,
                subresource: str | None = None) -> Any:
        self.replaces += 1
        if self.error is not None:
            raise self.error
        return body


def service(rv: str, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": rv},
            "spec": {"type": "LoadBalancer"},
            "status": {"conditions": conditions or []}}


COND = ServiceCondition("default", "web", "True", "Announced", "node n1 answers ARP")


def setup(error: KubeError | None) -> tuple[Reporter, Client, Events, Log, dict[str, Any]]:
    objs = {"svc": service("1")}
    client, events, log = Client(error), Events(), Log()
    r = Reporter(client, events, lambda res, ns, name: objs["svc"] if res is R.SERVICES
                 else None, log)
    return r, client, events, log, objs


@pytest.mark.parametrize("error", [
    Invalid("PUT .../services/web/status: 422: Invalid value", 422, "Invalid",
            "Service \"web\" is invalid: status.conditions[0].reason: Invalid value",
            ("status.conditions[0].reason",)),
    Forbidden("PUT .../services/web/status: 403: forbidden", 403, "Forbidden",
              "services \"web\" is forbidden: cannot update resource \"services/status\""),
])
def test_refused_condition_write_is_reported_once_then_waits_for_a_change(
        error: KubeError) -> None:
    r, client, events, log, objs = setup(error)
    for _ in range(5):  # the same state again and again (RETRY_AFTER re-runs)
        r._write(ReportState(conditions=[COND]))
    assert client.replaces == 1
    refused = [e for e in events.events if e[2] == "StatusWriteRefused"]
    assert len(refused) == 1 and refused[0][:2] == ("web", "Warning")
    assert f"HTTP {error.status}" in refused[0][3] and "status write" in refused[0][3]
    [line] = [kw for _, ev, kw in log.lines if ev == "write_refused"]
    assert line["object"] == "default/web" and line["status"] == error.status
    assert line["field"] == f"status.conditions[{CONDITION_TYPE}]"
    # The Service changes (informer: new resourceVersion): worth another try.
    objs["svc"] = service("2")
    r._write(ReportState(conditions=[COND]))
    assert client.replaces == 2
    # So is a different condition for the same version.
    r._write(ReportState(conditions=[ServiceCondition("default", "web", "False", "NotAnnounced",
                                                      "no eligible node")]))
    assert client.replaces == 3
    # The API accepts again: the memo is cleared, nothing more is reported.
    client.error = None
    objs["svc"] = service("3")
    r._write(ReportState(conditions=[COND]))
    assert client.replaces == 4 and len(
        [e for e in events.events if e[2] == "StatusWriteRefused"]) == 3


def test_transient_failure_is_retried_with_the_next_state() -> None:
    r, client, events, _log, _objs = setup(KubeError("PUT ...: 500: etcd timeout", 500))
    for _ in range(3):
        r._write(ReportState(conditions=[COND]))
    assert client.replaces == 3 and not events.events


def test_refused_condition_clear_is_reported_once() -> None:
    r, client, events, _log, objs = setup(Forbidden("403", 403, "Forbidden", "forbidden"))
    objs["svc"] = service("1", [{"type": CONDITION_TYPE, "status": "True", "reason": "A",
                                 "message": "m", "lastTransitionTime": "2024-01-01T00:00:00Z"}])
    for _ in range(3):
        r._write(ReportState(conditions=[], clear=[("default", "web")]))
    assert client.replaces == 1
    assert [e[2] for e in events.events] == ["StatusWriteRefused"]
