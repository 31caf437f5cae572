"""Health-aware announcement (pure): heartbeat tags, probe hysteresis and its timing on a fake
clock, netlink parsing, the layer-2 election leaving unhealthy nodes out, BGP withholding,
the bfdd configuration and the API fields behind them."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path

import pytest

from common.api.model import (
    AddressRange,
    BFDSettings,
    L2Advertisement,
    LBService,
    Pool,
    ServicePort,
)
from common.api.parse import parse_bgp_peer
from common.api.parse_service import health_probe_ports
from common.errors import InvalidObject
from lab import bgp_kit as K
from lab.wait import wait_until
from speaker.bgp.announcer import BgpAnnouncer
from speaker.core import health as H
from speaker.core import netlink as NL
from speaker.core.bgp import plan as bgp_plan
from speaker.core.bgp_bfd import render_bfdd_config
from speaker.core.l2_plan import ANNOUNCED, NO_READY_ENDPOINT, plan_l2
from speaker.core.snapshot import ClusterSnapshot, Endpoint, NodeInfo
from speaker.health import probe_all

V = ipaddress.ip_address
VIP = V("192.0.2.200")


def l2_snap(*services: LBService, interfaces: tuple[str, ...] = ("eth1",),
            endpoints: dict[str, tuple[Endpoint, ...]] | None = None) -> ClusterSnapshot:
    a, b = int(V("192.0.2.200")), int(V("192.0.2.239"))
    return ClusterSnapshot(
        services=services, nodes={n: NodeInfo(n) for n in ("n1", "n2", "n3")},
        pools=(Pool("p", (AddressRange("IPv4", a, b, "x"),)),),
        l2_advertisements=(L2Advertisement("adv", interfaces=interfaces),),
        endpoints=endpoints or {})


def owner_of(plan_vip_owner: str | None) -> str:
    assert plan_vip_owner is not None
    return plan_vip_owner


# --- heartbeat tags -----------------------------------------------------------------------------


def test_tags_round_trip_and_never_look_like_interfaces() -> None:
    h = H.NodeHealth(frozenset({"eth1"}), frozenset({VIP, V("2001:db8::5")}))
    tags = H.encode(h)
    assert all(":" in t for t in tags)  # the kernel forbids ':' in interface names
    names, back = H.decode(["eth0", "eth2", *tags, "health:FutureReason:x", "health:junk"])
    assert names == {"eth0", "eth2"}
    assert back == h


def test_split_live_keeps_unknown_and_plain_nodes() -> None:
    tag = "health:HealthProbeFailed:192.0.2.200"
    ifaces, health = H.split_live({"a": None, "b": frozenset({"eth0"}),
                                   "c": frozenset({"eth0", tag})})
    assert ifaces == {"a": None, "b": {"eth0"}, "c": {"eth0"}}
    assert health == {"c": H.NodeHealth(failed_vips=frozenset({VIP}))}


def test_tags_are_capped_to_fit_a_heartbeat() -> None:
    many = frozenset(V(f"198.18.{i // 256}.{i % 256}") for i in range(1000))
    assert len(H.encode(H.NodeHealth(failed_vips=many))) == H.MAX_TAGS


# --- probes -------------------------------------------------------------------------------------


def test_probe_hysteresis_fall_and_rise() -> None:
    t = (VIP, 80)
    tr = H.ProbeTracker(fall=2, rise=3)
    tr.set_targets([t])
    assert not tr.record(t, False, "ECONNREFUSED")  # one failure: a stall, not a fault
    assert tr.failed_vips() == frozenset()
    assert tr.record(t, True) is False
    assert not tr.record(t, False)
    assert tr.record(t, False, "timeout")  # two in a row
    assert tr.failed_vips() == {VIP}
    assert "80/TCP (timeout)" in tr.describe(VIP)
    assert not tr.record(t, True) and not tr.record(t, True)
    assert tr.record(t, True)  # third success
    assert tr.failed_vips() == frozenset()
    tr.set_targets([])
    assert not tr.record(t, False) and tr.targets() == []


@pytest.mark.parametrize("fault_at", [0.0, 0.001, 0.05, 0.099])
@pytest.mark.parametrize("kind", ["refused", "blackhole"])
def test_probe_detection_is_within_500_ms_on_a_fake_clock(fault_at: float, kind: str) -> None:
    """Probes start every INTERVAL; a refused connect fails at once, a black-holed one after
    TIMEOUT. The VIP is withheld after FALL failures; peers hear it with the next heartbeat
    (<= 100 ms). Worst case must stay below 500 ms."""
    heartbeat = 0.1
    t = (VIP, 80)
    tr = H.ProbeTracker()
    tr.set_targets([t])
    start = 0.0
    events: list[tuple[float, bool]] = []  # (time the result is known, ok)
    while start < 2.0:
        if start < fault_at:
            events.append((start, True))
        else:
            events.append((start + (0.0 if kind == "refused" else H.TIMEOUT), False))
        start += H.INTERVAL
    detected = None
    for when, ok in sorted(events):
        if tr.record(t, ok) and not ok:
            detected = when
            break
    assert detected is not None
    assert detected - fault_at + heartbeat <= 0.5, detected - fault_at


def test_probe_all_real_sockets_on_loopback() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    try:
        res = probe_all([(V("127.0.0.1"), port), (V("127.0.0.1"), dead_port)], 0.5)
    finally:
        srv.close()
    assert res[(V("127.0.0.1"), port)] == (True, "")
    assert res[(V("127.0.0.1"), dead_port)] == (False, "ECONNREFUSED")


# --- netlink ------------------------------------------------------------------------------------


def test_netlink_link_messages() -> None:
    up = NL.build_newlink("eth1", 3, NL.IFF_UP | NL.IFF_LOWER_UP)
    nocarrier = NL.build_newlink("eth1", 3, NL.IFF_UP)
    gone = NL.build_newlink("eth2", 4, NL.IFF_UP | NL.IFF_LOWER_UP, NL.RTM_DELLINK)
    done = NL.NLMSG_HDR.pack(NL.NLMSG_HDR.size + 4, NL.NLMSG_DONE, 0, 0, 0) + b"\0" * 4
    events, finished = NL.parse(up + nocarrier + gone + done)
    assert finished
    assert events == [NL.LinkEvent("eth1", 3, True), NL.LinkEvent("eth1", 3, False),
                      NL.LinkEvent("eth2", 4, False, deleted=True)]
    assert NL.parse(b"\x01\x02")[0] == [] and NL.parse(up[:-3])[0] == []
    assert NL.dump_request()[4:6] == NL.RTM_GETLINK.to_bytes(2, "little")


# --- layer 2 election ---------------------------------------------------------------------------


def test_l2_interface_down_moves_the_vip_and_names_the_reason() -> None:
    snap = l2_snap(LBService("default", "web", status_ips=(VIP,)))
    all_up = {n: frozenset({"eth0", "eth1"}) for n in ("n1", "n2", "n3")}
    first = owner_of(plan_l2(snap, all_up, "n1").vips[VIP].owner)
    # The owner's eth1 lost carrier; it stays live over eth0 and publishes the fault.
    faulty = dict(all_up)
    faulty[first] = frozenset({"eth0", *H.encode(H.NodeHealth(frozenset({"eth1"})))})
    views = [plan_l2(snap, faulty, me) for me in ("n1", "n2", "n3")]
    owners = {p.vips[VIP].owner for p in views}
    assert len(owners) == 1 and first not in owners  # all agree, the faulty node is out
    vp = views[0].vips[VIP]
    assert vp.reason == ANNOUNCED and (first, H.INTERFACE_DOWN) in vp.skipped
    assert f"not on {first} {H.INTERFACE_DOWN}" in vp.message
    # Every node faulty: the reason is the health reason, not "no eligible node".
    allbad = {n: frozenset({"eth0", "health:InterfaceDown:eth1"}) for n in all_up}
    vp = plan_l2(snap, allbad, "n1").vips[VIP]
    assert vp.owner is None and vp.reason == H.INTERFACE_DOWN


def test_l2_probe_failure_is_per_vip() -> None:
    other = V("192.0.2.201")
    snap = l2_snap(LBService("default", "a", status_ips=(VIP,)),
                   LBService("default", "b", status_ips=(other,)), interfaces=())
    live: dict[str, frozenset[str] | None] = {n: frozenset({"eth0"}) for n in ("n1", "n2", "n3")}
    before = plan_l2(snap, live, "n1")
    bad = owner_of(before.vips[VIP].owner)
    live[bad] = frozenset({"eth0", f"health:HealthProbeFailed:{VIP}"})
    after = plan_l2(snap, live, "n1")
    assert after.vips[VIP].owner not in (None, bad)
    assert (bad, H.PROBE_FAILED) in after.vips[VIP].skipped
    assert after.vips[other].owner == before.vips[other].owner  # other VIPs stay put


def test_l2_no_interface_with_carrier_is_not_eligible() -> None:
    snap = l2_snap(LBService("default", "web", status_ips=(VIP,)), interfaces=())
    live: dict[str, frozenset[str] | None] = {
        "n1": frozenset({"health:InterfaceDown:eth0"}), "n2": frozenset({"eth0"})}
    vp = plan_l2(snap, live, "n2").vips[VIP]
    assert vp.owner == "n2" and ("n1", H.INTERFACE_DOWN) in vp.skipped


def test_l2_local_policy_names_nodes_without_endpoints() -> None:
    svc = LBService("default", "web", status_ips=(VIP,), traffic_policy="Local")
    eps = {"default/web": (Endpoint("n2", True, ("10.0.0.1",)),)}
    live: dict[str, frozenset[str] | None] = {n: frozenset({"eth1"}) for n in ("n1", "n2", "n3")}
    vp = plan_l2(l2_snap(svc, endpoints=eps), live, "n1").vips[VIP]
    assert vp.owner == "n2"
    assert vp.skipped == (("n1", H.NO_LOCAL_ENDPOINT), ("n3", H.NO_LOCAL_ENDPOINT))
    vp = plan_l2(l2_snap(svc, endpoints={}), live, "n1").vips[VIP]
    assert vp.owner is None and vp.reason == NO_READY_ENDPOINT


# --- BGP ----------------------------------------------------------------------------------------


def bgp_world(policy: str = "Cluster", endpoints: dict[str, tuple[Endpoint, ...]] | None = None,
              bfd: BFDSettings | None = None) -> ClusterSnapshot:
    peer = K.peer("r", "192.0.2.1")
    if bfd is not None:
        peer = type(peer)(**{**{f: getattr(peer, f) for f in peer.__slots__}, "bfd": bfd})
    return K.snapshot(
        services=[K.svc("web", "203.0.113.230", policy=policy), K.svc("db", "203.0.113.231")],
        nodes=[K.node("n1", "192.0.2.11")], pools=[K.pool("p", "203.0.113.224/28")],
        advs=[K.adv("a", "p")], peers=[peer], endpoints=endpoints)


def test_bgp_probe_failure_withholds_only_that_vip() -> None:
    vip = V("203.0.113.230")
    p = bgp_plan("n1", bgp_world(), H.NodeHealth(failed_vips=frozenset({vip})))
    prefixes = {r.prefix for r in p.routes["192.0.2.1"]}
    assert prefixes == {"203.0.113.231/32"}
    assert p.withheld == {vip: (H.PROBE_FAILED, ("default/web",))}
    assert bgp_plan("n1", bgp_world()).withheld == {}


def test_bgp_local_without_endpoint_is_withheld_and_named() -> None:
    p = bgp_plan("n1", bgp_world("Local"))
    assert p.withheld == {V("203.0.113.230"): (H.NO_LOCAL_ENDPOINT, ("default/web",))}
    eps = {"default/web": (Endpoint("n1", True, ("10.0.0.1",)),)}
    assert bgp_plan("n1", bgp_world("Local", eps)).withheld == {}


# --- BFD ----------------------------------------------------------------------------------------


def test_bfdd_config_from_sessions() -> None:
    assert render_bfdd_config(bgp_plan("n1", bgp_world()).sessions) is None
    p = bgp_plan("n1", bgp_world(bfd=BFDSettings(100, 100, 3)))
    text = render_bfdd_config(p.sessions)
    assert text is not None
    assert " peer 192.0.2.1 local-address 192.0.2.11\n" in text
    assert "  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n" in text
    assert "minimum-ttl" not in text and "passive-mode" not in text


def _peer_obj(bfd: object) -> dict[str, object]:
    return {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "r"},
            "spec": {"myASN": 64512, "peerASN": 64500, "peerAddress": "192.0.2.1", "bfd": bfd}}


def test_parse_bgp_peer_bfd() -> None:
    assert parse_bgp_peer(_peer_obj({})).bfd == BFDSettings()
    got = parse_bgp_peer(_peer_obj({"receiveInterval": 100, "transmitInterval": 50,
                                    "detectMultiplier": 5, "passiveMode": True}))
    assert got.bfd == BFDSettings(100, 50, 5, True)
    obj = _peer_obj(None)
    del obj["spec"]["bfd"]  # type: ignore[attr-defined]
    assert parse_bgp_peer(obj).bfd is None
    for bad in ({"receiveInterval": 5}, {"detectMultiplier": 1}, {"transmitInterval": "1s"},
                "fast"):
        with pytest.raises(InvalidObject) as exc:
            parse_bgp_peer(_peer_obj(bad))
        assert all(p.field.startswith("spec.bfd") for p in exc.value.problems)


def test_health_probe_annotation() -> None:
    ports = [ServicePort("TCP", 80), ServicePort("UDP", 53), ServicePort("TCP", 443)]
    assert health_probe_ports(None, ports) == ((), None)
    assert health_probe_ports("false", ports) == ((), None)
    assert health_probe_ports("true", ports) == ((80, 443), None)
    assert health_probe_ports(" 8080, 80 ", ports) == ((80, 8080), None)
    assert health_probe_ports("true", [ServicePort("UDP", 53)])[1] is not None
    for bad in ("yes", "0", "70000", "80;rm", "1,2,3,4,5,6,7,8,9"):
        got, problem = health_probe_ports(bad, ports)
        assert got == () and problem is not None


# --- the BGP announcer: Events and BFD supervision (no exabgp, no bfdd) -------------------------


def test_bgp_announcer_names_withheld_vips_and_unavailable_bfdd(tmp_path: Path) -> None:
    kube, events = K.FakeKube(), K.FakeEvents()
    a = BgpAnnouncer("n1", kube, events, "/nonexistent/exabgp", str(tmp_path / "st"))
    a.bfd.bfdd = Path("/nonexistent/bfdd")  # before the first snapshot: no start yet
    ready = {"default/web": (Endpoint("n1", True, ("10.0.0.1",)),)}
    unready = {"default/web": (Endpoint("n1", False, ("10.0.0.1",)),)}
    bfd_peer = dataclasses.replace(K.peer("r", "192.0.2.1"), bfd=BFDSettings(100, 100, 3))

    def world(eps: dict[str, tuple[Endpoint, ...]]) -> ClusterSnapshot:
        return K.snapshot(
            services=[K.svc("web", "203.0.113.230", policy="Local"),
                      K.svc("db", "203.0.113.231")],
            nodes=[K.node("n1", "192.0.2.11")], pools=[K.pool("p", "203.0.113.224/28")],
            advs=[K.adv("a", "p")], peers=[bfd_peer], endpoints=eps)

    def withdrawn(svc: str, reason: str) -> bool:
        return any(e[0] == svc and e[2] == "BGPWithdrawn" and reason in e[3]
                   for e in events.events)

    try:
        a.sync(world(ready))
        wait_until(lambda: "BFDUnavailable" in events.reasons(), 5, what="BFDUnavailable")
        assert not any(e[2] == "BGPWithdrawn" for e in events.events)
        a.sync(world(unready))  # (b): the node's endpoint goes unready
        wait_until(lambda: withdrawn("web", "NoLocalEndpoint"), 5, what="NoLocalEndpoint")
        a.set_health(H.NodeHealth(failed_vips=frozenset({V("203.0.113.231")})))  # (c)
        wait_until(lambda: withdrawn("db", "HealthProbeFailed"), 5, what="HealthProbeFailed")
        a.set_health(H.HEALTHY)
        wait_until(lambda: any(e[0] == "db" and e[2] == "BGPAnnouncing" for e in events.events),
                   5, what="BGPAnnouncing")
        assert events.reasons().count("BFDUnavailable") == 1  # once per failure streak
    finally:
        a.stop(graceful=True)
