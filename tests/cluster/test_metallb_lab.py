"""MetalLB itself (v0.15.2, built from its Go module) in the lab cluster: the release's
metallb-native.yaml (L2 mode, memberlist) run by the node agents, with the changes
``lab.metallb.LAB_CHANGES`` lists (no admission webhook). A LoadBalancer Service written for
MetalLB gets a VIP from MetalLB's pool; the client resolves it by ARP to a worker's MAC and
gets an HTTP answer through kube-proxy.

Then the switch to Portico, on the same cluster: ``portico migrate metallb --apply`` makes
Portico's pools from MetalLB's, MetalLB is removed, Portico is installed with Helm, and the
Service keeps its address (the controller rebuilds from status and reads MetalLB's
annotation); the client's outage during the switch is measured and printed."""

from __future__ import annotations

import io
import itertools
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from common.kube.client import KubeClient
from lab import metallb
from lab.controlplane.cluster import ControlPlane
from lab.failover import Record, SynProber
from lab.labcluster import CONTROL_PLANE_ROLE, L2_RANGE, L2_RANGE6, LabCluster
from lab.topology import CLIENT_HOST, SEG_A4
from lb.migrate_metallb import build_parser, run
from tests.e2e.kit import in_range, web_app

NS = "mlb-app"
WORKERS = {"matchExpressions": [{"key": CONTROL_PLANE_ROLE, "operator": "DoesNotExist"}]}
# The switch is probed by lab.failover's SynProber (a TCP SYN to VIP:80 and an ARP request
# every 10 ms, as bench/l2_failover.py does); bounded by the steps' own timeouts plus this.
SWITCH_BUDGET_S = 60.0


@pytest.fixture(scope="module")
def lab_cluster(control_plane: ControlPlane, request: pytest.FixtureRequest,
                ) -> Iterator[LabCluster]:
    from tests.e2e import lab_backend

    reason = lab_backend.why_unusable()
    if reason:
        pytest.skip(reason)
    with LabCluster(control_plane=control_plane, portico=False,
                    keep_logs=lambda: request.session.testsfailed > 0) as lc:
        yield lc


def _service(name: str, annotations: dict[str, str], family: str = "IPv4") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "annotations": annotations},
            "spec": {"type": "LoadBalancer", "selector": {"app": "hello"},
                     "ipFamilyPolicy": "SingleStack", "ipFamilies": [family],
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def _vip(lc: LabCluster, name: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        svc = lc.get(f"/api/v1/namespaces/{NS}/services/{name}")
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress and ingress[0].get("ip"):
            return str(ingress[0]["ip"])
        time.sleep(0.5)
    raise AssertionError(f"{name} got no address: {svc.get('status')}")


def _arp_owner(lc: LabCluster, vip: str, timeout: float = 30.0) -> str:
    """The one MAC that answers the client's ARP request (NDP for IPv6) for ``vip``."""
    assert lc.lab is not None
    deadline = time.monotonic() + timeout
    answers: set[str] = set()
    while time.monotonic() < deadline:
        answers = lc.lab.who_has(vip)
        if answers:
            assert len(answers) == 1, f"{vip} answered by {answers}"
            return answers.pop()
        time.sleep(0.5)
    raise AssertionError(f"nobody answered ARP for {vip}")


def _until_http(lc: LabCluster, vip: str, timeout: float = 60.0) -> str:
    assert lc.lab is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = lc.lab.http_get(vip)
        if body and body.startswith("hello-"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"no HTTP answer from {vip}")


def test_metallb_serves_then_portico_takes_over(lab_cluster: LabCluster) -> None:
    lc = lab_cluster
    assert lc.lab is not None
    lab = lc.lab
    mlb = metallb.MetalLBInLab(lc)
    migrated: list[dict[str, Any]] = []
    try:
        mlb.install()
        print(f"\nMetalLB lab changes: {'; '.join(metallb.LAB_CHANGES)}", file=sys.stderr)
        mlb.apply_pools({"lab-v4": L2_RANGE, "lab-v6": L2_RANGE6}, WORKERS)
        lc.kubectl("create", "namespace", NS)
        lc.kubectl("apply", "-f", "-", input_text=json.dumps(web_app("hello", NS)))
        lc.kubectl("rollout", "status", "deployment/hello", "-n", NS, "--timeout=180s",
                   timeout=200)
        # A Service written for MetalLB, with its (deprecated-prefix) annotation.
        lc.kubectl("apply", "-f", "-", input_text=json.dumps(
            _service("hello", {"metallb.universe.tf/address-pool": "lab-v4"})))
        # And IPv6 (NDP), with the current annotation prefix.
        lc.kubectl("apply", "-f", "-", input_text=json.dumps(
            _service("hello6", {"metallb.io/address-pool": "lab-v6"}, "IPv6")))
        vip = _vip(lc, "hello")
        assert in_range(vip, L2_RANGE), vip
        mac = _arp_owner(lc, vip)
        workers = {n.name: n.mac_a for n in lab.nodes if n.name != "node1"}
        assert mac in workers.values(), (mac, workers)
        body = _until_http(lc, vip)
        vip6 = _vip(lc, "hello6")
        assert in_range(vip6, L2_RANGE6), vip6
        mac6 = _arp_owner(lc, vip6)
        assert mac6 in workers.values(), (mac6, workers)
        body6 = _until_http(lc, vip6)
        print(f"MetalLB: {vip} answered by ARP from {mac} "
              f"({next(n for n, m in workers.items() if m == mac)}), HTTP {body!r}; "
              f"{vip6} by NDP from {mac6}, HTTP {body6!r}; figures {mlb.figures}",
              file=sys.stderr)

        # ---- the switch: Portico's pools, MetalLB stopped, Portico installed ----
        prober = SynProber(lab.client, "pl-eth0", vip, f"{SEG_A4}.{CLIENT_HOST}", 80)
        prober.start()
        try:
            time.sleep(1.0)
            prober.reset()
            t0 = time.monotonic()
            lc.cp.install_portico_crds()
            kube = KubeClient.from_environment(kubeconfig=str(lc.kubeconfig))
            err = io.StringIO()
            args = build_parser().parse_args(["--apply", "--strict"])
            assert run(kube, args, io.StringIO(), err) == 0, err.getvalue()
            migrated = [{"kind": line.split(".", 1)[0], "name": line.split("/", 1)[1]
                         .split()[0]} for line in err.getvalue().splitlines()]
            t_migrated = time.monotonic()
            mlb.stop()
            t_stopped = time.monotonic()
            lc.portico = True
            lc.helm_install()
            lc.wait_ready()
            t_ready = time.monotonic()
            deadline = t_ready + SWITCH_BUDGET_S
            while time.monotonic() < deadline:
                if len(lab.who_has(vip, timeout=0.2)) == 1:
                    break
                time.sleep(0.05)
            t_announced = time.monotonic()
            time.sleep(2.0)  # steady again
            rec = prober.reset()
        finally:
            prober.stop()
        outage = _outage(rec)
        assert _vip(lc, "hello") == vip, "the Service lost its address"
        assert _vip(lc, "hello6") == vip6, "the IPv6 Service lost its address"
        new_mac = _arp_owner(lc, vip)
        assert new_mac in workers.values()
        assert _arp_owner(lc, vip6) in workers.values()
        assert _until_http(lc, vip, 30).startswith("hello-")
        assert _until_http(lc, vip6, 30).startswith("hello-")
        svc = lc.get(f"/api/v1/namespaces/{NS}/services/hello")
        cond = next(c for c in svc["status"]["conditions"]
                    if c["type"] == "lb.portico.dev/AddressAllocated")
        assert cond["status"] == "True" and "lab-v4" in cond["message"], cond
        figures = {
            "migrate_apply_s": round(t_migrated - t0, 2),
            "metallb_stop_s": round(t_stopped - t_migrated, 2),
            "portico_install_to_ready_s": round(t_ready - t_stopped, 2),
            "portico_ready_to_arp_s": round(t_announced - t_ready, 2),
            "probes": len(rec.sent), "lost": outage["lost"],
            "client_outage_s": outage["outage_s"], "arp_gap_s": outage["arp_gap_s"],
        }
        print(f"switch MetalLB -> Portico: {vip} and {vip6} kept (MAC {mac} -> {new_mac}); "
              f"{figures}",
              file=sys.stderr)
    finally:
        lc.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        for obj in migrated:
            lc.kubectl("delete", obj["kind"] + ".lb.portico.dev", obj["name"],
                       "--ignore-not-found", check=False)
        mlb.uninstall()


def _outage(rec: Record) -> dict[str, Any]:
    """Longest run of lost SYN probes (as time), lost count, longest time without any ARP
    answer for the VIP."""
    answered = {seq for _, seq, _ in rec.replies}
    longest = run_start = 0.0
    in_gap = False
    lost = 0
    for seq, t in sorted(rec.sent.items()):
        if seq in answered:
            if in_gap:
                longest = max(longest, t - run_start)
            in_gap = False
        else:
            lost += 1
            if not in_gap:
                run_start, in_gap = t, True
    if in_gap and rec.sent:
        longest = max(longest, max(rec.sent.values()) - run_start)
    arp_times = sorted(t for t, _, _ in rec.arp_replies)
    first = min(rec.sent.values(), default=0.0)
    last = max(rec.sent.values(), default=0.0)
    edges = [first, *arp_times, last]
    arp_gap = max((b - a for a, b in itertools.pairwise(edges)), default=0.0)
    return {"lost": lost, "outage_s": round(longest, 3), "arp_gap_s": round(arp_gap, 3)}


def test_migrate_output_for_the_lab_pools() -> None:
    """The pools the lab gives MetalLB convert without losses (what the switch relies on)."""
    from lb.core.migrate_metallb import MetalLBConfig, convert

    objs = metallb.pool_manifest({"lab-v4": L2_RANGE, "lab-v6": L2_RANGE6}, WORKERS)
    config = MetalLBConfig(metallb.NAMESPACE, [o for o in objs if o["kind"] == "IPAddressPool"],
                           [o for o in objs if o["kind"] == "L2Advertisement"])
    result = convert(config)
    assert result.losses == []
    assert [o["kind"] for o in result.objects] == ["IPAddressPool", "IPAddressPool",
                                                   "L2Advertisement"]
