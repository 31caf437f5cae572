"""Every component against the real kube-apiserver with the chart's own RBAC and its own
ServiceAccount token: it does its whole job, is refused (403) outside its role, every write
it makes is accepted, and a settled system writes nothing — not even after every watch was
cut and re-listed.

The chart's ServiceAccounts, (Cluster)Roles, bindings and IngressClass are rendered by the
real Helm CLI (``helm template``, release ``portico-rbac`` in ``portico-system``) and created
on the server; the workloads (Deployments, DaemonSet) are left out: the lab runs each
component as a process — the controller in the api namespace, a speaker in every node
namespace, ``portico ingress`` (HAProxy) on node1 — each with a kubeconfig holding a
TokenRequest token of its chart ServiceAccount, reaching the server through a relay in the
lab's api namespace. Writes are counted on the server side, from the audit log.
"""

from __future__ import annotations

import collections
import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.kube import resources as R
from lab import netns
from lab.controlplane import chart
from lab.controlplane.cluster import ControlPlane
from lab.topology import SPEAKER_NAMESPACE, Lab, wait_until
from lb.core.status import POOL_READY, SERVICE_CONDITION
from speaker.core.l2_report import CONDITION_TYPE as L2_CONDITION

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "portico"
RELEASE = "portico-rbac"
NS = SPEAKER_NAMESPACE  # the release namespace
INGRESS_CLASS = "portico-rbac"
LEASE = "portico-controller"  # chart default: controller.leaderElection.leaseName
COMPONENTS = ("controller", "speaker", "ingress")
SA = {c: f"{RELEASE}-{c}" for c in COMPONENTS}
USERS = {c: f"system:serviceaccount:{NS}:{SA[c]}" for c in COMPONENTS}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
# Our own out-of-role probes with a component's token carry this User-Agent, so the audit
# checks of what the *component* wrote can leave them out.
PROBE_AGENT = "portico-rbac-probe/1"

POOL = "rbac"
POOL_RANGE = "192.0.2.192/27"
INGRESS_SVC = "portico-ingress"
APP_NS, APP, APP_PORT = "rbac-web", "web", 8080
INGRESS_NODE, APP_NODE = "node1", "node2"
ROUTER_ASN, NODE_ASN, PEER = 64500, 64512, "rbac-rt"
BGP_SECRET, BGP_PASSWORD = "rbac-bgp-password", "pl-rbac-md5"

# What the chart installs that the test needs; everything else (workloads, PDBs, the
# ingress Service) is the lab's to run as processes.

SETTLE_QUIET_S = 5.0  # no component write for this long = settled
SETTLE_MAX_S = 60.0
IDLE_S = 8.0
RESYNC_S = 10.0
# Writes sent with the resourceVersion they were decided on: a concurrent writer makes them
# 409 (and the component re-reads). Two speakers, one controller: a handful at most.
OPTIMISTIC_WRITES = {"update services/status", "patch services/status", "update leases"}
MAX_CONFLICTS = 5
# Lease renewals are the controller's heartbeat (retry period 2 s, common/kube/leader.py): the
# only write an idle leader makes.
LEASE_RENEW_S = 2.0


# ---- chart RBAC ------------------------------------------------------------------------------

def _object_path(obj: dict[str, Any]) -> str:
    return f"{chart.collection_path(obj, NS)}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def chart_rbac(control_plane: ControlPlane, crds: list[str]) -> Iterator[list[str]]:
    """The chart's RBAC, ServiceAccounts and IngressClass on the server (removed after the
    module: only what this fixture created)."""
    docs = chart.identity_objects(chart.helm_template(
        RELEASE, NS, "--set", f"ingress.ingressClass.name={INGRESS_CLASS}"))
    assert {d["kind"] for d in docs} == set(chart.IDENTITY_PATHS), "the chart renders no RBAC?"
    created: list[str] = []
    # A lab cluster that ran before on this control plane may have left it terminating.
    control_plane.wait_namespace_not_terminating(NS)
    try:
        try:
            control_plane.api("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            created.append(f"/api/v1/namespaces/{NS}")
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
        for obj in docs:
            path = _object_path(obj)
            collection = path.rsplit("/", 1)[0]
            try:
                control_plane.api("POST", collection + "?fieldValidation=Strict", obj)
                created.append(path)
            except urllib.error.HTTPError as exc:
                if exc.code != 409:
                    pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.code} "
                                f"{exc.read()[:500]!r}")
        yield [f"{d['kind']}/{d['metadata']['name']}" for d in docs]
    finally:
        for path in reversed(created):
            with contextlib.suppress(urllib.error.HTTPError):
                control_plane.api("DELETE", path)


# ---- the running system ------------------------------------------------------------------------

@dataclass
class System:
    lab: Lab
    cp: ControlPlane
    tokens: dict[str, str]
    vip: str = ""
    bgp: bool = False
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

    def writes(self) -> list[dict[str, Any]]:
        """Audit events of writes by the components' users (our probes left out)."""
        users = set(USERS.values())
        return [e for e in self.cp.audit_events()
                if e.get("user", {}).get("username") in users and e.get("verb") in WRITE_VERBS
                and e.get("userAgent") != PROBE_AGENT]

    def counts(self) -> collections.Counter[tuple[str, str]]:
        """(component, verb resource[/subresource]) -> writes, Lease renewals apart."""
        by_user = {u: c for c, u in USERS.items()}
        out: collections.Counter[tuple[str, str]] = collections.Counter()
        for e in self.writes():
            out[(by_user[e["user"]["username"]], _what(e))] += 1
        return out


def _what(e: dict[str, Any]) -> str:
    ref = e.get("objectRef") or {}
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{e.get('verb')} {ref.get('resource')}{sub}"


def _non_lease(counts: collections.Counter[tuple[str, str]]) -> int:
    return sum(n for (_c, what), n in counts.items() if not what.endswith(" leases"))


def _ssl(cp: ControlPlane) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cp.ca.cert_path))


def as_token(cp: ControlPlane, token: str, method: str, path: str, body: Any = None,
             content_type: str = "application/merge-patch+json") -> int:
    """HTTP status of one request made with ``token`` directly to the server."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(cp.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type,
        "Accept": "application/json", "User-Agent": PROBE_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=10, context=_ssl(cp)) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _frr_reason() -> str | None:
    from lab.frr import lab_available

    return lab_available()


@pytest.fixture(scope="module")
def system(control_plane: ControlPlane, chart_rbac: list[str]) -> Iterator[System]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    with Lab(nodes_count=2, start_controller=False, start_backends=False,
             control_plane=control_plane, leader_elect=True) as lab:
        tokens: dict[str, str] = {}
        for c in COMPONENTS:
            lab.kubeconfigs[c], tokens[c] = lab.token_kubeconfig(NS, SA[c])
        sys_ = System(lab, control_plane, tokens, started=t0)
        st = lab.store
        lab.add_pool(POOL, [POOL_RANGE])
        lab.add_l2(POOL, ipAddressPools=[POOL])
        # The app behind the Ingress: an HTTP server on node2 and its Service + slice.
        st.create(R.NAMESPACES, {"metadata": {"name": APP_NS}})
        st.create(R.SERVICES, {"metadata": {"name": APP, "namespace": APP_NS}, "spec": {
            "selector": {"app": APP},
            "ports": [{"name": "http", "protocol": "TCP", "port": APP_PORT}]}})
        lab.spawn(f"{APP}-{APP_NODE}", lab.node(APP_NODE).ns, [
            lab.python, "-m", "lab.backend", "--node", APP_NODE, "--app", APP,
            "--port", str(APP_PORT)])
        lab.set_endpoints(APP, {APP_NODE: True}, APP_NS, (("http", APP_PORT),))
        st.create(R.INGRESSES, {"metadata": {"name": APP, "namespace": APP_NS}, "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": APP, "port": {"number": APP_PORT}}}}]}}]}})
        # The ingress tier's LoadBalancer Service (as the chart makes it: ETP Local).
        st.create(R.SERVICES, {"metadata": {"name": INGRESS_SVC, "namespace": NS}, "spec": {
            "type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "selector": {"app": INGRESS_SVC}, "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                      {"name": "https", "port": 443, "protocol": "TCP"}]}})
        lab.set_endpoints(INGRESS_SVC, {INGRESS_NODE: True}, NS, (("http", 80), ("https", 443)))
        # BGP when FRR is here: TCP-MD5 with the password in a Secret of the release
        # namespace (the speaker's Role: get Secrets there only); sessions in BGPPeer status.
        if _frr_reason() is None:
            from lab.frr import RouterNeighbor

            st.create(R.SECRETS, {"metadata": {"name": BGP_SECRET, "namespace": NS},
                                  "stringData": {"password": BGP_PASSWORD}})
            lab.start_frr(ROUTER_ASN, [RouterNeighbor(n.ip4, NODE_ASN, password=BGP_PASSWORD,
                                                      hold_time=3) for n in lab.nodes])
            st.create(R.BGPPEERS, {"metadata": {"name": PEER}, "spec": {
                "myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": "192.0.2.1",
                "holdTime": "3s", "passwordSecret": {"name": BGP_SECRET, "key": "password"}}})
            sys_.bgp = True
        sys_.timings["setup"] = time.monotonic() - t0

        lab.start_controller_proc()
        lab.start_controller = True
        lab.start_speakers()
        n1 = lab.node(INGRESS_NODE)
        lab.spawn(f"ingress-{INGRESS_NODE}", n1.ns, [
            lab.python, "-m", "portico", "ingress", *lab.api_args("ingress"),
            "--ingress-class", INGRESS_CLASS, "--publish-service", f"{NS}/{INGRESS_SVC}",
            "--state-dir", str(lab.dir / f"ingress-{INGRESS_NODE}"),
            "--metrics-addr", f"{n1.mgmt}:10254", "--haproxy-metrics-addr", "",
            "--log-level", "info"], env={"NODE_NAME": INGRESS_NODE})
        sys_.vip = wait_until(lambda: (ips := lab.service_ips(INGRESS_SVC, NS)) and ips[0],
                              30, what="a VIP for the ingress Service")
        sys_.timings["vip"] = time.monotonic() - t0
        yield sys_
        # Shown with the last test's report when it failed (pytest captures it otherwise).
        print(f"lab logs: {lab.dir}")
        for name, proc in lab.procs.items():
            if proc.log.exists():
                tail = proc.log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {name} ---\n" + "\n".join(tail))


# ---- the tests ---------------------------------------------------------------------------------

def test_each_component_does_its_whole_job_with_its_own_token(system: System) -> None:
    lab, vip, t0 = system.lab, system.vip, system.started
    n1 = lab.node(INGRESS_NODE)
    # speaker (L2): only node1 runs an ingress endpoint (ETP Local), so node1 answers ARP.
    wait_until(lambda: lab.who_has(vip) == {n1.mac_a}, 30, interval=0.2,
               what=f"ARP answers for {vip} from {INGRESS_NODE} only")
    system.timings["arp"] = time.monotonic() - t0
    # ingress: HTTP through the VIP reaches the app on node2 via HAProxy on node1.
    wait_until(lambda: (lab.http_get(vip) or "").startswith(f"app={APP} node={APP_NODE}"),
               30, interval=0.2, what="HTTP through the ingress VIP")
    system.timings["http"] = time.monotonic() - t0

    def ingress_status() -> list[Any]:
        obj = lab.store.get(R.INGRESSES, APP, APP_NS) or {}
        return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
    wait_until(lambda: ingress_status() == [{"ip": vip}], 30, what="Ingress status")

    # controller: Service status + condition, pool status, Events, its Lease.
    cond = wait_until(lambda: lab.service_condition(INGRESS_SVC, SERVICE_CONDITION, NS), 30,
                      what="the controller's Service condition")
    assert (cond["status"], cond["reason"]) == ("True", "IPAllocated"), cond
    pool = wait_until(lambda: (lab.store.get(R.IPADDRESSPOOLS, POOL) or {}).get("status"), 30,
                      what="pool status")
    ready = next(c for c in pool["conditions"] if c["type"] == POOL_READY)
    assert ready["status"] == "True", pool
    lease = lab.store.get(R.LEASES, LEASE, NS)
    assert lease is not None and lease["spec"]["holderIdentity"] == f"controller-{lab.tag}"

    # speaker: its condition names the owner; its Event says it took the VIP.
    l2 = wait_until(lambda: lab.service_condition(INGRESS_SVC, L2_CONDITION, NS), 30,
                    what="the speaker's Service condition")
    assert l2["status"] == "True" and INGRESS_NODE in l2["message"], l2

    def events_by(component: str) -> set[str]:
        return {e["reason"] for e in lab.store.list(R.EVENTS)
                if (e.get("source") or {}).get("component") == f"portico-{component}"}
    wait_until(lambda: "IPAllocated" in events_by("controller"), 30, what="controller Event")
    wait_until(lambda: "L2Announcing" in events_by("speaker"), 30, what="speaker Event")
    if system.bgp:
        def sessions() -> dict[str, str]:
            obj = lab.store.get(R.BGPPEERS, PEER) or {}
            nodes = (obj.get("status") or {}).get("nodes") or {}
            return {n: str(v.get("state")) for n, v in nodes.items()}
        want = {n.name: "Established" for n in lab.nodes}
        wait_until(lambda: sessions() == want, 40, interval=0.5, what="BGPPeer status")

    # Server side: each of these writes was made by that component's own ServiceAccount.
    expected = {
        ("controller", "patch services/status"), ("controller", "patch ipaddresspools/status"),
        ("controller", "create events"), ("controller", "create leases"),
        ("controller", "update leases"),
        ("speaker", "update services/status"), ("speaker", "create events"),
        ("ingress", "patch ingresses/status"),
    }
    if system.bgp:
        expected.add(("speaker", "patch bgppeers/status"))
    deadline = time.monotonic() + 10
    while not expected <= (done := set(system.counts())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert expected <= done, f"no audited {sorted(expected - done)}; saw {sorted(done)}"
    print(f"timings (s since lab start): {system.timings}")


def test_release_reallocate_and_pending_writes(system: System) -> None:
    """The less travelled write shapes, under the same tokens: a Service that stops being a
    LoadBalancer (controller cleans its status, speaker removes its condition), comes back
    (the same address; the repeated Event is counted, a PATCH of the Event), and one that
    cannot be served (condition False, Warning Event)."""
    lab = system.lab

    def reasons(name: str) -> dict[str, int]:
        return {str(e["reason"]): int(e.get("count") or 1) for e in lab.store.list(R.EVENTS)
                if (e.get("involvedObject") or {}).get("name") == name}

    # The lab's endpoint-controller stand-in updates a slice (a PUT the real server takes).
    lab.set_endpoints(APP, {APP_NODE: True, INGRESS_NODE: False}, APP_NS, (("http", APP_PORT),))
    slice_ = lab.store.get(R.ENDPOINTSLICES, f"{APP}-lab", APP_NS) or {}
    assert len(slice_.get("endpoints") or []) == 2, slice_
    assert (lab.http_get(system.vip) or "").startswith(f"app={APP} node={APP_NODE}")

    lab.add_service("churn", namespace=APP_NS, set_status=False)
    ip = wait_until(lambda: lab.service_ips("churn", APP_NS), 30, what="churn VIP")
    wait_until(lambda: lab.service_condition("churn", L2_CONDITION, APP_NS), 30,
               what="the speaker's condition on churn")
    wait_until(lambda: lab.who_has(ip[0]), 30, interval=0.2, what="ARP for churn")
    wait_until(lambda: _assigned(lab) == "2", 10, what="pool status counts churn")
    # Away from LoadBalancer: released, status and both conditions gone.
    lab.store.patch(R.SERVICES, "churn", {"spec": {"type": "ClusterIP"}}, APP_NS)

    def released() -> bool:
        return (not lab.service_ips("churn", APP_NS)
                and lab.service_condition("churn", SERVICE_CONDITION, APP_NS) is None
                and lab.service_condition("churn", L2_CONDITION, APP_NS) is None)
    wait_until(released, 30, what="churn released by controller and speaker")
    wait_until(lambda: "IPReleased" in reasons("churn"), 30, what="IPReleased Event")
    wait_until(lambda: not lab.who_has(ip[0]), 30, interval=0.2, what="ARP silence")
    # Back: the same address, the same Event counted twice.
    lab.store.patch(R.SERVICES, "churn", {"spec": {"type": "LoadBalancer"}}, APP_NS)
    wait_until(lambda: lab.service_ips("churn", APP_NS) == ip, 30, what="churn VIP again")
    wait_until(lambda: reasons("churn").get("IPAllocated", 0) >= 2, 30,
               what="IPAllocated Event counted again")
    # An address in no pool: pending, said so in a condition and a Warning Event.
    lab.add_service("pending", ips=["198.51.100.5"], namespace=APP_NS, set_status=False)
    cond = wait_until(lambda: lab.service_condition("pending", SERVICE_CONDITION, APP_NS), 30,
                      what="the pending Service's condition")
    assert cond["status"] == "False", cond
    wait_until(lambda: "AllocationFailed" in reasons("pending"), 30,
               what="AllocationFailed Event")
    done = {(c, w) for (c, w) in system.counts()}
    assert ("controller", "patch events") in done, sorted(done)


def _assigned(lab: Lab) -> str | None:
    status = (lab.store.get(R.IPADDRESSPOOLS, POOL) or {}).get("status") or {}
    return (status.get("ipv4") or {}).get("assigned")


def test_settled_system_writes_nothing_idle_or_after_relist(system: System) -> None:
    lab, relay = system.lab, system.lab.relay
    # Settle: no component write (Lease renewals apart) for SETTLE_QUIET_S.
    deadline = time.monotonic() + SETTLE_MAX_S
    last, quiet_since = _non_lease(system.counts()), time.monotonic()
    while time.monotonic() - quiet_since < SETTLE_QUIET_S:
        assert time.monotonic() < deadline, f"never settled: {dict(system.counts())}"
        time.sleep(0.5)
        now = _non_lease(system.counts())
        if now != last:
            last, quiet_since = now, time.monotonic()

    def delta(before: collections.Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
        after = system.counts()
        return {k: after[k] - before[k] for k in after if after[k] != before[k]}

    def check(before: collections.Counter[tuple[str, str]], seconds: float, what: str) -> None:
        changed = delta(before)
        others = {k: n for k, n in changed.items() if k != ("controller", "update leases")}
        assert not others, f"{what}: components wrote {others}"
        renewals = changed.get(("controller", "update leases"), 0)
        assert renewals <= seconds / LEASE_RENEW_S + 2, f"{what}: {renewals} Lease updates"
        per_user = {c: sum(n for (cc, _w), n in changed.items() if cc == c)
                    for c in COMPONENTS}
        print(f"{what}: writes per component {per_user} (Lease renewals {renewals})")

    before = system.counts()
    time.sleep(IDLE_S)
    check(before, IDLE_S, f"idle {IDLE_S:.0f} s")

    before = system.counts()
    accepted = relay.accepted
    cut = relay.drop_all()
    assert cut >= len(COMPONENTS) + 1, f"only {cut} connections to cut"
    time.sleep(RESYNC_S)
    # Every process came back (watches re-established through the relay) ...
    assert relay.accepted - accepted >= 1 + len(lab.nodes) + 1, "components did not reconnect"
    check(before, RESYNC_S, f"after drop_all ({cut} connections) + {RESYNC_S:.0f} s")
    # ... and the system still works.
    assert lab.who_has(system.vip) == {lab.node(INGRESS_NODE).mac_a}
    assert (lab.http_get(system.vip) or "").startswith(f"app={APP}")
    for name, proc in lab.procs.items():
        assert proc.popen.poll() is None, f"{name} exited"


def test_each_component_is_refused_outside_its_role(system: System) -> None:
    cp, tok = system.cp, system.tokens
    svc = f"/api/v1/namespaces/{NS}/services/{INGRESS_SVC}"
    ing = f"/apis/networking.k8s.io/v1/namespaces/{APP_NS}/ingresses/{APP}"
    probes: dict[str, list[tuple[str, str, Any]]] = {
        "controller": [
            ("GET", f"/api/v1/namespaces/{NS}/secrets", None),
            ("PATCH", svc, {"spec": {"externalTrafficPolicy": "Cluster"}}),
            ("PATCH", ing + "/status", {"status": {"loadBalancer": {}}}),
            ("GET", "/apis/lb.portico.dev/v1alpha1/bgppeers", None),
        ],
        "speaker": [
            ("PATCH", f"/apis/lb.portico.dev/v1alpha1/ipaddresspools/{POOL}/status",
             {"status": {}}),
            ("GET", "/api/v1/namespaces/default/secrets/anything", None),
            ("GET", f"/api/v1/namespaces/{NS}/secrets", None),  # get by name only, no list
            ("PATCH", svc, {"metadata": {"labels": {"x": "y"}}}),
        ],
        "ingress": [
            ("PATCH", svc + "/status", {"status": {"loadBalancer": {}}}),
            ("PATCH", ing, {"metadata": {"labels": {"x": "y"}}}),
            ("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{LEASE}", {}),
        ],
    }
    got = {(c, m, p): as_token(cp, tok[c], m, p, b)
           for c, reqs in probes.items() for m, p, b in reqs}
    assert all(code == 403 for code in got.values()), {k: v for k, v in got.items()
                                                       if v != 403}
    # The audit log saw the refusals under each component's own user.
    refused = collections.Counter(
        e["user"]["username"] for e in system.cp.audit_events()
        if e.get("userAgent") == PROBE_AGENT and (e.get("responseStatus") or {}).get("code")
        == 403 and e.get("verb") in WRITE_VERBS)
    for c in COMPONENTS:
        assert refused[USERS[c]] >= 1, refused
    # Sanity: the same tokens are good for what the role allows.
    assert as_token(cp, tok["controller"], "GET", svc) == 200
    assert as_token(cp, tok["speaker"], "GET", "/api/v1/nodes") == 200
    assert as_token(cp, tok["ingress"], "GET", ing) == 200


def test_ingress_without_an_address_writes_nothing_on_resync(system: System) -> None:
    """The published Service loses its address (no longer a LoadBalancer): the ingress
    clears the Ingress status once, then endpoint churn and a relist write nothing. (The
    real server stores an empty ``loadBalancer.ingress`` list as absent: a status diff that
    keeps ``ingress: []`` never matches and rewrites every Ingress on every sync.)"""
    lab = system.lab
    lab.store.patch(R.SERVICES, INGRESS_SVC, {"spec": {"type": "ClusterIP"}}, NS)

    def ingress_lb() -> Any:
        obj = lab.store.get(R.INGRESSES, APP, APP_NS) or {}
        return (obj.get("status") or {}).get("loadBalancer")
    wait_until(lambda: not (ingress_lb() or {}).get("ingress"), 30,
               what="Ingress status cleared")

    def ingress_writes() -> int:
        return sum(n for (c, _w), n in system.counts().items() if c == "ingress")
    time.sleep(2.0)  # the clearing write and its echo are done
    before, syncs = ingress_writes(), ingress_syncs(lab)
    # Syncs: two endpoint changes (the churn test left node1 not ready; an unchanged slice
    # would be a no-op write the server sends no event for), then cut every watch.
    for ready in (True, False):
        lab.set_endpoints(APP, {APP_NODE: True, INGRESS_NODE: ready}, APP_NS,
                          (("http", APP_PORT),))
        time.sleep(1.0)
    system.lab.relay.drop_all()
    time.sleep(5.0)
    assert ingress_syncs(lab) >= syncs + 2, "the ingress did not sync"
    assert ingress_writes() == before, "the ingress rewrote an unchanged Ingress status"


def ingress_syncs(lab: Lab) -> float:
    """``portico_ingress_syncs_total`` (all results) of the ingress on INGRESS_NODE, read over
    the management network."""
    url = f"http://{lab.node(INGRESS_NODE).mgmt}:10254/metrics"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    text = netns.run_in_netns(lab.api, fetch)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("portico_ingress_syncs_total{"))


def test_every_component_write_is_accepted_by_the_server(system: System) -> None:
    """Nothing a component wrote in this module (last test: all of it) was refused. The one
    non-2xx allowed is 409 on a write that carries the resourceVersion the component read
    (the speaker's condition update, the controller's optimistic status patch, Lease
    updates): the server enforcing the precondition the component asked for after a
    concurrent write, not a refusal of what it wrote; the component re-reads and decides
    again (the end states are asserted above)."""
    writes = system.writes()
    assert writes, "no component wrote anything"
    conflicts, bad = [], []
    for e in writes:
        code = int((e.get("responseStatus") or {}).get("code") or 0)
        if 200 <= code < 300:
            continue
        entry = (e["user"]["username"], _what(e), (e.get("objectRef") or {}).get("name"),
                 code, (e.get("responseStatus") or {}).get("message"))
        if code == 409 and _what(e) in OPTIMISTIC_WRITES:
            conflicts.append(entry)
        else:
            bad.append(entry)
    assert not bad, f"the real server refused component writes: {bad}"
    assert len(conflicts) <= MAX_CONFLICTS, conflicts
    print("component writes:", dict(system.counts()), "conflicts:", conflicts)
