"""Liveness on real speakers (network namespaces): a link cut moves a VIP fast, a frozen
speaker answers nothing stale on waking and does not take its VIP straight back, and CPU hogs
at a higher priority move nothing.

Figures (outage percentiles) come from bench/l2_failover.py; these tests assert behaviour and
only generous sanity bounds on time. The lab is this module's own (its faults — cut links,
frozen speakers, hold-downs — must not leak into other modules' expectations).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from lab import hogs
from lab.failover import (
    NdpProber,
    Prober,
    analyse,
    current_owner,
    log_events,
    speaker_group_signal,
)
from lab.topology import Lab
from lab.wait import wait_until

from .conftest import lab_skip_reason

pytestmark = pytest.mark.lab

VIP4, VIP6 = "192.0.2.215", "2001:db8:a::1:15"
SETTLE = 1.0  # s of probing before a fault
HOLDDOWN_BACK = 30.0  # s: hold-down (5 s) + warm-up + a busy machine, before the VIP is back


@pytest.fixture(scope="module")
def lvlab() -> Iterator[Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    with Lab(nodes_count=3, start_controller=False) as lab:
        lab.add_pool("a4", ["192.0.2.192/27"])
        lab.add_pool("a6", ["2001:db8:a::1:0/112"])
        lab.add_l2("seg-a", ipAddressPools=["a4", "a6"])
        lab.start_speakers()
        lab.wait_speakers_live()
        lab.add_service("lv4", ips=[VIP4], set_status=True)
        lab.add_service("lv6", ips=[VIP6], set_status=True)
        yield lab


def prober_for(lab: Lab, vip: str, realtime: bool = False) -> Prober:
    cls = NdpProber if ":" in vip else Prober
    p = cls(lab.client, "pl-eth0", vip, realtime=realtime)
    p.start()
    return p


def back_on(lab: Lab, vip: str, mac: str) -> None:
    wait_until(lambda: lab.who_has(vip, timeout=0.2) == {mac},
               HOLDDOWN_BACK, interval=0.3, what=f"{vip} back on its owner")


@pytest.mark.parametrize("vip", [VIP4, VIP6], ids=["ipv4", "ipv6"])
def test_link_cut_moves_the_vip_once_without_overlap(lvlab: Lab, vip: str) -> None:
    owner, mac = current_owner(lvlab, vip)
    prober = prober_for(lvlab, vip)
    try:
        time.sleep(SETTLE)
        prober.reset()
        time.sleep(SETTLE)
        t_fault = time.monotonic()
        lvlab.cut_link(owner)
        try:
            time.sleep(2.0)
            trial = analyse("cut", owner, mac, prober.reset(), t_fault, lvlab)
        finally:
            lvlab.cut_link(owner, up=True)
    finally:
        prober.stop()
    assert trial.takeover is not None, "nobody took the VIP over"
    # Sanity only (the figure is the bench's): timeout 200 ms + GARP, on a busy machine.
    assert trial.takeover < 1.0 and trial.outage < 1.0, trial
    assert trial.overlap_rounds == 0 and trial.moves == 1, trial
    assert trial.new_owner not in (None, owner)
    back_on(lvlab, vip, mac)


def test_frozen_speaker_answers_nothing_stale_and_does_not_flap(lvlab: Lab) -> None:
    vip = VIP4
    owner, mac = current_owner(lvlab, vip)
    prober = prober_for(lvlab, vip)
    try:
        time.sleep(SETTLE)
        prober.reset()
        time.sleep(SETTLE)
        t_fault = time.monotonic()
        speaker_group_signal(lvlab, owner, signal.SIGSTOP)
        try:
            time.sleep(3.0)  # > the timeout: its peers declare it dead and take the VIP
        finally:
            speaker_group_signal(lvlab, owner, signal.SIGCONT)
        t_wake = time.monotonic()
        time.sleep(2.0)
        trial = analyse("freeze", owner, mac, prober.reset(), t_fault, lvlab)
    finally:
        prober.stop()
    assert trial.takeover is not None and trial.takeover < 1.5, trial
    # ~300 requests queued on the frozen speaker's socket: none answered on waking, and the
    # VIP stays where it went (one move) for the hold-down, not straight back.
    woken = [t for t, _, m in trial.record.arp_replies if m == mac and t >= t_wake]
    assert woken == [] and trial.late_answers == 0, trial
    assert trial.moves == 1 and trial.overlap_rounds == 0, trial
    assert lvlab.speaker_running(owner)
    back_on(lvlab, vip, mac)  # after the hold-down: one planned move back


def test_cpu_hogs_at_higher_priority_move_nothing(lvlab: Lab) -> None:
    """45 s with one busy loop per core and a memory churner at nice -10 (ahead of the
    speakers): no takeover, no overlap, every speaker keeps every peer live."""
    owners = {vip: current_owner(lvlab, vip)[1] for vip in (VIP4, VIP6)}
    probers = {vip: prober_for(lvlab, vip, realtime=True) for vip in owners}
    base = (log_events(lvlab, "l2_ownership", skip_empty_gain=True),
            log_events(lvlab, "liveness_change"))
    procs = hogs.start_hogs(60.0, 512)
    try:
        for p in probers.values():
            p.reset()
        time.sleep(45.0)
        records = {vip: p.reset() for vip, p in probers.items()}
    finally:
        hogs.stop_hogs(procs)
        for p in probers.values():
            p.stop()
    assert all(p.poll() is not None for p in procs)
    for vip, rec in records.items():
        foreign = {m for _, _, m in rec.arp_replies} - {owners[vip]}
        assert not foreign, f"{vip} answered by {foreign} while everyone was healthy"
    assert (log_events(lvlab, "l2_ownership", skip_empty_gain=True),
            log_events(lvlab, "liveness_change")) == base
