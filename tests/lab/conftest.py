"""Fixtures for lab tests: a namespace lab with the real controller and speakers.

Lab tests need root and ``ip netns``; without them they skip with the reason. The lab is
module-scoped (building it and starting the speakers costs a few seconds) and torn down even
when a test fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab import netns
from lab.topology import Lab


def lab_skip_reason() -> str | None:
    return netns.available()


@pytest.fixture(scope="module")
def l2lab() -> Iterator[Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    controller = os.environ.get("PORTICO_LAB_CONTROLLER", "1") != "0"
    with Lab(nodes_count=3, start_controller=controller) as lab:
        lab.add_pool("a4", ["192.0.2.192/27"])
        lab.add_pool("a6", ["2001:db8:a::1:0/112"])
        lab.add_pool("b4", ["198.51.100.192/27"])
        lab.add_l2("seg-a", ipAddressPools=["a4", "a6"])
        lab.start_speakers()
        lab.wait_speakers_live()
        yield lab
