"""Command-line pieces every component shares (the ``portico`` command itself is ``portico.cli``).

One definition of the shared flags and of how ``--help`` looks, so the components cannot
drift apart.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to every option that has a default worth showing: not for
    options without one (``None``, ``False`` of a switch), nor where the help text already
    states it. Keeps the description's paragraphs and never breaks a line inside a word."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if ("%(default)" in help_text or "(default:" in help_text
                or action.default is None or action.default is False):
            return help_text
        result: str | None = super()._get_help_string(action)
        return result

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break inside a word such as portico-controller or a path.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False,
                             break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                          subsequent_indent=indent, break_on_hyphens=False,
                          break_long_words=False)
            for p in text.strip().split("\n\n") if p.strip())


def new_parser(component: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of ``portico COMPONENT``: the shared look of ``--help``."""
    return argparse.ArgumentParser(prog=f"portico {component}", description=description,
                                   formatter_class=HelpFormatter, **kwargs)


def add_common_arguments(parser: argparse.ArgumentParser, metrics_addr: str) -> None:
    """Flags every component shares."""
    parser.add_argument(
        "--kubeconfig", default=None, metavar="FILE",
        help="kubeconfig file to reach the API server with (default: the pod's service "
             "account when running in a cluster, else $KUBECONFIG or ~/.kube/config)")
    parser.add_argument(
        "--server", default=None, metavar="URL",
        help="API server URL (http:// or https://) used without any authentication, "
             "instead of a kubeconfig; for development only")
    parser.add_argument(
        "--metrics-addr", default=metrics_addr, metavar="HOST:PORT",
        help="address serving /healthz, /readyz and /metrics")
    parser.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS,
        help="log messages of this level and above, as key=value lines on stderr")
