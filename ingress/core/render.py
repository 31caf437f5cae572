"""Render the routing model to haproxy.cfg, map files and a crt-list (pure).

Layout. All paths in the config are relative to HAProxy's working directory (the live
config directory; the scratch directory during ``haproxy -c``), so one render serves both.

Routing per request (frontends ``http`` and ``https``, the same rules; each sets a constant
X-Forwarded-Proto). Fast paths first, for clients that send the host in normal form: the raw
Host header in ``roots.map`` (hosts whose only rule is Prefix "/": the host alone decides),
then ``base`` (raw Host + path) in ``exact.map`` and ``prefix.map``; otherwise the
normalised lookup below runs (same answer, more work):

1. ``txn.hk`` = host key: the Host (port stripped, lower-cased) if ``hosts.map`` has it, else
   ``*.<host minus first label>`` if ``hosts.map`` has that, else ``_`` (rules without host).
2. ``txn.key`` = host key + path. ``exact.map`` (tree lookup) holds Exact paths and the exact
   hit of every Prefix path; then regex routes (few, rendered as rules in length order); then
   ``prefix.map`` holds ``<host><prefix>/`` entries, written longest first, so that both
   HAProxy's first-match list and longest-match semantics give the longest prefix.
3. No match: ``default_backend`` is spec.defaultBackend or the built-in 404.

Quoting: one function per grammar. ``cfg_quote`` (haproxy.cfg: single quotes, in which
HAProxy performs no escape or variable expansion, so only ``'`` and control characters can
break out and both are refused), ``logfmt_quote`` (a literal inside a log-format argument,
e.g. ``redirect location``: ``%`` doubled, then single-quoted), ``replace_fmt_quote`` (the
``replace-path`` replacement: log-format plus numbered groups), ``cfg_name`` (proxy/server
identifiers), ``map_token`` (map file keys/values: no whitespace, no leading ``#``). Runtime
API lines are quoted in ``ingress.core.runtime``. Every helper raises ``UnsafeValue`` rather
than emitting an unsafe string: the model's allow-lists should make that unreachable, and
the tests prove it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from common.api.model import ObjectRef
from ingress.core.annotations import Annotations
from ingress.core.filters import Filters
from ingress.core.model import HOSTLESS, MIN_SLOTS, Backend, Endpoint, Model, Route
from ingress.errors import UnsafeValue

_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_MAP_RE = re.compile(r"[!-~]{1,2048}")  # printable ASCII without space
_CFG_RE = re.compile(r"[ -&(-~]{0,4096}")  # printable ASCII except "'"
_ADDR_RE = re.compile(r"[0-9a-fA-F.:]{1,45}")


def cfg_quote(value: str) -> str:
    if not _CFG_RE.fullmatch(value):
        raise UnsafeValue(f"refusing to quote {value[:80]!r} for haproxy.cfg")
    return "'" + value + "'"


def logfmt_quote(value: str) -> str:
    """A literal string as a log-format argument in haproxy.cfg (``redirect location``,
    ``set-header`` values, ...). HAProxy expands ``%ci``, ``%H``, ``%[sample]`` in these
    and a stray ``%`` fails the config check, so every ``%`` is doubled (``%%`` is a
    literal percent); then single-quoted as by ``cfg_quote`` (``'`` and control characters
    refused). Spaces, backslashes and ``"`` stay literal in these arguments (HAProxy 2.6,
    tests/ingress/test_security.py)."""
    if not _CFG_RE.fullmatch(value):
        raise UnsafeValue(f"refusing to quote {value[:80]!r} as a log-format literal")
    return "'" + value.replace("%", "%%") + "'"


_BACKREF_RE = re.compile(r"\\(?![1-9])")


def replace_fmt_quote(value: str) -> str:
    """The replacement of ``http-request replace-path``: a log-format string (see
    ``logfmt_quote``) whose result HAProxy's regex replacement reads again, where ``\\N``
    is group N and a backslash escapes. The value's ``\\1``-``\\9`` are the model's groups;
    any other backslash is refused."""
    if _BACKREF_RE.search(value[:4097]):
        raise UnsafeValue(f"backslash not before a group number in {value[:80]!r}")
    return logfmt_quote(value)


def cfg_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise UnsafeValue(f"not a safe HAProxy identifier: {value[:80]!r}")
    return value


def map_token(value: str) -> str:
    if not _MAP_RE.fullmatch(value) or value.startswith("#") or "\\" in value:
        raise UnsafeValue(f"not a safe map token: {value[:80]!r}")
    return value


@lru_cache(maxsize=200_000)
def _map_line(key: str, value: str) -> str:
    return f"{map_token(key)} {map_token(value)}\n"


def cfg_addr(ip: str, port: int) -> str:
    if not _ADDR_RE.fullmatch(ip) or not 0 < port < 65536:
        raise UnsafeValue(f"bad address {ip[:50]!r}:{port}")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True, slots=True)
class Settings:
    http_port: int = 80
    https_port: int = 443
    bind_addresses: tuple[str, ...] = ("0.0.0.0", "::")
    run_dir: str = "/var/run/portico-ingress/run"  # stats socket lives here
    metrics_bind: str | None = "0.0.0.0:10255"  # HAProxy's Prometheus exporter
    accept_proxy: bool = False  # PROXY protocol from an upstream L4 balancer
    # Old workers keep serving long-lived connections after a reload; cap how long (memory).
    hard_stop_after: str = "1h"
    threads: int = 0  # 0: HAProxy's default (one per CPU)
    # Pre-rendered empty backends that a new plain backend can take over at run time; when
    # all are in use the next new backend costs one reload, which frees them all again.
    spare_backends: int = 16


class _Owners(Mapping[int, ObjectRef]):
    """cfg line -> object it came from: single lines plus whole backend sections (ranges,
    so that 50,000 server lines cost nothing until a failed check asks)."""

    def __init__(self, single: dict[int, ObjectRef],
                 blocks: list[tuple[int, int, ObjectRef]]) -> None:
        self.single = single
        self.blocks = blocks
        self.starts = [b[0] for b in blocks]

    def __getitem__(self, line: int) -> ObjectRef:
        if line in self.single:
            return self.single[line]
        i = bisect.bisect_right(self.starts, line) - 1
        if i >= 0 and self.blocks[i][0] <= line <= self.blocks[i][1]:
            return self.blocks[i][2]
        raise KeyError(line)

    def __iter__(self) -> Iterator[int]:
        yield from self.single
        for first, last, _owner in self.blocks:
            yield from range(first, last + 1)

    def __len__(self) -> int:
        return len(self.single) + sum(b[1] - b[0] + 1 for b in self.blocks)

    def __contains__(self, line: object) -> bool:
        try:
            self[line]  # type: ignore[index]
        except KeyError:
            return False
        return True


@dataclass(frozen=True)
class Rendered:
    files: Mapping[str, str]  # relative file name -> text (haproxy.cfg, maps, crt-list)
    certs: Mapping[str, bytes]  # relative file name -> PEM
    owners: Mapping[int, ObjectRef] = field(default_factory=dict)  # cfg line -> source
    entries: Mapping[str, Mapping[str, str]] | None = None  # map file -> key -> value

    def structural(self) -> tuple[tuple[str, str], ...]:
        """Every file but the certificates' contents."""
        return tuple(sorted(self.files.items()))

    def fixed(self) -> tuple[str, ...]:
        """What decides a reload: haproxy.cfg and the crt-lists (maps change at run time)."""
        return (self.files.get(CFG, ""),
                *(v for k, v in sorted(self.files.items()) if k.endswith(".list")))

    @cached_property
    def parsed_maps(self) -> Mapping[str, Mapping[str, str]]:
        return self.entries if self.entries is not None else self.maps()

    def maps(self) -> dict[str, dict[str, str]]:
        """Map files as key -> value, for Runtime API diffs (``parsed_maps`` caches it)."""
        out: dict[str, dict[str, str]] = {}
        for name in MAP_FILES:
            entries: dict[str, str] = {}
            for line in self.files.get(name, "").splitlines():
                key, _, value = line.partition(" ")
                entries[key] = value
            out[name] = entries
        return out


CFG = "haproxy.cfg"
HOSTS_MAP = "hosts.map"
EXACT_MAP = "exact.map"
PREFIX_MAP = "prefix.map"
ROOTS_MAP = "roots.map"
CRT_LIST = "certs.list"
# Gateway API frontends' maps (ingress.gateway.render writes them; named here because
# every map the Runtime API updates is listed in MAP_FILES).
GW_LISTENERS_MAP = "gw-listeners.map"
GW_EXACT_MAP = "gw-exact.map"
GW_PREFIX_MAP = "gw-prefix.map"
GW_MAP_FILES = (GW_LISTENERS_MAP, GW_EXACT_MAP, GW_PREFIX_MAP)
MAP_FILES = ("hosts.map", "exact.map", "prefix.map", "roots.map", *GW_MAP_FILES)
DEFAULT_CERT = "certs/default.pem"
NOT_FOUND = "be__default_404"
SPARE_PREFIX = "be__spare_"  # '__' cannot come from a (DNS-label) namespace


def _server_lines(be: Backend, slots: int, assigned: tuple[Endpoint | None, ...]) -> list[str]:
    opts = ""
    if be.ann.backend_protocol == "HTTPS":
        # Upstream TLS to pods: certificates of pods are not verifiable by name here.
        opts += " ssl verify none"
    elif be.ann.backend_protocol == "GRPC":
        opts += " proto h2"
    if be.gw is not None and be.gw.send_proxy:
        opts += " send-proxy"
    lines = []
    for i in range(slots):
        ep = assigned[i] if i < len(assigned) else None
        cookie = f" cookie s{i + 1}" if be.ann.affinity_cookie else ""
        if ep is None:
            # Placeholder: a disabled slot the Runtime API fills with "set server ... addr".
            lines.append(f"    server s{i + 1} 127.0.0.1:1 disabled{cookie}{opts}")
        else:
            lines.append(f"    server s{i + 1} {cfg_addr(ep.ip, ep.port)}{cookie}{opts}")
    return lines


def _backend_lines(be: Backend, slots: int, assigned: tuple[Endpoint | None, ...]) -> list[str]:
    a = be.ann
    out = [f"backend {cfg_name(be.name)}", "    balance roundrobin"]
    if a.allow_sources:
        nets = " ".join(cfg_quote(n) for n in a.allow_sources)
        out.append(f"    http-request deny deny_status 403 if !{{ src {nets} }}")
    if be.ssl_redirect:
        out.append("    http-request redirect scheme https code 308 if !{ ssl_fc }")
    if a.permanent_redirect:
        out.append(f"    http-request redirect location {logfmt_quote(a.permanent_redirect)} "
                   "code 301")
    if a.body_limit:
        out += _body_limit_rules(int(a.body_limit))
    if be.gw is not None and be.gw.mode == "tcp":
        out.insert(1, "    mode tcp")
    elif be.gw is not None:
        out += filter_lines(be.gw)
    if be.rewrite:
        out.append(f"    http-request replace-path {cfg_quote(be.rewrite[0])} "
                   f"{replace_fmt_quote(be.rewrite[1])}")
    if a.connect_timeout_s:
        out.append(f"    timeout connect {int(a.connect_timeout_s)}s")
    if a.server_timeout_s:
        out.append(f"    timeout server {int(a.server_timeout_s)}s")
    if a.affinity_cookie:
        out.append(f"    cookie {cfg_name(a.affinity_cookie)} insert indirect nocache httponly")
    if a.body_limit:
        out.append(f"    filter lua.{BODY_FILTER} {int(a.body_limit)}")
    out += _server_lines(be, slots, assigned)
    return out


# proxy-body-size. Exactly what happens to a request of a backend with limit L:
# * Content-Length > L: 413 before anything is forwarded (any L).
# * No Content-Length (HTTP/1.1 chunked; HTTP/2 without the header), L < BUFFERED_BODY: the
#   request waits until L + 1 body bytes, the whole body or a full buffer are in; more than
#   L bytes then is a 413, before anything is forwarded. A client that needs more than
#   WAIT_BODY for that gets 408 (HAProxy 2.6 ends an expired wait-for-body so).
# * Every other body (L >= BUFFERED_BODY; or request headers so large that the buffer filled
#   before L + 1 body bytes) streams to the server through the Lua filter below, which
#   counts the bytes and aborts the transaction the moment they pass L: the server sees an
#   incomplete request and the client a closed connection without a response (HAProxy 2.6
#   cannot answer once the request went to the server). Waiting for L + 1 bytes only works
#   while they fit in the request buffer: tune.bufsize (16384, HAProxy's default, not set in
#   ``global``) less tune.maxrewrite (1024) less the request headers; BUFFERED_BODY leaves
#   3 KiB for headers. The filter runs for every request of a backend with a limit: about
#   10 us of proxy CPU per request measured (wrk, loopback), so only those backends have it.
BUFFERED_BODY = 12 * 1024
WAIT_BODY = "10s"
BODY_FILTER = "portico_body_limit"
BODY_LIMIT_LUA = "body_limit.lua"
_BODY_LIMIT_SRC = """\
-- Generated by portico ingress (ingress/core/render.py); edits are overwritten.
-- "filter lua.portico_body_limit <bytes>": counts the request body as it is forwarded and
-- aborts the transaction once more than <bytes> passed (the server never sees the end of
-- the request). Content-Length requests over the limit are refused by a 413 rule first.
local Limit = {}
Limit.id = "portico body limit"
Limit.flags = filter.FLT_CFG_FL_HTX
Limit.__index = Limit

function Limit:new()
  local f = setmetatable({}, Limit)
  f.limit = self.limit
  f.seen = 0
  return f
end

function Limit:start_analyze(txn, chn)
  if not chn:is_resp() then
    filter.register_data_filter(self, chn)
  end
  return filter.CONTINUE
end

function Limit:http_payload(txn, msg)
  local len = msg:input()
  if self.seen + len > self.limit then
    -- input() also counts the one-byte end-of-trailers block of a chunked message:
    -- near the limit, count the body bytes themselves.
    local data = msg:body(0, len)
    if self.seen + (data and #data or 0) > self.limit then
      txn:done()
      return 0
    end
  end
  self.seen = self.seen + len
  return len
end

core.register_filter("portico_body_limit", Limit, function(flt, args)
  flt.limit = tonumber(args[1])
  return flt
end)
"""


def _body_limit_rules(limit: int) -> list[str]:
    out = ["    http-request deny deny_status 413 if "
           f"{{ req.hdr_val(content-length) gt {limit} }}"]
    if limit < BUFFERED_BODY:
        no_length = "!{ req.hdr(content-length) -m found }"
        out.append(f"    http-request wait-for-body time {WAIT_BODY} at-least {limit + 1} "
                   f"if {no_length}")
        out.append(f"    http-request deny deny_status 413 if {no_length} "
                   f"{{ req.body_size gt {limit} }}")
    return out


_BLOCKS: dict[tuple[str, int, tuple[Endpoint | None, ...]], tuple[str, ...]] = {}
_MAX_BLOCKS = 100_000  # bound of the memo below (then it starts over)


def _backend_block(be: Backend, slots: int,
                   assigned: tuple[Endpoint | None, ...]) -> tuple[str, ...]:
    """Memoised: a resync of 10,000 backends re-renders only the ones that changed.

    Keyed by the backend's *name*, which already hashes everything that shapes the section
    (namespace, Service, port, annotations, redirect, rewrite): cheaper than hashing it.
    """
    key = (be.name, slots, assigned)
    block = _BLOCKS.get(key)
    if block is None:
        if len(_BLOCKS) >= _MAX_BLOCKS:
            _BLOCKS.clear()
        block = _BLOCKS[key] = tuple(_backend_lines(be, slots, assigned))
    return block


def _prefix_key(r: Route) -> str:
    return r.host + ("/" if r.path == "/" else r.path + "/")


def is_plain(be: Backend, slots: int) -> bool:
    """A backend a spare can stand in for: no per-backend options, the minimum slots."""
    return (slots == MIN_SLOTS and be.ann == Annotations() and not be.ssl_redirect
            and be.rewrite is None and be.gw is None)


def _spare_lines(name: str) -> list[str]:
    return [f"backend {cfg_name(name)}", "    balance roundrobin"] + [
        f"    server s{i + 1} 127.0.0.1:1 disabled" for i in range(MIN_SLOTS)]


def spare_name(i: int) -> str:
    return f"{SPARE_PREFIX}{i}"


def _routing_lines(hosts: list[str], regex: list[Route],
                   eff: Callable[[str], str]) -> Iterator[tuple[str, ObjectRef | None]]:
    """The frontend's routing, as ``use_backend`` rules (see the module docstring).

    Switching rules, not ``http-request`` rules: HAProxy evaluates every ``http-request``
    rule of a request (each one at least its condition, measured ~0.3 us apiece here), but
    stops at the first ``use_backend`` that matches, so a request decided by a fast path
    pays for nothing after it. A lookup's result is kept with the ``set-var`` converter in
    the condition and the rule names ``%[var(txn.be)]``: one lookup, and no window in which
    a Runtime API map change could make the name differ from the condition.
    """
    def use(lookup: str, pre: str = "") -> str:
        return f"    use_backend %[var(txn.be)] if {pre}{{ {lookup},set-var(txn.be) -m found }}"

    # Rules that only compute a variable for the rules below and never switch (``FALSE``);
    # the backend they name is never used.
    def compute(cond: str) -> str:
        return f"    use_backend {NOT_FOUND} if {cond} FALSE"

    # Hosts with only a Prefix "/" rule: the raw Host header is the roots.map key when the
    # client sent the host in normal form (any other spelling misses and takes the
    # normalised path below, with the same answer). A request without a path ("*", absolute
    # URI without one) matches no Prefix rule, so it must not be decided here. Rendered even
    # when roots.map is empty: its entries change at run time, the config must not.
    yield use(f"req.hdr(host),map_str({ROOTS_MAP})", "{ path -m beg / } "), None
    # Fast path: ``base`` is the raw Host header + path. When the client sent the host in
    # normal form (lower case, no port) and it has rules of its own, base equals the map key
    # and one or two lookups decide. Any other host cannot match (keys never contain ':'
    # or upper case; a literal "*.x" or "_" Host selects exactly what the slow path would),
    # so the slow path below then computes the normalised key. Skipped for prefixes when
    # regex routes exist, which rank between Exact and Prefix.
    yield use(f"base,map_str({EXACT_MAP})"), None
    if not regex:
        yield use(f"base,map_beg({PREFIX_MAP})"), None
    host = "req.hdr(host),field(1,:),lower"
    unset = "!{ var(txn.hk) -m found }"
    yield compute(f"{{ {host},map_str({HOSTS_MAP}),set-var(txn.hk) -m found }}"), None
    if any(h.startswith("*.") for h in hosts):
        # Wildcard: replace the first label by '*' (one label only, as the Ingress spec says).
        yield compute(f"{unset} {{ {host},regsub(^[^.]*,*),map_str({HOSTS_MAP}),"
                      "set-var(txn.hk) -m found }"), None
    yield compute(f"{unset} {{ str({HOSTLESS}),set-var(txn.hk) -m found }}"), None
    yield compute("{ path,set-var(txn.path) -m found }"), None
    key = "var(txn.hk),concat(,txn.path,)"
    yield use(f"{key},map_str({EXACT_MAP})"), None
    for r in sorted(regex, key=lambda r: (-len(r.path), r.host, r.path)):
        yield (f"    use_backend {cfg_name(eff(r.backend))} if "
               f"{{ var(txn.hk) -m str {cfg_quote(r.host)} }} "
               f"{{ path -m reg {cfg_quote('^' + r.path.lstrip('^'))} }}", r.owner)
    yield use(f"{key},map_beg({PREFIX_MAP})"), None


def render(model: Model, slots: Mapping[str, int],
           assigned: Mapping[str, tuple[Endpoint | None, ...]] | None,
           settings: Settings, aliases: Mapping[str, str] | None = None) -> Rendered:
    """Everything HAProxy reads. ``assigned=None`` renders all slots empty (fingerprint).

    ``aliases`` maps new plain backends to spare backends already running, so that a new
    Ingress (even with a new Service) goes live through Runtime API map and server commands
    without a reload; aliased backends get no section of their own, every reference to them
    names the spare. The next reload renders them for real (``aliases`` empty).
    """
    s = settings
    alias = aliases or {}

    def eff(name: str) -> str:
        return alias.get(name, name)

    hosts = sorted({r.host for r in model.routes if r.host != HOSTLESS})
    exact: dict[str, str] = {}
    prefix: dict[str, str] = {}
    regex: list[Route] = []
    for r in model.routes:
        if r.kind == "Exact":
            exact[r.host + r.path] = eff(r.backend)
    for r in model.routes:
        if r.kind == "Prefix":
            exact.setdefault(r.host + r.path if r.path != "/" else r.host + "/", eff(r.backend))
            prefix[_prefix_key(r)] = eff(r.backend)
        elif r.kind == "Regex":
            regex.append(r)
    # Hosts whose only rule is Prefix "/": every request path goes to one backend, so the
    # Host header alone decides (one tree lookup, no path work, see ``_routing_lines``).
    per_host: dict[str, list[Route]] = {}
    for r in model.routes:
        per_host.setdefault(r.host, []).append(r)
    roots = {h: eff(rs[0].backend) for h, rs in per_host.items()
             if h != HOSTLESS and not h.startswith("*.") and len(rs) == 1
             and rs[0].kind == "Prefix" and rs[0].path == "/"}
    files: dict[str, str] = {
        HOSTS_MAP: "".join(_map_line(h, h) for h in hosts),
        EXACT_MAP: "".join(_map_line(k, v) for k, v in sorted(exact.items())),
        PREFIX_MAP: "".join(
            _map_line(k, v)
            for k, v in sorted(prefix.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        ),
        ROOTS_MAP: "".join(_map_line(k, v) for k, v in sorted(roots.items())),
    }
    certs = {f"certs/{c.name}.pem": c.pem for c in model.certs}
    sni_certs = [c for c in model.certs if c.scope == "ingress"]  # not Gateway listeners'
    if sni_certs:
        files[CRT_LIST] = "".join(
            f"certs/{cfg_name(c.name)}.pem {' '.join(map_token(h) for h in c.hosts)}\n"
            for c in sni_certs
        )

    lines: list[str] = []
    owners: dict[int, ObjectRef] = {}
    blocks: list[tuple[int, int, ObjectRef]] = []  # backend sections: first, last line, owner

    def emit(text: str, owner: ObjectRef | None = None) -> None:
        lines.append(text)
        if owner is not None:
            owners[len(lines)] = owner

    emit("# Generated by portico ingress; edits are overwritten.")
    emit("global")
    emit(f"    stats socket {cfg_quote(s.run_dir + '/admin.sock')} mode 600 level admin "
         "expose-fd listeners")
    emit("    stats timeout 2m")
    emit(f"    hard-stop-after {cfg_name(s.hard_stop_after)}")
    if s.threads:
        emit(f"    nbthread {int(s.threads)}")
    emit("    ssl-default-bind-options ssl-min-ver TLSv1.2")
    emit("    tune.ssl.default-dh-param 2048")
    if any(be.ann.body_limit for name, be in model.backends.items() if name not in alias):
        emit(f"    lua-load-per-thread {BODY_LIMIT_LUA}")  # the proxy-body-size filter
        files[BODY_LIMIT_LUA] = _BODY_LIMIT_SRC
    emit("defaults")
    emit("    mode http")
    emit("    option forwardfor")
    # A connection refused by an endpoint that just went away is retried on another one.
    emit("    retries 3")
    emit("    option redispatch 1")
    # Measured (LAB-NOTES): zero errors on reload under keep-alive load with this option.
    emit("    option idle-close-on-response")
    emit("    timeout connect 5s")
    emit("    timeout client 60s")
    emit("    timeout server 60s")
    emit("    timeout http-request 10s")
    emit("    timeout http-keep-alive 60s")
    # WebSockets and other upgraded connections: idle timeout once both sides are tunnelled.
    emit("    timeout tunnel 1h")
    emit("    timeout client-fin 10s")
    if s.metrics_bind:
        emit("frontend stats")
        emit(f"    bind {cfg_name(s.metrics_bind)}")
        emit("    http-request use-service prometheus-exporter if { path /metrics }")
        emit("    stats enable")
        emit("    stats uri /stats")
        emit("    stats refresh 10s")
    proxy = " accept-proxy" if s.accept_proxy else ""
    crt = f" crt {DEFAULT_CERT}" + (f" crt-list {CRT_LIST}" if CRT_LIST in files else "")
    # Two frontends with the same routing rules instead of one that asks ``ssl_fc`` on every
    # request: each one's X-Forwarded-Proto is a constant (a client-sent value is replaced).
    for fe, port, tls, scheme in (("http", s.http_port, "", "http"),
                                  ("https", s.https_port, f" ssl{crt} alpn h2,http/1.1",
                                   "https")):
        emit(f"frontend {fe}")
        for addr in s.bind_addresses:
            v6 = " v6only" if ":" in addr else ""
            emit(f"    bind {cfg_addr(addr, port)}{v6}{tls}{proxy}")
        emit(f"    http-request set-header X-Forwarded-Proto {scheme}")
        for text, owner in _routing_lines(hosts, regex, eff):
            emit(text, owner)
        emit(f"    default_backend {cfg_name(eff(model.default_backend or NOT_FOUND))}")
    emit(f"backend {NOT_FOUND}")
    emit('    http-request return status 404 content-type text/plain string "404 not found"')
    first_owner: dict[str, ObjectRef] = {}
    for r in model.routes:
        first_owner.setdefault(r.backend, r.owner)
    for i in range(s.spare_backends):
        for text in _spare_lines(spare_name(i)):
            emit(text)
    for name, be in model.backends.items():  # the model keeps them sorted by name
        if name in alias:
            continue
        n = slots.get(name, MIN_SLOTS)
        got = (assigned or {}).get(name, ())
        owner = first_owner.get(name) or ObjectRef("Service", be.service, be.namespace)
        block = _backend_block(be, n, got)
        blocks.append((len(lines) + 1, len(lines) + len(block), owner))
        lines.extend(block)
    files[CFG] = "\n".join(lines) + "\n"
    entries = {HOSTS_MAP: {h: h for h in hosts}, EXACT_MAP: exact, PREFIX_MAP: prefix,
               ROOTS_MAP: roots}
    return Rendered(files, certs, _Owners(owners, blocks), entries)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _prefix_swap(prefix: str, replacement: str) -> list[str]:
    """Replace a matched PathPrefix element-wise (Gateway API ReplacePrefixMatch)."""
    base = prefix.rstrip("/")
    new = replacement.rstrip("/")
    if not base:  # prefix "/": everything is the rest
        return [f"    http-request replace-path {cfg_quote('^/(.*)$')} "
                f"{replace_fmt_quote(new + '/' + chr(92) + '1')}"]
    return [
        f"    http-request set-path {logfmt_quote(new or '/')} "
        f"if {{ path -m str {cfg_quote(base)} }}",
        f"    http-request replace-path {cfg_quote('^' + re.escape(base) + '/(.*)$')} "
        f"{replace_fmt_quote(new + '/' + chr(92) + '1')}",
    ]


def filter_lines(f: Filters) -> list[str]:
    """A Gateway API rule's filters as backend rules (values quoted for log-format)."""
    out: list[str] = []
    r = f.redirect
    if r is not None:
        if r.path is not None:
            if r.path[0] == "Full":
                out.append(f"    http-request set-path {logfmt_quote(r.path[1])}")
            elif r.matched_prefix is not None:
                out += _prefix_swap(r.matched_prefix, r.path[1])
        scheme = logfmt_quote(r.scheme)[1:-1] if r.scheme else "%[ssl_fc,iif(https,http)]"
        host = logfmt_quote(r.hostname)[1:-1] if r.hostname else "%[req.hdr(host),field(1,:)]"
        if r.port is not None:
            if r.scheme:
                port = "" if r.port == _default_port(r.scheme) else f":{int(r.port)}"
            elif r.port in (80, 443):
                port = ("%[ssl_fc,iif(:80,)]" if r.port == 80 else "%[ssl_fc,iif(,:443)]")
            else:
                port = f":{int(r.port)}"
        elif r.scheme:
            port = ""
        else:
            port = "%[var(txn.lport)]"
        loc = f"{scheme}://{host}{port}%[path]"
        out.append(f"    http-request redirect location '{loc}?%[query]' code {int(r.status)} "
                   "if { query -m found } { query -m len gt 0 }")
        out.append(f"    http-request redirect location '{loc}' code {int(r.status)}")
        return out
    for rule, remove, set_, add in (("http-request", f.req_remove, f.req_set, f.req_add),
                                    ("http-response", f.resp_remove, f.resp_set, f.resp_add)):
        out += [f"    {rule} del-header {cfg_name(name)}" for name in remove]
        for verb, pairs in (("set-header", set_), ("add-header", add)):
            out += [f"    {rule} {verb} {cfg_name(name)} {logfmt_quote(value)}"
                    for name, value in pairs]
    if f.rewrite_host:
        out.append(f"    http-request set-header Host {logfmt_quote(f.rewrite_host)}")
    if f.rewrite_path is not None:
        if f.rewrite_path[0] == "Full":
            out.append(f"    http-request set-path {logfmt_quote(f.rewrite_path[1])}")
        elif f.matched_prefix is not None:
            out += _prefix_swap(f.matched_prefix, f.rewrite_path[1])
    return out


def extend(base: Rendered, lines: list[tuple[str, ObjectRef | None]],
           maps: Mapping[str, Mapping[str, str]], files: Mapping[str, str]) -> Rendered:
    """``base`` plus more sections at the end of haproxy.cfg, more maps and more files."""
    cfg = base.files[CFG].rstrip("\n").split("\n")
    owners = base.owners
    single = dict(owners.single) if isinstance(owners, _Owners) else dict(owners)
    blocks = owners.blocks if isinstance(owners, _Owners) else []
    for text, owner in lines:
        cfg.append(text)
        if owner is not None:
            single[len(cfg)] = owner
    out = {**base.files, **files, CFG: "\n".join(cfg) + "\n"}
    entries = {k: dict(v) for k, v in base.parsed_maps.items()}
    for name, table in maps.items():
        out[name] = "".join(_map_line(k, v) for k, v in
                            sorted(table.items(), key=lambda kv: (-len(kv[0]), kv[0])))
        entries[name] = dict(table)
    return Rendered(out, base.certs, _Owners(single, blocks), entries)

