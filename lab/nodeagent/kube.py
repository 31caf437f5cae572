"""The node agent's API calls (I/O), made with the node's own identity (``system:node:NAME``
in ``system:nodes``), so the real Node authorizer decides as it does for a kubelet: its own
Node and Lease, pods bound to it (list/watch by ``spec.nodeName``), their status, and only
the Secrets, ConfigMaps and ServiceAccount tokens those pods refer to.

Two calls need what ``common.kube.client.KubeClient`` has no public method for — a POST to a
subresource (TokenRequest) and a DELETE with options (grace period 0, UID precondition): they
use its private transport, here only (the report proposes the public methods).
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from common.errors import Forbidden, KubeError, NotFound
from common.kube.client import KubeClient
from common.kube.resources import CONFIGMAPS, LEASES, NODES, PODS, SECRETS, SERVICES, Resource

Obj = dict[str, Any]
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)


class NodeApi:
    def __init__(self, client: KubeClient, node: str) -> None:
        self.client = client
        self.node = node

    # ---- the Node and its Lease -------------------------------------------------------------

    def get_node(self) -> Obj | None:
        try:
            return self.client.get(NODES, self.node)
        except NotFound:
            return None

    def create_node(self, body: Obj) -> Obj:
        return self.client.create(NODES, body)

    def patch_node(self, patch: Obj) -> Obj:
        return self.client.patch(NODES, self.node, patch)

    def patch_node_status(self, status: Obj) -> Obj:
        # JSON merge patch: lists (addresses, conditions) are replaced whole. A strategic
        # patch would merge the two InternalIP addresses by their "type" key.
        return self.client.patch(NODES, self.node, {"status": status}, subresource="status")

    def renew_lease(self, body: Obj, timeout: float | None = None) -> None:
        ns = body["metadata"]["namespace"]
        try:
            self.client.patch(LEASES, self.node, {"metadata": {
                "ownerReferences": body["metadata"].get("ownerReferences")},
                "spec": body["spec"]}, ns, timeout=timeout)
        except NotFound:
            self.client.create(LEASES, body, ns, timeout=timeout)

    # ---- pods -------------------------------------------------------------------------------

    def patch_pod_status(self, namespace: str, name: str, patch: Obj) -> Obj:
        # Strategic merge: conditions merge by type, so the scheduler's PodScheduled stays.
        return self.client.patch(PODS, name, patch, namespace, subresource="status",
                                 patch_type="strategic")

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """What the kubelet does once a deleted pod's containers are gone: delete with grace
        period 0, only if it is still the same pod (a new one may have the name)."""
        with contextlib.suppress(NotFound):
            self.client.delete(PODS, name, namespace, uid=uid, grace_period_seconds=0)

    # ---- what pods refer to -----------------------------------------------------------------

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            obj = self.client.get(SECRETS, name, namespace)
        except NotFound:
            return None
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def configmap(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            obj = self.client.get(CONFIGMAPS, name, namespace)
        except NotFound:
            return None
        out = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def request_token(self, namespace: str, service_account: str, audience: str,
                      seconds: int, pod: Obj) -> tuple[str, str]:
        """A TokenRequest bound to the pod (invalid once the pod is gone); returns (token,
        expirationTimestamp)."""
        meta = pod.get("metadata") or {}
        body: Obj = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"expirationSeconds": seconds,
                              "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                 "name": meta.get("name"),
                                                 "uid": meta.get("uid")}}}
        if audience:
            body["spec"]["audiences"] = [audience]
        out = self.client.create(SERVICEACCOUNTS, body, namespace, name=service_account,
                                 subresource="token")
        status = out.get("status") or {}
        token = status.get("token")
        if not isinstance(token, str) or not token:
            raise KubeError(f"TokenRequest for {namespace}/{service_account}: no token in the "
                            "answer")
        return token, str(status.get("expirationTimestamp") or "")

    def kubernetes_service(self) -> tuple[str, int] | None:
        """The ``kubernetes`` Service's ClusterIP and https port (None: not readable)."""
        try:
            svc = self.client.get(SERVICES, "kubernetes", "default")
        except (NotFound, Forbidden):
            return None
        spec = svc.get("spec") or {}
        port = next((p.get("port") for p in spec.get("ports") or []
                     if isinstance(p, dict) and p.get("name") == "https"), 443)
        ip = spec.get("clusterIP")
        return (str(ip), port if isinstance(port, int) else 443) if ip else None
