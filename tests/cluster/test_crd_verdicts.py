"""Every CRD example, good and bad, sent to the real kube-apiserver: its verdict must equal
the offline checks' (jsonschema + CEL in tests/unit/test_crds.py), so the two never drift.

Requests are dry runs (``dryRun=All``) with strict field validation (kubectl's default), so
nothing is stored and unknown fields are errors as they are for a user's ``kubectl apply``.
"""

from __future__ import annotations

import copy
import json
import urllib.error
from typing import Any

import pytest

from lab.controlplane.cluster import ControlPlane
from tests.unit.test_crds import BAD, GOOD, _doc_blocks, _obj, _schema, api_server_errors
from tests.unit.test_crds import apply_defaults as offline_defaults

PLURALS = {"IPAddressPool": "ipaddresspools", "L2Advertisement": "l2advertisements",
           "BGPPeer": "bgppeers", "BGPAdvertisement": "bgpadvertisements"}


def server_verdict(cp: ControlPlane, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a dry-run create of ``obj``."""
    path = (f"/apis/lb.portico.dev/v1alpha1/{PLURALS[obj['kind']]}"
            "?dryRun=All&fieldValidation=Strict")
    try:
        return 201, cp.api("POST", path, obj)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.parametrize(("kind", "spec"), GOOD, ids=[f"{k}-{i}" for i, (k, _) in
                                                       enumerate(GOOD)])
def test_good_examples_server_accepts_and_defaults_like_offline(
        control_plane: ControlPlane, crds: list[str], kind: str,
        spec: dict[str, Any] | None) -> None:
    obj = _obj(kind, spec, name=f"good-{kind.lower()}")
    assert api_server_errors(kind, obj) == []
    code, body = server_verdict(control_plane, obj)
    assert code == 201, body.get("message")
    # The server's defaulting equals the offline one, field for field.
    expected = offline_defaults(_schema(kind), copy.deepcopy(obj))
    assert body.get("spec") == expected.get("spec")


@pytest.mark.parametrize(("kind", "spec", "fragment", "reason"), BAD,
                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(BAD)])
def test_bad_examples_server_rejects_like_offline(
        control_plane: ControlPlane, crds: list[str], kind: str,
        spec: dict[str, Any] | None, fragment: str, reason: str | None) -> None:
    obj = _obj(kind, spec, name=f"bad-{kind.lower()}")
    assert api_server_errors(kind, obj), "offline checks accept it"
    code, body = server_verdict(control_plane, obj)
    assert code in (400, 422), f"the real server accepted it ({code})"
    assert body.get("reason") in ("Invalid", "BadRequest"), body


def _path(obj: dict[str, Any]) -> str:
    if obj["kind"] == "Service":
        return f"/api/v1/namespaces/{obj['metadata'].get('namespace', 'default')}/services"
    return f"/apis/lb.portico.dev/v1alpha1/{PLURALS[obj['kind']]}"


@pytest.mark.parametrize(("where", "obj"), _doc_blocks(), ids=[w for w, _ in _doc_blocks()])
def test_doc_examples_are_accepted_status_included(
        control_plane: ControlPlane, crds: list[str], where: str, obj: dict[str, Any]) -> None:
    """Each documented object (and the documented status, written through the status
    subresource as the controller would) is accepted by the real server."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = f"doc-{where.split('.')[0]}-{where.split('#')[1]}"
    if obj["kind"] == "Service":
        obj["metadata"]["namespace"] = "default"
    status = obj.pop("status", None)
    created = _call(control_plane, "POST", _path(obj) + "?fieldValidation=Strict", obj)
    name = created["metadata"]["name"]
    try:
        if status is not None:
            _call(control_plane, "PATCH", f"{_path(obj)}/{name}/status", {"status": status},
                  content_type="application/merge-patch+json")
    finally:
        control_plane.api("DELETE", f"{_path(obj)}/{name}")


def _call(cp: ControlPlane, method: str, path: str, body: Any, **kw: Any) -> Any:
    try:
        return cp.api(method, path, body, **kw)
    except urllib.error.HTTPError as exc:
        pytest.fail(f"{method} {path}: {exc.code} {json.loads(exc.read() or b'{}')}")
