"""``portico migrate metallb``: read MetalLB's configuration from the cluster, print (YAML,
default) or apply (``--apply``) the equivalent Portico objects. The conversion itself is
``lb.core.migrate_metallb`` (pure); this module only reads, renders and writes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from common.cli import new_parser
from common.errors import Conflict, KubeError, NotFound
from common.kube.client import KubeClient
from common.kube.resources import (
    BGPADVERTISEMENTS,
    BGPPEERS,
    IPADDRESSPOOLS,
    L2ADVERTISEMENTS,
    Resource,
)
from lb.core.migrate_metallb import Conversion, MetalLBConfig, convert

# MetalLB v0.15's storage versions (BGPPeer moved to v1beta2; v1beta1 is still served).
METALLB_GROUP = "metallb.io"
ML_POOLS = Resource(METALLB_GROUP, "v1beta1", "ipaddresspools", "IPAddressPool", True)
ML_L2 = Resource(METALLB_GROUP, "v1beta1", "l2advertisements", "L2Advertisement", True)
ML_BGP_ADV = Resource(METALLB_GROUP, "v1beta1", "bgpadvertisements", "BGPAdvertisement", True)
ML_PEERS = Resource(METALLB_GROUP, "v1beta2", "bgppeers", "BGPPeer", True)
ML_COMMUNITIES = Resource(METALLB_GROUP, "v1beta1", "communities", "Community", True)
ML_BFD_PROFILES = Resource(METALLB_GROUP, "v1beta1", "bfdprofiles", "BFDProfile", True)
METALLB_RESOURCES = (ML_POOLS, ML_L2, ML_BGP_ADV, ML_PEERS, ML_COMMUNITIES, ML_BFD_PROFILES)

PORTICO_RESOURCES = {r.kind: r for r in (IPADDRESSPOOLS, L2ADVERTISEMENTS, BGPPEERS,
                                          BGPADVERTISEMENTS)}

DESCRIPTION = """Converts MetalLB's configuration (IPAddressPools, L2Advertisements,
BGPAdvertisements, BGPPeers with their BFDProfiles, and Community aliases of MetalLB's
namespace) into Portico's objects, keeping names and labels so that Services' MetalLB
annotations keep working. Prints them as YAML, or creates/updates them with --apply. What
cannot be carried over is listed on stderr; with --strict that makes the exit status 1.
Notes on stderr (e.g. the Helm value BFD needs) do not."""


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("migrate metallb", DESCRIPTION)
    p.add_argument("--kubeconfig", default=None, metavar="FILE",
                   help="kubeconfig file to reach the API server with (default: "
                        "$KUBECONFIG or ~/.kube/config)")
    p.add_argument("--metallb-namespace", default="metallb-system", metavar="NAMESPACE",
                   help="namespace MetalLB runs in (it reads its objects only there)")
    p.add_argument("--namespace", default="portico-system", metavar="NAMESPACE",
                   help="namespace Portico runs in: BGP password Secrets must be there")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                   help="format of the printed objects")
    p.add_argument("--apply", action="store_true",
                   help="create the objects (or update those that differ) instead of "
                        "printing them")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when anything could not be carried over")
    return p


def read_metallb(kube: KubeClient, namespace: str) -> MetalLBConfig:
    """MetalLB's objects of ``namespace``; a kind whose CRD is not installed reads as none.
    KubeError when MetalLB's CRDs are absent altogether."""
    found: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for res in METALLB_RESOURCES:
        try:
            found[res.plural], _ = kube.list(res, namespace)
        except NotFound:
            missing.append(f"{res.plural}.{res.group}/{res.version}")
            found[res.plural] = []
    if len(missing) == len(METALLB_RESOURCES):
        raise KubeError("MetalLB's CRDs (metallb.io) are not installed in this cluster")
    return MetalLBConfig(namespace, found["ipaddresspools"], found["l2advertisements"],
                         found["bgpadvertisements"], found["bgppeers"], found["communities"],
                         found["bfdprofiles"])


def render(objects: Sequence[dict[str, Any]], output: str = "yaml") -> str:
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)},
                          indent=2, sort_keys=False) + "\n"
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False, default_flow_style=False)
                   for o in objects)


def apply(kube: KubeClient, objects: Sequence[dict[str, Any]], out: TextIO) -> int:
    """Create each object, or replace the spec of one that exists (labels and annotations
    are merged, others' kept); returns how many were written.

    An existing object is always PUT: the server applies the CRD's defaults and skips the
    write when nothing changed (same resourceVersion), which is the only exact answer to
    "does it differ" once defaults are filled in.
    """
    written = 0
    for obj in objects:
        res = PORTICO_RESOURCES[obj["kind"]]
        name = obj["metadata"]["name"]
        what = f"{res.kind.lower()}.{res.group}/{name}"
        for _ in range(3):  # a 409 means someone wrote it meanwhile: read again
            try:
                current = kube.get(res, name)
            except NotFound:
                try:
                    kube.create(res, obj)
                except NotFound as e:  # the kind itself is unknown to the server
                    raise KubeError(f"{res.plural}.{res.group} is not served: install "
                                    "Portico's CRDs first (the Helm chart, or kubectl apply "
                                    "-f charts/portico/crds/)") from e
                print(f"{what} created", file=out)
                written += 1
                break
            meta = current.get("metadata") or {}
            version = meta.get("resourceVersion")
            body = dict(obj)
            body["metadata"] = {
                "name": name, "resourceVersion": version,
                "labels": {**(meta.get("labels") or {}), **obj["metadata"].get("labels", {})},
                "annotations": {**(meta.get("annotations") or {}),
                                **obj["metadata"]["annotations"]},
            }
            try:
                after = kube.replace(res, name, body)
            except Conflict:
                continue
            if (after.get("metadata") or {}).get("resourceVersion") == version:
                print(f"{what} unchanged", file=out)
            else:
                print(f"{what} configured", file=out)
                written += 1
            break
        else:
            raise KubeError(f"{res.kind} {name}: changed by someone else three times; "
                            "run again")
    return written


def run(kube: KubeClient, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    config = read_metallb(kube, args.metallb_namespace)
    result: Conversion = convert(config, args.namespace)
    if args.apply:
        apply(kube, result.objects, stderr)
    else:
        stdout.write(render(result.objects, args.output))
    if result.losses:
        print(f"portico migrate metallb: {len(result.losses)} item(s) not carried over:",
              file=stderr)
        for loss in result.losses:
            print(f"  - {loss}", file=stderr)
    for note in result.notes:
        print(f"portico migrate metallb: note: {note}", file=stderr)
    return 1 if args.strict and result.losses else 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: portico migrate metallb [OPTIONS]\n\n"
              "Moves a cluster's load-balancer configuration to Portico.\n\n"
              "sources:\n  metallb  MetalLB's CRDs (metallb.io): see "
              "'portico migrate metallb --help'",
              file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] != "metallb":
        print(f"portico migrate: unknown source {argv[0]!r} (known: metallb)", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv[1:])
    try:
        kube = KubeClient.from_environment(kubeconfig=args.kubeconfig)
    except KubeError as e:
        print(f"portico migrate metallb: {e}", file=sys.stderr)
        return 2
    try:
        return run(kube, args, sys.stdout, sys.stderr)
    except KubeError as e:
        print(f"portico migrate metallb: {e}", file=sys.stderr)
        return 2
    finally:
        kube.close()
