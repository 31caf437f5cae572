"""The controller's concurrent writers: decisions one at a time in queue order, adding writes
in parallel, freeing writes inside the decision turn (lb/controller.py module docstring).

No HTTP and no sleeps: a fake API records each write and, at the moment of the write, whether
the decision turn was free for others. Informer stores are filled directly.
"""

from __future__ import annotations

import copy
import ipaddress
import threading
from typing import Any, cast

import pytest

from common.api.model import ANN_LOADBALANCER_IPS
from common.kube.client import KubeClient
from common.kube.resources import IPADDRESSPOOLS, SERVICES, Resource
from lb.controller import MAX_WORKERS, Controller, frees_address
from lb.core.allocator import Allocation, Pending

Obj = dict[str, Any]
JOIN_S = 10.0  # bound of every thread join (only reached if the code under test hangs)


class FakeKube:
    """Records status patches as (name, ips written, decision turn free for others)."""

    def __init__(self) -> None:
        self.controller: Controller | None = None
        self.writes: list[tuple[str, list[str] | None, bool]] = []
        self.block: dict[str, threading.Event] = {}  # name -> released by the test
        self.entered: dict[str, threading.Event] = {}
        self.order: list[str] = []
        self._lock = threading.Lock()

    def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None,
              subresource: str | None = None, **_: Any) -> Obj:
        assert self.controller is not None
        if res is SERVICES:
            ingress = ((patch.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            ips = None if ingress is None else [e["ip"] for e in ingress]
            free = not self.controller.queue.turn_held()
            with self._lock:
                self.writes.append((name, ips, free))
                self.order.append(f"start {name}")
            if name in self.entered:
                self.entered[name].set()
            if name in self.block:
                assert self.block[name].wait(JOIN_S), "test never released the write"
            with self._lock:
                self.order.append(f"end {name}")
        return {}

    def create(self, res: Resource, body: Obj, namespace: str | None = None, **_: Any) -> Obj:
        return body  # Events


def pool_obj(name: str, *addresses: str) -> Obj:
    return {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": name, "resourceVersion": "1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"addresses": list(addresses)}}


def svc_obj(name: str, rv: int = 1, request: str | None = None,
            status_ips: tuple[str, ...] = (), type_: str = "LoadBalancer") -> Obj:
    annotations = {ANN_LOADBALANCER_IPS: request} if request else {}
    obj: Obj = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                             "resourceVersion": str(rv), "annotations": annotations},
                "spec": {"type": type_, "ports": [{"protocol": "TCP", "port": 80}],
                         "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}}
    if status_ips:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in status_ips]}}
    return obj


@pytest.fixture
def ctl() -> tuple[Controller, FakeKube]:
    kube = FakeKube()
    controller = Controller(cast(KubeClient, kube), workers=4)
    kube.controller = controller
    controller.pools.store._put(pool_obj("p", "192.0.2.0/30"))
    controller._apply_pools()
    return controller, kube


def put(controller: Controller, obj: Obj) -> None:
    controller.services.store._put(copy.deepcopy(obj))


def test_first_address_is_written_after_the_decision_turn(
        ctl: tuple[Controller, FakeKube]) -> None:
    controller, kube = ctl
    put(controller, svc_obj("a"))
    controller.handle("svc:default/a")
    assert kube.writes == [("a", ["192.0.2.0"], True)]
    assert controller.allocator.allocation("default/a") == Allocation(
        (ipaddress.ip_address("192.0.2.0"),), "p")


def test_a_changed_request_is_written_inside_the_decision_turn(
        ctl: tuple[Controller, FakeKube]) -> None:
    controller, kube = ctl
    put(controller, svc_obj("a"))
    controller.handle("svc:default/a")
    # The write landed; the user now asks for another address: .0 is freed by this decision.
    put(controller, svc_obj("a", rv=3, request="192.0.2.2", status_ips=("192.0.2.0",)))
    controller.handle("svc:default/a")
    assert kube.writes[-1] == ("a", ["192.0.2.2"], False)


def test_a_release_is_cleaned_up_inside_the_decision_turn(
        ctl: tuple[Controller, FakeKube]) -> None:
    controller, kube = ctl
    put(controller, svc_obj("a"))
    controller.handle("svc:default/a")
    put(controller, svc_obj("a", rv=3, status_ips=("192.0.2.0",), type_="ClusterIP"))
    controller.handle("svc:default/a")
    name, ips, free = kube.writes[-1]
    assert (name, free) == ("a", False)
    assert not ips  # the address is removed from its status
    assert controller.allocator.allocation("default/a") is None


def test_a_pending_verdict_for_a_new_service_is_written_in_parallel(
        ctl: tuple[Controller, FakeKube]) -> None:
    controller, kube = ctl
    put(controller, svc_obj("a", request="198.51.100.7"))  # in no pool
    controller.handle("svc:default/a")
    assert kube.writes == [("a", None, True)]


def test_freed_address_is_not_handed_out_before_its_holder_stops_showing_it(
        ctl: tuple[Controller, FakeKube]) -> None:
    """A holds .0 and moves to .2; B waits for .0. B's decision cannot run while A's write
    (the one that removes .0 from A's status) is in flight, so B's write of .0 comes after."""
    controller, kube = ctl
    put(controller, svc_obj("a"))
    controller.handle("svc:default/a")
    put(controller, svc_obj("a", rv=3, status_ips=("192.0.2.0",)))
    put(controller, svc_obj("b", request="192.0.2.0"))
    controller.handle("svc:default/b")
    assert isinstance(controller.allocator.pending().get("default/b"), Pending)

    put(controller, svc_obj("a", rv=4, request="192.0.2.2", status_ips=("192.0.2.0",)))
    kube.block["a"] = threading.Event()
    kube.entered["a"] = threading.Event()
    ta = threading.Thread(target=controller.handle, args=("svc:default/a",))
    ta.start()
    try:
        assert kube.entered["a"].wait(JOIN_S)
        # A's freeing write is in flight: nobody can decide (B's worker would wait here).
        assert controller.queue.turn_held()
        assert "svc:default/b" in list(controller.queue._queue)  # woken by A's decision
        tb = threading.Thread(target=controller.handle, args=("svc:default/b",))
        tb.start()
    finally:
        kube.block["a"].set()
    ta.join(JOIN_S)
    tb.join(JOIN_S)
    assert not ta.is_alive() and not tb.is_alive()
    assert kube.order.index("end a") < kube.order.index("start b")
    assert kube.writes[-1][:2] == ("b", ["192.0.2.0"])
    assert controller.allocator.allocation("default/b") is not None


def test_pool_status_writes_are_serialized(ctl: tuple[Controller, FakeKube]) -> None:
    controller, kube = ctl
    seen: list[bool] = []

    def patch(res: Resource, name: str, patch: Any, **_: Any) -> Obj:
        if res is IPADDRESSPOOLS:
            seen.append(controller.queue.turn_held())
        return {}

    kube.patch = patch  # type: ignore[method-assign]
    controller.handle("poolstatus")
    assert seen == [True]


@pytest.mark.parametrize("workers", [0, MAX_WORKERS + 1])
def test_worker_count_is_bounded(workers: int) -> None:
    with pytest.raises(ValueError, match="workers"):
        Controller(cast(KubeClient, FakeKube()), workers=workers)


def test_frees_address() -> None:
    x = Allocation((ipaddress.ip_address("192.0.2.0"),), "p")
    y = Allocation((ipaddress.ip_address("192.0.2.1"),), "p")
    pending = Pending("AddressInUse", "taken")
    assert not frees_address(None, x)
    assert not frees_address(None, pending)
    assert not frees_address(x, x)
    assert frees_address(x, y)
    assert frees_address(x, pending)


def test_decisions_follow_queue_order_not_worker_timing(
        ctl: tuple[Controller, FakeKube]) -> None:
    """After a relist the queue holds [s1 deleted, n1 new]: n1 must get s1's address, as with
    one worker, even when n1's worker asks for its decision turn first."""
    controller, kube = ctl
    for name in ("s0", "s1", "s2"):
        put(controller, svc_obj(name))
        controller.handle(f"svc:default/{name}")
    assert controller.allocator.allocation("default/s1") == Allocation(
        (ipaddress.ip_address("192.0.2.1"),), "p")
    controller.services.store._pop(svc_obj("s1"))
    put(controller, svc_obj("n1"))
    q = controller.queue
    while (k := q.try_get()) is not None:  # what the setup queued, if anything
        q.done(k)
    q.add("svc:default/s1")
    q.add("svc:default/n1")
    assert q.try_get() == "svc:default/s1"
    assert q.try_get() == "svc:default/n1"
    tn = threading.Thread(target=controller.handle, args=("svc:default/n1",))
    tn.start()
    tn.join(0.2)  # n1 was taken after s1: it waits for s1's turn (bounded check, real time)
    assert tn.is_alive() and not any(w[0] == "n1" for w in kube.writes)
    controller.handle("svc:default/s1")
    tn.join(JOIN_S)
    assert kube.writes[-1][:2] == ("n1", ["192.0.2.1"])


def test_workers_flag() -> None:
    from lb.controller import DEFAULT_WORKERS
    from lb.controller_main import parse_args

    assert parse_args([]).workers == DEFAULT_WORKERS
    assert parse_args(["--workers", "8"]).workers == 8
    for bad in ("0", str(MAX_WORKERS + 1), "many"):
        with pytest.raises(SystemExit):
            parse_args(["--workers", bad])
