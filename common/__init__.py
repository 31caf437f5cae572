"""The shared kernel: what every component (``lb``, ``speaker``, ``ingress``) uses.

    api     the Kubernetes API of Portico as data: model types and the parsers from CRDs,
            Services and annotations to them (pure: no I/O library, checked by import-linter)
    kube    Kubernetes plumbing: client, informers, the work queue and reconcile loop,
            status writes, Events, leader election, the HTTP health/metrics server
    cli     command-line flags every component shares
    logs    structlog configuration
    errors  the exception tree (root ``PorticoError``) that every package's tree hangs from

The exception trees (each drawn in full in its module and its package's docstring)::

    PorticoError            common.errors: InvalidObject, KubeError (Conflict, Gone, NotFound,
    │                       Throttled, Refused > Forbidden, Invalid)
    ├── IngressError        ingress.errors
    └── SpeakerError        speaker.errors
    (lb defines none: it raises common.errors)

A change here reaches every component. Nothing here imports a component, ``lab``, ``bench``
or ``tests`` (the contracts in ``.importlinter``).
"""
