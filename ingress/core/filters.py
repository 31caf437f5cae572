"""What a Gateway API rule does to a request besides choosing a backend (pure data).

Kept apart from ``ingress.gateway`` because an HAProxy backend carries its filters
(``ingress.core.model.Backend.gw``) and the core renders them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Redirect:
    scheme: str | None
    hostname: str | None
    port: int | None
    path: tuple[str, str] | None  # ("Full", value) or ("Prefix", value)
    status: int
    matched_prefix: str | None  # the rule's PathPrefix, for ReplacePrefixMatch


@dataclass(frozen=True, slots=True)
class Filters:
    """What a rule does to a request besides picking a backend (rendered per backend)."""

    req_set: tuple[tuple[str, str], ...] = ()
    req_add: tuple[tuple[str, str], ...] = ()
    req_remove: tuple[str, ...] = ()
    resp_set: tuple[tuple[str, str], ...] = ()
    resp_add: tuple[tuple[str, str], ...] = ()
    resp_remove: tuple[str, ...] = ()
    redirect: Redirect | None = None
    rewrite_host: str | None = None
    rewrite_path: tuple[str, str] | None = None  # ("Full", v) | ("Prefix", v)
    matched_prefix: str | None = None  # for a Prefix rewrite: the match's PathPrefix
    mode: str = "http"  # "tcp": a TLSRoute/TCPRoute backend (HAProxy mode tcp, no HTTP rules)
    send_proxy: bool = False  # PROXY protocol to the pods (tcp-services "::PROXY")
