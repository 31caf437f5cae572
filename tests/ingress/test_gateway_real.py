"""Gateway API through real HAProxy: listeners, matches, filters, weights, TLS, reloads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lab.gateway_kit import (
    GatewayWorld,
    backend_ref,
    gateway,
    http_rule,
    httproute,
    listener,
    reference_grant,
)
from lab.ingress_kit import Backend, Harness, get, make_cert, service, tls_secret

pytestmark = pytest.mark.lab


def port_of(res: object, name: str = "gw", port: int = 80) -> int:
    for fe in res.plan.frontends:  # type: ignore[attr-defined]
        if fe.gateway.name == name and fe.port == port:
            return int(fe.target_port)
    raise AssertionError(f"no frontend for {name}:{port}")


def test_listener_isolation_and_wildcard_hostnames(hx: Harness,
                                                   backends: dict[str, Backend]) -> None:
    for n in "ABC":
        hx.world.backend_service(f"svc-{n.lower()}", [backends[n]])
    gw = GatewayWorld()
    gw.add(gateway("gw", listener("any"), listener("foo", hostname="*.foo.com"),
                   listener("exact", hostname="a.foo.com")),
           httproute("r-any", http_rule(backend_ref("svc-a")),
                     parents=[{"name": "gw", "sectionName": "any"}]),
           httproute("r-foo", http_rule(backend_ref("svc-b"), path="/b"),
                     parents=[{"name": "gw", "sectionName": "foo"}]),
           httproute("r-exact", http_rule(backend_ref("svc-c"), path="/c"),
                     parents=[{"name": "gw", "sectionName": "exact"}]))
    res = gw.sync(hx)
    port = port_of(res)
    assert get(port, "x.com", "/b").name == "A"
    assert get(port, "x.b.foo.com", "/b").name == "B"  # wildcard: one or more labels
    # The most specific listener takes the request, even where its rules miss: the
    # less specific listeners' routes never see it (listener isolation).
    assert get(port, "q.foo.com", "/c").status == 404
    assert get(port, "a.foo.com", "/c").name == "C"
    assert get(port, "a.foo.com", "/b").status == 404
    assert get(port, "A.FOO.com:80", "/c/x").name == "C"


def test_matches_precedence_filters_and_weights(hx: Harness,
                                                backends: dict[str, Backend]) -> None:
    for n in "ABC":
        hx.world.backend_service(f"svc-{n.lower()}", [backends[n]])
    gw = GatewayWorld()
    gw.add(gateway("gw", listener("http")), httproute(
        "r",
        http_rule(backend_ref("svc-a"), path="/"),
        {"matches": [{"path": {"type": "PathPrefix", "value": "/m"},
                      "headers": [{"name": "X-V", "value": "b"}],
                      "queryParams": [{"name": "q", "value": "1"}]}],
         "backendRefs": [backend_ref("svc-b")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/m"}, "method": "POST"}],
         "backendRefs": [backend_ref("svc-c")]},
        {"matches": [{"path": {"type": "Exact", "value": "/m/exact"}}],
         "backendRefs": [backend_ref("svc-c")]},
        http_rule(backend_ref("svc-a", weight=3), backend_ref("svc-b", weight=1),
                  backend_ref("svc-c", weight=0), path="/split"),
        http_rule(backend_ref("svc-a"), path="/hdr", filters=[
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "X-Set", "value": "100%ci-%H"}],
                "add": [{"name": "X-Add", "value": "a"}], "remove": ["X-Gone"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "set": [{"name": "X-Resp", "value": "r%[src]"}]}}]),
        http_rule(backend_ref("svc-a"), path="/old", filters=[
            {"type": "URLRewrite", "urlRewrite": {
                "hostname": "rewritten.example", "path": {
                    "type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}]),
        {"matches": [{"path": {"type": "PathPrefix", "value": "/go"}}], "filters": [
            {"type": "RequestRedirect", "requestRedirect": {
                "scheme": "https", "hostname": "example.org", "statusCode": 301,
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/to"}}}]},
        http_rule(backend_ref("missing"), path="/broken"),
    ))
    port = port_of(gw.sync(hx))
    assert get(port, "h", "/m/x", headers={"X-V": "b"}).name == "A"  # query missing
    assert get(port, "h", "/m/x?q=1", headers={"X-V": "b"}).name == "B"
    assert get(port, "h", "/m/x", method="POST").name == "C"
    assert get(port, "h", "/m/exact", headers={"X-V": "b"}).name == "C"  # Exact first
    assert get(port, "h", "/mm").name == "A"  # element-wise prefix
    split = Counter(get(port, "h", "/split").name for _ in range(200))
    assert set(split) == {"A", "B"} and split["A"] > split["B"]  # weight 0 gets nothing
    r = get(port, "h", "/hdr", headers={"X-Gone": "1"})
    seen = r.seen_headers()
    assert seen["x-set"] == "100%ci-%H" and seen["x-add"] == "a" and "x-gone" not in seen
    assert r.headers["x-resp"] == "r%[src]"
    r = get(port, "h", "/old/page")
    assert r.json()["path"] == "/new/page"
    assert r.seen_headers()["host"] == "rewritten.example"
    r = get(port, "h", "/go/x?a=1&b=2")
    assert r.status == 301 and r.headers["location"] == "https://example.org/to/x?a=1&b=2"
    assert get(port, "h", "/broken").status == 500


def test_https_listener_and_cross_namespace_certificate(hx: Harness, tmp_path: Path,
                                                       backends: dict[str, Backend]) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    crt, key, _ = make_cert(tmp_path, "secure.example", ["secure.example"])
    hx.world.add(tls_secret("cert", crt, key, ns="certs"))
    gw = GatewayWorld()
    tls = {"certificateRefs": [{"name": "cert", "namespace": "certs"}]}
    gw.add(gateway("gw", listener("https", 443, "HTTPS", "secure.example", tls=tls)),
           httproute("r", http_rule(backend_ref("svc-a"))))
    res = gw.sync(hx)
    st = res.plan.gateway_status[("default", "gw")]["listeners"][0]
    assert any(c[:3] == ("ResolvedRefs", False, "RefNotPermitted") for c in st["conditions"])
    gw.add(reference_grant("allow", "certs", "Gateway", "default", "Secret"))
    res = gw.sync(hx)
    port = port_of(res, port=443)
    r = get(port, "secure.example", "/", https=True, sni="secure.example")
    assert r.status == 200 and r.name == "A"
    assert r.peer_cert is not None and b"secure.example" in r.peer_cert


def test_new_route_to_new_service_needs_no_reload(hx: Harness,
                                                  backends: dict[str, Backend]) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    gw = GatewayWorld()
    gw.add(gateway("gw", listener("http")),
           httproute("r1", http_rule(backend_ref("svc-a")), hostnames=["one.example"]))
    port = port_of(gw.sync(hx))
    hx.world.backend_service("svc-b", [backends["B"]])
    gw.add(httproute("r2", http_rule(backend_ref("svc-b"), path="/p"),
                     hostnames=["two.example"]))
    res = gw.sync(hx)
    assert not res.reloaded and res.runtime_commands > 0
    assert get(port, "two.example", "/p/q").name == "B"
    assert get(port, "one.example", "/p").name == "A"
    del gw.routes[("default", "r2")]
    res = gw.sync(hx)
    assert not res.reloaded
    assert get(port, "two.example", "/p").status == 404


def test_gateway_service_selects_ingress_pods(hx: Harness) -> None:
    hx.world.add(service("backend"))
    gw = GatewayWorld()
    gw.add(gateway("gw", listener("http"), listener("alt", 8080),
                   addresses=[{"type": "IPAddress", "value": "198.51.100.40"}]))
    res = gw.sync(hx)
    (svc,) = res.plan.services.values()
    assert svc["metadata"]["namespace"] == "portico"
    assert svc["metadata"]["annotations"]["lb.portico.dev/loadBalancerIPs"] == "198.51.100.40"
    assert {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        (80, port_of(res)), (8080, port_of(res, port=8080))}
    assert svc["spec"]["selector"] == {"app.kubernetes.io/component": "ingress"}


class _TLSEcho:
    """A TLS server thread answering each connection with its name (a passthrough backend)."""

    def __init__(self, name: str, crt: Path, key: Path) -> None:
        import socket
        import ssl
        import threading

        self.name = name.encode()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(crt), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import ssl

        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                conn.settimeout(5)
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(self.name)
            except (OSError, ssl.SSLError):
                conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


def _tls_read(port: int, sni: str) -> bytes:
    import socket
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        return tls.recv(100)


def test_tcp_and_tls_passthrough_listeners(hx: Harness, tmp_path: Path,
                                           backends: dict[str, Backend]) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    crt, key, _ = make_cert(tmp_path, "pass.example", ["pass.example", "other.example"])
    (tmp_path / "c.pem").write_bytes(crt)
    (tmp_path / "k.pem").write_bytes(key)
    echoes = {n: _TLSEcho(n, tmp_path / "c.pem", tmp_path / "k.pem") for n in ("T1", "T2")}
    try:
        for n, e in echoes.items():
            hx.world.add(service(f"tls-{n.lower()}"))
            hx.world.set_endpoints(f"tls-{n.lower()}", [("127.0.0.1", e.port)])
        gw = GatewayWorld()
        gw.add(gateway("gw", listener("tcp", 5432, "TCP"),
                       listener("tls", 8443, "TLS", tls={"mode": "Passthrough"})))
        tcp = httproute("db", {"backendRefs": [backend_ref("svc-a")]},
                        parents=[{"name": "gw", "sectionName": "tcp"}])
        tcp["kind"] = "TCPRoute"
        tls1 = httproute("t1", {"backendRefs": [backend_ref("tls-t1")]},
                         hostnames=["pass.example"],
                         parents=[{"name": "gw", "sectionName": "tls"}])
        tls2 = httproute("t2", {"backendRefs": [backend_ref("tls-t2")]},
                         parents=[{"name": "gw", "sectionName": "tls"}])
        for r in (tls1, tls2):
            r["kind"] = "TLSRoute"
        bad = httproute("wrong-kind", http_rule(backend_ref("svc-a")),
                        parents=[{"name": "gw", "sectionName": "tcp"}])
        gw.add(tcp, tls1, tls2, bad)
        res = gw.sync(hx)
        st = res.plan.route_status
        assert st[("HTTPRoute", "default", "wrong-kind")][0]["conditions"][0][:3] == (
            "Accepted", False, "NotAllowedByListeners")
        assert st[("TCPRoute", "default", "db")][0]["conditions"][0][1] is True
        # TCP: bytes pass through untouched (here, an HTTP exchange with the backend).
        assert get(port_of(res, port=5432), "any", "/x").name == "A"
        # TLS passthrough: chosen by SNI, decrypted only by the backend.
        tls_port = port_of(res, port=8443)
        assert _tls_read(tls_port, "pass.example") == b"T1"
        assert _tls_read(tls_port, "other.example") == b"T2"
    finally:
        for e in echoes.values():
            e.stop()
