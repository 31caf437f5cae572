"""The real kube-proxy (v1.37.2, nftables mode) in every lab node namespace, on the session's
real control plane: ClusterIP, NodePort and LoadBalancer-VIP traffic is forwarded by
Kubernetes' own rules, and what a node needs to accept VIP traffic is measured, not assumed.

A two-node Lab (``lab.topology.Lab(control_plane=cp)``; each node runs ``lab.backend`` on :80,
which says which node answered) with ``lab.kubeproxy.start_kube_proxies``: one kube-proxy per
node namespace under its own identity (user ``system:kube-proxy``, bound by the bootstrap
ClusterRoleBinding ``system:node-proxier``). No node agent: the Services here have no
selector and the tests write the EndpointSlices by hand (addresses of the nodes' backends,
``nodeName`` per endpoint), which is exactly what kube-proxy consumes. The LoadBalancer VIPs
(192.0.2.180/.181, 2001:db8:a::b4) lie outside the ranges the Lab accepts through AnyIP
``local`` routes, so whatever reaches them is kube-proxy's doing; a static neighbour entry on
the client (VIP -> a node's MAC) stands in for the speaker's ARP/NDP answer.

Figures are printed at the end of the module (``-s`` shows them): kube-proxy start -> rules
programmed, Service create -> rules on every node, EndpointSlice change -> health check flips.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import stat
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.kube import resources as R
from lab import kubeproxy as K
from lab import netns, probe
from lab.controlplane.cluster import ControlPlane
from lab.topology import CLIENT_HOST, ROUTER_HOST, SEG_A4, SEG_A6, Lab, LabNode
from lab.wait import wait_until

pytestmark = pytest.mark.lab

NS = "kubeproxy-lab"  # the tests' own namespace: kube-proxy watches every namespace anyway
VIP4, VIP6 = "192.0.2.180", "2001:db8:a::b4"  # ETP=Cluster (not in Lab's VIP_A4/VIP_A6)
VIP_LOCAL = "192.0.2.181"  # ETP=Local
VIP_ANYIP = "192.0.2.200"  # inside the Lab's VIP_A4: every node also has a local route for it
CLIENT_IP = f"{SEG_A4}.{CLIENT_HOST}"
SVC_PORT, BACKEND_PORT = 8080, 80
HTTP_TIMEOUT = 2.0  # a dropped request costs this much; every answered one takes ms
RULES_TIMEOUT = 15.0  # Service/slice change -> rules: ~0.1 s measured; min sync period is 1 s
SYSCTLS_HOST = ("net.netfilter.nf_conntrack_max",
                "net.netfilter.nf_conntrack_tcp_timeout_established",
                "net.netfilter.nf_conntrack_tcp_timeout_close_wait")
HASHSIZE = "/sys/module/nf_conntrack/parameters/hashsize"


@dataclass
class Cluster:
    lab: Lab
    cp: ControlPlane
    proxies: dict[str, K.KubeProxy]
    host_before: dict[str, str]
    figures: dict[str, str] = field(default_factory=dict)

    def node(self, name: str) -> LabNode:
        return self.lab.node(name)


def _host_conntrack() -> dict[str, str]:
    out = {k: K.read_sysctl(k) for k in SYSCTLS_HOST}
    with open(HASHSIZE) as fh:
        out["hashsize"] = fh.read().strip()
    return out


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[Cluster]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    host_before = _host_conntrack()
    with Lab(nodes_count=2, start_controller=False, control_plane=control_plane) as lab:
        lab.store.create(R.NAMESPACES, {"metadata": {"name": NS}})
        # A node's own connection to an IPv6 ClusterIP needs a route before kube-proxy's
        # nat-output DNAT can see it (the route lookup comes first; without one connect()
        # fails with ENETUNREACH). Real nodes have a default route per family; the Lab gives
        # its nodes an IPv4 one only, so the IPv6 one is added here (proposed for the Lab).
        for n in lab.nodes:
            netns.ip("-6", "route", "replace", "default", "via", f"{SEG_A6}::{ROUTER_HOST:x}",
                     ns=n.ns)
        t0 = time.monotonic()
        proxies = K.start_kube_proxies(lab)
        c = Cluster(lab, control_plane, proxies, host_before)
        c.figures["kube-proxy start -> /healthz 200 (per node)"] = ", ".join(
            f"{kp.healthz_after_s:.2f} s" for kp in proxies.values())
        c.figures["kube-proxy start -> ip+ip6 tables programmed (per node)"] = ", ".join(
            f"{kp.healthy_after_s:.2f} s" for kp in proxies.values())
        c.figures["both kube-proxies started and programmed"] = f"{time.monotonic() - t0:.2f} s"
        yield c
        print(f"\nkube-proxy lab figures (logs in {lab.dir}):")
        for k, v in c.figures.items():
            print(f"  {k}: {v}")


# ---- helpers ---------------------------------------------------------------------------------

def _service(c: Cluster, name: str, *, type_: str, families: tuple[str, ...] = ("IPv4",),
             local: bool = False) -> dict[str, Any]:
    """A Service without selector (its endpoints are the test's EndpointSlices)."""
    spec: dict[str, Any] = {
        "type": type_, "ipFamilies": list(families),
        "ipFamilyPolicy": "RequireDualStack" if len(families) > 1 else "SingleStack",
        "ports": [{"name": "http", "protocol": "TCP",
                   "port": BACKEND_PORT if type_ == "LoadBalancer" else SVC_PORT,
                   "targetPort": BACKEND_PORT}],
    }
    if type_ != "ClusterIP":
        spec["externalTrafficPolicy"] = "Local" if local else "Cluster"
    out: dict[str, Any] = c.lab.store.create(
        R.SERVICES, {"metadata": {"name": name, "namespace": NS}, "spec": spec})
    return out


def _slice_body(service: str, family: str, nodes: list[str], c: Cluster) -> dict[str, Any]:
    v6 = family == "IPv6"
    return {
        "metadata": {"name": f"{service}-{family.lower()}", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "kubeproxy-test.lab"}},
        "addressType": family,
        "ports": [{"name": "http", "protocol": "TCP", "port": BACKEND_PORT}],
        "endpoints": [{"addresses": [c.node(n).ip6 if v6 else c.node(n).ip4], "nodeName": n,
                       "conditions": {"ready": True, "serving": True, "terminating": False}}
                      for n in nodes],
    }


def _set_slice(c: Cluster, service: str, family: str, nodes: list[str]) -> None:
    body = _slice_body(service, family, nodes, c)
    if c.lab.store.get(R.ENDPOINTSLICES, body["metadata"]["name"], NS) is None:
        c.lab.store.create(R.ENDPOINTSLICES, body)
    else:
        c.lab.store.update(R.ENDPOINTSLICES, body)


def _get(ns: str, host: str, port: int, timeout: float = HTTP_TIMEOUT) -> str | None:
    """GET / from inside ``ns``: the body (e.g. "node=node2"), or None if nothing answered."""
    return netns.run_in_netns(ns, lambda: probe.http_get(host, port, timeout),
                              timeout=timeout + 10)


def _wait_rules(c: Cluster, what: str, pred: Callable[[K.KubeProxy], bool],
                nodes: tuple[str, ...] = ("node1", "node2")) -> float:
    """Seconds until ``pred`` holds for the kube-proxy of every node in ``nodes``."""
    t0 = time.monotonic()
    wait_until(lambda: all(pred(c.proxies[n]) for n in nodes), RULES_TIMEOUT, interval=0.02,
               what=what)
    return time.monotonic() - t0


@contextlib.contextmanager
def _client_neighbour(c: Cluster, vip: str, node: str) -> Iterator[None]:
    """The client resolves ``vip`` to ``node``'s MAC: what the speaker's ARP/NDP answer would
    make it do (no speaker runs here). Removed afterwards."""
    six = ["-6"] if ":" in vip else []
    netns.ip(*six, "neigh", "replace", vip, "lladdr", c.node(node).mac_a, "dev", "pl-eth0",
             "nud", "permanent", ns=c.lab.client)
    try:
        yield
    finally:
        netns.ip(*six, "neigh", "del", vip, "dev", "pl-eth0", ns=c.lab.client, check=False)


def _ct(ns: str, **orig: str) -> list[K.ConntrackEntry]:
    return [e for e in K.conntrack(ns) if all(e.orig.get(k) == v for k, v in orig.items())]


# ---- pure helpers -------------------------------------------------------------------------------

def test_config_keeps_kube_proxy_off_host_wide_settings() -> None:
    cfg = K.render_config(node_name="node1", kubeconfig=Path("/x/kp.kubeconfig"),
                          bind_ip="192.0.2.11", node_addresses=("192.0.2.11", "2001:db8:a::11"),
                          healthz="192.0.2.11:10256", metrics="127.0.0.1:10249")
    assert cfg["mode"] == "nftables" and cfg["hostnameOverride"] == "node1"
    assert cfg["conntrack"] == {"maxPerCore": 0, "min": 0}
    assert cfg["nodePortAddresses"] == ["192.0.2.11/32", "2001:db8:a::11/128"]
    assert cfg["clusterCIDR"] == "198.18.0.0/16,2001:db8:f0::/48"


def test_parse_conntrack() -> None:
    text = (
        "ipv4     2 tcp      6 117 TIME_WAIT src=192.0.2.100 dst=192.0.2.180 sport=40000 "
        "dport=80 src=192.0.2.12 dst=192.0.2.11 sport=80 dport=1234 [ASSURED] mark=0 zone=0 "
        "use=2\n"
        "ipv6     10 tcp      6 117 TIME_WAIT src=2001:0db8:000a:0000:0000:0000:0000:0011 "
        "dst=2001:0db8:005e:0000:0000:0000:0000:0001 sport=1 dport=8080 "
        "src=2001:0db8:000a:0000:0000:0000:0000:0012 dst=2001:0db8:000a:0000:0000:0000:0000:0011 "
        "sport=80 dport=1 [ASSURED] mark=0 zone=0 use=2\n")
    v4, v6 = K.parse_conntrack(text)
    assert v4.state == "TIME_WAIT" and v4.dnat and v4.snat
    assert v4.orig["dst"] == "192.0.2.180" and v4.reply["src"] == "192.0.2.12"
    assert v6.orig["dst"] == "2001:db8:5e::1" and v6.reply["src"] == "2001:db8:a::12"
    assert v6.dnat and not v6.snat


# ---- (a) kube-proxy runs, healthy, programmed, with its own identity, leaving the host alone --

def test_kube_proxy_runs_in_every_node_namespace(cluster: Cluster) -> None:
    c = cluster
    for name, kp in c.proxies.items():
        assert kp.running(), kp.log_tail()
        status, body = kp.healthz() or (0, {})
        assert status == 200 and body.get("nodeEligible") is True, (name, status, body)
        assert {("ip", K.TABLE), ("ip6", K.TABLE)} <= kp.tables()
        # The default `kubernetes` Service (no endpoints: the apiserver listens on loopback
        # with endpoint-reconciler none) is already in the rules, rejected.
        rejects = kp.map_elements("no-endpoint-services")
        assert rejects.get(("198.19.0.1", "tcp", "443")) == "goto reject-chain", rejects
        # nodePortAddresses: the node's segment addresses, not its management link.
        npa = kp.nft("list", "set", "ip", K.TABLE, "nodeport-ips")
        n = c.node(name)
        assert n.ip4 in npa and n.ip4_b in npa and n.mgmt not in npa, npa
    # Tables are per network namespace: the root namespace has none.
    assert ("ip", K.TABLE) not in K.tables(None) and ("ip6", K.TABLE) not in K.tables(None)


def test_kube_proxy_uses_its_own_identity(cluster: Cluster) -> None:
    c = cluster
    crb = c.cp.api("GET", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/"
                          "system:node-proxier")
    assert crb["roleRef"]["name"] == "system:node-proxier"
    assert {"kind": "User", "name": K.KUBE_PROXY_USER, "apiGroup": "rbac.authorization.k8s.io"} \
        in crb["subjects"], crb["subjects"]

    def allowed(verb: str, resource: str, group: str = "", sub: str = "") -> bool:
        review = c.cp.api("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": K.KUBE_PROXY_USER, "resourceAttributes": {
                "verb": verb, "resource": resource, "group": group, "subresource": sub}}})
        return bool(review["status"].get("allowed"))

    assert allowed("watch", "endpointslices", "discovery.k8s.io")
    assert allowed("watch", "services") and allowed("get", "nodes")
    assert not allowed("update", "services", sub="status")
    assert not allowed("get", "secrets")
    # The server saw kube-proxy as that user: its start-up Event ("Starting", per node) was
    # written with its certificate and accepted.
    starts = [e for e in c.cp.audit_events()
              if e.get("user", {}).get("username") == K.KUBE_PROXY_USER
              and e.get("verb") == "create" and (e.get("objectRef") or {}).get("resource")
              == "events"]
    assert starts and all(e["responseStatus"]["code"] == 201 for e in starts), starts[:2]
    for kp in c.proxies.values():
        log = kp.proc.log.read_text(errors="replace") if kp.proc else ""
        assert "forbidden" not in log.lower(), kp.log_tail()


def test_kube_proxy_leaves_the_hosts_conntrack_settings_alone(cluster: Cluster) -> None:
    c = cluster
    # Per-namespace timeouts kube-proxy sets (its defaults), as on a real node ...
    for kp in c.proxies.values():
        ns = kp.node.ns
        assert K.read_sysctl("net.netfilter.nf_conntrack_tcp_timeout_established", ns) == "86400"
        assert K.read_sysctl("net.netfilter.nf_conntrack_tcp_timeout_close_wait", ns) == "3600"
        # ... while the table size is the host's and read-only here (maxPerCore: 0 keeps
        # kube-proxy from trying: it would fail with EACCES, or raise the host's hashsize).
        mode = netns.run_in_netns(
            ns, lambda: stat.S_IMODE(os.stat("/proc/sys/net/netfilter/nf_conntrack_max").st_mode))
        assert mode == 0o444, oct(mode)
    assert _host_conntrack() == c.host_before


# ---- (b) ClusterIP -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def web(cluster: Cluster) -> dict[str, Any]:
    """Dual-stack NodePort Service ``web`` (ClusterIPs too) with its endpoints on node2."""
    c = cluster
    svc = _service(c, "web", type_="NodePort", families=("IPv4", "IPv6"))
    t0 = time.monotonic()
    ip4, ip6 = svc["spec"]["clusterIPs"]
    took = _wait_rules(c, "web's ClusterIP in cluster-ips", lambda kp: ip4 in kp.nft(
        "list", "set", "ip", K.TABLE, "cluster-ips"))
    c.figures["Service create -> its ClusterIP in the rules on both nodes"] = f"{took:.2f} s"
    _set_slice(c, "web", "IPv4", ["node2"])
    _set_slice(c, "web", "IPv6", ["node2"])
    took = _wait_rules(c, "web's ClusterIPs in service-ips", lambda kp: (
        (ip4, "tcp", str(SVC_PORT)) in kp.map_elements("service-ips")
        and (ip6, "tcp", str(SVC_PORT)) in kp.map_elements("service-ips", "ip6")))
    c.figures["EndpointSlices create (right after) -> endpoints in the rules on both nodes"] = \
        f"{took:.2f} s (kube-proxy's minSyncPeriod is 1 s; total {time.monotonic() - t0:.2f} s)"
    return svc


def test_cluster_ip_is_forwarded_to_the_endpoint_on_another_node(
        cluster: Cluster, web: dict[str, Any]) -> None:
    c = cluster
    n1 = c.node("node1")
    ip4, ip6 = web["spec"]["clusterIPs"]
    assert _get(n1.ns, ip4, SVC_PORT) == "node=node2\n"
    assert _get(n1.ns, ip6, SVC_PORT) == "node=node2\n"
    # conntrack on node1 (what `conntrack -L` shows): the connection was made to the ClusterIP
    # and answered by node2's backend — the DNAT of kube-proxy's rules.
    for cip, ep in ((ip4, c.node("node2").ip4), (ip6, c.node("node2").ip6)):
        entries = _ct(n1.ns, dst=cip, dport=str(SVC_PORT))
        assert any(e.dnat and e.reply.get("src") == ep and e.reply.get("sport") == "80"
                   for e in entries), entries
    # A port the Service does not have is refused by kube-proxy's cluster-ips-check.
    assert _get(n1.ns, ip4, SVC_PORT + 1) is None


# ---- (c) NodePort --------------------------------------------------------------------------

def test_node_port_on_the_node_addresses_only(cluster: Cluster, web: dict[str, Any]) -> None:
    c = cluster
    n1 = c.node("node1")
    node_port = int(web["spec"]["ports"][0]["nodePort"])
    _wait_rules(c, "web's NodePort", lambda kp: ("tcp", str(node_port))
                in kp.map_elements("service-nodeports"))
    # From the client, to node1's addresses on both segments and over IPv6: node2 answers
    # (node1 DNATs, masquerades and forwards).
    for host in (n1.ip4, n1.ip4_b, n1.ip6):
        assert _get(c.lab.client, host, node_port) == "node=node2\n", host
    entries = _ct(n1.ns, src=CLIENT_IP, dst=n1.ip4, dport=str(node_port))
    assert any(e.dnat and e.snat and e.reply.get("src") == c.node("node2").ip4
               and e.reply.get("dst") == n1.ip4 for e in entries), entries
    # Not on the management link (nodePortAddresses): nothing listens there, nothing DNATs.
    assert _get(c.lab.api, n1.mgmt, node_port) is None


# ---- (d) LoadBalancer VIP, externalTrafficPolicy Cluster -----------------------------------

def test_load_balancer_vip_needs_no_local_address_and_no_arp(cluster: Cluster) -> None:
    c = cluster
    lab = c.lab
    n1, n2 = c.node("node1"), c.node("node2")
    _service(c, "web-lb", type_="LoadBalancer", families=("IPv4", "IPv6"))
    _set_slice(c, "web-lb", "IPv4", ["node2"])
    _set_slice(c, "web-lb", "IPv6", ["node2"])
    lab.set_service_status("web-lb", [VIP4, VIP6, VIP_ANYIP], NS)
    took = _wait_rules(c, "the VIPs in service-ips", lambda kp: (
        (VIP4, "tcp", "80") in kp.map_elements("service-ips")
        and (VIP_ANYIP, "tcp", "80") in kp.map_elements("service-ips")
        and (VIP6, "tcp", "80") in kp.map_elements("service-ips", "ip6")))
    c.figures["status.loadBalancer.ingress patch -> VIP rules on both nodes"] = f"{took:.2f} s"

    # No node has the VIP as an address or a local route: kube-proxy adds neither.
    for n in (n1, n2):
        assert VIP4 not in netns.ip("-4", "addr", ns=n.ns)
        assert VIP6 not in netns.ip("-6", "addr", ns=n.ns)
        assert "local" not in netns.ip("route", "get", VIP4, ns=n.ns)
        assert "local" not in netns.ip("-6", "route", "get", VIP6, ns=n.ns)

    # Nobody answers ARP/NDP for the VIPs, even with the kernel's default ARP settings (the
    # Lab's arp_ignore=1/arp_announce=2 put back to 0 for this check).
    arp = {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}
    try:
        for n in (n1, n2):
            netns.sysctls(n.ns, dict.fromkeys(arp, "0"))
        assert lab.who_has(VIP4) == set()
        assert lab.who_has(VIP6) == set()
    finally:
        for n in (n1, n2):
            netns.sysctls(n.ns, arp)

    # Traffic for the VIP that reaches node1 (its MAC, as after the speaker's answer) is
    # DNATed in prerouting to node2's backend, IPv4 and IPv6.
    for vip in (VIP4, VIP6):
        with _client_neighbour(c, vip, "node1"):
            assert _get(lab.client, vip, 80) == "node=node2\n", vip
            if vip == VIP4:
                # Other traffic to the VIP is not kube-proxy's: no ping answer (with the
                # Lab's AnyIP routes the node would answer it itself).
                assert not lab.ping(vip)
    entries = _ct(n1.ns, src=CLIENT_IP, dst=VIP4, dport="80")
    assert any(e.dnat and e.snat and e.reply.get("src") == n2.ip4 for e in entries), entries
    # The node itself reaches the VIP too (nat-output).
    assert _get(n1.ns, VIP4, 80) == "node=node2\n"
    # A VIP that node1 also accepts through the Lab's AnyIP route: the DNAT in prerouting
    # comes first, so node2's backend answers, not node1's own (which the route would reach).
    assert "local" in netns.ip("route", "get", VIP_ANYIP, ns=n1.ns)
    with _client_neighbour(c, VIP_ANYIP, "node1"):
        assert _get(lab.client, VIP_ANYIP, 80) == "node=node2\n"


# ---- (e) externalTrafficPolicy Local ----------------------------------------------------------

def test_external_traffic_policy_local(cluster: Cluster) -> None:
    c = cluster
    lab = c.lab
    n1, n2 = c.node("node1"), c.node("node2")
    svc = _service(c, "web-local", type_="LoadBalancer", local=True)
    hc = int(svc["spec"]["healthCheckNodePort"])
    _set_slice(c, "web-local", "IPv4", ["node1"])
    lab.set_service_status("web-local", [VIP_LOCAL], NS)
    key = (VIP_LOCAL, "tcp", "80")
    _wait_rules(c, "ETP=Local VIP rules", lambda kp: key in kp.map_elements("service-ips"))
    _wait_rules(c, "node2 drops the VIP", lambda kp: kp.map_elements(
        "no-endpoint-services").get(key) == "drop", nodes=("node2",))
    assert key not in c.proxies["node1"].map_elements("no-endpoint-services")

    def health(node: LabNode) -> tuple[int, int] | None:
        got = K.http_json(lab.client, node.ip4, hc, "/")
        return None if got is None else (got[0], int(got[1].get("localEndpoints", -1)))

    # kube-proxy serves the healthCheckNodePort: 200 with a local endpoint, 503 without.
    wait_until(lambda: health(n1) == (200, 1) and health(n2) == (503, 0), RULES_TIMEOUT,
               interval=0.05, what="healthCheckNodePort 200 on node1, 503 on node2")

    # Through node1 (local endpoint): answered by node1, client address kept (no SNAT).
    with _client_neighbour(c, VIP_LOCAL, "node1"):
        assert _get(lab.client, VIP_LOCAL, 80) == "node=node1\n"
    entries = _ct(n1.ns, dst=VIP_LOCAL, dport="80")
    assert any(e.dnat and not e.snat and e.reply.get("src") == n1.ip4 for e in entries), entries
    # Through node2 (no local endpoint): not DNATed, dropped; nothing reached a backend.
    with _client_neighbour(c, VIP_LOCAL, "node2"):
        assert _get(lab.client, VIP_LOCAL, 80) is None
    assert not [e for e in _ct(n2.ns, dst=VIP_LOCAL) if e.dnat]
    # From node2 itself, though, ETP=Local does not apply (kube-proxy short-circuits traffic
    # with a local source to all endpoints): node1's endpoint answers.
    assert _get(n2.ns, VIP_LOCAL, 80) == "node=node1\n"

    # The endpoint moves to node2: the health checks flip and node2 forwards.
    t0 = time.monotonic()
    _set_slice(c, "web-local", "IPv4", ["node2"])
    wait_until(lambda: health(n1) == (503, 0) and health(n2) == (200, 1), RULES_TIMEOUT,
               interval=0.02, what="healthCheckNodePort flipped to node2")
    c.figures["EndpointSlice moves node1 -> node2: healthCheckNodePort flipped"] = \
        f"{time.monotonic() - t0:.2f} s"
    _wait_rules(c, "node1 drops the VIP", lambda kp: kp.map_elements(
        "no-endpoint-services").get(key) == "drop", nodes=("node1",))
    with _client_neighbour(c, VIP_LOCAL, "node2"):
        assert _get(lab.client, VIP_LOCAL, 80) == "node=node2\n"
    with _client_neighbour(c, VIP_LOCAL, "node1"):
        assert _get(lab.client, VIP_LOCAL, 80) is None


# ---- the `kubernetes` Service, once it has an endpoint -------------------------------------

def test_kubernetes_service_reaches_the_apiserver(cluster: Cluster) -> None:
    """With an EndpointSlice for ``default/kubernetes`` naming the relay
    (``lab.kubeproxy.publish_apiserver``), the in-cluster address (198.19.0.1:443, what
    KUBERNETES_SERVICE_HOST says in a pod) reaches the real apiserver through kube-proxy; its
    serving certificate names 198.19.0.1."""
    c = cluster
    K.publish_apiserver(c.lab)
    key = ("198.19.0.1", "tcp", "443")
    _wait_rules(c, "kubernetes Service rules", lambda kp: key in kp.map_elements("service-ips"))
    ctx = ssl.create_default_context(cafile=str(c.cp.ca.cert_path))

    def version() -> int:
        with urllib.request.urlopen("https://198.19.0.1/version", timeout=5,
                                    context=ctx) as resp:
            return int(resp.status)

    assert netns.run_in_netns(c.node("node1").ns, version) == 200


# ---- stop, restart, clean up -----------------------------------------------------------------

def test_stop_keeps_rules_and_cleanup_deletes_them(cluster: Cluster, web: dict[str, Any]) -> None:
    c = cluster
    kp = c.proxies["node1"]
    ip4 = web["spec"]["clusterIPs"][0]
    rc = kp.stop()
    assert rc is not None and not kp.running()
    # kube-proxy leaves its rules when it exits (traffic keeps flowing across a restart) ...
    assert ("ip", K.TABLE) in kp.tables()
    assert _get(kp.node.ns, ip4, SVC_PORT) == "node=node2\n"
    # ... so the lab deletes its tables by name (this is the lab's teardown step).
    assert sorted(kp.delete_tables()) == ["ip", "ip6"]
    assert not {("ip", K.TABLE), ("ip6", K.TABLE)} & kp.tables()
    assert _get(kp.node.ns, ip4, SVC_PORT, timeout=1.0) is None
    # A new kube-proxy rebuilds everything from the API.
    kp.start()
    took = kp.wait_healthy()
    c.figures["kube-proxy restart (tables deleted) -> programmed again"] = f"{took:.2f} s"
    assert _get(kp.node.ns, ip4, SVC_PORT) == "node=node2\n"
