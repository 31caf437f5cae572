"""What the wire saw (portico.dev/L2Wire, speaker.core.l2_report): who writes it, what its
message says, and when it is written (at once on ownership changes, figures at most once per
interval and only when they changed) — pure, on plain numbers for clocks."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from common.api.model import AddressRange, L2Advertisement, LBService, Pool
from speaker.core.l2_plan import election_order, plan_l2
from speaker.core.l2_report import (
    ANNOUNCE_WAIT,
    ANSWERING,
    NO_OWNER,
    NOT_ANNOUNCED_YET,
    VipWire,
    WireTarget,
    WireWritten,
    service_conditions,
    wire_condition,
    wire_refresh_in,
    wire_targets,
    wire_write_due,
)
from speaker.core.snapshot import ClusterSnapshot, NodeInfo

V4 = ipaddress.IPv4Address("192.0.2.210")
V6 = ipaddress.IPv6Address("2001:db8::d2")
T0 = datetime(2026, 12, 7, 6, 40, 1, tzinfo=UTC).timestamp()
ETH = frozenset({"pl-eth0"})


def target(*vips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str | None]
           ) -> WireTarget:
    return WireTarget("default", "web", tuple((v, o, ETH) for v, o in vips))


def test_message_names_the_owner_the_announcement_and_the_answers() -> None:
    c = wire_condition(target((V4, "node2")), "node2", {V4: VipWire(T0, T0, 1532)})
    assert (c.status, c.reason) == ("True", ANSWERING)
    assert c.message == ("192.0.2.210: announced by node2 on pl-eth0; gratuitous ARP sent "
                         "2026-12-07T06:40:01Z; 1532 requests answered since 06:40:01Z")
    # IPv6: unsolicited NA; a gain on another day than the last announcement is dated.
    c6 = wire_condition(target((V6, "node2")), "node2",
                        {V6: VipWire(T0 - 86400, T0, 7)})
    assert c6.message == ("2001:db8::d2: announced by node2 on pl-eth0; unsolicited NA sent "
                          "2026-12-07T06:40:01Z; 7 requests answered since "
                          "2026-12-06T06:40:01Z")


def test_not_announced_yet_and_no_owner_are_false() -> None:
    c = wire_condition(target((V4, "node2")), "node2", {V4: VipWire(T0, None, 0)})
    assert (c.status, c.reason) == ("False", NOT_ANNOUNCED_YET)
    assert "no gratuitous ARP sent yet" in c.message
    # Planned ours, not yet in the responder's figures: the same.
    assert wire_condition(target((V4, "node2")), "node2", {}).reason == NOT_ANNOUNCED_YET
    c = wire_condition(target((V4, None)), "node1", {})
    assert (c.status, c.reason, c.message) == ("False", NO_OWNER,
                                               "192.0.2.210: no node answers for it")


def test_a_vip_owned_by_another_node_is_named_without_figures() -> None:
    c = wire_condition(target((V4, "node2"), (V6, "node3")), "node2",
                       {V4: VipWire(T0, T0, 3)})
    assert c.status == "True"
    first, second = c.message.split("; 2001")
    assert first.endswith("3 requests answered since 06:40:01Z")
    assert second == ":db8::d2: announced by node3 on pl-eth0 (counted on node3, not reported here)"


def test_writer_is_the_l2announced_writer_one_per_service() -> None:
    nodes = ("n1", "n2", "n3")
    s = ClusterSnapshot(
        services=(LBService("default", "web", status_ips=(V4, V6)),),
        nodes={n: NodeInfo(n) for n in nodes},
        pools=(Pool("p", (AddressRange("IPv4", int(V4), int(V4), "p"),
                          AddressRange("IPv6", int(V6), int(V6), "p"))),),
        l2_advertisements=(L2Advertisement("x"),))
    live = {n: None for n in nodes}
    per_node = {me: wire_targets(s, plan_l2(s, live, me), live, me) for me in nodes}
    owner = election_order(nodes, V4)[0]
    assert [me for me, t in per_node.items() if t] == [owner]
    (t,) = per_node[owner]
    assert [(v, o) for v, o, _ in t.vips] == [(V4, owner), (V6, election_order(nodes, V6)[0])]
    # The same node writes L2Announced.
    assert [me for me in nodes
            if service_conditions(s, plan_l2(s, live, me), live, me)] == [owner]


def test_refresh_rule() -> None:
    interval = 300.0
    t = target((V4, "node2"))
    c1 = wire_condition(t, "node2", {V4: VipWire(T0, T0, 10)})
    # Nothing written yet (a gain, a restart): at once.
    assert wire_write_due(c1, None, 1000.0, interval)
    last = WireWritten(c1.key, c1.message, 1000.0)
    # Unchanged: never, however late.
    assert not wire_write_due(c1, last, 1000.0 + 10 * interval, interval)
    # Figures changed (answers, a later repeat announcement): not before the interval...
    c2 = wire_condition(t, "node2", {V4: VipWire(T0, T0 + 2, 11)})
    assert c2.key == c1.key and c2.message != c1.message
    assert not wire_write_due(c2, last, 1000.0 + interval - 1, interval)
    assert wire_refresh_in(last, 1000.0 + interval - 1, interval) == 1.0
    # ... then once.
    assert wire_write_due(c2, last, 1000.0 + interval, interval)
    # Interval 0: figures alone are never written, ownership changes still are.
    assert not wire_write_due(c2, last, 1e9, 0.0)
    assert wire_refresh_in(last, 1e9, 0.0) is None
    # Ownership changes are written at once, whatever the interval: a new gain (a new
    # ``since``), the first announcement of a gain, another owner.
    regained = wire_condition(t, "node2", {V4: VipWire(T0 + 60, T0 + 60, 0)})
    first_garp = wire_condition(t, "node2", {V4: VipWire(T0, None, 0)})
    moved = wire_condition(target((V4, "node3")), "node2", {})
    for c in (regained, first_garp, moved):
        assert c.key != last.key and wire_write_due(c, last, 1000.0 + 1, interval)
    # A gained VIP not announced yet is held up to ANNOUNCE_WAIT for its announcement (so
    # that the takeover's one write names it), then written as such.
    pending = wire_condition(t, "node2", {V4: VipWire(T0 + 60, None, 0)})
    assert pending.reason == NOT_ANNOUNCED_YET
    assert not wire_write_due(pending, last, 2000.0, interval, waiting_since=2000.0)
    assert not wire_write_due(pending, None, 2000.0 + ANNOUNCE_WAIT - 0.01, interval, 2000.0)
    assert wire_write_due(pending, last, 2000.0 + ANNOUNCE_WAIT, interval, 2000.0)
