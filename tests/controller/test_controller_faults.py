"""Convergence after API faults, with no lost and no duplicated allocation.

Each test injects one kind of fault while Services come and go, then checks that every
Service converged to exactly the addresses a fault-free run would give, and that no address
was ever handed out twice (the emulator's request log shows every status write).

These run on the API emulator on purpose: 409 and 5xx storms, slow responses and a precise
write log are faults and observations inside HTTP, which a real server cannot be asked for
and a TCP relay cannot inject under TLS. Dropped watches and the 410 after a real etcd
compaction run on the real server (test_controller_real_watch.py).
"""

from __future__ import annotations

import json

import pytest

from common.kube.resources import IPADDRESSPOOLS, SERVICES
from lab.emulator.server import Access

from .conftest import Lab, eventually, eventually_passes, pool, service


@pytest.fixture
def lab(emu_lab: Lab) -> Lab:
    return emu_lab


def _start(lab: Lab, n: int = 4) -> dict[str, list[str]]:
    lab.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/27"))
    for i in range(n):
        lab.store.create(SERVICES, service(f"s{i}"), namespace="default")
    lab.start()
    return {f"s{i}": lab.wait_ips(f"s{i}") for i in range(n)}


def _settled(lab: Lab) -> bool:
    """No Service key queued, in a worker, or scheduled: the start-up's own follow-ups (the
    MODIFIED events of its status writes) are done. Otherwise s1's key could still be in a
    worker when it is deleted, be queued again behind n1 and n2, and free its address only
    after they were decided: a different (valid) outcome than the one the tests expect."""
    q = lab.controller.queue if lab.controller is not None else None
    assert q is not None
    return (len(q) == 0 and not any(str(k).startswith("svc:") for k in q.processing())
            and not any(str(k).startswith("svc:") for _, k in q.delayed()))


def _churn(lab: Lab) -> None:
    """Changes made while the fault is active: one delete, two creates."""
    eventually(lambda: _settled(lab), timeout=15)
    lab.store.delete(SERVICES, "s1", "default")
    lab.store.create(SERVICES, service("n1"), namespace="default")
    lab.store.create(SERVICES, service("n2"), namespace="default")


def _converged(lab: Lab, before: dict[str, list[str]]) -> None:
    def check() -> None:
        for name in ("s0", "s2", "s3"):
            assert lab.ips(name) == before[name], f"{name} moved"
        got = sorted(lab.ips("n1") + lab.ips("n2"))
        # s1's address is free again, so the newcomers get it and the next one.
        assert got == ["192.0.2.1", "192.0.2.4"], got
        assert lab.store.get(SERVICES, "s1", "default") is None
        st = lab.pool_status("p")
        assert st["ipv4"]["assigned"] == "5", st
    eventually_passes(check, timeout=30)
    lab.assert_consistent()


def test_409_on_status_write_is_retried(lab: Lab) -> None:
    before = _start(lab)
    rule = lab.emu.faults.fail("PATCH", r"/services/n\d/status", 409, count=4)
    _churn(lab)
    _converged(lab, before)
    assert rule.hits == 4


def _status_writes(lab: Lab, name: str) -> list[Access]:
    """The emulator's log entries of status PATCHes of Service ``name``, in order."""
    return [a for a in list(lab.emu.log)
            if a.verb == "PATCH" and a.target.endswith(f"/services/{name}/status")]


def _written_ips(write: Access) -> list[str]:
    lb = ((write.body or {}).get("status") or {}).get("loadBalancer") or {}
    return [e["ip"] for e in lb.get("ingress") or []]


def test_stale_decision_is_not_written(lab: Lab) -> None:
    """A status write based on an old Service version is refused (resourceVersion
    precondition) and the controller decides again on the new version."""
    _start(lab, n=1)
    # Long enough for the test to change the Service while the write is held back.
    lab.emu.faults.delay("PATCH", r"/services/late/status", 2.0, count=1)
    lab.store.create(SERVICES, service("late"), namespace="default")
    # The controller's first write (an address from the pool) is now stalled in the server.
    stalled = eventually(lambda: _status_writes(lab, "late"))[0]
    decided_on = lab.store.get(SERVICES, "late", "default")
    assert decided_on is not None and stalled.status == 0, stalled
    assert _written_ips(stalled) == ["192.0.2.1"], stalled.body
    # The write carries the version it was decided on as a precondition.
    assert (stalled.body.get("metadata") or {}).get("resourceVersion") == \
        decided_on["metadata"]["resourceVersion"], stalled.body
    # While the first write stalls, the user pins an address.
    obj = dict(decided_on, metadata=dict(decided_on["metadata"], annotations={
        "lb.portico.dev/loadBalancerIPs": "192.0.2.20"}))
    lab.store.update(SERVICES, obj)
    assert stalled.status == 0, "the write was answered before the Service changed"
    eventually(lambda: lab.ips("late") == ["192.0.2.20"], timeout=20)
    # The stale write was refused, not applied and then corrected.
    assert stalled.status == 409, stalled
    writes = _status_writes(lab, "late")
    applied = [w for w in writes if w.status == 200]
    assert applied and all(_written_ips(w) in ([], ["192.0.2.20"]) for w in applied), \
        [(w.status, w.body) for w in writes]
    assert all((w.body.get("metadata") or {}).get("resourceVersion") !=
               decided_on["metadata"]["resourceVersion"] for w in applied), \
        [(w.status, w.body) for w in writes]
    lab.assert_consistent()


def test_500_storm(lab: Lab) -> None:
    before = _start(lab)
    rule = lab.emu.faults.fail("*", r"/services", 500, count=30)
    lab.emu.drop_watches()
    _churn(lab)
    _converged(lab, before)
    assert rule.hits == 30


def test_slow_responses(lab: Lab) -> None:
    before = _start(lab)
    rule = lab.emu.faults.delay("PATCH", r"/status", 0.7, count=4)
    _churn(lab)
    _converged(lab, before)
    assert rule.hits >= 2


@pytest.mark.parametrize("fault", ["drop", "410", "409", "500"])
def test_no_address_written_twice(lab: Lab, fault: str) -> None:
    """Across a fault and heavy churn, the sequence of status writes never gives one
    address to two live Services (checked on the emulator's final state and write log)."""
    lab.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/29"))
    lab.start()
    if fault == "409":
        lab.emu.faults.fail("PATCH", r"/status", 409, count=6)
    elif fault == "500":
        lab.emu.faults.fail("*", r"/services", 500, count=10)
    for i in range(12):
        lab.store.create(SERVICES, service(f"c{i}"), namespace="default")
        if i % 3 == 2:
            lab.store.delete(SERVICES, f"c{i - 2}", "default")
        if fault == "drop" and i % 4 == 0:
            lab.emu.drop_watches(abrupt=True)
        if fault == "410" and i == 6:
            lab.emu.drop_watches()
            lab.emu.compact()
    live = [f"c{i}" for i in range(12) if not (i % 3 == 0 and i <= 9)]

    def check() -> None:
        got = {n: lab.ips(n) for n in live}
        assert all(len(v) == 1 for v in got.values()), json.dumps(got)
    eventually_passes(check, timeout=30)
    lab.assert_consistent()
    assert len({lab.ips(n)[0] for n in live}) == len(live)
