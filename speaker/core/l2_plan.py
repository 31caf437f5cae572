"""Layer-2 planning: which node answers ARP/NDP for each VIP, and on which interfaces.

Pure: a function of a :class:`ClusterSnapshot` and the set of live nodes (with the interfaces
each one reported in its heartbeats, see ``speaker.core.liveness``). Every speaker runs the
same function on the same inputs, so all of them agree on one owner per VIP without any lock.

Eligibility of a node for a VIP (all must hold):

* the pool holding the VIP is selected by an L2Advertisement (``ipAddressPools`` /
  ``ipAddressPoolSelectors``; neither means every pool) whose ``nodeSelectors`` match the node;
  if that advertisement names ``interfaces``, the node must have at least one of them (the
  node reports its interfaces in its heartbeats) — otherwise a node that cannot answer on any
  named interface would win the election and black-hole the VIP;
* the node is not labelled ``node.kubernetes.io/exclude-from-external-load-balancers`` and its
  Kubernetes Ready condition is not False;
* for every Service with ``externalTrafficPolicy: Local`` using the VIP, the node holds a
  ready endpoint of that Service.

The pool holding a VIP is the one the allocator assigned it from (``common.api.pools``: with
overlapping pools the older, accepted pool, never a conflicting one; an address avoidBuggyIPs
excludes is in no pool), so the advertisements of that pool, and only those, apply.

Sharing: Services that share an address are announced from ONE node — election is per VIP,
not per Service. With several Local Services on one VIP the eligible set is the
*intersection* of their endpoint nodes (a node there serves every one of them); when the
intersection is empty but the union is not (the allocator only lets Local Services share when
their selectors are identical, so this is a transient state while pods move) the union is used
— serving some of the Services beats serving none. Cluster-policy Services add no constraint.

Election: the eligible nodes that are live are ordered by sha256(node NUL vip) (stable across
processes and Python versions; ``hash()`` is salted per process) with the node name as the tie
break, and the first one owns the VIP. A hash per (node, VIP) spreads VIPs over nodes and moves
only the VIPs of a node that comes or goes.

Health (``speaker.core.health``): a live node that published, in its heartbeats, that it cannot
deliver a VIP — the advertisement's interfaces without carrier (``InterfaceDown``) or the
VIP's health probe failing (``HealthProbeFailed``) — is not a candidate for that VIP; with
``externalTrafficPolicy: Local`` a node without a ready endpoint is not either
(``NoLocalEndpoint``). Live nodes left out for such a reason are listed in the plan
(``VipPlan.skipped``) so the Service condition names why the VIP is not on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from common.api.model import (
    LABEL_EXCLUDE_LB,
    FieldProblem,
    IPAddress,
    L2Advertisement,
    LBService,
    ObjectRef,
)
from common.api.pools import PoolLayout
from speaker.core.health import (
    HEALTHY,
    INTERFACE_DOWN,
    NO_LOCAL_ENDPOINT,
    PROBE_FAILED,
    NodeHealth,
    split_live,
)
from speaker.core.snapshot import ClusterSnapshot

# Reasons (CamelCase, used in the Service condition and Events).
ANNOUNCED = "Announced"
NO_ELIGIBLE_NODE = "NoEligibleNode"
NO_LIVE_NODE = "NoLiveNode"
NO_READY_ENDPOINT = "NoReadyEndpoint"
OUTSIDE_POOLS = "AddressOutsidePools"
NOT_ADVERTISED = "PoolNotAdvertisedL2"
UNKNOWN_POOL = "UnknownPool"
UNKNOWN_INTERFACE = "UnknownInterface"

# Interfaces a node can answer on: None means "every interface the speaker may use".
Interfaces = frozenset[str] | None


@dataclass(frozen=True, slots=True)
class VipPlan:
    vip: IPAddress
    services: tuple[str, ...]  # "namespace/name" of every Service using this VIP, sorted
    pools: tuple[str, ...]  # the pool holding the VIP (common.api.pools); empty: none
    advertised: bool  # some L2Advertisement selects that pool
    candidates: tuple[str, ...]  # eligible nodes (live or not), in election order
    owner: str | None
    reason: str
    message: str
    # Interfaces of the owner to answer on (None: all of the owner's speaker interfaces).
    owner_interfaces: Interfaces = None
    # Live nodes otherwise eligible but left out for their health: (node, reason), by name.
    skipped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class L2Plan:
    vips: Mapping[IPAddress, VipPlan] = field(default_factory=dict)
    # What this node must answer for: VIP -> interfaces (None: all allowed interfaces).
    mine: Mapping[IPAddress, Interfaces] = field(default_factory=dict)
    # Problems in cluster-wide input (every speaker finds the same ones).
    problems: tuple[FieldProblem, ...] = ()
    # Problems that depend on this node (an interface missing here).
    local_problems: tuple[FieldProblem, ...] = ()


def election_key(node: str, vip: IPAddress) -> tuple[str, str]:
    digest = hashlib.sha256(f"{node}\x00{vip.compressed}".encode()).hexdigest()
    return (digest, node)


def election_order(nodes: Iterable[str], vip: IPAddress) -> list[str]:
    return sorted(nodes, key=lambda n: election_key(n, vip))


def _node_interfaces(
    advs: Iterable[L2Advertisement], have: frozenset[str] | None
) -> tuple[bool, Interfaces]:
    """(usable, interfaces) of one node under the advertisements that select it and the VIP.

    ``have`` is the node's interface set from its heartbeats (None: unknown, assume any).
    """
    usable = False
    names: set[str] = set()
    for adv in advs:
        if not adv.interfaces:
            # Every interface: usable while the node has one with carrier (a node reports
            # only those; unknown = assume any).
            return have is None or bool(have), None
        ok = set(adv.interfaces) if have is None else set(adv.interfaces) & have
        if ok:
            usable = True
            names |= ok
    return usable, (frozenset(names) if usable else None)


def plan_l2(
    snapshot: ClusterSnapshot,
    live: Mapping[str, frozenset[str] | None],
    me: str,
    my_interfaces: frozenset[str] | None = None,
) -> L2Plan:
    """Plan layer-2 ownership.

    ``live``: the nodes the liveness layer considers live, with the interfaces each reported
    (None when unknown). ``me``: this node. ``my_interfaces``: the interfaces this speaker may
    use here (for the unknown-interface check); None skips that check.
    """
    problems: list[FieldProblem] = []
    local_problems: list[FieldProblem] = []
    pool_names = {p.name for p in snapshot.pools}
    for adv in snapshot.l2_advertisements:
        for name in adv.ip_address_pools:
            if name not in pool_names:
                problems.append(FieldProblem(
                    ObjectRef("L2Advertisement", adv.name), "spec.ipAddressPools",
                    f"pool {name!r} does not exist", UNKNOWN_POOL))
        me_info = snapshot.nodes.get(me)
        if (my_interfaces is not None and adv.interfaces and me_info is not None
                and _selects_node(adv, me_info.labels)):
            missing = sorted(set(adv.interfaces) - my_interfaces)
            if missing:
                local_problems.append(FieldProblem(
                    ObjectRef("L2Advertisement", adv.name), "spec.interfaces",
                    f"node {me} has no interface {', '.join(missing)} it may announce on",
                    UNKNOWN_INTERFACE))

    by_vip: dict[IPAddress, list[LBService]] = {}
    for svc in snapshot.services:
        for vip in svc.status_ips:
            by_vip.setdefault(vip, []).append(svc)

    layout = PoolLayout(snapshot.pools)
    vips: dict[IPAddress, VipPlan] = {}
    mine: dict[IPAddress, Interfaces] = {}
    ifaces, health = split_live(live)
    for vip in sorted(by_vip, key=lambda a: (a.version, int(a))):
        plan = _plan_vip(snapshot, layout, vip, by_vip[vip], ifaces, health)
        vips[vip] = plan
        if plan.owner == me:
            mine[vip] = plan.owner_interfaces
    return L2Plan(vips=vips, mine=mine, problems=tuple(problems),
                  local_problems=tuple(local_problems))


def _selects_node(adv: L2Advertisement, labels: Mapping[str, str]) -> bool:
    return not adv.node_selectors or any(s.matches(labels) for s in adv.node_selectors)


def _plan_vip(
    snapshot: ClusterSnapshot,
    layout: PoolLayout,
    vip: IPAddress,
    services: list[LBService],
    live: Mapping[str, frozenset[str] | None],
    health: Mapping[str, NodeHealth] | None = None,
) -> VipPlan:
    keys = tuple(sorted(s.key for s in services))
    pool = layout.holding(vip)
    if pool is None:
        return VipPlan(vip, keys, (), False, (), None, OUTSIDE_POOLS,
                       f"{vip} is not a usable address of any IPAddressPool")
    pool_names = (pool.name,)
    advs = [a for a in snapshot.l2_advertisements if a.selects_pool(pool)]
    if not advs:
        return VipPlan(vip, keys, pool_names, False, (), None, NOT_ADVERTISED,
                       f"no L2Advertisement selects pool {pool.name}")

    local = [s for s in services if s.traffic_policy == "Local"]
    endpoint_nodes: set[str] | None = None
    if local:
        per_service = [
            {e.node for e in snapshot.endpoints.get(s.key, ()) if e.ready and e.node}
            for s in local
        ]
        inter = set.intersection(*per_service)
        endpoint_nodes = inter or set.union(*per_service)

    health = health or {}
    candidates: list[str] = []
    skipped: list[tuple[str, str]] = []
    ifaces: dict[str, Interfaces] = {}
    for name, info in snapshot.nodes.items():
        if LABEL_EXCLUDE_LB in info.labels or not info.ready:
            continue
        selecting = [a for a in advs if _selects_node(a, info.labels)]
        if not selecting:
            continue
        h = health.get(name, HEALTHY)
        if endpoint_nodes is not None and name not in endpoint_nodes:
            if name in live and endpoint_nodes:
                skipped.append((name, NO_LOCAL_ENDPOINT))
            continue
        if vip in h.failed_vips:
            if name in live:
                skipped.append((name, PROBE_FAILED))
            continue
        usable, names = _node_interfaces(selecting, live.get(name))
        if usable:
            candidates.append(name)
            ifaces[name] = names
        elif name in live and h.down_interfaces:
            skipped.append((name, INTERFACE_DOWN))
    ordered = tuple(election_order(candidates, vip))
    owner = next((n for n in ordered if n in live), None)
    skip = tuple(sorted(skipped))
    note = _skipped_note(skip)
    if owner is not None:
        where = "all interfaces" if ifaces[owner] is None else ", ".join(
            sorted(ifaces[owner] or ()))
        return VipPlan(vip, keys, pool_names, True, ordered, owner, ANNOUNCED,
                       f"{vip} announced by node {owner} ({where}){note}", ifaces[owner],
                       skip)
    if endpoint_nodes is not None and not endpoint_nodes:
        return VipPlan(vip, keys, pool_names, True, ordered, None, NO_READY_ENDPOINT,
                       f"{vip}: externalTrafficPolicy Local and no ready endpoint", None, skip)
    health_skips = [r for _n, r in skip if r != NO_LOCAL_ENDPOINT]
    if not ordered and health_skips:
        return VipPlan(vip, keys, pool_names, True, (), None, health_skips[0],
                       f"{vip}: no healthy node can announce it{note}", None, skip)
    if not ordered:
        return VipPlan(vip, keys, pool_names, True, (), None, NO_ELIGIBLE_NODE,
                       f"{vip}: no node is eligible to announce it{note}", None, skip)
    return VipPlan(vip, keys, pool_names, True, ordered, None, NO_LIVE_NODE,
                   f"{vip}: none of the eligible nodes ({', '.join(ordered)}) is live{note}",
                   None, skip)


SKIPPED_LISTED = 5  # nodes named in a message (a Local Service may skip hundreds)


def _skipped_note(skipped: tuple[tuple[str, str], ...]) -> str:
    if not skipped:
        return ""
    shown = ", ".join(f"{n} {r}" for n, r in skipped[:SKIPPED_LISTED])
    more = f" and {len(skipped) - SKIPPED_LISTED} more" if len(skipped) > SKIPPED_LISTED else ""
    return f"; not on {shown}{more}"


def reporter(plan: VipPlan, live: Iterable[str]) -> str | None:
    """The one node that writes the Service's L2 status for this VIP.

    The owner when there is one; else the first live node in election order over all live
    nodes (so exactly one speaker reports "no owner" too, instead of every one of them).
    """
    if plan.owner is not None:
        return plan.owner
    order = election_order(live, plan.vip)
    return order[0] if order else None


def successors(
    snapshot: ClusterSnapshot,
    live: Mapping[str, frozenset[str] | None],
    me: str,
    vips: Iterable[IPAddress],
) -> dict[IPAddress, str | None]:
    """Who takes each of ``vips`` over once ``me`` has left: the plan of every other speaker
    after it heard our "leaving" (``live`` without ``me``). None: nobody (a single node, or no
    other eligible live node) — the graceful stop then has nobody to wait for."""
    rest = {n: i for n, i in live.items() if n != me}
    plan = plan_l2(snapshot, rest, me)
    return {v: (plan.vips[v].owner if v in plan.vips else None) for v in vips}
