"""``portico`` console script: one command per component.

Each component module owns its own argument parsing (``main(argv) -> int``). The imports are
plain ``from ... import`` statements (so import checkers see them) inside one function per
component, so ``portico controller`` never pays for scapy or exabgp imports.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata

DISTRIBUTION = "portico-lb"


def _controller(argv: list[str]) -> int:
    from lb.controller_main import main

    return main(argv)


def _speaker(argv: list[str]) -> int:
    from speaker.main import main

    return main(argv)


def _ingress(argv: list[str]) -> int:
    from ingress.main import main

    return main(argv)


def _migrate(argv: list[str]) -> int:
    from lb.migrate_metallb import main

    return main(argv)


# name -> (one-line description, entry point)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "controller": ("gives LoadBalancer Services addresses from IPAddressPools", _controller),
    "speaker": ("announces those addresses from every node (ARP/NDP and BGP)", _speaker),
    "ingress": ("HAProxy ingress controller for the Ingresses of its class", _ingress),
    "migrate": ("converts MetalLB's configuration: 'portico migrate metallb'", _migrate),
}

USAGE = "usage: portico [-h] [--version] COMMAND [OPTIONS]"


def version() -> str:
    """The installed distribution's version (package metadata)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _commands() -> str:
    width = max(len(name) for name in COMMANDS)
    return "\n".join(f"  {name:<{width}}  {summary}"
                     for name, (summary, _) in COMMANDS.items())


def help_text() -> str:
    return (
        f"{USAGE}\n\n"
        "Portico: LoadBalancer Services for bare-metal Kubernetes clusters (addresses\n"
        "announced over ARP/NDP or BGP), plus an HAProxy ingress tier.\n\n"
        f"commands:\n{_commands()}\n\n"
        "options:\n"
        "  -h, --help  show this help and exit\n"
        "  --version   show the version and exit\n\n"
        "Run 'portico COMMAND --help' for the options of one command.\n"
    )


def _fail(message: str) -> int:
    print(f"{USAGE}\nportico: {message}\n\ncommands:\n{_commands()}\n\n"
          "Run 'portico --help' for more.", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(help_text(), end="", file=sys.stderr)
        return 2
    first, rest = args[0], args[1:]
    if first in ("-h", "--help"):
        print(help_text(), end="")
        return 0
    if first == "--version":
        print(f"portico {version()}")
        return 0
    if first.startswith("-"):
        return _fail(f"unknown option {first!r} (options go after the command)")
    if first not in COMMANDS:
        return _fail(f"unknown command {first!r}")
    return COMMANDS[first][1](rest)


if __name__ == "__main__":
    sys.exit(main())
