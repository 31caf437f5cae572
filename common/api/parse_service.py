"""Service -> :class:`common.api.model.LBService`, and Namespace -> labels.

See ``common.api.parse`` for the conventions. Only what the controller decides on is validated;
the API server has already checked the Service's own fields, but we still check their types
because an emulator or a future API version may hand us anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from common.api.model import (
    ANN_ADDRESS_POOL,
    ANN_ALLOW_SHARED_IP,
    ANN_HEALTH_PROBE,
    ANN_LOADBALANCER_IPS,
    FAMILIES,
    IPV4,
    IPV6,
    Family,
    FamilyPolicy,
    IPAddress,
    LBService,
    ServicePort,
    TrafficPolicy,
    annotation_spellings,
    family_of,
)
from common.api.parse_common import (
    CONTROL_CHARS,
    MAX_ANNOTATION_LEN,
    MAX_SERVICE_PORTS,
    UINT16_MAX,
    Ctx,
    labels_of,
    metadata,
    parse_ip,
    short,
    string_map,
    type_name,
    valid_subdomain,
)

# Sharing keys are compared, logged and put in Events: letters, digits, '-', '_', '.' only.
SHARING_KEY = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICIES: tuple[FamilyPolicy, ...] = ("SingleStack", "PreferDualStack", "RequireDualStack")
TRAFFIC_POLICIES: tuple[TrafficPolicy, ...] = ("Cluster", "Local")


def _annotation(ctx: Ctx, annotations: Mapping[str, object], key: str) -> str | None:
    """An annotation's value, with CR/LF/NUL and other control characters rejected."""
    value = annotations.get(key)
    if value is None:
        return None
    path = f"metadata.annotations[{key!r}]"
    if not isinstance(value, str):
        ctx.add(path, f"must be a string, not {type_name(value)}", "InvalidAnnotation")
        return None
    if len(value) > MAX_ANNOTATION_LEN:
        ctx.add(path, f"is {len(value)} characters long; at most {MAX_ANNOTATION_LEN}",
                "InvalidAnnotation")
        return None
    if CONTROL_CHARS.search(value):
        ctx.add(path, f"{short(value)} contains control characters (CR, LF, NUL ...)",
                "InvalidAnnotation")
        return None
    return value


def _normalized(key: str, value: object) -> object:
    """An annotation's value as compared between spellings: address lists ignore spaces."""
    if not isinstance(value, str):
        return value
    if key.endswith("/loadBalancerIPs"):
        return ",".join(part.strip() for part in value.split(","))
    return value.strip()


def _chosen_annotation(annotations: Mapping[str, object], key: str,
                       conflicts: list[str]) -> str:
    """Which spelling of one of our annotations (Portico's or MetalLB's) is in force.

    The first present spelling in ``annotation_spellings`` order wins (even when empty, as in
    MetalLB, whose ``metallb.io/`` key hides a ``metallb.universe.tf/`` one). Present
    spellings whose values differ from the winner's are described in ``conflicts``: the
    Service is still served, and the user is told which annotation was used.
    """
    present = [k for k in annotation_spellings(key) if k in annotations]
    if not present:
        return key
    winner = present[0]
    won = _normalized(winner, annotations[winner])
    losers = [k for k in present[1:] if _normalized(k, annotations[k]) != won]
    if losers:
        others = ", ".join(f"{k}={short(annotations[k])}" for k in losers)
        conflicts.append(f"annotation {winner}={short(annotations[winner])} disagrees with "
                         f"{others}; {winner} is used")
    return winner


def _requested_ips(ctx: Ctx, annotations: Mapping[str, object],
                   spec: Mapping[str, object], key: str = ANN_LOADBALANCER_IPS,
                   ) -> tuple[IPAddress, ...]:
    ann_path = f"metadata.annotations[{key!r}]"
    text = _annotation(ctx, annotations, key)
    legacy = ctx.get_str(spec, "loadBalancerIP", "spec.loadBalancerIP", 64,
                         reason="InvalidAddress")
    ann_set = text is not None and text.strip() != ""
    if ann_set and legacy:
        ctx.add("spec.loadBalancerIP", f"is set together with the annotation "
                f"{key}; use only the annotation", "ConflictingAddressRequest")
        return ()
    ips: list[IPAddress] = []
    if ann_set:
        assert text is not None
        for i, part in enumerate(text.split(",")):
            addr = parse_ip(part.strip(" "))
            if addr is None:
                ctx.add(ann_path, f"entry {i} {short(part.strip(' '))} is not an IP address",
                        "InvalidAnnotation")
                continue
            ips.append(addr)
    elif legacy:
        addr = parse_ip(legacy)
        if addr is None:
            ctx.add("spec.loadBalancerIP", f"{short(legacy)} is not an IP address",
                    "InvalidAddress")
        else:
            ips.append(addr)
    for fam in FAMILIES:
        same = [str(a) for a in ips if family_of(a) == fam]
        if len(same) > 1:
            ctx.add(ann_path, f"asks for {len(same)} {fam} addresses ({', '.join(same)}); at most "
                    "one per family", "DuplicateIPFamily")
            return ()
    return tuple(sorted(ips, key=lambda a: (a.version, int(a))))


def _ports(ctx: Ctx, spec: Mapping[str, object]) -> frozenset[ServicePort]:
    items = ctx.get_list(spec, "ports", "spec.ports", MAX_SERVICE_PORTS, reason="InvalidPort")
    out: set[ServicePort] = set()
    for i, item in enumerate(items or []):
        path = f"spec.ports[{i}]"
        if not isinstance(item, Mapping):
            ctx.add(path, f"must be an object, not {type_name(item)}", "InvalidPort")
            continue
        proto = ctx.get_str(item, "protocol", f"{path}.protocol", 8, reason="InvalidPort")
        if proto is not None and proto not in PROTOCOLS:
            ctx.add(f"{path}.protocol", f"{short(proto)} is not one of {', '.join(PROTOCOLS)}",
                    "InvalidPort")
            continue
        port = ctx.get_int(item, "port", f"{path}.port", 1, UINT16_MAX, reason="InvalidPort",
                           required=True)
        if port is not None:
            out.add(ServicePort(proto or "TCP", port))
    return frozenset(out)


def _families(ctx: Ctx, spec: Mapping[str, object], policy: FamilyPolicy,
              requested: tuple[IPAddress, ...], ips_key: str = ANN_LOADBALANCER_IPS,
              ) -> tuple[Family, ...]:
    raw = ctx.get_list(spec, "ipFamilies", "spec.ipFamilies", 2, reason="InvalidIPFamilies")
    fams: list[Family] = []
    for i, item in enumerate(raw or []):
        fam = next((f for f in FAMILIES if f == item), None)
        if fam is None:
            ctx.add(f"spec.ipFamilies[{i}]", f"{short(item)} is not IPv4 or IPv6",
                    "InvalidIPFamilies")
        elif fam in fams:
            ctx.add(f"spec.ipFamilies[{i}]", f"{fam} is listed twice", "InvalidIPFamilies")
        else:
            fams.append(fam)
    explicit = bool(fams)
    if not fams:
        # The API server always fills ipFamilies; without it (emulators, old objects) follow
        # the cluster IPs, then the requested addresses, then IPv4 like a single-stack cluster.
        for ip_text in _cluster_ips(spec) or [str(a) for a in requested]:
            addr = parse_ip(ip_text)
            if addr is not None and family_of(addr) not in fams:
                fams.append(family_of(addr))
        fams = fams[:1] if policy == "SingleStack" else fams
        fams = fams or [IPV4]
    if policy == "SingleStack" and len(fams) > 1:
        ctx.add("spec.ipFamilies", "lists two families but ipFamilyPolicy is SingleStack",
                "InvalidIPFamilies")
    # An explicit single family under PreferDualStack is the API server's verdict that the
    # cluster cannot do dual stack: honour it. RequireDualStack always means both families.
    if len(fams) == 1 and (policy == "RequireDualStack"
                           or (policy == "PreferDualStack" and not explicit)):
        fams.append(IPV6 if fams[0] == IPV4 else IPV4)
    if explicit:
        for addr in requested:
            if family_of(addr) not in fams:
                ctx.add(f"metadata.annotations[{ips_key!r}]",
                        f"asks for {addr} but the Service's ipFamilies are "
                        f"{', '.join(fams)}", "RequestedFamilyMismatch")
    return tuple(fams)


def _cluster_ips(spec: Mapping[str, object]) -> list[str]:
    raw = spec.get("clusterIPs")
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return [x for x in raw if isinstance(x, str)][:2]
    one = spec.get("clusterIP")
    return [one] if isinstance(one, str) else []


def status_ips_of(obj: Mapping[str, object]) -> tuple[IPAddress, ...]:
    """Addresses in status.loadBalancer.ingress. Unreadable entries are skipped, not errors:
    the status is ours to write, and the user did nothing wrong if it holds garbage; the
    controller will overwrite it."""
    status = obj.get("status")
    lb = status.get("loadBalancer") if isinstance(status, Mapping) else None
    ingress = lb.get("ingress") if isinstance(lb, Mapping) else None
    out: list[IPAddress] = []
    if isinstance(ingress, list):
        for entry in ingress[:8]:  # at most one per family is ours; 8 tolerates foreign junk
            ip = entry.get("ip") if isinstance(entry, Mapping) else None
            addr = parse_ip(ip) if isinstance(ip, str) else None
            if addr is not None and addr not in out:
                out.append(addr)
    return tuple(out)


def parse_service(obj: object, lb_class: str | None) -> LBService | None:
    """A Service (dict) -> LBService, or None when it is not ours to handle.

    Ours: ``spec.type`` LoadBalancer and ``spec.loadBalancerClass`` unset or equal to
    ``lb_class`` (a Service naming a class is never ours when we run without one). Raises
    InvalidObject, listing every problem, for a Service that is ours but invalid.

    ``ip_families`` is ``spec.ipFamilies`` (primary first). Without it (emulators, objects
    that never passed an API server) the family follows ``clusterIPs``, then the requested
    addresses, then IPv4; dual-stack policies then add the other family. An explicit single
    family with PreferDualStack is kept (the API server found the cluster single-stack).
    """
    if not isinstance(obj, Mapping):
        ctx = Ctx("Service", obj, namespaced=True)
        ctx.add("", f"must be an object, not {type_name(obj)}", "InvalidObject")
        ctx.done()
        return None
    spec = obj.get("spec")
    if not isinstance(spec, Mapping) or spec.get("type") != "LoadBalancer":
        return None
    cls = spec.get("loadBalancerClass")
    if cls is not None and cls != lb_class:
        return None
    ctx = Ctx("Service", obj, namespaced=True)
    name, namespace, meta = metadata(ctx, obj, namespaced=True)
    annotations = ctx.get_map(meta, "annotations", "metadata.annotations") or {}
    # Portico's annotations or MetalLB's spellings of them (Services migrate unedited).
    conflicts: list[str] = []
    ips_key = _chosen_annotation(annotations, ANN_LOADBALANCER_IPS, conflicts)
    pool_key = _chosen_annotation(annotations, ANN_ADDRESS_POOL, conflicts)
    sharing_key = _chosen_annotation(annotations, ANN_ALLOW_SHARED_IP, conflicts)
    requested = _requested_ips(ctx, annotations, spec, ips_key)
    pool = _annotation(ctx, annotations, pool_key)
    if pool is not None:
        pool = pool.strip(" ")
        if pool and not valid_subdomain(pool):
            ctx.add(f"metadata.annotations[{pool_key!r}]",
                    f"{short(pool)} is not a valid IPAddressPool name", "InvalidAnnotation")
    sharing = _annotation(ctx, annotations, sharing_key)
    if sharing and not SHARING_KEY.fullmatch(sharing):
        ctx.add(f"metadata.annotations[{sharing_key!r}]",
                f"{short(sharing)} is not a sharing key (letters, digits, '-', '_', '.'; "
                "at most 253; starting and ending with a letter or digit)", "InvalidAnnotation")
    ports = _ports(ctx, spec)
    traffic = ctx.get_str(spec, "externalTrafficPolicy", "spec.externalTrafficPolicy", 16)
    traffic_policy: TrafficPolicy = "Cluster"
    if traffic is not None:
        found = next((t for t in TRAFFIC_POLICIES if t == traffic), None)
        if found is None:
            ctx.add("spec.externalTrafficPolicy", f"{short(traffic)} is not Cluster or Local")
        else:
            traffic_policy = found
    selector = string_map(ctx, spec, "selector", "spec.selector")
    raw_policy = ctx.get_str(spec, "ipFamilyPolicy", "spec.ipFamilyPolicy", 32,
                             reason="InvalidIPFamilies")
    policy: FamilyPolicy = "SingleStack"
    if raw_policy is not None:
        found_policy = next((p for p in POLICIES if p == raw_policy), None)
        if found_policy is None:
            ctx.add("spec.ipFamilyPolicy", f"{short(raw_policy)} is not one of "
                    + ", ".join(POLICIES), "InvalidIPFamilies")
        else:
            policy = found_policy
    families = _families(ctx, spec, policy, requested, ips_key)
    labels = labels_of(ctx, meta)
    uid = ctx.get_str(meta, "uid", "metadata.uid", 128) or ""
    probe, probe_problem = health_probe_ports(annotations.get(ANN_HEALTH_PROBE), ports)
    ctx.done()
    return LBService(
        namespace=namespace, name=name, labels=labels, requested_ips=requested,
        requested_pool=pool or None, sharing_key=sharing or None, ports=ports,
        traffic_policy=traffic_policy, selector=tuple(sorted(selector.items())),
        ip_families=families, family_policy=policy, status_ips=status_ips_of(obj), uid=uid,
        pool_annotation=pool_key, annotation_conflicts=tuple(conflicts),
        health_probe=probe, health_probe_problem=probe_problem,
    )


MAX_PROBE_PORTS = 8  # each port is one TCP connect per probe interval on every node


def health_probe_ports(
    value: object, ports: Iterable[ServicePort]
) -> tuple[tuple[int, ...], str | None]:
    """(ports, problem) of the ``lb.portico.dev/health-probe`` annotation.

    Lenient on purpose: an unusable value turns the probe off and is described, it never
    makes the Service invalid (the probe is an extra; allocation and announcement stand).
    """
    if value is None:
        return (), None
    where = f"annotation {ANN_HEALTH_PROBE}"
    if not isinstance(value, str):
        return (), f"{where} must be a string"
    text = value.strip().lower()
    if text in ("", "false"):
        return (), None
    if text == "true":
        tcp = sorted({p.port for p in ports if p.protocol == "TCP"})
        if not tcp:
            return (), f"{where}=true but the Service has no TCP port to probe"
        return tuple(tcp[:MAX_PROBE_PORTS]), None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            return (), (f"{where}={short(value)}: expected true, false or comma-separated "
                        "TCP ports 1..65535")
        out.append(int(part))
    if len(out) > MAX_PROBE_PORTS:
        return (), f"{where}: at most {MAX_PROBE_PORTS} ports"
    return tuple(sorted(set(out))), None


def parse_namespace_labels(obj: object) -> tuple[str, dict[str, str]]:
    """A Namespace (dict) -> (name, labels), for serviceAllocation.namespaceSelectors."""
    ctx = Ctx("Namespace", obj)
    name, _, meta = metadata(ctx, obj, namespaced=False)
    labels = labels_of(ctx, meta)
    ctx.done()
    return name, labels

