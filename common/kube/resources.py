"""The API resources Portico reads and writes, and their REST paths."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from common.errors import KubeError

PORTICO_GROUP = "lb.portico.dev"
PORTICO_VERSION = "v1alpha1"


def _seg(value: str, what: str) -> str:
    # Names come from objects and user flags; a '/' or '?' would address another resource.
    if not value or any(c in value for c in "/?#\r\n\0") or value in (".", ".."):
        raise KubeError(f"invalid {what} {value!r} in an API path")
    return quote(value, safe="")


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    # True when writes to the main resource ignore .status and /status writes only .status
    # (the API server's status subresource); used by the status helpers.
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def api_path(
        self, namespace: str | None = None, name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """``/api/v1/namespaces/ns/services/name/status`` and friends.

        ``namespace=None`` on a namespaced resource means "all namespaces" (list/watch only).
        """
        path = self.prefix
        if self.namespaced and namespace is not None:
            path += f"/namespaces/{_seg(namespace, 'namespace')}"
        path += f"/{self.plural}"
        if name is not None:
            path += f"/{_seg(name, 'name')}"
            if subresource is not None:
                path += f"/{_seg(subresource, 'subresource')}"
        elif subresource is not None:
            raise KubeError("a subresource needs an object name")
        return path

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


SERVICES = Resource("", "v1", "services", "Service", True, status_subresource=True)
NODES = Resource("", "v1", "nodes", "Node", False, status_subresource=True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False, status_subresource=True)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
EVENTS = Resource("", "v1", "events", "Event", True)
PODS = Resource("", "v1", "pods", "Pod", True, status_subresource=True)
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
INGRESSES = Resource(
    "networking.k8s.io", "v1", "ingresses", "Ingress", True, status_subresource=True
)
INGRESSCLASSES = Resource("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False)
GATEWAYCLASSES = Resource("gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass",
                          False, status_subresource=True)
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways", "Gateway", True,
                    status_subresource=True)
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", True,
                      status_subresource=True)
GRPCROUTES = Resource("gateway.networking.k8s.io", "v1", "grpcroutes", "GRPCRoute", True,
                      status_subresource=True)
TLSROUTES = Resource("gateway.networking.k8s.io", "v1", "tlsroutes", "TLSRoute", True,
                     status_subresource=True)
TCPROUTES = Resource("gateway.networking.k8s.io", "v1", "tcproutes", "TCPRoute", True,
                     status_subresource=True)
REFERENCEGRANTS = Resource("gateway.networking.k8s.io", "v1", "referencegrants",
                           "ReferenceGrant", True)

IPADDRESSPOOLS = Resource(
    PORTICO_GROUP, PORTICO_VERSION, "ipaddresspools", "IPAddressPool", False,
    status_subresource=True,
)
L2ADVERTISEMENTS = Resource(
    PORTICO_GROUP, PORTICO_VERSION, "l2advertisements", "L2Advertisement", False,
    status_subresource=True,
)
BGPADVERTISEMENTS = Resource(
    PORTICO_GROUP, PORTICO_VERSION, "bgpadvertisements", "BGPAdvertisement", False,
    status_subresource=True,
)
BGPPEERS = Resource(
    PORTICO_GROUP, PORTICO_VERSION, "bgppeers", "BGPPeer", False, status_subresource=True
)
ALL: tuple[Resource, ...] = (
    SERVICES, NODES, NAMESPACES, SECRETS, CONFIGMAPS, EVENTS, PODS, ENDPOINTSLICES, LEASES,
    INGRESSES, INGRESSCLASSES, IPADDRESSPOOLS, L2ADVERTISEMENTS, BGPADVERTISEMENTS, BGPPEERS,
)


def object_key(obj: dict[str, object]) -> tuple[str, str]:
    """(namespace, name) of an object; namespace is "" for cluster-scoped objects."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ("", "")
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def resource_version(obj: dict[str, object]) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        return str(meta.get("resourceVersion") or "")
    return ""
