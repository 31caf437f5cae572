"""Gateway API in the chart: the values that turn it on, the GatewayClass, the RBAC of the
Gateway controller (in the ingress pods), and the vendored Standard-channel CRDs."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.controlplane import binaries
from lab.controlplane.chart import helm_env
from tests.chart.chartkit import (
    CASES,
    CHART,
    GATEWAY_CRD_DIR,
    NAMESPACE,
    by_kind,
    containers,
    crd_problems,
    gateway_crds,
    one,
)

GROUP = "gateway.networking.k8s.io"
CONTROLLER_NAME = "portico.dev/gateway-controller"
# What the controller reads (Standard channel v1.6.3: TLSRoute, TCPRoute and ListenerSet are
# standard there) and whose status it writes (ReferenceGrant has no status).
READ = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "tcproutes",
        "referencegrants", "listenersets", "backendtlspolicies")
STATUS = tuple(f"{r}/status" for r in READ if r != "referencegrants")
# The vendored set: config/crd/standard of sigs.k8s.io/gateway-api v1.6.3, CRDs only.
STANDARD_KINDS = {"GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant",
                  "TLSRoute", "TCPRoute", "UDPRoute", "ListenerSet", "BackendTLSPolicy"}


def _gateway_rules(case: str) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for doc in [*by_kind(case, "ClusterRole"), *by_kind(case, "Role")]:
        if doc["metadata"]["name"].endswith("-gateway"):
            for rule in doc["rules"]:
                out.append((doc["kind"], doc["metadata"].get("namespace", ""), rule))
    return out


def _verbs(case: str, kind: str, group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for k, _, rule in _gateway_rules(case):
        if k == kind and group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def _ingress_args(case: str) -> list[str]:
    """The ingress container's args (Deployment or DaemonSet; [] when there is none)."""
    for kind in ("Deployment", "DaemonSet"):
        for w in by_kind(case, kind):
            if w["metadata"]["name"].endswith("-ingress"):
                args: list[str] = containers(w)[0]["args"]
                return args
    return []


@pytest.mark.parametrize("case", [c for c in CASES if c != "gateway"])
def test_off_by_default_and_elsewhere(case: str) -> None:
    assert not by_kind(case, "GatewayClass")
    assert not _gateway_rules(case)
    assert not any(a.startswith("--gateway-controller-name") for a in _ingress_args(case))


def test_gateway_class_and_controller_flag() -> None:
    [gc] = by_kind("gateway", "GatewayClass")
    assert gc["metadata"]["name"] == "portico"
    assert gc["spec"]["controllerName"] == CONTROLLER_NAME
    assert f"--gateway-controller-name={CONTROLLER_NAME}" in _ingress_args("gateway")


def test_gateway_class_is_valid_for_the_vendored_crd() -> None:
    """The rendered GatewayClass against the v1 schema of the vendored CRD (unknown fields
    refused too); CEL rules and server-side defaults are left to the real server (the
    conformance runner installs the chart)."""
    [gc] = by_kind("gateway", "GatewayClass")
    assert crd_problems(gc) == []


def test_controller_rbac_reads_everything_and_writes_only_status() -> None:
    for resource in READ:
        assert _verbs("gateway", "ClusterRole", GROUP, resource) == {"get", "list", "watch"}
    for resource in STATUS:
        assert _verbs("gateway", "ClusterRole", GROUP, resource) == {"update", "patch"}
    assert _verbs("gateway", "ClusterRole", "", "namespaces") == {"get", "list", "watch"}
    for kind, ns, rule in _gateway_rules("gateway"):
        writes = set(rule["verbs"]) - {"get", "list", "watch"}
        if not writes:
            continue
        if kind == "Role":  # the per-Gateway LoadBalancer Services, in the release namespace
            assert (ns, rule["apiGroups"], rule["resources"]) == (NAMESPACE, [""], ["services"])
            assert writes == {"create", "update", "patch", "delete"}
        else:
            assert all(r.endswith("/status") for r in rule["resources"]), rule


def test_gateway_rbac_is_bound_to_the_ingress_service_account() -> None:
    sa = one("gateway", "Deployment", "-ingress")["spec"]["template"]["spec"][
        "serviceAccountName"]
    bindings = [b for b in [*by_kind("gateway", "ClusterRoleBinding"),
                            *by_kind("gateway", "RoleBinding")]
                if b["metadata"]["name"].endswith("-gateway")]
    assert len(bindings) == 2
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]


def test_vendored_crds_are_v1_6_3_standard_channel() -> None:
    docs = gateway_crds()
    assert {d["spec"]["names"]["kind"] for d in docs} == STANDARD_KINDS
    for d in docs:
        assert d["kind"] == "CustomResourceDefinition"
        assert d["spec"]["group"] == GROUP
        ann = d["metadata"]["annotations"]
        assert ann["gateway.networking.k8s.io/bundle-version"] == "v1.6.3"
        assert ann["gateway.networking.k8s.io/channel"] == "standard"


def test_vendored_crds_are_the_modules_bytes() -> None:
    """Unchanged copies of the module's config/crd/standard (as `make binaries` caches it)."""
    cached = {p.name: p.read_bytes() for p in binaries.gateway_api_crds()
              if "vap_" not in p.name}  # the ValidatingAdmissionPolicy is not a CRD
    vendored = {p.name: p.read_bytes() for p in GATEWAY_CRD_DIR.glob("*.yaml")}
    assert vendored == cached


def _helm_template(*sets: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="portico-helm-") as home:
        out = subprocess.run([str(binaries.binary("helm")), "template", "portico", str(CHART),
                              "--namespace", NAMESPACE, "--include-crds",
                              *[f"--set={s}" for s in sets]],
                             capture_output=True, text=True, env=helm_env(Path(home)),
                             timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_crds_are_installed_only_when_asked() -> None:
    """A disabled subchart's crds/ are not installed (the real Helm CLI)."""
    def gateway_crd_kinds(docs: list[dict[str, Any]]) -> set[str]:
        return {d["spec"]["names"]["kind"] for d in docs
                if d["kind"] == "CustomResourceDefinition" and d["spec"]["group"] == GROUP}

    assert gateway_crd_kinds(_helm_template()) == set()
    assert gateway_crd_kinds(_helm_template("gateway.enabled=true")) == set()
    assert gateway_crd_kinds(_helm_template("gateway.installCRDs=true")) == STANDARD_KINDS


@pytest.mark.parametrize(("sets", "message"), [
    (("gateway.enabled=true", "ingress.enabled=false"), "needs ingress.enabled"),
    (("gateway.enabled=true", "ingress.watchNamespace=apps"), "needs ingress.watchNamespace"),
])
def test_impossible_combinations_are_refused(sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as exc:
        _helm_template(*sets)
    assert message in exc.value.stderr
