"""Config-injection suite: hostile values in every user-controlled field.

For every (field, hostile value): the Ingress is rejected with a Warning Event naming it, or
the value is rendered inert (it never reaches a rendered file); the rendered files stay
well-formed; a victim Ingress's routes never change; and the combined render of all hostile
objects passes a real ``haproxy -c``. A final lab test serves traffic with all of them
applied and checks the victim still routes.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingress.core.annotations import SUPPORTED
from ingress.core.model import Backend as ModelBackend
from ingress.core.model import Model, build_model, endpoints_for
from ingress.core.render import Settings, render
from ingress.haproxy import certificate_problem
from lab.ingress_kit import (
    CLASS,
    Backends,
    Harness,
    endpoint_slice,
    ingress,
    path,
    rule,
    service,
)

from .conftest import need_haproxy

MARK = "EVIL"
# HAProxy log-format syntax (redirect location, replace-path replacement, set-header take
# log-format strings): a bad escape fails the config check, a good one is expanded per
# request (%ci: client address, %H: host name, %[src]: any sample fetch).
PERCENT = ["%2F", "%ci", "%H", "%[src]", "%", "%%"]
HOSTILE = [";", "{", "}", '"', "'", "\\", "#", "$", "${X}", "\r", "\n", "\0", "\u2028",
           "../", " ", "\t", *PERCENT]


def values() -> list[tuple[str, str]]:
    out = [(f"mid{h!r}", f"a{MARK}{h}b") for h in HOSTILE]
    out += [(f"end{h!r}", f"/{MARK}{h}") for h in HOSTILE]
    out += [("leading-dash", f"-{MARK}"), ("1MB", MARK + "a" * (1024 * 1024)),
            ("1MB-path", "/" + MARK + "a" * (1024 * 1024)),
            ("newline-directive", f"{MARK}\n    server evil 192.0.2.66:80"),
            ("map-injection", f"/{MARK} be_evil\nvictim.example.com/ be_evil")]
    return out


VICTIM = ingress("victim", [rule("victim.example.com", path("/", "Prefix", "victim-svc"))],
                 created="2030-01-01T00:00:00Z")  # youngest: conflict rules cannot favour it


def _base() -> dict[str, Any]:
    return ingress("hostile", [rule("h.example.com", path("/p", "Prefix", "svc"))],
                   created="2020-01-01T00:00:00Z",
                   tls=[{"hosts": ["h.example.com"], "secretName": "tls"}])


def _secret(crt: bytes, key: bytes, type_: str = "kubernetes.io/tls") -> dict[str, Any]:
    return {"metadata": {"name": "tls", "namespace": "default"}, "type": type_,
            "data": {"tls.crt": base64.b64encode(crt).decode(),
                     "tls.key": base64.b64encode(key).decode()}}


PEM = b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
KEYPEM = b"-----BEGIN PRIVATE KEY-----\nREVG\n-----END PRIVATE KEY-----\n"

Mutator = Callable[[dict[str, Any], str], object]


def _paths(o: dict[str, Any]) -> dict[str, Any]:
    return o["spec"]["rules"][0]["http"]["paths"][0]  # type: ignore[no-any-return]


FIELDS: dict[str, Mutator] = {
    "metadata.name": lambda o, v: o["metadata"].__setitem__("name", v),
    "metadata.namespace": lambda o, v: o["metadata"].__setitem__("namespace", v),
    "rules.host": lambda o, v: o["spec"]["rules"][0].__setitem__("host", v),
    "rules.host.wildcard": lambda o, v: o["spec"]["rules"][0].__setitem__("host", "*." + v),
    "path.Prefix": lambda o, v: _paths(o).__setitem__("path", v),
    "path.Exact": lambda o, v: _paths(o).update(path=v, pathType="Exact"),
    "path.ImplementationSpecific": lambda o, v: _paths(o).update(
        path=v, pathType="ImplementationSpecific"),
    "path.regex": lambda o, v: (_paths(o).update(path=v, pathType="ImplementationSpecific"),
                                o["metadata"]["annotations"].__setitem__(
                                    "nginx.ingress.kubernetes.io/use-regex", "true")),
    "pathType": lambda o, v: _paths(o).__setitem__("pathType", v),
    "backend.service.name": lambda o, v: _paths(o)["backend"]["service"].__setitem__("name", v),
    "backend.service.port.name": lambda o, v: _paths(o)["backend"]["service"].__setitem__(
        "port", {"name": v}),
    "tls.hosts": lambda o, v: o["spec"]["tls"][0].__setitem__("hosts", [v]),
    "tls.secretName": lambda o, v: o["spec"]["tls"][0].__setitem__("secretName", v),
    "ingressClassName": lambda o, v: o["spec"].__setitem__("ingressClassName", v),
    "annotation.key": lambda o, v: o["metadata"]["annotations"].__setitem__(
        "nginx.ingress.kubernetes.io/" + v, "true"),
}


def _annotation(key: str) -> Mutator:
    def mutate(o: dict[str, Any], v: str) -> None:
        o["metadata"]["annotations"][key] = v
    return mutate


# A valid URL around the value: what the URL check lets through reaches a log-format literal.
FIELDS["annotation.permanent-redirect.url"] = lambda o, v: o["metadata"]["annotations"].__setitem__(
    "nginx.ingress.kubernetes.io/permanent-redirect", "https://r.example.com/" + v)


for _short in SUPPORTED:
    FIELDS[f"annotation.{_short}"] = _annotation("ingress.portico.dev/" + _short)
    FIELDS[f"annotation.nginx.{_short}"] = _annotation("nginx.ingress.kubernetes.io/" + _short)


def _render_texts(m: Model) -> list[str]:
    r = render(m, {}, None, Settings())
    return [*r.files.values(), *(p.decode("ascii") for p in r.certs.values())]


def _well_formed(texts: list[str], files_map: bool = True) -> None:
    for t in texts:
        assert "\r" not in t and "\0" not in t and "\u2028" not in t
        assert t.isascii()


_LOGFORMAT_LINE = re.compile(r"    http-request (redirect location|replace-path '[^']*') '")


def _escaped_logformat(texts: list[str], value: str) -> bool:
    """The value reached haproxy.cfg only as a log-format literal: inside the single-quoted
    log-format argument of a redirect or replace-path (no escape or variable expansion in
    single quotes), with every '%' doubled."""
    if "'" in value:
        return False
    escaped = value.replace("%", "%%")
    for t in texts:
        for line in t.splitlines():
            if MARK not in line:
                continue
            m = _LOGFORMAT_LINE.match(line)
            if m is None or escaped not in line[m.end():]:
                return False
            arg = line[m.end():line.index("'", m.end())]
            if MARK in arg.replace(escaped, "") or re.search(r"(?<!%)%(%%)*(?!%)", arg):
                return False  # an unescaped copy, or an odd run of '%' (a live directive)
    return True


def _victim_routes(m: Model) -> set[tuple[str, str, str, str]]:
    return {(r.host, r.path, r.kind, r.backend) for r in m.routes if r.owner.name == "victim"}


def _model(hostile: list[dict[str, Any]], secret: dict[str, Any] | None = None) -> Model:
    secrets = {("default", "tls"): secret or _secret(PEM, KEYPEM)}
    return build_model([*hostile, VICTIM], [CLASS], {}, secrets)


BASELINE = _victim_routes(_model([]))


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_hostile_field(field: str) -> None:
    batch = []
    for label, value in values():
        obj = copy.deepcopy(_base())
        FIELDS[field](obj, value)
        m = _model([obj])
        texts = _render_texts(m)
        _well_formed(texts)
        leaked = any(MARK in t for t in texts)
        warned = [e for e in m.events if e.type == "Warning"]
        # Either rejected with an Event, or inert (nothing of the value was rendered) —
        # the class field may simply make the Ingress not ours, which is also inert.
        # A regex may contain '..' ("any two characters"): inert inside a quoted regex.
        # '$' (anchor) likewise; accepted only as exactly one single-quoted regex token.
        inert_regex = field == "path.regex" and all(
            f"{{ path -m reg '^{value}' }}" in line and line.count("'") == 4
            for t in texts for line in t.splitlines() if MARK in line)
        inert = inert_regex or _escaped_logformat(texts, value)
        assert not leaked or inert, f"{field}={label}: value reached the rendered config"
        if field not in ("ingressClassName",) and m.ours:
            assert warned or not leaked or inert, f"{field}={label}: silently accepted"
        assert _victim_routes(m) == BASELINE, f"{field}={label}: victim routes changed"
        for ev in warned:
            assert len(ev.message) <= 1024 and ev.reason.isalpha()
        batch.append(obj)
    # All hostile variants of this field together still render consistently.
    _well_formed(_render_texts(_model(batch)))


@pytest.mark.parametrize(("label", "value"), values()[:20])
def test_hostile_secret_data(label: str, value: str) -> None:
    payload = value.encode("utf-8", "surrogatepass")
    for crt, key in ((PEM + payload, KEYPEM), (PEM, payload), (payload, payload),
                     (b"-----BEGIN CERTIFICATE-----\n" + payload + b"\n-----END "
                      b"CERTIFICATE-----\n", KEYPEM)):
        m = _model([copy.deepcopy(_base())], _secret(crt, key))
        # Shape-valid PEM (base64 characters only) reaches the adapter, whose openssl check
        # rejects it before HAProxy ever sees it; anything else is rejected by the model.
        for c in m.certs:
            assert certificate_problem(c.pem) is not None, f"{label}: accepted"
            assert re.fullmatch(rb"[-A-Za-z0-9+/= \n]*", c.pem), label
        if not m.certs:
            assert any(e.reason == "InvalidSecret" for e in m.events)
        assert _victim_routes(m) == BASELINE
    m = _model([copy.deepcopy(_base())], _secret(PEM, KEYPEM, type_="Opaque" + value[:10]))
    assert not m.certs
    bad_b64 = {"metadata": {"name": "tls", "namespace": "default"}, "type": "kubernetes.io/tls",
               "data": {"tls.crt": value[:100], "tls.key": value[:100]}}
    assert not _model([copy.deepcopy(_base())], bad_b64).certs


@pytest.mark.parametrize("port", ["80", -1, 0, 65536, 10**30, True, None, 1.5, "http;x",
                                  {"$ne": 1}])
def test_hostile_port_numbers(port: Any) -> None:
    obj = copy.deepcopy(_base())
    _paths(obj)["backend"]["service"]["port"] = {"number": port}
    m = _model([obj])
    assert not [r for r in m.routes if r.owner.name == "hostile"]
    assert any(e.reason == "InvalidIngress" for e in m.events)
    assert _victim_routes(m) == BASELINE


@pytest.mark.parametrize(("label", "value"), values())
def test_hostile_endpoint_data(label: str, value: str) -> None:
    be = next(iter(build_model([VICTIM], [CLASS], {}, {}).backends.values()))
    assert isinstance(be, ModelBackend)
    svc = service("victim-svc")
    sl = endpoint_slice("victim-svc", [("10.0.0.1", 8080)])
    sl["endpoints"].append({"addresses": [value], "conditions": {"ready": True}})
    bad_port = copy.deepcopy(sl)
    bad_port["ports"][0]["port"] = value
    eps = endpoints_for(be, svc, [sl, bad_port])
    assert [e.ip for e in eps] == ["10.0.0.1"]


def test_every_hostile_render_passes_haproxy_check(tmp_path: Path) -> None:
    need_haproxy()
    from ingress.haproxy import DataPlane

    plane = DataPlane(str(tmp_path / "s"))
    plane.prepare()
    everything = []
    for field, mutate in sorted(FIELDS.items()):
        for i, (_label, value) in enumerate(values()):
            obj = copy.deepcopy(_base())
            obj["metadata"]["name"] = f"h-{re.sub('[^a-z0-9]', '-', field.lower())}-{i}"
            mutate(obj, value)
            everything.append(obj)
    m = _model(everything)
    assert _victim_routes(m) == BASELINE
    # Real certificates are not needed here: drop the fake one so the check is about syntax.
    from dataclasses import replace

    res = plane.check(render(replace(m, certs=()), {}, None, Settings(
        run_dir=str(tmp_path / "s" / "run"), bind_addresses=("127.0.0.1",), metrics_bind=None)))
    assert res.ok, res.output


@pytest.mark.lab
def test_hostile_ingresses_do_not_disturb_victim_traffic(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("victim-svc", [backends["A"]])
    hx.world.backend_service("svc", [backends["B"]])
    hx.world.add(VICTIM)
    for field, mutate in sorted(FIELDS.items()):
        for i, (_label, value) in enumerate(values()[:8]):
            obj = copy.deepcopy(_base())
            obj["metadata"]["name"] = f"h-{re.sub('[^a-z0-9]', '-', field.lower())}-{i}"
            obj["spec"]["rules"][0]["host"] = "victim.example.com"  # aim at the victim's host
            mutate(obj, value)
            hx.world.ingresses[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
    res = hx.sync()
    assert res.reloaded
    assert hx.get("victim.example.com", "/").name == "A"
    assert hx.get("victim.example.com", "/anything").name == "A"


@pytest.mark.lab
def test_percent_shapes_stay_literal_through_haproxy(hx: Harness, backends: Backends) -> None:
    """'%' in rewrite-target and permanent-redirect reaches HAProxy's log-format grammar:
    unescaped, '%2F' failed the config check (the Ingress was quarantined) and '%ci' / '%H'
    were expanded per request to the client address / host name."""
    hx.world.backend_service("svc", [backends["A"]])
    n = "nginx.ingress.kubernetes.io/"
    for i, shape in enumerate(PERCENT):
        hx.world.add(
            ingress(f"rw{i}", [rule(f"rw{i}.example.com", path("/p", "Prefix", "svc"))],
                    annotations={n + "rewrite-target": f"/r{shape}"}),
            ingress(f"rd{i}", [rule(f"rd{i}.example.com", path("/", "Prefix", "svc"))],
                    annotations={n + "permanent-redirect": f"https://r.example.com/a{shape}?q"}))
    res = hx.sync()
    assert not [e for e in res.events if e.reason == "ConfigRejected"], res.events
    refused = {e.ref.name for e in res.events if e.reason == "InvalidAnnotation"}
    # rewrite-target allows '%' (but not '['); a redirect URL only %XX escapes.
    assert refused == {"rw3"} | {f"rd{i}" for i, s in enumerate(PERCENT) if s != "%2F"}
    for i, shape in enumerate(PERCENT):
        if f"rw{i}" not in refused:
            assert hx.get(f"rw{i}.example.com", "/p/x").json()["path"] == f"/r{shape}/x"
        r = hx.get(f"rd{i}.example.com", "/")
        if f"rd{i}" in refused:
            assert r.status == 404
        else:
            assert r.status == 301 and r.headers["location"] == f"https://r.example.com/a{shape}?q"
    assert hx.get("victim.example.com", "/").status == 404  # nothing else routes by accident


LITERALS = [*PERCENT, "%%%", "a%", "%2f%", "a  b", "\\x41", "\\\\", '"q"', "$X", "${X}", "#f",
            ";", "{x}", "%{+Q}o"]


def test_logformat_quoting_is_literal_in_real_haproxy(tmp_path: Path) -> None:
    """logfmt_quote / replace_fmt_quote output, served by a real HAProxy: the Location and
    the rewritten path are exactly the input, for every shape of '%', space and backslash."""
    haproxy = need_haproxy()
    import subprocess
    import time

    from ingress.core.render import logfmt_quote, replace_fmt_quote
    from ingress.errors import UnsafeValue
    from lab.ingress_kit import free_port, get

    port = free_port()
    lines = ["global", "    stats timeout 1m", "defaults", "    mode http",
             "    timeout connect 2s", "    timeout client 5s", "    timeout server 5s",
             "frontend f", f"    bind 127.0.0.1:{port}"]
    for i, value in enumerate(LITERALS):
        lines.append(f"    http-request redirect location {logfmt_quote('/l' + value)} code 301"
                     f" if {{ path /r{i} }}")
        if "\\" in value:  # the replacement grammar reads it: only \1-\9 pass
            with pytest.raises(UnsafeValue):
                replace_fmt_quote("/n" + value)
            continue
        lines.append(f"    http-request replace-path '^/p{i}/(.*)' "
                     f"{replace_fmt_quote('/n' + value + '/' + chr(92) + '1')}")
    lines.append('    http-request return status 200 content-type text/plain lf-string "%[path]"')
    (tmp_path / "t.cfg").write_text("\n".join(lines) + "\n")
    check = subprocess.run([haproxy, "-c", "-f", "t.cfg"], cwd=tmp_path, capture_output=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr.decode()
    proc = subprocess.Popen([haproxy, "-db", "-f", "t.cfg"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # bounded: 5 s
            try:
                get(port, "x", "/")
                break
            except OSError:
                time.sleep(0.05)
        for i, value in enumerate(LITERALS):
            r = get(port, "x", f"/r{i}")
            assert (r.status, r.headers["location"]) == (301, "/l" + value), value
            if "\\" not in value:
                assert get(port, "x", f"/p{i}/t").body.decode() == f"/n{value}/t", value
    finally:
        proc.terminate()  # the process this test started
        proc.wait(10)
