"""Renders charts/portico with a real Helm engine (Helm's Go SDK through helm-python-sdk's
ctypes binding, the same code `helm template` runs) and hands the tests plain data."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

# Dev dependencies (pyproject.toml): a missing one is an install error, not a skip.
import helm_python as helm
import kubernetes_validate  # noqa: F401  (the chart tests take it from here)
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "portico"
VALUES_DIR = Path(__file__).resolve().parent / "values"
GOLDEN_DIR = ROOT / "tests" / "golden" / "chart"
RELEASE = "portico"
NAMESPACE = "portico-system"
NOTES = "portico/templates/NOTES.txt"

# Value sets rendered by every test: the defaults, every option on, every switch off, and the
# Gateway API on (gateway.yaml: it cannot join all-options, which scopes the ingress RBAC).
CASES = ("default", "all-options", "alternatives", "components-off", "gateway")


def values_for(case: str) -> dict[str, Any]:
    if case == "default":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((VALUES_DIR / f"{case}.yaml").read_text())
    return loaded


@functools.cache
def render(case: str) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print it (empty ones dropped)."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(
            values_for(case), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path: text for path, text in rendered.items() if text.strip()}


@functools.cache
def _documents(case: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    out = []
    for path, text in sorted(render(case).items()):
        if path == NOTES:
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return tuple(out)


def documents(case: str) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt excluded)."""
    return [doc for _, doc in _documents(case)]


def sourced_documents(case: str) -> list[tuple[str, dict[str, Any]]]:
    return list(_documents(case))


def by_kind(case: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents(case) if doc["kind"] == kind]


def one(case: str, kind: str, name_suffix: str) -> dict[str, Any]:
    found = [d for d in by_kind(case, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{case}: expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob", "Pod")


def workloads(case: str) -> list[dict[str, Any]]:
    return [d for d in documents(case) if d["kind"] in WORKLOAD_KINDS]


# The Gateway API v1.6.3 Standard-channel CRDs, vendored unchanged as a subchart whose crds/
# Helm installs only when gateway.installCRDs is true (its condition in Chart.yaml).
GATEWAY_CRD_DIR = CHART / "charts" / "gateway-api-crds" / "crds"


def gateway_crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(GATEWAY_CRD_DIR.glob("*.yaml"))]


def crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions Helm installs from crds/ (not templated)."""
    out = []
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                out.append(doc)
    return out


def _strict(schema: Any) -> Any:
    """A copy of a CRD's OpenAPI schema that rejects unknown fields. The API server would
    prune them silently, which hides typos in examples: the tests want to see them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_problems(doc: dict[str, Any]) -> list[str] | None:
    """Validation errors of a custom resource against its CRD in crds/ or the vendored
    Gateway API CRDs (None: no such CRD)."""
    import jsonschema

    group, _, version = doc.get("apiVersion", "").rpartition("/")
    for crd in [*crds(), *gateway_crds()]:
        if crd["spec"]["group"] != group or crd["spec"]["names"]["kind"] != doc.get("kind"):
            continue
        for served in crd["spec"]["versions"]:
            if served["name"] != version:
                continue
            schema = _strict(served["schema"]["openAPIV3Schema"])
            # apiVersion/kind/metadata are checked by the API server itself.
            schema.setdefault("properties", {}).update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                 "metadata": {"type": "object"}})
            validator = jsonschema.Draft7Validator(schema)
            return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"
                    for e in validator.iter_errors(doc)]
    return None
