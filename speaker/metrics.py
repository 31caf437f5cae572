"""Prometheus metrics of the speaker (default registry, served on --metrics-addr)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

L2_REQUESTS = Counter("portico_speaker_l2_requests_total",
                      "ARP requests / neighbor solicitations seen for owned VIPs",
                      ["protocol", "interface"])
L2_REPLIES = Counter("portico_speaker_l2_replies_total",
                     "ARP replies / neighbor advertisements sent", ["protocol", "interface"])
L2_GRATUITOUS = Counter("portico_speaker_l2_gratuitous_total",
                        "Gratuitous ARP / unsolicited NA sent on takeover",
                        ["protocol", "interface"])
L2_DUPLICATES = Counter("portico_speaker_l2_duplicate_announcements_total",
                        "Frames from another MAC claiming a VIP this node owns", ["protocol"])
L2_ERRORS = Counter("portico_speaker_l2_socket_errors_total",
                    "Send/receive errors on layer-2 sockets (link down)", ["interface"])
L2_VIPS_OWNED = Gauge("portico_speaker_l2_vips_owned", "VIPs this node answers ARP/NDP for")
L2_OWNERSHIP_CHANGES = Counter("portico_speaker_l2_ownership_changes_total",
                               "VIPs gained or released by this node", ["change"])
LIVE_NODES = Gauge("portico_speaker_live_nodes", "Nodes this speaker considers live")
HEARTBEATS_SENT = Counter("portico_speaker_heartbeats_sent_total", "Liveness heartbeats sent")
HEARTBEATS_RECEIVED = Counter("portico_speaker_heartbeats_received_total",
                              "Valid liveness heartbeats received")
HEARTBEATS_REJECTED = Counter(
    "portico_speaker_heartbeats_rejected_total",
    "Heartbeats that changed nothing: malformed, unauthenticated (no/wrong MAC), "
    "foreign_address, stale (outside the freshness window) or replayed", ["reason"])
LIVENESS_KEYS = Gauge("portico_speaker_liveness_keys",
                      "Heartbeat keys loaded (0: no key file, heartbeats are not authenticated)")
# Health-aware announcement (speaker.core.health): faults this node sees, VIPs it withholds.
HEALTH_FAULTS = Gauge("portico_speaker_health_faults",
                      "Local faults this node publishes: interfaces without carrier "
                      "(InterfaceDown), VIPs whose probe fails (HealthProbeFailed)", ["reason"])
HEALTH_PROBES = Counter("portico_speaker_health_probes_total",
                        "TCP probes of VIP paths (lb.portico.dev/health-probe)", ["result"])
VIPS_WITHHELD = Gauge("portico_speaker_vips_withheld",
                      "VIPs this node would be eligible for but does not announce, by reason "
                      "(InterfaceDown, NoLocalEndpoint, HealthProbeFailed)",
                      ["mode", "reason"])
HEALTH_WITHDRAWALS = Counter("portico_speaker_health_withdrawals_total",
                             "Times a VIP stopped being announced by this node for its health",
                             ["mode", "reason"])


class LivenessMetrics:
    heartbeats_sent = HEARTBEATS_SENT
    heartbeats_received = HEARTBEATS_RECEIVED
    heartbeats_rejected = HEARTBEATS_REJECTED
    liveness_keys = LIVENESS_KEYS
    live_nodes = LIVE_NODES
