"""Fixtures shared by the lb/kube and emulator unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.emulator import Emulator
from lab.fakeclock import FakeClock


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fresh API emulator; bookmarks every 0.2 s so watch-resume tests need not wait."""
    e = Emulator(bookmark_interval=0.2).start()
    yield e
    e.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
