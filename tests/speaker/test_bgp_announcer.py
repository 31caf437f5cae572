"""BgpAnnouncer with bad input: clear Events/status, no crash, no exabgp started.

Also checks that the single-object validation (common.api.parse) names the field for each bad
input listed in issue 4, so the speaker can turn it into an Event.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from common.api.parse_adv import parse_bgp_advertisement, parse_bgp_peer
from common.errors import Forbidden, Invalid, InvalidObject
from lab.bgp_kit import (
    FakeEvents,
    FakeKube,
    adv,
    node,
    peer,
    pool,
    snapshot,
    svc,
)
from lab.wait import wait_until
from speaker.bgp.announcer import BgpAnnouncer
from speaker.core.snapshot import SecretReadError


def _peer_obj(**spec: Any) -> dict[str, Any]:
    base = {"myASN": 64512, "peerASN": 64500, "peerAddress": "192.0.2.1"}
    base.update(spec)
    return {"metadata": {"name": "p"}, "spec": base}


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"myASN": 0}, "spec.myASN", "InvalidASN"),
        ({"peerASN": 4294967296}, "spec.peerASN", "InvalidASN"),
        ({"peerAddress": "router.example"}, "spec.peerAddress", None),
        ({"holdTime": "2s"}, "spec.holdTime", "InvalidHoldTime"),
        ({"holdTime": "1s"}, "spec.holdTime", "InvalidHoldTime"),
        ({"holdTime": "9s", "keepaliveTime": "9s"}, "spec.keepaliveTime", "InvalidKeepaliveTime"),
    ],
)
def test_parser_names_field_of_bad_peer(spec: dict[str, Any], field: str,
                                        reason: str | None) -> None:
    with pytest.raises(InvalidObject) as exc:
        parse_bgp_peer(_peer_obj(**spec))
    [p] = exc.value.problems
    assert p.field == field and p.ref.name == "p"
    if reason:
        assert p.reason == reason


def test_parser_names_malformed_community() -> None:
    with pytest.raises(InvalidObject) as exc:
        parse_bgp_advertisement({"metadata": {"name": "a"},
                                 "spec": {"communities": ["65000:x"]}})
    assert [(p.field, p.reason) for p in exc.value.problems] == [
        ("spec.communities[0]", "InvalidCommunity")]


def test_bad_cross_object_input_gives_events_and_status_without_crash(tmp_path: Path) -> None:
    kube, events = FakeKube(), FakeEvents()
    a = BgpAnnouncer("n1", kube, events, "/nonexistent/exabgp", str(tmp_path / "st"))
    try:
        snap = snapshot(
            [svc("a", "203.0.113.10")], [node("n1", "192.0.2.11")],
            [pool("web", "203.0.113.0/24")], [adv("too-short", "web", aggregation_length=16)],
            [peer("md5", "192.0.2.1", secret="missing"), peer("hold", "192.0.2.2", hold=2)],
        )
        a.sync(snap)
        wait_until(lambda: {"AggregationLengthTooShort", "PasswordSecretMissing",
                          "InvalidHoldTime"} <= set(events.reasons()), 5)
        wait_until(lambda: kube.status.get("md5", {}).get("n1"), 5)
        st = kube.status["md5"]["n1"]
        assert st["state"] == "Down" and st["reason"] == "PasswordSecretMissing"
        assert "missing" in st["message"]
        assert kube.status["hold"]["n1"]["reason"] == "InvalidHoldTime"
        agg = [e for e in events.events if e[2] == "AggregationLengthTooShort"]
        assert agg[0][0] == "too-short" and agg[0][1] == "Warning"
        # same input again: no duplicate Events, still alive
        n = len(events.events)
        a.sync(snap)
        time.sleep(0.2)  # lets the worker run once more; nothing to wait *for* (no change)
        assert len(events.events) == n and a._thread.is_alive()
        assert not a.proc.alive()
    finally:
        a.stop(graceful=True)


def test_exabgp_that_cannot_start_is_retried_with_backoff(tmp_path: Path) -> None:
    kube, events = FakeKube(), FakeEvents()
    a = BgpAnnouncer("n1", kube, events, "/nonexistent/exabgp", str(tmp_path / "st"))
    try:
        a.sync(snapshot([], [node("n1", "192.0.2.11")], [], [], [peer("r", "192.0.2.1")]))
        wait_until(lambda: kube.status.get("r", {}).get("n1", {}).get("state") == "Down", 5)
        assert a._backoff > 1.0 and a._thread.is_alive()
    finally:
        a.stop(graceful=True)


def test_password_secret_problems_reach_status_and_events(tmp_path: Path) -> None:
    """PasswordSecretNamespace and PasswordSecretForbidden: a Warning Event on the BGPPeer and
    the per-node status entry, both with the reason and a message naming the field."""
    kube, events = FakeKube(), FakeEvents()
    a = BgpAnnouncer("n1", kube, events, "/nonexistent/exabgp", str(tmp_path / "st"))
    try:
        a.sync(snapshot(
            [], [node("n1", "192.0.2.11")], [], [],
            [peer("elsewhere", "192.0.2.1", secret="s", secret_namespace="kube-system"),
             peer("forbidden", "192.0.2.2", secret="f")],
            secret_errors={("portico", "f"): SecretReadError(403, "cannot get secrets")}))
        wait_until(lambda: {"PasswordSecretNamespace", "PasswordSecretForbidden"}
                 <= set(events.reasons()), 5)
        wait_until(lambda: len(kube.status.get("forbidden", {})) == 1, 5)
        st = kube.status["elsewhere"]["n1"]
        assert st["reason"] == "PasswordSecretNamespace" and st["state"] == "Down"
        assert "spec.passwordSecret.namespace" in st["message"] and "'portico'" in st["message"]
        st = kube.status["forbidden"]["n1"]
        assert st["reason"] == "PasswordSecretForbidden" and "403" in st["message"]
        ev = [e for e in events.events if e[2] == "PasswordSecretNamespace"]
        assert ev[0][:2] == ("elsewhere", "Warning") and "BGPPeer elsewhere" in ev[0][3]
    finally:
        a.stop(graceful=True)


class RefusingKube(FakeKube):
    """Refuses every status patch as the API server does for an invalid body (422)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.attempts = 0

    def patch(self, res: Any, name: str, patch: Any, namespace: str | None = None,
              subresource: str | None = None, patch_type: str = "merge") -> Any:
        self.attempts += 1
        raise self.error


@pytest.mark.parametrize("error", [
    Invalid("PATCH /apis/.../bgppeers/r/status: 422: status.nodes.n1.message: Too long",
            422, "Invalid", "status.nodes.n1.message: Too long", ("status.nodes.n1.message",)),
    Forbidden("PATCH ...: 403: forbidden", 403, "Forbidden", "bgppeers/status is forbidden"),
])
def test_refused_status_write_is_reported_once_and_not_retried_until_a_change(
        tmp_path: Path, error: Exception) -> None:
    kube, events = RefusingKube(error), FakeEvents()
    a = BgpAnnouncer("n1", kube, events, "/nonexistent/exabgp", str(tmp_path / "st"))
    snap = snapshot([], [node("n1", "192.0.2.11")], [], [], [peer("r", "192.0.2.1", hold=2)])
    try:
        a.sync(snap)
        wait_until(lambda: "StatusWriteRefused" in events.reasons(), 5)
        for _ in range(5):  # more reconciles of the same state: nothing is sent again
            a.sync(snap)
            time.sleep(0.05)
        wait_until(lambda: not a._wake.is_set(), 5)
        time.sleep(0.1)
        assert kube.attempts == 1
        refused = [e for e in events.events if e[2] == "StatusWriteRefused"]
        assert len(refused) == 1
        obj, type_, _, message = refused[0]
        assert (obj, type_) == ("r", "Warning")
        assert f"HTTP {error.status}" in message  # type: ignore[attr-defined]
        # The peer changes: its status is worth another try.
        a.sync(snapshot([], [node("n1", "192.0.2.11")], [], [],
                        [peer("r", "192.0.2.1", hold=1)]))
        wait_until(lambda: kube.attempts == 2, 5)
    finally:
        a.stop(graceful=True)
