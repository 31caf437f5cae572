"""Runtime API command planning (pure): endpoint changes without a reload.

HAProxy's Runtime API splits a line on spaces and on ';' (several commands per line), so
every token is checked against an allow-list by ``runtime_token`` — the one quoting function
of this grammar. Identifiers come from the renderer (already safe) and addresses from the
model (validated IPs), so a failure here means a bug, not user input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ingress.core.model import Endpoint

_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")


class UnsafeToken(ValueError):
    pass


def runtime_token(value: str) -> str:
    if not _TOKEN_RE.fullmatch(value):
        raise UnsafeToken(f"unsafe Runtime API token {value[:80]!r}")
    return value


def slot_commands(backend: str, old: tuple[Endpoint | None, ...],
                  new: tuple[Endpoint | None, ...]) -> list[str]:
    """Commands turning slot state ``old`` into ``new`` (same slot count), only changes."""
    out: list[str] = []
    b = runtime_token(backend)
    for i, ep in enumerate(new):
        before = old[i] if i < len(old) else None
        if ep == before:
            continue
        server = f"{b}/s{i + 1}"
        if ep is None:
            out.append(f"set server {server} state maint")
            continue
        if before is not None:
            # Moving an active slot to a new address: drain it first so no request is sent
            # to the new address with the old server's connection pool.
            out.append(f"set server {server} state maint")
        out.append(f"set server {server} addr {runtime_token(ep.ip)} port {int(ep.port)}")
        out.append(f"set server {server} state ready")
    return out


def all_commands(old: Mapping[str, tuple[Endpoint | None, ...]],
                 new: Mapping[str, tuple[Endpoint | None, ...]]) -> list[str]:
    out: list[str] = []
    for name in sorted(new):
        out += slot_commands(name, old.get(name, ()), new[name])
    return out
