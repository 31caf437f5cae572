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
from collections.abc import Callable, Iterable, Mapping

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
GW_REJECT = "be__gw_reject"  # TCP/TLS connections no route takes: closed at once
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


def _rule_lines(r: Rule, eff: Callable[[str], str], fail: str = GW_500) -> list[str]:
    cond = f"{{ var(txn.l) -m str {cfg_name(r.listener)} }}" + _match_conds(r)
    targets = [(eff(b) if b else fail, w) for b, w in r.targets if w > 0]
    if not targets:
        return [f"    use_backend {fail} if {cond}"]
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
    by_listener = _by_listener(plan)
    rule_listeners = _rule_listeners(plan, by_listener)
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
        for li in fe.listeners:
            maps[GW_LISTENERS_MAP][f"{fe.target_port}~{li.hostname or '_'}"] = li.key
        if fe.mode == "tcp":
            lines += _tcp_frontend(fe, by_listener, eff, bind_addresses, proxy, lists)
        else:
            lines += _http_frontend(fe, by_listener, rule_listeners, eff, bind_addresses,
                                    proxy, lists)
    lines.append((f"backend {GW_500}", None))
    lines.append(('    http-request return status 500 content-type text/plain '
                  'string "backend not available"', None))
    lines.append((f"backend {GW_REJECT}", None))
    lines.append(("    mode tcp", None))
    lines.append(("    tcp-request content reject", None))
    return lines, maps, lists


def _by_listener(plan: GatewayPlan) -> dict[str, list[Rule]]:
    out: dict[str, list[Rule]] = {}
    for r in plan.rules:
        out.setdefault(r.listener, []).append(r)
    return out


def _rule_listeners(plan: GatewayPlan, by_listener: Mapping[str, list[Rule]]) -> set[str]:
    """Listeners routed by config rules, not maps: some rule needs more than host + path,
    or the port is TCP/TLS (no maps there)."""
    out = {k for k, rs in by_listener.items() if not all(r.simple for r in rs)}
    out.update(li.key for fe in plan.frontends if fe.mode == "tcp" for li in fe.listeners)
    return out


def pinned(plan: GatewayPlan) -> set[str]:
    """Backends named in rules (config text): they cannot be stood in for by a spare."""
    by_listener = _by_listener(plan)
    out: set[str] = set()
    for k in _rule_listeners(plan, by_listener):
        out.update(b for r in by_listener.get(k, ()) for b, _w in r.targets if b)
    return out


def _http_frontend(fe: Frontend, by_listener: Mapping[str, list[Rule]], rule_listeners: set[str],
                   eff: Callable[[str], str], bind_addresses: Iterable[str], proxy: str,
                   lists: dict[str, str]) -> list[tuple[str, ObjectRef | None]]:
    lines: list[tuple[str, ObjectRef | None]] = []
    name = f"gw_{fe.target_port}"
    hosts = [li.hostname or "_" for li in fe.listeners]
    route_hosts = [r.host for li in fe.listeners for r in by_listener.get(li.key, ())]
    tls = _crt_list(fe, lists, " alpn h2,http/1.1")
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
    lines += [(f"    http-request {text}", None)
              for text in _listener_lookup(fe, hosts, hosts + route_hosts)]
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
    return lines


def _crt_list(fe: Frontend, lists: dict[str, str], alpn: str) -> str:
    """The bind options of a port where HAProxy terminates TLS ("" when it does not)."""
    if not fe.tls:
        return ""
    certs = [(c, li.hostname) for li in fe.listeners for c in li.certs]
    # The first line is the default certificate (no SNI or no match): a listener without
    # hostname if there is one, else the first.
    certs.sort(key=lambda ch: ch[1] is not None)
    lists[crt_list_name(fe)] = "".join(
        f"certs/{cfg_name(c)}.pem" + (f" {h}" if h else "") + "\n" for c, h in certs)
    return f" ssl crt-list {crt_list_name(fe)}{alpn}"


def _listener_lookup(fe: Frontend, hosts: list[str], all_hosts: list[str],
                     cond: str = "") -> list[str]:
    """Actions (without their rule keyword) that set ``txn.l`` from ``txn.h``."""
    out = []
    for m in _depths(all_hosts):
        out.append(f"set-var(txn.s{m}) var(txn.h),field(-1,.,{m}) "
                   f"if {cond}{{ var(txn.h),field(-{m + 1},.) -m len gt 0 }}")
    out.append(f"set-var(txn.l) str({fe.target_port}~),concat(,txn.h,),"
               f"map_str({GW_LISTENERS_MAP}){' if ' + cond.strip() if cond else ''}")
    for m in _depths(hosts):
        out.append(f"set-var(txn.l) str({fe.target_port}~*.),concat(,txn.s{m},),"
                   f"map_str({GW_LISTENERS_MAP}) "
                   f"if {cond}!{{ var(txn.l) -m found }} {{ var(txn.s{m}) -m found }}")
    out.append(f"set-var(txn.l) str({fe.target_port}~_),map_str({GW_LISTENERS_MAP}) "
               f"if {cond}!{{ var(txn.l) -m found }}")
    return out


def _tcp_frontend(fe: Frontend, by_listener: Mapping[str, list[Rule]],
                  eff: Callable[[str], str], bind_addresses: Iterable[str], proxy: str,
                  lists: dict[str, str]) -> list[tuple[str, ObjectRef | None]]:
    """TCP and TLS listeners: mode tcp, routed by listener and SNI (passthrough: read from
    the ClientHello, never decrypted; terminate: the handshake's SNI)."""
    lines: list[tuple[str, ObjectRef | None]] = [(f"frontend gw_{fe.target_port}", fe.gateway),
                                                 ("    mode tcp", None)]
    tls = _crt_list(fe, lists, "")
    for addr in bind_addresses:
        v6 = " v6only" if ":" in addr else ""
        lines.append((f"    bind {cfg_addr(addr, fe.target_port)}{v6}{tls}{proxy}", fe.gateway))
    rules = sorted((r for li in fe.listeners for r in by_listener.get(li.key, ())),
                   key=lambda r: r.order)
    hosts = [li.hostname or "_" for li in fe.listeners]
    cond = ""
    passthrough = any(li.passthrough for li in fe.listeners)
    if passthrough:
        # A condition on the ClientHello makes HAProxy wait (up to inspect-delay) until
        # it has arrived, so the SNI below is read from a complete hello.
        lines.append(("    tcp-request inspect-delay 5s", None))
        cond = "{ req_ssl_hello_type 1 } "
        lines.append((f"    tcp-request content set-var(txn.h) req_ssl_sni,lower if {cond}",
                      None))
    elif fe.tls:
        lines.append(("    tcp-request content set-var(txn.h) ssl_fc_sni,lower", None))
    if any(len(r.targets) > 1 for r in rules):
        lines.append((f"    tcp-request content set-var(txn.rnd) rand({RAND_SCALE})", None))
    lines += [(f"    tcp-request content {text}", None)
              for text in _listener_lookup(fe, hosts, hosts + [r.host for r in rules], cond)]
    if passthrough:
        lines.append(("    tcp-request content accept if { req_ssl_hello_type 1 }", None))
    for r in rules:
        for text in _rule_lines(r, eff, GW_REJECT):
            lines.append((text, r.owner))
    lines.append((f"    default_backend {GW_REJECT}", None))
    return lines
