"""TLS by SNI, default certificate, HTTP->HTTPS 308, rotation at run time, annotations."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from lab.ingress_kit import Backends, Harness, get, ingress, make_cert, path, rule, tls_secret

A = "ingress.portico.dev/"
Certs = dict[str, tuple[bytes, bytes, bytes]]
N = "nginx.ingress.kubernetes.io/"


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[bytes, bytes, bytes]]:
    return {
        "one": make_cert(tmp_path, "one", ["one.example.com"]),
        "wild": make_cert(tmp_path, "wild", ["*.two.example.com"]),
        "rot": make_cert(tmp_path, "rot", ["one.example.com"]),
    }


@pytest.mark.lab
def test_sni_default_cert_and_redirect(hx: Harness, backends: Backends, certs: Certs) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.backend_service("svc-b", [backends["B"]])
    c1, k1, der1 = certs["one"]
    c2, k2, der2 = certs["wild"]
    hx.world.add(
        tls_secret("one-tls", c1, k1), tls_secret("wild-tls", c2, k2),
        ingress("one", [rule("one.example.com", path("/", "Prefix", "svc-a"))],
                tls=[{"hosts": ["one.example.com"], "secretName": "one-tls"}]),
        ingress("two", [rule("*.two.example.com", path("/", "Prefix", "svc-b"))],
                tls=[{"hosts": ["*.two.example.com"], "secretName": "wild-tls"}],
                annotations={N + "ssl-redirect": "false"}),
        ingress("plain", [rule("plain.example.com", path("/", "Prefix", "svc-a"))]),
    )
    res = hx.sync()
    assert not [e for e in res.events if e.type == "Warning"], res.events
    r = hx.get("one.example.com", "/x", https=True, sni="one.example.com")
    assert r.status == 200 and r.name == "A" and r.peer_cert == der1
    assert r.seen_headers()["x-forwarded-proto"] == "https"
    r = hx.get("a.two.example.com", "/", https=True, sni="a.two.example.com")
    assert r.name == "B" and r.peer_cert == der2
    # Unknown SNI: the generated default certificate, still routed by Host.
    r = hx.get("plain.example.com", "/", https=True, sni="plain.example.com")
    assert r.name == "A" and r.peer_cert not in (der1, der2)
    # TLS host over plain HTTP: 308 to https, path and query kept.
    r = hx.get("one.example.com", "/p?q=1")
    assert r.status == 308 and r.headers["location"] == "https://one.example.com/p?q=1"
    # ssl-redirect=false (nginx name) keeps plain HTTP; hosts without TLS are not redirected.
    assert hx.get("a.two.example.com", "/").name == "B"
    assert hx.get("plain.example.com", "/").name == "A"


@pytest.mark.lab
def test_tls_without_secret_name_uses_default_cert_and_redirects(
    hx: Harness, backends: Backends, certs: Certs
) -> None:
    # secretName is optional in the Ingress API: TLS by SNI with the default certificate.
    hx.world.backend_service("svc-a", [backends["A"]])
    c1, k1, der1 = certs["one"]
    hx.world.add(
        tls_secret("one-tls", c1, k1),
        ingress("nosecret", [rule("ns.example.com", path("/", "Prefix", "svc-a"))],
                tls=[{"hosts": ["ns.example.com"]}]),
        ingress("one", [rule("one.example.com", path("/", "Prefix", "svc-a"))],
                tls=[{"hosts": ["one.example.com"], "secretName": "one-tls"}]),
        ingress("plain", [rule("plain.example.com", path("/", "Prefix", "svc-a"))]),
    )
    res = hx.sync()
    assert not [e for e in res.events if e.type == "Warning"], res.events
    default_pem = (hx.plane.conf / "certs" / "default.pem").read_text()
    end = "-----END CERTIFICATE-----"
    default_der = ssl.PEM_cert_to_DER_cert(
        default_pem[default_pem.index("-----BEGIN CERT"):default_pem.index(end) + len(end)])
    r = hx.get("ns.example.com", "/x", https=True, sni="ns.example.com")
    assert r.status == 200 and r.name == "A" and r.peer_cert == default_der
    assert r.seen_headers()["x-forwarded-proto"] == "https"
    r = hx.get("ns.example.com", "/p?q=1")
    assert r.status == 308 and r.headers["location"] == "https://ns.example.com/p?q=1"
    assert hx.get("one.example.com", "/", https=True, sni="one.example.com").peer_cert == der1
    assert hx.get("plain.example.com", "/").name == "A"  # no TLS host: no redirect


@pytest.mark.lab
def test_permanent_redirect_url_with_query_string(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    target = "https://new.example.com/a%2Fb/p;v=1/$x?x=1&y=2&e=%41#frag"
    hx.world.add(
        ingress("moved", [rule("moved.example.com", path("/", "Prefix", "svc-a"))],
                annotations={N + "permanent-redirect": target}),
        # Unsafe value: this Ingress alone is refused, with an Event naming the annotation.
        ingress("bad", [rule("bad.example.com", path("/", "Prefix", "svc-a"))],
                annotations={A + "permanent-redirect": "https://new.example.com/it's"}),
        ingress("other", [rule("other.example.com", path("/", "Prefix", "svc-a"))]),
    )
    res = hx.sync()
    assert [(e.ref.name, e.reason) for e in res.events if e.type == "Warning"] == [
        ("bad", "InvalidAnnotation")]
    assert (A + "permanent-redirect") in res.events[0].message
    r = hx.get("moved.example.com", "/old?q=2")
    assert r.status == 301 and r.headers["location"] == target
    assert hx.get("other.example.com", "/").name == "A"
    assert hx.get("bad.example.com", "/").status == 404


@pytest.mark.lab
def test_certificate_rotation_without_reload(hx: Harness, backends: Backends, certs: Certs) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    c1, k1, der1 = certs["one"]
    c3, k3, der3 = certs["rot"]
    hx.world.add(tls_secret("one-tls", c1, k1),
                 ingress("one", [rule("one.example.com", path("/", "Prefix", "svc-a"))],
                         tls=[{"hosts": ["one.example.com"], "secretName": "one-tls"}]))
    hx.sync()
    before = hx.plane.master.show_proc()
    assert hx.get("one.example.com", "/", https=True, sni="one.example.com").peer_cert == der1
    hx.world.add(tls_secret("one-tls", c3, k3))
    res = hx.sync()
    assert res.cert_updates == 1 and not res.reloaded
    assert hx.get("one.example.com", "/", https=True, sni="one.example.com").peer_cert == der3
    after = hx.plane.master.show_proc()
    assert (after.master_pid, after.reloads) == (before.master_pid, before.reloads)


@pytest.mark.lab
def test_invalid_secret_uses_default_cert(hx: Harness, backends: Backends, certs: Certs) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    c1, _k1, der1 = certs["one"]
    _c2, k2, _ = certs["wild"]
    hx.world.add(tls_secret("bad-tls", c1, k2),  # key does not match the certificate
                 ingress("one", [rule("one.example.com", path("/", "Prefix", "svc-a"))],
                         tls=[{"hosts": ["one.example.com"], "secretName": "bad-tls"}]))
    res = hx.sync()
    assert any(e.reason == "InvalidSecret" and "does not match" in e.message
               for e in res.events)
    r = hx.get("one.example.com", "/", https=True, sni="one.example.com")
    assert r.name == "A" and r.peer_cert != der1


@pytest.mark.lab
def test_annotations_behave(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(
        ingress("rw", [rule("rw.example.com", path("/api", "Prefix", "svc-a"))],
                annotations={A + "rewrite-target": "/v2"}),
        ingress("re", [rule("re.example.com",
                            path("/x(/|$)(.*)", "ImplementationSpecific", "svc-a"))],
                annotations={N + "use-regex": "true", N + "rewrite-target": "/$2"}),
        ingress("deny", [rule("deny.example.com", path("/", "Prefix", "svc-a"))],
                annotations={N + "whitelist-source-range": "192.0.2.0/24"}),
        ingress("allow", [rule("allow.example.com", path("/", "Prefix", "svc-a"))],
                annotations={A + "allowlist-source-range": "127.0.0.0/8"}),
        ingress("size", [rule("size.example.com", path("/", "Prefix", "svc-a"))],
                annotations={N + "proxy-body-size": "1k"}),
        ingress("moved", [rule("moved.example.com", path("/", "Prefix", "svc-a"))],
                annotations={N + "permanent-redirect": "https://new.example.com/here"}),
        ingress("force", [rule("force.example.com", path("/", "Prefix", "svc-a"))],
                annotations={N + "force-ssl-redirect": "true"}),
        ingress("sticky", [rule("sticky.example.com", path("/", "Prefix", "svc-a"))],
                annotations={N + "affinity": "cookie", N + "session-cookie-name": "route"}),
    )
    res = hx.sync()
    assert not [e for e in res.events if e.type == "Warning"], res.events
    assert hx.get("rw.example.com", "/api/users?x=1").json()["path"] == "/v2/users?x=1"
    assert hx.get("re.example.com", "/x/deep/path").json()["path"] == "/deep/path"
    assert hx.get("deny.example.com", "/").status == 403
    assert hx.get("allow.example.com", "/").name == "A"
    assert hx.get("size.example.com", "/", method="POST", body=b"x" * 2048).status == 413
    assert hx.get("size.example.com", "/", method="POST", body=b"x" * 100).name == "A"
    r = hx.get("moved.example.com", "/old")
    assert r.status == 301 and r.headers["location"] == "https://new.example.com/here"
    assert hx.get("force.example.com", "/").status == 308
    assert "route=" in hx.get("sticky.example.com", "/").headers.get("set-cookie", "")


@pytest.mark.lab
def test_class_selection_and_default_class(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(
        ingress("other", [rule("other.example.com", path("/", "Prefix", "svc-a"))], cls="nginx"),
        ingress("missing", [rule("missing.example.com", path("/", "Prefix", "svc-a"))],
                cls="does-not-exist"),
        ingress("noclass", [rule("noclass.example.com", path("/", "Prefix", "svc-a"))],
                cls=None),
        ingress("ours", [rule("ours.example.com", path("/", "Prefix", "svc-a"))]),
    )
    res = hx.sync()
    assert res.model is not None
    assert {r.name for r in res.model.ours} == {"ours"}
    assert hx.get("ours.example.com", "/").name == "A"
    for host in ("other", "missing", "noclass"):
        assert get(hx.settings.http_port, f"{host}.example.com", "/").status == 404
    # Make our class the default: the class-less Ingress becomes ours.
    hx.world.classes = [{"metadata": {"name": "portico", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "portico.dev/ingress"}}]
    res = hx.sync()
    assert res.model is not None
    assert {r.name for r in res.model.ours} == {"ours", "noclass"}
    assert hx.get("noclass.example.com", "/").name == "A"
