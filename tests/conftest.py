"""Session-wide fixtures: one real Kubernetes control plane per pytest session.

The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler; built by
``make binaries``) starts on first use and stops at the end of the session; its logs are kept
(and their directory printed) when any test failed. A missing binary is an error, never a
skip: these tests must run wherever the suite runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab.controlplane.cluster import ControlPlane
from lab.controlplane.store import ApiStore
from lb.kube.client import KubeClient

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "charts" / "portico" / "crds"
# The lab's api namespace address (lab.topology.MGMT4 + ".1"): lab nodes reach the session's
# control plane through a relay listening there, so the serving certificate names it too.
LAB_API_ADDRESS = "203.0.113.1"


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    cp = ControlPlane(extra_sans=(LAB_API_ADDRESS,)).start()
    try:
        yield cp
    finally:
        cp.keep_logs = request.session.testsfailed > 0
        cp.stop()


@pytest.fixture(scope="session")
def admin_client(control_plane: ControlPlane) -> KubeClient:
    return KubeClient.from_environment(kubeconfig=str(control_plane.kubeconfig))


@pytest.fixture(scope="session")
def api(admin_client: KubeClient) -> ApiStore:
    """Admin access to the real server with the emulator store's call shapes."""
    return ApiStore(admin_client)


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> list[str]:
    """Portico's CRDs applied to the real server and Established; returns their names."""
    names = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names.append(crd["metadata"]["name"])
        control_plane.apply_crd(crd)
    for name in names:
        control_plane.wait_crd_established(name)
    return names
