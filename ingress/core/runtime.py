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
from ingress.errors import UnsafeToken

# Only space, tab, ';', '\\' and line ends have a meaning in the Runtime API grammar; the
# allow-list is the character set of identifiers, IPs, host names and allow-listed paths.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:/*~%!+,@=&-]{1,2100}")


def runtime_token(value: str) -> str:
    if not _TOKEN_RE.fullmatch(value):
        raise UnsafeToken(f"unsafe Runtime API token {value[:80]!r}")
    return value


def slot_commands(backend: str, old: tuple[Endpoint | None, ...],
                  new: tuple[Endpoint | None, ...]) -> list[str]:
    """Commands turning slot state ``old`` into ``new`` (same slot count), only changes.

    Order matters under load: first enable slots that were empty, then move slots to new
    addresses, and only then put removed endpoints into maintenance, so the backend never
    passes through a moment with no ready server (which would answer 503).
    """
    b = runtime_token(backend)
    fill: list[str] = []
    move: list[str] = []
    drain: list[str] = []
    for i, ep in enumerate(new):
        before = old[i] if i < len(old) else None
        if ep == before:
            continue
        server = f"{b}/s{i + 1}"
        if ep is None:
            drain.append(f"set server {server} state maint")
            continue
        target = fill if before is None else move
        if before is not None:
            # Moving an active slot: take it out first so no new request goes to it while
            # its address changes.
            target.append(f"set server {server} state maint")
        target.append(f"set server {server} addr {runtime_token(ep.ip)} port {int(ep.port)}")
        target.append(f"set server {server} state ready")
    return fill + move + drain


def all_commands(old: Mapping[str, tuple[Endpoint | None, ...]],
                 new: Mapping[str, tuple[Endpoint | None, ...]]) -> list[str]:
    out: list[str] = []
    for name in sorted(new):
        before = old.get(name, ())
        if before is not new[name]:  # assign_slots returns the same tuple when unchanged
            out += slot_commands(name, before, new[name])
    return out


def map_commands(old: Mapping[str, Mapping[str, str]],
                 new: Mapping[str, Mapping[str, str]]) -> tuple[list[str], list[str]]:
    """(adds and sets, deletions) turning map contents ``old`` into ``new``.

    Adds go to the path maps before the host map (a host becomes visible only once its
    paths are there), and roots.map (a host's complete routing on its own) last, so that a
    host gaining paths keeps its old routing until they are all in; deletions go the other
    way round.
    """
    adds: list[str] = []
    dels: list[str] = []
    for name in ("exact.map", "prefix.map", "hosts.map", "roots.map",
                 "gw-exact.map", "gw-prefix.map", "gw-listeners.map"):
        o, n = old.get(name, {}), new.get(name, {})
        f = runtime_token(name)
        for key in sorted(n):
            if key not in o:
                adds.append(f"add map {f} {runtime_token(key)} {runtime_token(n[key])}")
            elif o[key] != n[key]:
                adds.append(f"set map {f} {runtime_token(key)} {runtime_token(n[key])}")
    for name in ("roots.map", "hosts.map", "exact.map", "prefix.map",
                 "gw-listeners.map", "gw-exact.map", "gw-prefix.map"):
        o, n = old.get(name, {}), new.get(name, {})
        f = runtime_token(name)
        dels += [f"del map {f} {runtime_token(key)}" for key in sorted(o) if key not in n]
    return adds, dels
