"""What the wire saw, for real: the owner's speaker writes ``portico.dev/L2Wire`` with the
time of its gratuitous ARP and, refreshed after ``--wire-report-interval``, the requests it
answered (here 2 s so the refresh is seen; the default is 300 s)."""

from __future__ import annotations

import ipaddress
import re
import signal
from collections.abc import Iterator

import pytest

from common.kube import resources as R
from lab.topology import Lab
from lab.wait import wait_until
from speaker.core.l2_plan import election_order
from speaker.core.l2_report import WIRE_CONDITION_TYPE

from .conftest import started_l2lab

pytestmark = pytest.mark.lab

NODES = ("node1", "node2", "node3")
VIP = "192.0.2.210"


@pytest.fixture(scope="module")
def wirelab() -> Iterator[Lab]:
    with started_l2lab({"a4": ["192.0.2.192/27"]}, ["a4"],
                       speaker_args=("--wire-report-interval", "2")) as lab:
        yield lab


def test_owner_reports_its_announcement_and_answers(wirelab: Lab) -> None:
    lab = wirelab
    lab.add_service("wire", ips=[VIP])
    try:
        wait_until(lambda: lab.service_ips("wire") == [VIP], 10, what="wire gets its VIP")
        owner = election_order(NODES, ipaddress.ip_address(VIP))[0]
        cond = wait_until(lambda: (c := lab.service_condition("wire", WIRE_CONDITION_TYPE))
                          and c["status"] == "True" and c, 10, what="L2Wire condition")
        assert cond["reason"] == "Answering"
        assert re.fullmatch(
            rf"{VIP}: announced by {owner} on ([^;]+); gratuitous ARP sent "
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; \d+ requests answered since \S+Z",
            cond["message"]), cond["message"]
        # Ask a few times: the refreshed figures count the answers.
        for _ in range(5):
            assert lab.who_has(VIP, timeout=0.2)

        def answered() -> int:
            c = lab.service_condition("wire", WIRE_CONDITION_TYPE) or {}
            m = re.search(r"; (\d+) requests answered", str(c.get("message", "")))
            return int(m.group(1)) if m else -1

        wait_until(lambda: answered() >= 5, 10, what="refreshed answer count")
        # The owner dies: the next owner writes its own figures at once (a new gain, counted
        # from zero), without waiting for the refresh interval's figures.
        lab.stop_proc(f"speaker-{owner}", signal.SIGKILL)
        try:
            nxt = election_order([n for n in NODES if n != owner], ipaddress.ip_address(VIP))[0]
            cond = wait_until(
                lambda: (c := lab.service_condition("wire", WIRE_CONDITION_TYPE))
                and f"announced by {nxt} on" in c["message"] and c, 10, what="new owner")
            assert cond["status"] == "True" and "gratuitous ARP sent" in cond["message"]
        finally:
            lab.start_speaker(owner)
        wait_until(lambda: f"announced by {owner} on" in str(
            (lab.service_condition("wire", WIRE_CONDITION_TYPE) or {}).get("message")),
            20, what="the VIP and its condition back on the restarted owner")
    finally:
        lab.store.delete(R.SERVICES, "wire", "default")
