"""``python -m lab.controlplane``: build the binaries, or run a control plane until Ctrl-C.

    python -m lab.controlplane build          # same as `make binaries`
    python -m lab.controlplane up [--crds]    # etcd + apiserver + controller-manager +
                                              # scheduler on loopback; prints the kubeconfig
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

import yaml

from lab.controlplane import binaries
from lab.controlplane.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.controlplane")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or reuse) the binaries")
    up = sub.add_parser("up", help="start a control plane and wait for Ctrl-C")
    up.add_argument("--crds", action="store_true", help="apply Portico's CRDs")
    up.add_argument("--keep-logs", action="store_true", help="keep the run directory")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        return binaries.main([])
    cp = ControlPlane(keep_logs=args.keep_logs).start()
    try:
        if args.crds:
            for path in sorted((REPO / "charts" / "portico" / "crds").glob("*.yaml")):
                crd = yaml.safe_load(path.read_text())
                cp.apply_crd(crd)
                cp.wait_crd_established(crd["metadata"]["name"])
        print(f"control plane up: {cp.url}\nexport KUBECONFIG={cp.kubeconfig}\n"
              f"logs: {cp.run_dir}\npids: {cp.pids()}\nCtrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
