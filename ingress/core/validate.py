"""Allow-lists for every user-supplied string that can reach HAProxy (pure).

Why allow-lists and not escaping: the strings end up in three grammars (haproxy.cfg, map
files, Runtime API lines) and in file names; a value that only contains characters that are
inert in all of them needs no escaping at all, and anything else is rejected with a
FieldProblem naming the field. Every check bounds the length first so that a 1 MB string
costs one comparison, not a regex scan. One character needs escaping all the same: '%',
allowed in rewrite targets and redirect URLs, is live in HAProxy's log-format arguments
(``redirect location``, ``replace-path``); ``render.logfmt_quote`` doubles it there.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

# RFC 1123 label: 63 characters max (RFC 1035 2.3.4); a full host name 253.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_WILDCARD_RE = re.compile(rf"\*\.{_LABEL}(?:\.{_LABEL})*")
# Kubernetes DNS-1123 subdomain (object names) and label (namespaces, Service names).
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DNS_LABEL_RE = re.compile(_LABEL)
# IANA_SVC_NAME: at most 15 characters, lower-case alphanumerics and '-', one letter at least.
_PORT_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?")
# Path characters: RFC 3986 unreserved plus the sub-delims that are inert in every HAProxy
# grammar we emit. Deliberately excluded: space, '#', '$', quotes, ';', '\\', '{', '}', '?'.
_PATH_RE = re.compile(r"/[A-Za-z0-9/._~%!*+,:@=&-]*")
_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Regex paths (ImplementationSpecific + use-regex): the path set plus regex metacharacters.
# '$' is inert in haproxy.cfg single quotes (and '{' stays forbidden, so no "${X}");
# '\\' only before a punctuation character.
_REGEX_RE = re.compile(r"/[A-Za-z0-9/._~%!*+,:@=&()|?^$\[\]\\-]*")
_COOKIE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

_IPV4ISH_RE = re.compile(r"[0-9.]+")
# The checks are pure functions of a string: memoised, since a 10,000-Ingress resync sees
# the same hosts and paths again (bounded caches; a hostile 1 MB value is rejected by the
# length check before it could be cached as a key of consequence).
_CACHE = 65536

MAX_HOST = 253
MAX_PATH = 1024  # longer paths are not useful routing keys and bloat the maps
MAX_NAME = 253


@lru_cache(maxsize=_CACHE)
def host_problem(host: str) -> str | None:
    """None if ``host`` is a valid Ingress host (exact or ``*.`` wildcard), else why not."""
    if not host:
        return "must not be empty"
    if len(host) > MAX_HOST:
        return f"longer than {MAX_HOST} characters"
    if host != host.lower():
        return "must be lower case"
    if host.startswith("*"):
        if not _WILDCARD_RE.fullmatch(host):
            return "wildcard must be '*.' followed by an RFC 1123 name"
        return None
    if not _HOST_RE.fullmatch(host):
        return "not an RFC 1123 host name"
    if _IPV4ISH_RE.fullmatch(host):  # IPv6 cannot pass the host pattern (no ':')
        return "must be a host name, not an IP address"
    return None


@lru_cache(maxsize=_CACHE)
def path_problem(path: str) -> str | None:
    if len(path) > MAX_PATH:
        return f"longer than {MAX_PATH} characters"
    if not path.startswith("/"):
        return "must start with '/'"
    if not _PATH_RE.fullmatch(path):
        return "contains characters outside [A-Za-z0-9/._~%!*+,:@=&-]"
    if _PCT_RE.search(path):
        return "'%' must start a two-digit hex escape"
    # '..' anywhere (not only as a segment): HAProxy routes on the raw path while backends
    # normalise it, the classic way around a path-based allow-list.
    if ".." in path or "." in path.split("/"):
        return "must not contain '..' or '.' segments"
    if "//" in path:
        return "must not contain empty segments ('//')"
    # Refused by the API server's own validation too (with '//', '/./', '/../'): an encoded
    # '/' makes HAProxy's segment boundaries differ from those of a decoding backend.
    if "%2f" in path.lower():
        return "must not contain '%2F' (an encoded '/')"
    return None


# Absolute http(s) URL (permanent-redirect): RFC 3986 characters except "'" (it would end
# the haproxy.cfg quote). '%' reaches HAProxy only doubled (render.logfmt_quote).
_URL_CHARS_RE = re.compile(r"[A-Za-z0-9._~%!$&()*+,;=:@/?#\[\]-]*")
_URL_RE = re.compile(r"(?i:https?)://([^/?#]*)(/[^?#]*)?(\?[^#]*)?(#.*)?")
_AUTHORITY_RE = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[^:\[\]]+)(?::([0-9]{1,5}))?")
MAX_URL = 2048


@lru_cache(maxsize=_CACHE)
def redirect_url_problem(url: str) -> str | None:
    """None if ``url`` is an absolute http(s) URL (query and fragment allowed), else why not."""
    if len(url) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    m = _URL_RE.fullmatch(url)
    if m is None:
        return "must be an absolute http:// or https:// URL"
    if not _URL_CHARS_RE.fullmatch(url):
        return "contains characters outside RFC 3986 (or a quote)"
    if _PCT_RE.search(url):
        return "'%' must start a two-digit hex escape"
    authority = m.group(1)
    if "@" in authority:
        return "must not contain user information ('user@')"
    a = _AUTHORITY_RE.fullmatch(authority)
    if a is None:
        return "bad host or port"
    host, port = a.group(1), a.group(2)
    if port is not None and not 1 <= int(port) <= 65535:
        return "port must be 1 to 65535"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "not an IPv6 address in brackets"
        return None
    if _IPV4ISH_RE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "not an IPv4 address"
        return None
    if len(host) > MAX_HOST or not _HOST_RE.fullmatch(host.lower()):
        return "host is not an RFC 1123 name"
    return None


@lru_cache(maxsize=_CACHE)
def regex_problem(pattern: str) -> str | None:
    if len(pattern) > MAX_PATH:
        return f"longer than {MAX_PATH} characters"
    if not _REGEX_RE.fullmatch(pattern):
        return "regex must start with '/' and use only [A-Za-z0-9/._~%!*+,:@=&()|?^$[]\\-]"
    if re.search(r"\\[A-Za-z0-9]", pattern):
        return "backslash may only escape punctuation"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


@lru_cache(maxsize=_CACHE)
def name_problem(name: str) -> str | None:
    """Object names (DNS-1123 subdomain)."""
    if not name or len(name) > MAX_NAME:
        return "must be 1 to 253 characters"
    if not _SUBDOMAIN_RE.fullmatch(name):
        return "not a DNS-1123 subdomain"
    return None


@lru_cache(maxsize=_CACHE)
def label_problem(name: str) -> str | None:
    """Namespaces and Service names (DNS-1123 label)."""
    if not name or len(name) > 63:
        return "must be 1 to 63 characters"
    if not _DNS_LABEL_RE.fullmatch(name):
        return "not a DNS-1123 label"
    return None


def port_name_problem(name: str) -> str | None:
    if not name or len(name) > 15 or not _PORT_NAME_RE.fullmatch(name):
        return "not an IANA service name (1-15 of [a-z0-9-])"
    if not re.search(r"[a-z]", name):
        return "must contain a letter"
    return None


def cookie_problem(name: str) -> str | None:
    if not _COOKIE_RE.fullmatch(name[:65]) or len(name) > 64:
        return "must be 1 to 64 of [A-Za-z0-9_-]"
    return None


@lru_cache(maxsize=_CACHE)
def valid_ip(text: str) -> bool:
    """Endpoint addresses (from EndpointSlices) go into Runtime API lines: IPs only."""
    if len(text) > 45:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
