"""Controller tests: the real Controller against the real kube-apiserver.

The ``lab`` fixture runs on the session's real control plane (tests/conftest.py): every
object is validated, defaulted and stored by the real server, RBAC and watches are real.
Each test gets its own namespace, which the store maps the tests' ``"default"`` to, and a
TCP relay in front of the server (faults: cut every connection). The ``emu_lab`` fixture
keeps the API emulator for the faults a real server cannot be asked for (5xx storms, 409
storms, slow responses: inside TLS the relay cannot touch HTTP).

These are integration tests of I/O behaviour (watches, retries, status writes), so they wait
on real time with a deadline (``eventually``); the pure logic they exercise has its own unit
tests with fake clocks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from common.kube.backoff import Backoff
from common.kube.client import KubeClient
from common.kube.resources import EVENTS, IPADDRESSPOOLS, NAMESPACES, SERVICES, Resource
from lab.controlplane import pki
from lab.controlplane.cluster import ControlPlane
from lab.controlplane.relay import Relay
from lab.controlplane.store import ApiStore
from lab.emulator import Emulator
from lb.controller import Controller
from lb.core.status import SERVICE_CONDITION

Obj = dict[str, Any]
T = TypeVar("T")


# What a check may raise while the world is still converging: an assert not yet true, a key
# or list entry not yet written, a None not yet filled in.
_NOT_YET = (AssertionError, KeyError, IndexError, TypeError)


def eventually(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns a truthy value, and return that value.

    ``None``, ``False`` and empty results are "not yet", never success; so is an exception of
    ``_NOT_YET``. At the deadline the last exception (or an AssertionError naming the falsy
    result) is raised. A check made only of asserts belongs in ``eventually_passes``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            err: BaseException = AssertionError(f"{check} still returned {result!r}")
        except _NOT_YET as e:
            err = e
        if time.monotonic() > deadline:
            raise err
        time.sleep(interval)


def eventually_passes(check: Callable[[], object], timeout: float = 15.0,
                      interval: float = 0.05) -> None:
    """Poll ``check``, a function of asserts that returns nothing, until it raises nothing;
    at the deadline re-raise its last exception. A check that returns a value is a caller
    mistake (its value would be ignored): TypeError at once, use ``eventually``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result: object = check()
        except _NOT_YET:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)
            continue
        if result is not None:
            raise TypeError(f"{check} returned {result!r}: eventually_passes ignores a "
                            "result, use eventually() for a check that returns one")
        return


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


class NamespacedStore:
    """An ApiStore whose namespace ``default`` is this test's own namespace."""

    def __init__(self, inner: ApiStore, ns: str) -> None:
        self.inner, self.ns = inner, ns

    def _map(self, res: Resource, namespace: str | None) -> str | None:
        if not res.namespaced:
            return None
        return self.ns if namespace in (None, "default") else namespace

    def _name(self, res: Resource, name: str) -> str:
        return self.ns if res is NAMESPACES and name == "default" else name

    def create(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        ns = self._map(res, namespace or (obj.get("metadata") or {}).get("namespace"))
        if ns is not None:
            obj = dict(obj, metadata=dict(obj.get("metadata") or {}, namespace=ns))
        return self.inner.create(res, obj, ns)

    def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj | None:
        return self.inner.get(res, self._name(res, name), self._map(res, namespace))

    def list(self, res: Resource, namespace: str | None = None) -> list[Obj]:
        return self.inner.list(res, self._map(res, namespace) if namespace else None)

    def update(self, res: Resource, obj: Obj, **kw: Any) -> Obj:
        return self.inner.update(res, obj, **kw)

    def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None) -> Obj:
        return self.inner.patch(res, self._name(res, name), patch, self._map(res, namespace))

    def delete(self, res: Resource, name: str, namespace: str | None = None) -> None:
        self.inner.delete(res, name, self._map(res, namespace))


class Lab:
    """A controller against an API (real server or emulator), with helpers to read what the
    controller wrote. ``ns`` is the namespace the tests call ``default``."""

    def __init__(self, store: Any, client: Callable[[], KubeClient], server_args: list[str],
                 ns: str = "default", emu: Emulator | None = None,
                 relay: Relay | None = None) -> None:
        self.store = store
        self._client = client
        self.server_args = server_args  # how a `portico controller` process reaches the API
        self.ns = ns
        self._emu = emu
        self.relay = relay
        self.controller: Controller | None = None

    @property
    def emu(self) -> Emulator:
        assert self._emu is not None, "this test needs the emulator (use emu_lab)"
        return self._emu

    def start(self, lb_class: str | None = None, client: KubeClient | None = None) -> Controller:
        """The controller in this process, with the lab's admin client unless ``client``."""
        # Short informer backoff: these tests inject faults and wait for recovery.
        self.controller = Controller(client or self._client(), lb_class=lb_class,
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
        """Events about the object now called ``name`` (a Service of this test, else a pool):
        matched by uid, so an earlier test's object of the same name does not count."""
        obj = self.store.get(SERVICES, name) or self.store.get(IPADDRESSPOOLS, name) or {}
        uid = (obj.get("metadata") or {}).get("uid")
        return [e for e in self.store.list(EVENTS)
                if e.get("involvedObject", {}).get("name") == name
                and (uid is None or e["involvedObject"].get("uid") in (None, uid))
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
        for s in self.store.list(SERVICES, "default"):
            key = (s["metadata"].get("annotations") or {}).get("lb.portico.dev/allow-shared-ip")
            for e in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                holders[e["ip"]] += 1
                keys.setdefault(e["ip"], set()).add(key or f"unshared:{s['metadata']['name']}")
                ip = ipaddress.ip_address(e["ip"])
                assert not pools or any(ip in n for n in pools), f"{ip} outside every pool"
        for ip, n in holders.items():
            assert n == 1 or len(keys[ip]) == 1, f"{ip} held {n} times by {keys[ip]}"


@pytest.fixture
def emu_lab() -> Iterator[Lab]:
    emu = Emulator(host="127.0.0.1", port=0).start()
    emu.store.create(NAMESPACES, {"metadata": {"name": "default"}})
    lab = Lab(emu.store, lambda: KubeClient.from_environment(server=emu.url),
              ["--server", emu.url], emu=emu)
    try:
        yield lab
    finally:
        lab.stop()
        emu.stop()


def real_lab(cp: ControlPlane, admin: KubeClient, tmp: Path) -> Iterator[Lab]:
    """A Lab on a real control plane: own namespace, relay in front, cleaned up after."""
    api = ApiStore(admin)
    ns = f"ctl-{uuid.uuid4().hex[:8]}"
    api.create(NAMESPACES, {"metadata": {"name": ns}})
    _remove_foreign_load_balancers(api)
    relay = Relay(("127.0.0.1", cp.port)).start()
    kubeconfig = pki.kubeconfig(tmp / "relay.kubeconfig", relay.url, cp.ca.pem, user="admin",
                                client=cp.admin_client)
    lab = Lab(NamespacedStore(api, ns),
              lambda: KubeClient.from_environment(kubeconfig=str(kubeconfig)),
              ["--kubeconfig", str(kubeconfig)], ns=ns, relay=relay)
    try:
        yield lab
    finally:
        lab.stop()
        relay.stop()
        # Pools are cluster-scoped and Services keep addresses in status: remove both now
        # (the namespace's deletion is asynchronous) so the next test starts clean.
        for svc in api.list(SERVICES, ns):
            api.delete(SERVICES, svc["metadata"]["name"], ns)
        for p in api.list(IPADDRESSPOOLS):
            api.delete(IPADDRESSPOOLS, p["metadata"]["name"])
        api.delete(NAMESPACES, ns)


def _remove_foreign_load_balancers(api: ApiStore) -> None:
    """LoadBalancer Services another test left behind would compete for this test's pools."""
    for svc in api.list(SERVICES):
        if (svc.get("spec") or {}).get("type") == "LoadBalancer":
            meta = svc["metadata"]
            with contextlib.suppress(Exception):
                api.delete(SERVICES, meta["name"], meta["namespace"])


@pytest.fixture
def lab(control_plane: ControlPlane, crds: list[str], admin_client: KubeClient,
        tmp_path: Path) -> Iterator[Lab]:
    yield from real_lab(control_plane, admin_client, tmp_path)
