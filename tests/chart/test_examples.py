"""examples/ (what the demo and the e2e suite apply, and what users copy): every manifest is
valid for Kubernetes (built-in kinds) or for Portico's CRDs, and the files fit together."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartkit import ROOT, crd_problems, kubernetes_validate, values_for

EXAMPLES = ROOT / "examples"
KUBE_VERSIONS = ("1.27.0", "1.37.0")


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def _all() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(EXAMPLES.glob("*.yaml")) for d in _docs(p.name)]


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"pool.yaml", "l2advertisement.yaml", "bgp.yaml", "web-apps.yaml",
            "ingress.yaml"} <= names


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(kube_version: str) -> None:
    for name, doc in _all():
        if doc["apiVersion"].startswith("lb.portico.dev/"):
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_portico_kinds_validate_against_the_crds() -> None:
    custom = [(n, d) for n, d in _all() if d["apiVersion"].startswith("lb.portico.dev/")]
    assert len(custom) >= 4
    for name, doc in custom:
        problems = crd_problems(doc)
        assert problems is not None, f"no CRD for {doc['kind']} in charts/portico/crds/"
        assert problems == [], f"{name}: {doc['kind']} {doc['metadata']['name']}: {problems}"


def test_crd_validation_really_catches_typos() -> None:
    pool = _docs("pool.yaml")[0]
    assert crd_problems(pool) is not None, "no IPAddressPool CRD in charts/portico/crds/"
    broken = {**pool, "spec": {**pool["spec"], "adresses": ["192.0.2.1/32"]}}
    assert crd_problems(broken), "a misspelt field must be reported"
    wrong_type = {**pool, "spec": {**pool["spec"], "autoAssign": "yes"}}
    assert crd_problems(wrong_type)


def test_advertisements_name_existing_pools_and_peers() -> None:
    pools = {d["metadata"]["name"] for d in _docs("pool.yaml")}
    peers = {d["metadata"]["name"] for d in _docs("bgp.yaml") if d["kind"] == "BGPPeer"}
    for name in ("l2advertisement.yaml", "bgp.yaml"):
        for doc in _docs(name):
            if doc["kind"].endswith("Advertisement"):
                assert set(doc["spec"]["ipAddressPools"]) <= pools, name
                assert set(doc["spec"].get("peers", [])) <= peers, name


def test_ingress_routes_to_the_example_services() -> None:
    services = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                for d in _docs("web-apps.yaml") if d["kind"] == "Service"}
    (ingress,) = _docs("ingress.yaml")
    ns = ingress["metadata"]["namespace"]
    assert ingress["spec"]["ingressClassName"] == "portico"  # the chart's default class name
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert len(set(hosts)) == 2
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = services[(ns, backend["name"])]
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert tls_hosts == set(hosts)
    assert values_for("default") == {}  # the default class name comes from values.yaml


def test_tls_secret_script_makes_a_certificate_for_both_hosts(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(EXAMPLES / "make-tls-secret.sh"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=True)
    secret = yaml.safe_load(proc.stdout)
    kubernetes_validate.validate(secret, KUBE_VERSIONS[-1], strict=True)
    (ingress,) = _docs("ingress.yaml")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == ingress["spec"]["tls"][0]["secretName"]
    assert secret["metadata"]["namespace"] == ingress["metadata"]["namespace"]
    pem = base64.b64decode(secret["data"]["tls.crt"])
    assert pem == (tmp_path / "tls.crt").read_bytes()
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem,
                          capture_output=True, timeout=30, check=True).stdout.decode()
    for rule in ingress["spec"]["rules"]:
        assert f"DNS:{rule['host']}" in text


def test_example_shell_scripts_pass_shellcheck() -> None:
    for script in EXAMPLES.glob("*.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
        proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout
