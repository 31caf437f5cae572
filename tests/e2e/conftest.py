"""The e2e suite, on one of two runners:

- kind: inside kind/run-e2e.sh (``PORTICO_E2E_KUBECONFIG`` set) on a machine with a Docker
  engine, exactly as before;
- otherwise the lab cluster (tests/e2e/lab_backend.py) when running as root: one
  ``lab.labcluster.LabCluster`` per session on the session's control plane, Portico installed
  by ``helm install``.

When neither can run (not root and no kind cluster) every test here is skipped, reported as
one summary line saying why.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from tests.e2e import lab_backend
from tests.e2e.kit import Client, Cluster, KindRouter, Machines, Router

# kind when run-e2e.sh made a cluster, else the lab cluster.
BACKEND = "kind" if os.environ.get("PORTICO_E2E_KUBECONFIG") else "lab"


def _why_unusable() -> str | None:
    if BACKEND == "lab":
        return lab_backend.why_unusable()
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
if BACKEND == "lab" and _REASON is None:
    # What run-e2e.sh exports for kind, the lab cluster's values (its pools' names/ranges);
    # before the test modules are imported (some read them at import).
    for _key, _value in lab_backend.ENVIRONMENT.items():
        os.environ.setdefault(_key, _value)
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


@pytest.fixture(scope="package")
def lab_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The lab cluster (lab runner only), on the session's control plane. Package scope: it
    is gone before tests outside tests/e2e run, whose labs reuse node names (node1, ...)."""
    from lab.labcluster import LabCluster

    if BACKEND != "lab":
        raise RuntimeError("lab_cluster is the lab runner's fixture")
    cp = request.getfixturevalue("control_plane")
    with LabCluster(control_plane=cp,
                    keep_logs=lambda: request.session.testsfailed > 0) as lc:
        lab_backend.print_figures(lc)
        yield lc


@pytest.fixture(scope="package")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    if BACKEND == "lab":
        return lab_backend.cluster_of(request.getfixturevalue("lab_cluster"))
    env = os.environ
    return Cluster(
        kubeconfig=env["PORTICO_E2E_KUBECONFIG"],
        name=env.get("PORTICO_E2E_CLUSTER", "portico-e2e"),
        namespace=env.get("PORTICO_E2E_NAMESPACE", "portico-system"),
        release=env.get("PORTICO_E2E_RELEASE", "portico"),
        image=env.get("PORTICO_E2E_IMAGE", "portico:e2e"),
    )


@pytest.fixture(scope="package")
def client(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Client]:
    if BACKEND == "lab":
        c: Client = lab_backend.LabClient(request.getfixturevalue("lab_cluster").lab)
    else:
        c = Client(cluster.image)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="package")
def machines(cluster: Cluster, request: pytest.FixtureRequest) -> Machines:
    """The nodes as machines: ``mac(node)``, ``stop(node)`` (sudden death), ``start(node)``."""
    if BACKEND == "lab":
        return lab_backend.LabMachines(request.getfixturevalue("lab_cluster").lab)
    return Machines()


@pytest.fixture(scope="module")
def bgp_routers(cluster: Cluster, request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[int, int], Router]]:
    """``start(router_asn, node_asn)``: a BGP router (FRR) peering with every node; the
    routers are stopped at the end of the module."""
    started: list[Router] = []

    def start(router_asn: int, node_asn: int) -> Router:
        router: Router
        if BACKEND == "lab":
            router = lab_backend.LabRouter(request.getfixturevalue("lab_cluster").lab,
                                           router_asn, node_asn)
        else:
            image = os.environ.get("PORTICO_E2E_FRR_IMAGE", "quay.io/frrouting/frr:9.1.0")
            router = KindRouter(cluster, tmp_path_factory.mktemp("frr"), router_asn,
                                node_asn, image)
        started.append(router)
        return router

    try:
        yield start
    finally:
        for router in reversed(started):
            router.close()
