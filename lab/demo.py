"""The lab demo: Portico installed with Helm into the lab cluster, end to end (``make demo``).

1. starts a real Kubernetes control plane (``lab.controlplane``: etcd, kube-apiserver,
   kube-controller-manager, kube-scheduler built by ``make binaries``) and the lab cluster
   (``lab.labcluster``): three node namespaces whose node agents register them as Nodes and
   run their pods as processes, the real kube-proxy on each, then
   ``helm install portico charts/portico`` — the controller Deployment, the speaker DaemonSet
   and the ingress tier come from the chart's own pod specs;
2. applies ``examples/`` with kubectl, as a user would: the pool, the L2Advertisement, the two
   web apps (Deployments of agnhost serve-hostname, which the node agents run) and their
   Services, the TLS Secret made by ``examples/make-tls-secret.sh`` and the Ingress;
3. prints the ``kubectl get`` views a user looks at: pools with their counts, Services with
   their VIPs, who announces each VIP (the speaker's ``portico.dev/L2Announced`` condition),
   the Ingress address, the pods;
4. from the client namespace: HTTP and HTTPS through the ingress VIP for both hosts;
5. kills the node that owns the ingress VIP — its segment-A cable (the client's network) and
   its management cable (its agent's path to the API server) cut at the switch — while the
   client probes the VIP at 100 Hz: ARP (who answers) and TCP connects to :443 (the data
   path; kube-proxy forwards only the Service's ports, so a VIP answers no ping). Prints the
   outage and the new owner; then waits until Kubernetes itself notices the dead node (the
   node lifecycle controller marks its pods not ready; the EndpointSlices and HAProxy drop
   them) and shows HTTP(S) through the VIP again;
6. plugs the node back in, prints a summary and removes everything (Helm release, lab
   namespaces and processes, control plane).

The controller-manager runs with a node-monitor grace period of ``GRACE_S`` instead of the
default 50 s, so that step 5's "Kubernetes notices" happens while you watch; the VIP's move
does not depend on it (the speakers detect a dead peer themselves).
"""

from __future__ import annotations

import contextlib
import errno
import json
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import netns
from lab.controlplane.cluster import ControlPlane, running
from lab.failover import INTERVAL, Prober, analyse, current_owner
from lab.labcluster import READY_TIMEOUT_S, LabCluster
from lab.topology import MGMT4, REPO
from lab.wait import wait_until

EXAMPLES = REPO / "examples"
HOSTS = ("a.demo.example", "b.demo.example")
APP_NAMESPACE = "demo"
OBSERVE_S = 3.0  # probing after the cut: failover plus a margin
GRACE_S = 15  # kube-controller-manager --node-monitor-grace-period (default 50 s)
CONTROLLER_MANAGER_ARGS = (f"--node-monitor-grace-period={GRACE_S}s",
                           "--node-monitor-period=1s")
# A TCP probe not connected by then counts as lost: below the kernel's 1 s initial SYN
# retransmission timeout, so only a first SYN that got through counts (the lab's RTT is well
# under a millisecond).
CONNECT_TIMEOUT_S = 0.5
L2_CONDITION = "portico.dev/L2Announced"  # speaker/core/l2_report.py CONDITION_TYPE


def say(text: str) -> None:
    print(text, flush=True)


def step(n: int, text: str) -> None:
    say(f"\n== {n}. {text}")


def indent(text: str, prefix: str = "   ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())


class DemoCluster(LabCluster):
    """The lab cluster as ``LabCluster`` builds it, telling its steps as it goes; without the
    e2e suite's pools (the demo applies ``examples/pool.yaml`` like a user)."""

    _t_helm = 0.0

    def helm_install(self) -> None:
        say(f"   nodes Ready by their node agents, kube-proxy healthy on each "
            f"({self.figures.get('lab_nodes_ready_s', 0):.1f} s + "
            f"{self.figures.get('kube_proxy_healthy_s', 0):.1f} s)")
        say(f"   $ helm install {self.release} charts/portico --namespace {self.namespace} "
            "--create-namespace --values portico-values.yaml")
        say(indent(yaml.safe_dump(self.values, sort_keys=False), "     | "))
        self._t_helm = time.monotonic()
        super().helm_install()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        super().wait_ready(timeout)
        say(f"   every Portico pod Running and Ready {time.monotonic() - self._t_helm:.1f} s "
            "after `helm install` started")

    def apply_pools(self) -> None:
        self.pool_objects = []  # step 2 applies the examples' pool; stop() deletes it


def kubectl(lc: LabCluster, *args: str) -> str:
    """The real kubectl (the lab's admin kubeconfig), printed as typed and with its output."""
    shown = " ".join(a if " " not in a else f"'{a}'" for a in args)
    say(f"   $ kubectl {shown.replace(f'{REPO}/', '')}")
    out = lc.kubectl(*args)
    if out.strip():
        say(indent(out, "     "))
    return out


def get_json(lc: LabCluster, *args: str) -> Any:
    return json.loads(lc.kubectl("get", *args, "-o", "json"))


def vip_of(lc: LabCluster) -> str | None:
    svc = get_json(lc, "svc", f"{lc.release}-ingress", "-n", lc.namespace)
    ips = [e.get("ip") for e in (svc.get("status") or {}).get("loadBalancer", {}).get(
        "ingress") or [] if e.get("ip")]
    return str(ips[0]) if ips else None


def announced(lc: LabCluster, name: str, namespace: str) -> str | None:
    """The message of a Service's L2Announced condition when it is True."""
    svc = get_json(lc, "svc", name, "-n", namespace)
    for c in (svc.get("status") or {}).get("conditions") or []:
        if c.get("type") == L2_CONDITION and c.get("status") == "True":
            return str(c.get("message", ""))
    return None


def pod_nodes(lc: LabCluster) -> dict[str, str]:
    items = get_json(lc, "pods", "-n", APP_NAMESPACE)["items"]
    return {p["metadata"]["name"]: p["spec"].get("nodeName") or "-" for p in items}


def node_ready(lc: LabCluster, node: str) -> str:
    obj = get_json(lc, "node", node)
    return next((str(c.get("status")) for c in obj["status"].get("conditions") or []
                 if c.get("type") == "Ready"), "?")


def curl(lc: LabCluster, scheme: str, host: str, vip: str, cacert: Path,
         max_time: float = 3.0) -> tuple[str, str]:
    """(HTTP status, body or redirect target) of one request from the client namespace."""
    assert lc.lab is not None
    port = 443 if scheme == "https" else 80
    argv = ["ip", "netns", "exec", lc.lab.client, "curl", "-sS", "--max-time", str(max_time),
            "--resolve", f"{host}:{port}:{vip}", "--cacert", str(cacert), "-o", "-",
            "-w", "\n%{http_code} %{redirect_url}", f"{scheme}://{host}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=max_time + 10)
    if out.returncode != 0:
        return "error", (out.stderr.strip() or f"curl exit {out.returncode}")
    body, _, tail = out.stdout.rpartition("\n")
    code, _, redirect = tail.partition(" ")
    return code, (f"-> {redirect}" if redirect else body.strip())


def show_requests(lc: LabCluster, vip: str, cacert: Path) -> list[str]:
    nodes = pod_nodes(lc)
    lines = []
    for host in HOSTS:
        for scheme in ("http", "https"):
            code, what = curl(lc, scheme, host, vip, cacert)
            where = f" (pod on {nodes[what]})" if what in nodes else ""
            lines.append(f"   {scheme}://{host}/ -> HTTP {code} {what}{where}")
            say(lines[-1])
    return lines


def all_served(lc: LabCluster, vip: str, cacert: Path, rounds: int = 3) -> bool:
    """Every host answers over HTTPS ``rounds`` times in a row: with round-robin over the
    app's endpoints, one lucky answer does not prove that a dead endpoint is gone."""
    return all(curl(lc, "https", host, vip, cacert)[0] == "200"
               for _ in range(rounds) for host in HOSTS)


@dataclass
class ConnectProber:
    """The data path at 100 Hz: a non-blocking TCP connect to VIP:port every ``INTERVAL``
    from the client namespace (through the client's own ARP cache, as an application);
    a connect not established within ``CONNECT_TIMEOUT_S`` is lost."""

    ns: str
    vip: str
    port: int
    sent: dict[int, float] = field(default_factory=dict)
    ok: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = netns.start_thread_in_netns(self.ns, self._run, "connect-prober")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        pending: dict[socket.socket, int] = {}
        seq = 0
        next_t = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_t:
                    seq += 1
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    self.sent[seq] = now
                    err = s.connect_ex((self.vip, self.port))
                    if err == 0:
                        self.ok[seq] = now
                        s.close()
                    elif err == errno.EINPROGRESS:
                        pending[s] = seq
                    else:
                        s.close()
                    next_t = max(next_t + INTERVAL, now)
                for s, n in list(pending.items()):  # at most CONNECT_TIMEOUT_S / INTERVAL
                    if now - self.sent[n] > CONNECT_TIMEOUT_S:
                        s.close()
                        del pending[s]
                _, writable, _ = select.select([], list(pending), [],
                                               max(0.0, next_t - time.monotonic()))
                for s in writable:
                    n = pending.pop(s)
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        self.ok[n] = time.monotonic()
                    s.close()
        finally:
            for s in pending:
                s.close()

    def outage(self, since: float) -> tuple[float, int, float | None]:
        """(longest run of lost connects x interval, connects lost, first connect established
        after the last loss, in s since ``since``); only probes old enough to be decided."""
        last = max(self.sent.values(), default=0.0) - CONNECT_TIMEOUT_S
        seqs = sorted(n for n, t in self.sent.items() if since - 0.5 <= t <= last)
        run = longest = lost = 0
        last_lost = None
        for n in seqs:
            if n in self.ok:
                run = 0
            else:
                lost += 1
                run += 1
                longest = max(longest, run)
                last_lost = n
        resumed = None
        if last_lost is not None:
            after = [self.ok[n] for n in seqs if n > last_lost and n in self.ok]
            resumed = min(after) - since if after else None
        return longest * INTERVAL, lost, resumed


def run(lc: LabCluster, figures: dict[str, Any]) -> dict[str, Any]:
    lab = lc.lab
    assert lab is not None
    summary: dict[str, Any] = {}
    kubectl(lc, "get", "nodes", "-o", "wide")

    step(2, "apply examples/ with kubectl (pool, L2Advertisement, web apps, TLS Secret, "
            "Ingress)")
    pool = "\n---\n".join((EXAMPLES / n).read_text() for n in ("pool.yaml",
                                                                 "l2advertisement.yaml"))
    lc.pool_objects.append(pool)  # deleted by the lab cluster's teardown
    kubectl(lc, "apply", *(w for n in ("pool.yaml", "l2advertisement.yaml", "web-apps.yaml")
                           for w in ("-f", str(EXAMPLES / n))))
    tls_dir = Path(tempfile.mkdtemp(prefix="portico-demo-tls-", dir=lab.dir))
    secret = subprocess.run(["bash", str(EXAMPLES / "make-tls-secret.sh"), str(tls_dir)],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    say("   $ bash examples/make-tls-secret.sh | kubectl apply -f -")
    say(indent(lc.kubectl("apply", "-f", "-", input_text=secret), "     "))
    kubectl(lc, "apply", "-f", str(EXAMPLES / "ingress.yaml"))
    t0 = time.monotonic()
    for app in ("web-a", "web-b"):
        kubectl(lc, "rollout", "status", f"deployment/{app}", "-n", APP_NAMESPACE,
                "--timeout=120s")
    figures["apps_ready_s"] = round(time.monotonic() - t0, 1)

    step(3, "what a user sees with kubectl")
    ingress_svc = f"{lc.release}-ingress"
    vip = wait_until(lambda: vip_of(lc), 60, what="the ingress VIP")
    wait_until(lambda: announced(lc, ingress_svc, lc.namespace), 60,
               what="the ingress VIP announced")

    def ingress_address() -> bool:
        obj = get_json(lc, "ingress", "demo", "-n", APP_NAMESPACE)
        return any(e.get("ip") == vip for e in (obj.get("status") or {}).get(
            "loadBalancer", {}).get("ingress") or [])
    wait_until(ingress_address, 60, what="the Ingress address")
    # The pool's counts are in its status (the printer columns show only what is available).
    kubectl(lc, "get", "ipaddresspools", "-o", "custom-columns=NAME:.metadata.name,"
            "ADDRESSES:.spec.addresses,IPV4-TOTAL:.status.ipv4.total,"
            "ASSIGNED:.status.ipv4.assigned,AVAILABLE:.status.ipv4.available")
    kubectl(lc, "get", "svc", "-A")
    views = ("custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,"
             "VIP:.status.loadBalancer.ingress[*].ip,"
             f"ANNOUNCED:.status.conditions[?(@.type==\"{L2_CONDITION}\")].status,"
             f"BY:.status.conditions[?(@.type==\"{L2_CONDITION}\")].message")
    kubectl(lc, "get", "svc", "-A", "--field-selector", "spec.type=LoadBalancer", "-o", views)
    kubectl(lc, "get", "ingress", "-A")
    kubectl(lc, "get", "pods", "-n", lc.namespace, "-o", "wide")
    kubectl(lc, "get", "pods", "-n", APP_NAMESPACE, "-o", "wide")
    owner, owner_mac = current_owner(lab, vip)
    say(f"   the client's ARP for {vip} is answered by {owner} ({owner_mac}); "
        "externalTrafficPolicy: Local, so only nodes with a ready ingress pod may announce")

    step(4, f"from the client ({lab.client}): HTTP and HTTPS through the ingress VIP {vip}")
    cacert = tls_dir / "tls.crt"
    wait_until(lambda: all_served(lc, vip, cacert), 60, what="HTTPS through the ingress")
    summary["before"] = show_requests(lc, vip, cacert)

    step(5, f"failover: {owner} (the VIP owner) dies — its segment-A and management cables "
            "cut — while the client probes at 100 Hz")
    prober = Prober(lab.client, "pl-eth0", vip)
    connects = ConnectProber(lab.client, vip, 443)
    prober.start()
    connects.start()
    try:
        time.sleep(1.0)
        prober.reset()
        time.sleep(0.5)
        t_fault = time.monotonic()
        lab.cut_link(owner, up=False, mgmt=True)
        summary["cut"] = owner
        time.sleep(OBSERVE_S + CONNECT_TIMEOUT_S)
        rec = prober.reset()
    finally:
        prober.stop()
        connects.stop()
    trial = analyse("cut", owner, owner_mac, rec, t_fault, lab)
    outage, lost, resumed = connects.outage(t_fault)
    takeover = f"{trial.takeover * 1000:.0f} ms" if trial.takeover is not None else "none"
    resumed_s = f"{resumed * 1000:.0f} ms" if resumed is not None else "never"
    say(f"   TCP connects to {vip}:443 (100 Hz): {lost} lost; longest outage "
        f"{outage * 1000:.0f} ms; connects succeed again {resumed_s} after the cut")
    say(f"   ARP (100 Hz): new owner {trial.new_owner}; its first answer {takeover} after the "
        f"cut; longest stretch without an answer {trial.arp_gap * 1000:.0f} ms; split-brain "
        f"rounds: {trial.split_rounds}")
    summary.update(owner=owner, new_owner=trial.new_owner, outage_ms=outage * 1000,
                   lost=lost, resumed=resumed, takeover=takeover)
    msg = wait_until(lambda: (m := announced(lc, ingress_svc, lc.namespace)) and owner not in m
                     and m, 30, what="the L2Announced condition to name the new owner")
    say(f"   {ingress_svc} condition {L2_CONDITION}: {msg}")
    kubectl(lc, "get", "events", "-n", lc.namespace, "--field-selector",
            f"involvedObject.name={ingress_svc},reason=L2Announcing")
    t_nr = wait_until(lambda: node_ready(lc, owner) != "True" and time.monotonic(),
                      GRACE_S + 45, what=f"{owner} not Ready")
    say(f"   node lifecycle controller: {owner} Ready={node_ready(lc, owner)} "
        f"{t_nr - t_fault:.0f} s after the cut ({GRACE_S} s after its last Lease renewal); "
        "it marks the node's pods not ready, the EndpointSlices and then HAProxy drop them")
    wait_until(lambda: all_served(lc, vip, cacert), 60, what="HTTPS after the failover")
    summary["served_again_s"] = round(time.monotonic() - t_fault, 1)
    kubectl(lc, "get", "nodes")
    summary["after"] = show_requests(lc, vip, cacert)
    summary["vip"] = vip

    step(6, f"{owner}'s cables plugged back in")
    lab.cut_link(owner, up=True, mgmt=True)
    wait_until(lambda: node_ready(lc, owner) == "True", 90, what=f"{owner} Ready again")
    say(f"   {owner} Ready again")
    return summary


def main(argv: list[str] | None = None) -> int:
    reason = netns.available()
    if reason:
        say(f"demo needs root and network namespaces: {reason}")
        return 2
    started = time.monotonic()
    try:
        from lab.controlplane.binaries import BuildError, binary

        for name in ("kube-apiserver", "kubectl", "helm"):
            binary(name)
    except BuildError as e:
        say(f"demo needs the control-plane binaries (`make binaries`): {e}")
        return 2
    step(1, "the lab cluster: control plane, 3 nodes with node agents and kube-proxy, "
            "Portico by helm install")
    # Helm installs the CRDs (charts/portico/crds), as on any cluster: crds=False.
    with running(crds=False, extra_sans=(f"{MGMT4}.1",),
                 controller_manager_args=CONTROLLER_MANAGER_ARGS) as cp:
        say(f"   control plane up: kube-apiserver {cp.api('GET', '/version')['gitVersion']} "
            f"on {cp.url} ({time.monotonic() - started:.1f} s)")
        return _run_cluster(cp, started)


def _run_cluster(cp: ControlPlane, started: float) -> int:
    figures: dict[str, Any] = {}
    namespaces: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    with DemoCluster(control_plane=cp) as lc:
        assert lc.lab is not None
        figures.update(lc.figures)
        try:
            summary = run(lc, figures)
        except Exception as e:
            say(f"\ndemo failed: {e}\nlogs: {lc.lab.dir}")
            raise
        step(7, "summary")
        say(f"   helm install -> every Portico pod Ready: "
            f"{figures.get('helm_install_to_ready_s')} s; lab cluster up in "
            f"{figures.get('start_total_s')} s; web apps rolled out in "
            f"{figures.get('apps_ready_s')} s")
        https = [line for line in summary["before"] + summary["after"]
                 if line.lstrip().startswith("https://")]
        ok = all(" HTTP 200 web-" in line for line in https)
        say(f"   ingress VIP {summary['vip']}: HTTP and HTTPS answered for {', '.join(HOSTS)}")
        resumed = summary["resumed"]
        say(f"   owner {summary['owner']} died -> {summary['new_owner']} took over; client "
            f"outage {summary['outage_ms']:.0f} ms ({summary['lost']} TCP connects lost at "
            "100 Hz; connects again "
            f"{'never' if resumed is None else f'{resumed * 1000:.0f} ms'} after the cut)")
        say(f"   dead node's pods dropped by Kubernetes, HTTPS all 200 again "
            f"{summary['served_again_s']} s after the cut")
        say(f"   HTTPS before and after failover: {'all 200' if ok else 'FAILED'}")
        say("   cleaning up: demo namespace, pool, helm uninstall, lab, control plane ...")
        lc.kubectl("delete", "namespace", APP_NAMESPACE, "--timeout=90s", check=False,
                   timeout=120)
        namespaces = list(lc.lab.namespaces)
        procs = [p.popen for p in lc.lab.procs.values()]
    left_ns = [ns for ns in netns.ip("netns", "list").split() if ns in namespaces]
    left_procs = [p.pid for p in procs if p.poll() is None]
    if left_ns or left_procs:
        say(f"cleanup incomplete: namespaces {left_ns}, processes {left_procs}")
        return 1
    say(f"done in {time.monotonic() - started:.0f} s; no namespace or process left behind.")
    return 0 if ok and summary["new_owner"] not in (None, summary["owner"]) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
