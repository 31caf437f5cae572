"""Node agents in a ``lab.topology.Lab`` on a real control plane: the calls the Lab (or a
test) makes to turn its node namespaces into Kubernetes nodes.

    route_pods(lab)              routes between the nodes' pod CIDRs (every node namespace)
    start_agent(lab, "node1")    the node's credentials (system:node:node1, group
                                 system:nodes, through the lab's relay) and its agent,
                                 started with ``Lab.spawn`` as ``agent-node1``

Address plan (documentation and benchmarking ranges only): node K's pods get 198.18.K.0/24
and 2001:db8:f0:K::/64; every node's pod CIDRs together are ``CLUSTER_CIDRS`` (not
masqueraded). Pods reach the API server at the relay's address (``--api-host``) until
kube-proxy forwards the ``kubernetes`` Service.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from lab.nodeagent.podnet import NodeRoutes, route_pod_cidrs

CLUSTER_CIDRS = ("198.18.0.0/16", "2001:db8:f0::/48")
API_HOST = "203.0.113.1"  # the lab's api namespace (lab.topology MGMT4 + ".1")


def pod_cidrs(index: int) -> tuple[str, str]:
    return f"198.18.{index}.0/24", f"2001:db8:f0:{index}::/64"


def route_pods(lab: Any) -> None:
    route_pod_cidrs([NodeRoutes(n.ns, n.ip4, n.ip6, pod_cidrs(n.index)) for n in lab.nodes])


def state_dir(lab: Any, node: str) -> Path:
    return Path(lab.dir) / f"agent-{node}"


def node_kubeconfig(lab: Any, node: str) -> Path:
    """A client certificate for ``system:node:NODE`` (group ``system:nodes``): the Node
    authorizer then treats the agent exactly as a kubelet."""
    path = Path(lab.dir) / f"{node}-node.kubeconfig"
    if not path.exists():
        lab.control_plane.user_kubeconfig(path, f"system:node:{node}", ("system:nodes",),
                                          server=lab.relay.url)
    return path


def agent_argv(lab: Any, node: str, *extra: str) -> list[str]:
    n = lab.node(node)
    port = urllib.parse.urlsplit(lab.relay.url).port
    return [lab.python, "-m", "lab.nodeagent", "--node", node,
            "--kubeconfig", str(node_kubeconfig(lab, node)),
            "--node-ip", n.ip4, "--node-ip6", n.ip6,
            "--pod-cidr", ",".join(pod_cidrs(n.index)),
            "--cluster-cidr", ",".join(CLUSTER_CIDRS),
            "--state-dir", str(state_dir(lab, node)),
            "--api-host", API_HOST, "--api-port", str(port),
            "--netns-prefix", f"{n.ns}-p", *extra]


def start_agent(lab: Any, node: str, *extra: str) -> Any:
    """Start the node's agent (``extra``: more flags, e.g. a shorter lease interval); returns
    the Lab's ``Proc`` (stopped by the Lab's teardown like every spawned process)."""
    return lab.spawn(f"agent-{node}", lab.node(node).ns, agent_argv(lab, node, *extra))
