"""Test helpers for the ingress tier: object builders, backends, HTTP(S) clients, harness."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ingress.core.render import Settings
from ingress.haproxy import DataPlane
from ingress.sync import Snapshot, Syncer, SyncResult, slices_by_service

HAPROXY = shutil.which("haproxy")
CLASS = {"metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- object builders -----------------------------------------------------------------------

def path(p: str, ptype: str, svc: str, port: int | str = 80) -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"path": p, "pathType": ptype,
            "backend": {"service": {"name": svc, "port": {key: port}}}}


def ingress(name: str, rules: list[dict[str, Any]], ns: str = "default",
            created: str = "2025-01-01T00:00:00Z", cls: str | None = "portico",
            annotations: dict[str, str] | None = None, tls: list[dict[str, Any]] | None = None,
            default: tuple[str, int] | None = None, rv: str = "1") -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    if cls is not None:
        spec["ingressClassName"] = cls
    if tls:
        spec["tls"] = tls
    if default:
        spec["defaultBackend"] = {"service": {"name": default[0],
                                              "port": {"number": default[1]}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created,
                         "annotations": annotations or {}, "resourceVersion": rv,
                         "uid": f"uid-{ns}-{name}"},
            "spec": spec}


def rule(host: str | None, *paths: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {"http": {"paths": list(paths)}}
    if host is not None:
        r["host"] = host
    return r


def service(name: str, ns: str = "default", port: int = 80,
            port_name: str = "http") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": port_name, "port": port, "targetPort": port}]}}


def endpoint_slice(svc: str, endpoints: list[tuple[str, int]], ns: str = "default",
                   port_name: str = "http", ready: bool = True) -> dict[str, Any]:
    """One slice per (svc, target port) with the given endpoints (all on that port)."""
    ports = sorted({p for _, p in endpoints})
    assert len(ports) <= 1, "one port per slice in these tests"
    return {"metadata": {"name": f"{svc}-x", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": ports[0]}] if ports else [],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}
                          for ip, _ in endpoints]}


# --- backends ------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "echo":
            self._tunnel()
            return
        received = self._read_body()
        if received is None:  # the proxy aborted the request: nobody to answer
            self.close_connection = True
            return
        self.server.bodies.append(received)
        body = json.dumps({"name": self.server.name, "path": self.path,
                           "headers": dict(self.headers.items()),
                           "body_len": received}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> int | None:
        """Read the request body (Content-Length or chunked): its length, None if the
        connection ended before the body did."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            for _ in range(1_000_000):  # bounded: at most a million chunks
                line = self.rfile.readline(100)
                if not line:
                    return None
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    for _ in range(1000):  # trailers, then the empty line
                        trailer = self.rfile.readline(8192)
                        if not trailer:
                            return None
                        if trailer in (b"\r\n", b"\n"):
                            return total
                    return None
                data = self.rfile.read(size)
                if len(data) < size or not self.rfile.readline(10):
                    return None
                total += size
            return None
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        return len(data) if len(data) == length else None

    def _tunnel(self) -> None:
        # A WebSocket stand-in: after 101 the connection is a raw byte tunnel (line echo).
        self.send_response(101)
        self.send_header("Upgrade", "echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        for line in self.rfile:
            self.wfile.write(self.server.name.encode() + b":" + line)
            self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    name = ""
    bodies: list[int]  # lengths of the request bodies received complete, in order

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the proxy cut it: expected
            super().handle_error(request, client_address)


@dataclass
class Backend:
    name: str
    port: int
    server: _Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


Backends = dict[str, Backend]


def start_backend(name: str) -> Backend:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.name = name
    srv.bodies = []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    return Backend(name, srv.server_address[1], srv, t)


# --- HTTP clients --------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    peer_cert: bytes | None = None

    @property
    def name(self) -> str | None:
        try:
            return str(json.loads(self.body)["name"])
        except (ValueError, KeyError, TypeError):
            return None

    def json(self) -> Any:
        return json.loads(self.body)

    def seen_headers(self) -> dict[str, str]:
        """Request headers as the backend saw them, names lower-cased."""
        return {k.lower(): v for k, v in self.json()["headers"].items()}


def get(port: int, host: str, target: str, https: bool = False, sni: str | None = None,
        headers: dict[str, str] | None = None, method: str = "GET",
        body: bytes | None = None, chunked: bool = False) -> Reply:
    """One request on a new connection. ``chunked`` sends ``body`` with
    Transfer-Encoding: chunked (8 KiB chunks) instead of Content-Length."""
    conn: http.client.HTTPConnection
    if https:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
        if sni is not None:
            # http.client uses the connection host as SNI; wrap the socket ourselves.
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sock = ctx.wrap_socket(raw, server_hostname=sni)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True)
        conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None and chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders(iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                            encode_chunked=True)
        else:
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        cert = None
        if https and isinstance(conn.sock, ssl.SSLSocket):
            cert = conn.sock.getpeercert(binary_form=True)
        return Reply(resp.status, data, {k.lower(): v for k, v in resp.getheaders()}, cert)
    finally:
        conn.close()


# --- certificates --------------------------------------------------------------------------

def make_cert(tmp: Path, cn: str, sans: list[str]) -> tuple[bytes, bytes, bytes]:
    """(cert PEM, key PEM, cert DER) for the given names, via the openssl CLI."""
    key, crt = tmp / f"{cn}.key", tmp / f"{cn}.crt"
    san = ",".join(f"DNS:{s}" for s in sans)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True, timeout=30)
    der = subprocess.run(["openssl", "x509", "-in", str(crt), "-outform", "DER"], check=True,
                         capture_output=True, timeout=30).stdout
    return crt.read_bytes(), key.read_bytes(), der


def tls_secret(name: str, crt: bytes, key: bytes, ns: str = "default") -> dict[str, Any]:
    import base64

    return {"metadata": {"name": name, "namespace": ns}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(crt).decode(),
                     "tls.key": base64.b64encode(key).decode()}}


# --- harness -------------------------------------------------------------------------------

@dataclass
class World:
    """Mutable cluster state fed to the Syncer as snapshots."""

    ingresses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    classes: list[dict[str, Any]] = field(default_factory=lambda: [CLASS])
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    slices: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, *objs: dict[str, Any]) -> None:
        for o in objs:
            key = (o["metadata"]["namespace"], o["metadata"]["name"])
            if "spec" in o and "rules" in o["spec"]:
                self.ingresses[key] = o
            elif o.get("type") == "kubernetes.io/tls" or "data" in o:
                self.secrets[key] = o
            elif "endpoints" in o:
                self.slices = [s for s in self.slices
                               if (s["metadata"]["namespace"], s["metadata"]["name"]) != key]
                self.slices.append(o)
            else:
                self.services[key] = o

    def set_endpoints(self, svc: str, endpoints: list[tuple[str, int]],
                      ns: str = "default") -> None:
        """Replace the Service's slices: one slice per distinct target port."""
        self.slices = [s for s in self.slices if not (
            s["metadata"]["namespace"] == ns
            and s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)]
        for port in sorted({p for _, p in endpoints}):
            sl = endpoint_slice(svc, [e for e in endpoints if e[1] == port], ns)
            sl["metadata"]["name"] = f"{svc}-{port}"
            self.slices.append(sl)

    def backend_service(self, svc: str, backends: list[Backend], ns: str = "default") -> None:
        self.add(service(svc, ns))
        self.set_endpoints(svc, [("127.0.0.1", b.port) for b in backends], ns)

    def snapshot(self) -> Snapshot:
        return Snapshot(tuple(self.ingresses.values()), tuple(self.classes),
                        dict(self.services), slices_by_service(self.slices),
                        dict(self.secrets))


@dataclass
class Harness:
    plane: DataPlane
    syncer: Syncer
    settings: Settings
    world: World

    def sync(self) -> SyncResult:
        res = self.syncer.sync(self.world.snapshot())
        assert res.error is None, res.error
        return res

    def get(self, host: str, target: str, **kw: Any) -> Reply:
        port = self.settings.https_port if kw.get("https") else self.settings.http_port
        return get(port, host, target, **kw)


@contextmanager
def harness(state_dir: Path, accept_proxy: bool = False) -> Iterator[Harness]:
    settings = Settings(http_port=free_port(), https_port=free_port(),
                        bind_addresses=("127.0.0.1",), run_dir=str(state_dir / "run"),
                        metrics_bind=f"127.0.0.1:{free_port()}", accept_proxy=accept_proxy,
                        threads=1)
    plane = DataPlane(str(state_dir))
    plane.prepare()
    h = Harness(plane, Syncer(plane, settings), settings, World())
    try:
        yield h
    finally:
        plane.stop()


# --- wrk -----------------------------------------------------------------------------------

WRK = shutil.which("wrk")


@dataclass
class WrkResult:
    requests: int
    non_2xx: int
    socket_errors: int
    rps: float
    output: str


def parse_wrk(out: str) -> WrkResult:
    import re

    req = re.search(r"(\d+) requests in", out)
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return WrkResult(int(req.group(1)) if req else 0, int(non.group(1)) if non else 0,
                     sum(int(x) for x in sock.groups()) if sock else 0,
                     float(rps.group(1)) if rps else 0.0, out)


@contextmanager
def wrk_load(url: str, host: str, seconds: int = 8, connections: int = 16,
             threads: int = 2) -> Iterator[list[WrkResult]]:
    """Run wrk in the background (bounded by -d); yields a list filled with the result."""
    assert WRK is not None
    proc = subprocess.Popen([WRK, "-t", str(threads), "-c", str(connections), "-d",
                             f"{seconds}s", "--timeout", "5s", "-H", f"Host: {host}", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    box: list[WrkResult] = []
    try:
        yield box
        out, _ = proc.communicate(timeout=seconds + 30)
        box.append(parse_wrk(out.decode(errors="replace")))
    finally:
        if proc.poll() is None:
            proc.kill()  # by the PID we started
            proc.wait(5)
