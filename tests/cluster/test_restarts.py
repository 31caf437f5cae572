"""Real faults: kube-apiserver, and separately etcd, killed (SIGKILL) and restarted while
Services, pools and Ingresses churn, with the controller, two speakers and the ingress tier
running as processes in the lab against a real control plane.

Every component must reconnect on its own (same PIDs before and after), nothing is lost
(every live Service ends with exactly one address from the pool, every deleted one is
released, pool counts are exact, every live Ingress shows the ingress VIP), no address is
ever held twice, and each live VIP is answered by exactly one node. The time from the
restarted component being ready to all of that being true is printed (``-s`` shows it); it
is a measurement, not an assertion (the deadline only bounds the wait).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.errors import KubeError
from common.kube import resources as R
from lab.controlplane.cluster import ControlPlane
from lab.controlplane.cluster import running as running_plane
from lab.topology import SPEAKER_NAMESPACE, VIP_A4, Lab, wait_until

INGRESS_SVC = "portico-ingress"
CONVERGE_DEADLINE_S = 90.0
CHURN_ROUNDS = 24  # bounded: one round every ~0.25 s plus the outage


@pytest.fixture(scope="module")
def plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """A control plane of this module's own: its apiserver and etcd get killed."""
    with running_plane(lambda: request.session.testsfailed > 0,
                       extra_sans=("203.0.113.1",)) as cp:
        yield cp


def _retry(fn: Callable[[], Any], deadline_s: float = 60.0) -> Any:
    """Test-side writes while the API is down: retry until it answers (bounded)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return fn()
        except (KubeError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                     "externalTrafficPolicy": "Cluster", "selector": {"app": name},
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}}


def _ingress(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"ingressClassName": "portico", "rules": [{
                "host": f"{name}.example.com", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "s0", "port": {"number": 80}}}}]}}]}}


class Churn:
    """Creates and deletes Services and Ingresses, and flips a second pool, in a thread."""

    def __init__(self, lab: Lab, tag: str) -> None:
        self.lab, self.tag = lab, tag
        self.live: set[str] = set()
        self.ingresses: set[str] = set()
        self.thread = threading.Thread(target=self.run, name=f"churn-{tag}", daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        store = self.lab.store
        try:
            for i in range(CHURN_ROUNDS):
                name = f"{self.tag}-{i}"
                _retry(lambda n=name: store.create(R.SERVICES, _service(n)))
                self.live.add(name)
                if i % 3 != 0 and i >= 2:  # two of three older ones go: the /27 suffices
                    old = f"{self.tag}-{i - 2}"
                    _retry(lambda o=old: store.delete(R.SERVICES, o, "default"))
                    self.live.discard(old)
                if i % 4 == 0:
                    ing = f"ing-{self.tag}-{i}"
                    _retry(lambda n=ing: store.create(R.INGRESSES, _ingress(n)))
                    self.ingresses.add(ing)
                if i % 8 == 4:
                    spare = {"metadata": {"name": f"spare-{self.tag}"},
                             "spec": {"addresses": ["198.51.100.200/30"], "autoAssign": False}}
                    _retry(lambda s=spare: store.create(R.IPADDRESSPOOLS, s))
                if i % 8 == 7:
                    _retry(lambda: store.delete(R.IPADDRESSPOOLS, f"spare-{self.tag}"))
                time.sleep(0.25)
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def _lb_services(lab: Lab) -> list[dict[str, Any]]:
    return [s for s in lab.store.list(R.SERVICES)
            if (s.get("spec") or {}).get("type") == "LoadBalancer"]


def _wait_converged(lab: Lab, live: set[str], ingresses: set[str], timeout: float,
                    what: str) -> None:
    last = [""]

    def check() -> bool:
        last[0] = _not_converged(lab, live, ingresses)
        return not last[0]
    try:
        wait_until(check, timeout, interval=0.2, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last[0]}") from None


def _not_converged(lab: Lab, expected_live: set[str], ingresses: set[str]) -> str:
    """'' when converged, else what is still missing (for the timeout message)."""
    svcs = {s["metadata"]["name"]: s for s in _lb_services(lab)
            if s["metadata"]["namespace"] == "default"}
    assert set(svcs) >= expected_live, f"Services lost: {expected_live - set(svcs)}"
    holders: Counter[str] = Counter()
    for s in _lb_services(lab):
        for e in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            holders[e["ip"]] += 1
    twice = [ip for ip, n in holders.items() if n > 1]
    assert not twice, f"addresses held twice: {twice}"
    for n in sorted(expected_live):
        if len(((svcs[n].get("status") or {}).get("loadBalancer") or {}).get("ingress")
               or []) != 1:
            return f"Service {n} has no address"
    pool = lab.store.get(R.IPADDRESSPOOLS, "lab") or {}
    assigned = ((pool.get("status") or {}).get("ipv4") or {}).get("assigned")
    if assigned != str(len(holders)):
        return f"pool assigned {assigned}, holders {len(holders)}"
    vip = lab.service_ips(INGRESS_SVC, SPEAKER_NAMESPACE)
    for name in sorted(ingresses):
        obj = lab.store.get(R.INGRESSES, name, "default") or {}
        got = [e.get("ip") for e in
               ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
        if got != vip:
            return f"Ingress {name} status {got}, ingress VIP {vip}"
    return ""


def _one_owner(lab: Lab, names: list[str]) -> bool:
    for name in names:
        ips = lab.service_ips(name)
        if len(ips) != 1 or len(lab.who_has(ips[0], tries=1)) != 1:
            return False
    return True


@pytest.fixture
def running(plane: ControlPlane) -> Iterator[Lab]:
    with Lab(control_plane=plane, nodes_count=2, start_controller=True,
             start_backends=False) as lab:  # the ingress tier listens on :80
        lab.add_pool("lab", [VIP_A4])
        lab.add_l2("lab")
        lab.store.create(R.INGRESSCLASSES, {
            "metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress"}})
        lab.cleanups.append(lambda: lab.store.delete(R.INGRESSCLASSES, "portico"))
        lab.start_speakers()
        svc = _service(INGRESS_SVC)
        svc["metadata"]["namespace"] = SPEAKER_NAMESPACE
        lab.store.create(R.SERVICES, svc)
        n = lab.nodes[0]
        lab.spawn("ingress", n.ns, [
            lab.python, "-m", "portico", "ingress", *lab.api_args("ingress"),
            "--publish-service", f"{SPEAKER_NAMESPACE}/{INGRESS_SVC}",
            "--state-dir", str(lab.dir / "ingress"), "--metrics-addr", f"{n.mgmt}:10254",
            "--haproxy-metrics-addr", "", "--log-level", "info"], env={"NODE_NAME": n.name})
        for i in range(3):
            lab.store.create(R.SERVICES, _service(f"s{i}"))
        lab.store.create(R.INGRESSES, _ingress("web"))
        _wait_converged(lab, {"s0", "s1", "s2"}, {"web"}, 60, "the steady state")
        wait_until(lambda: _one_owner(lab, ["s0"]), 30, what="s0 announced")
        yield lab


def test_apiserver_then_etcd_restart_under_churn(running: Lab, plane: ControlPlane) -> None:
    """Two separate faults on one running system: first kube-apiserver, then etcd."""
    lab = running
    pids = {name: p.popen.pid for name, p in lab.procs.items()}
    live, ingresses = {"s0", "s1", "s2"}, {"web"}
    figures = {}
    for component in ("kube-apiserver", "etcd"):
        churn = Churn(lab, f"c-{component.split('-')[-1]}")
        churn.thread.start()
        time.sleep(1.5)  # churn under way before the fault
        plane.kill(component)
        time.sleep(3.0)  # down for a while: watches break, writes fail, retries back off
        plane.start_component(component)
        if component == "etcd":
            plane.wait_etcd()
        plane.wait_ready(60)
        ready_at = time.monotonic()
        churn.thread.join(CHURN_ROUNDS * 5 + 120)
        assert churn.error is None, f"churn failed: {churn.error!r}"
        live |= churn.live
        live -= {f"{churn.tag}-{i}" for i in range(CHURN_ROUNDS)} - churn.live
        ingresses |= churn.ingresses
        _wait_converged(lab, live, ingresses, CONVERGE_DEADLINE_S,
                        f"convergence after the {component} restart")
        figures[component] = time.monotonic() - ready_at
        newest = sorted(churn.live, key=lambda n: int(n.rsplit("-", 1)[1]))[-2:]
        wait_until(lambda n=newest: _one_owner(lab, ["s0", *n]), 30,
                   what="VIPs announced once")
        for p in lab.procs.values():
            assert p.popen.poll() is None, f"{p.name} exited: {p.log.read_text()[-1500:]}"
        assert {n: p.popen.pid for n, p in lab.procs.items()} == pids, "a component restarted"
        print(f"\n{component} killed for 3 s under churn: converged {figures[component]:.1f} s "
              f"after it was ready again ({len(live)} live Services, "
              f"{len(ingresses)} Ingresses)", flush=True)
