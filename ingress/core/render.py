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
break out and both are refused), ``cfg_name`` (proxy/server identifiers), ``map_token`` (map
file keys/values: no whitespace, no leading ``#``). Runtime API lines are quoted in
``ingress.core.runtime``. Every helper raises ``UnsafeValue`` rather than emitting an unsafe
string: the model's allow-lists should make that unreachable, and the tests prove it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from common.api.model import ObjectRef
from ingress.core.annotations import Annotations
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

    def fixed(self) -> tuple[str, str]:
        """What decides a reload: haproxy.cfg and the crt-list (maps change at run time)."""
        return (self.files.get(CFG, ""), self.files.get(CRT_LIST, ""))

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
MAP_FILES = ("hosts.map", "exact.map", "prefix.map", "roots.map")
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
        out.append(f"    http-request redirect location {cfg_quote(a.permanent_redirect)} code 301")
    if a.body_limit:
        out.append("    http-request deny deny_status 413 if "
                   f"{{ req.hdr_val(content-length) gt {int(a.body_limit)} }}")
    if be.rewrite:
        out.append(f"    http-request replace-path {cfg_quote(be.rewrite[0])} "
                   f"{cfg_quote(be.rewrite[1])}")
    if a.connect_timeout_s:
        out.append(f"    timeout connect {int(a.connect_timeout_s)}s")
    if a.server_timeout_s:
        out.append(f"    timeout server {int(a.server_timeout_s)}s")
    if a.affinity_cookie:
        out.append(f"    cookie {cfg_name(a.affinity_cookie)} insert indirect nocache httponly")
    out += _server_lines(be, slots, assigned)
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
            and be.rewrite is None)


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
    if model.certs:
        files[CRT_LIST] = "".join(
            f"certs/{cfg_name(c.name)}.pem {' '.join(map_token(h) for h in c.hosts)}\n"
            for c in model.certs
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
    crt = f" crt {DEFAULT_CERT}" + (f" crt-list {CRT_LIST}" if model.certs else "")
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
