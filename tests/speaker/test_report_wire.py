"""speaker.report.Reporter writes portico.dev/L2Wire on a fake clock: at once when ownership
changes (with the announcement time), figures at most once per --wire-report-interval and
only when they changed, never with interval 0; the refresh schedules itself on the loop."""

from __future__ import annotations

import ipaddress
from typing import Any

from common.kube import resources as R
from common.kube.status import find_condition
from lab.fakeclock import FakeClock
from speaker.core.l2_report import (
    ANNOUNCE_WAIT,
    CONDITION_TYPE,
    NOT_ANNOUNCED_YET,
    WIRE_CONDITION_TYPE,
    ServiceCondition,
    VipWire,
    WireTarget,
)
from speaker.report import REPORT, Reporter, ReportState
from tests.speaker.test_report import Client, Events, Log, service

V4 = ipaddress.IPv4Address("192.0.2.210")
T0 = 1_796_625_601.0  # 2026-12-07T06:40:01Z
TARGET = WireTarget("default", "web", ((V4, "node2", frozenset({"pl-eth0"})),))


class Recorder(Client):
    """Keeps the written Service, as the informer would show it."""

    def __init__(self, objs: dict[str, Any]) -> None:
        super().__init__(None)
        self.objs = objs
        self.bodies: list[dict[str, Any]] = []

    def replace(self, res: Any, name: str, body: Any, namespace: str | None = None,
                subresource: str | None = None) -> Any:
        super().replace(res, name, body, namespace, subresource)
        self.bodies.append(body)
        self.objs["svc"] = body
        return body


def make(interval: float) -> tuple[Reporter, Recorder, dict[Any, VipWire], FakeClock]:
    clock = FakeClock()
    objs = {"svc": service("1")}
    client = Recorder(objs)
    figures: dict[Any, VipWire] = {}
    r = Reporter(client, Events(), lambda res, ns, name: objs["svc"] if res is R.SERVICES
                 else None, Log(), clock=clock, wire=lambda: dict(figures), me="node2",
                 wire_interval=interval)
    return r, client, figures, clock


def wire_message(client: Recorder) -> str:
    cond = find_condition(client.objs["svc"]["status"]["conditions"], WIRE_CONDITION_TYPE)
    assert cond is not None
    return str(cond["message"])


def test_ownership_change_is_written_at_once_figures_at_most_once_per_interval() -> None:
    r, client, figures, clock = make(300.0)
    figures[V4] = VipWire(T0, None, 0)
    # The gain (replan) comes before the responder's first announcement: held for it.
    r.submit(ReportState(wire=[TARGET]))
    assert r.loop.step() and client.replaces == 0
    # The first announcement (the responder pokes): one write, with its time.
    figures[V4] = VipWire(T0, T0, 0)
    r.poke()
    assert r.loop.step() and client.replaces == 1
    assert "gratuitous ARP sent 2026-12-07T06:40:01Z; 0 requests" in wire_message(client)
    # Answers come in; replans (no ownership change) submit again: nothing is written.
    figures[V4] = VipWire(T0, T0 + 2, 1532)
    for _ in range(3):
        clock.advance(60)
        r.submit(ReportState(wire=[TARGET]))
        assert r.loop.step()
    assert client.replaces == 1
    # The loop scheduled the refresh itself: 300 s after the last write, once.
    (due, key), *_ = r.loop.queue.delayed()
    assert key == REPORT
    clock.advance(due - clock.monotonic())
    assert r.loop.step() and client.replaces == 2
    assert wire_message(client).endswith("1532 requests answered since 06:40:01Z")
    # Unchanged figures: the periodic run writes nothing.
    clock.advance(300)
    assert r.loop.step() and client.replaces == 2
    # A new gain (ownership moved away and back), already announced: at once.
    figures[V4] = VipWire(T0 + 900, T0 + 900, 0)
    r.submit(ReportState(wire=[TARGET]))
    assert r.loop.step() and client.replaces == 3
    # The L2Announced condition is the other writer's business: untouched here.
    assert find_condition(client.objs["svc"]["status"]["conditions"], CONDITION_TYPE) is None


def test_interval_zero_writes_only_on_ownership_changes() -> None:
    r, client, figures, clock = make(0.0)
    figures[V4] = VipWire(T0, T0, 0)
    r.submit(ReportState(wire=[TARGET]))
    assert r.loop.step() and client.replaces == 1
    assert r.loop.queue.delayed() == []  # no refresh scheduled
    figures[V4] = VipWire(T0, T0 + 2, 99)
    clock.advance(86400)
    r.poke()
    assert r.loop.step() and client.replaces == 1


def test_both_conditions_in_one_run_and_cleared_together() -> None:
    r, client, figures, _clock = make(300.0)
    figures[V4] = VipWire(T0, T0, 5)
    cond = ServiceCondition("default", "web", "True", "Announced",
                            "192.0.2.210 announced by node node2 (pl-eth0)")
    r.submit(ReportState(conditions=[cond], wire=[TARGET]))
    assert r.loop.step() and client.replaces == 2
    conds = client.objs["svc"]["status"]["conditions"]
    assert {c["type"] for c in conds} == {CONDITION_TYPE, WIRE_CONDITION_TYPE}
    # The Service lost its address: both go in one write.
    r.submit(ReportState(conditions=[], wire=[], clear=[("default", "web")]))
    assert r.loop.step() and client.replaces == 3
    assert client.objs["svc"]["status"]["conditions"] == []


def test_an_announcement_that_does_not_come_is_reported_after_the_wait() -> None:
    """No valid answer lease: the gained VIP is not announced; after ANNOUNCE_WAIT the
    condition says so (the loop scheduled that look itself)."""
    r, client, figures, clock = make(300.0)
    figures[V4] = VipWire(T0, None, 0)
    r.submit(ReportState(wire=[TARGET]))
    assert r.loop.step() and client.replaces == 0
    due, key = min(r.loop.queue.delayed())
    assert key == REPORT and due == ANNOUNCE_WAIT
    clock.advance(due)
    assert r.loop.step() and client.replaces == 1
    cond = find_condition(client.objs["svc"]["status"]["conditions"], WIRE_CONDITION_TYPE)
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", NOT_ANNOUNCED_YET)
    assert "no gratuitous ARP sent yet" in cond["message"]
    # Then the announcement: at once.
    figures[V4] = VipWire(T0, T0 + 1, 0)
    r.poke()
    assert r.loop.step() and client.replaces == 2 and "ARP sent" in wire_message(client)
