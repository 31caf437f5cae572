"""Routing model of the ingress tier (pure): Kubernetes objects (dicts) in, routes out.

Semantics (docs/ingress.md has the user-facing version):

* **Class.** An Ingress is ours when ``spec.ingressClassName`` names an IngressClass whose
  ``spec.controller`` is our controller name, or the legacy annotation
  ``kubernetes.io/ingress.class`` equals our class name, or it names no class and one of our
  IngressClasses carries ``ingressclass.kubernetes.io/is-default-class: "true"``. Anything
  else is ignored entirely (no routes, no Events, no status).
* **Hosts.** A request's host (Host header, port stripped, lower-cased) selects, in order:
  the rules of that exact host; else the rules of the wildcard ``*.<rest>`` where ``<rest>``
  is the host minus its first label (so ``*.foo.com`` matches ``a.foo.com`` only, never
  ``foo.com`` or ``a.b.foo.com``); else the rules without host. A selected host whose paths
  all miss falls to the default backend (not to the host-less rules), as the spec says a
  host rule "applies only to that host".
* **Paths.** Exact matches first; then regex paths (ImplementationSpecific with
  ``use-regex``), longest pattern first; then Prefix paths, longest first, element-wise
  (``/aaa`` matches ``/aaa`` and ``/aaa/bbb``, not ``/aaabbb``; a trailing slash in the rule
  is ignored; ``/`` matches everything). ImplementationSpecific without ``use-regex`` is
  Prefix. An Exact match always covers the whole request path, so "Exact before Prefix on
  equal paths" and "longest first" agree.
* **Conflicts.** Two Ingresses claiming the same (host, path, match kind), the same default
  backend slot or the same TLS host: the oldest ``creationTimestamp`` wins, then
  namespace/name; the loser gets a Warning Event ``RouteConflict``.
* **Backends.** One HAProxy backend per (Service, port, backend-affecting annotations); the
  name is the validated namespace/service/port plus a hash of the rest, so no user string is
  ever copied into haproxy.cfg unchecked.
* **Invalid input.** A bad host, path or backend drops that path (Event ``InvalidIngress``);
  a bad annotation or object name drops the whole Ingress (fail closed). Nothing one Ingress
  contains can change the routes of another except through the documented conflict rule.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from common.api.model import ObjectRef
from ingress.core.annotations import Annotations, parse_annotations
from ingress.core.filters import Filters
from ingress.core.validate import (
    host_problem,
    label_problem,
    name_problem,
    path_problem,
    port_name_problem,
    regex_problem,
    valid_ip,
)

CONTROLLER_NAME = "portico.dev/ingress"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
HOSTLESS = "_"  # host key of rules without host: '_' is not valid in an RFC 1123 name
MAX_SLOTS = 4096  # upper bound of server slots per backend (HAProxy handles far more)
MIN_SLOTS = 4  # small Services scale up and down without reloads between 0 and 4 pods

Kind = Literal["Exact", "Prefix", "Regex"]
Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    ref: ObjectRef
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Backend:
    """One HAProxy backend: a Service port plus the annotations that shape its traffic."""

    name: str
    namespace: str
    service: str
    port: int | str  # as written in the Ingress (number or Service port name)
    ann: Annotations
    ssl_redirect: bool  # effective: redirect plain HTTP to HTTPS with 308
    rewrite: tuple[str, str] | None  # (regex on path, replacement with \\N groups)
    # Gateway API filters (header changes, redirect, URL rewrite); None for Ingress.
    gw: Filters | None = None


@dataclass(frozen=True, slots=True)
class Route:
    host: str  # exact host, "*.x" wildcard, or HOSTLESS
    path: str
    kind: Kind
    backend: str
    owner: ObjectRef


@dataclass(frozen=True, slots=True)
class TLSCert:
    name: str  # file stem derived from a hash of namespace/secret (never the user string)
    secret: ObjectRef
    hosts: tuple[str, ...]
    pem: bytes  # certificate chain + key, PEM
    # "gateway": served by a Gateway listener's own crt-list, not the Ingress SNI list.
    scope: str = "ingress"


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Model:
    backends: Mapping[str, Backend]
    routes: tuple[Route, ...]
    default_backend: str | None
    certs: tuple[TLSCert, ...]
    ours: tuple[ObjectRef, ...]  # Ingresses of our class (they get the status address)
    secrets_wanted: frozenset[tuple[str, str]]  # (namespace, name) referenced by our TLS
    events: tuple[Event, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Config:
    ingress_class: str = "portico"
    controller_name: str = CONTROLLER_NAME


def _ref(obj: Obj, kind: str = "Ingress") -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(kind, str(meta.get("name", ""))[:253], str(meta.get("namespace", ""))[:63])


def our_classes(classes: Iterable[Obj], cfg: Config) -> tuple[set[str], bool]:
    """(names of IngressClasses handled by us, whether one of them is the default class)."""
    names: set[str] = set()
    default = False
    for ic in classes:
        if (ic.get("spec") or {}).get("controller") != cfg.controller_name:
            continue
        meta = ic.get("metadata") or {}
        names.add(str(meta.get("name")))
        if (meta.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
            default = True
    return names, default


def is_ours(ing: Obj, classes: set[str], default: bool, cfg: Config) -> bool:
    spec = ing.get("spec") or {}
    name = spec.get("ingressClassName")
    if name is not None:
        return name in classes
    legacy = ((ing.get("metadata") or {}).get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    if legacy is not None:
        return bool(legacy == cfg.ingress_class)
    return default


def _age_key(ing: Obj) -> tuple[str, str, str]:
    meta = ing.get("metadata") or {}
    # RFC 3339 timestamps in UTC ("Z") sort lexically in time order.
    return (str(meta.get("creationTimestamp") or "9999"), str(meta.get("namespace", "")),
            str(meta.get("name", "")))


@lru_cache(maxsize=65536)
def backend_name(namespace: str, service: str, port: int | str, detail: str) -> str:
    """HAProxy proxy name from validated parts plus a hash of everything else."""
    digest = hashlib.sha256(f"{namespace}/{service}/{port}/{detail}".encode()).hexdigest()[:10]
    return f"be_{namespace}_{service}_{port}_{digest}"


def prefix_regex(path: str) -> str:
    """Regex (HAProxy PCRE) matching a validated Prefix path element-wise, group 1 = rest."""
    base = path.rstrip("/")
    return "^" + re.escape(base) + "(?:/(.*))?$" if base else "^/(.*)$"


def _rewrite(route_path: str, kind: Kind, target: str) -> tuple[str, str]:
    # HAProxy replace-path uses \N for groups; users write $N (nginx habit).
    replacement = re.sub(r"\$([1-9])", r"\\\1", target)
    if kind == "Regex":
        return ("^" + route_path.lstrip("^"), replacement)
    if kind == "Exact":
        return ("^" + re.escape(route_path) + "$", replacement)
    # Prefix: the matched prefix is replaced by the target, the rest is kept.
    joiner = "" if replacement.endswith("/") else "/"
    return (prefix_regex(route_path), replacement + joiner + "\\1")


@lru_cache(maxsize=4096)
def _detail(ann: Annotations, ssl_redirect: bool, rewrite: tuple[str, str] | None) -> str:
    return repr((ann, ssl_redirect, rewrite))


_NO_ANNOTATIONS = Annotations()


@dataclass(frozen=True, slots=True)
class ParsedPath:
    where: str
    host: str
    path: str  # normalised (Prefix: no trailing slash)
    kind: Kind
    service: str
    port: int | str
    # (backend, route) without and with the HTTPS redirect, precomputed once per object
    # version: which one applies depends on other Ingresses' TLS hosts.
    choices: tuple[tuple[Backend, Route], tuple[Backend, Route]]


@dataclass(frozen=True, slots=True)
class ParsedIngress:
    """Everything about one Ingress that does not depend on any other object."""

    ref: ObjectRef
    age: tuple[str, str, str]
    named: bool  # metadata names valid: the Ingress is addressable (status, Events)
    routable: bool  # names and annotations valid
    ann: Annotations
    events: tuple[Event, ...]
    # (where, secret or None for the default certificate, (index, host) pairs)
    tls: tuple[tuple[str, str | None, tuple[tuple[int, str], ...]], ...]
    default: tuple[Backend, Backend] | None  # without / with forced redirect
    paths: tuple[ParsedPath, ...]


def _backend_ref(spec: Obj, where: str, warn: list[Event],
                 ref: ObjectRef) -> tuple[str, int | str] | None:
    def bad(msg: str) -> None:
        warn.append(Event(ref, "Warning", "InvalidIngress", f"{where}{msg}"[:1024]))

    svc = spec.get("service") if isinstance(spec, Mapping) else None
    if not isinstance(svc, Mapping):
        resource = isinstance(spec, Mapping) and spec.get("resource")
        bad(": resource backends are not supported" if resource else ": service is required")
        return None
    sname = svc.get("name")
    if not isinstance(sname, str) or label_problem(sname):
        bad(".service.name: not a DNS-1123 label")
        return None
    raw_port = svc.get("port")
    port: Mapping[str, Any] = raw_port if isinstance(raw_port, Mapping) else {}
    number, pname = port.get("number"), port.get("name")
    if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 65535:
        return sname, number
    if number is None and isinstance(pname, str) and not port_name_problem(pname):
        return sname, pname
    bad(".service.port: need number 1-65535 or an IANA port name")
    return None


def parse_ingress(ing: Obj) -> ParsedIngress:
    """Validate one Ingress on its own (pure; memoisable per object)."""
    meta = ing.get("metadata") or {}
    ref = _ref(ing)
    events: list[Event] = []

    def warn(reason: str, message: str) -> None:
        events.append(Event(ref, "Warning", reason, message[:1024]))

    def done(routable: bool, ann: Annotations = _NO_ANNOTATIONS, tls: tuple[Any, ...] = (),
             default: tuple[Backend, Backend] | None = None,
             paths: tuple[ParsedPath, ...] = (), named: bool = True) -> ParsedIngress:
        return ParsedIngress(ref, _age_key(ing), named, routable, ann, tuple(events), tls,
                             default, paths)

    problems = []
    for fname, value, check in (("metadata.name", meta.get("name"), name_problem),
                                ("metadata.namespace", meta.get("namespace"), label_problem)):
        p = check(value) if isinstance(value, str) else "must be a string"
        if p:
            problems.append(f"{fname}: {p}")
    if problems:
        warn("InvalidIngress", "; ".join(problems) + " (Ingress ignored)")
        return done(False, named=False)
    annotations = meta.get("annotations") or {}
    result = parse_annotations(dict(annotations) if isinstance(annotations, Mapping) else {})
    for key, msg in result.warnings:
        warn("UnsupportedAnnotation", f"{key!r}: {msg}")
    if result.errors:
        for key, msg in result.errors:
            warn("InvalidAnnotation", f"{key}: {msg} (Ingress not routed)")
        return done(False)
    ann = result.value
    spec = ing.get("spec") or {}
    tls_out: list[tuple[str, str | None, tuple[tuple[int, str], ...]]] = []
    for i, tls in enumerate(spec.get("tls") or []):
        where = f"spec.tls[{i}]"
        if not isinstance(tls, Mapping):
            warn("InvalidIngress", f"{where}: must be an object")
            continue
        # secretName is optional (Ingress API): without it the hosts are still served over
        # HTTPS by SNI, with the default certificate, and redirect like any TLS host.
        secret = tls.get("secretName")
        if secret == "":
            secret = None  # an empty name means the same as none
        if secret is not None and (not isinstance(secret, str) or name_problem(secret)):
            warn("InvalidIngress", f"{where}.secretName: not a DNS-1123 name")
            continue
        hosts = []
        for j, host in enumerate(tls.get("hosts") or []):
            p = host_problem(host) if isinstance(host, str) else "must be a string"
            if p:
                warn("InvalidIngress", f"{where}.hosts[{j}]: {p}")
                continue
            hosts.append((j, host))
        tls_out.append((where, secret, tuple(hosts)))
    ns = ref.namespace or ""

    def make(svc: str, port: int | str, redirect: bool,
             route: tuple[str, Kind] | None) -> Backend:
        rewrite = None
        if ann.rewrite_target and route is not None:
            rewrite = _rewrite(route[0], route[1], ann.rewrite_target)
        name = backend_name(ns, svc, port, _detail(ann, redirect, rewrite))
        return Backend(name, ns, svc, port, ann, redirect, rewrite)

    default = None
    if spec.get("defaultBackend") is not None:
        target = _backend_ref(spec["defaultBackend"], "spec.defaultBackend", events, ref)
        if target is not None:
            default = (make(*target, False, None), make(*target, True, None))
    paths: list[ParsedPath] = []
    for i, rule in enumerate(spec.get("rules") or []):
        if not isinstance(rule, Mapping):
            continue
        where = f"spec.rules[{i}]"
        host = rule.get("host") or HOSTLESS
        if host != HOSTLESS:
            p = host_problem(host) if isinstance(host, str) else "must be a string"
            if p:
                warn("InvalidIngress", f"{where}.host: {p}")
                continue
        http = rule.get("http") or {}
        for j, item in enumerate(http.get("paths") or [] if isinstance(http, Mapping) else []):
            pwhere = f"{where}.http.paths[{j}]"
            if not isinstance(item, Mapping):
                continue
            path = item.get("path", "/") or "/"
            ptype = item.get("pathType")
            kind: Kind
            if ptype == "Exact":
                kind = "Exact"
            elif ptype == "Prefix" or (ptype == "ImplementationSpecific" and not ann.use_regex):
                kind = "Prefix"
            elif ptype == "ImplementationSpecific":
                kind = "Regex"
            else:
                warn("InvalidIngress", f"{pwhere}.pathType: must be Exact, Prefix or "
                     "ImplementationSpecific")
                continue
            if not isinstance(path, str):
                warn("InvalidIngress", f"{pwhere}.path: must be a string")
                continue
            p = regex_problem(path) if kind == "Regex" else path_problem(path)
            if p:
                warn("InvalidIngress", f"{pwhere}.path: {p}")
                continue
            norm = path if kind != "Prefix" else (path.rstrip("/") or "/")
            target = _backend_ref(item.get("backend") or {}, f"{pwhere}.backend", events, ref)
            if target is None:
                continue
            plain, redirected = (make(*target, r, (norm, kind)) for r in (False, True))
            paths.append(ParsedPath(pwhere, host, norm, kind, target[0], target[1], (
                (plain, Route(host, norm, kind, plain.name, ref)),
                (redirected, Route(host, norm, kind, redirected.name, ref)))))
    return done(True, ann, tuple(tls_out), default, tuple(paths))


_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=]{1,80}")


def _pem_ok(data: bytes) -> bool:
    """Strict PEM shape: BEGIN/END blocks of base64 lines, nothing in between, ASCII."""
    if len(data) > 256 * 1024:
        return False
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return False
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]
    label: str | None = None
    blocks = 0
    for ln in lines:
        if label is None:
            m = _PEM_BEGIN.fullmatch(ln)
            if m is None:
                return False
            label = m.group(1)
        elif ln == f"-----END {label}-----":
            label, blocks = None, blocks + 1
        elif not _PEM_BODY.fullmatch(ln):
            return False
    return label is None and blocks > 0


def tls_pem(secret: Obj) -> bytes | str:
    """The PEM bundle (chain then key) of a kubernetes.io/tls Secret, or why it is unusable."""
    if secret.get("type") != "kubernetes.io/tls":
        return "Secret type must be kubernetes.io/tls"
    data = secret.get("data") or {}
    parts: list[bytes] = []
    for key in ("tls.crt", "tls.key"):
        raw = data.get(key)
        if not isinstance(raw, str) or len(raw) > 512 * 1024:
            return f"data[{key}] missing or too large"
        try:
            decoded = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return f"data[{key}] is not valid base64"
        if not _pem_ok(decoded):
            return f"data[{key}] is not a PEM document"
        parts.append(decoded.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n")
    return b"".join(parts)


Memo = dict[int, tuple[Obj, ParsedIngress]]


def build_model(
    ingresses: Iterable[Obj],
    classes: Iterable[Obj],
    services: Mapping[tuple[str, str], Obj],
    secrets: Mapping[tuple[str, str], Obj],
    cfg: Config | None = None,
    memo: Memo | None = None,
) -> Model:
    """All routes, backends and certificates of the Ingresses of our class.

    ``memo`` (optional, owned by the caller) caches ``parse_ingress`` by object identity:
    informer stores hand out the same dict until an object changes, so a resync of 10,000
    Ingresses re-parses only the changed ones. Entries keep a reference to their object,
    so an id is never mistaken for a recycled one.
    """
    cfg = cfg or Config()
    names, default = our_classes(classes, cfg)
    events: list[Event] = []

    def warn(ref: ObjectRef, reason: str, message: str) -> None:
        events.append(Event(ref, "Warning", reason, message[:1024]))

    parsed: list[ParsedIngress] = []
    seen: set[int] = set()
    for ing in ingresses:
        if not is_ours(ing, names, default, cfg):
            continue
        entry = memo.get(id(ing)) if memo is not None else None
        if entry is not None and entry[0] is ing:
            pi = entry[1]
        else:
            pi = parse_ingress(ing)
            if memo is not None:
                memo[id(ing)] = (ing, pi)
        seen.add(id(ing))
        parsed.append(pi)
    if memo is not None:
        for key in [k for k in memo if k not in seen]:
            del memo[key]
    parsed.sort(key=lambda p: p.age)
    ours = [p.ref for p in parsed if p.named]
    for p in parsed:
        events.extend(p.events)
    routable = [p for p in parsed if p.routable]

    # TLS first: it decides which hosts redirect to HTTPS.
    tls_hosts: dict[str, ObjectRef] = {}  # host -> owning Ingress
    cert_hosts: dict[tuple[str, str], list[str]] = {}
    wanted: set[tuple[str, str]] = set()
    for p in routable:
        for where, secret, hosts_ in p.tls:
            skey = (p.ref.namespace or "", secret or "")
            if secret is not None:
                wanted.add(skey)
            for j, host in hosts_:
                owner = tls_hosts.setdefault(host, p.ref)
                if owner != p.ref:
                    warn(p.ref, "RouteConflict", f"{where}.hosts[{j}]: TLS host {host} is "
                         f"already served by older {owner}")
                    continue
                if secret is None:
                    continue  # default certificate: a TLS host without a crt-list entry
                hosts = cert_hosts.setdefault(skey, [])
                if host not in hosts:
                    hosts.append(host)
    certs: list[TLSCert] = []
    for (ns, sname), hosts in sorted(cert_hosts.items()):
        sref = ObjectRef("Secret", sname, ns)
        secret_obj = secrets.get((ns, sname))
        if secret_obj is None:
            warn(tls_hosts[hosts[0]], "SecretNotFound", f"TLS Secret {ns}/{sname} not found; "
                 "hosts served with the default certificate")
            continue
        pem = tls_pem(secret_obj)
        if isinstance(pem, str):
            warn(sref, "InvalidSecret", pem)
            warn(tls_hosts[hosts[0]], "InvalidSecret", f"Secret {ns}/{sname}: {pem}")
            continue
        stem = "c_" + hashlib.sha256(f"{ns}/{sname}".encode()).hexdigest()[:16]
        certs.append(TLSCert(stem, sref, tuple(hosts), pem))

    backends: dict[str, Backend] = {}

    routes: dict[tuple[str, str, str], Route] = {}
    default_backend: str | None = None
    default_owner: ObjectRef | None = None
    for p in routable:
        if p.default is not None:
            if default_owner is not None:
                warn(p.ref, "RouteConflict",
                     f"spec.defaultBackend: older {default_owner} already sets it")
            else:
                be = p.default[p.ann.force_ssl_redirect]
                backends.setdefault(be.name, be)
                default_backend, default_owner = be.name, p.ref
        force, ssl_redirect = p.ann.force_ssl_redirect, p.ann.ssl_redirect
        for pp in p.paths:
            rkey = (pp.host, pp.path, pp.kind)
            existing = routes.get(rkey)
            if existing is not None:
                if existing.owner != p.ref:
                    warn(p.ref, "RouteConflict", f"{pp.where}: {pp.kind} {pp.host}{pp.path} is "
                         f"already routed by older {existing.owner}")
                continue
            be, route = pp.choices[force or (ssl_redirect and pp.host in tls_hosts)]
            backends.setdefault(be.name, be)
            routes[rkey] = route
    used = {r.backend for r in routes.values()} | ({default_backend} if default_backend else set())
    return Model({n: backends[n] for n in sorted(backends) if n in used},
                 tuple(routes.values()), default_backend, tuple(certs), tuple(ours),
                 frozenset(wanted), tuple(events))


# --- endpoints -------------------------------------------------------------------------------

def service_port(service: Obj | None, port: int | str) -> tuple[str, int | str] | None:
    """(Service port name, targetPort) for an Ingress backend port, None if undefined."""
    if service is None:
        return None
    for sp in (service.get("spec") or {}).get("ports") or []:
        if (isinstance(port, int) and sp.get("port") == port) or (
            isinstance(port, str) and sp.get("name") == port
        ):
            return str(sp.get("name") or ""), sp.get("targetPort", sp.get("port"))
    return None


def endpoints_for(backend: Backend, service: Obj | None,
                  slices: Iterable[Obj]) -> tuple[Endpoint, ...]:
    """Ready endpoints of the backend's Service port, sorted, de-duplicated, IPs validated."""
    resolved = service_port(service, backend.port)
    if resolved is None:
        return ()
    pname, target = resolved
    found: set[Endpoint] = set()
    for sl in slices:
        if sl.get("addressType") not in ("IPv4", "IPv6"):
            continue
        port: int | None = None
        for p in sl.get("ports") or []:
            if str(p.get("name") or "") == pname:
                port = p.get("port")
        if port is None and isinstance(target, int):
            port = target
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            continue
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:
                if isinstance(addr, str) and valid_ip(addr):
                    found.add(Endpoint(addr, port))
    return tuple(sorted(found, key=lambda e: (e.ip, e.port)))


def slot_count(current: int | None, ready: int) -> int:
    """Server slots for a backend: keep the current count while it suffices (no reload)."""
    if current is not None and ready <= current:
        return current
    n = MIN_SLOTS
    while n < ready and n < MAX_SLOTS:
        n *= 2
    return n


def assign_slots(previous: tuple[Endpoint | None, ...], endpoints: tuple[Endpoint, ...],
                 slots: int) -> tuple[Endpoint | None, ...]:
    """Place endpoints in slots, keeping every surviving endpoint in its slot.

    Stable placement matters: changing a slot's address would disturb connections to an
    endpoint that did not change. Endpoints beyond ``slots`` are left out (caller grows).
    """
    if (len(previous) == slots
            and sum(e is not None for e in previous) == len(endpoints)
            and set(endpoints) == {e for e in previous if e is not None}):
        return previous  # unchanged: the common case of a resync
    want = set(endpoints)
    prev = list(previous[:slots]) + [None] * (slots - len(previous[:slots]))
    out: list[Endpoint | None] = [e if e is not None and e in want else None for e in prev]
    placed = {e for e in out if e is not None}
    # Fill slots that were already empty before reusing slots freed in this pass: fewer
    # address moves, and a removed endpoint keeps serving until its slot is drained.
    free = [i for i, e in enumerate(prev) if e is None] + [
        i for i, e in enumerate(prev) if e is not None and e not in want]
    for ep in endpoints:
        if ep in placed:
            continue
        if not free:
            break
        out[free.pop(0)] = ep
    return tuple(out)
