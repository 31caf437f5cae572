"""The ingress tier: Ingress objects -> an HAProxy that routes them, behind a Portico VIP.

``ingress`` owns HTTP(S) routing: it turns Ingresses, Services, EndpointSlices and TLS
Secrets into a routing model, renders haproxy.cfg and map files from it, applies endpoint
changes through HAProxy's Runtime API without a reload where it can, and reports Events and
Ingress status. It runs as ``portico ingress``. The pure cores (``ingress.core``) decide and
quote; the shells supervise HAProxy and talk to the API.

    main              ``portico ingress``: flags, logging, run
    controller        informers -> debounced sync -> HAProxy, Events, status
    sync              one synchronisation pass: snapshot -> render or Runtime API commands
    haproxy           the HAProxy process: supervision, config check, apply
    haproxy_runtime   Runtime API and master CLI clients
    errors            the ingress exception tree
    core              pure: annotations, validate, model, render, runtime

Exceptions (``ingress.errors``); the tier also meets ``common.errors`` (KubeError and its
kinds from the API)::

    PorticoError              common.errors
    └── IngressError
        ├── RuntimeApiError   the Runtime API or master CLI failed or refused a command
        ├── HAProxyError      HAProxy could not be started, checked or reloaded
        ├── UnsafeValue       a value unsafe for haproxy.cfg or a map file (a bug)
        └── UnsafeToken       a token unsafe for a Runtime API line (a bug)
"""
