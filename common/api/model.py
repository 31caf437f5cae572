"""Pure value types for Portico's API objects and Services.

Everything here is plain data: parsers (``common.api.parse``) turn Kubernetes objects (dicts)
into these values, and the pure cores (allocator, speaker planning, ingress model) consume
them. No I/O, no Kubernetes client types. Values are frozen so that a core can keep them in
caches and compare old with new to decide whether anything changed.

Addresses are ``ipaddress`` objects at the edges and integers inside the allocator; a range
is always stored as (first, last) integers so that a /64 costs the same as a /32.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Family = Literal["IPv4", "IPv6"]
IPV4: Family = "IPv4"
IPV6: Family = "IPv6"
FAMILIES: tuple[Family, Family] = (IPV4, IPV6)

FamilyPolicy = Literal["SingleStack", "PreferDualStack", "RequireDualStack"]
TrafficPolicy = Literal["Cluster", "Local"]

GROUP = "lb.portico.dev"
VERSION = "v1alpha1"
ANNOTATION_PREFIX = "lb.portico.dev/"
ANN_LOADBALANCER_IPS = ANNOTATION_PREFIX + "loadBalancerIPs"
ANN_ADDRESS_POOL = ANNOTATION_PREFIX + "address-pool"
ANN_ALLOW_SHARED_IP = ANNOTATION_PREFIX + "allow-shared-ip"
# Opt-in node-local health probe of a Service's VIP path (speaker/core/health.py): "true"
# probes every TCP port of the Service, "80,443" those ports; absent/"false": no probe.
ANN_HEALTH_PROBE = ANNOTATION_PREFIX + "health-probe"
# MetalLB's spellings of the same three annotations, honoured so that Services move from
# MetalLB unedited: ``metallb.io/`` (current) and ``metallb.universe.tf/`` (deprecated, still
# read by MetalLB v0.15). Precedence, highest first: Portico's own, metallb.io,
# metallb.universe.tf (MetalLB's own order for its two). A key that is present wins even when
# empty, as in MetalLB; spellings that disagree are reported (ConflictingAnnotations).
METALLB_ANNOTATION_PREFIXES = ("metallb.io/", "metallb.universe.tf/")
REASON_CONFLICTING_ANNOTATIONS = "ConflictingAnnotations"


def annotation_spellings(key: str) -> tuple[str, ...]:
    """Every accepted spelling of one of Portico's Service annotations, winner first."""
    suffix = key.removeprefix(ANNOTATION_PREFIX)
    return (key, *(prefix + suffix for prefix in METALLB_ANNOTATION_PREFIXES))
# Well-known label: nodes carrying it never announce load-balancer addresses.
LABEL_EXCLUDE_LB = "node.kubernetes.io/exclude-from-external-load-balancers"


def family_of(addr: IPAddress) -> Family:
    return IPV4 if addr.version == 4 else IPV6


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Names a Kubernetes object in errors, Events and logs."""

    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid piece of user input: which object, which field, what is wrong.

    ``reason`` is the CamelCase reason used for the Event / status condition.
    """

    ref: ObjectRef
    field: str
    message: str
    reason: str = "InvalidSpec"

    def __str__(self) -> str:
        return f"{self.ref}: {self.field}: {self.message}"


# --- label selectors -------------------------------------------------------------------------

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: SelectorOperator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        # NotIn: like Kubernetes, a missing key satisfies NotIn.
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A metav1.LabelSelector. The empty selector matches everything (Kubernetes semantics)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )


def any_selector_matches(selectors: tuple[LabelSelector, ...], labels: Mapping[str, str]) -> bool:
    """A list of selectors is ORed; an empty list matches everything."""
    return not selectors or any(s.matches(labels) for s in selectors)


# --- IPAddressPool ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddressRange:
    """An inclusive range of addresses of one family, as written in the pool (CIDR or a-b)."""

    family: Family
    first: int
    last: int
    text: str  # as the user wrote it, for messages

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class ServiceAllocation:
    """Restricts a pool to some Services and orders it before generic pools.

    The three filters are ANDed; an empty filter does not restrict.
    """

    priority: int | None = None
    namespaces: frozenset[str] = frozenset()
    namespace_selectors: tuple[LabelSelector, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()

    def matches(
        self,
        namespace: str,
        namespace_labels: Mapping[str, str],
        service_labels: Mapping[str, str],
    ) -> bool:
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.namespace_selectors and not any_selector_matches(
            self.namespace_selectors, namespace_labels
        ):
            return False
        return not self.service_selectors or any_selector_matches(
            self.service_selectors, service_labels
        )


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    ranges: tuple[AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    allocation: ServiceAllocation | None = None
    labels: Mapping[str, str] = field(default_factory=dict, compare=True, hash=False)
    # creationTimestamp (RFC 3339, sorts as text): of two overlapping pools the newer one is
    # marked conflicting; name breaks ties so the choice is deterministic.
    created: str = ""

    def families(self) -> frozenset[Family]:
        return frozenset(r.family for r in self.ranges)


# --- Services ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ServicePort:
    protocol: str  # TCP, UDP or SCTP
    port: int


@dataclass(frozen=True, slots=True)
class LBService:
    """A Service of type LoadBalancer that this controller handles, as the allocator sees it."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Requested addresses (annotation lb.portico.dev/loadBalancerIPs, or MetalLB's spelling of
    # it, or spec.loadBalancerIP), at most one per family; validated by the parser.
    requested_ips: tuple[IPAddress, ...] = ()
    requested_pool: str | None = None
    sharing_key: str | None = None
    ports: frozenset[ServicePort] = frozenset()
    traffic_policy: TrafficPolicy = "Cluster"
    # spec.selector as sorted pairs: Local-policy Services may share an address only when
    # their selectors are identical (their endpoints, hence announcing nodes, are the same).
    selector: tuple[tuple[str, str], ...] = ()
    ip_families: tuple[Family, ...] = (IPV4,)  # primary family first
    family_policy: FamilyPolicy = "SingleStack"
    # Addresses in status.loadBalancer.ingress: the allocation state is rebuilt from these.
    status_ips: tuple[IPAddress, ...] = ()
    uid: str = ""
    # The spelling of the address-pool annotation the request came from (messages name it).
    pool_annotation: str = field(default=ANN_ADDRESS_POOL, compare=False)
    # Spellings of one annotation that disagree (Portico's and MetalLB's): one message each,
    # naming the annotations and the value that won. Not an error: the Service is served.
    annotation_conflicts: tuple[str, ...] = field(default=(), compare=False)
    # TCP ports the speakers probe through the VIP (annotation lb.portico.dev/health-probe);
    # empty: no probe. An unusable annotation value turns the probe off and is described in
    # ``health_probe_problem`` (it never makes the Service invalid: allocation is unaffected).
    health_probe: tuple[int, ...] = ()
    health_probe_problem: str | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef("Service", self.name, self.namespace)


# --- advertisements and peers ------------------------------------------------------------------


class SelectsPools:
    """The pool selection L2 and BGP advertisements share: ``ipAddressPools`` (names) and
    ``ipAddressPoolSelectors`` (label selectors), ORed."""

    __slots__ = ()
    ip_address_pools: tuple[str, ...]
    ip_address_pool_selectors: tuple[LabelSelector, ...]

    def selects_pool(self, pool: Pool) -> bool:
        """No pool list and no pool selector means every pool (MetalLB semantics)."""
        if not self.ip_address_pools and not self.ip_address_pool_selectors:
            return True
        return pool.name in self.ip_address_pools or any(
            s.matches(pool.labels) for s in self.ip_address_pool_selectors
        )


@dataclass(frozen=True, slots=True)
class L2Advertisement(SelectsPools):
    name: str
    ip_address_pools: tuple[str, ...] = ()
    ip_address_pool_selectors: tuple[LabelSelector, ...] = ()
    node_selectors: tuple[LabelSelector, ...] = ()
    interfaces: tuple[str, ...] = ()  # empty: every interface of the node


@dataclass(frozen=True, slots=True)
class Community:
    """A BGP community: standard (asn:value, 16-bit halves) or large (a:b:c, 32-bit parts)."""

    parts: tuple[int, ...]

    @property
    def large(self) -> bool:
        return len(self.parts) == 3

    def __str__(self) -> str:
        return ":".join(str(p) for p in self.parts)


@dataclass(frozen=True, slots=True)
class BGPAdvertisement(SelectsPools):
    name: str
    ip_address_pools: tuple[str, ...] = ()
    ip_address_pool_selectors: tuple[LabelSelector, ...] = ()
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int | None = None
    communities: tuple[Community, ...] = ()
    peers: tuple[str, ...] = ()  # BGPPeer names; empty: all peers of the node
    node_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """A key of a Secret in the namespace Portico runs in (the Helm release namespace, the
    speaker's ``--namespace``): the only namespace whose Secrets the speaker may read.

    ``namespace`` is what the user wrote, None when omitted (= Portico's namespace). A
    different one is not an error of the object itself (the CRD cannot know where Portico
    runs): the speaker reports it on the BGPPeer (``PasswordSecretNamespace``) and reads
    nothing.
    """

    namespace: str | None
    name: str
    key: str = "password"

    def allowed_in(self, home: str) -> bool:
        """True when the Secret may be read from ``home`` (Portico's namespace)."""
        return self.namespace is None or self.namespace == home


# The Helm value a BFD session needs: the chart gives the speaker's container the capabilities
# FRR's bfdd demands only with it (speaker.core.bgp_bfd). Named by the speaker's
# BFDUnavailable Event and by ``portico migrate metallb``.
BFD_CHART_VALUE = "speaker.bfd.enabled=true"


@dataclass(frozen=True, slots=True)
class BFDSettings:
    """``spec.bfd`` of a BGPPeer: the fields of MetalLB's BFDProfile, inline. Milliseconds."""

    receive_interval: int = 300
    transmit_interval: int = 300
    detect_multiplier: int = 3
    passive_mode: bool = False
    minimum_ttl: int = 254


@dataclass(frozen=True, slots=True)
class BGPPeer:
    name: str
    my_asn: int
    peer_asn: int
    peer_address: IPAddress
    source_address: IPAddress | None = None
    peer_port: int = 179
    hold_time: int = 90  # seconds; 0 or 3..65535 (RFC 4271)
    keepalive_time: int | None = None  # default hold_time // 3
    router_id: ipaddress.IPv4Address | None = None
    password_secret: SecretKeyRef | None = None
    ebgp_multihop: bool = False
    node_selectors: tuple[LabelSelector, ...] = ()
    # BFD (RFC 5880) for this session, run by FRR bfdd beside exabgp; None: off.
    bfd: BFDSettings | None = None
