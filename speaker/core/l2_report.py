"""What the layer-2 status says, computed purely from a plan (speaker/report.py writes it).

Users read which node announces a VIP with ``kubectl get svc -o yaml`` / ``kubectl describe
svc``: the Service gets a condition of type ``portico.dev/L2Announced`` (True: every VIP has an
announcing node; the message names node and interfaces per VIP). Exactly one speaker writes it
for a Service (the reporter of the Service's first VIP: its owner, or when there is none the
first live node in election order), and only when the condition changes — ownership moves,
not heartbeats, cause writes, so the write volume is one patch per failover per Service.

The same speaker writes ``portico.dev/L2Wire``: what the wire saw (the last gratuitous ARP /
unsolicited NA, requests answered since the gain), with figures refreshed at most every
``--wire-report-interval`` seconds (the section below).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from common.api.model import IPAddress
from speaker.core.l2_plan import (
    ANNOUNCED,
    NOT_ADVERTISED,
    L2Plan,
    VipPlan,
    reporter,
)
from speaker.core.snapshot import ClusterSnapshot

CONDITION_TYPE = "portico.dev/L2Announced"


@dataclass(frozen=True, slots=True)
class ServiceCondition:
    namespace: str
    name: str
    status: str  # "True" / "False"
    reason: str
    message: str


def _bgp_covers(snapshot: ClusterSnapshot, plan: VipPlan) -> bool:
    """Some BGPAdvertisement selects the pool holding the VIP (the one the plan names)."""
    pools = [p for p in snapshot.pools if p.name in plan.pools]
    return any(a.selects_pool(p) for a in snapshot.bgp_advertisements for p in pools)


def _reported_here(snapshot: ClusterSnapshot, plan: L2Plan, live: Iterable[str], me: str
                   ) -> Iterator[tuple[str, str, list[VipPlan]]]:
    """(namespace, name, relevant VIPs) of each Service whose L2 conditions this node
    (``me``) writes: the reporter of its first relevant VIP, so one speaker per Service."""
    live_list = sorted(live)
    for svc in snapshot.services:
        relevant = _relevant(snapshot, plan, svc.status_ips)
        if relevant and reporter(relevant[0], live_list) == me:
            yield svc.namespace, svc.name, relevant


def service_conditions(
    snapshot: ClusterSnapshot, plan: L2Plan, live: Iterable[str], me: str
) -> list[ServiceCondition]:
    """The L2 conditions this node (``me``) is responsible for writing."""
    out: list[ServiceCondition] = []
    for namespace, name, relevant in _reported_here(snapshot, plan, live, me):
        bad = [p for p in relevant if p.reason != ANNOUNCED]
        out.append(ServiceCondition(
            namespace, name, "False" if bad else "True",
            bad[0].reason if bad else ANNOUNCED,
            "; ".join(p.message for p in relevant)))
    return out


def owners(plan: L2Plan) -> Mapping[IPAddress, str | None]:
    return {v: p.owner for v, p in plan.vips.items()}


# --- what the wire saw (``portico.dev/L2Wire``) -------------------------------------------
#
# The figures live on the owner of each VIP (``speaker.l2.Responder.wire``): when it last sent
# a gratuitous ARP / unsolicited NA and how many requests it answered since it gained the VIP.
# One speaker writes a Service's L2Wire condition: the same one that writes L2Announced (the
# owner of the Service's first VIP; with no owner, one designated live node, which says so).
# It gives its own figures for the VIPs it owns; a VIP owned by another node (a dual-stack
# Service whose two VIPs were elected to different nodes) is named with its owner only, whose
# figures are in that node's metrics. Writes are bounded: at once when what the condition
# says about ownership changes (owner, interfaces, time of the gain, first announcement),
# otherwise the changed figures at most every ``--wire-report-interval`` seconds.

WIRE_CONDITION_TYPE = "portico.dev/L2Wire"
ANSWERING = "Answering"  # True: this node owns the first VIP and has announced it
NOT_ANNOUNCED_YET = "NotAnnouncedYet"  # owned, no gratuitous ARP / NA on the wire yet
NO_OWNER = "NoOwner"  # nobody answers for the first VIP (L2Announced says why)
# s: how long a gained VIP's condition waits for its first announcement before it is written
# as NotAnnouncedYet. The responder sends it within milliseconds of the gain (GARP_SCHEDULE
# starts at 0) and the report is poked then, so normally the takeover costs one L2Wire write
# that already names the announcement; only a responder without a valid answer lease (a stale
# view) waits longer, and then the condition says so.
ANNOUNCE_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class VipWire:
    """One owned VIP as the responder saw it; times are wall-clock (seconds since the epoch)."""

    since: float  # when this node gained the VIP (the count starts here)
    announced: float | None  # last gratuitous ARP / unsolicited NA sent; None: none yet
    answered: int  # requests answered since ``since``


@dataclass(frozen=True, slots=True)
class WireTarget:
    """A Service whose L2Wire condition this node writes, with each relevant VIP's owner."""

    namespace: str
    name: str
    vips: tuple[tuple[IPAddress, str | None, frozenset[str] | None], ...]  # (vip, owner, ifaces)


@dataclass(frozen=True, slots=True)
class WireCondition:
    namespace: str
    name: str
    status: str
    reason: str
    message: str
    # What is written at once when it changes; a change of the message alone (the figures)
    # waits for the refresh interval (``wire_write_due``).
    key: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class WireWritten:
    """What this node last wrote for a Service, and when (monotonic seconds)."""

    key: tuple[object, ...]
    message: str
    at: float


def _relevant(snapshot: ClusterSnapshot, plan: L2Plan, svc_ips: Iterable[IPAddress]
              ) -> list[VipPlan]:
    """The Service's VIPs that layer 2 is concerned with, in the Service's order: a VIP that
    only BGP advertises is none of layer 2's business."""
    vips = [plan.vips[v] for v in svc_ips if v in plan.vips]
    return [p for p in vips if not (p.reason == NOT_ADVERTISED and _bgp_covers(snapshot, p))]


def wire_targets(
    snapshot: ClusterSnapshot, plan: L2Plan, live: Iterable[str], me: str
) -> list[WireTarget]:
    """The Services whose L2Wire condition this node writes: those whose L2Announced it
    writes (``service_conditions``), so one speaker per Service."""
    return [WireTarget(namespace, name, tuple((p.vip, p.owner, p.owner_interfaces)
                                              for p in relevant))
            for namespace, name, relevant in _reported_here(snapshot, plan, live, me)]


def utc(t: float) -> str:
    """RFC 3339, whole seconds, UTC: ``2026-12-07T06:40:01Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(since: float, announced: float | None) -> str:
    """The gain time: as a time of day when it is the announcement's day (the usual case)."""
    s = utc(since)
    if announced is not None and utc(announced)[:10] == s[:10]:
        return s[11:]
    return s


def _vip_message(vip: IPAddress, owner: str | None, ifaces: frozenset[str] | None, me: str,
                 fig: VipWire | None) -> str:
    where = "all interfaces" if ifaces is None else ", ".join(sorted(ifaces))
    if owner is None:
        return f"{vip}: no node answers for it"
    if owner != me:
        return f"{vip}: announced by {owner} on {where} (counted on {owner}, not reported here)"
    frame = "gratuitous ARP" if vip.version == 4 else "unsolicited NA"
    if fig is None:
        return f"{vip}: announced by {owner} on {where}; no {frame} sent yet"
    sent = f"{frame} sent {utc(fig.announced)}" if fig.announced is not None else \
        f"no {frame} sent yet"
    return (f"{vip}: announced by {owner} on {where}; {sent}; {fig.answered} requests "
            f"answered since {_since(fig.since, fig.announced)}")


def wire_condition(target: WireTarget, me: str, figures: Mapping[IPAddress, VipWire]
                   ) -> WireCondition:
    """The L2Wire condition of ``target`` from this node's responder figures."""
    first, owner, _ = target.vips[0]
    first_fig = figures.get(first) if owner == me else None
    if owner != me:
        # Not ours to vouch for (the L2Announced writer without an owner): nobody answers.
        status, reason = "False", NO_OWNER
    elif first_fig is None or first_fig.announced is None:
        status, reason = "False", NOT_ANNOUNCED_YET
    else:
        status, reason = "True", ANSWERING
    key: list[object] = [status, reason]
    for vip, o, ifaces in target.vips:
        fig = figures.get(vip) if o == me else None
        key.append((vip, o, ifaces, None if fig is None else fig.since,
                    fig is not None and fig.announced is not None))
    message = "; ".join(_vip_message(v, o, i, me, figures.get(v)) for v, o, i in target.vips)
    return WireCondition(target.namespace, target.name, status, reason, message, tuple(key))


def wire_write_due(cond: WireCondition, last: WireWritten | None, now: float,
                   interval: float, waiting_since: float | None = None) -> bool:
    """Whether to write ``cond`` now (``now``: monotonic seconds).

    At once when nothing was written yet or the ownership part (``key``) changed — except a
    ``NotAnnouncedYet`` condition, held up to ``ANNOUNCE_WAIT`` after ``waiting_since`` (when
    it was first computed) for the announcement; never when the message is what was written;
    a change of the figures alone at most once per ``interval`` seconds after the last write
    (``interval`` 0: never, only key changes)."""
    if (cond.reason == NOT_ANNOUNCED_YET and waiting_since is not None
            and now - waiting_since < ANNOUNCE_WAIT):
        return False
    if last is None or last.key != cond.key:
        return True
    if cond.message == last.message:
        return False
    return interval > 0 and now - last.at >= interval


def wire_refresh_in(last: WireWritten, now: float, interval: float) -> float | None:
    """Seconds until a figures-only refresh of what was written at ``last.at`` may be due;
    None when refreshes are off."""
    if interval <= 0:
        return None
    return max(0.0, last.at + interval - now)
