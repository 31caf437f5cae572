"""A stand-in for Kubernetes' e2e test image ``agnhost`` (registry.k8s.io/e2e-test-images/
agnhost), for the subcommands the e2e suite uses; the node agent's image table
(``lab/nodeagent/images.py``) runs it for that image.

    serve-hostname [--http[=true|false]] [--tcp] [--udp] [--port N] [--close]

answers every request with the host name (a pod's host name is its name), as agnhost's
``serve-hostname`` does: HTTP (the default; any method, any path, ``text/plain``, no
newline), a TCP line, or a UDP datagram (``--tcp``/``--udp`` need ``--http=false``, as in
agnhost), on ``--port`` (default 9376, agnhost's). Any other
subcommand exits 2 naming what is implemented, so a test needing more fails clearly.
Standard library only: it runs as the pod's (non-root) user in the pod's network namespace.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import socketserver
import sys
import threading

SUBCOMMANDS = ("serve-hostname",)
DEFAULT_PORT = 9376  # agnhost serve-hostname's default


def _bool(value: str) -> bool:
    """Go's flag package: ``--flag`` alone is true, ``--flag=false`` etc. spell it out."""
    if value.lower() in ("1", "t", "true"):
        return True
    if value.lower() in ("0", "f", "false"):
        return False
    raise ValueError(f"invalid boolean value {value!r}")


def parse(argv: list[str]) -> dict[str, object]:
    """serve-hostname's flags in Go's syntax (``-x``, ``--x``, ``--x=v``, ``--x v``)."""
    opts: dict[str, object] = {"http": True, "tcp": False, "udp": False,
                               "port": DEFAULT_PORT, "close": False}
    i = 0
    while i < len(argv):
        word = argv[i].lstrip("-")
        name, eq, value = word.partition("=")
        if name not in opts:
            raise ValueError(f"flag provided but not defined: -{name}")
        if name == "port":
            if not eq:
                i += 1
                if i >= len(argv):
                    raise ValueError("flag needs an argument: -port")
                value = argv[i]
            opts["port"] = int(value)
        else:
            opts[name] = _bool(value) if eq else True
        i += 1
    if opts["http"] and (opts["tcp"] or opts["udp"]):
        # agnhost's own rule (--http defaults to true: --tcp needs --http=false).
        raise ValueError("can't mix --http with --tcp or --udp")
    return opts


class _DualStack:
    """One socket for IPv4 and IPv6 (``[::]``, V6ONLY off), as Go's ``:PORT`` listens: an
    IPv6 Service reaches the pod's IPv6 address. IPv4 only where the pod has no IPv6."""

    address_family: int = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    socket: socket.socket

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()  # type: ignore[misc]


def serve_hostname(opts: dict[str, object]) -> int:
    hostname = socket.gethostname()
    body = hostname.encode()
    port = int(str(opts["port"]))

    def _any() -> tuple[str, int]:
        return ("::" if _DualStack.address_family == socket.AF_INET6 else "", port)
    close = bool(opts["close"])
    servers: list[socketserver.BaseServer] = []

    if opts["http"]:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        class HTTPServer(_DualStack, http.server.ThreadingHTTPServer):
            daemon_threads = True
        servers.append(HTTPServer(_any(), Handler))

    if opts["tcp"]:
        class TCPHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(body + b"\n")

        class TCPServer(_DualStack, socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
        servers.append(TCPServer(_any(), TCPHandler))

    if opts["udp"]:
        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                _, sock = self.request
                sock.sendto(body, self.client_address)
        class UDPServer(_DualStack, socketserver.ThreadingUDPServer):
            pass
        servers.append(UDPServer(_any(), UDPHandler))

    if not servers:
        print("serve-hostname: none of --http, --tcp, --udp", file=sys.stderr)
        return 2
    print(f"Serving on port {port}.", flush=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers[1:]]
    for t in threads:
        t.start()
    with contextlib.suppress(KeyboardInterrupt):
        servers[0].serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        what = args[0] if args else "(none)"
        print(f"agnhost (portico lab stand-in): subcommand {what} is not implemented here; "
              f"implemented: {', '.join(SUBCOMMANDS)} (lab/agnhost.py)", file=sys.stderr)
        return 2
    try:
        opts = parse(args[1:])
    except ValueError as exc:
        print(f"agnhost {args[0]}: {exc}", file=sys.stderr)
        return 2
    return serve_hostname(opts)


if __name__ == "__main__":
    sys.exit(main())
