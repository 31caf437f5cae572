"""The BGPPeer CRD accepts every status entry the speaker writes (strict: a key the schema
does not know would be pruned by the API server, so it fails here), and caps the prefix list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab.bgp_kit import offline_announcer
from speaker.bgp.announcer import STATUS_PREFIXES_MAX
from speaker.core import bgp as core
from speaker.core.bgp_exabgp import PeerRib
from tests.chart.chartkit import crd_problems

SESSION = core.Session("192.0.2.1", "r", "IPv4", "192.0.2.11", "192.0.2.11", 64512, 64500, 9)


def _peer(entries: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "r"},
            "spec": {"myASN": 64512, "peerASN": 64500, "peerAddress": "192.0.2.1"},
            "status": {"nodes": entries}}


@pytest.fixture
def announcer(tmp_path: Path) -> Iterator[Any]:
    with offline_announcer(str(tmp_path)) as a:
        yield a


def test_speaker_status_entries_fit_the_crd(announcer: Any) -> None:
    prefixes = frozenset(f"198.18.{i // 256}.{i % 256}/32" for i in range(300))
    plan = core.BgpPlan(sessions=(SESSION,), peers=("r", "broken"),
                        peer_problems={"broken": core.PeerProblem("broken", "NoLocalAddress",
                                                                  "no address")})
    before = announcer._peer_status(plan, "r")  # exabgp not running
    announcer.proc = SimpleNamespace(alive=lambda: True)  # exabgp's answer, without exabgp
    announcer._state[SESSION.neighbor] = "up"
    announcer._rib = {SESSION.neighbor: PeerRib(SESSION.neighbor, "established", prefixes)}
    after = announcer._peer_status(plan, "r")
    assert after["advertisedPrefixCount"] == 300
    assert len(after["advertisedPrefixes"]) == STATUS_PREFIXES_MAX
    entries = {"n1": after, "n2": before, "n3": announcer._peer_status(plan, "broken")}
    assert crd_problems(_peer(entries)) == []


def test_crd_rejects_a_longer_prefix_list() -> None:
    entry = {"state": "Established", "advertisedPrefixCount": 101,
             "advertisedPrefixes": [f"198.18.0.{i}/32" for i in range(STATUS_PREFIXES_MAX + 1)]}
    problems = crd_problems(_peer({"n1": entry}))
    assert problems and "advertisedPrefixes" in problems[0]
