"""Prometheus metrics of the BGP announcer (default registry, served by common.kube.serve)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SESSIONS_UP = Gauge(
    "portico_bgp_sessions_up", "BGP sessions of this node that are established (1) or not (0)",
    ["node", "peer"],
)
PREFIXES_ANNOUNCED = Gauge(
    "portico_bgp_prefixes_announced", "Prefixes currently announced to a peer",
    ["node", "peer"],
)
UPDATES_SENT = Counter(
    "portico_bgp_updates_sent_total",
    "Prefix announcements and withdrawals handed to exabgp (acknowledged)",
    ["node", "peer", "kind"],
)
EXABGP_RESTARTS = Counter(
    "portico_bgp_exabgp_starts_total", "exabgp processes started by the speaker", ["node"]
)
PREFIXES_ADVERTISED = Gauge(
    "portico_bgp_prefixes_advertised",
    "Prefixes in exabgp's adj-RIB-out for a peer while the session is established, as exabgp "
    "itself reports them (show adj-rib out), polled",
    ["node", "peer"],
)
