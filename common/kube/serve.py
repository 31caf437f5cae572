"""Health and metrics HTTP endpoint shared by every component.

/healthz: the process is alive and serving (liveness probe).
/readyz:  ``ready()`` is true — e.g. informers synced and, for the controller, leader or
          standby ready (readiness probe); 503 otherwise.
/metrics: Prometheus text format from the given registry (default: the global one).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = structlog.get_logger("common.kube.serve")


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (all IPv4 addresses) or ``[v6]:port``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be host:port, got {addr!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class HealthServer:
    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_http_server(
    addr: str,
    ready: Callable[[], bool],
    registry: CollectorRegistry = REGISTRY,
) -> HealthServer:
    host, port = parse_addr(addr)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would flood the log

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._reply(200, b"ok\n")
            elif path == "/readyz":
                try:
                    ok = bool(ready())
                except Exception:
                    log.exception("readiness_check_failed")
                    ok = False
                self._reply(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
            elif path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            else:
                self._reply(404, b"not found\n")

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True
        allow_reuse_address = True

        def server_bind(self) -> None:
            # HTTPServer.server_bind resolves the bound address back to a host name
            # (socket.getfqdn): where no resolver answers - a node's network namespace - that
            # stalls the component's start for seconds. The name only feeds CGI variables.
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = host, int(self.server_address[1])

    server = Server((host, port), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="health-http",
        daemon=True,
    )
    thread.start()
    log.info("http_serving", addr=f"{host}:{server.server_address[1]}")
    return HealthServer(server, thread)
