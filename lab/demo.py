"""The lab demo: the whole system in network namespaces, end to end (``make demo``).

1. starts a real Kubernetes control plane (``lab.controlplane``: etcd, kube-apiserver,
   kube-controller-manager, kube-scheduler built by ``make binaries``) with Portico's CRDs,
   and builds the lab (``lab.topology``): three nodes, a router and a client on a bridge,
   the real ``portico controller`` and one real ``portico speaker`` per node, all talking to
   that API server;
2. applies ``examples/``: the pool, the L2Advertisement, the two web apps' Services and the
   Ingress with two hosts and TLS (the Secret made by ``examples/make-tls-secret.sh``);
3. runs the ingress tier: ``portico ingress`` (HAProxy) on two nodes behind the
   ``portico-ingress`` LoadBalancer Service (``externalTrafficPolicy: Local``), exactly as
   the Helm chart deploys it;
4. from the client: HTTP and HTTPS through the ingress VIP for both hosts;
5. cuts the cable of the node that owns the VIP while the client probes at 100 Hz, and
   prints the measured outage and the new owner; then HTTP(S) again through the VIP;
6. prints a summary and removes everything it created.

There is no kubelet here, so the demo stands in for it — visibly, in its output: it starts
the web apps' "pods" as small HTTP servers in the node namespaces and writes the
EndpointSlices that the endpoint controller would write. Everything else is the real code.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from lab import netns
from lab.controlplane.cluster import ControlPlane, running
from lab.failover import INTERVAL, Prober, analyse, current_owner
from lab.topology import MGMT4, REPO, SPEAKER_NAMESPACE, Lab
from lab.wait import wait_until

EXAMPLES = REPO / "examples"
HOSTS = ("a.demo.example", "b.demo.example")
APPS = {"web-a": 8080, "web-b": 8081}  # each "pod" listens on its node; one port per app
INGRESS_NODES = ("node2", "node3")
INGRESS_SERVICE = "portico-ingress"
INGRESS_PORTS = (("http", 80), ("https", 443))
OBSERVE_S = 3.0  # probing after the cut: failover plus a margin


def say(text: str) -> None:
    print(text, flush=True)


def step(n: int, text: str) -> None:
    say(f"\n== {n}. {text}")


def load_examples(*names: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in names:
        docs += [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    return docs


def apply(lab: Lab, obj: dict[str, Any]) -> None:
    from common.kube import resources as R

    kinds = {r.kind: r for r in R.ALL}
    res = kinds[obj["kind"]]
    ns = obj["metadata"].get("namespace") if res.namespaced else None
    lab.store.create(res, obj, namespace=ns) if ns else lab.store.create(res, obj)
    where = f"{ns}/" if ns else ""
    say(f"   applied {obj['kind']} {where}{obj['metadata']['name']}")


def curl(lab: Lab, url: str, host: str, vip: str, cacert: Path | None = None) -> str:
    port = 443 if url.startswith("https") else 80
    argv = ["ip", "netns", "exec", lab.client, "curl", "-sS", "--max-time", "3",
            "--resolve", f"{host}:{port}:{vip}", "-o", "-",
            "-w", " [HTTP %{http_code}] %{redirect_url}"]
    if cacert is not None:
        argv += ["--cacert", str(cacert)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=10)
    return (out.stdout.strip() or out.stderr.strip()).replace("\n", " ")


def show_requests(lab: Lab, vip: str, cacert: Path) -> list[str]:
    lines = []
    for host in HOSTS:
        for scheme in ("http", "https"):
            got = curl(lab, f"{scheme}://{host}/", host, vip, cacert)
            lines.append(f"   {scheme}://{host}/ -> {got}")
            say(lines[-1])
    return lines


def all_served(lab: Lab, vip: str, cacert: Path, rounds: int = 3) -> bool:
    """Every host answers over HTTPS ``rounds`` times in a row: with round-robin over the
    app's endpoints, one lucky answer does not prove that a removed endpoint is gone."""
    return all("[HTTP 200]" in curl(lab, f"https://{host}/", host, vip, cacert)
               for _ in range(rounds) for host in HOSTS)


def run(lab: Lab) -> dict[str, Any]:
    from common.kube import resources as R

    summary: dict[str, Any] = {}
    step(1, "lab: real control plane (kube-apiserver "
         f"{lab.control_plane.api('GET', '/version')['gitVersion']}); 3 nodes, router, "
         "client; controller; one speaker per node")
    lab.start_speakers()
    lab.wait_speakers_live()
    say(f"   nodes: {', '.join(f'{n.name}={n.ip4}' for n in lab.nodes)}; "
        f"client={lab.client}; logs in {lab.dir}")

    step(2, "apply examples/ (pool, L2Advertisement, apps, Ingress, TLS Secret)")
    for obj in load_examples("pool.yaml", "l2advertisement.yaml"):
        apply(lab, obj)
    for obj in load_examples("web-apps.yaml"):
        if obj["kind"] in ("Namespace", "Service"):
            apply(lab, obj)
        else:
            say(f"   (kubelet stand-in) {obj['kind']} {obj['metadata']['name']}: "
                "started as HTTP servers on every node below")
    tls_dir = Path(tempfile.mkdtemp(prefix="portico-demo-tls-", dir=lab.dir))
    secret_yaml = subprocess.run(["bash", str(EXAMPLES / "make-tls-secret.sh"), str(tls_dir)],
                                 capture_output=True, text=True, check=True).stdout
    apply(lab, yaml.safe_load(secret_yaml))
    apply(lab, {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portico"},
                "spec": {"controller": "portico.dev/ingress"}})
    for obj in load_examples("ingress.yaml"):
        apply(lab, obj)
    for app, port in APPS.items():
        for n in lab.nodes:
            lab.spawn(f"{app}-{n.name}", n.ns, [lab.python, "-m", "lab.backend", "--node",
                                               n.name, "--app", app, "--port", str(port)])
        lab.set_endpoints(app, {n.name: True for n in lab.nodes}, "demo", (("http", port),))
    say("   (endpoint-controller stand-in) EndpointSlices for web-a and web-b written")

    step(3, "ingress tier: `portico ingress` + HAProxy on node2 and node3, behind a VIP")
    apply(lab, {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": INGRESS_SERVICE, "namespace": SPEAKER_NAMESPACE},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                         "selector": {"app": INGRESS_SERVICE}, "ipFamilies": ["IPv4"],
                         "ipFamilyPolicy": "SingleStack",
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                   {"name": "https", "port": 443, "protocol": "TCP"}]}})
    for node in INGRESS_NODES:
        n = lab.node(node)
        lab.spawn(f"ingress-{node}", n.ns, [
            lab.python, "-m", "portico", "ingress", *lab.api_args("ingress"),
            "--publish-service", f"{SPEAKER_NAMESPACE}/{INGRESS_SERVICE}",
            "--state-dir", str(lab.dir / f"ingress-{node}"),
            "--metrics-addr", f"{n.mgmt}:10254", "--haproxy-metrics-addr", "",
            "--log-level", "info"], env={"NODE_NAME": node})
    lab.set_endpoints(INGRESS_SERVICE, {n: True for n in INGRESS_NODES}, SPEAKER_NAMESPACE,
                      INGRESS_PORTS)
    vip = wait_until(lambda: (ips := lab.service_ips(INGRESS_SERVICE, SPEAKER_NAMESPACE))
                     and ips[0], 30, what="the ingress VIP")
    say(f"   controller assigned the ingress VIP {vip} (pool demo)")
    owner, owner_mac = current_owner(lab, vip)
    say(f"   announced by {owner} ({owner_mac}); only node2/node3 may announce "
        "(externalTrafficPolicy: Local, ingress endpoints there)")

    def ingress_status() -> str | None:
        obj = lab.store.get(R.INGRESSES, "demo", "demo") or {}
        lbs = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return str(lbs[0].get("ip")) if lbs else None
    wait_until(lambda: ingress_status() == vip, 30, what="Ingress status")
    say(f"   Ingress demo/demo status.loadBalancer: {ingress_status()}")

    step(4, "from the client: HTTP and HTTPS through the VIP")
    cacert = tls_dir / "tls.crt"
    wait_until(lambda: all_served(lab, vip, cacert), 30, what="HTTPS through the ingress")
    summary["before"] = show_requests(lab, vip, cacert)

    step(5, f"failover: cut the cable of {owner} (the VIP owner), client probing at 100 Hz")
    prober = Prober(lab.client, "pl-eth0", vip)
    prober.start()
    try:
        time.sleep(1.0)
        prober.reset()
        time.sleep(0.5)
        t_fault = time.monotonic()
        lab.cut_link(owner)
        time.sleep(OBSERVE_S)
        rec = prober.reset()
    finally:
        prober.stop()
    trial = analyse("cut", owner, owner_mac, rec, t_fault, lab)
    takeover = f"{trial.takeover * 1000:.0f} ms" if trial.takeover is not None else "none"
    say(f"   lost probes: {trial.lost}; outage seen by the client: {trial.outage * 1000:.0f} ms "
        f"(probe interval {INTERVAL * 1000:.0f} ms)")
    say(f"   new owner: {trial.new_owner}; takeover (first ARP answer from it): {takeover}; "
        f"split brain rounds: {trial.split_rounds}")
    summary.update(owner=owner, new_owner=trial.new_owner, outage_ms=trial.outage * 1000,
                   lost=trial.lost, takeover=takeover)
    # Kubernetes marks the dead node's endpoints not ready only after the node monitor grace
    # period (about 40 s); the demo does it at once so HTTP needs no retries on dead backends.
    for app, port in APPS.items():
        lab.set_endpoints(app, {n.name: n.name != owner for n in lab.nodes}, "demo",
                          (("http", port),))
    lab.set_endpoints(INGRESS_SERVICE, {n: n != owner for n in INGRESS_NODES},
                      SPEAKER_NAMESPACE, INGRESS_PORTS)
    say(f"   (node-lifecycle stand-in) endpoints on {owner} marked not ready")
    wait_until(lambda: all_served(lab, vip, cacert), 30, what="HTTPS after failover")
    summary["after"] = show_requests(lab, vip, cacert)
    summary["vip"] = vip
    return summary


def main(argv: list[str] | None = None) -> int:
    reason = netns.available()
    if reason:
        say(f"demo needs root and network namespaces: {reason}")
        return 2
    started = time.monotonic()
    try:
        from lab.controlplane.binaries import BuildError, binary

        binary("kube-apiserver")
    except BuildError as e:
        say(f"demo needs the control-plane binaries: {e}")
        return 2
    with running(extra_sans=(f"{MGMT4}.1",)) as cp:
        return _run_lab(cp, started)


def _run_lab(cp: ControlPlane, started: float) -> int:
    with Lab(nodes_count=3, start_backends=False, control_plane=cp) as lab:
        try:
            summary = run(lab)
        except Exception as e:
            say(f"\ndemo failed: {e}\nlogs: {lab.dir}")
            raise
        step(6, "summary")
        say(f"   ingress VIP {summary['vip']}: HTTP and HTTPS answered for {', '.join(HOSTS)}")
        say(f"   owner {summary['owner']} cut off -> {summary['new_owner']} took over; "
            f"client outage {summary['outage_ms']:.0f} ms ({summary['lost']} probes lost at "
            "100 Hz)")
        ok = all("[HTTP 200]" in line for line in summary["before"] + summary["after"]
                 if line.lstrip().startswith("https://"))
        say(f"   HTTPS after failover: {'all 200' if ok else 'FAILED'}")
        say("   cleaning up namespaces and processes ...")
        procs = [p.popen for p in lab.procs.values()]
        prefix = f"pl-{lab.tag}-"
    left_ns = [ns for ns in netns.ip("netns", "list").split() if ns.startswith(prefix)]
    left_procs = [p.pid for p in procs if p.poll() is None]
    if left_ns or left_procs:
        say(f"cleanup incomplete: namespaces {left_ns}, processes {left_procs}")
        return 1
    say(f"done in {time.monotonic() - started:.0f} s; no namespace or process left behind.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

