"""The control-plane build's pure parts: the wrapper module generated from a release's go.mod."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.controlplane import binaries

KUBE_GOMOD = """\
module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/example/pinned => github.com/example/pinned v1.2.3
)

replace k8s.io/kms => ./staging/src/k8s.io/kms
"""

ETCD_GOMOD = """\
module go.etcd.io/etcd/server/v3

replace (
\tgo.etcd.io/etcd/api/v3 => ../api
\tgo.etcd.io/etcd/client/v3 => ../client/v3
)

replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
"""


def _product(name: str) -> binaries.Product:
    return next(p for p in binaries.products() if p.name == name)


def test_relative_replaces_are_the_staging_modules_only() -> None:
    assert binaries.relative_replaces(KUBE_GOMOD) == [
        "k8s.io/api", "k8s.io/client-go", "k8s.io/kms"]
    assert binaries.relative_replaces(ETCD_GOMOD) == [
        "go.etcd.io/etcd/api/v3", "go.etcd.io/etcd/client/v3"]


def test_kubernetes_wrapper_pins_each_staging_module_to_the_release_tag() -> None:
    kube = _product("kubernetes")
    text = binaries.wrapper_gomod(kube, KUBE_GOMOD)
    minor, patch = kube.version.lstrip("v").split(".")[1:]
    assert f"require k8s.io/kubernetes {kube.version}" in text
    for mod in ("k8s.io/api", "k8s.io/client-go", "k8s.io/kms"):
        assert f"replace {mod} => {mod} v0.{minor}.{patch}" in text
    assert "github.com/example/pinned" not in text


def test_etcd_wrapper_uses_the_release_version_for_its_siblings() -> None:
    etcd = _product("etcd")
    text = binaries.wrapper_gomod(etcd, ETCD_GOMOD)
    assert f"replace go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 {etcd.version}" in text
    assert "FORBIDDEN" not in text


def test_version_ldflags_name_the_release() -> None:
    flags = " ".join(_product("kubernetes").ldflags)
    version = binaries.KUBERNETES_VERSION
    assert f"k8s.io/component-base/version.gitVersion={version}" in flags
    assert f"k8s.io/client-go/pkg/version.gitVersion={version}" in flags
    assert "gitMinor=" + version.split(".")[1] in flags


@pytest.mark.parametrize(("name", "expected"), [
    ("kube-apiserver", f"Kubernetes {binaries.KUBERNETES_VERSION}"),
    ("kube-proxy", f"Kubernetes {binaries.KUBERNETES_VERSION}"),
    ("etcd", binaries.ETCD_VERSION.lstrip("v")),
    ("helm", binaries.HELM_VERSION),
    ("kubectl", f"Client Version: {binaries.KUBERNETES_VERSION}"),
])
def test_built_binaries_report_their_version(name: str, expected: str) -> None:
    """The cached binaries (make binaries) say the version they were built as."""
    args = {"helm": ["version"], "kubectl": ["version", "--client"]}.get(name, ["--version"])
    out = subprocess.run([str(binaries.binary(name)), *args], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert expected in out, out


# The Gateway API conformance module replaces its parent module with a relative path.
GATEWAY_CONFORMANCE_GOMOD = """\
module sigs.k8s.io/gateway-api/conformance

go 1.26.0

replace sigs.k8s.io/gateway-api => ../

require sigs.k8s.io/gateway-api v0.0.0-00010101000000-000000000000
"""


def test_gateway_api_wrapper_pins_the_parent_module_to_the_release() -> None:
    gw = _product("gateway-api")
    assert gw.version == binaries.GATEWAY_API_VERSION == "v1.6.3"
    text = binaries.wrapper_gomod(gw, GATEWAY_CONFORMANCE_GOMOD)
    assert f"require sigs.k8s.io/gateway-api/conformance {gw.version}" in text
    assert f"replace sigs.k8s.io/gateway-api => sigs.k8s.io/gateway-api {gw.version}" in text


def test_gateway_api_product_builds_the_suite_the_echo_server_and_copies_the_crds() -> None:
    gw = _product("gateway-api")
    assert dict(gw.test_packages) == {
        "gateway-conformance.test": "sigs.k8s.io/gateway-api/conformance"}
    assert dict(gw.packages) == {"echo-basic": "sigs.k8s.io/gateway-api/conformance/echo-basic"}
    assert ("sigs.k8s.io/gateway-api", "config/crd/standard", "*.yaml",
            "crds/standard") in gw.copies
    assert binaries.product_dir(gw).name == "gateway-api-v1.6.3"


def test_copy_files_replaces_the_target_and_refuses_an_empty_match(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "out" / "crds"
    src.mkdir()
    (src / "a.yaml").write_text("a")
    (src / "b.txt").write_text("b")
    dest.mkdir(parents=True)
    (dest / "stale.yaml").write_text("old")
    copied = binaries.copy_files(src, "*.yaml", dest)
    assert [p.name for p in copied] == ["a.yaml"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.yaml"]
    with pytest.raises(binaries.BuildError):
        binaries.copy_files(src, "*.json", dest)


def test_built_gateway_api_suite_and_crds() -> None:
    """The cached build (make binaries): TestConformance is in the test binary, and the CRDs
    are v1.6.3's Standard channel."""
    out = subprocess.run([str(binaries.binary("gateway-conformance.test")), "-test.list",
                          "TestConformance$"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert out.split() == ["TestConformance"]
    assert binaries.binary("echo-basic").exists()
    crds = binaries.gateway_api_crds()
    names = {p.name for p in crds}
    for kind in ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants",
                 "tlsroutes", "tcproutes", "listenersets"):
        assert f"gateway.networking.k8s.io_{kind}.yaml" in names
    for p in crds:
        text = p.read_text()
        assert "gateway.networking.k8s.io/bundle-version: v1.6.3" in text
        assert "gateway.networking.k8s.io/channel: standard" in text


def test_metallb_product_builds_controller_and_speaker_and_copies_crds_and_manifest() -> None:
    ml = _product("metallb")
    assert ml.module == "go.universe.tf/metallb" and ml.version == binaries.METALLB_VERSION
    assert dict(ml.packages) == {"metallb-controller": "go.universe.tf/metallb/controller",
                                 "metallb-speaker": "go.universe.tf/metallb/speaker"}
    assert not ml.staging_replaces  # its go.mod has no relative replaces
    assert ("go.universe.tf/metallb", "config/crd/bases", "*.yaml", "crds") in ml.copies
    assert ("go.universe.tf/metallb", "config/manifests", "metallb-native.yaml",
            "manifests") in ml.copies
    assert any("internal/version.gitBranch=v0.15.2" in f for f in ml.ldflags)
    assert binaries.product_dir(ml).name == "metallb-v0.15.2"
    text = binaries.wrapper_gomod(ml, "module go.universe.tf/metallb\n\ngo 1.24.0\n")
    assert "require go.universe.tf/metallb v0.15.2" in text and "replace" not in text


def test_built_metallb() -> None:
    """The cached build (make binaries): both programs run, and the CRDs and the native
    manifest are the release's."""
    for name in ("metallb-controller", "metallb-speaker"):
        proc = subprocess.run([str(binaries.binary(name)), "--help"], capture_output=True,
                              text=True, timeout=30, check=False)
        assert "-ml-bindport" in proc.stderr or name == "metallb-controller", proc.stderr
        assert "-namespace" in proc.stderr, proc.stderr
    names = {p.name for p in binaries.metallb_crds()}
    for kind in ("ipaddresspools", "l2advertisements", "bgpadvertisements", "bgppeers",
                 "communities"):
        assert f"metallb.io_{kind}.yaml" in names
    manifest = binaries.metallb_manifest().read_text()
    assert "image: quay.io/metallb/speaker:v0.15.2" in manifest
    assert "image: quay.io/metallb/controller:v0.15.2" in manifest
