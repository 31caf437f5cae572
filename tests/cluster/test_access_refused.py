"""A component whose RBAC does not let it list what it watches tells the user, once.

The controller runs as a user the real kube-apiserver knows but grants nothing except
creating Events in its own namespace (as a ClusterRole edited by hand might leave it). Its
informers keep retrying with backoff - a fixed ClusterRole takes effect without a restart -
but each refused list is reported once, as a Warning Event ``AccessRefused`` on the
component's own Pod (downward API ``POD_NAME``/``POD_NAMESPACE``), not once per retry.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.kube import resources as R
from common.kube.client import KubeClient
from lab.controlplane.cluster import ControlPlane, free_port
from lab.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
WATCHED = ("services", "ipaddresspools.lb.portico.dev", "namespaces")


@pytest.fixture
def refused_controller(control_plane: ControlPlane, admin_client: KubeClient, crds: list[str],
                       tmp_path: Path) -> Iterator[tuple[str, str]]:
    ns, user = f"refused-{uuid.uuid4().hex[:6]}", f"refused-controller-{uuid.uuid4().hex[:6]}"
    admin_client.create(R.NAMESPACES, {"metadata": {"name": ns}})
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    control_plane.api("POST", f"{rbac}/namespaces/{ns}/roles", {
        "metadata": {"name": "events"},
        "rules": [{"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
                   "verbs": ["create", "patch", "update"]}]})
    control_plane.api("POST", f"{rbac}/namespaces/{ns}/rolebindings", {
        "metadata": {"name": "events"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "events"},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    kubeconfig = control_plane.user_kubeconfig(tmp_path / "kubeconfig", user)
    log = (tmp_path / "controller.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "portico", "controller", "--kubeconfig", str(kubeconfig),
         "--no-leader-elect", "--metrics-addr", f"127.0.0.1:{free_port()}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "POD_NAME": "portico-controller-x1",
             "POD_NAMESPACE": ns})
    try:
        yield ns, "portico-controller-x1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        admin_client.delete(R.NAMESPACES, ns)


def _refusals(admin: KubeClient, ns: str, pod: str) -> list[dict[str, Any]]:
    events, _ = admin.list(R.EVENTS, ns)
    return [e for e in events if e.get("reason") == "AccessRefused"
            and (e.get("involvedObject") or {}).get("name") == pod]


def test_refused_lists_become_one_event_each_on_the_components_pod(
        refused_controller: tuple[str, str], admin_client: KubeClient) -> None:
    ns, pod = refused_controller
    events = wait_until(lambda: (e := _refusals(admin_client, ns, pod)) and len(e) >= 3 and e,
                        30, what="an AccessRefused Event per watched resource")
    for resource in WATCHED:
        ev = [e for e in events if f"list/watch {resource} with HTTP 403" in e["message"]]
        assert len(ev) == 1, (resource, [e["message"] for e in events])
        assert ev[0]["type"] == "Warning"
        assert ev[0]["involvedObject"]["kind"] == "Pod"
    # The informers keep retrying (backoff 0.5 s doubling): several more refusals happen in
    # the next seconds, and none of them is reported again.
    time.sleep(4.0)
    again = _refusals(admin_client, ns, pod)
    assert len(again) == len(events)
    assert all(int(e.get("count") or 1) == 1 and not e.get("series") for e in again), again
