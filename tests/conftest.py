"""Session-wide fixtures: one real Kubernetes control plane per pytest session.

The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler; built by
``make binaries``) starts on first use and stops at the end of the session; its logs are kept
(and their directory printed) when any test failed. A missing binary is an error, never a
skip: these tests must run wherever the suite runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.kube.client import KubeClient
from lab.controlplane.cluster import ControlPlane, running
from lab.controlplane.store import ApiStore

# The lab's api namespace address (lab.topology.MGMT4 + ".1"): lab nodes reach the session's
# control plane through a relay listening there, so the serving certificate names it too.
LAB_API_ADDRESS = "203.0.113.1"


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    # CRDs only on request (the ``crds`` fixture): the Helm test installs them itself.
    with running(lambda: request.session.testsfailed > 0, crds=False,
                 extra_sans=(LAB_API_ADDRESS,)) as cp:
        yield cp


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
    return control_plane.install_portico_crds()
