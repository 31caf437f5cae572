"""Ingress annotations: parse and strictly validate (pure).

Names live under ``ingress.portico.dev/``; the ``nginx.ingress.kubernetes.io/`` spelling of
the same key is accepted for migration (the portico name wins when both are set). Every value
is checked for type, range and characters; an invalid value rejects the whole Ingress
(fail closed: ignoring a bad ``allowlist-source-range`` would open a backend to everyone).
Unknown nginx annotations yield a warning and are otherwise ignored; there is no snippet
feature at all.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ingress.core.validate import cookie_problem, redirect_url_problem

PORTICO = "ingress.portico.dev/"
NGINX = "nginx.ingress.kubernetes.io/"

Protocol = Literal["HTTP", "HTTPS", "GRPC"]

SUPPORTED = (
    "ssl-redirect", "force-ssl-redirect", "backend-protocol", "proxy-body-size",
    "proxy-connect-timeout", "proxy-read-timeout", "proxy-send-timeout",
    "whitelist-source-range", "allowlist-source-range", "affinity", "session-cookie-name",
    "rewrite-target", "use-regex", "permanent-redirect",
)
MAX_VALUE = 4096  # longest accepted annotation value (a source-range list of 64 CIDRs fits)
MAX_TIMEOUT_S = 3600  # one hour: longer idle HTTP timeouts only hide dead peers
MAX_BODY = 64 * 1024**3  # 64 GiB
MAX_RANGES = 64
_BODY_RE = re.compile(r"([0-9]{1,12})([kKmMgG]?)")
_TIMEOUT_RE = re.compile(r"([0-9]{1,5})(s?)")
_REWRITE_RE = re.compile(r"/[A-Za-z0-9/._~%!*+,:@=&-]*(?:\$[1-9][A-Za-z0-9/._~%!*+,:@=&-]*)*")


@dataclass(frozen=True, slots=True)
class Annotations:
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    backend_protocol: Protocol = "HTTP"
    body_limit: int | None = None  # bytes; None = unlimited
    connect_timeout_s: int | None = None
    server_timeout_s: int | None = None
    allow_sources: tuple[str, ...] = ()
    affinity_cookie: str | None = None
    rewrite_target: str | None = None
    use_regex: bool = False
    permanent_redirect: str | None = None


@dataclass(frozen=True, slots=True)
class AnnotationResult:
    value: Annotations
    errors: tuple[tuple[str, str], ...]  # (annotation key, message): reject the Ingress
    warnings: tuple[tuple[str, str], ...]  # (annotation key, message): Event only


class _Bad(str):
    """A validation failure message (distinguishes errors from valid string values)."""


def _bool(v: str) -> bool | _Bad:
    if v in ("true", "false"):
        return v == "true"
    return _Bad("must be 'true' or 'false'")


def _timeout(v: str) -> int | _Bad:
    m = _TIMEOUT_RE.fullmatch(v)
    if not m or not 1 <= int(m.group(1)) <= MAX_TIMEOUT_S:
        return _Bad(f"must be whole seconds from 1 to {MAX_TIMEOUT_S}")
    return int(m.group(1))


def _body(v: str) -> int | _Bad | None:
    m = _BODY_RE.fullmatch(v)
    if not m:
        return _Bad("must be a size such as 8m, 512k or 0 (unlimited)")
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    if n > MAX_BODY:
        return _Bad("larger than 64g")
    return n or None


def _ranges(v: str) -> tuple[str, ...] | _Bad:
    parts = [p.strip() for p in v.split(",") if p.strip()]
    if not parts or len(parts) > MAX_RANGES:
        return _Bad(f"must list 1 to {MAX_RANGES} CIDRs")
    out: list[str] = []
    for p in parts:
        if len(p) > 49 or not re.fullmatch(r"[0-9a-fA-F.:/]+", p):
            return _Bad("not a comma-separated list of CIDRs")
        try:
            out.append(str(ipaddress.ip_network(p, strict=False)))
        except ValueError:
            return _Bad(f"not a CIDR: {p!r}")
    return tuple(sorted(set(out)))


def _check(short: str, value: str) -> object:
    if short in ("ssl-redirect", "force-ssl-redirect", "use-regex"):
        return _bool(value)
    if short == "backend-protocol":
        up = value.upper()
        return up if up in ("HTTP", "HTTPS", "GRPC") else _Bad("must be HTTP, HTTPS or GRPC")
    if short == "proxy-body-size":
        return _body(value)
    if short.endswith("-timeout"):
        return _timeout(value)
    if short.endswith("-source-range"):
        return _ranges(value)
    if short == "affinity":
        return value if value == "cookie" else _Bad("only 'cookie' is supported")
    if short == "session-cookie-name":
        problem = cookie_problem(value)
        return _Bad(f"cookie name {problem}") if problem else value
    if short == "rewrite-target":
        if _REWRITE_RE.fullmatch(value) and ".." not in value:
            return value
        return _Bad("must be a path of [A-Za-z0-9/._~%!*+,:@=&-] without '..', with optional "
                    "$1 to $9 groups")
    # permanent-redirect
    problem = redirect_url_problem(value)
    return _Bad(problem) if problem else value


def parse_annotations(annotations: dict[str, str]) -> AnnotationResult:
    """Validate the annotations of one Ingress."""
    relevant = tuple(sorted(
        (k, v) for k, v in annotations.items()
        if isinstance(k, str) and isinstance(v, str) and (
            k.startswith(PORTICO) or k.startswith(NGINX))
    ))
    return _parse(relevant)


# Annotations whose validated value goes unchanged into one Annotations field.
_DIRECT_FIELDS = {
    "ssl-redirect": "ssl_redirect",
    "force-ssl-redirect": "force_ssl_redirect",
    "backend-protocol": "backend_protocol",
    "proxy-body-size": "body_limit",
    "proxy-connect-timeout": "connect_timeout_s",
    "rewrite-target": "rewrite_target",
    "use-regex": "use_regex",
    "permanent-redirect": "permanent_redirect",
}


@lru_cache(maxsize=4096)
def _parse(items: tuple[tuple[str, str], ...]) -> AnnotationResult:
    """Memoised: most Ingresses share a handful of annotation sets (often none)."""
    annotations = dict(items)
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    raw: dict[str, tuple[str, str]] = {}  # short name -> (full key, value)
    for key, value in sorted(annotations.items()):
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        for prefix in (NGINX, PORTICO):  # portico processed last, so it wins
            if key.startswith(prefix):
                short = key[len(prefix):]
                if short in SUPPORTED:
                    if short not in raw or prefix == PORTICO:
                        raw[short] = (key, value)
                elif "snippet" in short:
                    warnings.append((key[:200], "snippets are not supported and are ignored"))
                elif prefix == NGINX:
                    warnings.append((key[:200], "unsupported nginx annotation, ignored"))
                else:
                    warnings.append((key[:200], "unknown annotation, ignored"))
    fields: dict[str, object] = {}
    for short, (key, value) in raw.items():
        if len(value) > MAX_VALUE:
            errors.append((key, f"value longer than {MAX_VALUE} characters"))
            continue
        result = _check(short, value)
        if isinstance(result, _Bad):
            errors.append((key, str(result)))
        else:
            fields[short] = result
    kw: dict[str, object] = {
        attr: fields[key] for key, attr in _DIRECT_FIELDS.items() if key in fields
    }
    server = [fields[k] for k in ("proxy-read-timeout", "proxy-send-timeout") if k in fields]
    if server:
        # HAProxy has one server-side inactivity timeout for both directions: take the larger.
        kw["server_timeout_s"] = max(int(str(s)) for s in server)
    ranges = [fields[k] for k in ("allowlist-source-range", "whitelist-source-range")
              if k in fields]
    if ranges:
        kw["allow_sources"] = ranges[0]  # allowlist-* (listed first) wins over whitelist-*
    if fields.get("affinity") == "cookie":
        kw["affinity_cookie"] = str(fields.get("session-cookie-name", "PORTICO_AFFINITY"))
    elif "session-cookie-name" in fields:
        warnings.append((PORTICO + "session-cookie-name", "ignored without affinity=cookie"))
    ann = Annotations(**kw)  # type: ignore[arg-type]
    return AnnotationResult(ann, tuple(errors), tuple(warnings))
