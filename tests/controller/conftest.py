"""Controller tests: the real Controller over real HTTP against tests.emulator.

These are integration tests of I/O behaviour (watches, retries, status writes), so they wait
on real time with a deadline (``eventually``); the pure logic they exercise has its own unit
tests with fake clocks.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lb.controller import Controller
from lb.core.status import SERVICE_CONDITION
from lb.kube.backoff import Backoff
from lb.kube.client import KubeClient
from lb.kube.resources import EVENTS, IPADDRESSPOOLS, NAMESPACES, SERVICES
from tests.emulator import Emulator

Obj = dict[str, Any]


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns a truthy value or raises nothing; re-raise at the end."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result or result is None:
                return result
            err: BaseException = AssertionError(f"{check} stayed falsy")
        except (AssertionError, KeyError, IndexError, TypeError) as e:
            err = e
        if time.monotonic() > deadline:
            raise err
        time.sleep(interval)


def pool(name: str, *addresses: str, **spec: Any) -> Obj:
    return {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": name}, "spec": {"addresses": list(addresses), **spec}}


def service(name: str, ns: str = "default", ports: list[tuple[str, int]] | None = None,
            annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    body: Obj = {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
                 "spec": {"type": "LoadBalancer", "selector": {"app": name},
                          "ports": [{"protocol": p, "port": n}
                                    for p, n in (ports or [("TCP", 80)])], **spec}}
    return body


class Lab:
    """An emulator plus a controller, with helpers to read what the controller wrote."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store = emu.store
        self.controller: Controller | None = None
        self.store.create(NAMESPACES, {"metadata": {"name": "default"}})

    def start(self, lb_class: str | None = None) -> Controller:
        kube = KubeClient.from_environment(server=self.emu.url)
        # Short informer backoff: these tests inject faults and wait for recovery.
        self.controller = Controller(kube, lb_class=lb_class,
                                     backoff=lambda: Backoff(base=0.05, cap=0.5))
        self.controller.start(sync_timeout=10)
        return self.controller

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def svc(self, name: str, ns: str = "default") -> Obj:
        obj = self.store.get(SERVICES, name, ns)
        assert obj is not None, f"service {ns}/{name} missing"
        return obj

    def ips(self, name: str, ns: str = "default") -> list[str]:
        lb = (self.svc(name, ns).get("status") or {}).get("loadBalancer") or {}
        return [e["ip"] for e in lb.get("ingress") or []]

    def condition(self, name: str, ns: str = "default") -> Obj | None:
        for c in (self.svc(name, ns).get("status") or {}).get("conditions") or []:
            if c["type"] == SERVICE_CONDITION:
                return dict(c)
        return None

    def wait_reason(self, name: str, reason: str, ns: str = "default",
                    timeout: float = 15.0) -> Obj:
        def check() -> Obj:
            c = self.condition(name, ns)
            assert c is not None and c["reason"] == reason, f"{name}: {c}"
            return c
        result: Obj = eventually(check, timeout)
        return result

    def wait_ips(self, name: str, count: int = 1, ns: str = "default") -> list[str]:
        def check() -> list[str]:
            got = self.ips(name, ns)
            assert len(got) == count, f"{name}: {got} {self.condition(name, ns)}"
            return got
        result: list[str] = eventually(check)
        return result

    def events(self, name: str, reason: str | None = None) -> list[Obj]:
        return [e for e in self.store.list(EVENTS)
                if e.get("involvedObject", {}).get("name") == name
                and (reason is None or e.get("reason") == reason)]

    def pool_status(self, name: str) -> Obj:
        obj = self.store.get(IPADDRESSPOOLS, name)
        assert obj is not None
        return dict(obj.get("status") or {})

    def assert_consistent(self) -> None:
        """No address held twice unless the holders share a key; every address in a pool."""
        holders: Counter[str] = Counter()
        keys: dict[str, set[str]] = {}
        pools = []
        for p in self.store.list(IPADDRESSPOOLS):
            for a in p["spec"]["addresses"]:
                try:
                    pools.append(ipaddress.ip_network(a))
                except ValueError:
                    continue  # the deliberately invalid entries of bad-input tests
        for s in self.store.list(SERVICES):
            key = (s["metadata"].get("annotations") or {}).get("lb.portico.dev/allow-shared-ip")
            for e in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                holders[e["ip"]] += 1
                keys.setdefault(e["ip"], set()).add(key or f"unshared:{s['metadata']['name']}")
                ip = ipaddress.ip_address(e["ip"])
                assert not pools or any(ip in n for n in pools), f"{ip} outside every pool"
        for ip, n in holders.items():
            assert n == 1 or len(keys[ip]) == 1, f"{ip} held {n} times by {keys[ip]}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    emu = Emulator(host="127.0.0.1", port=0).start()
    lab = Lab(emu)
    try:
        yield lab
    finally:
        lab.stop()
        emu.stop()
