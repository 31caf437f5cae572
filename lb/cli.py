"""``portico`` console script: one subcommand per component.

Each component module owns its own argument parsing (``main(argv) -> int``); importing is
lazy so that ``portico controller`` never pays for scapy or exabgp imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def add_common_arguments(parser: argparse.ArgumentParser, metrics_addr: str) -> None:
    """Flags every component shares (one definition, so the
    components cannot drift apart; CLI contract in docs/architecture.md)."""
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig path (default: in-cluster)")
    parser.add_argument("--server", default=None,
                        help="plain http(s) API URL without auth (test emulators)")
    parser.add_argument("--metrics-addr", default=metrics_addr,
                        help="HOST:PORT serving /healthz, /readyz and /metrics")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])


COMPONENTS = {
    "controller": "lb.controller_main",
    "speaker": "speaker.main",
    "ingress": "ingress.main",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMPONENTS:
        names = ", ".join(COMPONENTS)
        print(f"usage: portico {{{names}}} [options]  (portico COMPONENT --help)", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMPONENTS[args[0]])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
