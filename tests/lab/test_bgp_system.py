"""BGP through the whole system (issue 4): the shared lab (lab.topology.Lab), the real
``portico controller`` and ``portico speaker`` processes, FRR bgpd in the lab's router.

Objects go into the API emulator exactly as a user would write them; the controller assigns
the VIP from a routed range (``VIP_BGP4``/``VIP_BGP6``: on no segment the client is attached
to), the speakers' exabgp children announce it, the router installs it with ECMP over the
eligible nodes, and the client reaches it only through the router.

Time bounds asserted here are generous functional properties; the measured figures are
printed (``pytest -s``) and the bench (bench/bgp_scale.py) is where performance is measured.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.kube import resources as R
from lab import netns
from lab.bgp_kit import NODE_ASN, ROUTER_ASN, children, pid_alive
from lab.frr import FrrRouter, RouterNeighbor, lab_available
from lab.topology import VIP_BGP4, VIP_BGP6, Lab, wait_until

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=str(lab_available())),
]

SELECTED = ("node1", "node2")  # labelled for the BGPAdvertisement; node3 peers, announces nothing
ROUTER4, ROUTER6 = "192.0.2.1", "2001:db8:a::1"
FWD_TABLE = "plbgp"  # nft table in the router namespace counting forwarded client packets


class System:
    def __init__(self, lab: Lab, router: FrrRouter) -> None:
        self.lab, self.router = lab, router
        self.seen: dict[int, str] = {}  # every exabgp/relay PID observed, for cleanup

    def kill_leftovers(self) -> None:
        """Belt and braces after a failure: kill observed exabgp/relay PIDs that are still
        the same process (same comm), by PID only."""
        for pid, comm in self.seen.items():
            try:
                same = Path(f"/proc/{pid}/comm").read_text().strip() == comm
            except OSError:
                continue  # gone
            if same:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def gateways(self, vip: str) -> list[str]:
        fam = ipaddress.ip_address(vip).version
        prefix = f"{vip}/{32 if fam == 4 else 128}"
        return self.router.kernel_routes(fam).get(prefix, [])

    def ips_of(self, *nodes: str, family: int = 4) -> list[str]:
        return sorted(self.lab.node(n).ip4 if family == 4 else self.lab.node(n).ip6
                      for n in nodes)

    def web(self) -> tuple[str, str | None]:
        """The dual-stack Cluster Service "web" (created by the first test that needs it, so
        that every test also runs alone)."""
        if self.lab.store.get(R.SERVICES, "web", "default") is None:
            self.lab.add_service("web", families=["IPv4", "IPv6"])
        return self.vips("web")

    def vips(self, svc: str) -> tuple[str, str | None]:
        ips = wait_until(lambda: self.lab.service_ips(svc), 15, what=f"VIP for {svc}")
        v4 = next(i for i in ips if ":" not in i)
        return v4, next((i for i in ips if ":" in i), None)

    def exabgp_of(self, node: str) -> list[tuple[int, str]]:
        """exabgp (and its API relay) under the node's speaker process, by the recorded PID."""
        proc = self.lab.procs[f"speaker-{node}"].popen
        kids = children(proc.pid)
        self.seen.update(kids)
        return kids

    def forwarded(self) -> int:
        text = subprocess.run(
            ["ip", "netns", "exec", self.lab.router, "nft", "list", "table", "inet",
             FWD_TABLE], capture_output=True, text=True, check=True).stdout
        return sum(int(line.split("packets")[1].split()[0])
                   for line in text.splitlines() if "counter packets" in line)


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    with Lab(nodes_count=3, start_controller=True, routed_vips=True) as lab:
        neighbors = [RouterNeighbor(a, NODE_ASN, hold_time=3)
                     for n in lab.nodes for a in (n.ip4, n.ip6)]
        router = lab.start_frr(ROUTER_ASN, neighbors)
        # counts client -> VIP packets the router forwards: proof the traffic is routed
        subprocess.run(["ip", "netns", "exec", lab.router, "nft",
                        f"add table inet {FWD_TABLE}; "
                        f"add chain inet {FWD_TABLE} vips {{ type filter hook forward "
                        "priority 0; policy accept; }; "
                        f"add rule inet {FWD_TABLE} vips ip daddr {VIP_BGP4} counter; "
                        f"add rule inet {FWD_TABLE} vips ip6 daddr {VIP_BGP6} counter"],
                       check=True)
        for n in SELECTED:
            lab.set_node_labels(n, {"bgp.portico.dev/announce": "yes"})
        st = lab.store
        st.create(R.IPADDRESSPOOLS, {"metadata": {"name": "routed"},
                                     "spec": {"addresses": [VIP_BGP4, VIP_BGP6]}})
        st.create(R.BGPADVERTISEMENTS, {"metadata": {"name": "routed"}, "spec": {
            "ipAddressPools": ["routed"], "communities": ["64512:100"],
            "nodeSelectors": [{"matchLabels": {"bgp.portico.dev/announce": "yes"}}]}})
        for name, addr in (("rt4", ROUTER4), ("rt6", ROUTER6)):
            st.create(R.BGPPEERS, {"metadata": {"name": name}, "spec": {
                "myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": addr,
                "holdTime": "3s"}})
        lab.start_speakers()
        want = {a: "Established" for n in lab.nodes for a in (n.ip4, n.ip6)}
        wait_until(lambda: router.neighbor_states() == want, 40, interval=0.2,
                   what="every node's sessions Established at the router")
        system = System(lab, router)
        try:
            yield system
        finally:
            lab.teardown()  # speakers first (their exabgp dies with them), then FRR, netns
            system.kill_leftovers()


def test_cluster_vip_ecmp_over_selected_nodes_reached_through_the_router(
    system: System,
) -> None:
    lab = system.lab
    v4, v6 = system.web()
    assert ipaddress.ip_address(v4) in ipaddress.ip_network(VIP_BGP4)
    assert v6 is not None and ipaddress.ip_address(v6) in ipaddress.ip_network(VIP_BGP6)
    # Cluster: every selected node is a next hop (ECMP); node3 peers but is not selected
    wait_until(lambda: system.gateways(v4) == system.ips_of(*SELECTED), 15,
               what="IPv4 ECMP over the selected nodes")
    wait_until(lambda: system.gateways(v6) == system.ips_of(*SELECTED, family=6), 15,
               what="IPv6 ECMP over the selected nodes")
    detail = system.router.route_detail(f"{v4}/32")
    assert all(p["community"]["list"] == ["64512:100"] for p in detail["paths"])
    # routed, not on-link: the client's route goes via the router, and the router forwards it
    for vip in (v4, v6):
        route = netns.ip("route", "get", vip, ns=lab.client)
        assert f"via {ROUTER4}" in route or f"via {ROUTER6}" in route, route
    for vip in (v4, v6):
        before = system.forwarded()
        body = wait_until(functools.partial(lab.http_get, vip), 10, interval=0.2,
                          what=f"HTTP answer from {vip}")
        assert body.strip().removeprefix("node=") in SELECTED, body
        assert system.forwarded() > before, f"{vip}: the router forwarded nothing"


def test_local_vip_only_on_nodes_with_a_ready_endpoint(system: System) -> None:
    lab = system.lab
    lab.add_service("loc", local=True)
    lab.set_endpoints("loc", {"node1": False, "node2": True})
    v4, _ = system.vips("loc")
    wait_until(lambda: system.gateways(v4) == system.ips_of("node2"), 15,
               what="Local VIP only via node2")
    time.sleep(0.5)  # nothing else shows up: node1's endpoint is not ready
    assert system.gateways(v4) == system.ips_of("node2")
    assert wait_until(lambda: lab.http_get(v4), 10, what="HTTP via node2") == "node=node2\n"
    lab.set_endpoints("loc", {"node1": True, "node2": False})
    wait_until(lambda: system.gateways(v4) == system.ips_of("node1"), 15,
               what="Local VIP moved to node1")
    assert wait_until(lambda: lab.http_get(v4), 10, what="HTTP via node1") == "node=node1\n"


def test_bgppeer_status_per_node_in_the_store(system: System) -> None:
    def status(peer: str) -> dict[str, Any]:
        obj = system.lab.store.get(R.BGPPEERS, peer) or {}
        return dict((obj.get("status") or {}).get("nodes") or {})

    def established(peer: str) -> dict[str, Any] | None:
        s = status(peer)
        ok = len(s) == 3 and all(e.get("state") == "Established" for e in s.values())
        return s if ok else None

    for peer in ("rt4", "rt6"):
        nodes = wait_until(functools.partial(established, peer), 15,
                           what=f"{peer} status for every node")
        assert nodes["node3"]["prefixes"] == 0  # peers, but is not selected to announce
    wait_until(lambda: status("rt4")["node2"]["prefixes"] >= 1, 10, what="prefix count")
    assert status("rt4")["node1"]["neighbor"] == ROUTER4

    # exabgp's own answer (adj-RIB-out, FSM state), polled 2 s after a change at the latest
    def advertised_matches(peer: str, node: str) -> dict[str, Any] | None:
        e = status(peer)[node]
        ok = (e.get("sessionState") == "Established"
              and e.get("advertisedPrefixCount") == e["prefixes"] >= 1)
        return e if ok else None

    for peer, slash in (("rt4", "/32"), ("rt6", "/128")):
        e = wait_until(functools.partial(advertised_matches, peer, "node2"), 10,
                       what=f"{peer}: exabgp's adj-RIB-out in the status")
        assert len(e["advertisedPrefixes"]) == min(e["advertisedPrefixCount"], 100)
        assert all(p.endswith(slash) for p in e["advertisedPrefixes"])
        n3 = status(peer)["node3"]
        assert n3["sessionState"] == "Established" and n3["advertisedPrefixCount"] == 0


def test_service_delete_withdraws_at_the_router(system: System) -> None:
    lab = system.lab
    lab.add_service("gone")
    v4, _ = system.vips("gone")
    wait_until(lambda: system.gateways(v4) == system.ips_of(*SELECTED), 15, what="announced")
    t0 = time.monotonic()
    lab.store.delete(R.SERVICES, "gone", "default")
    wait_until(lambda: not system.gateways(v4), 5, interval=0.01, what="withdrawn")
    took = time.monotonic() - t0
    print(f"\nService delete -> withdrawn at the router: {took:.3f}s")
    assert lab.http_get(v4, timeout=0.5) is None


def test_sigterm_withdraws_and_exabgp_exits_with_the_speaker(system: System) -> None:
    lab = system.lab
    v4, _ = system.web()
    wait_until(lambda: system.gateways(v4) == system.ips_of(*SELECTED), 15, what="ECMP")
    kids = system.exabgp_of("node1")
    assert any(c == "exabgp" for _, c in kids), kids
    proc = lab.procs["speaker-node1"].popen
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: system.gateways(v4) == system.ips_of("node2"), 5, interval=0.01,
               what="node1 withdrawn after SIGTERM")
    took = time.monotonic() - t0
    print(f"\nspeaker SIGTERM -> its routes withdrawn at the router: {took:.3f}s")
    assert proc.wait(15) == 0
    wait_until(lambda: not any(pid_alive(p) for p, _ in kids), 5, what="exabgp gone")
    # a restarted speaker re-announces
    lab.start_speaker("node1")
    wait_until(lambda: system.gateways(v4) == system.ips_of(*SELECTED), 30,
               what="node1 re-announced after restart")


def test_sigkill_leaves_no_exabgp_behind_and_restart_refreshes_routes(system: System) -> None:
    lab = system.lab
    v4, _ = system.web()
    wait_until(lambda: system.gateways(v4) == system.ips_of(*SELECTED), 30, what="ECMP")
    kids = wait_until(lambda: [k for k in system.exabgp_of("node2")], 10, what="exabgp")
    assert any(c == "exabgp" for _, c in kids), kids
    lab.stop_proc("speaker-node2", signal.SIGKILL)
    # PR_SET_PDEATHSIG: exabgp (and its relay) die with the speaker
    wait_until(lambda: not any(pid_alive(p) for p, _ in kids), 5, what="exabgp gone")
    # the TCP session closed without a NOTIFICATION: graceful restart keeps node2's path
    # (stale) so traffic still flows while the speaker restarts
    prefix = f"{v4}/32"

    def stale() -> bool:
        paths = system.router.route_detail(prefix).get("paths", [])
        return any(p.get("stale") for p in paths)

    wait_until(stale, 5, what="node2's path kept as stale")
    lab.start_speaker("node2")
    wait_until(lambda: not stale() and system.gateways(v4) == system.ips_of(*SELECTED), 30,
               what="restarted speaker refreshed its routes")


def test_no_speaker_leaves_processes_in_its_node(system: System) -> None:
    lab = system.lab
    for n in lab.nodes:
        assert lab.stop_proc(f"speaker-{n.name}", signal.SIGTERM, wait=10) == 0
    backends = {lab.procs[f"backend-{n.name}"].popen.pid for n in lab.nodes}
    time.sleep(0.3)
    for n in lab.nodes:
        pids = subprocess.run(["ip", "netns", "pids", n.ns], capture_output=True, text=True,
                              check=True).stdout.split()
        left = {int(p) for p in pids} - backends
        assert not left, f"processes left in {n.ns}: {left}"
    # every session went down at the router (Cease after the withdrawals)
    wait_until(lambda: all(s != "Established"
                           for s in system.router.neighbor_states().values()), 10,
               what="sessions closed")
