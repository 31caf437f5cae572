"""BGP planning for one node: which sessions to open and which routes to announce on each.

Pure: takes a ``ClusterSnapshot`` and a node name, returns a ``BgpPlan`` (sessions, routes per
session, and every problem found in user input, each naming its object and field). The I/O
shell (``speaker.bgp``) turns the plan into an exabgp configuration and API commands.

Rules (MetalLB-compatible where it has one):
- A BGPPeer applies to a node when its ``nodeSelectors`` match the node's labels (empty: all).
- A VIP is announced under the advertisements of the pool holding it: the pool the allocator
  assigned it from (``common.api.pools``; with overlapping pools the older, accepted one).
- A route's family must equal the session's family (IPv4 VIPs on IPv4 sessions, IPv6 on IPv6);
  its next hop is the session's local address, so the router forwards straight to the node.
- ``externalTrafficPolicy: Local``: only a node with a ready local endpoint announces;
  ``Cluster``: every eligible node (ready, not excluded by label, selected by the
  advertisement's ``nodeSelectors``) announces, and the router spreads traffic by ECMP.
- The announced prefix is the VIP masked to ``aggregationLength(V6)``. An aggregation shorter
  than a pool's prefix would announce addresses outside the pool: the advertisement is
  rejected for that pool (condition/Event), other pools and advertisements are unaffected.
- ``localPref`` is an iBGP attribute: sent only on sessions with ``myASN == peerASN``.
- Two advertisements producing the same prefix for the same session merge: communities are
  united, the highest localPref wins (deterministic whatever the order of objects).
- Health (``speaker.core.health``): a VIP whose node-local probe fails (``HealthProbeFailed``)
  is not announced by this node; neither is a Local Service's VIP without a ready local
  endpoint (``NoLocalEndpoint``). ``BgpPlan.withheld`` names them (Events, metrics); the other
  nodes keep announcing, so the router moves the traffic to them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.api.model import (
    IPV4,
    LABEL_EXCLUDE_LB,
    BFDSettings,
    BGPAdvertisement,
    BGPPeer,
    Community,
    Family,
    FieldProblem,
    IPAddress,
    LBService,
    ObjectRef,
    Pool,
    any_selector_matches,
    family_of,
)
from common.api.pools import PoolLayout
from speaker.core.health import HEALTHY, NO_LOCAL_ENDPOINT, PROBE_FAILED, NodeHealth
from speaker.core.snapshot import ClusterSnapshot, NodeInfo

MAX_ASN = 2**32 - 1  # 4-octet ASNs (RFC 6793)
MAX_U32 = 2**32 - 1
MAX_U16 = 2**16 - 1
TCP_MD5_MAX_KEY = 80  # Linux TCP_MD5SIG_MAXKEYLEN
_FORBIDDEN_CHARS = ("\r", "\n", "\0")


def peer_ref(name: str) -> ObjectRef:
    return ObjectRef("BGPPeer", name)


def adv_ref(name: str) -> ObjectRef:
    return ObjectRef("BGPAdvertisement", name)


@dataclass(frozen=True, slots=True, order=True)
class Session:
    """One BGP session this node opens (an exabgp ``neighbor`` block)."""

    neighbor: str  # peer address, canonical text; the exabgp neighbor selector
    peer: str  # BGPPeer name
    family: Family
    local_address: str
    router_id: str
    local_as: int
    peer_as: int
    hold_time: int
    port: int = 179
    multihop: bool = False
    # Never in repr: a Session may end up in a log line or an assertion message.
    password: bytes | None = field(default=None, repr=False)
    # BFD settings (spec.bfd; speaker.core.bgp_bfd); None: no BFD for this session.
    bfd: BFDSettings | None = field(default=None, compare=False)

    @property
    def ibgp(self) -> bool:
        return self.local_as == self.peer_as


@dataclass(frozen=True, slots=True, order=True)
class Route:
    prefix: str  # canonical network text, e.g. 203.0.113.10/32
    next_hop: str
    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # standard "a:b", sorted
    large_communities: tuple[str, ...] = ()  # "a:b:c", sorted

    @property
    def attributes(self) -> tuple[str, int | None, tuple[str, ...], tuple[str, ...]]:
        return (self.next_hop, self.local_pref, self.communities, self.large_communities)


@dataclass(frozen=True, slots=True)
class PeerProblem:
    """Why a BGPPeer has no session on this node (written to its per-node status)."""

    peer: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class BgpPlan:
    sessions: tuple[Session, ...] = ()
    # Session.neighbor -> routes to announce there
    routes: Mapping[str, frozenset[Route]] = field(default_factory=dict)
    problems: tuple[FieldProblem, ...] = ()
    # BGPPeers selected for this node but without a session, by peer name
    peer_problems: Mapping[str, PeerProblem] = field(default_factory=dict)
    # Every BGPPeer name that applies to this node (for status), sorted
    peers: tuple[str, ...] = ()
    # VIPs this node would announce but withholds for its health: vip -> (reason, services)
    withheld: Mapping[IPAddress, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # VIPs announced on at least one session
    vips: frozenset[IPAddress] = frozenset()


# --- validation (defence in depth: common.api.parse validates single objects first) --------------


def validate_peer(peer: BGPPeer) -> list[FieldProblem]:
    ref = peer_ref(peer.name)
    out: list[FieldProblem] = []
    for fname, asn in (("spec.myASN", peer.my_asn), ("spec.peerASN", peer.peer_asn)):
        if not 1 <= asn <= MAX_ASN:
            out.append(FieldProblem(ref, fname, f"ASN {asn} is outside 1..{MAX_ASN}",
                                    "InvalidASN"))
    if not 1 <= peer.peer_port <= MAX_U16:
        out.append(FieldProblem(ref, "spec.peerPort", f"port {peer.peer_port} is outside 1..65535",
                                "InvalidPort"))
    if peer.hold_time != 0 and not 3 <= peer.hold_time <= MAX_U16:
        out.append(FieldProblem(ref, "spec.holdTime",
                                f"hold time {peer.hold_time}s must be 0 or 3..65535 (RFC 4271)",
                                "InvalidHoldTime"))
    if peer.keepalive_time is not None and peer.hold_time != 0 and (
        peer.keepalive_time >= peer.hold_time or peer.keepalive_time < 0
    ):
        out.append(FieldProblem(ref, "spec.keepaliveTime",
                                f"keepalive {peer.keepalive_time}s must be shorter than the hold "
                                f"time {peer.hold_time}s", "InvalidKeepaliveTime"))
    if peer.source_address is not None and family_of(peer.source_address) != family_of(
        peer.peer_address
    ):
        out.append(FieldProblem(ref, "spec.sourceAddress",
                                "sourceAddress and peerAddress are of different families",
                                "AddressFamilyMismatch"))
    return out


def validate_community(c: Community) -> str | None:
    if len(c.parts) == 2:
        return None if all(0 <= p <= MAX_U16 for p in c.parts) else (
            f"standard community {c} needs two 16-bit values")
    if len(c.parts) == 3:
        return None if all(0 <= p <= MAX_U32 for p in c.parts) else (
            f"large community {c} needs three 32-bit values")
    return f"community {c} must be asn:value or a:b:c"


def validate_advertisement(adv: BGPAdvertisement) -> list[FieldProblem]:
    ref = adv_ref(adv.name)
    out: list[FieldProblem] = []
    if not 0 <= adv.aggregation_length <= 32:
        out.append(FieldProblem(ref, "spec.aggregationLength",
                                f"{adv.aggregation_length} is outside 0..32",
                                "InvalidAggregationLength"))
    if not 0 <= adv.aggregation_length_v6 <= 128:
        out.append(FieldProblem(ref, "spec.aggregationLengthV6",
                                f"{adv.aggregation_length_v6} is outside 0..128",
                                "InvalidAggregationLength"))
    if adv.local_pref is not None and not 0 <= adv.local_pref <= MAX_U32:
        out.append(FieldProblem(ref, "spec.localPref", f"{adv.local_pref} is outside 0..2^32-1",
                                "InvalidLocalPref"))
    for i, c in enumerate(adv.communities):
        msg = validate_community(c)
        if msg:
            out.append(FieldProblem(ref, f"spec.communities[{i}]", msg, "InvalidCommunity"))
    return out


def _pool_blocks(pool: Pool, family: Family) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDR blocks of the pool's ranges of one family (at most ~2x128 per range, never per IP)."""
    blocks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for r in pool.ranges:
        if r.family != family:
            continue
        first: IPAddress
        last: IPAddress
        if family == IPV4:
            first, last = ipaddress.IPv4Address(r.first), ipaddress.IPv4Address(r.last)
        else:
            first, last = ipaddress.IPv6Address(r.first), ipaddress.IPv6Address(r.last)
        blocks.extend(ipaddress.summarize_address_range(first, last))
    return blocks


def aggregation_problem(adv: BGPAdvertisement, pool: Pool, family: Family) -> FieldProblem | None:
    """An aggregation shorter than a pool's prefix would announce addresses outside the pool."""
    agg = adv.aggregation_length if family == IPV4 else adv.aggregation_length_v6
    fname = "spec.aggregationLength" if family == IPV4 else "spec.aggregationLengthV6"
    for block in _pool_blocks(pool, family):
        if agg < block.prefixlen:
            return FieldProblem(
                adv_ref(adv.name), fname,
                f"aggregation length {agg} is shorter than prefix {block} of IPAddressPool "
                f"{pool.name}: it would announce addresses outside the pool",
                "AggregationLengthTooShort",
            )
    return None


# --- sessions -------------------------------------------------------------------------------------


def _node_address(node: NodeInfo, family: Family) -> IPAddress | None:
    for a in node.addresses:
        if family_of(a) == family:
            return a
    return None


# Room for the server's text in a PeerProblem message: the status message is at most 1024
# characters (CRD) and the rest of the message names the Secret and the remedy.
_SERVER_MESSAGE_MAX = 400


def _password(
    peer: BGPPeer, snapshot: ClusterSnapshot
) -> tuple[bytes | None, PeerProblem | None]:
    ref = peer.password_secret
    if ref is None:
        return None, None
    home = snapshot.namespace
    if not ref.allowed_in(home):
        # Never read: the speaker's RBAC allows Secrets only in its own namespace, and a
        # 403 would only tell the user less than this.
        return None, PeerProblem(
            peer.name, "PasswordSecretNamespace",
            f"BGPPeer {peer.name}: spec.passwordSecret.namespace is {ref.namespace!r}, but "
            f"Portico reads BGP password Secrets only in its own namespace {home!r}; put "
            f"Secret {ref.name} there and set spec.passwordSecret.namespace to {home!r} or "
            "leave it out")
    where = f"Secret {home}/{ref.name} (spec.passwordSecret of BGPPeer {peer.name})"
    data = snapshot.secrets.get((home, ref.name))
    if data is None:
        err = snapshot.secret_errors.get((home, ref.name))
        server = err.message[:_SERVER_MESSAGE_MAX] if err is not None else ""
        if err is not None and err.status == 403:
            return None, PeerProblem(
                peer.name, "PasswordSecretForbidden",
                f"{where} may not be read by the speaker: the API server answered 403 "
                f"Forbidden ({server}); the speaker's Role must allow 'get' on Secrets in "
                f"namespace {home} (the Helm chart grants it)")
        if err is not None and err.status != 404:
            code = f"HTTP {err.status}" if err.status is not None else "no answer"
            return None, PeerProblem(
                peer.name, "PasswordSecretUnreadable",
                f"{where} could not be read ({code}: {server}); the speaker tries again")
        return None, PeerProblem(peer.name, "PasswordSecretMissing",
                                 f"{where} does not exist")
    value = data.get(ref.key)
    if value is None:
        return None, PeerProblem(peer.name, "PasswordSecretMissing",
                                 f"{where} has no key {ref.key!r}")
    if not value or len(value) > TCP_MD5_MAX_KEY:
        return None, PeerProblem(peer.name, "InvalidPassword",
                                 f"password in Secret {home}/{ref.name} must be 1.."
                                 f"{TCP_MD5_MAX_KEY} bytes (TCP-MD5 key limit)")
    return value, None


def plan_sessions(
    node_name: str, snapshot: ClusterSnapshot
) -> tuple[list[Session], dict[str, PeerProblem], list[FieldProblem], list[str]]:
    node = snapshot.nodes.get(node_name)
    sessions: list[Session] = []
    peer_problems: dict[str, PeerProblem] = {}
    problems: list[FieldProblem] = []
    applicable: list[str] = []
    if node is None:
        return sessions, peer_problems, problems, applicable
    used: dict[str, str] = {}
    for peer in sorted(snapshot.bgp_peers, key=lambda p: p.name):
        if not any_selector_matches(peer.node_selectors, node.labels):
            continue
        applicable.append(peer.name)
        bad = validate_peer(peer)
        if bad:
            problems.extend(bad)
            peer_problems[peer.name] = PeerProblem(peer.name, bad[0].reason, str(bad[0]))
            continue
        fam = family_of(peer.peer_address)
        local = peer.source_address or _node_address(node, fam)
        if local is None:
            peer_problems[peer.name] = PeerProblem(
                peer.name, "NoLocalAddress",
                f"node {node_name} has no {fam} address and spec.sourceAddress is not set")
            continue
        rid = peer.router_id or _node_address(node, IPV4)
        if rid is None:
            peer_problems[peer.name] = PeerProblem(
                peer.name, "NoRouterID",
                f"node {node_name} has no IPv4 address to use as router ID; set spec.routerID")
            continue
        neighbor = str(peer.peer_address)
        if neighbor in used:
            problems.append(FieldProblem(
                peer_ref(peer.name), "spec.peerAddress",
                f"{neighbor} is already the address of BGPPeer {used[neighbor]} on node "
                f"{node_name}", "DuplicatePeerAddress"))
            peer_problems[peer.name] = PeerProblem(
                peer.name, "DuplicatePeerAddress",
                f"BGPPeer {used[neighbor]} already peers with {neighbor} from this node")
            continue
        password, pproblem = _password(peer, snapshot)
        if pproblem is not None:
            peer_problems[peer.name] = pproblem
            continue
        used[neighbor] = peer.name
        sessions.append(Session(
            neighbor=neighbor, peer=peer.name, family=fam, local_address=str(local),
            router_id=str(rid), local_as=peer.my_asn, peer_as=peer.peer_asn,
            hold_time=peer.hold_time, port=peer.peer_port, multihop=peer.ebgp_multihop,
            password=password, bfd=peer.bfd,
        ))
    return sessions, peer_problems, problems, applicable


# --- routes ---------------------------------------------------------------------------------------


def node_eligible(node: NodeInfo) -> bool:
    return node.ready and LABEL_EXCLUDE_LB not in node.labels


def has_ready_local_endpoint(svc: LBService, node_name: str, snapshot: ClusterSnapshot) -> bool:
    return any(e.node == node_name and e.ready for e in snapshot.endpoints.get(svc.key, ()))


def plan(node_name: str, snapshot: ClusterSnapshot, health: NodeHealth = HEALTHY) -> BgpPlan:
    sessions, peer_problems, problems, applicable = plan_sessions(node_name, snapshot)
    node = snapshot.nodes.get(node_name)
    routes: dict[str, dict[str, Route]] = {s.neighbor: {} for s in sessions}
    withheld: dict[IPAddress, tuple[str, tuple[str, ...]]] = {}
    announced_vips: set[IPAddress] = set()

    def withhold(vip: IPAddress, reason: str, svc: LBService) -> None:
        old = withheld.get(vip)
        keys = tuple(sorted({*(old[1] if old else ()), svc.key}))
        # A probe failure outranks a missing endpoint: it is the one the node chose to act on.
        withheld[vip] = (PROBE_FAILED if old and old[0] == PROBE_FAILED else reason, keys)

    valid_advs: list[BGPAdvertisement] = []
    for adv in sorted(snapshot.bgp_advertisements, key=lambda a: a.name):
        bad = validate_advertisement(adv)
        problems.extend(bad)
        if not bad:
            valid_advs.append(adv)
    # Aggregation checks per (advertisement, pool, family), whether or not anything is
    # announced right now: the user should learn about the mistake before it matters.
    agg_ok: dict[tuple[str, str, Family], bool] = {}
    for adv in valid_advs:
        for pl in sorted(snapshot.pools, key=lambda p: p.name):
            if not adv.selects_pool(pl):
                continue
            for fam in sorted(pl.families()):
                p = aggregation_problem(adv, pl, fam)
                if p is not None:
                    problems.append(p)
                agg_ok[(adv.name, pl.name, fam)] = p is None

    if node is not None and node_eligible(node) and sessions:
        layout = PoolLayout(snapshot.pools)
        advs_for_node = [a for a in valid_advs if any_selector_matches(a.node_selectors,
                                                                       node.labels)]
        for svc in sorted(snapshot.services, key=lambda s: s.key):
            no_local = svc.traffic_policy == "Local" and not has_ready_local_endpoint(
                svc, node_name, snapshot)
            for vip in svc.status_ips:
                pool = layout.holding(vip)
                if pool is None:
                    continue
                fam = family_of(vip)
                if not any(adv.selects_pool(pool) for adv in advs_for_node):
                    continue
                if no_local:
                    withhold(vip, NO_LOCAL_ENDPOINT, svc)
                    continue
                if vip in health.failed_vips:
                    withhold(vip, PROBE_FAILED, svc)
                    continue
                for adv in advs_for_node:
                    if not agg_ok.get((adv.name, pool.name, fam), False):
                        continue
                    agg = adv.aggregation_length if fam == IPV4 else adv.aggregation_length_v6
                    # (address, length) form: no text parsing (10,000 VIPs per plan at scale)
                    prefix = str(ipaddress.ip_network((vip, agg), strict=False))
                    for s in sessions:
                        if s.family != fam or (adv.peers and s.peer not in adv.peers):
                            continue
                        _merge(routes[s.neighbor], prefix, s, adv)
                        announced_vips.add(vip)
    return BgpPlan(
        sessions=tuple(sessions),
        routes={n: frozenset(r.values()) for n, r in routes.items()},
        problems=tuple(problems),
        peer_problems=peer_problems,
        peers=tuple(applicable),
        # A shared VIP another (healthy, Cluster) Service still announces is not withheld.
        withheld={v: w for v, w in withheld.items() if v not in announced_vips},
        vips=frozenset(announced_vips),
    )


def _merge(table: dict[str, Route], prefix: str, s: Session, adv: BGPAdvertisement) -> None:
    std = {str(c) for c in adv.communities if not c.large}
    large = {str(c) for c in adv.communities if c.large}
    lp = adv.local_pref if s.ibgp else None
    old = table.get(prefix)
    if old is not None:
        std |= set(old.communities)
        large |= set(old.large_communities)
        if old.local_pref is not None:
            lp = old.local_pref if lp is None else max(lp, old.local_pref)
    table[prefix] = Route(
        prefix=prefix, next_hop=s.local_address, local_pref=lp,
        communities=tuple(sorted(std, key=_community_key)),
        large_communities=tuple(sorted(large, key=_community_key)),
    )


def _community_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(":"))


def diff_routes(
    announced: frozenset[Route], desired: frozenset[Route]
) -> tuple[list[Route], list[Route]]:
    """(withdraw, announce): withdraw prefixes no longer wanted; (re)announce new or changed."""
    wanted_prefixes = {r.prefix for r in desired}
    withdraw = sorted(r for r in announced if r.prefix not in wanted_prefixes)
    announce = sorted(desired - announced)
    return withdraw, announce
