"""``portico`` console script: one subcommand per component.

Each component module owns its own argument parsing (``main(argv) -> int``); importing is
lazy so that ``portico controller`` never pays for scapy or exabgp imports.
"""

from __future__ import annotations

import importlib
import sys

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
