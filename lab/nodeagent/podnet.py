"""The pod network of one node (I/O): a bridge in the node's namespace, one network namespace
per pod joined to it by a veth pair, masquerade for traffic leaving the cluster, and — for the
lab to call — routes between the nodes' pod CIDRs.

Per node (inside the agent's own network namespace, which is the node's)::

    pl-pbr0   bridge, the first host of every pod CIDR (IPv4 198.18.K.1/24, IPv6 …::1/64)
    pv<uid>   one veth per pod on the bridge; its peer is ``eth0`` in the pod's namespace,
              with the pod's addresses and default routes via the bridge
    nftables  table inet portico_lab_pods: pod traffic to anything but the cluster's pod
              CIDRs leaving by another interface is masqueraded (the bridge CNI's ipMasq),
              so the API relay and the router reach pods' connections without routes back

Pod-to-pod across nodes is routed, not tunnelled: each node routes every other node's pod
CIDRs via that node's address on the shared segment (``route_pod_cidrs``) — what a flat
host-gw network does. The agent cannot do it itself: a node may read its own Node object only
(the Node authorizer), so the lab, which knows every node, installs those routes
(``lab.nodeagent.labkit.route_pods``).

Pod namespaces are created from the agent's process: ``ip netns exec`` gave the agent a mount
namespace of its own (a slave of the host's), so ``/run/netns/<pod>`` is visible to the agent
and its children but not on the host; the agent deletes each one with its pod, records them in
its ledger, and deletes leftovers on start.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from lab.nodeagent import node as nodes
from lab.nodeagent.errors import SetupError

BRIDGE = "pl-pbr0"
NFT_TABLE = "portico_lab_pods"
IP_TIMEOUT_S = 10.0  # an `ip`/`nft` command that takes longer is wedged


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SetupError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise SetupError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def ip_batch(commands: Sequence[str], ns: str | None = None) -> None:
    """Several `ip` commands in one process (one fork instead of dozens)."""
    if commands:
        _run(["ip", *(["-n", ns] if ns else []), "-batch", "-"], "\n".join(commands) + "\n")


def _write_sysctl(key: str, value: str) -> None:
    # /proc/sys/net is the namespace of the process that opens it: ours, the node's.
    try:
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    except OSError as exc:
        raise SetupError(f"sysctl {key}={value}: {exc}") from exc


def _family(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


@dataclass
class PodNetwork:
    pod_cidrs: tuple[str, ...]
    cluster_cidrs: tuple[str, ...] = ()  # not masqueraded (other nodes' pods); + our own

    def setup(self) -> None:
        """Idempotent: an agent restarted on the same node finds its bridge in place."""
        _write_sysctl("net.ipv4.ip_forward", "1")
        if any(_family(c) == 6 for c in self.pod_cidrs):
            _write_sysctl("net.ipv6.conf.all.forwarding", "1")
        if _run(["ip", "link", "show", BRIDGE], check=False) == "":
            ip_batch([f"link add {BRIDGE} type bridge stp_state 0"])
        have = _run(["ip", "addr", "show", "dev", BRIDGE])
        cmds = []
        for cidr in self.pod_cidrs:
            gw = nodes.gateway(cidr)
            if f" {gw}/" not in have:
                nodad = " nodad" if _family(cidr) == 6 else ""
                cmds.append(f"addr add {gw}/{nodes.prefix_len(cidr)} dev {BRIDGE}{nodad}")
        ip_batch([*cmds, f"link set {BRIDGE} up"])
        self._masquerade()

    def _masquerade(self) -> None:
        rules = []
        for fam, kw in ((4, "ip"), (6, "ip6")):
            mine = [c for c in self.pod_cidrs if _family(c) == fam]
            if not mine:
                continue
            keep = sorted({str(ipaddress.ip_network(c, strict=False))
                           for c in (*self.cluster_cidrs, *mine) if _family(c) == fam})
            rules.append(f"    {kw} saddr {{ {', '.join(mine)} }} {kw} daddr != "
                         f"{{ {', '.join(keep)} }} oifname != \"{BRIDGE}\" masquerade")
        # add + delete first: replaces a table an earlier run left, fails on nothing.
        script = (f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
                  f"table inet {NFT_TABLE} {{\n  chain postrouting {{\n"
                  "    type nat hook postrouting priority srcnat; policy accept;\n"
                  + "\n".join(rules) + "\n  }\n}\n")
        _run(["nft", "-f", "-"], script)

    def teardown(self) -> None:
        _run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)
        _run(["ip", "link", "del", BRIDGE], check=False)

    def add_pod(self, netns: str, veth: str, ips: Sequence[str]) -> None:
        """The pod's namespace, its veth on the bridge, its addresses and default routes."""
        _run(["ip", "netns", "add", netns])
        try:
            ip_batch([f"link add {veth} type veth peer name eth0 netns {netns}",
                      f"link set {veth} master {BRIDGE}", f"link set {veth} up"])
            cmds = ["link set lo up"]
            for addr in ips:
                cidr = next(c for c in self.pod_cidrs
                            if ipaddress.ip_address(addr) in ipaddress.ip_network(c))
                # nodad: the address is unique by construction; DAD would delay it by ~1 s.
                nodad = " nodad" if _family(cidr) == 6 else ""
                cmds.append(f"addr add {addr}/{nodes.prefix_len(cidr)} dev eth0{nodad}")
            cmds.append("link set eth0 up")
            for addr in ips:
                cidr = next(c for c in self.pod_cidrs
                            if ipaddress.ip_address(addr) in ipaddress.ip_network(c))
                # `ip -batch` takes no -6 per line: the IPv6 default is spelled ::/0.
                default = "::/0" if _family(cidr) == 6 else "default"
                cmds.append(f"route add {default} via {nodes.gateway(cidr)} dev eth0")
            ip_batch(cmds, ns=netns)
        except SetupError:
            self.remove_pod(netns)
            raise

    def remove_pod(self, netns: str) -> None:
        """Deleting the namespace deletes its veth pair too."""
        _run(["ip", "netns", "del", netns], check=False)


@dataclass(frozen=True)
class NodeRoutes:
    """What ``route_pod_cidrs`` needs to know of one node."""

    ns: str  # the node's network namespace
    ip4: str  # its address on the segment the nodes share
    ip6: str | None
    pod_cidrs: tuple[str, ...]


def route_pod_cidrs(nodes_: Sequence[NodeRoutes]) -> None:
    """For the lab: in every node's namespace, a route to every other node's pod CIDRs via
    that node's address (``ip route replace``: safe to call again, e.g. after a link flap
    deleted routes)."""
    for a in nodes_:
        cmds = []
        for b in nodes_:
            if b.ns == a.ns:
                continue
            for cidr in b.pod_cidrs:
                via = b.ip4 if _family(cidr) == 4 else b.ip6
                if via:
                    cmds.append(f"route replace {cidr} via {via}")
        ip_batch(cmds, ns=a.ns)
