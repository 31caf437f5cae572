"""Lease-based leader election against the emulator, with a fake clock (no sleeps)."""

from __future__ import annotations

import pytest

from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.leader import LeaderElector
from lab.emulator import Emulator
from lab.fakeclock import FakeClock


def elector(emu: Emulator, clock: FakeClock, ident: str, lost: list[str] | None = None
            ) -> LeaderElector:
    kube = KubeClient.from_environment(server=emu.url, request_timeout=2)
    return LeaderElector(
        kube, "portico-system", "portico-controller", ident, clock=clock,
        on_lost=(lambda: lost.append(ident)) if lost is not None else None,
        rand=lambda: 0.0,
    )


def lease(emu: Emulator) -> dict[str, object]:
    obj = emu.store.get(R.LEASES, "portico-controller", "portico-system")
    assert obj is not None
    spec: dict[str, object] = obj["spec"]
    return spec


def test_one_wins_and_standby_waits(emu: Emulator, clock: FakeClock) -> None:
    a, b = elector(emu, clock, "a"), elector(emu, clock, "b")
    assert a.try_acquire_or_renew() and a.is_leader
    assert not b.try_acquire_or_renew() and not b.is_leader
    assert lease(emu)["holderIdentity"] == "a"
    assert lease(emu)["leaseDurationSeconds"] == 15
    # a keeps renewing: b never sees an expired lease even long after the first acquire.
    for _ in range(10):
        clock.advance(5)
        assert a.renew_once()
        assert not b.try_acquire_or_renew()
    assert lease(emu)["leaseTransitions"] == 0


def test_takeover_after_release_is_immediate(emu: Emulator, clock: FakeClock) -> None:
    a, b = elector(emu, clock, "a"), elector(emu, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.stop(release=True)
    assert lease(emu)["holderIdentity"] == ""
    assert b.try_acquire_or_renew()  # no waiting for expiry
    spec = lease(emu)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


def test_takeover_after_expiry_by_observer_clock(emu: Emulator, clock: FakeClock) -> None:
    lost: list[str] = []
    a, b = elector(emu, clock, "a", lost), elector(emu, clock, "b", lost)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b starts observing now
    clock.advance(14.9)
    assert not b.try_acquire_or_renew()  # not expired yet on b's clock
    clock.advance(0.2)
    assert b.try_acquire_or_renew()
    # a finds another holder on its next renewal and gives up at once.
    assert not a.renew_once()
    assert lost == ["a"] and not a.is_leader and b.is_leader


def test_expiry_ignores_remote_wall_clock(emu: Emulator, clock: FakeClock) -> None:
    a = elector(emu, clock, "a")
    assert a.try_acquire_or_renew()
    # A renewTime far in the past (skewed clock on the holder) does not make it expired:
    emu.store.patch(R.LEASES, "portico-controller",
                    {"spec": {"renewTime": "2000-01-01T00:00:00.000000Z"}}, "portico-system")
    b = elector(emu, clock, "b")
    assert not b.try_acquire_or_renew()


def test_conflict_race_is_lost_quietly(emu: Emulator, clock: FakeClock) -> None:
    a, b = elector(emu, clock, "a"), elector(emu, clock, "b")
    emu.faults.fail("POST", "/leases", 409)  # someone created it between our GET and POST
    assert not a.try_acquire_or_renew()
    assert a.try_acquire_or_renew()
    a.release()
    emu.faults.fail("PUT", "/leases/portico-controller", 409)
    assert not b.try_acquire_or_renew()
    assert b.try_acquire_or_renew()


def test_real_stale_write_gets_409(emu: Emulator, clock: FakeClock) -> None:
    a, b = elector(emu, clock, "a"), elector(emu, clock, "b")
    assert a.try_acquire_or_renew()
    a.release()
    # b read the lease, then a writes before b: b's PUT carries a stale resourceVersion.
    kube = b.client
    stale = kube.get(R.LEASES, "portico-controller", "portico-system")
    assert a.try_acquire_or_renew()
    stale["spec"]["holderIdentity"] = "b"
    from common.errors import Conflict
    with pytest.raises(Conflict):
        kube.replace(R.LEASES, "portico-controller", stale, "portico-system")


def test_renew_deadline_then_lost(emu: Emulator, clock: FakeClock) -> None:
    lost: list[str] = []
    a = elector(emu, clock, "a", lost)
    assert a.try_acquire_or_renew()
    emu.faults.fail("*", "/leases/", 500, count=1000)
    clock.advance(2)
    assert a.renew_once()  # transient failure, still inside renew_deadline (10 s)
    clock.advance(7.9)
    assert a.renew_once()
    clock.advance(0.2)
    assert not a.renew_once()
    assert lost == ["a"]
    assert not a.renew_once() and lost == ["a"]  # on_lost runs once


def test_renew_loop_thread_with_fake_clock(emu: Emulator, clock: FakeClock) -> None:
    a = elector(emu, clock, "a")
    assert a.acquire()
    first = lease(emu)["renewTime"]
    a.start_renewing()
    assert clock.wait_for_sleeps(1)
    clock.advance(2)  # one retry period
    assert clock.wait_for_sleeps(2)  # renewed, sleeping again
    assert lease(emu)["renewTime"] != first
    assert clock.slept == [2.0, 2.0]
    a.stop(release=True)
    assert lease(emu)["holderIdentity"] == ""


def test_parameters_validated(emu: Emulator, clock: FakeClock) -> None:
    kube = KubeClient.from_environment(server=emu.url)
    with pytest.raises(ValueError):
        LeaderElector(kube, "ns", "l", "me", lease_duration=5, renew_deadline=10)
    with pytest.raises(ValueError):
        LeaderElector(kube, "ns", "l", "")
