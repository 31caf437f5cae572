"""BGP against a real FRR 8.4 bgpd in a router namespace (issue 4, "Must show").

Topology (lab.frr.BgpLab, prefix "pb-"): nodes pb-n1/pb-n2 on a LAN with router pb-r; client
pb-c behind the router. Each speaker is lab/bgp_runner.py (one BgpAnnouncer in its own
process inside its node namespace) fed hand-built ClusterSnapshots. Time bounds asserted here
are functional properties only, asserted generously; bench/bgp_scale.py measures.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.bgp_kit import (
    EXABGP,
    NODE_ASN,
    REPO,
    ROUTER_ASN,
    adv,
    node,
    peer,
    pool,
    snapshot,
    svc,
)
from lab.frr import BgpLab, FrrRouter, RouterNeighbor, bgp_lab, ip, lab_available, nsexec
from lab.wait import wait_until
from speaker.core.snapshot import ClusterSnapshot, Endpoint

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=str(lab_available())),
]

VIP4, VIP6 = "203.0.113.10", "2001:db8:100::10"
LOCAL4, LOCAL6 = "203.0.113.20", "2001:db8:100::20"
PASSWORD = "pb-Md5-s3cret"


@pytest.fixture(scope="module")
def lab() -> Iterator[BgpLab]:
    with bgp_lab("pb-", nodes=2) as lab:
        yield lab


class Speakers:
    def __init__(self, lab: BgpLab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def snap_path(self, i: int) -> Path:
        return self.tmp / f"snap-{i}.pickle"

    def start(self, i: int, snap: ClusterSnapshot) -> subprocess.Popen[bytes]:
        self.snap_path(i).write_bytes(pickle.dumps(snap))
        log = open(self.tmp / f"speaker-{i}.log", "ab")  # noqa: SIM115 - child keeps it
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.node(i), sys.executable, "-m",
             "lab.bgp_runner", f"n{i}", str(self.snap_path(i)), EXABGP,
             str(self.tmp / f"state-{i}")],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[i] = p
        return p

    def update(self, i: int, snap: ClusterSnapshot) -> None:
        self.snap_path(i).write_bytes(pickle.dumps(snap))
        self.procs[i].send_signal(signal.SIGHUP)

    def signal(self, i: int, sig: int) -> None:
        self.procs[i].send_signal(sig)
        self.procs[i].wait(15)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.tmp.glob("speaker-*.log"))

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def speakers(lab: BgpLab, tmp_path: Path) -> Iterator[Speakers]:
    s = Speakers(lab, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture
def make_router(lab: BgpLab, tmp_path: Path) -> Iterator[Callable[..., FrrRouter]]:
    routers: list[FrrRouter] = []

    def make(asn: int = ROUTER_ASN, password: str | None = None) -> FrrRouter:
        neighbors = [RouterNeighbor(a, NODE_ASN, password)
                     for i in (1, 2) for a in (lab.node_v4(i), lab.node_v6(i))]
        r = FrrRouter(lab.router, asn, lab.ROUTER_V4, neighbors, workdir=tmp_path / "frr")
        r.start()
        routers.append(r)
        return r

    try:
        yield make
    finally:
        for r in routers:
            r.stop()


def _nodes(lab: BgpLab) -> list:  # type: ignore[type-arg]
    return [node(f"n{i}", lab.node_v4(i), lab.node_v6(i)) for i in (1, 2)]


def _peers(lab: BgpLab, asn: int = ROUTER_ASN, secret: str | None = None) -> list:  # type: ignore[type-arg]
    return [peer("r4", lab.ROUTER_V4, asn=asn, secret=secret),
            peer("r6", lab.ROUTER_V6, asn=asn, secret=secret)]


def _base_snapshot(lab: BgpLab, **kw: object) -> ClusterSnapshot:
    args: dict[str, object] = dict(
        services=[svc("a", VIP4, VIP6), svc("loc", LOCAL4, LOCAL6, policy="Local")],
        nodes=_nodes(lab), pools=[pool("web", "203.0.113.0/24", "2001:db8:100::/64")],
        advs=[adv("all")], peers=_peers(lab),
        endpoints={"default/loc": (Endpoint("n2", True), Endpoint("n1", False))},
    )
    args.update(kw)
    return snapshot(**args)  # type: ignore[arg-type]


def _gw(r: FrrRouter, prefix: str) -> list[str]:
    fam = 6 if ":" in prefix else 4
    return r.kernel_routes(fam).get(prefix, [])


N4 = ["192.0.2.11", "192.0.2.12"]
N6 = ["2001:db8:2::11", "2001:db8:2::12"]


def test_router_learns_vips_with_eligible_next_hops_and_client_routes_through_it(
    lab: BgpLab, speakers: Speakers, make_router: Callable[..., FrrRouter]
) -> None:
    r = make_router()
    snap = _base_snapshot(lab)
    for i in (1, 2):
        speakers.start(i, snap)
        lab.add_vip_on_node(i, VIP4)
        lab.add_vip_on_node(i, VIP6)
    # Cluster policy: ECMP over both nodes; Local: only n2 (the node with a ready endpoint)
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4, 30)
    wait_until(lambda: _gw(r, f"{VIP6}/128") == N6, 10)
    wait_until(lambda: _gw(r, f"{LOCAL4}/32") == N4[1:], 10)
    wait_until(lambda: _gw(r, f"{LOCAL6}/128") == N6[1:], 10)
    time.sleep(0.5)  # nothing else may show up (n1 must not announce the Local VIP)
    assert _gw(r, f"{LOCAL4}/32") == N4[1:]
    # the client's route to the VIP goes via the router (routed, not on-link), and it answers
    for vip in (VIP4, VIP6):
        route = ip(lab.client, "route", "get", vip)
        assert "via 198.51.100.1" in route or "via 2001:db8:51::1" in route, route
        nsexec(lab.client, "ping", "-c", "1", "-W", "2", vip)
    # endpoint moves to n1: n1 starts announcing the Local VIP, n2 withdraws it
    moved = _base_snapshot(lab, endpoints={"default/loc": (Endpoint("n1", True),)})
    for i in (1, 2):
        speakers.update(i, moved)
    wait_until(lambda: _gw(r, f"{LOCAL4}/32") == N4[:1], 10)
    wait_until(lambda: _gw(r, f"{LOCAL6}/128") == N6[:1], 10)


def test_rib_shows_communities_local_pref_and_aggregates_over_ibgp(
    lab: BgpLab, speakers: Speakers, make_router: Callable[..., FrrRouter]
) -> None:
    r = make_router(asn=NODE_ASN)  # iBGP: local preference is carried
    snap = _base_snapshot(
        lab, peers=_peers(lab, asn=NODE_ASN),
        advs=[adv("agg", "web", aggregation_length=24, aggregation_length_v6=64, local_pref=300,
                  communities=["64512:100", "64512:1:2"])])
    for i in (1, 2):
        speakers.start(i, snap)
    wait_until(lambda: _gw(r, "203.0.113.0/24") == N4, 30)
    wait_until(lambda: _gw(r, "2001:db8:100::/64") == N6, 10)
    for prefix in ("203.0.113.0/24", "2001:db8:100::/64"):
        paths = r.route_detail(prefix)["paths"]
        assert len(paths) == 2
        for p in paths:
            assert p["locPrf"] == 300
            assert p["community"]["list"] == ["64512:100"]
            assert p["largeCommunity"]["list"] == ["64512:1:2"]
    assert f"{VIP4}/32" not in r.rib("ipv4")  # only the aggregate is announced


def test_md5_password_from_secret_and_wrong_password(
    lab: BgpLab, speakers: Speakers, make_router: Callable[..., FrrRouter], tmp_path: Path
) -> None:
    r = make_router(password=PASSWORD)
    good = {("portico", "bgp"): {"password": PASSWORD.encode()}}
    bad = {("portico", "bgp"): {"password": b"pb-wrong-password"}}
    speakers.start(1, _base_snapshot(lab, peers=_peers(lab, secret="bgp"), secrets=good))
    speakers.start(2, _base_snapshot(lab, peers=_peers(lab, secret="bgp"), secrets=bad))
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4[:1], 30)
    wait_until(lambda: _gw(r, f"{VIP6}/128") == N6[:1], 10)
    time.sleep(4)  # > several connect retries of exabgp and FRR
    states = r.neighbor_states()
    assert states["192.0.2.11"] == "Established" and states["192.0.2.12"] != "Established"
    assert _gw(r, f"{VIP4}/32") == N4[:1]
    conf = tmp_path / "state-1" / "exabgp.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    # status (as the announcer writes it) says the session is down and why it may be
    speakers.signal(2, signal.SIGTERM)
    log = speakers.logs()
    import base64
    for secret in (PASSWORD, "pb-wrong-password"):
        assert secret not in log
        assert base64.b64encode(secret.encode()).decode() not in log
    assert "SessionNotEstablished" in _status_of(lab, tmp_path, bad)


def _status_of(lab: BgpLab, tmp_path: Path, secrets: dict) -> str:  # type: ignore[type-arg]
    """Run the wrong-password announcer in-process briefly and return its BGPPeer status."""
    from lab.bgp_kit import FakeEvents, FakeKube, exabgp_wrapper
    from speaker.bgp.announcer import BgpAnnouncer

    kube = FakeKube()
    a = BgpAnnouncer("n2", kube, FakeEvents(), exabgp_wrapper(lab.node(2), tmp_path),
                     str(tmp_path / "state-inproc"))
    try:
        a.sync(_base_snapshot(lab, peers=_peers(lab, secret="bgp"), secrets=secrets))
        st = wait_until(lambda: kube.status.get("r4", {}).get("n2", {}).get("state") == "Connect"
                      and kube.status["r4"]["n2"], 15)
        time.sleep(3)  # still not established after more connect attempts
        st = kube.status["r4"]["n2"]
        assert st["state"] == "Connect" and "TCP-MD5" in st["message"]
        return str(st)
    finally:
        a.stop(graceful=True)


def test_delete_service_and_sigterm_withdraw_quickly(
    lab: BgpLab, speakers: Speakers, make_router: Callable[..., FrrRouter]
) -> None:
    r = make_router()
    snap = _base_snapshot(lab)
    for i in (1, 2):
        speakers.start(i, snap)
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4 and _gw(r, f"{VIP6}/128") == N6, 30)
    # delete Service "a": both nodes withdraw (generous bound; bench measures)
    gone = _base_snapshot(lab, services=[svc("loc", LOCAL4, LOCAL6, policy="Local")])
    t0 = time.monotonic()
    for i in (1, 2):
        speakers.update(i, gone)
    wait_until(lambda: not _gw(r, f"{VIP4}/32") and not _gw(r, f"{VIP6}/128"), 5)
    delete_s = time.monotonic() - t0
    assert _gw(r, f"{LOCAL4}/32") == N4[1:]  # the other Service is untouched
    # SIGTERM on n2: its routes are withdrawn (the Local VIP disappears entirely)
    t0 = time.monotonic()
    speakers.procs[2].send_signal(signal.SIGTERM)
    wait_until(lambda: not _gw(r, f"{LOCAL4}/32") and not _gw(r, f"{LOCAL6}/128"), 5)
    print(f"delete->withdrawn {delete_s:.3f}s, SIGTERM->withdrawn {time.monotonic() - t0:.3f}s")
    assert speakers.procs[2].wait(15) == 0


def test_sigterm_withdraws_then_closes_with_cease_admin_shutdown_nothing_kept_stale(
    lab: BgpLab, speakers: Speakers, make_router: Callable[..., FrrRouter]
) -> None:
    """Issue 15 B: SIGTERM -> withdraw, NOTIFICATION Cease/Administrative Shutdown, exit. FRR
    reports the session closed by the received NOTIFICATION, holds no graceful-restart state
    and no stale path: the routes are gone at once (not after the 120 s restart time)."""
    r = make_router()
    snap = _base_snapshot(lab)
    speakers.start(1, snap)
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4[:1] and _gw(r, f"{VIP6}/128") == N6[:1], 30)
    wait_until(lambda: r.neighbor_states().get("192.0.2.11") == "Established", 5)
    t0 = time.monotonic()
    speakers.procs[1].send_signal(signal.SIGTERM)
    wait_until(lambda: not _gw(r, f"{VIP4}/32") and not _gw(r, f"{VIP6}/128"), 5)
    gone_s = time.monotonic() - t0
    assert speakers.procs[1].wait(15) == 0
    for addr in ("192.0.2.11", "2001:db8:2::11"):
        nb = r.show_json(f"show bgp neighbors {addr}")[addr]
        text = r.vtysh(f"show bgp neighbors {addr}")
        print(f"\nFRR on {addr}: lastResetDueTo={nb.get('lastResetDueTo')!r} "
              f"lastNotificationReason={nb.get('lastNotificationReason')!r}")
        print("\n".join(line for line in text.splitlines()
                        if "reset" in line.lower() or "notification" in line.lower()))
        assert nb["bgpState"] != "Established"
        assert "Cease/Administrative" in nb.get("lastNotificationReason", ""), nb
        assert "received" in nb.get("lastResetDueTo", "").lower() or \
            "Notification received" in text, text
        # Graceful restart did not start. Without the Cease (exabgp's own SIGTERM: a bare FIN)
        # FRR 8.4 prints "Last reset ..., NSF peer closed the session", "The remaining time of
        # restart timer is 119", "The remaining time of stalepath timer is 359".
        assert "NSF peer closed" not in text, text
        assert "remaining time of restart timer" not in text.lower(), text
        assert "stale" not in text.lower(), text
    for prefix in (f"{VIP4}/32", f"{LOCAL4}/32"):
        assert prefix not in r.rib("ipv4")
    for prefix in (f"{VIP6}/128", f"{LOCAL6}/128"):
        assert prefix not in r.rib("ipv6")
    log = speakers.logs()
    assert "bgp_session_closed" in log and "bgp_teardown_unconfirmed" not in log
    print(f"SIGTERM -> routes gone at the router: {gone_s:.3f}s")


def test_sigkill_of_silent_node_healed_by_hold_time_then_restart_reannounces(
    lab: BgpLab, speakers: Speakers, make_router: Callable[..., FrrRouter]
) -> None:
    r = make_router()
    snap = _base_snapshot(lab)
    for i in (1, 2):
        speakers.start(i, snap)
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4 and _gw(r, f"{LOCAL4}/32") == N4[1:], 30)
    n2 = lab.node(2)
    # A node dying silently: nothing (not even the FIN of the killed exabgp) leaves it.
    nsexec(n2, "nft", "add table inet pbdrop; add chain inet pbdrop o { type filter hook "
           "output priority 0; policy drop; }")
    try:
        t0 = time.monotonic()
        speakers.signal(2, signal.SIGKILL)
        time.sleep(1.0)
        assert _gw(r, f"{VIP4}/32") == N4, "withdrawn before the hold time: not a silent death"
        wait_until(lambda: _gw(r, f"{VIP4}/32") == N4[:1] and not _gw(r, f"{LOCAL4}/32"), 10)
        print(f"SIGKILL (silent) -> healed in {time.monotonic() - t0:.2f}s (hold time 3s)")
    finally:
        nsexec(n2, "nft", "delete table inet pbdrop", check=False)
    # the restarted speaker re-announces everything
    speakers.start(2, snap)
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4 and _gw(r, f"{LOCAL4}/32") == N4[1:]
             and _gw(r, f"{VIP6}/128") == N6 and _gw(r, f"{LOCAL6}/128") == N6[1:], 30)


def test_speaker_crash_keeps_routes_stale_and_restart_refreshes_them(
    lab: BgpLab, speakers: Speakers, make_router: Callable[..., FrrRouter]
) -> None:
    """Graceful restart: a crashed speaker on a live node (FIN, no NOTIFICATION) keeps its
    routes at the router (stale) until it comes back and re-announces."""
    r = make_router()
    snap = _base_snapshot(lab)
    speakers.start(1, snap)
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4[:1], 30)
    speakers.signal(1, signal.SIGKILL)
    wait_until(lambda: r.route_detail(f"{VIP4}/32").get("paths", [{}])[0].get("stale"), 5)
    assert _gw(r, f"{VIP4}/32") == N4[:1]
    speakers.start(1, snap)
    wait_until(lambda: not r.route_detail(f"{VIP4}/32")["paths"][0].get("stale"), 30)
    wait_until(lambda: _gw(r, f"{VIP4}/32") == N4[:1], 5)


def test_no_leftover_processes(lab: BgpLab) -> None:
    """Every speaker, exabgp and FRR daemon started above is gone (exabgp dies with its
    speaker through PR_SET_PDEATHSIG even when the speaker was SIGKILLed)."""
    time.sleep(0.5)
    for ns in lab.namespaces:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              check=True).stdout.split()
        assert not pids, f"processes left in {ns}: {pids}"
