"""`portico migrate metallb` against the real kube-apiserver with MetalLB's own CRDs (v0.15.2,
vendored from its Go module by `make binaries`): MetalLB's objects are accepted by MetalLB's
schemas, the converted ones by Portico's, and --apply is idempotent."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import NotFound
from common.kube.client import KubeClient
from common.kube.resources import (
    BGPADVERTISEMENTS,
    BGPPEERS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    NAMESPACES,
)
from lab import metallb
from lab.controlplane.cluster import ControlPlane
from lb.migrate_metallb import (
    ML_BFD_PROFILES,
    ML_BGP_ADV,
    ML_COMMUNITIES,
    ML_L2,
    ML_PEERS,
    ML_POOLS,
    build_parser,
    run,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def metallb_crds(control_plane: ControlPlane) -> list[str]:
    return metallb.install_crds(control_plane)


@pytest.fixture
def ns(admin_client: KubeClient) -> Iterator[str]:
    name = f"mlb-{uuid.uuid4().hex[:8]}"
    admin_client.create(NAMESPACES, {"metadata": {"name": name}})
    yield name
    admin_client.delete(NAMESPACES, name)


def _meta(name: str, ns: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": ns, **({"labels": labels} if labels else {})}


def test_migrate_on_the_real_server(control_plane: ControlPlane, crds: list[str],
                                    metallb_crds: list[str], admin_client: KubeClient,
                                    ns: str) -> None:
    assert {"bgppeers.metallb.io", "bfdprofiles.metallb.io"} <= set(metallb_crds)
    kube = admin_client
    sfx = ns.removeprefix("mlb-")
    pool, l2, peer, adv = (f"{k}-{sfx}" for k in ("pool", "l2", "peer", "adv"))
    kube.create(ML_POOLS, {"metadata": _meta(pool, ns, tier="public"), "spec": {
        "addresses": ["192.0.2.0/28", "198.51.100.10 - 198.51.100.20", "2001:db8:1::/120"],
        "serviceAllocation": {"priority": 5, "namespaces": ["web"]}}})
    kube.create(ML_L2, {"metadata": _meta(l2, ns), "spec": {
        "ipAddressPoolSelectors": [{"matchLabels": {"tier": "public"}}]}})
    kube.create(ML_COMMUNITIES, {"metadata": _meta("c", ns), "spec": {
        "communities": [{"name": "no-advertise", "value": "65535:65282"}]}})
    kube.create(ML_BFD_PROFILES, {"metadata": _meta("fast", ns), "spec": {
        "receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 4,
        "echoMode": True, "echoInterval": 50}})
    # (MetalLB v0.15.2's own CRD would refuse this on 1.37: lab.metallb fixes its format.)
    kube.create(ML_PEERS, {"metadata": _meta(peer, ns), "spec": {
        "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.254", "holdTime": "1m30s",
        "bfdProfile": "fast"}})
    kube.create(ML_BGP_ADV, {"metadata": _meta(adv, ns), "spec": {
        "ipAddressPools": [pool], "communities": ["no-advertise", "large:64512:1:2"],
        "peers": [peer]}})
    portico = ((IPADDRESSPOOLS, pool), (L2ADVERTISEMENTS, l2), (BGPPEERS, peer),
               (BGPADVERTISEMENTS, adv))
    try:
        # The command itself, as a user runs it: print only, losses on stderr.
        proc = subprocess.run(
            [sys.executable, "-m", "portico", "migrate", "metallb", "--kubeconfig",
             str(control_plane.kubeconfig), "--metallb-namespace", ns, "--strict"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 1, proc.stderr  # --strict: echo mode is not carried
        assert "BFDProfile fast spec.echoMode" in proc.stderr
        assert f"BGPPeer {peer} spec.bfdProfile" not in proc.stderr
        assert "--set speaker.bfd.enabled=true" in proc.stderr
        printed = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert [(d["kind"], d["metadata"]["name"]) for d in printed] == [
            ("IPAddressPool", pool), ("L2Advertisement", l2), ("BGPPeer", peer),
            ("BGPAdvertisement", adv)]
        for res, name in portico:  # printing wrote nothing
            with pytest.raises(NotFound):
                kube.get(res, name)

        args = build_parser().parse_args(["--metallb-namespace", ns, "--apply"])
        err = io.StringIO()
        assert run(kube, args, io.StringIO(), err) == 0
        assert err.getvalue().count(" created") == 4, err.getvalue()
        got = kube.get(IPADDRESSPOOLS, pool)
        assert got["spec"]["addresses"] == ["192.0.2.0/28", "198.51.100.10-198.51.100.20",
                                            "2001:db8:1::/120"]
        assert got["metadata"]["labels"] == {"tier": "public"}
        got_peer = kube.get(BGPPEERS, peer)["spec"]
        assert got_peer["holdTime"] == "90s"
        assert got_peer["bfd"] == {  # the CRD's defaults filled in
            "receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 4,
            "passiveMode": False, "minimumTtl": 254}
        assert kube.get(BGPADVERTISEMENTS, adv)["spec"]["communities"] == [
            "65535:65282", "64512:1:2"]
        # Again: nothing to write.
        err = io.StringIO()
        assert run(kube, args, io.StringIO(), err) == 0
        assert err.getvalue().count(" unchanged") == 4, err.getvalue()
        # Someone edits a converted pool: --apply puts MetalLB's spec back.
        got["spec"]["autoAssign"] = False
        kube.replace(IPADDRESSPOOLS, pool, got)
        err = io.StringIO()
        assert run(kube, args, io.StringIO(), err) == 0
        assert f"ipaddresspool.lb.portico.dev/{pool} configured" in err.getvalue()
        assert kube.get(IPADDRESSPOOLS, pool)["spec"].get("autoAssign") is True  # default
    finally:
        for res, name in portico:
            with contextlib.suppress(NotFound):
                kube.delete(res, name)
