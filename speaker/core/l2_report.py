"""What the layer-2 status says, computed purely from a plan (speaker/report.py writes it).

Users read which node announces a VIP with ``kubectl get svc -o yaml`` / ``kubectl describe
svc``: the Service gets a condition of type ``portico.dev/L2Announced`` (True: every VIP has an
announcing node; the message names node and interfaces per VIP). Exactly one speaker writes it
for a Service (the reporter of the Service's first VIP: its owner, or when there is none the
first live node in election order), and only when the condition changes — ownership moves,
not heartbeats, cause writes, so the write volume is one patch per failover per Service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


def service_conditions(
    snapshot: ClusterSnapshot, plan: L2Plan, live: Iterable[str], me: str
) -> list[ServiceCondition]:
    """The L2 conditions this node (``me``) is responsible for writing."""
    live_list = sorted(live)
    out: list[ServiceCondition] = []
    for svc in snapshot.services:
        vips: list[VipPlan] = [plan.vips[v] for v in svc.status_ips if v in plan.vips]
        # A VIP that only BGP advertises is none of layer 2's business.
        relevant = [p for p in vips
                    if not (p.reason == NOT_ADVERTISED and _bgp_covers(snapshot, p))]
        if not relevant:
            continue
        if reporter(relevant[0], live_list) != me:
            continue
        bad = [p for p in relevant if p.reason != ANNOUNCED]
        out.append(ServiceCondition(
            svc.namespace, svc.name, "False" if bad else "True",
            bad[0].reason if bad else ANNOUNCED,
            "; ".join(p.message for p in relevant)))
    return out


def owners(plan: L2Plan) -> Mapping[IPAddress, str | None]:
    return {v: p.owner for v, p in plan.vips.items()}
