"""The resource tables agree with the real API server's discovery: the product's
(``common.kube.resources``), which decides paths and status writes, and the emulator's own
(``lab.emulator.kinds``), which the fault tests trust. Scope and status subresource of every
kind come from kube-apiserver itself, so neither table can be wrong in agreement with the
other.
"""

from __future__ import annotations

import pytest

from common.kube.resources import ALL, Resource
from lab.controlplane.cluster import ControlPlane
from lab.emulator.kinds import served


def _discovered(cp: ControlPlane, res: Resource) -> tuple[bool, bool]:
    listing = cp.api("GET", res.prefix)
    names = {r["name"]: r for r in listing["resources"]}
    assert res.plural in names, f"{res} is not served by kube-apiserver at {res.prefix}"
    assert names[res.plural]["kind"] == res.kind
    return bool(names[res.plural]["namespaced"]), f"{res.plural}/status" in names


@pytest.mark.parametrize("table", ["product", "emulator"])
def test_tables_match_discovery(control_plane: ControlPlane, crds: list[str],
                                table: str) -> None:
    kinds = ALL if table == "product" else served()
    assert kinds, "empty table"
    for res in kinds:
        namespaced, status = _discovered(control_plane, res)
        assert (res.namespaced, res.status_subresource) == (namespaced, status), (
            f"{table} table: {res} namespaced={res.namespaced} "
            f"status_subresource={res.status_subresource}; kube-apiserver says "
            f"namespaced={namespaced} status={status}")
