"""What a speaker knows about the cluster at one moment, as pure values.

The speaker's I/O shell keeps informers on Services, EndpointSlices, Nodes, the pool and
advertisement CRDs, reads the Secrets BGPPeers reference, and after every change (debounced)
builds one ``ClusterSnapshot``. Each announcer (layer 2, BGP) receives the whole snapshot and
computes from it, purely, what this node must announce — so both announcers always act on the
same consistent view and a test can feed them any state it likes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from common.api.model import (
    BGPAdvertisement,
    BGPPeer,
    IPAddress,
    L2Advertisement,
    LBService,
    Pool,
)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Node Ready condition from the API: slow (tens of seconds); the speaker's own liveness
    # mechanism decides fast failover, this only removes nodes Kubernetes gave up on.
    ready: bool = True
    addresses: tuple[IPAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a Service's EndpointSlices: where it runs and whether it is ready."""

    node: str | None
    ready: bool
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretReadError:
    """Why a Secret a BGPPeer references could not be read: the API server's answer."""

    status: int | None  # HTTP status (403, 404, 500 ...); None when no answer came
    message: str


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    # Services handled by Portico (type LoadBalancer, our class) that hold addresses
    # (LBService.status_ips are the VIPs to announce).
    services: tuple[LBService, ...] = ()
    # Service key "namespace/name" -> endpoints from all of its EndpointSlices.
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict, hash=False)
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict, hash=False)
    pools: tuple[Pool, ...] = ()
    l2_advertisements: tuple[L2Advertisement, ...] = ()
    bgp_advertisements: tuple[BGPAdvertisement, ...] = ()
    bgp_peers: tuple[BGPPeer, ...] = ()
    # Only Secrets referenced by BGPPeers: (namespace, name) -> data (base64-decoded).
    secrets: Mapping[tuple[str, str], Mapping[str, bytes]] = field(
        default_factory=dict, hash=False
    )
    # Referenced Secrets that could not be read, and why: (namespace, name) -> error.
    secret_errors: Mapping[tuple[str, str], SecretReadError] = field(
        default_factory=dict, hash=False
    )
    # The namespace Portico runs in (the speaker's --namespace, the Helm release namespace):
    # the only one BGP password Secrets are read from (the speaker's RBAC allows no other).
    namespace: str = ""
