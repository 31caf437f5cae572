"""Prometheus metrics of the lb controller (served on --metrics-addr /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Gauges, not counters: a /64 pool's total (2**64) is exact only as a float approximation in
# Prometheus anyway; the exact figures are in the pool's status (decimal strings).
POOL_TOTAL = Gauge("portico_pool_addresses_total", "Usable addresses per pool and family.",
                   ["pool", "family"])
POOL_ASSIGNED = Gauge("portico_pool_addresses_assigned", "Addresses in use per pool and family.",
                      ["pool", "family"])
ALLOCATION_FAILURES = Counter("portico_allocation_failures_total",
                              "Service reconciles that ended without an address, by reason.",
                              ["reason"])
RECONCILE_SECONDS = Histogram("portico_reconcile_duration_seconds",
                              "Duration of one reconcile, by key kind.", ["kind"])
RECONCILE_ERRORS = Counter("portico_reconcile_errors_total",
                           "Reconciles that failed with an API error (retried).", ["kind"])
