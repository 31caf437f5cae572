"""exabgp's own view per peer: adj-RIB-out and FSM state (``show adj-rib out``,
``show neighbor summary``), parsed, polled at a bounded rate, published as status and metric.

The goldens tests/golden/bgp/show-*.txt are exabgp 5.0.15's real answers, captured through
``ExaBgpProcess.query`` (the same path as ``test_query_against_real_exabgp`` below) with two
neighbors whose sessions could not come up (hence ``idle``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.bgp_kit import offline_announcer
from speaker.bgp import metrics
from speaker.bgp.announcer import (
    RIB_MIN_GAP_S,
    RIB_POLL_S,
    STATUS_PREFIXES_MAX,
)
from speaker.bgp.process import ExaBgpProcess, Redactor
from speaker.core import bgp as core
from speaker.core.bgp_exabgp import (
    SHOW_ADJ_RIB_OUT,
    SHOW_NEIGHBOR_SUMMARY,
    PeerRib,
    announce_commands,
    parse_adj_rib_out,
    parse_neighbor_summary,
    parse_rib_report,
    render_config,
    withdraw_commands,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bgp"
# exabgp 5.0.15 NeighborTemplate.summary's f-string for an established session (up for more
# than a day: timedelta prints "1 day, 2:03:04", which has spaces)
ESTABLISHED = [
    "Peer            AS        up/down state       |     #sent     #recvd",
    f"{'192.0.2.1':<15} {'64500':<7} {'0:00:07':>9} {'established':<12} {3:>10} {1:>10}",
    f"{'2001:db8::1':<15} {'64500':<7} {'1 day, 2:03:04':>9} {'established':<12} {1:>10} "
    f"{0:>10}",
    f"{'192.0.2.2':<15} {'64501':<7} {'down':>9} {'active':<12} {0:>10} {0:>10}",
]


def _lines(name: str) -> list[str]:
    return (GOLDEN / name).read_text().splitlines()


def test_parse_captured_answers() -> None:
    assert parse_neighbor_summary(_lines("show-neighbor-summary.txt")) == {
        "127.0.0.2": "idle", "::1": "idle"}
    assert parse_adj_rib_out(_lines("show-adj-rib-out.txt")) == {
        "127.0.0.2": frozenset({"203.0.113.10/32", "203.0.113.11/32"}),
        "::1": frozenset({"2001:db8::10/128"})}
    report = parse_rib_report(_lines("show-neighbor-summary.txt"), _lines("show-adj-rib-out.txt"))
    # exabgp keeps its adj-RIB-out while the session is down: nothing counts as advertised
    assert report["127.0.0.2"].prefixes == {"203.0.113.10/32", "203.0.113.11/32"}
    assert report["127.0.0.2"].advertised == frozenset()


def test_parse_established_summary_and_join() -> None:
    assert parse_neighbor_summary(ESTABLISHED) == {
        "192.0.2.1": "established", "2001:db8::1": "established", "192.0.2.2": "active"}
    rib = ["192.0.2.1 ipv4 unicast 203.0.113.10/32 next-hop 192.0.2.11",
           "2001:db8::1 ipv6 unicast 2001:db8:b::10/128 next-hop 2001:db8::11",
           "192.0.2.9 ipv4 unicast 203.0.113.12/32"]  # in the RIB but not in the summary
    report = parse_rib_report(ESTABLISHED, rib)
    assert report["192.0.2.1"].advertised == {"203.0.113.10/32"}
    assert report["2001:db8::1"].advertised == {"2001:db8:b::10/128"}
    assert report["192.0.2.2"] == PeerRib("192.0.2.2", "active", frozenset())
    assert report["192.0.2.9"].state == "" and report["192.0.2.9"].advertised == frozenset()


@pytest.mark.parametrize("line", [
    "", "please specify summary, extensive or configuration", "{\"type\": \"state\"}",
    "192.0.2.1 ipv4 unicast", "192.0.2.1 ipv4 unicast not-a-prefix", "host ipv4 unicast 1.2.3.4/32",
    "192.0.2.1 64500 down",
])
def test_parse_skips_lines_it_does_not_know(line: str) -> None:
    assert parse_adj_rib_out([line]) == {}
    assert parse_neighbor_summary([line]) == {}


# --- the announcer's poll, with a fake exabgp and a fake clock ------------------------------------


class FakeProc:
    def __init__(self, summary: list[str], rib: list[str]) -> None:
        self.summary, self.rib = summary, rib
        self.queries: list[str] = []

    def alive(self) -> bool:
        return True

    def query(self, command: str, timeout: float) -> list[str] | None:
        self.queries.append(command)
        return {SHOW_NEIGHBOR_SUMMARY: self.summary, SHOW_ADJ_RIB_OUT: self.rib}.get(command)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


SESSION = core.Session("192.0.2.1", "r", "IPv4", "192.0.2.11", "192.0.2.11", 64512, 64500, 9)


@pytest.fixture
def announcer(tmp_path: Path) -> Iterator[Any]:
    with offline_announcer(str(tmp_path)) as a:
        yield a


def _rib_lines(n: int) -> list[str]:
    return [f"192.0.2.1 ipv4 unicast 198.18.{i // 256}.{i % 256}/32 next-hop 192.0.2.11"
            for i in range(n)]


def test_poll_is_bounded_and_follows_changes(announcer: Any) -> None:
    proc = FakeProc(ESTABLISHED, _rib_lines(3))
    clock = Clock()
    announcer.proc, announcer._clock = proc, clock
    plan = core.BgpPlan(sessions=(SESSION,))
    announcer._poll_rib(plan)
    assert proc.queries == [SHOW_NEIGHBOR_SUMMARY, SHOW_ADJ_RIB_OUT]
    gauge = metrics.PREFIXES_ADVERTISED.labels("n1", "r")
    assert gauge._value.get() == 3
    # nothing changed: the next poll is RIB_POLL_S later
    clock.t += RIB_POLL_S - 0.1
    announcer._poll_rib(plan)
    assert len(proc.queries) == 2
    clock.t += 0.1
    announcer._poll_rib(plan)
    assert len(proc.queries) == 4
    # a change: polled again, but not sooner than RIB_MIN_GAP_S after the previous poll
    announcer._rib_changed = True
    clock.t += RIB_MIN_GAP_S - 0.1
    announcer._poll_rib(plan)
    assert len(proc.queries) == 4
    proc.rib = _rib_lines(1)
    clock.t += 0.1
    announcer._poll_rib(plan)
    assert len(proc.queries) == 6 and not announcer._rib_changed
    assert gauge._value.get() == 1


def test_status_entry_lists_advertised_prefixes_capped(announcer: Any) -> None:
    announcer.proc, announcer._clock = FakeProc(ESTABLISHED, _rib_lines(250)), Clock()
    announcer._state[SESSION.neighbor] = "up"
    plan = core.BgpPlan(sessions=(SESSION,), peers=("r",))
    assert announcer._peer_status(plan, "r")["sessionState"] == "Unknown"
    announcer._poll_rib(plan)
    entry = announcer._peer_status(plan, "r")
    assert entry["sessionState"] == "Established"
    assert entry["advertisedPrefixCount"] == 250
    assert len(entry["advertisedPrefixes"]) == STATUS_PREFIXES_MAX
    # sorted by address, not as text: 198.18.0.2 before 198.18.0.10
    assert entry["advertisedPrefixes"][:3] == ["198.18.0.0/32", "198.18.0.1/32", "198.18.0.2/32"]
    assert entry["advertisedPrefixes"][10] == "198.18.0.10/32"


def test_status_entry_when_exabgp_reports_the_session_down(announcer: Any) -> None:
    announcer.proc, announcer._clock = FakeProc(_lines("show-neighbor-summary.txt"),
                                                _rib_lines(5)), Clock()
    s = core.Session("127.0.0.2", "r", "IPv4", "127.0.0.1", "127.0.0.1", 64512, 64500, 9)
    plan = core.BgpPlan(sessions=(s,), peers=("r",))
    announcer._poll_rib(plan)
    entry = announcer._peer_status(plan, "r")
    assert (entry["sessionState"], entry["advertisedPrefixCount"],
            entry["advertisedPrefixes"]) == ("Idle", 0, [])


# --- the real exabgp: query() returns the text answer, None on error ------------------------------


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "exabgp")),
                    reason="exabgp is not installed next to this interpreter")
def test_query_against_real_exabgp(tmp_path: Path) -> None:
    """exabgp on loopback with a neighbor on a closed port (no session, nothing sent)."""
    exabgp = os.path.join(os.path.dirname(sys.executable), "exabgp")
    proc = ExaBgpProcess(exabgp, str(tmp_path), lambda m: None, Redactor())
    s = core.Session("127.0.0.2", "r", "IPv4", "127.0.0.1", "127.0.0.1", 64512, 64500, 3, port=1)
    proc.start(render_config([s], proc.relay_argv()))
    try:
        routes = [core.Route("203.0.113.10/32", "127.0.0.1"),
                  core.Route("203.0.113.11/32", "127.0.0.1")]
        for cmd, _n in announce_commands(s.neighbor, routes):
            assert proc.send(cmd, 10)
        rib = proc.query(SHOW_ADJ_RIB_OUT, 10)
        summary = proc.query(SHOW_NEIGHBOR_SUMMARY, 10)
        assert rib is not None and summary is not None
        assert parse_adj_rib_out(rib) == {"127.0.0.2": {"203.0.113.10/32", "203.0.113.11/32"}}
        assert parse_neighbor_summary(summary)["127.0.0.2"] in (
            "idle", "active", "connect")
        assert proc.query("show nonsense", 10) is None
        # a withdrawn route leaves the adj-RIB-out; acks and answers are still in step
        for cmd, _n in withdraw_commands(s.neighbor, routes[:1]):
            assert proc.send(cmd, 10)
        assert parse_adj_rib_out(proc.query(SHOW_ADJ_RIB_OUT, 10) or []) == {
            "127.0.0.2": {"203.0.113.11/32"}}
    finally:
        proc.terminate()
