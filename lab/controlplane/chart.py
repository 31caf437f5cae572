"""Portico's chart with the real Helm CLI, and its objects on a real control plane.

One place for what the Helm tests, the RBAC tests and the benchmarks share: Helm run with its
own isolated homes (nothing of the caller's Helm configuration leaks in), ``helm template``
of ``charts/portico``, and the REST collection each rendered RBAC-side object is created in.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lab.controlplane import binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "portico"
HELM_TIMEOUT_S = 120.0  # one helm command; none waits for pods

# The kinds the chart's identity part consists of (ServiceAccounts, RBAC, the IngressClass),
# and the collection each is created in.
IDENTITY_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "IngressClass": "/apis/networking.k8s.io/v1/ingressclasses",
}


class ChartError(Exception):
    """A helm command failed; the message carries its stderr."""


def helm_env(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """Helm's environment, isolated: HOME and every XDG/Helm directory below ``home``,
    ``kubeconfig`` if given, PATH, and nothing else from the caller."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_DATA_HOME", "data"), ("HELM_CACHE_HOME", "cache/helm"),
                     ("HELM_CONFIG_HOME", "config/helm"), ("HELM_DATA_HOME", "data/helm")):
        env[var] = str(home / sub)
    return env


def helm_template(release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    """The chart's objects as ``helm template`` renders them (``args``: --set and friends)."""
    with tempfile.TemporaryDirectory(prefix="portico-helm-") as home:
        out = subprocess.run(
            [str(binaries.binary("helm")), "template", release, str(CHART),
             "--namespace", namespace, *args],
            capture_output=True, text=True, env=helm_env(Path(home)), timeout=HELM_TIMEOUT_S,
            check=False)
    if out.returncode != 0:
        raise ChartError(f"helm template failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def identity_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in IDENTITY_PATHS]


def collection_path(obj: dict[str, Any], namespace: str) -> str:
    """The REST collection of an identity object (``namespace`` unless it names one)."""
    return IDENTITY_PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace", namespace))
