"""Command-line flags every component shares (the ``portico`` command itself is ``portico.cli``)."""

from __future__ import annotations

import argparse


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
