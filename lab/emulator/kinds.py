"""The kinds the emulator serves, and how: its own table, not the product's.

The emulator stands in for the API server in the fault tests, so its semantics must not come
from the code under test (a wrong flag in the product's resource table would then agree with
itself). Built-in kinds are written out here from the Kubernetes API reference (scope, status
subresource); Portico's kinds are read from the chart's CRD files, which the real API server
also serves (tests/cluster checks those against kube-apiserver).

``Resource`` is only the key type callers address objects with; equal fields, equal key.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from common.kube.resources import Resource

CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "portico" / "crds"

# (group, version, plural, kind, namespaced, status subresource) as kube-apiserver v1.37
# serves them (`kubectl api-resources`; status per the kind's REST storage).
BUILT_IN: tuple[tuple[str, str, str, str, bool, bool], ...] = (
    ("", "v1", "services", "Service", True, True),
    ("", "v1", "nodes", "Node", False, True),
    ("", "v1", "namespaces", "Namespace", False, True),
    ("", "v1", "secrets", "Secret", True, False),
    ("", "v1", "configmaps", "ConfigMap", True, False),
    ("", "v1", "events", "Event", True, False),
    ("", "v1", "pods", "Pod", True, True),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, False),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, False),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", True, True),
    ("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False, False),
)


def from_crd(crd: dict[str, object]) -> list[Resource]:
    """One Resource per served version of a CustomResourceDefinition."""
    spec = crd["spec"]
    assert isinstance(spec, dict)
    names = spec["names"]
    out = []
    for v in spec["versions"]:
        if v.get("served", True):
            out.append(Resource(spec["group"], v["name"], names["plural"], names["kind"],
                                spec["scope"] == "Namespaced",
                                "status" in (v.get("subresources") or {})))
    return out


def served() -> tuple[Resource, ...]:
    """Every kind the emulator serves by default."""
    kinds = [Resource(*row) for row in BUILT_IN]
    for path in sorted(CRD_DIR.glob("*.yaml")):
        kinds += from_crd(yaml.safe_load(path.read_text()))
    return tuple(kinds)
