"""The lab's stand-in for a workload on a node: HTTP on [::]:PORT (IPv4 and IPv6) that says
which node answered, so a test sees which node the VIP's traffic reached."""

from __future__ import annotations

import argparse
import contextlib
import http.server
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.backend")
    parser.add_argument("--node", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--app", default=None, help="app name to report (the demo's web apps)")
    args = parser.parse_args(argv)
    body = (f"app={args.app} " if args.app else "").encode() + f"node={args.node}\n".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

        def server_bind(self) -> None:
            # One dual-stack socket: IPv4 VIPs arrive as ::ffff:a.b.c.d.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    server = Server(("::", args.port), Handler)
    print(f"backend node={args.node} listening on [::]:{args.port}", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
