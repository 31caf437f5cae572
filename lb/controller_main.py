"""``portico controller``: flags, logging, leader election, health/metrics, run."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from common.cli import add_common_arguments, new_parser
from common.logs import configure


def _workers(text: str) -> int:
    from lb.controller import MAX_WORKERS

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be within 1..{MAX_WORKERS}")
    return n


DESCRIPTION = """\
Gives every Service of type LoadBalancer that it handles an address from an IPAddressPool
and writes it to the Service's status.loadBalancer.ingress (the speakers announce it from
there); reports problems through a Service condition and Events.

Several replicas may run: with leader election only the holder of the Lease writes, the
others wait on standby (alive, not ready)."""


def build_parser() -> argparse.ArgumentParser:
    from lb.controller import DEFAULT_WORKERS, MAX_WORKERS

    p = new_parser("controller", DESCRIPTION)
    add_common_arguments(p, "0.0.0.0:7472")
    p.add_argument("--lb-class", default=None, metavar="CLASS",
                   help="also handle Services whose spec.loadBalancerClass is CLASS (default: "
                        "only Services without a loadBalancerClass)")
    p.add_argument("--workers", type=_workers, default=DEFAULT_WORKERS, metavar="N",
                   help=f"concurrent status writers, 1 to {MAX_WORKERS}; allocation decisions "
                        "stay one at a time, in queue order")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="take a Lease before writing anything, so that only one replica is "
                        "active at a time; turn off only when a single replica runs")
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"),
                   metavar="NAMESPACE",
                   help="namespace of the leader-election Lease (default: $POD_NAMESPACE, or "
                        "'default' when unset; currently %(default)s)")
    p.add_argument("--lease-name", default="portico-controller", metavar="NAME",
                   help="name of the leader-election Lease")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname(),
                   help="this replica's name as the Lease holder, unique among replicas "
                        "(default: $POD_NAME, or the host name when unset; currently %(default)s)")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    log = configure("controller", args.log_level)
    from common.errors import KubeError
    from common.kube.client import KubeClient
    from common.kube.leader import LeaderElector
    from common.kube.serve import start_http_server
    from lb.controller import Controller

    try:
        kube = KubeClient.from_environment(kubeconfig=args.kubeconfig, server=args.server)
    except KubeError as e:
        log.error("no_kubernetes", error=str(e))
        return 2
    controller = Controller(kube, lb_class=args.lb_class, workers=args.workers)
    stop = threading.Event()
    exit_code = [0]

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal", signum=signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = start_http_server(args.metrics_addr, controller.ready)
    elector: LeaderElector | None = None
    if args.leader_elect:
        def on_lost() -> None:
            # Another replica may already be writing: stop at once, never race it.
            exit_code[0] = 3
            stop.set()

        elector = LeaderElector(kube, args.lease_namespace, args.lease_name, args.identity,
                                on_lost=on_lost)
        log.info("waiting_for_leadership", lease=args.lease_name, identity=args.identity)
        if not elector.acquire(stop):
            server.shutdown()
            return 0
        elector.start_renewing()
    try:
        controller.start()
    except KubeError as e:
        log.error("start_failed", error=str(e))
        exit_code[0] = 1
        stop.set()
    stop.wait()
    controller.stop()
    if elector is not None:
        elector.stop(release=exit_code[0] != 3)
    server.shutdown()
    log.info("stopped", exit_code=exit_code[0])
    if exit_code[0] == 3:
        # Leadership lost: exit without waiting for worker threads.
        sys.stdout.flush()
        os._exit(3)
    return exit_code[0]
