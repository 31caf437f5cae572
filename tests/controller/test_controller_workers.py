"""Several status writers (``Controller(workers=N)``) under churn: every Service converges,
one key is never handled by two workers at once, and at no point of the server's history do
two Services show the same address (freeing writes are made inside the decision turn).

The emulator variant replays the server's whole Service history; the real-server variant
watches it with an informer while the churn runs.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from common.api.model import ANN_LOADBALANCER_IPS
from common.kube.backoff import Backoff
from common.kube.informer import Informer
from common.kube.resources import IPADDRESSPOOLS, SERVICES
from common.kube.workqueue import Outcome
from lb.controller import Controller

from .conftest import Lab, eventually, eventually_passes, pool, service

Obj = dict[str, Any]
WORKERS = 8


class SharedAddressCheck:
    """Follows Service states in server order; records every moment at which one address is
    shown by two Services (none of these tests share addresses)."""

    def __init__(self) -> None:
        self.shown: dict[str, tuple[str, ...]] = {}
        self.violations: list[str] = []
        self._lock = threading.Lock()

    def event(self, etype: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        with self._lock:
            if etype == "DELETED":
                self.shown.pop(key, None)
                return
            self.shown[key] = tuple(str(e.get("ip")) for e in ingress)
            holders: dict[str, list[str]] = defaultdict(list)
            for k, ips in self.shown.items():
                for ip in ips:
                    holders[ip].append(k)
            for ip, ks in holders.items():
                if len(ks) > 1:
                    self.violations.append(f"rv {meta.get('resourceVersion')}: {ip} on {ks}")


def start_with_workers(lab: Lab, workers: int = WORKERS) -> list[str]:
    """Start lab's controller with ``workers`` writers; returns a list that receives an entry
    whenever a key is handed to a worker while another worker still holds it."""
    ctl = Controller(lab._client(), workers=workers, backoff=lambda: Backoff(base=0.05, cap=0.5))
    overlaps: list[str] = []
    busy: set[str] = set()
    guard = threading.Lock()
    handle = ctl.handle

    def tracked(key: str) -> Outcome:
        with guard:
            if key in busy:
                overlaps.append(key)
            busy.add(key)
        try:
            return handle(key)
        finally:
            with guard:
                busy.discard(key)

    ctl.handle = tracked  # type: ignore[method-assign]
    lab.controller = ctl
    ctl.start(sync_timeout=10)
    return overlaps


def churn(lab: Lab, n: int, movers: Iterable[int], move_to: Callable[[int], str]) -> dict[str, str]:
    """Delete the first third, move ``movers`` to new addresses, create Services that request
    the movers' old addresses and plain newcomers. Returns name -> address it must end with."""
    old = {i: lab.ips(f"s{i}")[0] for i in movers}
    for i in range(n // 3):
        lab.store.delete(SERVICES, f"s{i}", "default")
    want: dict[str, str] = {}
    for i, ip in old.items():
        obj = lab.svc(f"s{i}")
        obj["metadata"].setdefault("annotations", {})[ANN_LOADBALANCER_IPS] = move_to(i)
        lab.store.update(SERVICES, obj)
        want[f"s{i}"] = move_to(i)
        lab.store.create(SERVICES, service(f"r{i}", annotations={ANN_LOADBALANCER_IPS: ip}),
                         namespace="default")
        want[f"r{i}"] = ip
    for i in range(n // 3):
        lab.store.create(SERVICES, service(f"m{i}"), namespace="default")
    return want


def converged(lab: Lab, names: list[str], want: dict[str, str], timeout: float = 60) -> None:
    def check() -> None:
        got = {n: lab.ips(n) for n in names}
        assert all(len(v) == 1 for v in got.values()), json.dumps(got)
        assert all(got[n] == [ip] for n, ip in want.items()), json.dumps(got)
    eventually_passes(check, timeout=timeout)
    lab.assert_consistent()
    assert len({lab.ips(n)[0] for n in names}) == len(names)


def test_many_writers_on_the_emulator_never_show_an_address_twice(emu_lab: Lab) -> None:
    lab, n = emu_lab, 120
    lab.store.create(IPADDRESSPOOLS, pool("p", "198.18.0.0/24"))
    overlaps = start_with_workers(lab)
    for i in range(n):
        lab.store.create(SERVICES, service(f"s{i}"), namespace="default")
    converged(lab, [f"s{i}" for i in range(n)], {})
    def writes() -> list[object]:
        return [a for a in list(lab.emu.log) if a.verb == "PATCH" and "/services/" in a.target
                and a.target.split("?")[0].endswith("/status") and a.status == 200]

    # The emulator logs a request after it has answered it: the last write can be visible in
    # the store a moment before it is in the log.
    eventually(lambda: len(writes()) >= n, timeout=5)
    assert len(writes()) == n  # one status write per Service: nothing written twice

    movers = range(n // 3, n // 3 + 20)
    want = churn(lab, n, movers, lambda i: f"198.18.0.{200 + i - n // 3}")
    live = [f"s{i}" for i in range(n // 3, n)] + [f"r{i}" for i in movers] + \
        [f"m{i}" for i in range(n // 3)]
    converged(lab, live, want)
    assert overlaps == []

    check = SharedAddressCheck()
    with lab.emu.store.lock:
        history = list(lab.emu.store._kind(SERVICES).history)
    for ev in history:
        check.event(ev.type, ev.obj)
    assert check.violations == []


def test_many_writers_on_the_real_server(lab: Lab) -> None:
    n = 45
    lab.store.create(IPADDRESSPOOLS, pool("p", "198.18.1.0/24"))
    check = SharedAddressCheck()
    watcher = Informer(lab._client(), SERVICES, namespace=lab.ns, on_event=check.event,
                       name="test-shared-address-check")
    watcher.start()
    try:
        assert watcher.wait_for_sync(10)
        overlaps = start_with_workers(lab)
        for i in range(n):
            lab.store.create(SERVICES, service(f"s{i}"), namespace="default")
        converged(lab, [f"s{i}" for i in range(n)], {})
        movers = range(n // 3, n // 3 + 10)
        want = churn(lab, n, movers, lambda i: f"198.18.1.{200 + i - n // 3}")
        live = [f"s{i}" for i in range(n // 3, n)] + [f"r{i}" for i in movers] + \
            [f"m{i}" for i in range(n // 3)]
        converged(lab, live, want)
        assert overlaps == []
        # The watcher has seen the last writes too before its verdict counts.
        eventually(lambda: all(check.shown.get(f"{lab.ns}/{k}") == (v,)
                               for k, v in want.items()))
    finally:
        watcher.stop()
    assert check.violations == []
