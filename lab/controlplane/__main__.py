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

from lab.controlplane import binaries
from lab.controlplane.cluster import running


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
    with running(crds=args.crds, keep_logs=args.keep_logs) as cp:
        print(f"control plane up: {cp.url}\nexport KUBECONFIG={cp.kubeconfig}\n"
              f"logs: {cp.run_dir}\npids: {cp.pids()}\nCtrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
