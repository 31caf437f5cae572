"""The per-node speaker: announces the VIPs the controller assigned, by layer 2 or BGP.

``speaker`` owns announcing: which node answers ARP/NDP for each VIP (an election every
speaker computes alike, with fast speaker-to-speaker liveness), which BGP sessions each node
opens and which routes it announces on them, and the status that reports both. It runs as
``portico speaker`` on every node (a DaemonSet). The pure cores (``speaker.core``) decide; the
shells around them do the I/O.

    main              ``portico speaker``: informers -> debounced ClusterSnapshot -> announcers
    announcer         the interface every announcer implements
    l2_announcer      layer 2: liveness + planning + responder + reporting, wired together
    l2                the ARP/NDP responder on raw AF_PACKET sockets
    liveness          UDP heartbeats around core.liveness (sealed by core.liveness_auth)
    report            writes the layer-2 status off the failover path
    secrets           reads the Secrets BGPPeers reference (Portico's namespace only)
    bgp               the BGP announcer: an exabgp child process driven over its API pipe
    metrics           Prometheus metrics
    errors            the speaker's exception tree
    core              pure: snapshot, build, l2_plan, l2_report, l2_reply, liveness,
                      liveness_auth, bgp, bgp_exabgp, bpf

Exceptions (``speaker.errors``); the speaker also meets ``common.errors`` (KubeError and its
kinds from the API, InvalidObject from the parsers)::

    PorticoError              common.errors
    └── SpeakerError
        ├── ExaBgpError       exabgp died, did not start, or did not acknowledge in time
        ├── GrammarError      a value unsafe for exabgp's grammar (a bug, not user input)
        └── LivenessKeyError  no usable key in the liveness key file at start
"""
