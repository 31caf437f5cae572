"""common.kube.refusal: the memo of refused writes and the one report per refusal."""

from __future__ import annotations

from typing import Any

from common.errors import Invalid
from common.kube.refusal import REFUSED_WRITES, RefusalMemo, fingerprint, report_refusal


def test_memo_blocks_only_the_same_write_to_the_same_version() -> None:
    memo: RefusalMemo[str] = RefusalMemo()
    obj = {"metadata": {"name": "a", "resourceVersion": "7"}}
    fp = fingerprint(obj, {"b": 1, "a": [1, 2]})
    assert fp == fingerprint(obj, {"a": [1, 2], "b": 1})  # key order does not matter
    assert not memo.blocked("a", fp)
    assert memo.refused("a", fp) is True  # news: report it
    assert memo.blocked("a", fp) and memo.refused("a", fp) is False  # already reported
    assert not memo.blocked("a", fingerprint(obj, {"b": 2}))  # other content
    assert not memo.blocked("a", fingerprint({"metadata": {"resourceVersion": "8"}},
                                             {"b": 1, "a": [1, 2]}))  # object changed
    memo.retain(["other"])
    assert "a" not in memo and len(memo) == 0
    memo.refused("a", fp)
    memo.done("a")
    assert not memo.blocked("a", fp)


def test_report_is_an_event_a_log_line_and_a_metric() -> None:
    events: list[tuple[Any, ...]] = []
    lines: list[tuple[str, dict[str, Any]]] = []

    class Rec:
        def record(self, involved: dict[str, Any], type_: str, reason: str,
                   message: str) -> None:
            events.append((involved["metadata"]["name"], type_, reason, message))

    class Log:
        def warning(self, event: str, **kw: Any) -> None:
            lines.append((event, kw))

    metric = REFUSED_WRITES.labels("test", "services", "422")
    before = metric._value.get()
    err = Invalid("PATCH /x: 422: bad", 422, "Invalid", "status.x: Invalid value",
                  ("status.x",))
    obj = {"kind": "Service", "metadata": {"name": "web", "namespace": "default"}}
    report_refusal(Rec(), Log(), obj, err, component="test", resource="services")
    [(name, type_, reason, message)] = events
    assert (name, type_, reason) == ("web", "Warning", "StatusWriteRefused")
    assert "HTTP 422 Invalid (fields: status.x): status.x: Invalid value" in message
    [(event, kw)] = lines
    assert event == "write_refused" and kw["object"] == "default/web"
    assert (kw["field"], kw["status"], kw["kind"]) == ("status", 422, "Service")
    assert metric._value.get() == before + 1
