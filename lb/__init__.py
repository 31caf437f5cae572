"""The load-balancer controller: Services of type LoadBalancer + IPAddressPools -> VIPs.

``lb`` owns address allocation: which address each Service gets, from which pool, and the
Service and IPAddressPool status and Events that report it. It runs as ``portico controller``
(leader-elected: one active replica). The speakers announce what it wrote, reading the pools
with the same rules (``common.api.pools``).

    controller_main   ``portico controller``: flags, logging, leader election, health, run
    controller        reconcile handlers: informers -> allocator -> status writes, Events
    core.allocator    the pure VIP allocator (pools, sharing, families, rebuild from status)
    core.status       what is written to Service and IPAddressPool status (pure)
    metrics           Prometheus metrics of the controller

Exceptions: ``lb`` defines none; it raises only ``common.errors`` (and ValueError for an
out-of-range constructor argument, a programming error)::

    PorticoError
    ├── InvalidObject     a Service or pool that cannot be used (from the parsers)
    └── KubeError         an API call failed (common.kube); handled per kind:
        ├── Conflict      re-read and retry
        ├── NotFound
        └── Refused       reported once, not retried until the input changes
"""
