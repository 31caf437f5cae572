"""Layer 2 for real: speakers in node namespaces answer ARP/NDP, the client reaches VIPs.

Every test uses its own VIPs in the module-scoped lab (conftest.l2lab) and removes what it
created, so tests do not depend on each other's order.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from collections.abc import Iterator

import pytest
from scapy.layers.l2 import ARP, Ether

from common.api.model import LABEL_EXCLUDE_LB
from common.kube import resources as R
from lab import netns
from lab.probe import ETH_P_ARP
from lab.topology import Lab, wait_until
from speaker.core.l2_plan import election_order
from speaker.core.l2_report import CONDITION_TYPE

pytestmark = pytest.mark.lab

NODES = ("node1", "node2", "node3")


def owner_of(lab: Lab, vip: str, segment: str = "a", timeout: float = 15.0) -> str:
    """Wait until exactly one MAC answers for ``vip``; return its node."""
    macs = wait_until(lambda: lab.who_has(vip, segment, timeout=0.2), timeout,
                      what=f"an answer for {vip}")
    # Keep asking briefly: a second claimant must not show up.
    for _ in range(3):
        macs |= lab.who_has(vip, segment, timeout=0.1)
    assert len(macs) == 1, f"several MACs answer for {vip}: {macs}"
    node = lab.node_by_mac(macs.pop())
    assert node is not None
    return node


def condition(lab: Lab, svc: str) -> dict[str, str] | None:
    return lab.service_condition(svc, CONDITION_TYPE)


def wait_condition(lab: Lab, svc: str, pred: object, timeout: float = 10.0) -> dict[str, str]:
    return wait_until(lambda: (c := condition(lab, svc)) and pred(c) and c,  # type: ignore
                      timeout, what=f"condition of {svc}")


@pytest.fixture
def cleanup(l2lab: Lab) -> Iterator[list[tuple[object, str, str | None]]]:
    created: list[tuple[object, str, str | None]] = []
    yield created
    for res, name, ns in reversed(created):
        l2lab.store.delete(res, name, ns)


def add_service(lab: Lab, cleanup: list, name: str, ip: str, **kw: object) -> str:  # type: ignore[type-arg]
    lab.add_service(name, ips=[ip], **kw)  # type: ignore[arg-type]
    cleanup.append((R.SERVICES, name, "default"))
    wait_until(lambda: lab.service_ips(name) == [ip], 10, what=f"{name} gets {ip}")
    return ip


@pytest.mark.parametrize("vip", ["192.0.2.200", "2001:db8:a::1:5"], ids=["ipv4", "ipv6"])
def test_vip_is_announced_by_the_computed_owner(l2lab: Lab, cleanup: list, vip: str) -> None:  # type: ignore[type-arg]
    svc = "web4" if ":" not in vip else "web6"
    add_service(l2lab, cleanup, svc, vip)
    node = owner_of(l2lab, vip)
    # Every speaker runs the same election: with all three live, the first in hash order.
    assert node == election_order(NODES, ipaddress.ip_address(vip))[0]
    cond = wait_condition(l2lab, svc, lambda c: c["status"] == "True")
    assert f"by node {node}" in cond["message"]
    # Each speaker's own view (metrics): the owner holds this one VIP, the others none.
    wait_until(lambda: {n: l2lab.speaker_metric(n, "portico_speaker_l2_vips_owned")
                        for n in NODES} == {n: 1.0 if n == node else 0.0 for n in NODES},
               10, interval=0.2, what="speakers agree on the owner")
    assert l2lab.ping(vip)
    assert l2lab.http_get(vip) == f"node={node}\n"
    assert any(e["reason"] == "L2Announcing" and node in e["message"]
               for e in l2lab.events())


def test_shared_vip_is_announced_once(l2lab: Lab, cleanup: list) -> None:  # type: ignore[type-arg]
    vip = "192.0.2.201"
    ann = {"lb.portico.dev/allow-shared-ip": "k"}
    add_service(l2lab, cleanup, "sh-a", vip, annotations=ann)
    l2lab.add_service("sh-b", ips=[vip], annotations=ann, port=8080)
    cleanup.append((R.SERVICES, "sh-b", "default"))
    wait_until(lambda: l2lab.service_ips("sh-b") == [vip], 10, what="sh-b gets the VIP")
    assert owner_of(l2lab, vip) == election_order(NODES, ipaddress.ip_address(vip))[0]


def test_external_traffic_policy_local(l2lab: Lab, cleanup: list) -> None:  # type: ignore[type-arg]
    vip = "192.0.2.202"
    add_service(l2lab, cleanup, "loc", vip, local=True)
    cleanup.append((R.ENDPOINTSLICES, "loc-lab", "default"))
    # No endpoint: nobody announces, and the Service says why.
    cond = wait_condition(l2lab, "loc", lambda c: c["reason"] == "NoReadyEndpoint")
    assert cond["status"] == "False"
    assert l2lab.who_has(vip) == set()
    # Pick endpoint nodes that are NOT the hash winner, so following endpoints is visible.
    order = election_order(NODES, ipaddress.ip_address(vip))
    first, second = order[2], order[1]
    l2lab.set_endpoints("loc", {first: True, order[0]: False})
    wait_until(lambda: l2lab.who_has(vip, timeout=0.2) == {l2lab.node(first).mac_a}, 10,
               what=f"{vip} on {first}")
    assert l2lab.http_get(vip) == f"node={first}\n"
    l2lab.set_endpoints("loc", {first: False, second: True})
    wait_until(lambda: l2lab.who_has(vip, timeout=0.2) == {l2lab.node(second).mac_a}, 10,
               what=f"{vip} moves to {second}")
    l2lab.flush_client_neighbours()
    assert l2lab.http_get(vip) == f"node={second}\n"
    l2lab.set_endpoints("loc", {second: False})
    wait_until(lambda: not l2lab.who_has(vip, timeout=0.2), 10, what=f"{vip} withdrawn")


def test_no_answer_for_unassigned_addresses(l2lab: Lab) -> None:
    # In an advertised pool, but no Service holds them.
    assert l2lab.who_has("192.0.2.220") == set()
    assert l2lab.who_has("2001:db8:a::1:99") == set()


def test_excluded_node_does_not_announce(l2lab: Lab, cleanup: list) -> None:  # type: ignore[type-arg]
    vip = "192.0.2.203"
    winner = election_order(NODES, ipaddress.ip_address(vip))[0]
    l2lab.set_node_labels(winner, {LABEL_EXCLUDE_LB: ""})
    try:
        add_service(l2lab, cleanup, "excl", vip)
        node = owner_of(l2lab, vip)
        assert node != winner
        assert node == election_order([n for n in NODES if n != winner],
                                      ipaddress.ip_address(vip))[0]
    finally:
        l2lab.set_node_labels(winner, {LABEL_EXCLUDE_LB: None})
    # Label gone: the VIP goes back to the hash winner.
    wait_until(lambda: l2lab.who_has(vip, timeout=0.2) == {l2lab.node(winner).mac_a}, 10,
               what="VIP back on the winner")


def test_only_selected_interfaces_answer(l2lab: Lab, cleanup: list) -> None:  # type: ignore[type-arg]
    vip = "198.51.100.200"
    l2lab.add_l2("seg-b", ipAddressPools=["b4"], interfaces=["pl-eth0"])
    cleanup.append((R.L2ADVERTISEMENTS, "seg-b", None))
    add_service(l2lab, cleanup, "segb", vip)
    # Announced, but only on pl-eth0 (segment A): segment B, where the address lives, gets
    # no answer.
    node = owner_of(l2lab, vip, segment="a")
    assert l2lab.who_has(vip, segment="b") == set()
    obj = l2lab.store.get(R.L2ADVERTISEMENTS, "seg-b")
    obj["spec"]["interfaces"] = ["pl-eth1"]
    l2lab.store.update(R.L2ADVERTISEMENTS, obj)
    macs = wait_until(lambda: l2lab.who_has(vip, segment="b", timeout=0.2), 10,
                      what="answer on segment B")
    assert macs == {l2lab.node(node).mac_b}
    assert l2lab.who_has(vip, segment="a") == set()


def test_bad_input_is_reported_and_harmless(l2lab: Lab, cleanup: list) -> None:  # type: ignore[type-arg]
    l2lab.add_l2("ghost-pool", ipAddressPools=["a4", "nope"])
    cleanup.append((R.L2ADVERTISEMENTS, "ghost-pool", None))
    l2lab.add_l2("bad-selector", nodeSelectors=[{"matchExpressions": [
        {"key": "zone", "operator": "Near", "values": ["x"]}]}])
    cleanup.append((R.L2ADVERTISEMENTS, "bad-selector", None))
    l2lab.add_l2("ghost-if", ipAddressPools=["a4"], interfaces=["pl-nothere"])
    cleanup.append((R.L2ADVERTISEMENTS, "ghost-if", None))
    # A Service whose address lies outside every pool. The controller would withdraw such an
    # allocation, so stop it meanwhile: the speaker must cope with whatever status says (a
    # controller that is down, another tool, a hand edit).
    controller = l2lab.procs.get("controller")
    if controller is not None:
        l2lab.stop_proc("controller")
    try:
        l2lab.add_service("outside", ips=["203.0.113.77"], set_status=True)
        cleanup.append((R.SERVICES, "outside", "default"))
        cond = wait_condition(l2lab, "outside",
                              lambda c: c["reason"] == "AddressOutsidePools")
    finally:
        if controller is not None:
            l2lab.start_controller_proc()
    assert cond["status"] == "False" and "203.0.113.77" in cond["message"]

    def reasons() -> set[str]:
        return {e["reason"] for e in l2lab.events()
                if e.get("involvedObject", {}).get("kind") == "L2Advertisement"}

    wait_until(lambda: {"UnknownPool", "InvalidSelector", "UnknownInterface"} <= reasons(),
               10, what="Events for the bad L2Advertisements")
    # Nothing crashed and unrelated VIPs still work.
    assert all(l2lab.speaker_running(n) for n in NODES)
    vip = "192.0.2.204"
    add_service(l2lab, cleanup, "still-ok", vip)
    assert owner_of(l2lab, vip) in NODES


def test_owner_crash_moves_the_vip(l2lab: Lab, cleanup: list) -> None:  # type: ignore[type-arg]
    vip = "192.0.2.205"
    add_service(l2lab, cleanup, "crash", vip)
    owner = owner_of(l2lab, vip)
    l2lab.stop_proc(f"speaker-{owner}", signal.SIGKILL)
    try:
        new = wait_until(lambda: (m := l2lab.who_has(vip, timeout=0.2))
                         and m != {l2lab.node(owner).mac_a} and m, 10, what="takeover")
        assert len(new) == 1
        expected = election_order([n for n in NODES if n != owner], ipaddress.ip_address(vip))
        assert l2lab.node_by_mac(new.pop()) == expected[0]
    finally:
        l2lab.start_speaker(owner)
    # The restarted speaker warms up, then takes its VIP back (hash order is stable).
    wait_until(lambda: l2lab.who_has(vip, timeout=0.2) == {l2lab.node(owner).mac_a}, 15,
               what="VIP back on the restarted owner")


def test_foreign_mac_claiming_a_vip_is_reported(l2lab: Lab, cleanup: list) -> None:  # type: ignore[type-arg]
    vip = "192.0.2.206"
    add_service(l2lab, cleanup, "dup", vip)
    owner = owner_of(l2lab, vip)
    foreign = "02:ee:00:00:00:99"
    garp = bytes(Ether(src=foreign, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=foreign, psrc=vip, pdst=vip))

    def send() -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            s.bind(("pl-eth0", ETH_P_ARP))
            s.send(garp)
        finally:
            s.close()

    netns.run_in_netns(l2lab.client, send)
    ev = wait_until(lambda: [e for e in l2lab.events("DuplicateL2Announcement")
                             if vip in e["message"]], 10, what="duplicate Event")
    assert owner in ev[0]["message"] and foreign in ev[0]["message"]
    assert ev[0]["type"] == "Warning"
