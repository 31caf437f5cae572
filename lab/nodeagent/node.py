"""The Node object, its status and its Lease, and pod address assignment (pure).

What the scheduler and the node lifecycle controller read from a kubelet: addresses,
``spec.podCIDR(s)``, the well-known labels, capacity/allocatable (cpu, memory, pods), a
``Ready`` condition with its heartbeat, and the node Lease in ``kube-node-lease`` renewed
every few seconds (its ``renewTime`` is what the lifecycle controller watches).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

LEASE_NAMESPACE = "kube-node-lease"
# The kubelet's node lease: 40 s duration (the lifecycle controller's grace period is longer).
LEASE_SECONDS = 40
AGENT_VERSION = "v0.0.0-portico-lab"  # a valid semver: tools parse kubeletVersion
PRESSURE = (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory "
             "available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))


@dataclass(frozen=True)
class NodeConfig:
    name: str
    ips: tuple[str, ...]  # InternalIP addresses, the cluster's primary family first
    pod_cidrs: tuple[str, ...]
    cpu: str
    memory: str  # a quantity (e.g. 24686032Ki)
    pods: int
    kernel: str = ""
    os_image: str = ""
    arch: str = "amd64"


def labels(cfg: NodeConfig) -> dict[str, str]:
    return {"kubernetes.io/hostname": cfg.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": cfg.arch, "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": cfg.arch}


def node_spec(cfg: NodeConfig) -> Obj:
    return {"podCIDR": cfg.pod_cidrs[0], "podCIDRs": list(cfg.pod_cidrs)} if cfg.pod_cidrs \
        else {}


def node_object(cfg: NodeConfig) -> Obj:
    return {"metadata": {"name": cfg.name, "labels": labels(cfg)}, "spec": node_spec(cfg)}


def _condition(ctype: str, status: str, reason: str, message: str, now: str,
               previous: Obj | None) -> Obj:
    since = now
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        since = str(previous["lastTransitionTime"])
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since}


def node_status(cfg: NodeConfig, now: str, current: Obj | None, ready: bool = True,
                not_ready_message: str = "") -> Obj:
    """The whole status the agent owns (written as a JSON merge patch: lists are replaced,
    which is right for addresses — a strategic patch would merge the two InternalIPs by
    type)."""
    previous = {c.get("type"): c for c in ((current or {}).get("conditions") or [])
                if isinstance(c, dict)}
    resources = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": str(cfg.pods)}
    conds = [_condition(t, "False", r, m, now, previous.get(t)) for t, r, m in PRESSURE]
    if ready:
        conds.append(_condition("Ready", "True", "KubeletReady",
                                "portico lab node agent is posting ready status", now,
                                previous.get("Ready")))
    else:
        conds.append(_condition("Ready", "False", "KubeletNotReady", not_ready_message, now,
                                previous.get("Ready")))
    return {
        "addresses": [*({"type": "InternalIP", "address": ip} for ip in cfg.ips),
                      {"type": "Hostname", "address": cfg.name}],
        "capacity": resources, "allocatable": dict(resources),
        "conditions": conds,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "",
                     "kernelVersion": cfg.kernel, "osImage": cfg.os_image,
                     "containerRuntimeVersion": "portico-lab://0.1",
                     "kubeletVersion": AGENT_VERSION, "kubeProxyVersion": "",
                     "operatingSystem": "linux", "architecture": cfg.arch},
    }


def status_differs(cfg: NodeConfig, current: Obj) -> bool:
    """Whether the server's Node status is not what the agent reports: Ready not True by
    the agent (the lifecycle controller wrote Unknown), or other addresses or capacity."""
    ready = next((c for c in current.get("conditions") or []
                  if isinstance(c, dict) and c.get("type") == "Ready"), {})
    mine = node_status(cfg, "", current)
    return (ready.get("status") != "True" or ready.get("reason") != "KubeletReady"
            or current.get("addresses") != mine["addresses"]
            or current.get("capacity") != mine["capacity"])


def lease(cfg: NodeConfig, node_uid: str, renew_time: str) -> Obj:
    """The node Lease, owned by the Node (the garbage collector removes it with the Node)."""
    body: Obj = {"metadata": {"name": cfg.name, "namespace": LEASE_NAMESPACE},
                 "spec": {"holderIdentity": cfg.name, "leaseDurationSeconds": LEASE_SECONDS,
                          "renewTime": renew_time}}
    if node_uid:
        body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node",
                                                "name": cfg.name, "uid": node_uid}]
    return body


# ---- pod addresses ------------------------------------------------------------------------

def gateway(cidr: str) -> str:
    """The bridge's address in a pod CIDR: its first host."""
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 1)


def allocate(cidr: str, used: set[str], preferred: str | None = None) -> str | None:
    """The lowest free pod address (the gateway and, in IPv4, the broadcast address are
    never given out), or ``preferred`` when it is a free host of ``cidr``. Walks at most
    ``len(used) + 2`` addresses: never enumerates a /64."""
    net = ipaddress.ip_network(cidr, strict=False)
    first = int(net.network_address) + 2
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    if preferred:
        try:
            p = ipaddress.ip_address(preferred)
        except ValueError:
            p = None
        if p is not None and p.version == net.version and first <= int(p) <= last \
                and str(p) not in used:
            return str(p)
    taken = {int(ipaddress.ip_address(u)) for u in used
             if ipaddress.ip_address(u).version == net.version}
    candidate = first
    for _ in range(len(taken) + 2):
        if candidate > last:
            return None
        if candidate not in taken:
            return str(ipaddress.ip_address(candidate))
        candidate += 1
    return None


def prefix_len(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).prefixlen
