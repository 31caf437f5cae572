"""The lab cluster: Portico installed with ``helm install`` into a namespace lab whose nodes
are Kubernetes Nodes ("kind without Docker").

``with LabCluster() as lc:`` (or ``LabCluster(control_plane=cp)`` to share a running one)

1. the real control plane (``lab.controlplane``; started here unless one is given);
2. a ``lab.topology.Lab`` with a node agent per node namespace (``node_agents=True``): the
   agents register the Nodes and run the pods bound to them; like kind's default e2e cluster,
   ``node1`` carries the control-plane role (label and ``NoSchedule`` taint) and the other
   nodes are workers;
3. the real kube-proxy (nftables mode, ``lab.kubeproxy``) in every node namespace: it
   forwards ClusterIP, NodePort and LoadBalancer-VIP traffic to the pods;
4. ``helm install portico charts/portico -n portico-system`` with values a user could set
   on any cluster (``VALUES``: which interfaces layer 2 answers on), then waits until the
   controller Deployment, the speaker DaemonSet and the ingress Deployment are ready: every
   pod Running and Ready as the node agents report it;
5. ``IPAddressPool`` ``e2e`` + ``L2Advertisement`` ``e2e`` (workers only, as kind/run-e2e.sh
   makes them) from the lab's segment-A VIP range, an IPv6 pool ``e2e6`` announced by the
   same advertisement, and a range for BGP (``BGP_RANGE``) that the lab routes through its
   router (the BGP test makes its own pool from it).

Teardown runs in reverse order (pool objects, ``helm uninstall``, the lab with its
kube-proxies and node agents, the
control plane if it is ours) and also runs when start-up failed half way. The chart's CRDs
are deleted at the end only if they did not exist before (a shared control plane may have
them from elsewhere). ``figures`` holds measured start-up times.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.controlplane import binaries, chart
from lab.controlplane.cluster import ControlPlane
from lab.topology import MGMT4, SEG_A4, SEG_A6, Lab

NAMESPACE = "portico-system"
RELEASE = "portico"
CONTROL_PLANE_NODE = "node1"
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
# Address plan (lab.topology): segment A's VIP range is 192.0.2.192/27 and its BGP range
# 203.0.113.224/28 (routed via the router, which the client uses as its gateway for it).
L2_POOL, L2_RANGE = "e2e", f"{SEG_A4}.200-{SEG_A4}.219"
# IPv6 on segment A (the lab's VIP range 2001:db8:a::1:0/112): a pool of its own, announced
# by the same L2Advertisement (NDP), for the IPv6 e2e test.
L2_POOL6, L2_RANGE6 = "e2e6", f"{SEG_A6}::1:c8-{SEG_A6}::1:db"
BGP_RANGE = f"{MGMT4}.224-{MGMT4}.239"
# Values any user of a multi-homed node could set: layer 2 answers on the nodes' two segment
# interfaces (not on the management link or the pod bridge), and the node counts as cut off
# when its segment-A link has no carrier.
VALUES: dict[str, Any] = {
    "logLevel": "info",
    "speaker": {"extraArgs": ["--interfaces=pl-eth0,pl-eth1",
                              "--liveness-interface=pl-eth0"]},
}
# Node agent flags: the kubelet's defaults except a shorter crash-loop back-off (a component
# that starts before its dependencies retries within seconds, not 10 s .. 5 min).
AGENT_ARGS = ("--backoff-initial", "1", "--backoff-max", "10")
# With kube-proxy the pods reach the API server as in any cluster: KUBERNETES_SERVICE_HOST is
# the `kubernetes` Service's ClusterIP, forwarded by kube-proxy to the apiserver's published
# endpoint (lab.kubeproxy.publish_apiserver). Empty values undo labkit's relay override.
IN_CLUSTER_API_ARGS = ("--api-host", "", "--api-port", "0")
READY_TIMEOUT_S = 180.0
HELM_TIMEOUT_S = 120.0


class LabClusterError(Exception):
    """A step of the lab cluster's start-up failed; the message says which and why."""


@dataclass
class LabCluster:
    control_plane: ControlPlane | None = None
    nodes: int = 3
    release: str = RELEASE
    namespace: str = NAMESPACE
    values: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(VALUES)))
    kube_proxy: bool = True
    # False: the cluster without Portico (no helm install, no pools), e.g. for MetalLB
    # (lab.metallb): two load-balancer controllers must not serve the same Services.
    portico: bool = True
    keep_logs: Callable[[], bool] = lambda: False
    figures: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.own_cp = self.control_plane is None
        self.lab: Lab | None = None
        self.proxies: dict[str, Any] = {}
        self.helm_home = Path(tempfile.mkdtemp(prefix="portico-labcluster-helm-"))
        self.installed = False
        self.crds_before: set[str] = set()
        self.pool_objects: list[str] = []

    # ---- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> LabCluster:
        try:
            self.start()
        except BaseException:
            self.stop(failed=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(failed=exc[0] is not None)

    @property
    def cp(self) -> ControlPlane:
        assert self.control_plane is not None
        return self.control_plane

    @property
    def kubeconfig(self) -> Path:
        return Path(self.cp.kubeconfig)

    def start(self) -> None:
        t0 = time.monotonic()
        if self.control_plane is None:
            self.control_plane = ControlPlane(extra_sans=(f"{MGMT4}.1",)).start()
        self.crds_before = set(self._crd_names()) & set(chart_crds())
        # A lab that ran before on a shared control plane deleted its namespace; Helm cannot
        # install into one that is still terminating.
        self.cp.wait_namespace_not_terminating(self.namespace, 60.0)
        # With the real kube-proxy the nodes accept VIP traffic through its prerouting rules,
        # as on a real cluster: no AnyIP routes and no arp_ignore stand-in (vip_routes).
        lab = Lab(nodes_count=self.nodes, start_controller=False, start_backends=False,
                  routed_vips=True, control_plane=self.cp, node_agents=True,
                  node_agent_args=AGENT_ARGS + (IN_CLUSTER_API_ARGS if self.kube_proxy else ()),
                  vip_routes=not self.kube_proxy)
        self.lab = lab.__enter__()
        self.figures["lab_nodes_ready_s"] = round(time.monotonic() - t0, 2)
        self.kubectl("label", "node", CONTROL_PLANE_NODE, f"{CONTROL_PLANE_ROLE}=",
                     "--overwrite")
        self.kubectl("taint", "node", CONTROL_PLANE_NODE,
                     f"{CONTROL_PLANE_ROLE}:NoSchedule", "--overwrite")
        if self.kube_proxy:
            self._start_kube_proxy()
        if self.portico:
            t1 = time.monotonic()
            self.helm_install()
            self.wait_ready()
            self.figures["helm_install_to_ready_s"] = round(time.monotonic() - t1, 2)
            self.apply_pools()
        self.figures["start_total_s"] = round(time.monotonic() - t0, 2)

    def stop(self, failed: bool = False) -> None:
        keep = failed or self.keep_logs()
        if self.lab is not None and keep:
            print(f"lab cluster logs kept in {self.lab.dir}", file=sys.stderr)
            self._dump_state()
        with contextlib.suppress(Exception):
            self.delete_pools()
        if self.installed:
            with contextlib.suppress(Exception):
                self.helm("uninstall", self.release, "--ignore-not-found", "--wait",
                          "--timeout", "60s", check=False)
            self.installed = False
            with contextlib.suppress(Exception):
                self._wait_pods_gone(60.0)
        if self.lab is not None:
            self.lab.__exit__(None, None, None)
            if not keep:  # the agents' state (pod logs, volumes) and the components' logs
                shutil.rmtree(self.lab.dir, ignore_errors=True)
            self.lab = None
        if self.control_plane is not None and not self.own_cp:
            with contextlib.suppress(Exception):
                self._delete_new_crds()
        if self.control_plane is not None and self.own_cp:
            self.control_plane.keep_logs = self.control_plane.keep_logs or keep
            self.control_plane.stop()
            self.control_plane = None
        shutil.rmtree(self.helm_home, ignore_errors=True)

    # ---- tools ----------------------------------------------------------------------------
    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True,
                timeout: float = 60.0) -> str:
        proc = subprocess.run([str(binaries.binary("kubectl")), "--kubeconfig",
                               str(self.kubeconfig), *args], input=input_text,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise LabClusterError(f"kubectl {' '.join(args)} failed ({proc.returncode}): "
                                  f"{proc.stderr.strip()}")
        return proc.stdout

    def helm(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([str(binaries.binary("helm")), *args, "--namespace",
                               self.namespace], capture_output=True, text=True,
                              env=chart.helm_env(self.helm_home, self.kubeconfig),
                              timeout=HELM_TIMEOUT_S, check=False)
        if check and proc.returncode != 0:
            raise LabClusterError(f"helm {' '.join(args)} failed ({proc.returncode}): "
                                  f"{proc.stderr.strip()}")
        return proc.stdout

    def get(self, path: str) -> Any:
        return self.cp.api("GET", path)

    # ---- steps ----------------------------------------------------------------------------
    def _start_kube_proxy(self) -> None:
        from lab.kubeproxy import publish_apiserver, start_kube_proxies

        assert self.lab is not None
        t0 = time.monotonic()
        # The processes are the lab's (stopped at its teardown, tables deleted by its cleanups).
        self.proxies = start_kube_proxies(self.lab)
        publish_apiserver(self.lab)
        self.figures["kube_proxy_healthy_s"] = round(time.monotonic() - t0, 2)

    def values_file(self) -> Path:
        assert self.lab is not None
        path = Path(self.lab.dir) / "portico-values.yaml"
        path.write_text(yaml.safe_dump(self.values, sort_keys=False))
        return path

    def helm_install(self) -> None:
        self.installed = True  # a half-done install is uninstalled too
        self.helm("install", self.release, str(chart.CHART), "--create-namespace",
                  "--hide-notes", "--values", str(self.values_file()))

    def workloads(self) -> list[tuple[str, str]]:
        """(kind, name) of the chart's workloads, as ``helm get manifest`` lists them."""
        docs = [d for d in yaml.safe_load_all(self.helm("get", "manifest", self.release)) if d]
        return [(d["kind"], d["metadata"]["name"]) for d in docs
                if d["kind"] in ("Deployment", "DaemonSet")]

    def not_ready(self) -> list[str]:
        """What keeps the release from being ready (empty when every workload's pods are
        Running and Ready and each workload counts them all ready)."""
        out = []
        for kind, name in self.workloads():
            plural = "deployments" if kind == "Deployment" else "daemonsets"
            obj = self.get(f"/apis/apps/v1/namespaces/{self.namespace}/{plural}/{name}")
            st = obj.get("status") or {}
            if kind == "Deployment":
                want, ready = int(obj["spec"].get("replicas", 1)), int(st.get(
                    "readyReplicas") or 0)
            else:
                want, ready = int(st.get("desiredNumberScheduled") or 0), int(st.get(
                    "numberReady") or 0)
            if want == 0 or ready < want:
                out.append(f"{kind} {name}: {ready}/{want} ready")
        for pod in self.get(f"/api/v1/namespaces/{self.namespace}/pods")["items"]:
            st = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in st.get("conditions") or [])
            if st.get("phase") != "Running" or not ready:
                waiting = [str((c.get("state") or {}).get("waiting", {}).get("reason", ""))
                           for c in st.get("containerStatuses") or []]
                out.append(f"pod {pod['metadata']['name']} on "
                           f"{pod['spec'].get('nodeName') or '-'}: {st.get('phase')} "
                           f"ready={ready} {' '.join(w for w in waiting if w)}".rstrip())
        return out

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while time.monotonic() < deadline:
            try:
                last = self.not_ready()
            except Exception as exc:  # the API answering late is "not yet"
                last = [f"{type(exc).__name__}: {exc}"]
            if not last:
                return
            time.sleep(0.5)
        raise LabClusterError(f"Portico not ready after {timeout:.0f} s: " + "; ".join(last))

    def pool_manifest(self) -> str:
        objs = [
            {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "IPAddressPool",
             "metadata": {"name": L2_POOL}, "spec": {"addresses": [L2_RANGE]}},
            {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "IPAddressPool",
             "metadata": {"name": L2_POOL6}, "spec": {"addresses": [L2_RANGE6]}},
            {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "L2Advertisement",
             "metadata": {"name": L2_POOL},
             "spec": {"ipAddressPools": [L2_POOL, L2_POOL6],
                      "nodeSelectors": [{"matchExpressions": [
                          {"key": CONTROL_PLANE_ROLE, "operator": "DoesNotExist"}]}]}},
        ]
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})

    def apply_pools(self) -> None:
        self.pool_objects = [self.pool_manifest()]
        self.kubectl("apply", "-f", "-", input_text=self.pool_objects[0])

    def delete_pools(self) -> None:
        for manifest in self.pool_objects:
            self.kubectl("delete", "--ignore-not-found", "-f", "-", input_text=manifest,
                         check=False)
        self.pool_objects = []

    # ---- teardown helpers -------------------------------------------------------------------
    def _wait_pods_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.get(f"/api/v1/namespaces/{self.namespace}/pods")["items"]
            if not items:
                return
            time.sleep(0.5)

    def _crd_names(self) -> list[str]:
        items = self.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
        return [str(i["metadata"]["name"]) for i in items]

    def _delete_new_crds(self) -> None:
        deleted = []
        for name in chart_crds():
            if name not in self.crds_before:
                with contextlib.suppress(Exception):
                    self.cp.api("DELETE",
                                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                    deleted.append(name)
        # Deletion is asynchronous (the server removes the CRD's objects first): the next
        # user of a shared control plane must find them gone, not terminating.
        for name in deleted:
            with contextlib.suppress(Exception):
                self.cp.wait_crd_gone(name)

    def _dump_state(self) -> None:
        with contextlib.suppress(Exception):
            print(self.kubectl("get", "pods", "-A", "-o", "wide", check=False),
                  file=sys.stderr)


def chart_crds() -> list[str]:
    return sorted(str(yaml.safe_load(p.read_text())["metadata"]["name"])
                  for p in (chart.CHART / "crds").glob("*.yaml"))


if __name__ == "__main__":  # python -m lab.labcluster: start, print figures, wait for Ctrl-C
    import signal

    with LabCluster() as lc:
        assert lc.lab is not None
        print(f"lab cluster up: {json.dumps(lc.figures)}; kubeconfig {lc.kubeconfig}; "
              f"logs {lc.lab.dir}", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
