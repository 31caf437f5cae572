"""The real kube-proxy (v1.37.2, nftables mode) in lab node namespaces.

``start_kube_proxies(lab)`` writes one KubeProxyConfiguration per node, starts the binary
that ``lab.controlplane.binaries`` built (``kube-proxy --config FILE``) in each node's network
namespace through ``Lab.spawn`` (PID recorded, stopped with SIGTERM at teardown), waits for
its ``/healthz``, and registers a cleanup that deletes the ``ip``/``ip6 kube-proxy`` nftables
tables by name before the lab deletes the namespaces (kube-proxy leaves its rules in place
when it exits, on purpose: traffic keeps flowing across a restart). nftables tables are
per network namespace, so deleting the namespace frees them as well, and the root namespace
never gets one (the tests check that, and that the deletion by name works).

Identity: a client certificate for user ``system:kube-proxy`` (group-less), which the
bootstrap ClusterRoleBinding ``system:node-proxier`` binds to the ClusterRole of the same
name (list/watch Services, EndpointSlices, ServiceCIDRs; get/list/watch Nodes; create
Events). It reaches the real apiserver through the lab's relay at 203.0.113.1 (every node's
management link), like every other lab component.

Configuration, and why:

* ``mode: nftables``: this kernel has nftables with NAT and no IPVS; there is no ``iptables``
  binary either. kube-proxy 1.37 programs nftables over netlink (feature ``NFTablesNetlink``,
  beta, on by default), so it does not even need the ``nft`` CLI (the tests use it to look).
* ``clusterCIDR``: the pod ranges of the node agent's pod network (198.18.0.0/16 and
  2001:db8:f0::/48, ``lab.nodeagent.labkit.CLUSTER_CIDRS``, repeated here so this module does
  not depend on the agent). kube-proxy uses it only to tell pod traffic from other traffic
  (masquerade, ETP=Local short-circuit). Dual stack works: the nodes have IPv6 and the Node
  objects list an IPv4 and an IPv6 InternalIP, so kube-proxy runs one proxier per family.
* ``bindAddress``/``hostnameOverride``: the node's segment-A address and Node name.
* ``healthzBindAddress``: the node's segment-A address :10256, where an external load
  balancer would probe it; ``metricsBindAddress``: 127.0.0.1:10249 inside the namespace.
* ``nodePortAddresses``: the node's own segment addresses (/32, /128) only, so NodePorts and
  healthCheckNodePorts are not opened on the management link (203.0.113.0/24).
* conntrack (``pkg/proxy/conntrack/sysctls.go``): with ``maxPerCore`` > 0 kube-proxy computes
  max(maxPerCore x CPUs, min) (defaults 32768 x 2, 131072 here), writes
  ``net.netfilter.nf_conntrack_max`` when the current value is lower, and raises the
  conntrack module's ``hashsize`` (/sys/module/nf_conntrack/parameters/hashsize: host-wide)
  to a quarter of it. In a child network namespace ``nf_conntrack_max`` is the host's and
  read-only (mode 0444; a write by root fails with EACCES, measured on 6.18), so on a host
  whose maximum is below that figure kube-proxy would exit at start, and the hashsize write
  would change the host. ``maxPerCore: 0`` (with ``min: 0``) makes it skip both. The
  timeouts it writes, ``nf_conntrack_tcp_timeout_established`` (86400 s) and
  ``..._close_wait`` (3600 s), are per network namespace (mode 0644 there): they stay at
  kube-proxy's defaults, as on a real node, and the host's values do not move (tests check).
  The UDP timeouts and ``tcp_be_liberal`` are written only when configured (they are not).
  The nftables proxier itself writes no sysctl (the iptables one sets ``route_localnet``;
  nftables mode has no localhost NodePorts).
* ``oomScoreAdj: 0``: kube-proxy's default -999 would shield it from the OOM killer; on a
  machine shared with other work a lab process is not more precious than theirs.
* Forwarding: a node that sends NodePort/LoadBalancer traffic on to an endpoint on another
  node forwards packets. kube-proxy does not turn ``ip_forward`` on (on real nodes the CNI
  plugin or the container runtime does; in the lab the node agent's pod network does), so
  ``start_kube_proxies(lab, forwarding=True)`` sets it in the node namespaces (idempotent).

What kube-proxy in nftables mode does for a LoadBalancer IP (``status.loadBalancer.ingress``
with ``ipMode: VIP`` or unset), read from ``pkg/proxy/nftables/proxier.go`` and measured in
``tests/cluster/test_kubeproxy.py``:

* The VIP goes into the ``service-ips`` map (VIP . proto . port -> the Service's external
  chain), which the ``services`` chain dispatches from ``nat-prerouting`` (hook prerouting,
  priority dstnat) and ``nat-output``. The DNAT happens before the routing decision, so the
  node needs **no** address, AnyIP ``local`` route or anything else for the VIP: a packet for
  VIP:port arriving with the node's MAC is rewritten to an endpoint and then routed (locally
  delivered, or forwarded — hence ``ip_forward``). ETP=Cluster masquerades it to the node's
  address; ETP=Local keeps the client address and, on a node without a local endpoint, does
  not DNAT it and drops it in the filter table (``no-endpoint-services`` map: VIP . tcp .
  port : drop); traffic from the node itself is short-circuited to all endpoints.
* kube-proxy adds no address and no route, and touches no ARP/NDP setting: a node never
  answers ARP/NDP for a VIP because of kube-proxy (unlike IPVS mode, which binds VIPs to
  ``kube-ipvs0`` and needs ``strictARP``). Only the speaker makes a VIP reachable.
* Where both exist, kube-proxy's DNAT wins over the lab's AnyIP route: a VIP inside the
  lab's range, sent to node1, is answered by the endpoint on node2, not by node1's own
  backend (measured).
* Only the Service's ports are handled: other traffic to the VIP (ICMP echo, other ports)
  is not DNATed; the node routes it like any foreign address (out of its default route, as
  it forwards) and does not answer it (measured: no ping reply).

So of the lab's shortcuts in ``lab.topology`` (AnyIP ``local`` routes for the VIP ranges on
``lo`` plus ``arp_ignore=1``/``arp_announce=2`` on every node), none is needed for Service
ports once kube-proxy runs: the routes are what make the node *accept* VIP traffic without
kube-proxy, and ``arp_ignore`` exists only because those routes would otherwise make every
node answer ARP for every VIP. What they still do, that a real cluster does not: answer
pings and closed ports on VIPs locally, and deliver VIP traffic to a process listening on the
node itself (the lab's per-node ``lab.backend`` on :80) without any Service rules.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import netns
from lab.controlplane import binaries
from lab.netns import LabError
from lab.topology import Lab, LabNode, Proc

KUBE_PROXY_USER = "system:kube-proxy"  # bound to ClusterRole system:node-proxier by default
PROXY_MODE = "nftables"
TABLE = "kube-proxy"  # kube-proxy's nftables table name, in both families
FAMILIES = ("ip", "ip6")
# The node agent's pod network (lab.nodeagent.labkit.CLUSTER_CIDRS): 198.18.K.0/24 and
# 2001:db8:f0:K::/64 per node.
CLUSTER_CIDRS = ("198.18.0.0/16", "2001:db8:f0::/48")
HEALTHZ_PORT = 10256  # kube-proxy's well-known healthz port (ports.ProxyHealthzPort)
METRICS_PORT = 10249  # kube-proxy's well-known metrics port (ports.ProxyStatusPort)
# Every start waits at most this long for /healthz 200: the first sync lists every Service
# and EndpointSlice of the cluster through the relay; a few seconds on a busy 2-core VM.
START_TIMEOUT_S = 60.0
NFT_TIMEOUT_S = 10.0  # an `nft` call that takes longer is wedged


def nft_binary() -> str:
    """The nft CLI (only the tests' eyes: kube-proxy itself talks netlink)."""
    found = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)
    if found is None:
        raise LabError("nft not found (Debian package nftables)")
    return found


def render_config(*, node_name: str, kubeconfig: Path, bind_ip: str,
                  node_addresses: Sequence[str], healthz: str, metrics: str,
                  cluster_cidrs: Sequence[str] = CLUSTER_CIDRS,
                  verbosity: int = 2) -> dict[str, Any]:
    """The KubeProxyConfiguration (v1alpha1) of one lab node, as data (see the module
    docstring for why each field)."""
    npa = [str(ipaddress.ip_network(a if "/" in a else
                                    f"{a}/{32 if ':' not in a else 128}", strict=True))
           for a in node_addresses]
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": PROXY_MODE,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name,
        "bindAddress": bind_ip,
        "healthzBindAddress": healthz,
        "metricsBindAddress": metrics,
        "clusterCIDR": ",".join(cluster_cidrs),
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": npa,
        # Host-wide conntrack table size and hash buckets: not ours to change (see docstring).
        "conntrack": {"maxPerCore": 0, "min": 0},
        "oomScoreAdj": 0,
        # v2: each sync is logged with its duration ("SyncProxyRules complete").
        "logging": {"format": "text", "verbosity": verbosity},
    }


@dataclass
class KubeProxy:
    """One kube-proxy process in one lab node namespace."""

    lab: Lab
    node: LabNode
    kubeconfig: Path
    config_path: Path = field(init=False)
    proc: Proc | None = None
    started_at: float = 0.0  # time.monotonic() of the last start
    healthz_after_s: float | None = None  # start -> first /healthz 200
    healthy_after_s: float | None = None  # start -> /healthz 200 and both tables programmed

    def __post_init__(self) -> None:
        self.config_path = self.lab.dir / f"kube-proxy-{self.node.name}.yaml"

    @property
    def name(self) -> str:
        return f"kube-proxy-{self.node.name}"

    @property
    def healthz_address(self) -> tuple[str, int]:
        return self.node.ip4, HEALTHZ_PORT

    def config(self) -> dict[str, Any]:
        n = self.node
        return render_config(
            node_name=n.name, kubeconfig=self.kubeconfig, bind_ip=n.ip4,
            node_addresses=(n.ip4, n.ip6, n.ip4_b),
            healthz=f"{n.ip4}:{HEALTHZ_PORT}", metrics=f"127.0.0.1:{METRICS_PORT}")

    # --- process -------------------------------------------------------------------------------

    def start(self) -> Proc:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.started_at = time.monotonic()
        self.healthz_after_s = self.healthy_after_s = None
        self.proc = self.lab.spawn(self.name, self.node.ns, [
            str(binaries.binary("kube-proxy")), f"--config={self.config_path}"])
        return self.proc

    def running(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None

    def stop(self, wait: float = 10.0) -> int | None:
        """SIGTERM (then SIGKILL) by the recorded PID; the rules stay (kube-proxy's way)."""
        return self.lab.stop_proc(self.name, wait=wait)

    def log_tail(self, lines: int = 30) -> str:
        if self.proc is None or not self.proc.log.exists():
            return ""
        return "\n".join(self.proc.log.read_text(errors="replace").splitlines()[-lines:])

    # --- health --------------------------------------------------------------------------------

    def healthz(self, path: str = "/healthz", timeout: float = 1.0,
                ) -> tuple[int, dict[str, Any]] | None:
        """(status, JSON body) of kube-proxy's health server, asked from inside the node
        namespace; None when nothing answers."""
        host, port = self.healthz_address
        return http_json(self.node.ns, host, port, path, timeout)

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> float:
        """Until /healthz says 200 **and** both kube-proxy tables exist; returns seconds since
        start. /healthz alone is not enough: it answers 200 before the first sync (no update
        queued yet counts as healthy). LabError with the log tail when the process dies or
        the deadline passes."""
        deadline = time.monotonic() + timeout
        want = {(fam, TABLE) for fam in FAMILIES}
        while True:
            if not self.running():
                raise LabError(f"{self.name} exited ({self.proc and self.proc.popen.returncode})"
                               f":\n{self.log_tail()}")
            got = self.healthz()
            if got is not None and got[0] == 200:
                if self.healthz_after_s is None:
                    self.healthz_after_s = time.monotonic() - self.started_at
                if want <= self.tables():
                    self.healthy_after_s = time.monotonic() - self.started_at
                    return self.healthy_after_s
            if time.monotonic() > deadline:
                raise LabError(f"{self.name} not healthy and programmed in {timeout} s "
                               f"(healthz {got}, tables {sorted(self.tables())}):\n"
                               f"{self.log_tail()}")
            time.sleep(0.05)

    # --- nftables, as the tests see it --------------------------------------------------------

    def nft(self, *args: str, check: bool = True) -> str:
        return nft(self.node.ns, *args, check=check)

    def tables(self) -> set[tuple[str, str]]:
        return tables(self.node.ns)

    def map_elements(self, name: str, family: str = "ip",
                     ) -> dict[tuple[str, ...], str]:
        return map_elements(self.node.ns, name, family)

    def cleanup(self) -> None:
        """The lab teardown step (after the processes are stopped, before the namespaces go)."""
        self.delete_tables()

    def delete_tables(self) -> list[str]:
        """Delete kube-proxy's tables in this node namespace by name (teardown, or after a
        stop when the rules must go); returns the families that had one."""
        gone: list[str] = []
        if not os.path.exists(os.path.join(netns.NETNS_DIR, self.node.ns)):
            return gone
        for fam in FAMILIES:
            if (fam, TABLE) in self.tables():
                self.nft("delete", "table", fam, TABLE)
                gone.append(fam)
        return gone


# --- helpers ---------------------------------------------------------------------------------

def nft(ns: str | None, *args: str, check: bool = True) -> str:
    """Run the nft CLI inside ``ns`` (None: this process's namespace, for read-only checks).
    A child forked from a thread that entered ``ns`` is in ``ns`` (namespaces are per task),
    which is cheaper than ``ip netns exec`` (no sysfs remount)."""
    argv = [nft_binary(), *args]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=NFT_TIMEOUT_S)

    proc = run() if ns is None else netns.run_in_netns(ns, run, timeout=NFT_TIMEOUT_S + 5)
    if check and proc.returncode != 0:
        raise LabError(f"nft {' '.join(args)} in {ns or 'this namespace'}: "
                       f"{proc.stderr.strip()}")
    return proc.stdout


def tables(ns: str | None) -> set[tuple[str, str]]:
    """(family, name) of every nftables table in ``ns``."""
    out = json.loads(nft(ns, "-j", "list", "tables") or '{"nftables": []}')
    return {(t["table"]["family"], t["table"]["name"]) for t in out["nftables"]
            if "table" in t}


def _key(value: Any) -> tuple[str, ...]:
    if isinstance(value, dict) and "concat" in value:
        return tuple(str(v) for v in value["concat"])
    return (str(value),)


def _verdict(value: Any) -> str:
    if isinstance(value, dict):
        for verb in ("goto", "jump"):
            if verb in value:
                return f"{verb} {value[verb]['target']}"
        return " ".join(str(k) for k in value)
    return str(value)


def map_elements(ns: str, name: str, family: str = "ip") -> dict[tuple[str, ...], str]:
    """Elements of one of kube-proxy's verdict maps (``service-ips``, ``service-nodeports``,
    ``no-endpoint-services``, ...): key tuple (e.g. ("198.19.0.10", "tcp", "8080")) -> verdict
    ("goto external-...", "drop"). Empty when the map or the table does not exist."""
    proc = nft(ns, "-j", "list", "map", family, TABLE, name, check=False)
    if not proc.strip():
        return {}
    out: dict[tuple[str, ...], str] = {}
    for item in json.loads(proc)["nftables"]:
        for elem in (item.get("map") or {}).get("elem") or []:
            key, verdict = elem
            if isinstance(key, dict) and "elem" in key:  # an element carrying a comment
                key = key["elem"]["val"]
            out[_key(key)] = _verdict(verdict)
    return out


def http_json(ns: str, host: str, port: int, path: str = "/",
              timeout: float = 1.0) -> tuple[int, dict[str, Any]] | None:
    """(status, JSON body or {}) of GET ``path`` made from inside ``ns``; None on any
    connection failure."""
    def get() -> tuple[int, dict[str, Any]] | None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError:
            return None
        finally:
            conn.close()
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            loaded = json.loads(raw)
            if isinstance(loaded, dict):
                body = loaded
        return resp.status, body

    return netns.run_in_netns(ns, get, timeout=timeout + 10)


_CT_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class ConntrackEntry:
    """One /proc/net/nf_conntrack line: the original and the reply tuple (what
    ``conntrack -L`` prints; the conntrack tool is not installed here). Addresses are in
    compressed form."""

    proto: str
    state: str
    orig: dict[str, str]
    reply: dict[str, str]

    @property
    def dnat(self) -> bool:
        """The reply comes from somewhere else than the original destination."""
        return (self.reply.get("src"), self.reply.get("sport")) != (
            self.orig.get("dst"), self.orig.get("dport"))

    @property
    def snat(self) -> bool:
        return self.reply.get("dst") != self.orig.get("src")


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    entries = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 6:
            continue
        proto = words[2]
        state = words[5] if proto == "tcp" else ""
        orig: dict[str, str] = {}
        reply: dict[str, str] = {}
        for k, v in _CT_FIELD.findall(line):
            if k not in ("src", "dst", "sport", "dport"):
                continue
            if k in ("src", "dst"):
                # IPv6 addresses come unabbreviated (2001:0db8:000a:...): compare compressed.
                v = ipaddress.ip_address(v).compressed
            (reply if k in orig else orig)[k] = v
        entries.append(ConntrackEntry(proto, state, orig, reply))
    return entries


def conntrack(ns: str) -> list[ConntrackEntry]:
    """The conntrack table of ``ns`` (per network namespace), read from procfs."""
    def read() -> str:
        # /proc/thread-self: this thread's network namespace (/proc/self/net would be the
        # main thread's).
        with open("/proc/thread-self/net/nf_conntrack") as fh:
            return fh.read()

    return parse_conntrack(netns.run_in_netns(ns, read))


def read_sysctl(key: str, ns: str | None = None) -> str:
    path = "/proc/sys/" + key.replace(".", "/")

    def read() -> str:
        with open(path) as fh:
            return fh.read().strip()

    return read() if ns is None else netns.run_in_netns(ns, read)


def enable_forwarding(ns: str) -> None:
    """IPv4/IPv6 forwarding on in ``ns``: what a CNI plugin does on a real node (kube-proxy
    does not), needed when a node sends Service traffic on to an endpoint elsewhere."""
    netns.sysctls(ns, {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})


def kube_proxy_kubeconfig(lab: Lab, path: Path | None = None) -> Path:
    """A kubeconfig for user ``system:kube-proxy`` (client certificate) reaching the real
    apiserver through the lab's relay."""
    cp = lab.control_plane
    if cp is None or lab.relay is None:
        raise LabError("kube-proxy needs Lab(control_plane=...)")
    out: Path = cp.user_kubeconfig(path or lab.dir / "kube-proxy.kubeconfig", KUBE_PROXY_USER,
                                   (), server=lab.relay.url)
    return out


def start_kube_proxies(lab: Lab, nodes: Iterable[str] | None = None, *,
                       forwarding: bool = True, wait: bool = True,
                       timeout: float = START_TIMEOUT_S) -> dict[str, KubeProxy]:
    """kube-proxy in each (or each named) lab node namespace, by node name. The processes
    are the lab's (stopped at its teardown, or by ``stop_kube_proxies``); a lab cleanup
    deletes their nftables tables. With ``wait``, returns once each is healthy and has
    programmed both families."""
    kubeconfig = kube_proxy_kubeconfig(lab)
    proxies: dict[str, KubeProxy] = {}
    for name in nodes if nodes is not None else [n.name for n in lab.nodes]:
        kp = KubeProxy(lab, lab.node(name), kubeconfig)
        # Registered before the start, so a failed start still has its tables removed.
        lab.cleanups.append(kp.cleanup)
        if forwarding:
            enable_forwarding(kp.node.ns)
        kp.start()
        proxies[name] = kp
    if wait:
        for kp in proxies.values():
            kp.wait_healthy(timeout)
    return proxies


def stop_kube_proxies(proxies: Mapping[str, KubeProxy]) -> None:
    """Stop every kube-proxy (by recorded PID), then delete its tables; idempotent (the lab's
    teardown repeats the table deletion and finds nothing)."""
    for kp in proxies.values():
        kp.stop()
    for kp in proxies.values():
        kp.delete_tables()


def publish_apiserver(lab: Lab) -> str:
    """An EndpointSlice for ``default/kubernetes`` naming the lab's relay, so the in-cluster
    address (the Service's first IP, 198.19.0.1:443: what ``KUBERNETES_SERVICE_HOST`` says in
    a pod) reaches the real apiserver through kube-proxy. On a real cluster the apiserver's
    endpoint reconciler publishes its own address; here it listens on loopback and runs with
    ``--endpoint-reconciler-type=none``. Created through the lab's recording store (deleted
    at teardown); returns the slice's name."""
    from common.kube import resources as R

    if lab.relay is None:
        raise LabError("publish_apiserver needs Lab(control_plane=...)")
    host, port = lab.relay.address
    name = f"kubernetes-{lab.tag}"
    lab.store.create(R.ENDPOINTSLICES, {
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                # not the endpointslice controller's
                                "endpointslice.kubernetes.io/managed-by": "lab.portico.dev"}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "protocol": "TCP", "port": port}],
        "endpoints": [{"addresses": [host], "conditions": {"ready": True}}]})
    return name
