"""The lab: bare-metal "nodes", a router and a client on a Linux bridge, in namespaces.

Layout (every name starts with ``pl-``; namespaces carry a per-lab tag so labs never collide)::

    pl-TAG-sw  (switch)    bridge pl-br0 = segment A  192.0.2.0/24, 2001:db8:a::/64
                           bridge pl-br1 = segment B  198.51.100.0/24
    pl-TAG-nK  (node K)    pl-eth0 on A (.1K / ::1K), pl-eth1 on B (.1K), pl-mgmt to the api ns
    pl-TAG-rt  (router)    pl-eth0 on A (.1 / ::1), forwarding on
    pl-TAG-cl  (client)    pl-eth0 on A (.100 / ::100), pl-eth1 on B (.100)
    pl-TAG-api (api)       bridge pl-mbr 203.0.113.1/24 joining every node's pl-mgmt
                           (203.0.113.1K); the API emulator listens here IN this process and
                           the controller runs here — no lab traffic in the root namespace.
                           With ``Lab(control_plane=cp)`` a TCP relay listens here instead
                           and forwards (TLS untouched) to the real kube-apiserver on
                           loopback; components then get kubeconfig files, not ``--server``.

Nodes stand in for kube-proxy honestly: each one accepts traffic for the whole VIP ranges
through AnyIP ``local`` routes on ``lo`` (IPv4 and IPv6) and does not answer ARP/NDP for them
(``arp_ignore=1``/``arp_announce=2``; for IPv6 the kernel answers NS only for addresses
configured on an interface, which a local route is not) — so only the speaker makes a VIP
reachable. Each node runs ``lab.backend`` (HTTP on :80 saying which node answered).

Teardown kills every recorded process and deletes every recorded namespace (their links go
with them), also after a failure or Ctrl-C (context manager + atexit). On a real control
plane it also deletes every API object the lab created (the server outlives the lab).

Real control plane (``control_plane=``, a ``lab.controlplane.cluster.ControlPlane``): the
store is an admin ``ApiStore``; seeding creates real Namespaces and Nodes (status through the
status subresource) and a node-lease heartbeat (the kubelet's part: without it the node
lifecycle controller turns the Nodes ``Ready=Unknown`` and taints them after its grace
period); the server assigns ClusterIPs; each component gets a kubeconfig — the admin one by
default, or the file given in ``kubeconfigs[component]`` (e.g. a ServiceAccount token).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import netns
from lab.controlplane.store import ApiStore
from lab.netns import LabError
from lab.wait import wait_until

REPO = Path(__file__).resolve().parents[1]
PREFIX = "pl-"
SPEAKER_NAMESPACE = "portico-system"

# Address plan (documentation ranges only).
SEG_A4, SEG_A6, SEG_B4, MGMT4 = "192.0.2", "2001:db8:a", "198.51.100", "203.0.113"
VIP_A4 = "192.0.2.192/27"  # VIP range on segment A (IPv4)
VIP_A6 = "2001:db8:a::1:0/112"  # VIP range on segment A (IPv6)
VIP_B4 = "198.51.100.192/27"  # VIP range on segment B
# Routed (BGP) VIP ranges, used only with ``Lab(routed_vips=True)``: on no segment the client
# or the router is attached to (203.0.113.0/24 is the management net, which only the nodes and
# the api namespace join), so the client reaches them only through the router.
VIP_BGP4 = "203.0.113.224/28"
VIP_BGP6 = "2001:db8:b::/112"
CLIENT_HOST = 100
ROUTER_HOST = 1
# Lab probes use a made-up sender so that the client's own neighbour table is never touched by
# them (a reply to the client's real MAC/IP would refresh its ARP cache and hide failovers).
PROBE_MAC = "02:ee:00:00:00:01"
PROBE_IP4_A, PROBE_IP4_B, PROBE_IP6_A = "192.0.2.250", "198.51.100.250", "2001:db8:a::fa"
# Node leases on a real control plane: the kubelet's defaults (40 s lease, renewed every 10 s)
# keep the node lifecycle controller from marking lab Nodes Unknown (its grace period: 40 s+).
NODE_LEASE_NS = "kube-node-lease"
NODE_LEASE_S = 40
NODE_LEASE_RENEW_S = 10.0


@dataclass(frozen=True)
class LabNode:
    index: int
    name: str  # Kubernetes Node name
    ns: str
    ip4: str  # segment A
    ip6: str
    ip4_b: str  # segment B
    mgmt: str
    mac_a: str
    mac_b: str


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Lab:
    """Build with ``with Lab(nodes=3) as lab:``; everything is torn down on exit."""

    nodes_count: int = 3
    start_controller: bool = True
    # The per-node test backend on :80 (says which node answered); the demo runs the
    # ingress tier on :80 instead.
    start_backends: bool = True
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    speaker_args: tuple[str, ...] = ()
    python: str = field(default_factory=lambda: str(REPO / ".venv/bin/python"))
    # BGP: nodes also accept VIP_BGP4/VIP_BGP6 (AnyIP local routes) and the client routes
    # those ranges via the router (which sends no ICMP redirects, so traffic stays routed).
    routed_vips: bool = False
    # A real control plane (lab.controlplane.cluster.ControlPlane) instead of the emulator.
    control_plane: Any = None
    # Per-component kubeconfig ("controller", "speaker", "ingress"); real control plane only.
    kubeconfigs: dict[str, Path] = field(default_factory=dict)
    # Controller leader election on a Lease in SPEAKER_NAMESPACE (off: one replica, no Lease).
    leader_elect: bool = False
    # Real control plane only: a node agent (lab.nodeagent) in every node namespace registers
    # the Node, renews its Lease and runs the pods bound to it; the Lab then creates no Nodes
    # and runs no lease heartbeat of its own. Extra agent flags in node_agent_args.
    node_agents: bool = False
    node_agent_args: tuple[str, ...] = ()
    # AnyIP `local` routes for the VIP ranges on every node (+ arp_ignore/arp_announce so the
    # nodes do not answer ARP for them): the stand-in for kube-proxy, which a real cluster
    # does not have. Off where the real kube-proxy runs (lab.kubeproxy): it rewrites VIP
    # traffic in prerouting and needs neither (tests/cluster/test_kubeproxy.py).
    vip_routes: bool = True

    def __post_init__(self) -> None:
        t = f"{PREFIX}{self.tag}"
        self.sw, self.api, self.router, self.client = f"{t}-sw", f"{t}-api", f"{t}-rt", f"{t}-cl"
        self.nodes = [
            LabNode(i, f"node{i}", f"{t}-n{i}", f"{SEG_A4}.{10 + i}", f"{SEG_A6}::{10 + i}",
                    f"{SEG_B4}.{10 + i}", f"{MGMT4}.{10 + i}",
                    f"02:aa:00:00:00:{10 + i:02x}", f"02:bb:00:00:00:{10 + i:02x}")
            for i in range(1, self.nodes_count + 1)
        ]
        self.client_mac_a = "02:aa:00:00:01:00"
        self.namespaces: list[str] = []  # created, in order
        self.procs: dict[str, Proc] = {}
        self.dir = Path(tempfile.mkdtemp(prefix=f"{t}-"))
        self.emulator: Any = None
        self.relay: Any = None  # lab.controlplane.relay.Relay (real control plane)
        self.admin_kubeconfig: Path | None = None
        self._store: Any = None
        self._heartbeat_stop = threading.Event()
        self._torn_down = False
        # extra teardown steps (e.g. FRR daemons), run after the processes, before namespaces
        self.cleanups: list[Callable[[], None]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        atexit.register(self.teardown)
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)

    def node_by_mac(self, mac: str) -> str | None:
        mac = mac.lower()
        return next((n.name for n in self.nodes if mac in (n.mac_a, n.mac_b)), None)

    def _ns(self, name: str) -> None:
        netns.add_netns(name)
        self.namespaces.append(name)

    def build(self) -> None:
        (self.dir / "build.log").write_text(f"lab {self.tag}\n")
        for ns in (self.sw, self.api, self.router, self.client, *(n.ns for n in self.nodes)):
            self._ns(ns)
        netns.sysctls(self.sw, {"net.ipv6.conf.all.disable_ipv6": "1",
                                "net.ipv6.conf.default.disable_ipv6": "1"})
        netns.add_bridge(self.sw, "pl-br0")
        netns.add_bridge(self.sw, "pl-br1")
        netns.add_bridge(self.api, "pl-mbr")
        netns.ip("addr", "add", f"{MGMT4}.1/24", "dev", "pl-mbr", ns=self.api)

        for n in self.nodes:
            self._wire_node(n)
        self._wire_host(self.router, "rt", ROUTER_HOST, "02:aa:00:00:02:00", segment_b=False)
        self._wire_host(self.client, "cl", CLIENT_HOST, self.client_mac_a, segment_b=True)
        netns.sysctls(self.router, {"net.ipv4.ip_forward": "1",
                                    "net.ipv6.conf.all.forwarding": "1"})
        if self.routed_vips:
            self._route_vips()
        if self.control_plane is not None:
            self._start_relay()
        else:
            self._start_emulator()
        self._seed_cluster()
        if self.start_backends:
            for n in self.nodes:
                self.start_backend(n.name)
        if self.start_controller:
            self.start_controller_proc()

    def _wire_node(self, n: LabNode) -> None:
        common = {
            # Nodes accept VIP traffic (local routes) without answering ARP for it: only the
            # speaker may make a VIP reachable.
            **({"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}
               if self.vip_routes else {}),
            # Keep IPv6 addresses across link flaps (the failover bench cuts links).
            "net.ipv6.conf.all.keep_addr_on_down": "1",
            "net.ipv6.conf.default.keep_addr_on_down": "1",
            "net.ipv6.conf.all.accept_dad": "0",
            "net.ipv6.conf.default.accept_dad": "0",
        }
        netns.sysctls(n.ns, common)
        netns.add_veth(self.sw, f"pl-a{n.index}", n.ns, "pl-eth0", n.mac_a)
        netns.add_veth(self.sw, f"pl-b{n.index}", n.ns, "pl-eth1", n.mac_b)
        netns.add_veth(self.api, f"pl-m{n.index}", n.ns, "pl-mgmt")
        netns.enslave(self.sw, f"pl-a{n.index}", "pl-br0")
        netns.enslave(self.sw, f"pl-b{n.index}", "pl-br1")
        netns.enslave(self.api, f"pl-m{n.index}", "pl-mbr")
        netns.ip_batch(n.ns, [
            f"addr add {n.ip4}/24 dev pl-eth0",
            f"addr add {n.ip6}/64 dev pl-eth0 nodad",
            f"addr add {n.ip4_b}/24 dev pl-eth1",
            f"addr add {n.mgmt}/24 dev pl-mgmt",
            "link set pl-eth0 up", "link set pl-eth1 up", "link set pl-mgmt up",
            *([f"route add local {r} dev lo table local" for r in (VIP_A4, VIP_B4, VIP_A6)]
              if self.vip_routes else []),
            f"route add default via {SEG_A4}.{ROUTER_HOST}",
            # Real nodes have a default route per family: without the IPv6 one, a node's own
            # connection to an IPv6 ClusterIP fails before kube-proxy's nat-output DNAT.
            f"route add default via {SEG_A6}::{ROUTER_HOST:x}",
        ])

    def _route_vips(self) -> None:
        # Client and nodes share segment A: a router forwarding back out of the interface a
        # packet came in on would send ICMP redirects, and a client obeying them would talk
        # to the node directly (on-link) — not what a routed VIP means. Turn both sides off.
        netns.sysctls(self.router, {"net.ipv4.conf.all.send_redirects": "0",
                                    "net.ipv4.conf.pl-eth0.send_redirects": "0"})
        netns.sysctls(self.client, {"net.ipv4.conf.all.accept_redirects": "0",
                                    "net.ipv4.conf.pl-eth0.accept_redirects": "0",
                                    "net.ipv6.conf.all.accept_redirects": "0",
                                    "net.ipv6.conf.pl-eth0.accept_redirects": "0"})
        netns.ip_batch(self.client, [
            f"route add {VIP_BGP4} via {SEG_A4}.{ROUTER_HOST}",
            f"route add {VIP_BGP6} via {SEG_A6}::{ROUTER_HOST:x}",
        ])
        for n in self.nodes if self.vip_routes else ():
            netns.ip_batch(n.ns, [f"route add local {VIP_BGP4} dev lo table local",
                                  f"route add local {VIP_BGP6} dev lo table local"])

    def start_frr(self, asn: int, neighbors: Any, **kwargs: Any) -> Any:
        """FRR (zebra + bgpd) in the router namespace, peering with ``neighbors``
        (``lab.frr.RouterNeighbor``); stopped at teardown. Returns the ``lab.frr.FrrRouter``."""
        from lab.frr import FrrRouter

        router = FrrRouter(self.router, asn, f"{SEG_A4}.{ROUTER_HOST}", tuple(neighbors),
                           workdir=self.dir / "frr", **kwargs)
        self.cleanups.append(router.stop)
        router.start()
        return router

    def _wire_host(self, ns: str, short: str, host: int, mac: str, segment_b: bool) -> None:
        netns.sysctls(ns, {"net.ipv6.conf.all.accept_dad": "0",
                           "net.ipv6.conf.default.accept_dad": "0"})
        netns.add_veth(self.sw, f"pl-a{short}", ns, "pl-eth0", mac)
        netns.enslave(self.sw, f"pl-a{short}", "pl-br0")
        cmds = [f"addr add {SEG_A4}.{host}/24 dev pl-eth0",
                f"addr add {SEG_A6}::{host:x}/64 dev pl-eth0 nodad", "link set pl-eth0 up"]
        if segment_b:
            netns.add_veth(self.sw, f"pl-b{short}", ns, "pl-eth1")
            netns.enslave(self.sw, f"pl-b{short}", "pl-br1")
            cmds += [f"addr add {SEG_B4}.{host}/24 dev pl-eth1", "link set pl-eth1 up"]
        netns.ip_batch(ns, cmds)

    def _start_emulator(self) -> None:
        from lab.emulator import Emulator

        emu = Emulator(host=f"{MGMT4}.1", port=0)
        # The listening socket is created inside the api namespace and stays there; the
        # serving threads need no namespace of their own.
        self.emulator = netns.run_in_netns(self.api, emu.start)
        self._store = self.emulator.store

    def _start_relay(self) -> None:
        from common.kube.client import KubeClient
        from lab.controlplane import pki
        from lab.controlplane.relay import Relay

        cp = self.control_plane
        # Lab namespaces cannot reach the host's loopback: the relay's listening socket lives
        # in the api namespace (reachable from every node's pl-mgmt), its upstream
        # connections are made from this process's namespace. The serving certificate names
        # MGMT4.1, so clients verify the real server through it.
        self.relay = Relay(upstream=(cp.host, cp.port), listen=(f"{MGMT4}.1", 0),
                           listen_ns=self.api).start()
        self.admin_kubeconfig = pki.kubeconfig(self.dir / "admin.kubeconfig", self.relay.url,
                                               cp.ca.pem, user="admin", client=cp.admin_client)
        # Test setup talks to the server directly (this process is not in a lab namespace).
        self._store = _RecordingStore(
            KubeClient.from_environment(kubeconfig=str(cp.kubeconfig)))

    @property
    def store(self) -> Any:
        return self._store

    @property
    def url(self) -> str:
        """The API URL as lab namespaces reach it (emulator, or the relay to the real one)."""
        if self.relay is not None:
            return str(self.relay.url)
        return str(self.emulator.url)

    def api_args(self, component: str) -> list[str]:
        """How ``component`` (controller, speaker, ingress) reaches the API: ``--server`` for
        the emulator; a kubeconfig on a real control plane (its own, else the admin one)."""
        if self.control_plane is None:
            return ["--server", self.url]
        return ["--kubeconfig", str(self.kubeconfigs.get(component) or self.admin_kubeconfig)]

    def token_kubeconfig(self, namespace: str, service_account: str,
                         path: Path | None = None) -> tuple[Path, str]:
        """A kubeconfig reaching the real server through the relay with a TokenRequest
        token of ``namespace/service_account``; returns (path, token)."""
        cp = self.control_plane
        if cp is None or self.relay is None:
            raise LabError("token kubeconfigs need Lab(control_plane=...)")
        path = path or self.dir / f"{namespace}-{service_account}.kubeconfig"
        result: tuple[Path, str] = cp.token_kubeconfig(path, namespace, service_account,
                                                       server=self.relay.url)
        return result

    def teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        for name in list(self.procs):
            # A node agent stops its containers first (SIGTERM, 2 s, SIGKILL): give it time.
            self.stop_proc(name, signal.SIGTERM, wait=10.0 if name.startswith("agent-") else 3.0)
        for fn in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                fn()
        self.cleanups.clear()
        self._heartbeat_stop.set()
        if isinstance(self._store, _RecordingStore):
            with contextlib.suppress(Exception):
                self._store.delete_created()
        if self.relay is not None:
            with contextlib.suppress(Exception):
                self.relay.stop()
        if self.emulator is not None:
            with contextlib.suppress(Exception):
                self.emulator.stop()
        for ns in reversed(self.namespaces):
            netns.del_netns(ns)
        self.namespaces.clear()
        # Pod namespaces a node agent made under this lab's prefix (``pl-TAG-nK-p...``) and
        # could not remove itself (killed while stopping): their /run/netns entries outlive
        # it on the host. Only names with this lab's own tag are touched.
        own = f"{PREFIX}{self.tag}-"
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir("/run/netns")):
                if name.startswith(own):
                    netns.del_netns(name)
        with contextlib.suppress(Exception):
            atexit.unregister(self.teardown)

    # --- processes ---------------------------------------------------------------------------

    def spawn(self, name: str, ns: str, argv: list[str],
              env: dict[str, str] | None = None) -> Proc:
        if name in self.procs and self.procs[name].popen.poll() is None:
            raise LabError(f"process {name} already running")
        log = self.dir / f"{name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - the child owns it; closed after it exits
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        # `ip netns exec` execs the command: the Popen PID is the program's own PID.
        popen = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=REPO, stdout=fh,
                                 stderr=subprocess.STDOUT, env=full_env,
                                 start_new_session=True)
        fh.close()
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def stop_proc(self, name: str, sig: int = signal.SIGTERM, wait: float = 5.0) -> int | None:
        proc = self.procs.get(name)
        if proc is None:
            return None
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(sig)
            try:
                proc.popen.wait(wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait(5)
        return proc.popen.returncode

    def start_backend(self, node: str) -> Proc:
        n = self.node(node)
        return self.spawn(f"backend-{node}", n.ns,
                          [self.python, "-m", "lab.backend", "--node", node, "--port", "80"])

    def speaker_argv(self, node: str) -> list[str]:
        n = self.node(node)
        return [self.python, "-m", "portico", "speaker", *self.api_args("speaker"),
                "--node-name", node, "--namespace", SPEAKER_NAMESPACE,
                "--interfaces", "pl-eth0,pl-eth1", "--liveness-interface", "pl-eth0",
                "--metrics-addr", f"{n.mgmt}:7473", "--log-level", "info",
                "--state-dir", str(self.dir / f"state-{node}"), *self.speaker_args]

    def start_speaker(self, node: str) -> Proc:
        return self.spawn(f"speaker-{node}", self.node(node).ns, self.speaker_argv(node),
                          env={"NODE_NAME": node})

    def start_speakers(self) -> None:
        for n in self.nodes:
            self.start_speaker(n.name)

    def speaker_metric(self, node: str, name: str) -> float | None:
        """One unlabelled metric of a speaker, read over the management network."""
        import urllib.request

        url = f"http://{self.node(node).mgmt}:7473/metrics"

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return str(resp.read().decode())

        try:
            text = netns.run_in_netns(self.api, fetch)
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_speakers_live(self, timeout: float = 30.0) -> None:
        """Until every running speaker counts every node as live (election settled)."""
        want = float(len(self.nodes))
        wait_until(lambda: all(
            self.speaker_metric(n.name, "portico_speaker_live_nodes") == want
            for n in self.nodes), timeout, interval=0.2, what="all speakers live")

    def speaker_running(self, node: str) -> bool:
        p = self.procs.get(f"speaker-{node}")
        return p is not None and p.popen.poll() is None

    def start_controller_proc(self) -> Proc:
        election = (["--leader-elect", "--lease-namespace", SPEAKER_NAMESPACE,
                     "--identity", f"controller-{self.tag}"] if self.leader_elect
                    else ["--no-leader-elect"])
        return self.spawn("controller", self.api, [
            self.python, "-m", "portico", "controller", *self.api_args("controller"),
            *election, "--metrics-addr", f"{MGMT4}.1:7472", "--log-level", "info"])

    def cut_link(self, node: str, up: bool = False, mgmt: bool = False) -> None:
        """Unplug (or re-plug) the node's segment-A cable at the switch: the node sees no
        carrier, like a dead NIC or a pulled cable. ``mgmt``: its management cable too, the
        path of its node agent to the API server — a node that died, as the node lifecycle
        controller sees it (on a real node both share the NIC)."""
        netns.link_set(self.sw, f"pl-a{self.node(node).index}", up)
        if mgmt:
            netns.link_set(self.api, f"pl-m{self.node(node).index}", up)

    # --- cluster objects ---------------------------------------------------------------------

    def _seed_cluster(self) -> None:
        from common.kube import resources as R

        if self.control_plane is not None:
            self._seed_real_cluster()
            return
        self.store.create(R.NAMESPACES, {"metadata": {"name": "default"}})
        self.store.create(R.NAMESPACES, {"metadata": {"name": SPEAKER_NAMESPACE}})
        for n in self.nodes:
            self.store.create(R.NODES, self._node_object(n))

    def _node_object(self, n: LabNode) -> dict[str, Any]:
        return {
            "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name}},
            "status": {
                "addresses": [{"type": "InternalIP", "address": n.ip4},
                              {"type": "InternalIP", "address": n.ip6},
                              {"type": "Hostname", "address": n.name}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    def _seed_real_cluster(self) -> None:
        """Namespaces and Nodes on the real server; ``default`` (and a namespace the test
        made, e.g. for a chart's ServiceAccounts) already exist there and are left alone."""
        from common.kube import resources as R

        store: _RecordingStore = self._store
        store.ensure(R.NAMESPACES, {"metadata": {"name": SPEAKER_NAMESPACE}})
        if self.node_agents:
            self._start_node_agents()
            return
        for n in self.nodes:
            node = self._node_object(n)
            node["status"]["conditions"][0].update(
                lastHeartbeatTime=_rfc3339(), reason="KubeletReady",
                message="lab node agent stand-in")
            store.ensure(R.NODES, node)
            store.ensure(R.LEASES, {"metadata": {"name": n.name, "namespace": NODE_LEASE_NS},
                                    "spec": self._node_lease_spec(n.name)})
        threading.Thread(target=self._heartbeat, name=f"lab-{self.tag}-node-leases",
                         daemon=True).start()

    def _start_node_agents(self) -> None:
        """Pod routes between the nodes, then one agent per node; returns once every Node is
        Ready by its agent. The agents' Nodes are deleted at teardown (they outlive a
        kubelet, not a lab)."""
        from common.kube import resources as R
        from lab.nodeagent import labkit

        labkit.route_pods(self)
        for n in self.nodes:
            labkit.start_agent(self, n.name, *self.node_agent_args)

        def ready(node: str) -> bool:
            obj = self.store.get(R.NODES, node) or {}
            return any(c.get("type") == "Ready" and c.get("status") == "True"
                       and c.get("reason") == "KubeletReady"
                       for c in (obj.get("status") or {}).get("conditions") or [])

        self.cleanups.append(self._delete_agent_nodes)
        wait_until(lambda: all(ready(n.name) for n in self.nodes), 60, interval=0.1,
                   what="every node Ready by its agent")

    def _delete_agent_nodes(self) -> None:
        from common.kube import resources as R

        for n in self.nodes:
            with contextlib.suppress(Exception):
                self.store.delete(R.NODES, n.name)

    @staticmethod
    def _node_lease_spec(node: str) -> dict[str, Any]:
        return {"holderIdentity": node, "leaseDurationSeconds": NODE_LEASE_S,
                "renewTime": _rfc3339(micro=True)}

    def _heartbeat(self) -> None:
        """Renew every node's Lease in kube-node-lease, as a kubelet does: the node
        lifecycle controller keeps the Nodes Ready. Ends with the lab."""
        from common.kube import resources as R

        while not self._heartbeat_stop.wait(NODE_LEASE_RENEW_S):
            for n in self.nodes:
                with contextlib.suppress(Exception):
                    self.store.patch(R.LEASES, n.name, {"spec": self._node_lease_spec(n.name)},
                                     NODE_LEASE_NS)

    def set_node_labels(self, node: str, labels: dict[str, str | None]) -> None:
        from common.kube import resources as R

        self.store.patch(R.NODES, node, {"metadata": {"labels": labels}})

    def add_pool(self, name: str, addresses: list[str], labels: dict[str, str] | None = None,
                 auto_assign: bool = True) -> None:
        from common.kube import resources as R

        self.store.create(R.IPADDRESSPOOLS, {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"addresses": addresses, "autoAssign": auto_assign}})

    def add_l2(self, name: str, **spec: Any) -> None:
        from common.kube import resources as R

        self.store.create(R.L2ADVERTISEMENTS, {"metadata": {"name": name}, "spec": spec})

    def add_service(self, name: str, *, ips: list[str] | None = None, local: bool = False,
                    families: list[str] | None = None, annotations: dict[str, str] | None = None,
                    set_status: bool | None = None, namespace: str = "default",
                    port: int = 80) -> None:
        """A LoadBalancer Service on ``port`` (backends listen on 80). ``ips`` requests
        addresses (annotation); with
        ``set_status`` (default: when no controller runs) the status is written directly."""
        from common.kube import resources as R

        ann = dict(annotations or {})
        if ips:
            ann["lb.portico.dev/loadBalancerIPs"] = ",".join(ips)
        fams = families or sorted(
            {"IPv6" if ":" in i else "IPv4" for i in (ips or [])}) or ["IPv4"]
        spec: dict[str, Any] = {
            "type": "LoadBalancer", "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": 80}],
            "externalTrafficPolicy": "Local" if local else "Cluster",
            "ipFamilies": fams,
            "ipFamilyPolicy": "PreferDualStack" if len(fams) > 1 else "SingleStack",
        }
        if self.control_plane is None:
            # The emulator assigns no ClusterIP; a real server assigns one from its range.
            spec["clusterIP"] = "10.96.0.10"
        self.store.create(R.SERVICES, {
            "metadata": {"name": name, "namespace": namespace, "annotations": ann},
            "spec": spec})
        if set_status if set_status is not None else not self.start_controller:
            self.set_service_status(name, ips or [], namespace)

    def set_service_status(self, name: str, ips: list[str], namespace: str = "default") -> None:
        from common.kube import resources as R

        self.store.patch(R.SERVICES, name, {"status": {"loadBalancer": {
            "ingress": [{"ip": i, "ipMode": "VIP"} for i in ips]}}}, namespace)

    def set_endpoints(self, service: str, ready_nodes: dict[str, bool],
                      namespace: str = "default",
                      ports: tuple[tuple[str, int], ...] = (("http", 80),)) -> None:
        """One EndpointSlice for ``service`` with one endpoint per node (ready or not), the
        endpoint-controller stand-in of the lab; ``ports``: (name, port) of every endpoint."""
        from common.kube import resources as R

        body: dict[str, Any] = {
            "metadata": {"name": f"{service}-lab", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service,
                                    # not the endpointslice controller's (it owns its own)
                                    "endpointslice.kubernetes.io/managed-by": "lab.portico.dev"}},
            "addressType": "IPv4",
            "ports": [{"name": n, "protocol": "TCP", "port": p} for n, p in ports],
            "endpoints": [
                {"addresses": [self.node(node).ip4], "nodeName": node,
                 "conditions": {"ready": ready, "serving": ready, "terminating": False}}
                for node, ready in sorted(ready_nodes.items())],
        }
        if self.store.get(R.ENDPOINTSLICES, body["metadata"]["name"], namespace) is None:
            self.store.create(R.ENDPOINTSLICES, body)
        else:
            self.store.update(R.ENDPOINTSLICES, body)

    def service_ips(self, name: str, namespace: str = "default") -> list[str]:
        from common.kube import resources as R

        obj = self.store.get(R.SERVICES, name, namespace) or {}
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [i["ip"] for i in ingress if isinstance(i, dict) and "ip" in i]

    def service_condition(self, name: str, ctype: str,
                          namespace: str = "default") -> dict[str, Any] | None:
        from common.kube import resources as R

        obj = self.store.get(R.SERVICES, name, namespace) or {}
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == ctype:
                return dict(c)
        return None

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        from common.kube import resources as R

        evs = self.store.list(R.EVENTS)
        return [e for e in evs if reason is None or e.get("reason") == reason]

    # --- probes from the client --------------------------------------------------------------

    def who_has(self, vip: str, segment: str = "a", timeout: float = 0.5,
                tries: int = 2) -> set[str]:
        """MACs answering ARP (IPv4) or NDP (IPv6) for ``vip``, asked from the client."""
        from lab import probe

        iface = "pl-eth0" if segment == "a" else "pl-eth1"
        addr = ipaddress.ip_address(vip)
        src = PROBE_IP6_A if addr.version == 6 else (
            PROBE_IP4_A if segment == "a" else PROBE_IP4_B)
        return netns.run_in_netns(self.client, lambda: probe.resolve(
            iface, PROBE_MAC, src, vip, timeout=timeout, tries=tries))

    def http_get(self, vip: str, timeout: float = 2.0) -> str | None:
        from lab import probe

        return netns.run_in_netns(self.client, lambda: probe.http_get(vip, 80, timeout))

    def ping(self, vip: str, count: int = 1, timeout: float = 1.0) -> bool:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.client, "ping", "-n", "-c", str(count), "-W",
             str(max(1, int(timeout))), vip], capture_output=True, timeout=count * timeout + 5)
        return proc.returncode == 0

    def flush_client_neighbours(self) -> None:
        netns.ip("neigh", "flush", "all", ns=self.client, check=False)
        netns.ip("-6", "neigh", "flush", "all", ns=self.client, check=False)


class _RecordingStore(ApiStore):
    """Admin ``ApiStore`` that remembers what it created, so that teardown removes it: a real
    server outlives the lab (one per test session) and the next lab must find it clean."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.created: list[tuple[Any, str, str | None]] = []

    def create(self, res: Any, obj: dict[str, Any], namespace: str | None = None,
               ) -> dict[str, Any]:
        out = super().create(res, obj, namespace)
        meta = out.get("metadata") or {}
        self.created.append((res, str(meta.get("name")), meta.get("namespace")))
        return out

    def ensure(self, res: Any, obj: dict[str, Any]) -> None:
        """Create, or (it exists already: not ours to delete) bring labels and status to
        ``obj``'s."""
        from common.errors import Conflict

        try:
            self.create(res, obj)
        except Conflict:
            meta = obj["metadata"]
            patch: dict[str, Any] = {"metadata": {"labels": meta.get("labels") or {}}}
            if "spec" in obj:
                patch["spec"] = obj["spec"]
            if "status" in obj:
                patch["status"] = obj["status"]
            self.patch(res, meta["name"], patch, meta.get("namespace"))

    def delete_created(self) -> None:
        for res, name, namespace in reversed(self.created):
            with contextlib.suppress(Exception):
                self.delete(res, name, namespace)
        self.created.clear()


def _rfc3339(micro: bool = False) -> str:
    from datetime import UTC, datetime

    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.now(UTC).strftime(fmt)


@contextlib.contextmanager
def lab(**kwargs: Any) -> Iterator[Lab]:
    with Lab(**kwargs) as lb:
        yield lb


if __name__ == "__main__":  # python -m lab.topology: build, print, wait for Ctrl-C
    with Lab() as demo:
        print(f"lab {demo.tag} up; logs in {demo.dir}; api {demo.url}", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
