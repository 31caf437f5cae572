"""kind e2e suite: runs only inside kind/run-e2e.sh on a machine with a Docker engine.

Everywhere else every test here is skipped, reported as one summary line saying why (this
machine has a Docker client but no engine, so that is what happens here).
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from collections.abc import Generator, Iterator

import pytest

from tests.e2e.kit import Client, Cluster


def _why_unusable() -> str | None:
    problems = []
    if shutil.which("docker") is None:
        problems.append("docker not installed")
    else:
        try:
            info = subprocess.run(["docker", "info"], capture_output=True, timeout=30,
                                  check=False)
            if info.returncode != 0:
                problems.append("`docker info` failed (no running Docker engine)")
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"`docker info` failed ({exc})")
    missing = [tool for tool in ("kind", "kubectl", "helm") if shutil.which(tool) is None]
    if missing:
        problems.append(f"{', '.join(missing)} not installed")
    if problems:
        return "e2e skipped: " + "; ".join(problems)
    if not os.environ.get("PORTICO_E2E_KUBECONFIG"):
        return "e2e skipped: no cluster; run kind/run-e2e.sh (it creates one and runs this suite)"
    return None


_REASON = _why_unusable()
# The summary line points at the function that decided (pytest prints the number as given).
_REASON_LINE = inspect.getsourcelines(_why_unusable)[1]




@pytest.fixture(scope="session", autouse=True)
def _e2e_environment() -> None:
    if _REASON is not None:
        pytest.skip(_REASON)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # pytest reports a skip at each test's own location, one summary line per test; pointing
    # them all at this file folds the whole suite into one line.
    report = yield
    if _REASON is not None and report.skipped and isinstance(report.longrepr, tuple):
        report.longrepr = (__file__, _REASON_LINE, f"Skipped: {_REASON}")
    return report


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    env = os.environ
    return Cluster(
        kubeconfig=env["PORTICO_E2E_KUBECONFIG"],
        name=env.get("PORTICO_E2E_CLUSTER", "portico-e2e"),
        namespace=env.get("PORTICO_E2E_NAMESPACE", "portico-system"),
        release=env.get("PORTICO_E2E_RELEASE", "portico"),
        image=env.get("PORTICO_E2E_IMAGE", "portico:e2e"),
    )


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Iterator[Client]:
    c = Client(cluster.image)
    try:
        yield c
    finally:
        c.close()
