"""``portico ingress``: the ingress controller process (flags: ``--help``, docs/ingress.md).

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

from common.cli import add_common_arguments, new_parser
from common.kube.client import KubeClient
from common.kube.events import EventRecorder
from common.kube.serve import start_http_server
from common.logs import configure
from ingress.controller import IngressController
from ingress.core.model import CONTROLLER_NAME, Config
from ingress.core.render import Settings
from ingress.gateway.model import Setup
from ingress.haproxy import DataPlane
from ingress.sync import Syncer

_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._-]{1,200}")


DESCRIPTION = """\
Ingress controller: serves the Ingresses of its IngressClass with HAProxy, which it starts and
reconfigures as Ingresses, Services and endpoints change, and writes the addresses of its own
LoadBalancer Service (--publish-service) into their status.

On SIGTERM it stops watching and lets HAProxy finish the requests in flight before it
exits."""


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("ingress", DESCRIPTION)
    add_common_arguments(p, "0.0.0.0:10254")
    p.add_argument("--haproxy-metrics-addr", default="0.0.0.0:10255", metavar="HOST:PORT",
                   help="address of HAProxy's own Prometheus exporter (/metrics and /stats); "
                        "'' turns it off")
    p.add_argument("--ingress-class", default="portico", metavar="NAME",
                   help="serve Ingresses whose legacy kubernetes.io/ingress.class annotation "
                        "has this value")
    p.add_argument("--controller-name", default=CONTROLLER_NAME, metavar="NAME",
                   help="serve Ingresses of the IngressClasses whose spec.controller has this "
                        "value")
    p.add_argument("--publish-service", metavar="NAMESPACE/NAME",
                   help="the ingress tier's own LoadBalancer Service, whose addresses are "
                        "written into the status of every Ingress served (default: none, "
                        "Ingress status is left alone)")
    p.add_argument("--http-port", type=int, default=80, metavar="PORT",
                   help="port HAProxy listens on for HTTP")
    p.add_argument("--https-port", type=int, default=443, metavar="PORT",
                   help="port HAProxy listens on for HTTPS")
    p.add_argument("--bind-address", action="append", metavar="ADDR",
                   help="address HAProxy listens on; repeat for several (default: 0.0.0.0 "
                        "and ::)")
    p.add_argument("--accept-proxy", action="store_true",
                   help="expect the PROXY protocol on both listeners")
    p.add_argument("--haproxy", default="haproxy", metavar="PATH",
                   help="the HAProxy executable: a path, or a name looked up on $PATH")
    p.add_argument("--state-dir", default="/var/run/portico-ingress", metavar="DIR",
                   help="directory for HAProxy's configuration, certificates and sockets; an "
                        "absolute path of letters, digits and /._-")
    p.add_argument("--gateway-controller-name", default=None, metavar="NAME",
                   help="serve the Gateway API for GatewayClasses with this controllerName "
                        "(e.g. portico.dev/gateway-controller); off when not given")
    p.add_argument("--gateway-service-namespace", default=None, metavar="NAMESPACE",
                   help="where the Gateways' LoadBalancer Services are created (default: "
                        "the namespace of --publish-service)")
    p.add_argument("--tcp-services-configmap", default=None, metavar="NAMESPACE/NAME",
                   help="serve TCP ports listed in this ConfigMap (ingress-nginx's tcp-services "
                        "format: \"PORT\": \"namespace/service:port[:PROXY][:PROXY]\")")
    p.add_argument("--watch-namespace", default=None, metavar="NAMESPACE",
                   help="serve only the Ingresses of this namespace (default: all namespaces)")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = build_parser()
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
    gateway = None
    if args.gateway_controller_name:
        gw_ns = args.gateway_service_namespace or (publish[0] if publish else None)
        if not gw_ns:
            log.error("gateway_needs_namespace",
                      hint="give --publish-service or --gateway-service-namespace")
            return 2
        metrics_port = int(str(args.metrics_addr).rsplit(":", 1)[-1] or 0)
        gateway = Setup(namespace=gw_ns, selector={},
                        controller_name=args.gateway_controller_name,
                        reserved_ports=frozenset({args.http_port, args.https_port,
                                                  metrics_port}))
    ctl = IngressController(client, Syncer(plane, settings, cfg, gateway), recorder,
                            publish_service=publish,
                            namespace=args.watch_namespace, gateway=gateway,
                            tcp_services=_ns_name(args.tcp_services_configmap))
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


def _ns_name(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    ns, _, name = text.partition("/")
    if not ns or not name:
        raise SystemExit(f"expected NAMESPACE/NAME, got {text!r}")
    return ns, name

