"""Fixtures for lab tests: a namespace lab with the real controller and speakers.

Lab tests need root and ``ip netns``; without them they skip with the reason. The lab is
module-scoped (building it and starting the speakers costs a few seconds) and torn down even
when a test fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from lab import netns
from lab.topology import Lab


def lab_skip_reason() -> str | None:
    return netns.available()


@contextlib.contextmanager
def started_l2lab(pools: dict[str, list[str]], l2_pools: list[str],
                  speaker_args: tuple[str, ...] = ()) -> Iterator[Lab]:
    """A 3-node lab (the controller unless PORTICO_LAB_CONTROLLER=0) with ``pools``, an
    L2Advertisement ``seg-a`` of ``l2_pools`` and live speakers; skips without netns."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    controller = os.environ.get("PORTICO_LAB_CONTROLLER", "1") != "0"
    with Lab(nodes_count=3, start_controller=controller, speaker_args=speaker_args) as lab:
        for name, cidrs in pools.items():
            lab.add_pool(name, cidrs)
        lab.add_l2("seg-a", ipAddressPools=l2_pools)
        lab.start_speakers()
        lab.wait_speakers_live()
        yield lab


@pytest.fixture(scope="module")
def l2lab() -> Iterator[Lab]:
    with started_l2lab({"a4": ["192.0.2.192/27"], "a6": ["2001:db8:a::1:0/112"],
                        "b4": ["198.51.100.192/27"]}, ["a4", "a6"]) as lab:
        yield lab
