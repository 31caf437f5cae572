from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.ingress_kit import HAPROXY, Backend, Harness, harness, start_backend


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    """Three named Python HTTP backends (threads in this process) plus a default one."""
    made = {n: start_backend(n) for n in ("A", "B", "C", "D")}
    try:
        yield made
    finally:
        for b in made.values():
            b.stop()


@pytest.fixture
def hx(tmp_path: Path) -> Iterator[Harness]:
    if HAPROXY is None:
        pytest.skip("haproxy binary not installed")
    with harness(tmp_path / "state") as h:
        yield h
