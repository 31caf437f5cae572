"""``python -m lab.nodeagent``: run the node agent of one lab node (see ``lab.nodeagent``)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from common.cli import LOG_LEVELS
from common.errors import KubeError
from common.kube.client import KubeClient
from common.logs import configure
from lab.nodeagent.agent import Agent, AgentConfig
from lab.nodeagent.errors import NodeAgentError
from lab.nodeagent.lifecycle import BackoffPolicy


def _list(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.nodeagent", description=__doc__)
    p.add_argument("--node", required=True, help="the Node's name")
    p.add_argument("--kubeconfig", default=None,
                   help="credentials of system:node:NAME (group system:nodes)")
    p.add_argument("--node-ip", action="append", default=[], required=True,
                   help="an InternalIP of the node (repeat or comma-separate; the first is "
                        "the primary)")
    p.add_argument("--node-ip6", action="append", default=[],
                   help="an IPv6 InternalIP (same as another --node-ip)")
    p.add_argument("--pod-cidr", action="append", default=[], required=True,
                   help="the node's pod CIDR(s), one per family (e.g. 198.18.1.0/24)")
    p.add_argument("--cluster-cidr", action="append", default=[],
                   help="every node's pod CIDRs: traffic to them is not masqueraded")
    p.add_argument("--state-dir", required=True, type=Path,
                   help="logs, volumes and the ledger of this agent")
    p.add_argument("--api-host", default=None,
                   help="KUBERNETES_SERVICE_HOST for pods (default: the kubernetes Service's "
                        "ClusterIP, which only forwards once kube-proxy runs)")
    p.add_argument("--api-port", type=int, default=None,
                   help="KUBERNETES_SERVICE_PORT for pods (default: the Service's port)")
    p.add_argument("--netns-prefix", default="",
                   help="prefix of pod network namespace names (default pl-pod-NODE-)")
    p.add_argument("--lease-renew-interval", type=float, default=5.0,
                   help="seconds between node Lease renewals")
    p.add_argument("--status-update-interval", type=float, default=10.0,
                   help="seconds between checks of the Node's status on the server (written "
                        "when it differs; kubelet: nodeStatusUpdateFrequency)")
    p.add_argument("--status-report-interval", type=float, default=300.0,
                   help="seconds between Node status writes when nothing changed (kubelet: "
                        "nodeStatusReportFrequency)")
    p.add_argument("--backoff-initial", type=float, default=10.0,
                   help="crash-loop back-off after the second exit (kubelet: 10)")
    p.add_argument("--backoff-max", type=float, default=300.0,
                   help="crash-loop back-off cap (kubelet: 300)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--shutdown-grace", type=float, default=2.0,
                   help="seconds the containers get on SIGTERM when the agent stops")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure("nodeagent", args.log_level)
    cfg = AgentConfig(
        node=args.node, kubeconfig=args.kubeconfig,
        node_ips=_list(args.node_ip) + _list(args.node_ip6), pod_cidrs=_list(args.pod_cidr),
        cluster_cidrs=_list(args.cluster_cidr), state_dir=args.state_dir,
        api_host=args.api_host, api_port=args.api_port, netns_prefix=args.netns_prefix,
        lease_renew_s=args.lease_renew_interval, status_update_s=args.status_update_interval,
        status_report_s=args.status_report_interval,
        backoff=BackoffPolicy(args.backoff_initial, args.backoff_max), max_pods=args.max_pods,
        shutdown_grace_s=args.shutdown_grace)
    try:
        client = KubeClient.from_environment(kubeconfig=args.kubeconfig)
        agent = Agent(cfg, client)
        signal.signal(signal.SIGTERM, agent.request_stop)
        signal.signal(signal.SIGINT, agent.request_stop)
        return agent.run()
    except (KubeError, NodeAgentError) as exc:
        print(f"nodeagent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
