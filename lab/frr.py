"""A real FRR router (zebra + bgpd, optionally bfdd) inside a lab network namespace.

Facts this module is built around (LAB-NOTES.md, "BGP"):
- There is no systemd in a namespace, so every daemon gets its own pathspace (``-N``): FRR then
  keeps its vty sockets and the zebra API socket under ``/var/run/frr/<pathspace>/``, which we
  create owned by user ``frr`` (the daemons drop to it).
- zebra starts first and we wait for its API socket: a bgpd that connects early installs
  routes into the kernel only ~10 s later. bfdd (if used) starts before bgpd.
- FRR 8.4 eBGP refuses to send/accept routes without policy unless
  ``no bgp ebgp-requires-policy``.

Also holds a few namespace helpers so the BGP lab tests can build a small topology of their
own (``BgpLab``) until/unless the shared lab package is used; every namespace and link is
prefixed (``pb-``) and removed by name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRR_LIB = Path("/usr/lib/frr")
FRR_RUN = Path("/var/run/frr")


def run(*args: str, check: bool = True, timeout: float = 30.0) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip(ns: str | None, *args: str, check: bool = True) -> str:
    return run("ip", *(["-n", ns] if ns else []), *args, check=check)


def netns_add(ns: str) -> None:
    run("ip", "netns", "add", ns)
    ip(ns, "link", "set", "lo", "up")
    nsexec(ns, "sysctl", "-qw", "net.ipv6.conf.all.keep_addr_on_down=1")
    nsexec(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
    nsexec(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")


def netns_del(ns: str) -> None:
    run("ip", "netns", "del", ns, check=False)


def nsexec(ns: str, *args: str, check: bool = True, timeout: float = 30.0) -> str:
    return run("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)


@dataclass
class RouterNeighbor:
    address: str
    asn: int
    password: str | None = None
    hold_time: int = 3  # LAB: the "SIGKILL healed by the hold time" test configures 3 s
    bfd: bool = False  # `neighbor X bfd profile portico` (needs FrrRouter(bfd=True))


@dataclass
class FrrRouter:
    """zebra + bgpd in ``netns``; call start(), then rib()/routes(); stop() always."""

    netns: str
    asn: int
    router_id: str
    neighbors: Sequence[RouterNeighbor] = ()
    workdir: Path = Path("/tmp")
    bfd: bool = False
    # BFD profile "portico" for neighbors with bfd=True: (receive ms, transmit ms, multiplier)
    bfd_timers: tuple[int, int, int] = (300, 300, 3)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pathspace(self) -> str:
        return self.netns

    @property
    def rundir(self) -> Path:
        return FRR_RUN / self.pathspace

    def _bgpd_conf(self) -> str:
        lines = [
            "hostname " + self.netns,
            "log stdout informational",
            f"router bgp {self.asn}",
            f" bgp router-id {self.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp network import-check",
            " no bgp default ipv4-unicast",
            " bgp bestpath as-path multipath-relax",
            " timers bgp 1 3",
        ]
        for n in self.neighbors:
            lines.append(f" neighbor {n.address} remote-as {n.asn}")
            lines.append(f" neighbor {n.address} timers {max(1, n.hold_time // 3)} {n.hold_time}")
            lines.append(f" neighbor {n.address} timers connect 1")
            if n.password:
                lines.append(f" neighbor {n.address} password {n.password}")
            if n.bfd:
                lines.append(f" neighbor {n.address} bfd profile portico")
        for fam in ("ipv4", "ipv6"):
            lines.append(f" address-family {fam} unicast")
            lines.append("  maximum-paths 16")
            lines.append("  maximum-paths ibgp 16")
            for n in self.neighbors:
                if ipaddress.ip_address(n.address).version == (4 if fam == "ipv4" else 6):
                    lines.append(f"  neighbor {n.address} activate")
            lines.append(" exit-address-family")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rundir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.rundir, "frr", "frr")
        rx, tx, mult = self.bfd_timers
        bfdd_conf = ("hostname b\nbfd\n profile portico\n"
                     f"  receive-interval {rx}\n  transmit-interval {tx}\n"
                     f"  detect-multiplier {mult}\n exit\nexit\n")
        confs = {"zebra": "hostname z\n", "bgpd": self._bgpd_conf(), "bfdd": bfdd_conf}
        daemons = ["zebra", *(["bfdd"] if self.bfd else []), "bgpd"]
        for d in daemons:
            # FRR drops to user frr: the config must be readable by it (pytest's tmp dirs are
            # 0700 root), so it lives in the pathspace directory we own for frr.
            conf = self.rundir / f"{d}.conf"
            conf.write_text(confs[d])
            shutil.chown(conf, "frr", "frr")
            log = open(self.workdir / f"{d}.log", "ab")  # noqa: SIM115 - kept by the child
            args = [
                "ip", "netns", "exec", self.netns, str(FRR_LIB / d), "-N", self.pathspace,
                "-f", str(conf), "-i", str(self.rundir / f"{d}.pid"), "--log", "stdout",
            ]
            if d == "bgpd":
                args += ["-e", "16"]
            # `ip netns exec` execs the daemon, so the PID we record is the daemon's own.
            self.procs[d] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            want = self.rundir / ("zserv.api" if d == "zebra" else f"{d}.vty")
            deadline = time.monotonic() + timeout
            while not want.exists():
                if self.procs[d].poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"FRR {d} did not start in {self.netns}: see {self.workdir}")
                time.sleep(0.05)

    def stop(self) -> None:
        for d in ("bgpd", "bfdd", "zebra"):
            p = self.procs.pop(d, None)
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(self.rundir, ignore_errors=True)

    def vtysh(self, *commands: str, check: bool = True) -> str:
        args = ["vtysh", "-N", self.pathspace]
        for c in commands:
            args += ["-c", c]
        return run(*args, check=check)

    def configure(self, *lines: str) -> None:
        self.vtysh("configure terminal", *lines)

    def show_json(self, command: str) -> Any:
        out = self.vtysh(command + " json")
        return json.loads(out) if out.strip() else {}

    def rib(self, family: str = "ipv4") -> dict[str, Any]:
        """BGP table: prefix -> list of paths (FRR JSON)."""
        routes: dict[str, Any] = self.show_json(f"show bgp {family} unicast").get("routes", {})
        return routes

    def route_detail(self, prefix: str) -> dict[str, Any]:
        fam = "ipv6" if ":" in prefix else "ipv4"
        detail: dict[str, Any] = self.show_json(f"show bgp {fam} unicast {prefix}")
        return detail

    def bfd_peers(self) -> dict[str, str]:
        """``show bfd peers``: peer address -> status (up / down / init)."""
        out = self.show_json("show bfd peers")
        return {str(p.get("peer")): str(p.get("status")) for p in out
                if isinstance(p, dict)} if isinstance(out, list) else {}

    def neighbor_states(self) -> dict[str, str]:
        out = self.show_json("show bgp neighbors")
        return {addr: v.get("bgpState", "") for addr, v in out.items() if isinstance(v, dict)}

    def kernel_routes(self, family: int = 4) -> dict[str, list[str]]:
        """Kernel routes installed by zebra for BGP: prefix -> sorted gateways."""
        out = ip(self.netns, "-j", f"-{family}", "route", "show", "proto", "bgp")
        result: dict[str, list[str]] = {}
        for r in json.loads(out or "[]"):
            dst = r["dst"]
            if "/" not in dst:
                dst += "/32" if family == 4 else "/128"
            gws = [h["gateway"] for h in r.get("nexthops", [])] or [r.get("gateway", "")]
            result[dst] = sorted(g for g in gws if g)
        return result

    def kernel_nexthop_histogram(self, family: int = 4) -> dict[int, int]:
        """Kernel BGP routes by number of next hops ({1: n1, 2: n2, ...}).

        Cheap enough to poll during a 10,000-route run: plain text (``ip -j`` plus JSON
        decoding costs ~3x the CPU) scanned as bytes. A multipath route is printed as its
        prefix line followed by one ``\tnexthop`` line per next hop."""
        proc = subprocess.run(["ip", "-n", self.netns, f"-{family}", "route", "show", "proto",
                               "bgp"], capture_output=True, timeout=30, check=True)
        hist: dict[int, int] = {}
        hops = -1  # next hops of the route being read; -1: none yet
        for line in proc.stdout.split(b"\n"):
            if not line:
                continue
            if line[:1] in (b"\t", b" "):
                hops += 1
                continue
            if hops >= 0:
                hist[max(hops, 1)] = hist.get(max(hops, 1), 0) + 1
            hops = 0  # a single-path route has its "via" on this line: counted as 1 above
        if hops >= 0:
            hist[max(hops, 1)] = hist.get(max(hops, 1), 0) + 1
        return hist

    def pids(self) -> dict[str, int]:
        return {d: p.pid for d, p in self.procs.items() if p.poll() is None}

    def kernel_route_count(self, family: int = 4) -> int:
        out = ip(self.netns, f"-{family}", "route", "show", "proto", "bgp")
        return sum(1 for line in out.splitlines() if line and not line[0].isspace())


# --- a small topology of our own ---------------------------------------------------------------


@dataclass
class BgpLab:
    """Router, client and N nodes on one LAN (a bridge inside the router namespace).

    LAN 192.0.2.0/24 + 2001:db8:2::/64 (router .1 / ::1, node i .(10+i) / ::(10+i)); the client
    sits behind the router on 198.51.100.0/24 + 2001:db8:51::/64, so it reaches VIPs only
    through the router (routed, never on-link).
    """

    prefix: str = "pb-"
    nodes: int = 2
    namespaces: list[str] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.prefix}{role}"

    @property
    def router(self) -> str:
        return self.ns("r")

    @property
    def client(self) -> str:
        return self.ns("c")

    def node(self, i: int) -> str:
        return self.ns(f"n{i}")

    @staticmethod
    def node_v4(i: int) -> str:
        return f"192.0.2.{10 + i}"

    @staticmethod
    def node_v6(i: int) -> str:
        return f"2001:db8:2::{10 + i}"

    ROUTER_V4 = "192.0.2.1"
    ROUTER_V6 = "2001:db8:2::1"
    CLIENT_V4 = "198.51.100.2"
    CLIENT_V6 = "2001:db8:51::2"

    def up(self) -> None:
        self.down()  # leftovers from an interrupted run, by our own names only
        r = self.router
        for ns in [r, self.client, *[self.node(i) for i in range(1, self.nodes + 1)]]:
            netns_add(ns)
            self.namespaces.append(ns)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            nsexec(r, "sysctl", "-qw", key)
        ip(r, "link", "add", "br0", "type", "bridge")
        ip(r, "addr", "add", f"{self.ROUTER_V4}/24", "dev", "br0")
        ip(r, "addr", "add", f"{self.ROUTER_V6}/64", "dev", "br0")
        ip(r, "link", "set", "br0", "up")
        for i in range(1, self.nodes + 1):
            n = self.node(i)
            # veth created in the node namespace, peer moved to the router's bridge
            ip(n, "link", "add", "eth0", "type", "veth", "peer", "name", f"{self.prefix}p{i}")
            ip(n, "link", "set", f"{self.prefix}p{i}", "netns", r)
            ip(r, "link", "set", f"{self.prefix}p{i}", "master", "br0", "up")
            ip(n, "addr", "add", f"{self.node_v4(i)}/24", "dev", "eth0")
            ip(n, "addr", "add", f"{self.node_v6(i)}/64", "dev", "eth0")
            ip(n, "link", "set", "eth0", "up")
            ip(n, "route", "add", "default", "via", self.ROUTER_V4)
            ip(n, "-6", "route", "add", "default", "via", self.ROUTER_V6)
        c = self.client
        ip(c, "link", "add", "eth0", "type", "veth", "peer", "name", f"{self.prefix}cr")
        ip(c, "link", "set", f"{self.prefix}cr", "netns", r)
        ip(r, "addr", "add", "198.51.100.1/24", "dev", f"{self.prefix}cr")
        ip(r, "addr", "add", "2001:db8:51::1/64", "dev", f"{self.prefix}cr")
        ip(r, "link", "set", f"{self.prefix}cr", "up")
        ip(c, "addr", "add", f"{self.CLIENT_V4}/24", "dev", "eth0")
        ip(c, "addr", "add", f"{self.CLIENT_V6}/64", "dev", "eth0")
        ip(c, "link", "set", "eth0", "up")
        ip(c, "route", "add", "default", "via", "198.51.100.1")
        ip(c, "-6", "route", "add", "default", "via", "2001:db8:51::1")

    def down(self) -> None:
        for ns in [self.router, self.client, *[self.node(i) for i in range(1, self.nodes + 1)]]:
            netns_del(ns)
        self.namespaces.clear()

    def add_vip_on_node(self, i: int, vip: str) -> None:
        """Make node i accept traffic for vip (on lo; the router routes it here by BGP)."""
        plen = "128" if ":" in vip else "32"
        ip(self.node(i), "addr", "replace", f"{vip}/{plen}", "dev", "lo")


def lab_available() -> str | None:
    """None when the lab can run here; "needs root" when not root (the one reason to skip).
    Missing iproute2 or FRR is an installation error: it raises (install-deps.sh installs
    both)."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None or not (FRR_LIB / "bgpd").exists():
        raise RuntimeError("needs iproute2 and FRR (/usr/lib/frr/bgpd): "
                           "scripts/install-deps.sh installs them")
    run("ip", "netns", "list")
    return None


@contextlib.contextmanager
def bgp_lab(prefix: str = "pb-", nodes: int = 2) -> Iterator[BgpLab]:
    lab = BgpLab(prefix=prefix, nodes=nodes)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
