from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.ingress_kit import HAPROXY, WRK, Backend, Harness, harness, start_backend


def require(binary: str, found: str | None) -> str:
    """The path of a program these tests run. A missing one fails the test, never skips it:
    a skip would report a broken environment as a pass."""
    if found is None:
        pytest.fail(f"{binary} not found on PATH: these tests run the real {binary}; "
                    "scripts/install-deps.sh installs it", pytrace=False)
    return found


def need_haproxy() -> str:
    return require("haproxy", HAPROXY)


def need_wrk() -> str:
    return require("wrk", WRK)


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
    need_haproxy()
    with harness(tmp_path / "state") as h:
        yield h
