"""lab.metallb: the one fix made to MetalLB v0.15.2's CRDs before they are installed."""

from __future__ import annotations

from typing import Any

from lab import metallb


def _crd(fmt: str, maximum: int) -> dict[str, Any]:
    asn = {"type": "integer", "format": fmt, "maximum": maximum, "minimum": 0}
    return {"spec": {"versions": [{"name": "v1beta2", "schema": {"openAPIV3Schema": {
        "type": "object", "properties": {"spec": {"type": "object", "properties": {
            "myASN": asn, "peerPort": {"type": "integer", "format": "int32",
                                       "maximum": 16384},
            "list": {"type": "array", "items": {"type": "object", "properties": {
                "n": dict(asn)}}}}}}}}}]}}


def test_int32_with_a_larger_maximum_becomes_int64_and_is_reported() -> None:
    crd = _crd("int32", 4294967295)
    fixed, changed = metallb.fix_crd(crd)
    props = fixed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]
    assert props["myASN"]["format"] == "int64"
    assert props["peerPort"]["format"] == "int32"  # fits: left alone
    assert props["list"]["items"]["properties"]["n"]["format"] == "int64"
    assert changed == ["v1beta2:.spec.myASN", "v1beta2:.spec.list[].n"]
    # The input is not modified.
    assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["myASN"]["format"] == "int32"


def test_correct_crds_are_unchanged() -> None:
    crd = _crd("int64", 4294967295)
    assert metallb.fix_crd(crd) == (crd, [])


def test_the_pinned_release_needs_exactly_the_asn_fix() -> None:
    fixes = {crd["metadata"]["name"]: changed for crd, changed in metallb.crds() if changed}
    assert fixes == {"bgppeers.metallb.io": [
        "v1beta1:.spec.myASN", "v1beta1:.spec.peerASN",
        "v1beta2:.spec.myASN", "v1beta2:.spec.peerASN"]}


def test_lab_manifest_drops_crds_and_webhooks_and_disables_the_webhook_server() -> None:
    import yaml

    from lab.controlplane import binaries

    docs = [d for d in yaml.safe_load_all(binaries.metallb_manifest().read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "ValidatingWebhookConfiguration"} <= kinds
    out = metallb.lab_manifest(docs)
    assert {d["kind"] for d in out} == kinds - {"CustomResourceDefinition",
                                                  "ValidatingWebhookConfiguration"}
    ctrl = next(d for d in out if d["kind"] == "Deployment")
    args = ctrl["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--webhook-mode=disabled", "--disable-cert-rotation"]
    speaker = next(d for d in out if d["kind"] == "DaemonSet")
    pod = speaker["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True  # as released
    assert pod["containers"][0]["securityContext"]["capabilities"]["add"] == ["NET_RAW"]
    # The input is not modified.
    assert "--webhook-mode=disabled" not in next(
        d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_metallb_images_resolve_to_the_built_programs() -> None:
    from lab.nodeagent import images

    box = images.Toolbox(python="/venv/bin/python", bin_dir="/venv/bin", repo="/repo",
                         built=(("metallb-controller", "/cache/metallb-controller"),
                                ("metallb-speaker", "/cache/metallb-speaker")))
    ctrl = images.resolve("quay.io/metallb/controller:v0.15.2", None,
                          ["--port=7472", "--log-level=info"], box)
    assert isinstance(ctrl, images.Resolved)
    assert ctrl.argv == ("/cache/metallb-controller", "--port=7472", "--log-level=info")
    spk = images.resolve("quay.io/metallb/speaker:v0.15.2", None, None, box)
    assert isinstance(spk, images.Resolved) and spk.argv == ("/cache/metallb-speaker",)
    unbuilt = images.resolve("quay.io/metallb/speaker:v0.15.2", None, None,
                             images.Toolbox(python="p", bin_dir="b", repo="r"))
    assert isinstance(unbuilt, images.NotMapped) and "make binaries" in unbuilt.message


def test_pool_manifest() -> None:
    objs = metallb.pool_manifest({"a": "192.0.2.200-192.0.2.219"},
                                 {"matchLabels": {"role": "worker"}})
    assert [o["kind"] for o in objs] == ["IPAddressPool", "L2Advertisement"]
    assert objs[1]["spec"] == {"ipAddressPools": ["a"], "interfaces": ["pl-eth0", "pl-eth1"],
                               "nodeSelectors": [{"matchLabels": {"role": "worker"}}]}


def test_lab_manifest_beside_portico_takes_a_class_and_another_memberlist_port() -> None:
    import yaml

    from lab.controlplane import binaries

    docs = [d for d in yaml.safe_load_all(binaries.metallb_manifest().read_text()) if d]
    out = metallb.lab_manifest(docs, lb_class="bench.portico.dev/metallb", ml_port=7947)
    ctrl = next(d for d in out if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    spk = next(d for d in out if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    assert "--lb-class=bench.portico.dev/metallb" in ctrl["containers"][0]["args"]
    args = spk["containers"][0]["args"]
    assert args[-2:] == ["--lb-class=bench.portico.dev/metallb", "--ml-bindport=7947"]
    assert {p["containerPort"] for p in spk["containers"][0]["ports"]
            if p["name"].startswith("memberlist")} == {7947}
