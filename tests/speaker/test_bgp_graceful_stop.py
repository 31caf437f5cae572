"""Graceful BGP stop (issue 15 B): withdraw, then NOTIFICATION Cease/Administrative Shutdown,
then exabgp ends. Without sockets or exabgp; the lab test (tests/lab/test_bgp_lab.py) shows
FRR receiving the Cease."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab.bgp_kit import FakeEvents, FakeKube
from speaker.bgp import exabgp_run
from speaker.bgp.announcer import BgpAnnouncer
from speaker.bgp.process import LAUNCHER, exabgp_argv
from speaker.core import bgp as core
from speaker.core.bgp_exabgp import StateEvent, teardown_command


def test_teardown_command() -> None:
    assert teardown_command("192.0.2.1") == "neighbor 192.0.2.1 teardown 2"
    assert teardown_command("2001:db8::1", 4) == "neighbor 2001:db8::1 teardown 4"


def test_own_exabgp_runs_through_the_launcher_others_as_given(tmp_path: Path) -> None:
    ours = os.path.join(os.path.dirname(sys.executable), "exabgp")
    assert exabgp_argv(ours) == ([sys.executable, str(LAUNCHER)], True)
    other = str(tmp_path / "exabgp-wrapper.sh")
    assert exabgp_argv(other) == ([other], False)


def _peer(gr: int | bool) -> Any:
    delay = SimpleNamespace(reset=lambda: None)
    return SimpleNamespace(neighbor={"capability": {"graceful-restart": gr}}, _restart=True,
                           _teardown=None, _delay=delay)


def test_launcher_patch_turns_off_graceful_close_for_cease_admin_shutdown_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.reactor.peer import Peer

    monkeypatch.setattr(Peer, "teardown", Peer.teardown)  # restored after the test
    assert exabgp_run.patch()
    p = _peer(120)
    Peer.teardown(p, 2)  # what "neighbor X teardown 2" calls
    assert p._teardown == 2 and p._restart is False
    assert p.neighbor["capability"]["graceful-restart"] is False  # -> Notify(6, 2) is sent
    q = _peer(120)
    Peer.teardown(q, 3)  # exabgp's own uses (and other codes) keep exabgp's behaviour
    assert q._teardown == 3 and q._restart is True
    assert q.neighbor["capability"]["graceful-restart"] == 120


class FakeProc:
    """Stands in for ExaBgpProcess: records commands; answers a teardown with a "down"."""

    def __init__(self, announcer: BgpAnnouncer, ceases: bool = True,
                 reports_down: bool = True) -> None:
        self.a, self.ceases, self.reports_down = announcer, ceases, reports_down
        self.sent: list[str] = []
        self.terminated = False

    def alive(self) -> bool:
        return not self.terminated

    def send(self, command: str, timeout: float) -> bool:
        self.sent.append(command)
        if " teardown " in command and self.reports_down:
            self.a._on_message(StateEvent(command.split()[1], "192.0.2.11", "down",
                                          "notification sent (6,2)"))
        return True

    def terminate(self, timeout: float = 5.0) -> None:
        self.sent.append("<SIGTERM>")
        self.terminated = True

    def kill(self) -> None:
        self.terminated = True


def _announcer(tmp_path: Path) -> BgpAnnouncer:
    a = BgpAnnouncer("n1", FakeKube(), FakeEvents(), "/nonexistent/exabgp",
                     str(tmp_path / "st"))
    a._state = {"192.0.2.1": "up", "2001:db8::1": "up", "192.0.2.9": "down"}
    route = core.Route("203.0.113.10/32", "192.0.2.11")
    a._announced = {"192.0.2.1": frozenset({route}), "2001:db8::1": frozenset(),
                    "192.0.2.9": frozenset()}
    return a


def test_shutdown_withdraws_then_ceases_each_established_session_then_terminates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import speaker.bgp.announcer as ann

    monkeypatch.setattr(ann, "FLUSH_BEFORE_CLOSE_S", 0.0)
    a = _announcer(tmp_path)
    proc = FakeProc(a)
    a.proc = proc  # type: ignore[assignment]
    a._shutdown()
    assert proc.sent == [
        "neighbor 192.0.2.1 withdraw attributes next-hop 192.0.2.11 nlri 203.0.113.10/32",
        "neighbor 192.0.2.1 teardown 2",
        "neighbor 2001:db8::1 teardown 2",  # no routes, but the session still gets its Cease
        "<SIGTERM>",
    ]
    assert a._state["192.0.2.1"] == "down" and a._state["2001:db8::1"] == "down"


def test_shutdown_without_the_launcher_sends_no_teardown(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A foreign exabgp would close silently anyway and reconnect: no pointless flap."""
    import speaker.bgp.announcer as ann

    monkeypatch.setattr(ann, "FLUSH_BEFORE_CLOSE_S", 0.0)
    a = _announcer(tmp_path)
    proc = FakeProc(a, ceases=False)
    a.proc = proc  # type: ignore[assignment]
    a._shutdown()
    assert [c for c in proc.sent if "teardown" in c] == [] and proc.sent[-1] == "<SIGTERM>"


def test_unconfirmed_teardown_waits_bounded_then_terminates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import speaker.bgp.announcer as ann

    monkeypatch.setattr(ann, "FLUSH_BEFORE_CLOSE_S", 0.0)
    monkeypatch.setattr(ann, "TEARDOWN_WAIT_S", 0.05)
    a = _announcer(tmp_path)
    proc = FakeProc(a, reports_down=False)
    a.proc = proc  # type: ignore[assignment]
    a._shutdown()
    assert proc.sent[-1] == "<SIGTERM>"
