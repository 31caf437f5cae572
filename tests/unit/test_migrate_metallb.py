"""`portico migrate metallb`: the pure conversion (golden files) and the command's shell.

Regenerate the goldens with UPDATE_GOLDEN=1."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from lb.core.migrate_metallb import (
    MetalLBConfig,
    convert,
    convert_address,
    convert_community,
    go_duration_seconds,
)
from lb.migrate_metallb import build_parser, render, run

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "migrate_metallb"


def _input() -> MetalLBConfig:
    docs = [d for d in yaml.safe_load_all((GOLDEN / "metallb-input.yaml").read_text()) if d]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return MetalLBConfig("metallb-system", by_kind.get("IPAddressPool", []),
                         by_kind.get("L2Advertisement", []), by_kind.get("BGPAdvertisement", []),
                         by_kind.get("BGPPeer", []), by_kind.get("Community", []))


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from golden (UPDATE_GOLDEN=1 to accept)"


def test_conversion_golden() -> None:
    result = convert(_input(), "portico-system")
    _golden("portico-output.yaml", render(result.objects))
    _golden("losses.txt", "".join(f"{loss}\n" for loss in result.losses))


def test_conversion_is_deterministic_and_names_are_kept() -> None:
    config = _input()
    shuffled = MetalLBConfig(config.namespace, list(reversed(config.pools)),
                             config.l2_advertisements, config.bgp_advertisements,
                             list(reversed(config.bgp_peers)), config.communities)
    a, b = convert(config), convert(shuffled)
    assert a.objects == b.objects
    names = [(o["kind"], o["metadata"]["name"]) for o in a.objects]
    assert names == [("IPAddressPool", "production"), ("IPAddressPool", "reserved"),
                     ("L2Advertisement", "everything"), ("L2Advertisement", "public-l2"),
                     ("BGPPeer", "router-a"), ("BGPPeer", "router-b"),
                     ("BGPAdvertisement", "to-routers")]


def test_passwords_never_reach_the_output() -> None:
    result = convert(_input())
    assert "s3cret" not in render(result.objects)
    assert "s3cret" not in "".join(str(loss) for loss in result.losses)


def test_empty_config_converts_to_nothing() -> None:
    result = convert(MetalLBConfig())
    assert (result.objects, result.losses) == ([], [])


@pytest.mark.parametrize(("entry", "out"), [
    ("192.0.2.0/24", "192.0.2.0/24"),
    ("192.0.2.5/24", "192.0.2.0/24"),  # MetalLB masks (net.ParseCIDR)
    (" 192.0.2.1 - 192.0.2.9 ", "192.0.2.1-192.0.2.9"),
    ("2001:db8::1-2001:db8::ff", "2001:db8::1-2001:db8::ff"),
    ("2001:DB8::/64", "2001:db8::/64"),
    ("192.0.2.9-192.0.2.1", None),
    ("192.0.2.1-2001:db8::1", None),
    ("192.0.2.1", None),  # MetalLB needs a prefix length too
    (7, None),
])
def test_addresses(entry: object, out: str | None) -> None:
    assert convert_address(entry) == out


@pytest.mark.parametrize(("text", "out"), [
    ("65535:65282", "65535:65282"),
    ("large:64512:1:2", "64512:1:2"),
    ("064512:01", "64512:1"),
    ("alias", "65000:1"),
    ("65536:1", None),
    ("64512:1:2", None),  # a large community without MetalLB's marker is not one in MetalLB
    ("no-export", None),
])
def test_communities(text: str, out: str | None) -> None:
    assert convert_community(text, {"alias": "65000:1"}) == out


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("1m30s", 90.0), ("1h", 3600.0), ("1500ms", 1.5), ("0", 0.0),
    ("", None), ("90", None), ("-3s", None), ("3x", None),
])
def test_go_durations(text: str, seconds: float | None) -> None:
    assert go_duration_seconds(text) == seconds


class FakeKube:
    """Only what the shell calls, for the print path (the apply path runs on the real
    server in tests/controller/test_migrate_metallb_real.py)."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects

    def list(self, res: Any, namespace: str | None = None) -> tuple[list[dict[str, Any]], str]:
        return self.objects.get(res.plural, []), "1"


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_run_prints_yaml_and_lists_losses_strict_fails() -> None:
    config = _input()
    kube = FakeKube({"ipaddresspools": list(config.pools),
                     "bgppeers": list(config.bgp_peers)})
    out, err = io.StringIO(), io.StringIO()
    assert run(kube, _args(), out, err) == 0  # type: ignore[arg-type]
    kinds = [d["kind"] for d in yaml.safe_load_all(out.getvalue()) if d]
    assert kinds == ["IPAddressPool", "IPAddressPool", "BGPPeer", "BGPPeer"]
    assert "not carried over" in err.getvalue()
    assert "BGPPeer unnumbered spec.interface" in err.getvalue()
    assert run(kube, _args("--strict"), io.StringIO(), io.StringIO()) == 1  # type: ignore[arg-type]


def test_run_clean_config_strict_passes() -> None:
    pool = {"metadata": {"name": "p"}, "spec": {"addresses": ["192.0.2.0/24"]}}
    out, err = io.StringIO(), io.StringIO()
    assert run(FakeKube({"ipaddresspools": [pool]}), _args("--strict", "-o", "json"),  # type: ignore[arg-type]
               out, err) == 0
    assert err.getvalue() == ""
    assert '"kind": "List"' in out.getvalue()


def test_apply_without_portico_crds_says_so() -> None:
    from common.errors import KubeError, NotFound
    from lb.migrate_metallb import apply

    class NoCrds:
        def get(self, res: Any, name: str) -> dict[str, Any]:
            raise NotFound("404")

        def create(self, res: Any, body: dict[str, Any]) -> dict[str, Any]:
            raise NotFound("404")

    pool = {"apiVersion": "lb.portico.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "p", "annotations": {}}, "spec": {}}
    with pytest.raises(KubeError, match="install Portico's CRDs first"):
        apply(NoCrds(), [pool], io.StringIO())  # type: ignore[arg-type]
