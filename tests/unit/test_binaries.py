"""The control-plane build's pure parts: the wrapper module generated from a release's go.mod."""

from __future__ import annotations

import subprocess

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
