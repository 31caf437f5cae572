"""Health-aware announcement: when may a node NOT announce a VIP although it is live (pure).

A live speaker can still be unable to deliver a VIP's traffic. Three causes are detected on
the node itself, each with a named reason (Service condition/Events, metrics):

* ``InterfaceDown`` — an interface the VIP is announced on lost carrier while the node stays
  live over another link (netlink link events, ``speaker.health``). A layer-2 VIP whose
  L2Advertisement ``interfaces`` are all without carrier on a node moves to another node.
* ``NoLocalEndpoint`` — ``externalTrafficPolicy: Local`` and no ready endpoint on this node
  (from EndpointSlices: every speaker sees the same objects, nothing to exchange).
* ``HealthProbeFailed`` — the node-local probe of the VIP's path failed ``FALL`` times in a
  row: a TCP connect from the node to ``VIP:port``, which kube-proxy rewrites to an endpoint
  exactly as it does for client traffic (opt-in per Service, annotation
  ``lb.portico.dev/health-probe``). It counts as healthy again after ``RISE`` successes.

How other speakers learn it (layer 2 elects ONE owner, so all must agree on who is out).
Endpoints need nothing: they are in every speaker's snapshot. Carrier and probe results exist
only on the node, so the node publishes them in its heartbeats, which every speaker already
receives every 100 ms and authenticates: as extra entries of the heartbeat's interface list,
``health:<Reason>:<detail>``. A ``:`` can never occur in a Linux interface name (the kernel's
``dev_valid_name`` refuses it), so these entries can never be mistaken for an interface, and
older speakers (which only intersect that list with an advertisement's interface names) ignore
them. The election (``speaker.core.l2_plan``) then leaves the node out for that VIP on every
speaker, from the same heartbeat. The node itself applies its own view at once (it stops
answering before the others have heard, so for at most one heartbeat interval nobody answers
new ARP requests; clients keep their cached MAC meanwhile, and that node could not deliver the
traffic anyway).

Timing (goal: announcement gone within 500 ms of the fault). Probe every ``INTERVAL`` = 100 ms,
connect timeout ``TIMEOUT`` = 200 ms, ``FALL`` = 2: a refused connect is seen within 200 ms, a
black-holed one within 100 + 100 + 200 = 400 ms; peers learn it with the next heartbeat
(<= 100 ms later). Two consecutive failures, not one: these VMs stall 150-350 ms now and then,
and a stall during one connect must not move a VIP. Carrier loss is a netlink event: ~ms.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from common.api.model import IPAddress

INTERFACE_DOWN = "InterfaceDown"
NO_LOCAL_ENDPOINT = "NoLocalEndpoint"
PROBE_FAILED = "HealthProbeFailed"
REASONS = (INTERFACE_DOWN, NO_LOCAL_ENDPOINT, PROBE_FAILED)

TAG_PREFIX = "health:"
# Heartbeats are at most 16 KiB (speaker.core.liveness.MAX_HEARTBEAT_BYTES) and also carry
# the interface and "down" lists: at most this many health entries (~60 bytes each) are sent.
MAX_TAGS = 128

INTERVAL = 0.1  # s between two probes of one target
TIMEOUT = 0.2  # s: a connect that takes longer failed
FALL = 2  # consecutive failures before the VIP is withheld (one stall must not move it)
RISE = 3  # consecutive successes before it is announced again (no flapping)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What one node published: interfaces without carrier, VIPs whose probe fails."""

    down_interfaces: frozenset[str] = frozenset()
    failed_vips: frozenset[IPAddress] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.down_interfaces or self.failed_vips)


HEALTHY = NodeHealth()


def encode(health: NodeHealth) -> list[str]:
    """Heartbeat interface-list entries for ``health`` (sorted, at most ``MAX_TAGS``)."""
    tags = [f"{TAG_PREFIX}{INTERFACE_DOWN}:{i}" for i in sorted(health.down_interfaces)]
    tags += [f"{TAG_PREFIX}{PROBE_FAILED}:{v.compressed}"
             for v in sorted(health.failed_vips, key=lambda a: (a.version, int(a)))]
    return tags[:MAX_TAGS]


def decode(entries: Iterable[str]) -> tuple[frozenset[str], NodeHealth]:
    """(real interface names, health) from a heartbeat's interface list. Unknown tags are
    ignored (a newer speaker may publish more reasons)."""
    names: set[str] = set()
    down: set[str] = set()
    failed: set[IPAddress] = set()
    for e in entries:
        if ":" not in e:
            names.add(e)
            continue
        if not e.startswith(TAG_PREFIX):
            continue
        reason, _, detail = e[len(TAG_PREFIX):].partition(":")
        if reason == INTERFACE_DOWN and detail:
            down.add(detail)
        elif reason == PROBE_FAILED:
            try:
                failed.add(ipaddress.ip_address(detail))
            except ValueError:
                continue
    return frozenset(names), NodeHealth(frozenset(down), frozenset(failed))


Live = Mapping[str, frozenset[str] | None]


def split_live(live: Live) -> tuple[dict[str, frozenset[str] | None], dict[str, NodeHealth]]:
    """The liveness layer's map (node -> heartbeat interface list) split into node -> real
    interfaces and node -> published health (only nodes that published something)."""
    ifaces: dict[str, frozenset[str] | None] = {}
    health: dict[str, NodeHealth] = {}
    for node, entries in live.items():
        if entries is None:
            ifaces[node] = None
            continue
        names, h = decode(entries)
        ifaces[node] = names
        if h:
            health[node] = h
    return ifaces, health


# --- probes -------------------------------------------------------------------------------------


Target = tuple[IPAddress, int]  # (VIP, TCP port)


@dataclass(slots=True)
class _TargetState:
    fails: int = 0
    oks: int = 0
    failing: bool = False
    last_error: str = ""


@dataclass(slots=True)
class ProbeTracker:
    """Consecutive-result hysteresis per target; a VIP fails when any of its ports fails.

    New targets start healthy (a node is not taken out before its first ``FALL`` failures).
    """

    fall: int = FALL
    rise: int = RISE
    _targets: dict[Target, _TargetState] = field(default_factory=dict)

    def set_targets(self, targets: Iterable[Target]) -> None:
        wanted = set(targets)
        for t in list(self._targets):
            if t not in wanted:
                del self._targets[t]
        for t in wanted:
            self._targets.setdefault(t, _TargetState())

    def targets(self) -> list[Target]:
        return sorted(self._targets, key=lambda t: (t[0].version, int(t[0]), t[1]))

    def record(self, target: Target, ok: bool, error: str = "") -> bool:
        """Take one probe result; True when the target's verdict changed."""
        st = self._targets.get(target)
        if st is None:
            return False
        if ok:
            st.oks, st.fails = st.oks + 1, 0
            if st.failing and st.oks >= self.rise:
                st.failing = False
                return True
        else:
            st.fails, st.oks = st.fails + 1, 0
            st.last_error = error
            if not st.failing and st.fails >= self.fall:
                st.failing = True
                return True
        return False

    def failed_vips(self) -> frozenset[IPAddress]:
        return frozenset(t[0] for t, st in self._targets.items() if st.failing)

    def describe(self, vip: IPAddress) -> str:
        bad = [f"{t[1]}/TCP ({st.last_error or 'failed'})" for t, st in
               sorted(self._targets.items(), key=lambda kv: kv[0][1])
               if t[0] == vip and st.failing]
        return ", ".join(bad)


def withheld_reasons(
    vips_local: Mapping[IPAddress, bool], health: NodeHealth
) -> dict[IPAddress, str]:
    """Reason per VIP this node withholds for its own health: ``vips_local`` maps each VIP of
    interest to whether the node lacks a local endpoint under ETP Local (True: lacks)."""
    out: dict[IPAddress, str] = {}
    for vip, no_local in vips_local.items():
        if no_local:
            out[vip] = NO_LOCAL_ENDPOINT
        elif vip in health.failed_vips:
            out[vip] = PROBE_FAILED
    return out
