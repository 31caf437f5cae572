"""``portico ingress``: the ingress controller process (flags: /tmp CLI contract, docs).

Starts the Kubernetes informers, the metrics/health server, and HAProxy (master-worker)
once the first snapshot is rendered; SIGTERM/SIGINT stop the informers and let HAProxy
finish in-flight requests (soft stop) before the process exits.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import threading
from types import FrameType

from common.cli import add_common_arguments
from common.kube.client import KubeClient
from common.kube.events import EventRecorder
from common.kube.serve import start_http_server
from common.logs import configure
from ingress.controller import IngressController
from ingress.core.model import CONTROLLER_NAME, Config
from ingress.core.render import Settings
from ingress.haproxy import DataPlane
from ingress.sync import Syncer

_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._-]{1,200}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="portico ingress", description=__doc__)
    add_common_arguments(p, "0.0.0.0:10254")
    p.add_argument("--haproxy-metrics-addr", default="0.0.0.0:10255",
                   help="HAProxy's own Prometheus exporter ('' to disable)")
    p.add_argument("--ingress-class", default="portico")
    p.add_argument("--controller-name", default=CONTROLLER_NAME)
    p.add_argument("--publish-service", help="NAMESPACE/NAME of the ingress tier's LB Service")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--bind-address", action="append",
                   help="listen address (repeatable; default 0.0.0.0 and ::)")
    p.add_argument("--accept-proxy", action="store_true",
                   help="expect the PROXY protocol on both listeners")
    p.add_argument("--haproxy", default="haproxy")
    p.add_argument("--state-dir", default="/var/run/portico-ingress")
    p.add_argument("--watch-namespace", default=None)
    args = p.parse_args(argv)
    if not _SAFE_PATH.fullmatch(os.path.abspath(args.state_dir)):
        p.error("--state-dir must be an absolute path of [A-Za-z0-9/._-]")
    if args.publish_service and args.publish_service.count("/") != 1:
        p.error("--publish-service must be NAMESPACE/NAME")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = configure("ingress", args.log_level)
    state = os.path.abspath(args.state_dir)
    settings = Settings(
        http_port=args.http_port, https_port=args.https_port,
        bind_addresses=tuple(args.bind_address or ("0.0.0.0", "::")),
        run_dir=state + "/run", metrics_bind=args.haproxy_metrics_addr or None,
        accept_proxy=args.accept_proxy,
    )
    plane = DataPlane(state, args.haproxy)
    plane.prepare()
    client = KubeClient.from_environment(args.kubeconfig, args.server)
    recorder = EventRecorder(client, "portico-ingress",
                             host=os.environ.get("NODE_NAME") or socket.gethostname())
    cfg = Config(ingress_class=args.ingress_class, controller_name=args.controller_name)
    publish = tuple(args.publish_service.split("/")) if args.publish_service else None
    ctl = IngressController(client, Syncer(plane, settings, cfg), recorder,
                            publish_service=publish,
                            namespace=args.watch_namespace)
    health = start_http_server(args.metrics_addr,
                               ready=lambda: ctl.ready.is_set() and plane.running())
    done = threading.Event()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        done.set()
        ctl.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ctl.start()
    ctl.request_sync()  # first sync even in an empty cluster: HAProxy serves the 404 default
    loop = threading.Thread(target=ctl.run, name="ingress-sync", daemon=True)
    loop.start()
    log.info("started", state_dir=state, http=args.http_port, https=args.https_port)
    done.wait()
    loop.join(10)
    plane.stop(timeout_s=30.0, graceful=True)
    health.shutdown()
    return 0
