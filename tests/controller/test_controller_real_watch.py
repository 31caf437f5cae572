"""Watches on the real server: connections cut under the controller, the 410 that a real
etcd compaction causes, and a resync that has nothing to change writes nothing.

The control plane here runs kube-apiserver with ``--watch-cache=false``, so a watch resumed
from an old resourceVersion is answered by etcd itself: after a compaction that is a real
410 Gone ("required revision has been compacted"). With the watch cache on (the default,
and the session's control plane), the apiserver keeps its own window of recent events and
answers 410 only for versions older than that window; the informer's handling is the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.kube.client import KubeClient
from common.kube.resources import CONFIGMAPS, IPADDRESSPOOLS, SERVICES
from lab.controlplane.cluster import ControlPlane, running
from lb.controller import Controller

from .conftest import Lab, eventually, eventually_passes, pool, real_lab, service


@pytest.fixture(scope="module")
def uncached_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    with running(lambda: request.session.testsfailed > 0,
                 apiserver_args=("--watch-cache=false",)) as cp:
        yield cp


@pytest.fixture
def wlab(uncached_plane: ControlPlane, tmp_path: Path) -> Iterator[Lab]:
    admin = KubeClient.from_environment(kubeconfig=str(uncached_plane.kubeconfig))
    yield from real_lab(uncached_plane, admin, tmp_path)


def _start_as_own_user(lab: Lab, cp: ControlPlane, tmp: Path) -> Controller:
    """The controller with a user of its own (through the relay), so the audit log tells its
    writes from the test's."""
    assert lab.relay is not None
    kc = cp.user_kubeconfig(tmp / "ctl.kubeconfig", _user(lab), ("system:masters",),
                            server=lab.relay.url)
    return lab.start(client=KubeClient.from_environment(kubeconfig=str(kc)))


def _user(lab: Lab) -> str:
    return f"controller-{lab.ns}"  # one per test: requests cut by a relay elsewhere answer 504


def _writes(cp: ControlPlane, lab: Lab) -> list[str]:
    return [f"{e['verb']} {e['requestURI']} {e.get('responseStatus', {}).get('code')}"
            for e in cp.audit_events()
            if e.get("user", {}).get("username") == _user(lab)]


def _quiet_count(cp: ControlPlane, lab: Lab, quiet_s: float = 2.0,
                 timeout: float = 20.0) -> int:
    """The controller's write count once it has stayed the same for ``quiet_s``: the burst
    of a start (statuses, Events written in parallel, the debounced pool status) is over."""
    deadline = time.monotonic() + timeout
    count, since = len(_writes(cp, lab)), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"the controller never stopped writing: {count}"
        time.sleep(0.2)
        now = len(_writes(cp, lab))
        if now != count:
            count, since = now, time.monotonic()
    return count


def _setup(lab: Lab) -> dict[str, list[str]]:
    lab.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/27"))
    for i in range(4):
        lab.store.create(SERVICES, service(f"s{i}"))
    return {f"s{i}": lab.wait_ips(f"s{i}") for i in range(4)}


def _churn_while_cut_off(lab: Lab, compact: ControlPlane | None = None) -> None:
    """Delete s1, create n1 and n2 while the controller cannot reach the server (and, with
    ``compact``, compact etcd past every version it has seen: resuming is then impossible)."""
    assert lab.relay is not None
    lab.relay.refuse(True)
    assert lab.relay.drop_all() >= 3  # every informer's watch at least
    try:
        lab.store.delete(SERVICES, "s1")
        lab.store.create(SERVICES, service("n1"))
        lab.store.create(SERVICES, service("n2"))
        if compact is not None:
            assert compact.compact_etcd() > 0
    finally:
        lab.relay.refuse(False)


def _converged_after_churn(lab: Lab, before: dict[str, list[str]]) -> None:
    def check() -> None:
        for name in ("s0", "s2", "s3"):
            assert lab.ips(name) == before[name], f"{name} moved"
        # The newcomers get s1's freed address and the next free one (s0..s3 hold .0-.3; with
        # several workers not necessarily s<i> = .<i>).
        assert sorted(lab.ips("n1") + lab.ips("n2")) == sorted(
            [before["s1"][0], "192.0.2.4"])
        assert lab.pool_status("p")["ipv4"]["assigned"] == "5"
    eventually_passes(check, timeout=30)
    lab.assert_consistent()


def test_cut_connections_resume_without_relist(wlab: Lab, uncached_plane: ControlPlane,
                                               tmp_path: Path) -> None:
    ctl = _start_as_own_user(wlab, uncached_plane, tmp_path)
    before = _setup(wlab)
    lists = ctl.services.lists
    # The controller resumes from its last resourceVersion; the real server replays the rest.
    _churn_while_cut_off(wlab)
    _converged_after_churn(wlab, before)
    assert ctl.services.lists == lists, "a cut connection should resume, not relist"
    assert ctl.services.watches >= 2


def test_compaction_410_relists_and_converges(wlab: Lab, uncached_plane: ControlPlane,
                                              tmp_path: Path) -> None:
    ctl = _start_as_own_user(wlab, uncached_plane, tmp_path)
    before = _setup(wlab)
    lists = ctl.services.lists
    _churn_while_cut_off(wlab, compact=uncached_plane)
    _converged_after_churn(wlab, before)
    assert ctl.services.lists > lists, "the 410 after compaction did not cause a relist"


def test_idle_resync_and_restart_write_nothing(wlab: Lab, uncached_plane: ControlPlane,
                                               tmp_path: Path) -> None:
    """Once converged, a relist forced by a real 410 and a controller restart (rebuild from
    status) find nothing to change, and write nothing: counted on the server (audit log)."""
    ctl = _start_as_own_user(wlab, uncached_plane, tmp_path)
    _setup(wlab)
    eventually(lambda: wlab.pool_status("p")["ipv4"]["assigned"] == "4")
    # Every Service's Event, not only the last one's: with several workers the Events of
    # s0..s3 are written in parallel, in any order.
    eventually(lambda: all(wlab.events(f"s{i}", "IPAllocated") for i in range(4)))
    settled = _quiet_count(uncached_plane, wlab)
    assert settled > 0
    for w in _writes(uncached_plane, wlab):
        assert w.endswith((" 200", " 201")), f"the server refused a controller write: {w}"
    # Forced resync: cut connections, compact, reconnect -> 410 -> relist of everything.
    assert wlab.relay is not None
    lists = ctl.services.lists
    wlab.relay.refuse(True)
    assert wlab.relay.drop_all() >= 3  # every informer's watch at least
    # A write the controller does not watch moves etcd's revision past every version the
    # informers have seen, whichever object was written last: the compaction below then
    # expires every one of their watches (a watch from the newest revision would resume).
    wlab.store.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "revision-bump"}})
    uncached_plane.compact_etcd()
    wlab.relay.refuse(False)
    eventually(lambda: ctl.services.lists > lists, timeout=20)
    # Restart: a new controller rebuilds from status.
    wlab.stop()
    ctl = _start_as_own_user(wlab, uncached_plane, tmp_path)
    eventually(lambda: ctl.ready(), timeout=20)
    # Give any (wrong) write time to happen: well above the pool-status debounce and the
    # informers' backoff; this is a quiet period, not a timing assertion.
    time.sleep(3.0)
    extra = _writes(uncached_plane, wlab)[settled:]
    assert extra == [], f"writes with nothing to change: {extra}"
