"""MetalLB in the lab: its CRDs on the real control plane (for `portico migrate metallb`
tests) and its controller and speaker in the lab cluster (``MetalLBInLab``).

Everything comes from MetalLB's Go module at the pinned release (``make binaries``:
``lab.controlplane.binaries``, product ``metallb``): the CRDs of ``config/crd/bases`` and the
release's ``config/manifests/metallb-native.yaml``.

One fix is made on the way in, and reported: MetalLB v0.15.2 declares BGPPeer ``myASN`` and
``peerASN`` as ``format: int32`` with ``maximum: 4294967295``. kube-apiserver 1.37 accepts the
CRD but then refuses every BGPPeer that sets them (422: "Maximum boundary value must be of
type integer with format int32"), so BGP peers could not be stored at all. MetalLB v0.16
declares ``int64``; ``fix_crd`` does the same for any integer whose maximum exceeds int32.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import yaml

from lab.controlplane import binaries
from lab.controlplane.cluster import ControlPlane

if TYPE_CHECKING:
    from lab.labcluster import LabCluster

INT32_MAX = 2**31 - 1


def fix_crd(crd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``crd`` with every ``format: int32`` integer whose ``maximum`` exceeds int32 changed
    to ``int64``, and the schema paths changed (``v1beta2:.spec.myASN``)."""
    fixed = copy.deepcopy(crd)
    changed: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        if (node.get("type") == "integer" and node.get("format") == "int32"
                and int(node.get("maximum", 0)) > INT32_MAX):
            node["format"] = "int64"
            changed.append(path)
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    for version in fixed.get("spec", {}).get("versions") or []:
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        walk(schema, f"{version.get('name')}:")
    return fixed, changed


def crds() -> Iterator[tuple[dict[str, Any], list[str]]]:
    """The pinned release's CRDs (fixed) and what was fixed in each."""
    for path in binaries.metallb_crds():
        yield fix_crd(yaml.safe_load(path.read_text()))


def install_crds(cp: ControlPlane) -> list[str]:
    """Apply MetalLB's CRDs (fixed, see the module) and wait until each is Established."""
    names = []
    for crd, _ in crds():
        cp.apply_crd(crd)
        names.append(str(crd["metadata"]["name"]))
    for name in names:
        cp.wait_crd_established(name)
    return names


# ---- MetalLB in the lab cluster ------------------------------------------------------------

NAMESPACE = "metallb-system"
# Interfaces layer 2 answers on: the nodes' two segments, as Portico's lab values say.
LAB_INTERFACES = ("pl-eth0", "pl-eth1")
READY_TIMEOUT_S = 180.0
# What the lab changes in the release's metallb-native.yaml, and why (printed by install()).
LAB_CHANGES = (
    "CustomResourceDefinitions: the release's config/crd/bases ones with fix_crd applied, "
    "instead of the manifest's (whose BGPPeer CRD converts through the webhook)",
    "ValidatingWebhookConfiguration left out, and the controller started with "
    "--webhook-mode=disabled --disable-cert-rotation: kube-apiserver runs on the host's "
    "loopback and cannot reach a Service's ClusterIP (kube-proxy runs in the node "
    "namespaces), so every call to a webhook would fail; MetalLB's objects are checked by "
    "the CRD schemas only",
)


def lab_manifest(docs: list[dict[str, Any]], lb_class: str | None = None,
                 ml_port: int | None = None) -> list[dict[str, Any]]:
    """metallb-native.yaml's objects as the lab installs them (``LAB_CHANGES``).

    Beside Portico on one cluster (the failover benchmark): ``lb_class`` makes MetalLB serve
    only Services of that ``loadBalancerClass`` (Portico serves those without one), and
    ``ml_port`` moves memberlist off 7946, the port of Portico's speaker heartbeats (both
    run on the node's network)."""
    out = []
    extra = {"controller": ["--webhook-mode=disabled", "--disable-cert-rotation"],
             "speaker": []}
    if lb_class:
        for name in extra:
            extra[name].append(f"--lb-class={lb_class}")
    if ml_port:
        extra["speaker"].append(f"--ml-bindport={ml_port}")
    for doc in docs:
        if doc.get("kind") in ("CustomResourceDefinition", "ValidatingWebhookConfiguration"):
            continue
        doc = copy.deepcopy(doc)
        if doc.get("kind") in ("Deployment", "DaemonSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["name"] in extra and extra[c["name"]]:
                    c["args"] = [*c.get("args", []), *extra[c["name"]]]
                if c["name"] == "speaker" and ml_port:
                    for port in c.get("ports", []):
                        if str(port.get("name", "")).startswith("memberlist"):
                            port["containerPort"] = ml_port
        out.append(doc)
    return out


def pool_manifest(ranges: dict[str, str], node_selector: dict[str, Any] | None = None,
                  interfaces: tuple[str, ...] = LAB_INTERFACES) -> list[dict[str, Any]]:
    """MetalLB IPAddressPools (name -> range) and one L2Advertisement announcing them."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"addresses": [rng]}}
        for name, rng in ranges.items()]
    spec: dict[str, Any] = {"ipAddressPools": list(ranges), "interfaces": list(interfaces)}
    if node_selector:
        spec["nodeSelectors"] = [node_selector]
    objs.append({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                 "metadata": {"name": "lab-l2", "namespace": NAMESPACE}, "spec": spec})
    return objs


def _list(objs: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})


class MetalLBInLab:
    """MetalLB's release manifests (L2 mode, memberlist) in a ``LabCluster``: started with
    ``portico=False`` (two load-balancer controllers must never serve the same Services), or
    beside Portico with a ``lb_class`` of its own and memberlist on ``ml_port``."""

    def __init__(self, lc: LabCluster, lb_class: str | None = None,
                 ml_port: int | None = None) -> None:
        self.lc = lc
        self.lb_class, self.ml_port = lb_class, ml_port
        self.manifest = ""
        self.pools = ""
        self.crds_before: set[str] = set()
        self.figures: dict[str, float] = {}

    def install(self, timeout: float = READY_TIMEOUT_S) -> None:
        t0 = time.monotonic()
        self.crds_before = set(self._crd_names())
        install_crds(self.lc.cp)
        docs = [d for d in yaml.safe_load_all(binaries.metallb_manifest().read_text()) if d]
        self.manifest = _list(lab_manifest(docs, self.lb_class, self.ml_port))
        self.lc.kubectl("apply", "-f", "-", input_text=self.manifest)
        self.wait_ready(timeout)
        self.figures["metallb_install_to_ready_s"] = round(time.monotonic() - t0, 2)

    def apply_pools(self, ranges: dict[str, str],
                    node_selector: dict[str, Any] | None = None) -> None:
        self.pools = _list(pool_manifest(ranges, node_selector))
        self.lc.kubectl("apply", "-f", "-", input_text=self.pools)

    def not_ready(self) -> list[str]:
        out = []
        dep = self.lc.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/controller")
        if int((dep.get("status") or {}).get("readyReplicas") or 0) < 1:
            out.append("Deployment controller: not ready")
        ds = self.lc.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/speaker")
        st = ds.get("status") or {}
        want, ready = int(st.get("desiredNumberScheduled") or 0), int(st.get("numberReady") or 0)
        if want == 0 or ready < want:
            out.append(f"DaemonSet speaker: {ready}/{want} ready")
        return out

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while time.monotonic() < deadline:
            try:
                last = self.not_ready()
            except Exception as exc:  # the API answering late, or 404 before apply lands
                last = [f"{type(exc).__name__}: {exc}"]
            if not last:
                return
            time.sleep(0.5)
        pods = self.lc.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False)
        raise RuntimeError(f"MetalLB not ready after {timeout:.0f} s: {'; '.join(last)}\n{pods}")

    def stop(self, timeout: float = 90.0) -> None:
        """MetalLB stops serving: its controller Deployment and speaker DaemonSet are
        deleted and their pods are gone (its objects, pools included, stay until
        ``uninstall``). Services keep the addresses in their status."""
        self.lc.kubectl("delete", "-n", NAMESPACE, "daemonset/speaker", "deployment/controller",
                        "--ignore-not-found", "--wait=true", "--timeout=60s", timeout=90.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.lc.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
            if not pods:
                return
            time.sleep(0.2)
        raise RuntimeError(f"MetalLB pods still there after {timeout:.0f} s")

    def uninstall(self) -> None:
        """Everything install() and apply_pools() made, pods gone, new CRDs deleted."""
        if self.pools:
            self.lc.kubectl("delete", "--ignore-not-found", "-f", "-", input_text=self.pools,
                            check=False)
            self.pools = ""
        if self.manifest:
            self.lc.kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=90s",
                            "-f", "-", input_text=self.manifest, check=False, timeout=120.0)
            self.manifest = ""
        for crd, _ in crds():
            name = crd["metadata"]["name"]
            if name not in self.crds_before:
                with contextlib.suppress(Exception):
                    self.lc.cp.api("DELETE", "/apis/apiextensions.k8s.io/v1/"
                                   f"customresourcedefinitions/{name}")

    def _crd_names(self) -> list[str]:
        items = self.lc.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
        return [str(i["metadata"]["name"]) for i in items]
