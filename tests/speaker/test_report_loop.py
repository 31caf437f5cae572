"""speaker.report.Reporter on the shared reconcile loop, on a fake clock: a Service condition
write refused with 403 or 422 ends in one Warning Event and is not retried; a transient
failure is retried by the loop with backoff; the worker thread stops on stop()."""

from __future__ import annotations

import time

import pytest

from common.errors import Forbidden, Invalid, KubeError
from common.kube import resources as R
from lab.fakeclock import FakeClock
from speaker.report import REPORT, RETRY_AFTER, Reporter, ReportState
from tests.speaker.test_report import COND, Client, Events, Log, service


def make(error: KubeError | None) -> tuple[Reporter, Client, Events, FakeClock]:
    clock = FakeClock()
    client, events = Client(error), Events()
    svc = service("1")
    r = Reporter(client, events, lambda res, ns, name: svc if res is R.SERVICES else None,
                 Log(), clock=clock)
    return r, client, events, clock


@pytest.mark.parametrize("error", [
    Forbidden("PUT .../services/web/status: 403: forbidden", 403, "Forbidden",
              "services \"web\" is forbidden: cannot update resource \"services/status\""),
    Invalid("PUT .../services/web/status: 422: Invalid value", 422, "Invalid",
            "Service \"web\" is invalid: status.conditions[0].reason: Invalid value",
            ("status.conditions[0].reason",)),
])
def test_refused_condition_write_ends_in_one_event_not_in_retries(error: KubeError) -> None:
    r, client, events, clock = make(error)
    for _ in range(5):  # the announcer submits the same state again and again
        r.submit(ReportState(conditions=[COND]))
        assert r.loop.step()
        # Not a failure for the loop: nothing scheduled again, no backoff counted.
        assert r.loop.queue.delayed() == [] and r.loop.queue.failures(REPORT) == 0
    clock.advance(3600)
    assert not r.loop.step()
    assert client.replaces == 1
    refused = [e for e in events.events if e[2] == "StatusWriteRefused"]
    assert len(refused) == 1 and refused[0][:2] == ("web", "Warning")
    assert f"HTTP {error.status}" in refused[0][3]


def test_transient_failure_is_retried_by_the_loop_with_backoff() -> None:
    r, client, events, clock = make(KubeError("PUT ...: 500: etcd timeout", 500))
    r.submit(ReportState(conditions=[COND]))
    assert r.loop.step() and client.replaces == 1
    [(due, key)] = r.loop.queue.delayed()
    assert key == REPORT and 0 < due <= RETRY_AFTER
    assert not r.loop.step()
    client.error = None  # the API server is back
    clock.advance(due)
    assert r.loop.step() and client.replaces == 2
    assert r.loop.queue.delayed() == [] and r.loop.queue.failures(REPORT) == 0
    assert not events.events


def test_worker_thread_writes_and_stops() -> None:
    r, client, _events, _clock = make(None)
    r.start()
    r.submit(ReportState(conditions=[COND]))
    end = time.monotonic() + 5
    while client.replaces < 1 and time.monotonic() < end:
        time.sleep(0.01)
    r.stop()
    assert client.replaces == 1
    assert all(not t.is_alive() for t in r.loop._threads)
