"""Gateway frontends for haproxy.cfg, their maps and crt-lists (pure).

One frontend per (Gateway, port), bound on the pod port the Gateway's Service targets.
Per request:

1. ``txn.h`` = Host (port stripped, lower case). The listener: ``gw-listeners.map`` keyed
   ``<pod port>~<hostname>`` for the exact host, then ``<pod port>~*.<last m labels>`` for
   each wildcard depth m present (longest first), then ``<pod port>~_`` (a listener without
   hostname). A request never reaches the rules of another listener (listener isolation).
2. Listeners whose rules all decide on host + path with one backend ("map listeners") are
   looked up in ``gw-exact.map`` / ``gw-prefix.map`` keyed ``<listener>~<route host><path>``
   for the exact host, then each wildcard depth, then ``_``: the route hostname precedence
   of the spec, and entries that change at run time without a reload (a new route to a new
   Service takes a spare backend, as for Ingresses).
3. Other listeners ("rule listeners": header, query, method or regex matches, weighted
   backends, 500 answers) get ``use_backend`` rules in the spec's precedence order, each
   conditioned on its listener.
4. Nothing matched: 404 (the spec's answer for an unmatched request).

Weighted splits draw one random number per request (``txn.rnd``) and compare it with the
cumulative weights of the rule, so each request is counted once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from common.api.model import ObjectRef
from ingress.core.model import prefix_regex
from ingress.core.render import (
    GW_EXACT_MAP,
    GW_LISTENERS_MAP,
    GW_MAP_FILES,
    GW_PREFIX_MAP,
    NOT_FOUND,
    cfg_addr,
    cfg_name,
    cfg_quote,
)
from ingress.gateway.model import Frontend, GatewayPlan, Rule

GW_500 = "be__gw_500"
RAND_SCALE = 1_000_000
_TOKEN = re.compile(r"[A-Za-z0-9!#$&*+.^_`|~-]{1,256}")


def crt_list_name(fe: Frontend) -> str:
    return f"gw-{fe.target_port}.list"


def _token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"not a header/parameter token: {value[:60]!r}")
    return value


def _depths(hosts: Iterable[str]) -> list[int]:
    """Label counts of the wildcard suffixes present, longest first."""
    return sorted({h.count(".") for h in hosts if h.startswith("*.")}, reverse=True)


def _host_cond(host: str) -> str:
    if host == "_":
        return ""
    if host.startswith("*."):
        return f" {{ var(txn.h) -m end {cfg_quote(host[1:])} }}"
    return f" {{ var(txn.h) -m str {cfg_quote(host)} }}"


def _match_conds(r: Rule) -> str:
    m = r.match
    out = _host_cond(r.host)
    if m.path_kind == "Exact":
        out += f" {{ var(txn.path) -m str {cfg_quote(m.path)} }}"
    elif m.path_kind == "Regex":
        out += f" {{ var(txn.path) -m reg {cfg_quote('^(?:' + m.path + ')$')} }}"
    elif m.path.rstrip("/"):
        out += f" {{ var(txn.path) -m reg {cfg_quote(prefix_regex(m.path))} }}"
    if m.method:
        out += f" {{ method {_token(m.method)} }}"
    for name, kind, value in m.headers:
        flag = "reg" if kind == "Regex" else "str"
        out += f" {{ req.fhdr({_token(name)}) -m {flag} {cfg_quote(value)} }}"
    for name, kind, value in m.query:
        flag = "reg" if kind == "Regex" else "str"
        out += f" {{ url_param({_token(name)}) -m {flag} {cfg_quote(value)} }}"
    return out


def _rule_lines(r: Rule, eff: Callable[[str], str]) -> list[str]:
    cond = f"{{ var(txn.l) -m str {cfg_name(r.listener)} }}" + _match_conds(r)
    targets = [(eff(b) if b else GW_500, w) for b, w in r.targets if w > 0]
    if not targets:
        return [f"    use_backend {GW_500} if {cond}"]
    if len(targets) == 1:
        return [f"    use_backend {cfg_name(targets[0][0])} if {cond}"]
    total = sum(w for _b, w in targets)
    out, cum = [], 0
    for i, (b, w) in enumerate(targets):
        cum += w
        if i == len(targets) - 1:
            out.append(f"    use_backend {cfg_name(b)} if {cond}")
        else:
            limit = cum * RAND_SCALE // total
            out.append(f"    use_backend {cfg_name(b)} if {cond} "
                       f"{{ var(txn.rnd) -m int lt {limit} }}")
    return out


def _map_key(r: Rule) -> tuple[str, str, str | None]:
    """(exact-map key, exact-hit key of a prefix, prefix-map key)."""
    base = f"{r.listener}~{r.host}"
    if r.match.path_kind == "Exact":
        return base + r.match.path, "", None
    path = r.match.path.rstrip("/")
    return "", base + (path or "/"), base + path + "/"


def render_gateway(plan: GatewayPlan, eff: Callable[[str], str],
                   bind_addresses: Iterable[str], proxy: str = "") -> tuple[
        list[tuple[str, ObjectRef | None]], dict[str, dict[str, str]], dict[str, str]]:
    """(cfg lines with owners, map entries by file, crt-list files)."""
    lines: list[tuple[str, ObjectRef | None]] = []
    maps: dict[str, dict[str, str]] = {n: {} for n in GW_MAP_FILES}
    lists: dict[str, str] = {}
    by_listener: dict[str, list[Rule]] = {}
    for r in plan.rules:
        by_listener.setdefault(r.listener, []).append(r)
    rule_listeners = {k for k, rs in by_listener.items() if not all(r.simple for r in rs)}
    for k, rs in by_listener.items():
        if k in rule_listeners:
            continue
        # Highest precedence first, so setdefault keeps the winner of equal keys.
        for r in rs:
            exact, hit, prefix = _map_key(r)
            backend = eff(r.targets[0][0])
            if exact:
                maps[GW_EXACT_MAP].setdefault(exact, backend)
            else:
                maps[GW_EXACT_MAP].setdefault(hit, backend)
                if prefix:
                    maps[GW_PREFIX_MAP].setdefault(prefix, backend)
    for fe in plan.frontends:
        name = f"gw_{fe.target_port}"
        hosts = [li.hostname or "_" for li in fe.listeners]
        route_hosts = [r.host for li in fe.listeners for r in by_listener.get(li.key, ())]
        for li in fe.listeners:
            maps[GW_LISTENERS_MAP][f"{fe.target_port}~{li.hostname or '_'}"] = li.key
        tls = ""
        if fe.tls:
            certs = [(c, li.hostname) for li in fe.listeners for c in li.certs]
            # The first line is the default certificate (no SNI or no match): a listener
            # without hostname if there is one, else the first.
            certs.sort(key=lambda ch: ch[1] is not None)
            lists[crt_list_name(fe)] = "".join(
                f"certs/{cfg_name(c)}.pem" + (f" {h}" if h else "") + "\n" for c, h in certs)
            tls = f" ssl crt-list {crt_list_name(fe)} alpn h2,http/1.1"
        owner = fe.gateway
        lines.append((f"frontend {name}", owner))
        for addr in bind_addresses:
            v6 = " v6only" if ":" in addr else ""
            lines.append((f"    bind {cfg_addr(addr, fe.target_port)}{v6}{tls}{proxy}", owner))
        scheme = "https" if fe.tls else "http"
        default_port = 443 if fe.tls else 80
        lines.append((f"    http-request set-header X-Forwarded-Proto {scheme}", None))
        lines.append(("    http-request set-var(txn.h) req.hdr(host),field(1,:),lower", None))
        lines.append(("    http-request set-var(txn.path) path", None))
        lport = "" if fe.port == default_port else f":{fe.port}"
        if lport:
            lines.append((f"    http-request set-var(txn.lport) str({lport})", None))
        rules = [r for li in fe.listeners if li.key in rule_listeners
                 for r in by_listener.get(li.key, ())]
        if any(len(r.targets) > 1 for r in rules):
            lines.append((f"    http-request set-var(txn.rnd) rand({RAND_SCALE})", None))
        for m in _depths(hosts + route_hosts):
            lines.append((f"    http-request set-var(txn.s{m}) var(txn.h),field(-1,.,{m}) "
                          f"if {{ var(txn.h),field(-{m + 1},.) -m len gt 0 }}", None))
        lines.append((f"    http-request set-var(txn.l) str({fe.target_port}~),"
                      f"concat(,txn.h,),map_str({GW_LISTENERS_MAP})", None))
        for m in _depths(hosts):
            lines.append((f"    http-request set-var(txn.l) str({fe.target_port}~*.),"
                          f"concat(,txn.s{m},),map_str({GW_LISTENERS_MAP}) "
                          f"if !{{ var(txn.l) -m found }} {{ var(txn.s{m}) -m found }}", None))
        lines.append((f"    http-request set-var(txn.l) str({fe.target_port}~_),"
                      f"map_str({GW_LISTENERS_MAP}) if !{{ var(txn.l) -m found }}", None))
        for r in sorted(rules, key=lambda r: r.order):
            for text in _rule_lines(r, eff):
                lines.append((text, r.owner))
        if any(li.key not in rule_listeners for li in fe.listeners):
            levels = ["concat(~,txn.h,)"] + [f"concat(~*.,txn.s{m},)"
                                            for m in _depths(route_hosts)] + ["concat(~_)"]
            for lv in levels:
                key = f"var(txn.l),{lv},concat(,txn.path,)"
                for mp, how in ((GW_EXACT_MAP, "map_str"), (GW_PREFIX_MAP, "map_beg")):
                    lines.append((f"    use_backend %[var(txn.be)] if {{ var(txn.l) -m found }} "
                                  f"{{ {key},{how}({mp}),set-var(txn.be) -m found }}", None))
        lines.append((f"    default_backend {NOT_FOUND}", None))
    lines.append((f"backend {GW_500}", None))
    lines.append(('    http-request return status 500 content-type text/plain '
                  'string "backend not available"', None))
    return lines, maps, lists


def pinned(plan: GatewayPlan) -> set[str]:
    """Backends named in rules (config text): they cannot be stood in for by a spare."""
    by_listener: dict[str, list[Rule]] = {}
    for r in plan.rules:
        by_listener.setdefault(r.listener, []).append(r)
    out: set[str] = set()
    for rs in by_listener.values():
        if not all(r.simple for r in rs):
            out.update(b for r in rs for b, _w in r.targets if b)
    return out
