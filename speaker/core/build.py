"""Kubernetes objects (dicts from the informer caches) -> one ``ClusterSnapshot`` (pure).

Invalid objects never stop the build: each becomes a FieldProblem in ``BuildResult.problems``
(the speaker reports them as Events) and is left out — except Services: a Service's
``status.loadBalancer.ingress`` is the allocation the controller made, so a Service that
fails validation (say a typo in an annotation added later) keeps being announced at the
addresses its status holds; the controller reports the problem.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common.api.model import (
    BGPAdvertisement,
    BGPPeer,
    FieldProblem,
    IPAddress,
    L2Advertisement,
    LBService,
    Pool,
    TrafficPolicy,
)
from common.api.parse import (
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_l2_advertisement,
    parse_pool,
    parse_service,
)
from common.errors import InvalidObject
from speaker.core.snapshot import ClusterSnapshot, Endpoint, NodeInfo, SecretReadError

Obj = Mapping[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class BuildResult:
    snapshot: ClusterSnapshot
    # (kind, name, problems) for objects left out or degraded
    problems: tuple[tuple[str, str, tuple[FieldProblem, ...]], ...] = ()


def _name(obj: Obj) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name", "?")) if isinstance(meta, Mapping) else "?"


def _ip(text: object) -> IPAddress | None:
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def node_info(obj: Obj) -> NodeInfo | None:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    labels_raw = meta.get("labels")
    labels = {str(k): str(v) for k, v in labels_raw.items()} if isinstance(
        labels_raw, Mapping) else {}
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    ready = True  # no Ready condition yet (a new node): do not exclude it
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            ready = c.get("status") != "False"
    addrs: list[IPAddress] = []
    for a in status.get("addresses") or []:
        if isinstance(a, Mapping) and a.get("type") == "InternalIP":
            ip = _ip(a.get("address"))
            if ip is not None:
                addrs.append(ip)
    return NodeInfo(meta["name"], labels, ready, tuple(addrs))


def _fallback_service(obj: Obj) -> LBService | None:
    meta, spec, status = obj.get("metadata"), obj.get("spec"), obj.get("status")
    if not (isinstance(meta, Mapping) and isinstance(spec, Mapping)):
        return None
    if spec.get("type") != "LoadBalancer":
        return None
    ingress = (status or {}).get("loadBalancer", {}).get("ingress") if isinstance(
        status, Mapping) else None
    ips = tuple(ip for i in ingress or [] if isinstance(i, Mapping)
                and (ip := _ip(i.get("ip"))) is not None)
    if not ips:
        return None
    policy: TrafficPolicy = (
        "Local" if spec.get("externalTrafficPolicy") == "Local" else "Cluster")
    return LBService(str(meta.get("namespace", "")), str(meta.get("name", "")),
                     status_ips=ips, traffic_policy=policy)


def _service_class(obj: Obj) -> object:
    spec = obj.get("spec")
    return spec.get("loadBalancerClass") if isinstance(spec, Mapping) else None


def endpoints_by_service(slices: Iterable[Obj]) -> dict[str, tuple[Endpoint, ...]]:
    out: dict[str, list[Endpoint]] = {}
    for s in slices:
        meta = s.get("metadata")
        if not isinstance(meta, Mapping):
            continue
        labels = meta.get("labels")
        svc = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None
        if not isinstance(svc, str):
            continue
        key = f"{meta.get('namespace', '')}/{svc}"
        for e in s.get("endpoints") or []:
            if not isinstance(e, Mapping):
                continue
            cond = e.get("conditions") if isinstance(e.get("conditions"), Mapping) else {}
            assert isinstance(cond, Mapping)
            # EndpointConditions.ready: "nil should be interpreted as true".
            ready = cond.get("ready") is not False
            node = e.get("nodeName") if isinstance(e.get("nodeName"), str) else None
            addrs = tuple(a for a in e.get("addresses") or [] if isinstance(a, str))
            out.setdefault(key, []).append(Endpoint(node, ready, addrs))
    return {k: tuple(v) for k, v in out.items()}


def build_snapshot(
    *,
    services: Iterable[Obj],
    endpoint_slices: Iterable[Obj],
    nodes: Iterable[Obj],
    pools: Iterable[Obj],
    l2_advertisements: Iterable[Obj],
    bgp_advertisements: Iterable[Obj] = (),
    bgp_peers: Iterable[Obj] = (),
    secrets: Mapping[tuple[str, str], Mapping[str, bytes]] | None = None,
    secret_errors: Mapping[tuple[str, str], SecretReadError] | None = None,
    namespace: str = "",
    lb_class: str | None = None,
) -> BuildResult:
    """``namespace``: where Portico runs, the only namespace password Secrets come from."""
    problems: list[tuple[str, str, tuple[FieldProblem, ...]]] = []

    def parsed(kind: str, objs: Iterable[Obj], fn: Any) -> list[Any]:
        out = []
        for o in objs:
            try:
                out.append(fn(o))
            except InvalidObject as exc:
                problems.append((kind, _name(o), tuple(exc.problems)))
        return out

    svcs: list[LBService] = []
    for o in services:
        try:
            svc = parse_service(o, lb_class)
        except InvalidObject:
            svc = _fallback_service(o) if _service_class(o) in (None, lb_class) else None
        if svc is not None and svc.status_ips:
            svcs.append(svc)
    infos = [i for o in nodes if (i := node_info(o)) is not None]
    pool_v: list[Pool] = parsed("IPAddressPool", pools, parse_pool)
    l2_v: list[L2Advertisement] = parsed("L2Advertisement", l2_advertisements,
                                         parse_l2_advertisement)
    bgpa_v: list[BGPAdvertisement] = parsed("BGPAdvertisement", bgp_advertisements,
                                            parse_bgp_advertisement)
    peer_v: list[BGPPeer] = parsed("BGPPeer", bgp_peers, parse_bgp_peer)
    wanted = _allowed_refs(peer_v, namespace)
    snap = ClusterSnapshot(
        services=tuple(sorted(svcs, key=lambda s: s.key)),
        endpoints=endpoints_by_service(endpoint_slices),
        nodes={i.name: i for i in sorted(infos, key=lambda i: i.name)},
        pools=tuple(sorted(pool_v, key=lambda p: p.name)),
        l2_advertisements=tuple(sorted(l2_v, key=lambda a: a.name)),
        bgp_advertisements=tuple(sorted(bgpa_v, key=lambda a: a.name)),
        bgp_peers=tuple(sorted(peer_v, key=lambda p: p.name)),
        secrets={k: v for k, v in (secrets or {}).items() if k in wanted},
        secret_errors={k: v for k, v in (secret_errors or {}).items() if k in wanted},
        namespace=namespace,
    )
    return BuildResult(snap, tuple(problems))


def _allowed_refs(peers: Iterable[BGPPeer], namespace: str) -> set[tuple[str, str]]:
    return {(namespace, p.password_secret.name) for p in peers
            if p.password_secret is not None and p.password_secret.allowed_in(namespace)}


def referenced_secrets(bgp_peers: Iterable[Obj], namespace: str) -> set[tuple[str, str]]:
    """(namespace, name) of the Secrets that valid BGPPeers reference in ``namespace`` (where
    Portico runs). A reference to another namespace is left out, so it is never read: the
    speaker may not read Secrets there, and the BGP plan reports it on the peer instead."""
    out: list[BGPPeer] = []
    for o in bgp_peers:
        try:
            out.append(parse_bgp_peer(o))
        except InvalidObject:
            continue
    return _allowed_refs(out, namespace)
