"""Gateway API objects in, listeners + routing rules + backends + statuses out (pure).

Semantics follow the Gateway API v1.6 specification (docs/gateway.md has the user-facing
version); the upstream conformance suite is the judge.

* **Ours.** A GatewayClass is ours when ``spec.controllerName`` is our controller name; a
  Gateway when its class is ours; a route's parentRef when it names one of our Gateways.
  Nothing else is read or written.
* **Addresses.** Each Gateway gets one LoadBalancer Service in Portico's namespace (name
  from a hash of the Gateway's namespace/name, since a Service cannot select pods of another
  namespace), selecting the ingress pods: its VIP comes from Portico's pools like any other
  Service, and the speakers announce it. A Service port per listener port; its targetPort is
  a port of the ingress pod allocated per (Gateway, port) — kube-proxy's DNAT hides the VIP
  from HAProxy, so the port is what tells two Gateways on port 80 apart. Allocation keeps
  what the Service already says and otherwise probes from a hash, in Gateway age order, so
  every ingress replica computes the same table from the same objects.
* **Listeners.** HTTP and HTTPS (Terminate, certificateRefs to kubernetes.io/tls Secrets,
  cross-namespace through a ReferenceGrant). Listeners that share a port must share the
  protocol (else ``Conflicted/ProtocolConflict``) and differ in hostname (else
  ``Conflicted/HostnameConflict``). Other protocols are reported ``UnsupportedProtocol``.
* **Attachment.** A parentRef selects listeners by ``sectionName`` and ``port``; the
  listener's ``allowedRoutes`` (namespaces From Same/All/Selector, kinds) must admit the
  route, and the route's hostnames must intersect the listener's hostname. The reasons the
  spec defines (NoMatchingParent, NotAllowedByListeners, NoMatchingListenerHostname) name
  the first test that failed.
* **Requests.** The listener is chosen by Host (exact hostname, then the longest wildcard,
  then a listener without hostname), never mixing listeners. Among that listener's rules the
  spec's precedence decides: hostname specificity, Exact before Prefix, longer path, method,
  more header matches, more query matches, older route, namespace/name, rule order.
* **Backends.** One HAProxy backend per (Service port, filters); a rule with several
  backendRefs splits traffic by weight; a backendRef that cannot be resolved keeps its
  share of the weight and answers 500, as the spec asks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from common.api.model import ObjectRef
from ingress.core.annotations import Annotations
from ingress.core.filters import Filters, Redirect
from ingress.core.model import Backend, Event, TLSCert, backend_name, tls_pem
from ingress.core.render import logfmt_quote
from ingress.core.validate import host_problem, name_problem, path_problem, regex_problem
from ingress.errors import UnsafeValue

GROUP = "gateway.networking.k8s.io"
CONTROLLER_NAME = "portico.dev/gateway-controller"
SERVICE_LABEL = "gateway.portico.dev/managed"
GATEWAY_ANNOTATION = "gateway.portico.dev/gateway"
PORT_RANGE = (20000, 30000)  # pod ports for Gateway listeners (targetPorts of the Services)
ROUTE_KINDS = {  # listener protocol -> route kinds it serves (the first is the default)
    "HTTP": ("HTTPRoute", "GRPCRoute"), "HTTPS": ("HTTPRoute", "GRPCRoute"),
    "TLS": ("TLSRoute",), "TCP": ("TCPRoute",),
}
FEATURES = (  # status.supportedFeatures of our GatewayClass: what the conformance suite tests
    "Gateway", "GatewayHTTPListenerIsolation", "GatewayPort8080",
    "HTTPRoute", "HTTPRoute303RedirectStatusCode", "HTTPRoute307RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C", "HTTPRouteBackendProtocolWebSocket",
    "HTTPRoute308RedirectStatusCode", "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteHostRewrite", "HTTPRouteMethodMatching", "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort", "HTTPRoutePathRedirect", "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect", "HTTPRouteQueryParamMatching",
    "HTTPRouteResponseHeaderModification", "HTTPRouteSchemeRedirect",
    "GRPCRoute", "GRPCRouteNamedRouteRule", "ReferenceGrant", "TCPRoute", "TLSRoute",
    "TLSRouteModeTerminate",
)

Obj = Mapping[str, Any]
Cond = tuple[str, bool, str, str]  # type, status, reason, message
PathKind = Literal["Exact", "Prefix", "Regex"]


@dataclass(frozen=True, slots=True)
class Match:
    path_kind: PathKind
    path: str
    method: str | None
    headers: tuple[tuple[str, str, str], ...]  # (name lower-case, "Exact"|"Regex", value)
    query: tuple[tuple[str, str, str], ...]  # (name, "Exact"|"Regex", value)


@dataclass(frozen=True, slots=True)
class Rule:
    """One (listener, hostname, match) -> weighted backends."""

    listener: str
    host: str  # exact hostname, "*.suffix" or "_" (any)
    match: Match
    targets: tuple[tuple[str, int], ...]  # (backend name, weight); backend "" = answer 500
    owner: ObjectRef
    order: tuple[Any, ...]  # the spec's precedence, ascending = first

    @property
    def simple(self) -> bool:
        """Decidable by host + path alone (map lookups, changed at run time)."""
        m = self.match
        return (m.path_kind != "Regex" and not m.method and not m.headers and not m.query
                and len(self.targets) == 1 and self.targets[0][1] > 0
                and self.targets[0][0] != "")


@dataclass(frozen=True, slots=True)
class Listener:
    key: str
    gateway: ObjectRef
    name: str
    port: int
    target_port: int
    protocol: str
    hostname: str | None
    certs: tuple[str, ...]  # TLSCert names: HTTPS and TLS Terminate
    passthrough: bool = False  # TLS mode Passthrough: routed by SNI, never decrypted


@dataclass(frozen=True, slots=True)
class Frontend:
    """One (Gateway, port): the pod port HAProxy binds and the listeners sharing it."""

    gateway: ObjectRef
    port: int
    target_port: int
    tls: bool  # HAProxy terminates TLS on this port (HTTPS, TLS Terminate)
    listeners: tuple[Listener, ...]
    mode: str = "http"  # "http" (HTTP/HTTPS) or "tcp" (TCP, TLS)


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    frontends: tuple[Frontend, ...] = ()
    rules: tuple[Rule, ...] = ()
    backends: Mapping[str, Backend] = field(default_factory=dict)
    certs: tuple[TLSCert, ...] = ()
    secrets_wanted: frozenset[tuple[str, str]] = frozenset()
    class_status: Mapping[str, tuple[Cond, ...]] = field(default_factory=dict)
    gateway_status: Mapping[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    route_status: Mapping[tuple[str, str, str], list[dict[str, Any]]] = field(
        default_factory=dict)  # (kind, ns, name) -> our parents entries (conditions as Cond)
    services: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # name -> Service
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Inputs:
    classes: tuple[Obj, ...] = ()
    gateways: tuple[Obj, ...] = ()
    httproutes: tuple[Obj, ...] = ()
    grpcroutes: tuple[Obj, ...] = ()
    tlsroutes: tuple[Obj, ...] = ()
    tcproutes: tuple[Obj, ...] = ()
    grants: tuple[Obj, ...] = ()
    namespaces: Mapping[str, Obj] = field(default_factory=dict)
    services: Mapping[tuple[str, str], Obj] = field(default_factory=dict)
    secrets: Mapping[tuple[str, str], Obj] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Setup:
    namespace: str  # Portico's namespace: the Gateways' Services live there
    selector: Mapping[str, str]  # labels of the ingress pods
    external_traffic_policy: str = "Local"
    controller_name: str = CONTROLLER_NAME
    reserved_ports: frozenset[int] = frozenset()  # pod ports already used by the ingress


def _meta(o: Obj) -> Mapping[str, Any]:
    return o.get("metadata") or {}


def _nsname(o: Obj) -> tuple[str, str]:
    m = _meta(o)
    return str(m.get("namespace") or ""), str(m.get("name") or "")


def _age(o: Obj) -> tuple[str, str, str]:
    m = _meta(o)
    return (str(m.get("creationTimestamp") or "9999"), str(m.get("namespace") or ""),
            str(m.get("name") or ""))


def _hash(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:10]


def service_name(namespace: str, name: str) -> str:
    return f"portico-gw-{_hash(namespace, name)}"


# -- hostnames ---------------------------------------------------------------------------
def host_matches(pattern: str, host: str) -> bool:
    """Gateway API wildcard: ``*.example.com`` matches one or more labels before the suffix."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def intersect(listener: str | None, route: Iterable[str]) -> list[str]:
    """Effective hostnames of a route on a listener ([] = no intersection, ["_"] = any)."""
    hosts = list(route)
    if listener is None:
        return hosts or ["_"]
    if not hosts:
        return [listener]
    out: list[str] = []
    for h in hosts:
        if h == listener or host_matches(listener, h):
            out.append(h)  # the route's is at least as specific
        elif host_matches(h, listener):
            out.append(listener)
        elif h.startswith("*.") and listener.startswith("*.") and (
                h.endswith(listener[1:]) or listener.endswith(h[1:])):
            out.append(h if len(h) > len(listener) else listener)
    return sorted(set(out))


def _host_specificity(host: str) -> tuple[int, int]:
    if host == "_":
        return (0, 0)
    if host.startswith("*."):
        return (0, len(host))
    return (len(host), len(host))


# -- references ----------------------------------------------------------------------------
def grant_allows(grants: Iterable[Obj], from_kind: str, from_ns: str, to_kind: str,
                 to_group: str, to_ns: str, to_name: str, from_group: str = GROUP) -> bool:
    for g in grants:
        if _nsname(g)[0] != to_ns:
            continue
        spec = g.get("spec") or {}
        if not any(str(f.get("group", "")) == from_group and f.get("kind") == from_kind
                   and f.get("namespace") == from_ns for f in spec.get("from") or []):
            continue
        for t in spec.get("to") or []:
            if (str(t.get("group", "")) == to_group and t.get("kind") == to_kind
                    and (not t.get("name") or t.get("name") == to_name)):
                return True
    return False


def _pem_secret_problem(secret: Obj | None) -> str | None:
    if secret is None:
        return "not found"
    if secret.get("type") not in (None, "kubernetes.io/tls"):
        return f"type {secret.get('type')!r} is not kubernetes.io/tls"
    data = secret.get("data") or {}
    try:
        crt = base64.b64decode(str(data.get("tls.crt", "")), validate=True)
        key = base64.b64decode(str(data.get("tls.key", "")), validate=True)
    except (binascii.Error, ValueError):
        return "tls.crt or tls.key is not base64"
    if b"-----BEGIN CERTIFICATE-----" not in crt or b"PRIVATE KEY-----" not in key:
        return "tls.crt or tls.key is not PEM"
    return None


# -- the builder ---------------------------------------------------------------------------
Memo = dict[tuple[int, str, Any], tuple[Obj, Any]]


class _Build:
    def __init__(self, inp: Inputs, setup: Setup, memo: Memo | None = None) -> None:
        self.inp = inp
        self.setup = setup
        # Parses of route parts by object identity (the informer replaces an object that
        # changes): a sync over 1,000 unchanged routes re-parses none of them.
        self.memo: Memo = memo if memo is not None else {}
        self.used: Memo = {}
        self.events: list[Event] = []
        self.backends: dict[str, Backend] = {}
        self.certs: dict[str, TLSCert] = {}
        self.wanted: set[tuple[str, str]] = set()

    def cached(self, obj: Obj, tag: str, extra: Any, fn: Callable[[], Any]) -> Any:
        key = (id(obj), tag, extra)
        hit = self.memo.get(key)
        if hit is None or hit[0] is not obj:
            hit = (obj, fn())
        self.used[key] = hit
        return hit[1]

    # GatewayClasses -------------------------------------------------------------------------
    def classes(self) -> tuple[set[str], dict[str, tuple[Cond, ...]]]:
        ours: set[str] = set()
        status: dict[str, tuple[Cond, ...]] = {}
        for gc in self.inp.classes:
            if (gc.get("spec") or {}).get("controllerName") != self.setup.controller_name:
                continue
            name = str(_meta(gc).get("name"))
            ours.add(name)
            status[name] = (
                ("Accepted", True, "Accepted", "Handled by Portico's HAProxy tier"),
                ("SupportedVersion", True, "SupportedVersion",
                 "Gateway API v1.6 Standard channel"),
            )
        return ours, status

    # Listeners ----------------------------------------------------------------------------
    def listeners(self, gw: Obj, ports: Mapping[int, int]) -> tuple[
            list[Listener], list[dict[str, Any]], list[tuple[Obj, Listener | None]]]:
        """Valid listeners, the listeners' status entries, (spec, valid listener or None)."""
        ns, gname = _nsname(gw)
        ref = ObjectRef("Gateway", gname, ns)
        specs = list((gw.get("spec") or {}).get("listeners") or [])
        by_port: dict[int, list[Obj]] = {}
        for spec in specs:
            by_port.setdefault(int(spec.get("port") or 0), []).append(spec)
        valid: list[Listener] = []
        statuses: list[dict[str, Any]] = []
        pairs: list[tuple[Obj, Listener | None]] = []
        for spec in specs:
            name = str(spec.get("name") or "")
            port = int(spec.get("port") or 0)
            proto = str(spec.get("protocol") or "")
            host = spec.get("hostname")
            conds: list[Cond] = []
            accepted, resolved, conflict = True, True, ("NoConflicts", "")
            default_kinds = ROUTE_KINDS.get(proto, ())
            kinds_spec = ((spec.get("allowedRoutes") or {}).get("kinds"))
            supported: list[dict[str, str]] = []
            bad_kinds = False
            if kinds_spec:
                for k in kinds_spec:
                    if str(k.get("group", GROUP)) == GROUP and k.get("kind") in default_kinds:
                        supported.append({"group": GROUP, "kind": str(k["kind"])})
                    else:
                        bad_kinds = True
            else:
                supported = [{"group": GROUP, "kind": k} for k in default_kinds]
            if proto not in ROUTE_KINDS:
                accepted = False
                conds.append(("Accepted", False, "UnsupportedProtocol",
                              f"protocol {proto} is not supported"))
            siblings = by_port.get(port, [])
            if any(_wire_protocol(s) != _wire_protocol(spec) for s in siblings):
                # One port, one way to read its bytes: HTTP vs HTTPS vs TCP, and TLS
                # Passthrough vs Terminate (mixed termination is not supported) conflict.
                conflict = ("ProtocolConflict", f"another listener on port {port} uses a "
                            "different protocol or TLS mode")
                if accepted:
                    accepted = False
                    conds.append(("Accepted", False, "ProtocolConflict", conflict[1]))
            elif sum(1 for s in siblings if s.get("hostname") == host) > 1:
                conflict = ("HostnameConflict", f"another listener on port {port} has the "
                            "same hostname")
            if bad_kinds:
                resolved = False
                conds.append(("ResolvedRefs", False, "InvalidRouteKinds",
                              "allowedRoutes.kinds names kinds this listener cannot serve"))
            certs: list[str] = []
            tls_mode = str((spec.get("tls") or {}).get("mode") or "Terminate")
            if accepted and (proto == "HTTPS" or (proto == "TLS" and tls_mode == "Terminate")):
                problem = self._listener_tls(ns, spec, certs)
                if problem:
                    resolved = False
                    conds.append(("ResolvedRefs", False, problem[0], problem[1]))
            if accepted:
                conds.append(("Accepted", True, "Accepted", "Listener accepted"))
            if conflict[0] != "NoConflicts":
                conds.append(("Conflicted", True, conflict[0], conflict[1]))
                conds.append(("Programmed", False, "Invalid", conflict[1]))
            else:
                conds.append(("Conflicted", False, "NoConflicts", "No conflicts"))
            if resolved:
                conds.append(("ResolvedRefs", True, "ResolvedRefs", "References resolved"))
            ok = accepted and conflict[0] == "NoConflicts"
            if ok and resolved:
                conds.append(("Programmed", True, "Programmed", "Listener programmed"))
            elif ok:
                conds.append(("Programmed", False, "Invalid", "Listener references are "
                              "invalid"))
            elif conflict[0] == "NoConflicts":
                conds.append(("Programmed", False, "Invalid", "Listener not accepted"))
            listener = None
            if ok and port in ports:
                listener = Listener(
                    key="L" + _hash(ns, gname, name), gateway=ref, name=name, port=port,
                    target_port=ports[port], protocol=proto,
                    hostname=str(host) if host else None,
                    certs=tuple(certs) if resolved else (),
                    passthrough=proto == "TLS" and tls_mode == "Passthrough")
                if resolved:
                    valid.append(listener)
            pairs.append((spec, listener))
            # A listener that is not accepted serves no kind at all.
            statuses.append({"name": name, "supportedKinds": supported if accepted else [],
                             "attachedRoutes": 0, "conditions": conds})
        return valid, statuses, pairs

    def _listener_tls(self, ns: str, spec: Obj, certs: list[str]) -> tuple[str, str] | None:
        tls = spec.get("tls") or {}
        if str(tls.get("mode") or "Terminate") != "Terminate":
            return ("InvalidCertificateRef", "an HTTPS listener terminates TLS (mode Terminate)")
        refs = tls.get("certificateRefs") or []
        if not refs:
            return ("InvalidCertificateRef", "an HTTPS listener needs certificateRefs")
        for r in refs:
            if str(r.get("group") or "") != "" or str(r.get("kind") or "Secret") != "Secret":
                return ("InvalidCertificateRef", "certificateRefs may only name Secrets")
            sns = str(r.get("namespace") or ns)
            sname = str(r.get("name") or "")
            if sns != ns and not grant_allows(self.inp.grants, "Gateway", ns, "Secret", "",
                                              sns, sname):
                return ("RefNotPermitted", f"no ReferenceGrant in {sns} allows Secret {sname}")
            self.wanted.add((sns, sname))
            secret = self.inp.secrets.get((sns, sname))
            problem = _pem_secret_problem(secret)
            if problem or secret is None:
                return ("InvalidCertificateRef", f"Secret {sns}/{sname}: {problem}")
            pem = tls_pem(secret)
            if isinstance(pem, str):
                return ("InvalidCertificateRef", f"Secret {sns}/{sname}: {pem}")
            cname = "gw-" + _hash(sns, sname)
            self.certs[cname] = TLSCert(cname, ObjectRef("Secret", sname, sns), (), pem,
                                        scope="gateway")
            certs.append(cname)
        return None

    # Routes -------------------------------------------------------------------------------
    def namespace_allowed(self, listener_spec: Obj, gw_ns: str, route_ns: str) -> bool:
        frm = ((listener_spec.get("allowedRoutes") or {}).get("namespaces") or {})
        mode = str(frm.get("from") or "Same")
        if mode == "All":
            return True
        if mode == "Same":
            return route_ns == gw_ns
        if mode == "Selector":
            labels = (_meta(self.inp.namespaces.get(route_ns) or {}).get("labels") or {})
            return _selector_matches(frm.get("selector") or {}, labels)
        return False

    def kind_allowed(self, listener_spec: Obj, kind: str) -> bool:
        served = ROUTE_KINDS.get(str(listener_spec.get("protocol")), ())
        kinds = (listener_spec.get("allowedRoutes") or {}).get("kinds")
        if not kinds:
            return kind in served
        return kind in served and any(
            str(k.get("group", GROUP)) == GROUP and k.get("kind") == kind for k in kinds)


def _wire_protocol(spec: Obj) -> str:
    proto = str(spec.get("protocol") or "")
    if proto == "TLS":
        return "TLS/" + str((spec.get("tls") or {}).get("mode") or "Terminate")
    return proto


def _selector_matches(sel: Obj, labels: Mapping[str, str]) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def allocate_ports(gateways: Iterable[Obj], services: Mapping[tuple[str, str], Obj],
                   setup: Setup) -> dict[tuple[str, str], dict[int, int]]:
    """(Gateway ns, name) -> listener port -> pod port (see the module docstring)."""
    lo, hi = PORT_RANGE
    used: set[int] = set(setup.reserved_ports)
    out: dict[tuple[str, str], dict[int, int]] = {}
    ordered = sorted(gateways, key=_age)
    # What the Services already say comes first: a running Gateway never moves.
    for gw in ordered:
        key = _nsname(gw)
        svc = services.get((setup.namespace, service_name(*key)))
        table: dict[int, int] = {}
        for p in ((svc or {}).get("spec") or {}).get("ports") or []:
            tp = p.get("targetPort")
            if isinstance(tp, int) and lo <= tp < hi and tp not in used:
                table[int(p.get("port") or 0)] = tp
                used.add(tp)
        out[key] = table
    for gw in ordered:
        key = _nsname(gw)
        for spec in (gw.get("spec") or {}).get("listeners") or []:
            port = int(spec.get("port") or 0)
            if port in out[key] or not 0 < port < 65536:
                continue
            tp = lo + int(_hash(key[0], key[1], port), 16) % (hi - lo)
            for _ in range(hi - lo):
                if tp not in used:
                    break
                tp = lo + (tp + 1 - lo) % (hi - lo)
            used.add(tp)
            out[key][port] = tp
    return out


def _route_hostnames(route: Obj) -> list[str] | str:
    hosts = []
    for h in (route.get("spec") or {}).get("hostnames") or []:
        h = str(h).lower()
        base = h[2:] if h.startswith("*.") else h
        if host_problem(base):
            return f"hostname {h!r}: {host_problem(base)}"
        hosts.append(h)
    return hosts


def _header_pairs(items: Iterable[Obj]) -> tuple[tuple[str, str], ...]:
    return tuple((str(i.get("name") or ""), str(i.get("value") or "")) for i in items)


def _filters(rule: Obj, match_prefix: str | None) -> Filters | str:
    f: dict[str, Any] = {}
    for flt in rule.get("filters") or []:
        typ = flt.get("type")
        if typ in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            mod = flt.get("requestHeaderModifier" if typ == "RequestHeaderModifier"
                          else "responseHeaderModifier") or {}
            pre = "req" if typ == "RequestHeaderModifier" else "resp"
            f[pre + "_set"] = _header_pairs(mod.get("set") or [])
            f[pre + "_add"] = _header_pairs(mod.get("add") or [])
            f[pre + "_remove"] = tuple(str(x) for x in mod.get("remove") or [])
        elif typ == "RequestRedirect":
            rr = flt.get("requestRedirect") or {}
            path = rr.get("path")
            p = None
            if path:
                if path.get("type") == "ReplaceFullPath":
                    p = ("Full", str(path.get("replaceFullPath") or "/"))
                else:
                    p = ("Prefix", str(path.get("replacePrefixMatch") or "/"))
            f["redirect"] = Redirect(
                rr.get("scheme"), rr.get("hostname"),
                int(rr["port"]) if rr.get("port") else None, p,
                int(rr.get("statusCode") or 302), match_prefix)
        elif typ == "URLRewrite":
            rw = flt.get("urlRewrite") or {}
            if rw.get("hostname"):
                f["rewrite_host"] = str(rw["hostname"])
            path = rw.get("path")
            if path:
                if path.get("type") == "ReplaceFullPath":
                    f["rewrite_path"] = ("Full", str(path.get("replaceFullPath") or "/"))
                else:
                    f["rewrite_path"] = ("Prefix", str(path.get("replacePrefixMatch") or "/"))
                    f["matched_prefix"] = match_prefix
        else:
            return f"filter type {typ!r} is not supported"
    for key in ("req_set", "req_add", "resp_set", "resp_add"):
        for name, value in f.get(key, ()):
            if not _HEADER.fullmatch(name) or _literal_problem(value):
                return f"header {name[:60]!r}: unsupported name or value"
    for key in ("req_remove", "resp_remove"):
        if any(not _HEADER.fullmatch(n) for n in f.get(key, ())):
            return "header to remove: unsupported name"
    for value in (f.get("rewrite_host"), *(f.get("rewrite_path") or ())):
        if value is not None and _literal_problem(str(value)):
            return f"rewrite value {str(value)[:60]!r} is not supported"
    rd = f.get("redirect")
    if rd is not None:
        for value in (rd.scheme, rd.hostname, *(rd.path or ())):
            if value is not None and _literal_problem(str(value)):
                return f"redirect value {str(value)[:60]!r} is not supported"
    return Filters(**f)


_HEADER = re.compile(r"[A-Za-z0-9_.-]{1,200}")  # header names HAProxy takes as identifiers


def _literal_problem(value: str) -> bool:
    """True when the value cannot be written as a log-format literal (see logfmt_quote)."""
    try:
        logfmt_quote(value)
    except UnsafeValue:
        return True
    return False


ANY = Match("Prefix", "/", None, (), ())  # what TLS and TCP rules match within a listener
HTTP_ROUTES = ("HTTPRoute", "GRPCRoute")
_GRPC_NAME = re.compile(r"[A-Za-z0-9_.]{1,200}")  # protobuf service / method names
_GRPC_REGEX = re.compile(r"[A-Za-z0-9_.*+?^$()\[\]{},|\\-]{1,200}")


def _grpc_regex_problem(pattern: str) -> str | None:
    """A service/method regex: the characters of names and of regex syntax, no '/'."""
    if not _GRPC_REGEX.fullmatch(pattern):
        return "only name characters and regex syntax (no '/', quotes or spaces)"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    return None


def _grpc_matches(rule: Obj) -> list[Match] | str:
    """GRPCRoute matches as path matches: a gRPC call is ``POST /<service>/<method>``."""
    out: list[Match] = []
    for m in rule.get("matches") or [{}]:
        method = m.get("method") or {}
        svc, meth = method.get("service"), method.get("method")
        regex = str(method.get("type") or "Exact") == "RegularExpression"
        for part in (svc, meth):
            if part is None:
                continue
            problem = _grpc_regex_problem(str(part)) if regex else (
                None if _GRPC_NAME.fullmatch(str(part)) else "not a gRPC name")
            if problem:
                return f"method {str(part)[:60]!r}: {problem}"
        kind: PathKind
        if svc is None and meth is None:
            kind, path = "Prefix", "/"
        elif regex or svc is None or meth is None:
            kind = "Regex"
            path = (f"/{svc if regex and svc else re.escape(svc) if svc else '[^/]+'}"
                    f"/{meth if regex and meth else re.escape(meth) if meth else '[^/]+'}")
        else:
            kind, path = "Exact", f"/{svc}/{meth}"
        headers = []
        for h in m.get("headers") or []:
            hv = str(h.get("value") or "")
            htype = str(h.get("type") or "Exact")
            if not _HEADER.fullmatch(str(h.get("name") or "")) or _literal_problem(hv) or (
                    htype == "RegularExpression" and regex_problem(hv)):
                return f"header {str(h.get('name'))[:60]!r}: unsupported name or value"
            headers.append((str(h.get("name")).lower(),
                            "Regex" if htype == "RegularExpression" else "Exact", hv))
        out.append(Match(kind, path, None, tuple(sorted(headers)), ()))
    return out


def _matches(rule: Obj) -> list[Match] | str:
    out: list[Match] = []
    for m in rule.get("matches") or [{}]:
        path = m.get("path") or {}
        ptype = str(path.get("type") or "PathPrefix")
        value = str(path.get("value") or "/")
        kind: PathKind = {"Exact": "Exact", "PathPrefix": "Prefix",
                          "RegularExpression": "Regex"}.get(ptype, "Prefix")  # type: ignore
        if ptype not in ("Exact", "PathPrefix", "RegularExpression"):
            return f"path type {ptype!r} is not supported"
        problem = regex_problem(value) if kind == "Regex" else path_problem(value)
        if problem:
            return f"path {value[:80]!r}: {problem}"
        headers = []
        for h in m.get("headers") or []:
            htype = str(h.get("type") or "Exact")
            hv = str(h.get("value") or "")
            if htype == "RegularExpression" and regex_problem(hv):
                return f"header regex {hv[:60]!r}: {regex_problem(hv)}"
            if "'" in hv or any(ord(c) < 32 for c in hv):
                return f"header value {hv[:60]!r} is not supported"
            if not _HEADER.fullmatch(str(h.get("name") or "")):
                return f"header name {str(h.get('name'))[:60]!r} is not supported"
            headers.append((str(h.get("name") or "").lower(),
                            "Regex" if htype == "RegularExpression" else "Exact", hv))
        query = []
        for q in m.get("queryParams") or []:
            qtype = str(q.get("type") or "Exact")
            qv = str(q.get("value") or "")
            if "'" in qv or any(ord(c) < 32 for c in qv):
                return f"query value {qv[:60]!r} is not supported"
            if not _HEADER.fullmatch(str(q.get("name") or "")):
                return f"query parameter {str(q.get('name'))[:60]!r} is not supported"
            query.append((str(q.get("name") or ""),
                          "Regex" if qtype == "RegularExpression" else "Exact", qv))
        # Duplicate names: the first one counts (the spec's rule).
        headers = list({h[0]: h for h in reversed(headers)}.values())[::-1]
        query = list({q[0]: q for q in reversed(query)}.values())[::-1]
        out.append(Match(kind, value, m.get("method"), tuple(sorted(headers)),
                         tuple(sorted(query))))
    return out


def _rule_order(host: str, m: Match, route: Obj, ri: int, mi: int) -> tuple[Any, ...]:
    spec_host = _host_specificity(host)
    kind_rank = {"Exact": 0, "Prefix": 1, "Regex": 2}[m.path_kind]
    return (-spec_host[0], -spec_host[1], kind_rank, -len(m.path), 0 if m.method else 1,
            -len(m.headers), -len(m.query), *_age(route), ri, mi)


def build(inp: Inputs, setup: Setup, memo: Memo | None = None) -> GatewayPlan:
    """The plan for these objects; ``memo`` (kept by the caller between calls) is left
    holding the parses of this call's objects only."""
    b = _Build(inp, setup, memo)
    ours, class_status = b.classes()
    gateways = [g for g in inp.gateways
                if (g.get("spec") or {}).get("gatewayClassName") in ours]
    ports = allocate_ports(gateways, inp.services, setup)
    gw_status: dict[tuple[str, str], dict[str, Any]] = {}
    frontends: list[Frontend] = []
    # (gw ns, gw name) -> [(listener spec, listener or None, status entry)]
    gw_listeners: dict[tuple[str, str], list[tuple[Obj, Listener | None, dict[str, Any]]]] = {}
    services: dict[str, dict[str, Any]] = {}
    for gw in gateways:
        key = _nsname(gw)
        valid, statuses, pairs = b.listeners(gw, ports[key])
        gw_listeners[key] = [(s, li, st) for (s, li), st in zip(pairs, statuses, strict=True)]
        by_port: dict[int, list[Listener]] = {}
        for li in valid:
            by_port.setdefault(li.port, []).append(li)
        for port, lis in sorted(by_port.items()):
            proto = lis[0].protocol
            terminate = proto == "HTTPS" or (proto == "TLS" and not lis[0].passthrough)
            frontends.append(Frontend(lis[0].gateway, port, lis[0].target_port, terminate,
                                      tuple(lis), "http" if proto in ("HTTP", "HTTPS")
                                      else "tcp"))
        svc = _service(gw, ports[key], setup)
        services[str(svc["metadata"]["name"])] = svc
        gw_status[key] = {"listeners": statuses, "service": svc["metadata"]["name"],
                          "addresses_problem": _address_problem(gw)}
    rules: list[Rule] = []
    route_status: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for kind, objs in (("HTTPRoute", inp.httproutes), ("GRPCRoute", inp.grpcroutes),
                       ("TLSRoute", inp.tlsroutes), ("TCPRoute", inp.tcproutes)):
        more_rules, more_status = _routes(b, kind, objs, gw_listeners, setup)
        rules += more_rules
        route_status.update(more_status)
    for key, st in gw_status.items():
        del key
        for entry in st["listeners"]:
            entry["conditions"] = tuple(entry["conditions"])
    if memo is not None:
        memo.clear()
        memo.update(b.used)
    return GatewayPlan(
        frontends=tuple(frontends), rules=tuple(sorted(rules, key=lambda r: r.order)),
        backends=dict(sorted(b.backends.items())), certs=tuple(b.certs.values()),
        secrets_wanted=frozenset(b.wanted), class_status=class_status,
        gateway_status=gw_status, route_status=route_status, services=services,
        events=tuple(b.events))


def _address_problem(gw: Obj) -> str | None:
    for a in (gw.get("spec") or {}).get("addresses") or []:
        if str(a.get("type") or "IPAddress") != "IPAddress":
            return f"address type {a.get('type')} is not supported"
    return None


def _service(gw: Obj, ports: Mapping[int, int], setup: Setup) -> dict[str, Any]:
    ns, name = _nsname(gw)
    ips = [str(a.get("value")) for a in (gw.get("spec") or {}).get("addresses") or []
           if str(a.get("type") or "IPAddress") == "IPAddress" and a.get("value")]
    annotations = {GATEWAY_ANNOTATION: f"{ns}/{name}"}
    if ips:
        annotations["lb.portico.dev/loadBalancerIPs"] = ",".join(ips)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(ns, name), "namespace": setup.namespace,
                     "labels": {SERVICE_LABEL: "true"}, "annotations": annotations},
        "spec": {
            "type": "LoadBalancer", "selector": dict(setup.selector),
            "externalTrafficPolicy": setup.external_traffic_policy,
            "ports": [{"name": f"l{port}", "port": port, "targetPort": tp, "protocol": "TCP"}
                      for port, tp in sorted(ports.items())],
        },
    }


Listeners = Mapping[tuple[str, str], list[tuple[Obj, Listener | None, dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class _RouteResult:
    rules: tuple[Rule, ...]
    parents: list[dict[str, Any]]
    attach: tuple[tuple[tuple[str, str], int], ...]  # (Gateway, listener index) attached to
    backends: Mapping[str, Backend]


def _context(b: _Build, gw_listeners: Listeners) -> tuple[Any, ...]:
    """What every route's result depends on besides the route and its Services: by content
    where a status write replaces the object (Gateways, Namespaces), so that our own status
    updates do not make every route's result stale."""
    return (tuple((k, tuple((repr(s), li) for s, li, _st in v)) for k, v in gw_listeners.items()),
            tuple(id(g) for g in b.inp.grants),
            tuple((k, repr(_meta(n).get("labels"))) for k, n in b.inp.namespaces.items()))


def _service_keys(route: Obj) -> tuple[tuple[str, str], ...]:
    rns = str((route.get("metadata") or {}).get("namespace") or "")
    return tuple((str(ref.get("namespace") or rns), str(ref.get("name") or ""))
                 for rule in (route.get("spec") or {}).get("rules") or []
                 for ref in rule.get("backendRefs") or [])


def _routes(b: _Build, kind: str, routes: Iterable[Obj], gw_listeners: Listeners,
            setup: Setup) -> tuple[list[Rule], dict[tuple[str, str, str], list[dict[str, Any]]]]:
    rules: list[Rule] = []
    status: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    ctx = _context(b, gw_listeners)
    for route in sorted(routes, key=_age):
        # A route's result is reused while the route, the Gateways' listeners, the grants,
        # the namespaces and the Services it names are the same objects: a change to one
        # route among a thousand rebuilds that one only.
        deps = (ctx, tuple(id(b.inp.services.get(k)) for k in _service_keys(route)))
        res: _RouteResult = b.cached(route, "route", deps,
                                     partial(_one_route, b, kind, route, gw_listeners, setup))
        rules.extend(res.rules)
        b.backends.update(res.backends)
        for gkey, idx in res.attach:
            gw_listeners[gkey][idx][2]["attachedRoutes"] += 1
        if res.parents:
            rns, rname = _nsname(route)
            status[(kind, rns, rname)] = res.parents
    return rules, status


def _one_route(b: _Build, kind: str, route: Obj, gw_listeners: Listeners,
               setup: Setup) -> _RouteResult:
    rns, rname = _nsname(route)
    owner = ObjectRef(kind, rname, rns)
    spec = route.get("spec") or {}
    hosts = b.cached(route, "hosts", None, partial(_route_hostnames, route))
    parents: list[dict[str, Any]] = []
    rules: list[Rule] = []
    attach: list[tuple[tuple[str, str], int]] = []
    backends: dict[str, Backend] = {}
    targets_per_rule, resolved = _rule_targets(b, route, owner, backends)
    parsed_rules = []
    problem = hosts if isinstance(hosts, str) else None
    for ri, rule in enumerate(spec.get("rules") or []):
        if kind in ("TLSRoute", "TCPRoute"):  # match by listener (and SNI) only
            parsed_rules.append((ri, rule, [ANY]))
            continue
        ms = b.cached(rule, "matches", None,
                      partial(_grpc_matches if kind == "GRPCRoute" else _matches, rule))
        if isinstance(ms, str):
            problem = problem or f"rules[{ri}]: {ms}"
            continue
        parsed_rules.append((ri, rule, ms))
    for pref in spec.get("parentRefs") or []:
        if str(pref.get("group", GROUP)) != GROUP or str(pref.get("kind", "Gateway")) \
                != "Gateway":
            continue
        gkey = (str(pref.get("namespace") or rns), str(pref.get("name") or ""))
        if gkey not in gw_listeners:
            continue  # not one of our Gateways: not ours to report on
        conds: list[Cond] = []
        cands = gw_listeners[gkey]
        section = pref.get("sectionName")
        port = pref.get("port")
        sel = [(i, s, li) for i, (s, li, _st) in enumerate(cands)
               if (section is None or s.get("name") == section)
               and (port is None or int(s.get("port") or 0) == int(port))]
        attached: list[tuple[Listener, list[str]]] = []
        if not sel:
            conds.append(("Accepted", False, "NoMatchingParent",
                          "no listener matches sectionName/port"))
        else:
            allowed = [(i, s, li) for i, s, li in sel
                       if b.namespace_allowed(s, gkey[0], rns)
                       and b.kind_allowed(s, kind)]
            if not allowed:
                conds.append(("Accepted", False, "NotAllowedByListeners",
                              "the listeners' allowedRoutes do not admit this route"))
            elif isinstance(hosts, str):
                conds.append(("Accepted", False, "UnsupportedValue", hosts))
            else:
                matching = [(i, li, intersect(s.get("hostname"), hosts))
                            for i, s, li in allowed]
                matching = [(i, li, eff) for i, li, eff in matching if eff]
                if not matching:
                    conds.append(("Accepted", False, "NoMatchingListenerHostname",
                                  "no listener hostname intersects the route's"))
                elif problem:
                    conds.append(("Accepted", False, "UnsupportedValue", problem))
                else:
                    conds.append(("Accepted", True, "Accepted", "Route accepted"))
                    for i, li, eff in matching:
                        attach.append((gkey, i))
                        if li is not None:
                            attached.append((li, eff))
        if resolved is None:
            conds.append(("ResolvedRefs", True, "ResolvedRefs", "References resolved"))
        else:
            conds.append(("ResolvedRefs", False, resolved[0], resolved[1]))
        parents.append({"parentRef": dict(pref), "controllerName": setup.controller_name,
                        "conditions": tuple(conds)})
        seen: set[tuple[str, str]] = set()
        for li, eff in attached:
            for host in eff:
                if (li.key, host) in seen:
                    continue
                seen.add((li.key, host))
                for ri, _rule, ms in parsed_rules:
                    for mi, m in enumerate(ms):
                        targets = targets_per_rule[ri][mi]
                        rules.append(Rule(li.key, host, m, targets, owner,
                                          _rule_order(host, m, route, ri, mi)))
    return _RouteResult(tuple(rules), parents, tuple(attach), backends)


def _rule_targets(b: _Build, route: Obj, owner: ObjectRef, backends: dict[str, Backend]) -> tuple[
        list[list[tuple[tuple[str, int], ...]]], tuple[str, str] | None]:
    """Per rule, per match: weighted backends; and the first ResolvedRefs problem."""
    rns = owner.namespace or ""
    problem: tuple[str, str] | None = None
    out: list[list[tuple[tuple[str, int], ...]]] = []
    for rule in (route.get("spec") or {}).get("rules") or []:
        per_match: list[tuple[tuple[str, int], ...]] = []
        ms = rule.get("matches") or [{}]
        for m in ms:
            path = m.get("path") or {}
            prefix = str(path.get("value") or "/") if str(
                path.get("type") or "PathPrefix") == "PathPrefix" else None
            flt = (b.cached(rule, "filters", prefix, partial(_filters, rule, prefix))
                   if owner.kind in HTTP_ROUTES else TCP)
            if isinstance(flt, str):
                problem = problem or ("UnsupportedValue", flt)
                per_match.append((("", 1),))
                continue
            if flt.redirect is not None:
                name = "be_gwr_" + _hash(repr(flt))
                backends[name] = Backend(name, rns, "", 0, Annotations(), False, None, gw=flt)
                per_match.append(((name, 1),))
                continue
            targets: list[tuple[str, int]] = []
            for ref in rule.get("backendRefs") or []:
                weight = int(ref.get("weight", 1))
                why = _backend_problem(b, ref, rns, owner.kind)
                if why is not None:
                    problem = problem or why
                    if weight:
                        targets.append(("", weight))
                    continue
                sns = str(ref.get("namespace") or rns)
                sname = str(ref.get("name"))
                port = int(ref.get("port"))
                rflt = (b.cached(ref, "filters", prefix, partial(_filters, ref, prefix))
                        if owner.kind in HTTP_ROUTES else Filters())
                merged = flt if isinstance(rflt, str) or rflt == Filters() else _merge(flt, rflt)
                ann = (_H2C if owner.kind == "GRPCRoute"  # gRPC is HTTP/2 end to end
                       else _port_protocol(b.inp.services.get((sns, sname)), port))
                name = backend_name(sns, sname, port, "gw:" + repr(merged) + repr(ann))
                backends[name] = Backend(name, sns, sname, port, ann, False, None,
                                         gw=merged if merged != Filters() else None)
                targets.append((name, weight))
            if not targets:
                targets = [("", 1)]  # no backendRefs at all: 500
            per_match.append(tuple(targets))
        out.append(per_match)
    return out, problem


TCP = Filters(mode="tcp")
_PLAIN = Annotations()
_H2C = Annotations(backend_protocol="GRPC")  # renders "proto h2": HTTP/2 without TLS


def _port_protocol(svc: Obj | None, port: int) -> Annotations:
    """The Service port's appProtocol, as the backend's protocol (h2c: HTTP/2 cleartext;
    WebSocket needs nothing: HAProxy passes upgrades through on any HTTP backend)."""
    for p in ((svc or {}).get("spec") or {}).get("ports") or []:
        if p.get("port") == port and p.get("appProtocol") == "kubernetes.io/h2c":
            return _H2C
    return _PLAIN


def _merge(a: Filters, b: Filters) -> Filters:
    return Filters(a.req_set + b.req_set, a.req_add + b.req_add, a.req_remove + b.req_remove,
                   a.resp_set + b.resp_set, a.resp_add + b.resp_add,
                   a.resp_remove + b.resp_remove, a.redirect or b.redirect,
                   a.rewrite_host or b.rewrite_host, a.rewrite_path or b.rewrite_path,
                   a.matched_prefix or b.matched_prefix, a.mode)


def _backend_problem(b: _Build, ref: Obj, rns: str, route_kind: str) -> tuple[str, str] | None:
    group, kind = str(ref.get("group") or ""), str(ref.get("kind") or "Service")
    if group != "" or kind != "Service":
        return ("InvalidKind", f"backendRef kind {group}/{kind} is not supported")
    sns = str(ref.get("namespace") or rns)
    sname = str(ref.get("name") or "")
    if name_problem(sname) or name_problem(sns):
        return ("BackendNotFound", f"backendRef name {sname[:60]!r} is invalid")
    if sns != rns and not grant_allows(b.inp.grants, route_kind, rns, "Service", "", sns,
                                       sname):
        return ("RefNotPermitted", f"no ReferenceGrant in {sns} allows Service {sname}")
    if (sns, sname) not in b.inp.services:
        return ("BackendNotFound", f"Service {sns}/{sname} not found")
    if not isinstance(ref.get("port"), int):
        return ("BackendNotFound", f"backendRef to Service {sns}/{sname} needs a port")
    return None
