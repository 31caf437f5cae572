"""The heartbeat process (``speaker.heartbeat``) as the speaker uses it — a real child process
on loopback — and the loop's watch of the speaker process (SIGSTOP), with a fake clock."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from speaker.answer_lease import AnswerLease
from speaker.core.liveness import LivenessConfig
from speaker.errors import LivenessKeyError
from speaker.heartbeat import HeartbeatProcess
from speaker.liveness import Liveness

from .test_liveness_shell import Clock, Log, Metrics

LOOP = ipaddress.ip_address("127.0.0.1")
CFG = LivenessConfig(interval=0.025, timeout=0.2, join_delay=0.25)


def wait_for(pred: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds  # bounded: a child process is real
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_child_reports_live_maps_with_epochs_and_renews_the_lease(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_bytes(b"k" * 32 + b"\n")
    changes: list[Any] = []
    hp = HeartbeatProcess("n1", 0, CFG, changes.append, Log(), Metrics(), key_file=str(keys))
    try:
        hp.set_nodes({"n1": [LOOP]})  # a cluster of one: no peer to wait for
        hp.set_interfaces(["lo"])
        hp.set_synced(True)
        wait_for(lambda: "n1" in hp.live())
        live, epoch = hp.live_epoch()
        assert live == {"n1": frozenset({"lo"})} and epoch >= 1 and changes
        assert hp.lease.valid(epoch, time.monotonic())  # renewed by the running loop
        assert not hp.lease.valid(epoch - 1, time.monotonic())  # an older plan may not answer
        hp.leave()
        wait_for(lambda: "n1" not in hp.live())
    finally:
        hp.stop()
    assert hp.proc.returncode == 0


def test_unusable_key_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(LivenessKeyError):
        HeartbeatProcess("n1", 0, CFG, lambda _l: None, Log(), Metrics(),
                         key_file=str(tmp_path / "missing"))


def test_stopped_speaker_stops_the_lease_and_relearns_when_it_runs_again() -> None:
    """``watch_pid`` stands in for the speaker: while it is stopped nothing may answer for its
    VIPs; once it runs again, its plan is stale until the view has been re-learnt."""
    stand_in = subprocess.Popen(["sleep", "30"])
    clock, lease = Clock(), AnswerLease()
    lv = Liveness("n1", 0, CFG, lambda _l: None, Log(), Metrics(), monotonic=clock.mono,
                  wall=clock.wall, lease=lease, watch_pid=stand_in.pid)
    try:
        assert not lv._speaker_frozen(clock.t)
        lv._notify()
        assert lease.valid(lv.epoch, clock.t)
        stand_in.send_signal(signal.SIGSTOP)
        wait_for(lambda: lv._speaker_frozen(clock.t))
        clock.t += 3.0
        lv._notify()
        assert not lease.valid(lv.epoch, clock.t)
        stand_in.send_signal(signal.SIGCONT)
        clock.t += 0.01
        wait_for(lambda: not lv._speaker_frozen(clock.t))
        assert lv.membership.relearning(clock.t) is False  # no peer was live: nothing to learn
        lv._notify()
        assert lease.valid(lv.epoch, clock.t)
    finally:
        stand_in.kill()
        stand_in.wait(5)
        lv.stop()
        lease.close()
