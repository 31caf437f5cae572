"""``portico controller``: flags, logging, leader election, health/metrics, run."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from common.cli import add_common_arguments
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="portico controller",
                                description="Assigns VIPs to Services of type LoadBalancer.")
    add_common_arguments(p, "0.0.0.0:7472")
    p.add_argument("--lb-class", default=None,
                   help="handle Services whose loadBalancerClass is unset or this value")
    from lb.controller import DEFAULT_WORKERS

    p.add_argument("--workers", type=_workers, default=DEFAULT_WORKERS,
                   help="concurrent status writers; allocation decisions stay one at a time, "
                        "in queue order (default: %(default)s)")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    p.add_argument("--lease-name", default="portico-controller")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname())
    return p.parse_args(argv)


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
