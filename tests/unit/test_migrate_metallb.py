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

from common.api.parse import parse_bgp_peer
from lb.core.migrate_metallb import (
    BFD_CHART_VALUE,
    Loss,
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
                         by_kind.get("BGPPeer", []), by_kind.get("Community", []),
                         by_kind.get("BFDProfile", []))


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
    _golden("notes.txt", "".join(f"{note}\n" for note in result.notes))


def test_conversion_is_deterministic_and_names_are_kept() -> None:
    config = _input()
    shuffled = MetalLBConfig(config.namespace, list(reversed(config.pools)),
                             config.l2_advertisements, config.bgp_advertisements,
                             list(reversed(config.bgp_peers)), config.communities,
                             list(reversed(config.bfd_profiles)))
    a, b = convert(config), convert(shuffled)
    assert a.objects == b.objects
    names = [(o["kind"], o["metadata"]["name"]) for o in a.objects]
    assert names == [("IPAddressPool", "production"), ("IPAddressPool", "reserved"),
                     ("L2Advertisement", "everything"), ("L2Advertisement", "public-l2"),
                     ("BGPPeer", "router-a"), ("BGPPeer", "router-b"),
                     ("BGPPeer", "router-c"), ("BGPAdvertisement", "to-routers")]


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
                     "bgppeers": list(config.bgp_peers),
                     "bfdprofiles": list(config.bfd_profiles)})
    out, err = io.StringIO(), io.StringIO()
    assert run(kube, _args(), out, err) == 0  # type: ignore[arg-type]
    printed = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    assert [d["kind"] for d in printed] == ["IPAddressPool", "IPAddressPool", "BGPPeer",
                                            "BGPPeer", "BGPPeer"]
    assert printed[2]["spec"]["bfd"]["receiveInterval"] == 100  # the BFDProfiles were read
    assert "not carried over" in err.getvalue()
    assert "BGPPeer unnumbered spec.interface" in err.getvalue()
    assert "BFDProfile fast spec.echoMode" in err.getvalue()
    assert f"note: BGPPeer router-a, router-b: spec.bfd works only when Portico's Helm chart " \
           f"is installed with --set {BFD_CHART_VALUE}" in err.getvalue()
    assert run(kube, _args("--strict"), io.StringIO(), io.StringIO()) == 1  # type: ignore[arg-type]


def test_run_clean_config_strict_passes() -> None:
    pool = {"metadata": {"name": "p"}, "spec": {"addresses": ["192.0.2.0/24"]}}
    out, err = io.StringIO(), io.StringIO()
    assert run(FakeKube({"ipaddresspools": [pool]}), _args("--strict", "-o", "json"),  # type: ignore[arg-type]
               out, err) == 0
    assert err.getvalue() == ""
    assert '"kind": "List"' in out.getvalue()


def test_run_bfd_note_does_not_fail_strict() -> None:
    """The chart-value note is printed but is not a loss: --strict still exits 0."""
    profile = {"metadata": {"name": "p"}, "spec": {"receiveInterval": 50}}
    peer = {"metadata": {"name": "r"}, "spec": {"myASN": 64512, "peerASN": 64513,
                                                "peerAddress": "192.0.2.1", "bfdProfile": "p"}}
    out, err = io.StringIO(), io.StringIO()
    assert run(FakeKube({"bgppeers": [peer], "bfdprofiles": [profile]}),  # type: ignore[arg-type]
               _args("--strict"), out, err) == 0
    assert "not carried over" not in err.getvalue()
    assert f"note: BGPPeer r: spec.bfd works only when Portico's Helm chart is installed " \
           f"with --set {BFD_CHART_VALUE}" in err.getvalue()
    assert [d["spec"]["bfd"] for d in yaml.safe_load_all(out.getvalue()) if d] == [
        {"receiveInterval": 50, "transmitInterval": 300, "detectMultiplier": 3}]


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


# --- BFDProfile -> BGPPeer spec.bfd ------------------------------------------------------


def _peer(name: str, profile: object = None, **spec: object) -> dict[str, Any]:
    body: dict[str, Any] = {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1",
                            **spec}
    if profile is not None:
        body["bfdProfile"] = profile
    return {"metadata": {"name": name}, "spec": body}


def _profile(name: str, **spec: object) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def _convert_peers(peers: list[dict[str, Any]],
                   profiles: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    result = convert(MetalLBConfig(bgp_peers=peers, bfd_profiles=profiles))
    return ({o["metadata"]["name"]: o["spec"].get("bfd") for o in result.objects},
            [str(loss) for loss in result.losses])


def test_bfd_profile_timers_carry_over_and_parse() -> None:
    result = convert(MetalLBConfig(
        bgp_peers=[_peer("r", "fast", ebgpMultiHop=True)],
        bfd_profiles=[_profile("fast", receiveInterval=10, transmitInterval=60000,
                               detectMultiplier=255, passiveMode=True, minimumTtl=1)]))
    assert result.losses == []
    assert result.objects[0]["spec"]["bfd"] == {
        "receiveInterval": 10, "transmitInterval": 60000, "detectMultiplier": 255,
        "minimumTtl": 1, "passiveMode": True}
    # Portico's own parser reads the same values back (milliseconds on both sides).
    bfd = parse_bgp_peer(result.objects[0]).bfd
    assert bfd is not None
    assert (bfd.receive_interval, bfd.transmit_interval, bfd.detect_multiplier,
            bfd.passive_mode, bfd.minimum_ttl) == (10, 60000, 255, True, 1)


def test_bfd_empty_profile_writes_metallbs_defaults() -> None:
    bfds, losses = _convert_peers([_peer("r", "plain")],
                                  [_profile("plain", passiveMode=False, echoMode=False)])
    assert losses == []
    assert bfds == {"r": {"receiveInterval": 300, "transmitInterval": 300,
                          "detectMultiplier": 3}}


def test_bfd_missing_profile_is_a_loss_and_the_peer_stays_without_bfd() -> None:
    result = convert(MetalLBConfig(bgp_peers=[_peer("r", "gone")],
                                   bfd_profiles=[_profile("other")]))
    assert [o["metadata"]["name"] for o in result.objects] == ["r"]
    assert "bfd" not in result.objects[0]["spec"]
    assert result.losses == [Loss("BGPPeer", "r", "spec.bfdProfile",
                                  "'gone' is not a BFDProfile of metallb-system (MetalLB "
                                  "refuses such a configuration); the peer is converted "
                                  "without BFD")]
    assert result.notes == []  # no peer with spec.bfd: nothing to install


def test_bfd_echo_mode_is_a_loss_named_by_profile_and_field_once() -> None:
    bfds, losses = _convert_peers(
        [_peer("r1", "echo"), _peer("r2", "echo")],
        [_profile("echo", echoMode=True, echoInterval=20, transmitInterval=100)])
    assert bfds["r1"] == bfds["r2"] == {"receiveInterval": 300, "transmitInterval": 100,
                                        "detectMultiplier": 3}
    assert losses == [  # once per profile, not once per peer
        "BFDProfile echo spec.echoMode: Portico's bfdd does not run echo mode; left out: the "
        "session detects failures with control packets alone (receiveInterval x "
        "detectMultiplier)",
        "BFDProfile echo spec.echoInterval: 20: left out with echoMode"]


def test_bfd_echo_interval_without_echo_mode_loses_nothing() -> None:
    # FRR uses the echo interval only in echo mode (MetalLB renders it regardless).
    assert _convert_peers([_peer("r", "p")], [_profile("p", echoInterval=50)])[1] == []


def test_bfd_invalid_and_unknown_profile_fields_are_losses() -> None:
    bfds, losses = _convert_peers(
        [_peer("r", "bad")],
        [_profile("bad", receiveInterval=5, detectMultiplier=True, minimumTtl=255,
                  passiveMode="yes", future=1)])
    assert bfds == {"r": {"receiveInterval": 300, "transmitInterval": 300,
                          "detectMultiplier": 3}}
    assert losses == [
        "BFDProfile bad spec.future: is not a field Portico knows; left out",
        "BFDProfile bad spec.receiveInterval: 5 is not an integer in 10..60000 (MetalLB "
        "refuses it too); left at the default, 300",
        "BFDProfile bad spec.detectMultiplier: True is not an integer in 2..255 (MetalLB "
        "refuses it too); left at the default, 3",
        "BFDProfile bad spec.minimumTtl: 255 is not an integer in 1..254 (MetalLB refuses it "
        "too); left at the default, 254",
        "BFDProfile bad spec.passiveMode: 'yes' is not a boolean; left at the default, false"]


def test_bfd_profiles_no_peer_uses_are_ignored() -> None:
    result = convert(MetalLBConfig(bfd_profiles=[_profile("unused", echoMode=True)]))
    assert (result.objects, result.losses, result.notes) == ([], [], [])


def test_bfd_peers_share_a_profile_without_yaml_anchors() -> None:
    result = convert(MetalLBConfig(bgp_peers=[_peer("a", "p"), _peer("b", "p")],
                                   bfd_profiles=[_profile("p")]))
    text = render(result.objects)
    assert "&id" not in text and "*id" not in text
    assert text.count("bfd:") == 2


def test_bfd_chart_value_is_the_speakers() -> None:
    from speaker.core.bgp_bfd import CHART_VALUE

    assert BFD_CHART_VALUE == CHART_VALUE
