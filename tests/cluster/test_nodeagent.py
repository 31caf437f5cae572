"""The lab node agent against the real control plane: lab nodes become Kubernetes Nodes and
the pods bound to them run as processes.

A two-node Lab on the session's control plane, with ``python -m lab.nodeagent`` started in
each node namespace (``Lab.spawn``) under the node's own identity (``system:node:NAME`` in
``system:nodes``: the real Node authorizer decides what it may read and write). The Lab's own
lease heartbeat is switched off, so the Leases are the agents' alone. Pod CIDRs are
198.18.K.0/24 and 2001:db8:f0:K::/64; the lab routes them between the nodes
(``lab.nodeagent.podnet.route_pod_cidrs``). Pods reach the API server as
``KUBERNETES_SERVICE_HOST=203.0.113.1`` (the lab's relay; ``--api-host``) until kube-proxy
forwards the ``kubernetes`` Service.

Measured figures are printed (``-s`` shows them): agent restart -> Node Ready, pod create ->
Running, readiness failure -> endpoint not ready in the EndpointSlice.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.errors import NotFound
from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.resources import Resource
from lab import netns
from lab.controlplane.cluster import ControlPlane
from lab.nodeagent import labkit
from lab.topology import MGMT4, Lab
from lab.wait import wait_until

pytestmark = pytest.mark.lab

SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True)
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True)
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet", True, status_subresource=True)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", True,
                       status_subresource=True)

LEASE_RENEW_S = 1.0
# Short intervals for tests: a lease renewal every second, crash-loop back-off 1 s .. 4 s.
AGENT_FLAGS = ("--lease-renew-interval", str(LEASE_RENEW_S), "--backoff-initial", "1",
               "--backoff-max", "4")
PYTHON_IMAGE, BACKEND_IMAGE = "portico-lab/python", "portico-lab/backend"

# A small readiness-controlled HTTP server: /readyz answers 503 while /tmp/unready exists.
READY_SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/readyz" or not os.path.exists("/tmp/unready")
        self.send_response(200 if ok else 503); self.end_headers()
        self.wfile.write(b"ok" if ok else b"unready")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

# Loads in-cluster configuration exactly as a pod's client does, and reports what it sees.
IN_CLUSTER = """
import json, os
from kubernetes import client, config
d = "/var/run/secrets/kubernetes.io/serviceaccount"
config.load_incluster_config()
ns = open(d + "/namespace").read()
v1 = client.CoreV1Api()
cms = sorted(c.metadata.name for c in v1.list_namespaced_config_map(ns).items)
try:
    v1.list_namespaced_secret(ns)
    secrets = "allowed"
except client.ApiException as e:
    secrets = e.status
st = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
print(json.dumps({
    "files": sorted(f for f in os.listdir(d) if not f.startswith(".")), "namespace": ns,
    "token": open(d + "/token").read(), "uid": os.getuid(), "gid": os.getgid(),
    "groups": sorted(os.getgroups()), "cap_bnd": st["CapBnd"].strip(),
    "cap_eff": st["CapEff"].strip(), "no_new_privs": st["NoNewPrivs"].strip(),
    "configmaps": cms, "secrets": secrets, "hostname": os.uname().nodename,
    "env": {k: v for k, v in os.environ.items() if k in (
        "POD_NAME", "POD_IP", "APP", "SECRET", "COLOR", "CFG_size", "GREETING", "NODE",
        "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "MEM_LIMIT_MI", "HOME")}}))
"""

POLITE = """
import os, signal, sys, time
def bye(*_):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("pid", os.getpid(), flush=True)
while True:
    time.sleep(0.2)
"""


def eventually(check: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> Any:
    return wait_until(check, timeout, interval, what)


@dataclass
class Cluster:
    lab: Lab
    cp: ControlPlane
    api: KubeClient
    ns: str
    figures: dict[str, list[float]] = field(default_factory=dict)

    def state_dir(self, node: str) -> Path:
        return labkit.state_dir(self.lab, node)

    def start_agent(self, node: str) -> float:
        """Start the node's agent; returns the seconds until its Node was Ready (reported by
        this agent) and its Lease renewed after the start."""
        t0 = time.monotonic()
        since = _rfc3339_micro_now()
        labkit.start_agent(self.lab, node, *AGENT_FLAGS)

        def ready() -> bool:
            obj = self.api.get(R.NODES, node)
            cond: dict[str, Any] = next((c for c in obj.get("status", {}).get("conditions") or []
                         if c.get("type") == "Ready"), {})
            lease = self.api.get(R.LEASES, node, "kube-node-lease")
            return (cond.get("status") == "True" and cond.get("reason") == "KubeletReady"
                    and "portico lab node agent" in str(cond.get("message"))
                    and str(lease["spec"].get("renewTime", "")) >= since)

        eventually(ready, 30, f"{node} Ready by its agent", interval=0.05)
        return time.monotonic() - t0

    def stop_agent(self, node: str) -> int | None:
        return self.lab.stop_proc(f"agent-{node}", signal.SIGTERM, wait=15.0)

    def agent_log(self, node: str) -> str:
        proc = self.lab.procs.get(f"agent-{node}")
        return proc.log.read_text(errors="replace") if proc else ""

    def pod(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get(R.PODS, name, self.ns)
        except NotFound:
            return None

    def create_pod(self, name: str, node: str | None, containers: list[dict[str, Any]],
                   labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "metadata": {"name": name, "namespace": self.ns, "labels": labels or {}},
            "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **spec}}
        if node:
            body["spec"]["nodeName"] = node
        return self.api.create(R.PODS, body)

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        return eventually(lambda: (p := self.pod(name)) and p.get("status", {}).get(
            "phase") == phase and p, timeout, f"pod {name} {phase}")

    def log_of(self, pod: dict[str, Any], container: str) -> str:
        meta = pod["metadata"]
        node = pod["spec"]["nodeName"]
        path = (self.state_dir(node) / "pods" /
                f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / "logs" / f"{container}.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def volume_dir(self, pod: dict[str, Any], volume: str) -> Path:
        meta = pod["metadata"]
        return (self.state_dir(pod["spec"]["nodeName"]) / "pods" /
                f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / "volumes" / volume)

    def record(self, what: str, seconds: float) -> None:
        self.figures.setdefault(what, []).append(round(seconds, 3))


def _rfc3339_micro_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next((c for c in pod.get("status", {}).get("containerStatuses") or []
                 if c.get("name") == name), {})


def condition(pod: dict[str, Any], ctype: str) -> str | None:
    return next((c.get("status") for c in pod.get("status", {}).get("conditions") or []
                 if c.get("type") == ctype), None)


def pid_of(pod: dict[str, Any], container: str) -> int:
    cid = container_status(pod, container).get("containerID", "")
    assert cid.startswith("portico-lab://"), cid
    return int(cid.rsplit("/", 1)[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only the agent could reap it.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def http_from(ns: str, host: str, port: int, path: str = "/") -> str | None:
    """One GET from inside the network namespace ``ns`` (None: no answer)."""

    def get() -> str | None:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        except OSError:
            return None
        finally:
            conn.close()

    return netns.run_in_netns(ns, get)


def _leftover_pids(state: Path) -> list[int]:
    try:
        data = json.loads((state / "ledger.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for pid, start in (data.get("procs") or {}).items():
        try:
            st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except OSError:
            continue
        if int(st) == start:
            out.append(int(pid))
    return out


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, admin_client: KubeClient) -> Iterator[Cluster]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    # node_agents: the Lab routes the pod CIDRs, starts an agent per node and returns once
    # every Node is Ready by its agent; it creates no Nodes and renews no Leases itself (a
    # stand-in heartbeat would hide a stopped agent).
    with Lab(nodes_count=2, start_controller=False, start_backends=False,
             control_plane=control_plane, node_agents=True,
             node_agent_args=AGENT_FLAGS) as lab:
        ns = f"nodeagent-{lab.tag}"
        cl = Cluster(lab, control_plane, admin_client, ns)
        admin_client.create(R.NAMESPACES, {"metadata": {"name": ns}})
        try:
            eventually(lambda: _get_or_none(admin_client, SERVICEACCOUNTS, "default", ns), 30,
                       "the default ServiceAccount")
            yield cl
        finally:
            print(f"\nnode agent figures: {json.dumps(cl.figures)}")
            print(f"lab logs: {lab.dir}")
            # Pods first, while the agents still run (they end the processes), then the
            # agents, then whatever a killed agent left (by its ledger).
            for res in (DEPLOYMENTS, DAEMONSETS):
                with contextlib.suppress(Exception):
                    for obj in admin_client.list(res, ns)[0]:
                        admin_client.delete(res, obj["metadata"]["name"], ns)
            with contextlib.suppress(Exception):
                pods, _ = admin_client.list(R.PODS, ns)
                for p in pods:
                    with contextlib.suppress(NotFound):
                        admin_client.delete(R.PODS, p["metadata"]["name"], ns)
                eventually(lambda: not admin_client.list(R.PODS, ns)[0], 30, "pods gone")
            for n in lab.nodes:
                cl.stop_agent(n.name)
                for pid in _leftover_pids(cl.state_dir(n.name)):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                admin_client.delete(R.NAMESPACES, ns)
            for n in lab.nodes:
                tail = cl.agent_log(n.name).splitlines()[-25:]
                print(f"--- agent {n.name} ---\n" + "\n".join(tail))


def _get_or_none(api: KubeClient, res: Resource, name: str, ns: str) -> dict[str, Any] | None:
    try:
        return api.get(res, name, ns)
    except NotFound:
        return None


# ---- (a) nodes --------------------------------------------------------------------------------

def test_nodes_register_ready_and_renew_their_leases(cluster: Cluster) -> None:
    lab, api = cluster.lab, cluster.api
    for n in lab.nodes:
        node = api.get(R.NODES, n.name)
        st = node["status"]
        assert {"type": "InternalIP", "address": n.ip4} in st["addresses"]
        assert {"type": "InternalIP", "address": n.ip6} in st["addresses"]
        assert {"type": "Hostname", "address": n.name} in st["addresses"]
        assert node["spec"]["podCIDRs"] == list(labkit.pod_cidrs(n.index))
        assert node["spec"]["podCIDR"] == labkit.pod_cidrs(n.index)[0]
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == n.name
        assert labels["kubernetes.io/os"] == "linux"
        for key in ("cpu", "memory", "pods"):
            assert st["capacity"][key] and st["allocatable"][key]
        uid = node["metadata"]["uid"]

        def lease_of(name: str = n.name, uid: str = uid) -> bool:
            # The node names repeat across this session's labs: the garbage collector may
            # still remove a Lease left by an earlier lab's node of the same name just as
            # the agent takes it over; the agent creates it again at its next renewal.
            try:
                lease = api.get(R.LEASES, name, "kube-node-lease")
            except NotFound:
                return False
            return bool(lease["spec"]["holderIdentity"] == name
                        and lease["metadata"]["ownerReferences"][0]["uid"] == uid)

        eventually(lease_of, 3 * LEASE_RENEW_S, f"the Lease of {n.name}, owned by its Node")
    # The node lifecycle controller lifts the not-ready taint once it saw the Ready Node.
    eventually(lambda: all(not any(t.get("key") == "node.kubernetes.io/not-ready"
                                   for t in api.get(R.NODES, n.name)["spec"].get("taints") or [])
                           for n in lab.nodes), 30, "no not-ready taints")

    def renew(node: str) -> str:
        return str(api.get(R.LEASES, node, "kube-node-lease")["spec"]["renewTime"])

    first = renew("node2")
    eventually(lambda: renew("node2") > first, 5 * LEASE_RENEW_S, "a lease renewal")

    # Stopping the agent stops the renewals (what the node lifecycle controller watches).
    assert cluster.stop_agent("node2") == 0, cluster.agent_log("node2")[-2000:]
    stopped = renew("node2")
    time.sleep(4 * LEASE_RENEW_S)
    assert renew("node2") == stopped, "the lease was renewed with the agent stopped"
    # Started again (same state directory): Ready and renewing again.
    cluster.record("agent restart -> Node Ready (s)", cluster.start_agent("node2"))


# ---- (b) pods run, with the node's network or their own ------------------------------------

def test_pods_run_with_host_network_and_with_their_own(cluster: Cluster) -> None:
    lab = cluster.lab
    n1, n2 = lab.node("node1"), lab.node("node2")
    backend = {"name": "web", "image": BACKEND_IMAGE,
               "args": ["--node", "$(NODE)", "--app", "$(APP)", "--port", "8081"],
               "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                       {"name": "APP", "value": "hostnet"}]}
    t0 = time.monotonic()
    cluster.create_pod("hostnet", "node1", [backend], hostNetwork=True)
    own = dict(backend, args=["--node", "$(NODE)", "--app", "own", "--port", "8080"])
    cluster.create_pod("ownnet", "node2", [own])
    host_pod = cluster.wait_phase("hostnet", "Running")
    own_pod = cluster.wait_phase("ownnet", "Running")
    cluster.record("pod create -> Running (s)", time.monotonic() - t0)

    st = host_pod["status"]
    assert st["podIP"] == n1.ip4 and [p["ip"] for p in st["podIPs"]] == [n1.ip4, n1.ip6]
    assert st["hostIP"] == n1.ip4
    assert container_status(host_pod, "web")["state"]["running"]["startedAt"]
    assert condition(host_pod, "Ready") == "True"
    assert condition(host_pod, "PodScheduled") == "True"  # the API server's, left alone
    # The process listens in node1's namespace: reachable from node2 at node1's address.
    assert "app=hostnet node=node1" in eventually(
        lambda: http_from(n2.ns, n1.ip4, 8081), 10, "hostnet answers")

    st = own_pod["status"]
    ips = [p["ip"] for p in st["podIPs"]]
    assert ips[0].startswith("198.18.2.") and ips[1].startswith("2001:db8:f0:2::"), ips
    assert st["podIP"] == ips[0] and st["hostIP"] == n2.ip4
    # Its own namespace: from its node, from the other node (routed pod CIDRs), both
    # families; nothing listens on node2's own address.
    for src, ip in ((n2.ns, ips[0]), (n1.ns, ips[0]), (n1.ns, ips[1])):
        assert "app=own node=node2" in eventually(
            lambda src=src, ip=ip: http_from(src, ip, 8080), 10, f"ownnet from {src} to {ip}")
    assert http_from(n1.ns, n2.ip4, 8080) is None

    # A settled pod costs no writes: the status is patched only when it changes.
    time.sleep(1.0)
    before = status_writes(cluster, "node2", "ownnet")
    time.sleep(3.0)
    assert status_writes(cluster, "node2", "ownnet") == before
    assert before <= 3, before  # Pending/Running/Ready, at most one write each


def status_writes(cluster: Cluster, node: str, pod: str) -> int:
    """pods/status writes by the node's agent for ``pod``, from the server's audit log."""
    return sum(1 for e in cluster.cp.audit_events()
               if e.get("user", {}).get("username") == f"system:node:{node}"
               and (e.get("objectRef") or {}).get("subresource") == "status"
               and (e.get("objectRef") or {}).get("resource") == "pods"
               and (e.get("objectRef") or {}).get("name") == pod)


# ---- (c) service account token, in-cluster config, env, securityContext --------------------

def test_pod_sees_its_token_and_in_cluster_config_works(cluster: Cluster) -> None:
    api, ns = cluster.api, cluster.ns
    api.create(SERVICEACCOUNTS, {"metadata": {"name": "reader", "namespace": ns}})
    api.create(ROLES, {"metadata": {"name": "reader", "namespace": ns}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    api.create(ROLEBINDINGS, {
        "metadata": {"name": "reader", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]})
    api.create(R.CONFIGMAPS, {"metadata": {"name": "settings", "namespace": ns},
                              "data": {"color": "blue", "size": "3"}})
    api.create(R.SECRETS, {"metadata": {"name": "creds", "namespace": ns},
                           "stringData": {"password": "s3cret"}})

    def field_env(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    container = {
        "name": "probe", "image": PYTHON_IMAGE, "command": ["python", "-c", IN_CLUSTER],
        "env": [field_env("POD_NAME", "metadata.name"), field_env("POD_IP", "status.podIP"),
                field_env("APP", "metadata.labels['app']"), field_env("NODE", "spec.nodeName"),
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                  "key": "password"}}},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings",
                                                                    "key": "color"}}},
                {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {
                    "resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "GREETING", "value": "hi $(POD_NAME) $$(POD_NAME) $(NOPE)"}],
        "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
        "resources": {"limits": {"memory": "64Mi"}},
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}
    cluster.create_pod("incluster", "node2", [container], labels={"app": "reader"},
                       serviceAccountName="reader", restartPolicy="Never",
                       securityContext={"supplementalGroups": [4242]})
    pod = cluster.wait_phase("incluster", "Succeeded", timeout=60)
    term = container_status(pod, "probe")["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed", term
    out = json.loads(cluster.log_of(pod, "probe").strip().splitlines()[-1])

    assert out["files"] == ["ca.crt", "namespace", "token"]
    assert out["namespace"] == ns
    # The token is the pod's: bound to it, for its ServiceAccount.
    claims = json.loads(base64.urlsafe_b64decode(out["token"].split(".")[1] + "=="))
    assert claims["sub"] == f"system:serviceaccount:{ns}:reader"
    assert claims["kubernetes.io"]["pod"] == {"name": "incluster",
                                              "uid": pod["metadata"]["uid"]}
    # in-cluster config worked: the Role allows listing ConfigMaps, nothing else.
    assert "settings" in out["configmaps"] and "kube-root-ca.crt" in out["configmaps"]
    assert out["secrets"] == 403
    assert out["env"] == {
        "POD_NAME": "incluster", "POD_IP": pod["status"]["podIP"], "APP": "reader",
        "NODE": "node2", "SECRET": "s3cret", "COLOR": "blue", "CFG_size": "3",
        "MEM_LIMIT_MI": "64", "GREETING": "hi incluster $(POD_NAME) $(NOPE)",
        "KUBERNETES_SERVICE_HOST": f"{MGMT4}.1",
        "KUBERNETES_SERVICE_PORT": str(urllib.parse.urlsplit(cluster.lab.relay.url).port),
        "HOME": "/"}
    assert out["hostname"] == "incluster"
    # securityContext: user, group, supplemental group; the bounding set is exactly
    # NET_BIND_SERVICE (bit 10) and a non-root process holds no capability.
    assert (out["uid"], out["gid"], out["groups"]) == (10001, 10001, [4242])
    assert int(out["cap_bnd"], 16) == 1 << 10 and int(out["cap_eff"], 16) == 0
    assert out["no_new_privs"] == "1"

    # automountServiceAccountToken: false -> no token in the pod.
    cluster.create_pod("notoken", "node1", [{
        "name": "c", "image": PYTHON_IMAGE, "command": ["python", "-c", (
            "import os; print(os.path.exists('/var/run/secrets/kubernetes.io/"
            "serviceaccount'))")]}],
        restartPolicy="Never", automountServiceAccountToken=False)
    pod = cluster.wait_phase("notoken", "Succeeded")
    assert cluster.log_of(pod, "c").strip() == "False"


MOUNT_CHECK = """
import json, os
print(json.dumps({"crt": open("/etc/portico-lab-secret-volume/crt").read(),
                  "files": sorted(os.listdir("/etc/portico-lab-secret-volume")),
                  "etc_kept": os.path.exists("/etc/passwd"),
                  "deep": os.path.isdir("/etc/portico-lab-a/b")}))
"""


def test_mount_points_missing_on_the_node_are_made_privately(cluster: Cluster) -> None:
    """The Gateway API suite's backends mount a Secret at /etc/secret-volume: an image would
    have that directory, the node does not. The launcher makes it in an overlay of /etc
    private to the container: the pod sees its files and the rest of /etc, the node's /etc
    is never written."""
    api, ns = cluster.api, cluster.ns
    api.create(R.SECRETS, {"metadata": {"name": "tls", "namespace": ns},
                           "stringData": {"tls.crt": "CERT", "tls.key": "KEY"}})
    cluster.create_pod("mounts", "node1", [{
        "name": "c", "image": PYTHON_IMAGE, "command": ["python", "-c", MOUNT_CHECK],
        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
        "volumeMounts": [{"name": "secret-volume",
                          "mountPath": "/etc/portico-lab-secret-volume"},
                         {"name": "scratch", "mountPath": "/etc/portico-lab-a/b"}]}],
        restartPolicy="Never",
        volumes=[{"name": "secret-volume", "secret": {
                     "secretName": "tls", "items": [{"key": "tls.crt", "path": "crt"},
                                                    {"key": "tls.key", "path": "key"}]}},
                 {"name": "scratch", "emptyDir": {}}])
    pod = cluster.wait_phase("mounts", "Succeeded", timeout=60)
    out = json.loads(cluster.log_of(pod, "c").strip().splitlines()[-1])
    assert out == {"crt": "CERT", "files": ["crt", "key"], "etc_kept": True, "deep": True}
    assert not os.path.exists("/etc/portico-lab-secret-volume")
    assert not os.path.exists("/etc/portico-lab-a")


# ---- (d) readiness -> EndpointSlice ---------------------------------------------------------

def _slice_endpoint(api: KubeClient, ns: str, service: str, ip: str) -> dict[str, Any] | None:
    slices, _ = api.list(R.ENDPOINTSLICES, ns,
                         label_selector=f"kubernetes.io/service-name={service}")
    for s in slices:
        for ep in s.get("endpoints") or []:
            if ip in ep.get("addresses", []):
                return dict(ep)
    return None


def test_failing_readiness_probe_takes_the_endpoint_out(cluster: Cluster) -> None:
    api, ns = cluster.api, cluster.ns
    api.create(R.SERVICES, {"metadata": {"name": "web", "namespace": ns}, "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    cluster.create_pod("web", "node1", [{
        "name": "web", "image": PYTHON_IMAGE, "command": ["python", "-c", READY_SERVER],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        labels={"app": "web"}, volumes=[{"name": "tmp", "emptyDir": {}}])
    pod = cluster.wait_phase("web", "Running")
    ip = pod["status"]["podIP"]
    eventually(lambda: (ep := _slice_endpoint(api, ns, "web", ip)) and ep["conditions"]["ready"],
               30, "a ready endpoint in the EndpointSlice")
    pod = cluster.pod("web") or {}
    assert condition(pod, "Ready") == "True" and condition(pod, "ContainersReady") == "True"

    # The readiness probe starts failing: the pod turns NotReady and the real endpoint slice
    # controller marks the endpoint not ready (it keeps not-ready endpoints listed with
    # ready=false; consumers such as kube-proxy and Portico drop them).
    flag = cluster.volume_dir(pod, "tmp") / "unready"
    t0 = time.monotonic()
    flag.write_text("")
    eventually(lambda: (ep := _slice_endpoint(api, ns, "web", ip)) and
               ep["conditions"]["ready"] is False and ep["conditions"].get("serving") is False,
               20, "the endpoint not ready")
    cluster.record("probe fails -> endpoint not ready (s)", time.monotonic() - t0)
    pod = cluster.pod("web") or {}
    assert condition(pod, "Ready") == "False"
    assert container_status(pod, "web")["ready"] is False
    assert container_status(pod, "web")["restartCount"] == 0  # readiness never restarts
    unhealthy = [e for e in api.list(R.EVENTS, ns)[0] if e.get("reason") == "Unhealthy"
                 and e["involvedObject"]["name"] == "web"]
    assert any("HTTP probe failed with statuscode: 503" in e["message"] for e in unhealthy)

    t0 = time.monotonic()
    flag.unlink()
    eventually(lambda: (ep := _slice_endpoint(api, ns, "web", ip)) and ep["conditions"]["ready"],
               20, "the endpoint ready again")
    cluster.record("probe passes -> endpoint ready (s)", time.monotonic() - t0)


# ---- liveness and restart policy ----------------------------------------------------------

def test_liveness_failure_restarts_and_crashes_back_off(cluster: Cluster) -> None:
    cluster.create_pod("lively", "node2", [{
        "name": "app", "image": PYTHON_IMAGE,
        "command": ["python", "-c", "import time\nwhile True: time.sleep(1)"],
        "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -e /tmp/dead"]},
                          "periodSeconds": 1, "failureThreshold": 2},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        volumes=[{"name": "tmp", "emptyDir": {}}], terminationGracePeriodSeconds=1)
    cluster.create_pod("crasher", "node2", [{
        "name": "app", "image": PYTHON_IMAGE, "command": ["sh", "-c", "echo boom; exit 3"]}])
    pod = cluster.wait_phase("lively", "Running")
    first_pid = pid_of(pod, "app")
    flag = cluster.volume_dir(pod, "tmp") / "dead"
    flag.write_text("")
    pod = eventually(lambda: (p := cluster.pod("lively")) and container_status(
        p, "app").get("restartCount", 0) >= 1 and p, 20, "a liveness restart")
    flag.unlink()
    cs = container_status(pod, "app")
    assert cs["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM
    assert not alive(first_pid)
    pod = eventually(lambda: (p := cluster.pod("lively")) and "running" in container_status(
        p, "app").get("state", {}) and p, 10, "running again")
    assert pid_of(pod, "app") != first_pid

    # restartPolicy Always: restarts with back-off, the kubelet's CrashLoopBackOff.
    seen: set[str] = set()

    def looping() -> bool:
        p = cluster.pod("crasher") or {}
        cs = container_status(p, "app")
        seen.update(cs.get("state", {}).get("waiting", {}).get("reason", "") for _ in [0])
        return cs.get("restartCount", 0) >= 3 and "CrashLoopBackOff" in seen

    eventually(looping, 30, "a crash loop")
    p = cluster.pod("crasher") or {}
    cs = container_status(p, "app")
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert p["status"]["phase"] == "Running"  # restarting, per restartPolicy Always
    assert "boom" in cluster.log_of(p, "app")


# ---- (e) graceful deletion --------------------------------------------------------------------

def test_deleting_a_pod_terminates_its_processes_and_the_pod_goes(cluster: Cluster) -> None:
    cluster.create_pod("leaving", "node1", [
        {"name": "polite", "image": PYTHON_IMAGE, "command": ["python", "-c", POLITE]},
        {"name": "stubborn", "image": PYTHON_IMAGE,
         "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]}],
        terminationGracePeriodSeconds=3)
    pod = cluster.wait_phase("leaving", "Running")
    polite, stubborn = pid_of(pod, "polite"), pid_of(pod, "stubborn")
    eventually(lambda: "pid" in cluster.log_of(pod, "polite"), 10, "polite started")
    assert alive(polite) and alive(stubborn)

    t0 = time.monotonic()
    cluster.api.delete(R.PODS, "leaving", cluster.ns)
    eventually(lambda: not alive(polite), 5, "polite gone after SIGTERM")
    t_polite = time.monotonic() - t0
    eventually(lambda: cluster.pod("leaving") is None, 20, "the pod object gone")
    t_gone = time.monotonic() - t0
    assert "got SIGTERM" in cluster.log_of(pod, "polite")
    assert not alive(stubborn)
    # polite left on SIGTERM at once; stubborn ignored it and was killed after the 3 s grace.
    assert t_polite < 2.5, t_polite
    assert t_gone >= 2.5, t_gone
    cluster.record("delete -> pod object gone, grace 3 s (s)", t_gone)


# ---- an agent killed outright ----------------------------------------------------------------

def test_a_killed_agent_is_cleaned_up_and_restarts_its_pods(cluster: Cluster) -> None:
    """SIGKILL leaves the agent no chance to stop its containers: the next agent on the node
    kills what its ledger recorded, removes the pod namespaces, and starts the pods again —
    counting a restart, as a kubelet does after a reboot."""
    cluster.create_pod("survivor", "node2", [{
        "name": "app", "image": PYTHON_IMAGE, "command": ["python", "-c", POLITE]}])
    pod = cluster.wait_phase("survivor", "Running")
    old = pid_of(pod, "app")
    ip = pod["status"]["podIP"]
    assert cluster.lab.stop_proc("agent-node2", signal.SIGKILL, wait=5.0) == -signal.SIGKILL
    assert alive(old)  # orphaned, as the agent could not stop it
    cluster.start_agent("node2")
    eventually(lambda: not alive(old), 10, "the orphan killed by the new agent")
    pod = eventually(lambda: (p := cluster.pod("survivor")) and container_status(
        p, "app").get("restartCount") == 1 and "running" in container_status(
        p, "app").get("state", {}) and p, 20, "the pod running again")
    cs = container_status(pod, "app")
    assert cs["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert pid_of(pod, "app") != old
    assert pod["status"]["podIP"] == ip  # the address it had, from its status
    cluster.api.delete(R.PODS, "survivor", cluster.ns)


# ---- (f) unknown image ----------------------------------------------------------------------

def test_unknown_image_fails_with_a_clear_reason(cluster: Cluster) -> None:
    cluster.create_pod("nginx", "node1", [{"name": "web", "image": "nginx:1.27"}])
    pod = eventually(lambda: (p := cluster.pod("nginx")) and container_status(
        p, "web").get("state", {}).get("waiting", {}).get("reason") == "ErrImageNotMapped"
        and p, 20, "ErrImageNotMapped")
    waiting = container_status(pod, "web")["state"]["waiting"]
    assert "nginx:1.27" in waiting["message"] and "lab/nodeagent/images.py" in waiting["message"]
    assert pod["status"]["phase"] == "Pending"
    events = [e for e in cluster.api.list(R.EVENTS, cluster.ns)[0]
              if e["involvedObject"]["name"] == "nginx" and e.get("reason") == "Failed"]
    assert events and "ErrImageNotMapped" in events[0]["message"]


# ---- bonus: the real controllers and scheduler place pods on the agents' nodes -------------

def test_daemonset_and_deployment_pods_run_through_the_scheduler(cluster: Cluster) -> None:
    api, ns = cluster.api, cluster.ns
    template = {"metadata": {"labels": {"app": "ds"}}, "spec": {
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "web", "image": BACKEND_IMAGE,
                        "args": ["--node", "$(NODE)", "--port", "8080"],
                        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {
                            "fieldPath": "spec.nodeName"}}}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}
    api.create(DAEMONSETS, {"metadata": {"name": "ds", "namespace": ns}, "spec": {
        "selector": {"matchLabels": {"app": "ds"}}, "template": template}})
    deploy_template = json.loads(json.dumps(template).replace('"ds"', '"dep"'))
    api.create(DEPLOYMENTS, {"metadata": {"name": "dep", "namespace": ns}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "dep"}},
        "template": deploy_template}})
    mine = {n.name for n in cluster.lab.nodes}

    def ready(res: Resource, name: str, want: int, field_: str) -> bool:
        obj = api.get(res, name, ns)
        return int(obj.get("status", {}).get(field_) or 0) == want

    eventually(lambda: ready(DAEMONSETS, "ds", len(mine), "numberReady"), 60,
               "the DaemonSet ready on every node")
    eventually(lambda: ready(DEPLOYMENTS, "dep", 2, "readyReplicas"), 60,
               "the Deployment ready")
    pods, _ = api.list(R.PODS, ns, label_selector="app=ds")
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(mine)
    for p in pods:
        assert p["status"]["phase"] == "Running"
        node = p["spec"]["nodeName"]
        answer = http_from(cluster.lab.node(node).ns, p["status"]["podIP"], 8080)
        assert answer is not None and f"node={node}" in answer
    api.delete(DEPLOYMENTS, "dep", ns)
    api.delete(DAEMONSETS, "ds", ns)
