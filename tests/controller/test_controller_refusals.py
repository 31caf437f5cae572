"""Writes the API server refuses as such (422 Invalid, 403 Forbidden): the controller reports
each once (Warning Event naming the cause, log line, metric), gives up the key instead of
retrying it for ever, and handles the object again at its next change.

The emulator injects the refusals (a real server refuses only what is really invalid or
forbidden); the Controller runs for real over HTTP, as in test_controller_faults.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from common.kube.backoff import Backoff
from common.kube.client import KubeClient
from common.kube.refusal import REFUSED_WRITES
from common.kube.resources import EVENTS, IPADDRESSPOOLS, NAMESPACES, SERVICES
from lab.emulator import Emulator
from lb.controller import Controller

from .conftest import eventually, pool, service

# Long enough for the work queue's backoff (50 ms doubling, common.kube.backoff) to have retried
# a RETRY outcome several times: a retry storm would show up as more requests.
QUIET_S = 1.5

Obj = dict[str, Any]


class Env:
    def __init__(self) -> None:
        self.emu = Emulator(host="127.0.0.1", port=0).start()
        self.store = self.emu.store
        self.store.create(NAMESPACES, {"metadata": {"name": "default"}})
        self.controller: Controller | None = None

    def start(self) -> Controller:
        kube = KubeClient.from_environment(server=self.emu.url)
        self.controller = Controller(kube, backoff=lambda: Backoff(base=0.05, cap=0.5))
        self.controller.start(sync_timeout=10)
        return self.controller

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.emu.stop()

    def ips(self, name: str) -> list[str]:
        obj = self.store.get(SERVICES, name, "default") or {}
        lb = (obj.get("status") or {}).get("loadBalancer") or {}
        return [e["ip"] for e in lb.get("ingress") or []]

    def events(self, name: str, reason: str) -> list[Obj]:
        return [e for e in self.store.list(EVENTS)
                if e["involvedObject"].get("name") == name and e.get("reason") == reason]


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        e.stop()


def _refused_metric(resource: str, code: int) -> float:
    value = REFUSED_WRITES.labels("controller", resource, str(code))._value.get()
    return float(value)


@pytest.mark.parametrize(("code", "reason"), [(422, "Invalid"), (403, "Forbidden")])
def test_refused_service_status_write_is_reported_once_and_not_retried(
        env: Env, code: int, reason: str) -> None:
    env.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/27"))
    ctl = env.start()
    metric_before = _refused_metric("services", code)
    rule = env.emu.faults.fail("PATCH", r"/services/refused/status", code, count=1000)
    env.store.create(SERVICES, service("refused"), namespace="default")

    eventually(lambda: env.events("refused", "StatusWriteRefused"))
    time.sleep(QUIET_S)
    assert rule.hits == 1, f"{rule.hits} status writes: the refusal was retried"
    assert env.emu.count("PATCH", "/services/refused/status") == 1
    [ev] = env.events("refused", "StatusWriteRefused")
    assert ev["type"] == "Warning" and ev["count"] == 1
    assert f"HTTP {code} {reason}" in ev["message"], ev["message"]
    assert f"injected fault {code}" in ev["message"], ev["message"]  # the server's message
    assert _refused_metric("services", code) == metric_before + 1
    assert not any(k == "svc:default/refused" for _, k in ctl.queue.delayed())
    # Nothing is lost: the address stays held (not handed to anyone else) ...
    env.store.create(SERVICES, service("other"), namespace="default")
    eventually(lambda: env.ips("other"))
    held = ctl.allocator.allocation("default/refused")
    assert held is not None and [str(i) for i in held.ips] != env.ips("other")

    # ... and the next change of the Service (an informer event) is processed.
    env.emu.faults.clear()
    obj = env.store.get(SERVICES, "refused", "default")
    assert obj is not None
    obj["spec"]["ports"] = [{"protocol": "TCP", "port": 8080}]
    env.store.update(SERVICES, obj)
    eventually(lambda: env.ips("refused") == [str(i) for i in held.ips])
    assert len(env.events("refused", "StatusWriteRefused")) == 1


def test_refused_pool_status_is_reported_once_and_written_after_the_pool_changes(
        env: Env) -> None:
    env.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/27"))
    rule = env.emu.faults.fail("PATCH", r"/ipaddresspools/p/status", 422, count=1000)
    env.start()
    eventually(lambda: env.events("p", "StatusWriteRefused"))
    # Allocations make the pool status dirty again and again: not re-sent for this version.
    for i in range(4):
        env.store.create(SERVICES, service(f"s{i}"), namespace="default")
    eventually(lambda: all(env.ips(f"s{i}") for i in range(4)))
    time.sleep(QUIET_S)  # > POOL_STATUS_DEBOUNCE_S: the debounced write would have run
    assert rule.hits == 1
    [ev] = env.events("p", "StatusWriteRefused")
    assert ev["count"] == 1 and "HTTP 422 Invalid" in ev["message"]

    env.emu.faults.clear()
    env.store.patch(IPADDRESSPOOLS, "p", {"metadata": {"labels": {"edited": "yes"}}})

    def written() -> bool:
        obj = env.store.get(IPADDRESSPOOLS, "p") or {}
        return (obj.get("status") or {}).get("ipv4", {}).get("assigned") == "4"
    eventually(written)


def test_transient_error_is_still_retried(env: Env) -> None:
    env.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/27"))
    env.start()
    rule = env.emu.faults.fail("PATCH", r"/services/flaky/status", 500, count=3)
    env.store.create(SERVICES, service("flaky"), namespace="default")
    eventually(lambda: env.ips("flaky"))
    assert rule.hits == 3 and not env.events("flaky", "StatusWriteRefused")
