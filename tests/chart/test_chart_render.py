"""The chart lints clean with a real Helm engine, renders what the golden files hold, and its
output validates against the Kubernetes API schemas of several Kubernetes versions."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
import yaml

from tests.chart.chartkit import (
    CASES,
    CHART,
    GOLDEN_DIR,
    NAMESPACE,
    NOTES,
    documents,
    helm,
    kubernetes_validate,
    render,
    sourced_documents,
    values_for,
)

# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and recent releases whose
# schemas kubernetes-validate ships. Strict mode: unknown fields are errors too (typos).
KUBE_VERSIONS = ("1.27.0", "1.33.0", "1.35.0", "1.37.0")
# Kinds from CRDs that no Kubernetes schema bundle knows; checked structurally elsewhere
# (test_chart_policy.py: ServiceMonitors select the metrics Services).
NON_CORE_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
                  # Gateway API CRDs (vendored in charts/gateway-api-crds; checked against
                  # them in test_chart_gateway.py).
                  ("gateway.networking.k8s.io/v1", "GatewayClass")}


def _lint_findings(report: dict[str, Any]) -> list[str]:
    # Severity 1 is informational ("icon is recommended"): the chart has no hosted icon.
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_strict_is_clean(case: str) -> None:
    report = helm.lint(str(CHART), values_for(case), strict=True, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert _lint_findings(report) == []
    assert report["errors"] == []


# Lint checks templates against the API versions (and deprecations) of a given Kubernetes.
@pytest.mark.parametrize("kube_version", ["v1.27.0", "v1.37.0"])
def test_helm_lint_accepts_supported_kubernetes_versions(kube_version: str) -> None:
    report = helm.lint(str(CHART), {}, strict=True, kube_version=kube_version)
    assert _lint_findings(report) == []


# The speakers' heartbeat key is random at every render without a cluster to `lookup` the
# kept one in (randAlphaNum): the golden files hold a placeholder in its place.
SPEAKER_SECRET = "portico/templates/speaker-secret.yaml"
_GENERATED_KEY = re.compile(r"^(  keys: )[A-Za-z0-9+/=]+$", re.MULTILINE)


def _golden_text(case: str) -> str:
    parts = []
    for path, text in sorted(render(case).items()):
        if path == SPEAKER_SECRET:
            text = _GENERATED_KEY.sub(r"\1<generated>", text)
        if path != NOTES:
            parts.append(f"---\n# Source: {path}\n{text.strip()}\n")
    return "".join(parts)


@pytest.mark.parametrize("case", CASES)
def test_rendered_output_matches_golden(case: str) -> None:
    golden = GOLDEN_DIR / f"{case}.yaml"
    notes_golden = GOLDEN_DIR / f"{case}.NOTES.txt"
    text, notes = _golden_text(case), render(case).get(NOTES, "")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
        notes_golden.write_text(notes)
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"render differs from {golden} (UPDATE_GOLDEN=1)"
    assert notes == notes_golden.read_text()


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_rendered_objects_validate_against_kubernetes_schemas(case: str,
                                                              kube_version: str) -> None:
    checked = 0
    for path, doc in sourced_documents(case):
        if (doc["apiVersion"], doc["kind"]) in NON_CORE_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path}: {doc['kind']} {doc['metadata']['name']} is invalid for "
                        f"Kubernetes {kube_version}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 2, "suspiciously few objects rendered"


def test_validation_really_rejects_a_broken_object() -> None:
    """Guards the test above: a misspelt field must fail strict validation."""
    deployment = next(d for d in documents("default") if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[-1], strict=True)


def test_every_rendered_object_is_in_the_release_namespace_or_cluster_scoped() -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "IngressClass", "GatewayClass"}
    for doc in documents("default"):
        meta = doc["metadata"]
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in meta, doc["kind"]
        else:
            assert meta.get("namespace") == NAMESPACE, f"{doc['kind']} {meta['name']}"


def test_object_names_are_unique_per_kind() -> None:
    for case in CASES:
        seen = set()
        for doc in documents(case):
            key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
            assert key not in seen, f"{case}: duplicate {key}"
            seen.add(key)


# --- values.schema.json ---------------------------------------------------------------------

def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["definitions"][name]
    return node


def _leaves(values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        out = []
        for key, value in values.items():
            out += _leaves(value, (*path, key))
        return out
    return [path]


def test_schema_describes_every_value_in_values_yaml() -> None:
    schema = _schema()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for leaf in _leaves(values):
        node: dict[str, Any] = schema
        for key in leaf:
            node = _resolve(schema, node)
            props = node.get("properties", {})
            if key in props:
                node = props[key]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]  # free-form maps (labels, resources ...)
            else:
                pytest.fail(f"values.schema.json does not describe {'.'.join(leaf)}")
        assert _resolve(schema, node), ".".join(leaf)


def _closed_objects(schema: dict[str, Any], node: dict[str, Any], path: str) -> list[str]:
    """Paths of schema objects with declared properties that still accept unknown keys."""
    node = _resolve(schema, node)
    out = []
    if ("properties" in node and node.get("additionalProperties") is not False
            and node.get("type") == "object"):
        out.append(path)
    for key, child in node.get("properties", {}).items():
        out += _closed_objects(schema, child, f"{path}.{key}" if path else key)
    return out


def test_schema_rejects_unknown_keys_everywhere() -> None:
    schema = _schema()
    assert _closed_objects(schema, schema, "") == []


@pytest.mark.parametrize("bad,where", [
    ({"controllr": {}}, "controllr"),
    ({"controller": {"replicas": 0}}, "/controller/replicas"),
    ({"ingress": {"kind": "StatefulSet"}}, "/ingress/kind"),
    ({"ingress": {"service": {"externalTrafficPolicy": "Everywhere"}}}, "externalTrafficPolicy"),
    ({"speaker": {"livenessPort": 70000}}, "/speaker/livenessPort"),
    ({"logLevel": "verbose"}, "/logLevel"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"controller": {"extraArgs": ["--x=1\nrm -rf /"]}}, "/controller/extraArgs"),
    ({"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval"),
])
def test_schema_rejects_bad_values_naming_the_field(bad: dict[str, Any], where: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(bad)
    assert where in str(info.value)


@pytest.mark.parametrize("case", CASES)
def test_test_value_files_pass_the_schema(case: str) -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values_for(case))
