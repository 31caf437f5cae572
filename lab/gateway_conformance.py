"""The upstream Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance v1.6.3)
against Portico on the lab cluster: ``python -m lab.gateway_conformance`` (``make
conformance``).

1. starts the lab cluster (``lab.labcluster``: a real control plane, three node namespaces
   with node agents and kube-proxy, ``helm install`` of ``charts/portico`` with
   ``gateway.enabled=true`` and ``gateway.installCRDs=true``) and checks that the
   Standard-channel CRDs and the GatewayClass are there;
2. checks the suite's backends on their own (unless ``--skip-backend-check``): the
   Namespaces, Services, Deployments and ConfigMaps of the suite's base manifests (no
   Gateways), with the TLS Secrets their pods mount made here, until every pod is Running
   and Ready through the node agents; then each Service answers through its ClusterIP from
   a node namespace (HTTP and HTTPS from echo-basic, TCP, the DNS stand-in); then deletes
   those namespaces again, so the suite starts from nothing (it makes its own Secrets);
3. runs the suite's test binary (built by ``make binaries``) in the lab's client namespace —
   where Gateway VIPs are reachable, as from any client of the network — with a kubeconfig
   whose server is a relay on the client namespace's own loopback to the API server;
   ``-gateway-class``, ``-conformance-profiles`` (GATEWAY-HTTP, -TLS, -GRPC, -TCP),
   ``-cleanup-base-resources``, and the report written to ``docs/conformance/`` for a full
   run (into the run directory for ``--run-test``/``--skip-tests`` runs);
4. prints passed/failed/skipped per test and the path of the raw ``go test -v`` log, then
   tears everything down (Helm release, lab namespaces and processes, control plane).

Without ``--supported-features`` or ``--all-features`` the suite infers the features from
the GatewayClass's ``status.supportedFeatures`` (what the controller publishes), as upstream
expects an implementation to do.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import functools
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import netns
from lab.controlplane import binaries, pki
from lab.controlplane.relay import Relay
from lab.labcluster import VALUES, LabCluster, LabClusterError
from lab.topology import REPO

VERSION = binaries.GATEWAY_API_VERSION
PROFILES = ("GATEWAY-HTTP", "GATEWAY-TLS", "GATEWAY-GRPC", "GATEWAY-TCP")
GATEWAY_CLASS = "portico"
REPORT = REPO / "docs" / "conformance" / f"portico-gateway-api-{VERSION}-report.yaml"
# The suite's namespaces (conformance/utils/suite: Infrastructure/AppBackend/WebBackend).
SUITE_NAMESPACES = ("gateway-conformance-infra", "gateway-conformance-app-backend",
                    "gateway-conformance-web-backend")
BACKEND_KINDS = ("Namespace", "ConfigMap", "Service", "Deployment")
# Secrets the base manifests' pods mount (the suite makes them itself, signed by CAs it keeps;
# the backend check makes its own and deletes them with the namespaces before the suite runs).
TLS_SECRETS = (("gateway-conformance-infra", "tls-checks-certificate", "abc.example.com"),
               ("gateway-conformance-infra", "tls-passthrough-checks-certificate",
                "abc.example.com"),
               ("gateway-conformance-app-backend", "tls-passthrough-checks-certificate",
                "abc.example.com"))
IMPLEMENTATION = {"organization": "portico", "project": "portico",
                  "url": "https://portico.dev", "contact": "@portico/maintainers"}
PODS_READY_TIMEOUT_S = 300.0  # the suite's own NamespacesMustBeReady
NAMESPACE_GONE_TIMEOUT_S = 180.0
SUITE_TIMEOUT = "60m"  # -test.timeout; the process is killed a minute after it
PROBE_TIMEOUT_S = 3.0
PROBE_RETRY_S = 30.0  # EndpointSlice -> kube-proxy lag after the pods turn Ready

_STARTED = re.compile(r"^=== RUN   TestConformance/([^/\s]+)$")
_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(([\d.]+)s\)")


class ConformanceRunError(Exception):
    """A step before the suite failed; the message says which."""


# ---- pure parts -------------------------------------------------------------------------------

def helm_values(sets: list[str]) -> dict[str, Any]:
    """LabCluster's values with the Gateway API on, then ``KEY=VALUE`` overrides (dotted
    keys, YAML values)."""
    values: dict[str, Any] = json.loads(json.dumps(VALUES))
    values["gateway"] = {"enabled": True, "installCRDs": True}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set wants KEY=VALUE, not {item!r}")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return values


@dataclass
class SuiteOptions:
    gateway_class: str = GATEWAY_CLASS
    profiles: tuple[str, ...] = PROFILES
    report: Path | None = None
    run_test: str = ""
    skip_tests: str = ""
    supported_features: str = ""
    exempt_features: str = ""
    all_features: bool = False
    debug: bool = False
    timeout: str = SUITE_TIMEOUT
    version: str = "0.1.0"
    extra: list[str] = field(default_factory=list)


def suite_argv(binary: Path, o: SuiteOptions) -> list[str]:
    """The test binary's command line (go test flags first, then the suite's)."""
    argv = [str(binary), "-test.v", "-test.run", "^TestConformance$", "-test.timeout",
            o.timeout, "-test.count", "1",
            f"-gateway-class={o.gateway_class}",
            f"-conformance-profiles={','.join(o.profiles)}",
            "-cleanup-base-resources=true",
            f"-organization={IMPLEMENTATION['organization']}",
            f"-project={IMPLEMENTATION['project']}", f"-url={IMPLEMENTATION['url']}",
            f"-version={o.version}", f"-contact={IMPLEMENTATION['contact']}"]
    if o.report is not None:
        argv.append(f"-report-output={o.report}")
    for flag, value in (("run-test", o.run_test), ("skip-tests", o.skip_tests),
                        ("supported-features", o.supported_features),
                        ("exempt-features", o.exempt_features)):
        if value:
            argv.append(f"-{flag}={value}")
    if o.all_features:
        argv.append("-all-features=true")
    if o.debug:
        argv.append("-debug=true")
    return argv + list(o.extra)


def parse_results(text: str) -> dict[str, tuple[str, float]]:
    """``go test -v`` output -> {test: (PASS|FAIL|SKIP, seconds)} for the suite's tests
    (``TestConformance/<ShortName>``; deeper subtests are the tests' own steps)."""
    out: dict[str, tuple[str, float]] = {}
    for line in text.splitlines():
        m = _RESULT.match(line)
        if not m:
            continue
        parts = m.group(2).split("/")
        if parts[0] == "TestConformance" and len(parts) == 2:
            out[parts[1]] = (m.group(1), float(m.group(3)))
        elif parts == ["TestConformance"]:
            out.setdefault("", (m.group(1), float(m.group(3))))  # the whole run
    return out


def summary(results: dict[str, tuple[str, float]], list_skipped: bool = True) -> list[str]:
    """One line per test (FAIL first), then the counts; ``list_skipped=False`` (a
    ``--run-test`` run, where every other test is skipped) leaves the skipped ones out."""
    tests = {k: v for k, v in results.items() if k}
    lines = [f"  {status:4}  {name}  ({secs:.1f} s)"
             for name, (status, secs) in sorted(tests.items(), key=lambda kv: (kv[1][0], kv[0]))
             if list_skipped or status != "SKIP"]
    counts = {s: sum(1 for v in tests.values() if v[0] == s) for s in ("PASS", "FAIL", "SKIP")}
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return lines


def setup_failure(text: str) -> str | None:
    """The first error of the suite's own set-up (before any test ran), if it stopped there."""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Error Trace"):
            continue
        if re.search(r"(cannot infer|no supported features|GatewayClass .* not|"
                     r"error waiting|timed out|context deadline exceeded|FailNow|"
                     r"supplied Implementation details are not valid|does not exist)", s):
            return s[:300]
    return None


def backend_objects(base_docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The base manifests' backends alone: no Gateways (nothing should be programmed by the
    check) and the objects' own order (Namespaces first)."""
    return [d for d in base_docs if d and d.get("kind") in BACKEND_KINDS]


def tls_secret(namespace: str, name: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(cert_pem).decode(),
                     "tls.key": base64.b64encode(key_pem).decode()}}


def dns_query(name: str, ident: int = 0x5043) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + \
        struct.pack("!HH", 1, 1)


# ---- the backend check ----------------------------------------------------------------------

@dataclass
class Probe:
    service: str
    what: str
    ok: bool
    detail: str


def _no_proxy_opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def _http(url: str, insecure_tls: bool = False) -> tuple[bool, str]:
    ctx = None
    if insecure_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with _no_proxy_opener(ctx).open(url, timeout=PROBE_TIMEOUT_S) as resp:
            body = json.loads(resp.read())
        return True, f"HTTP {resp.status} from pod {body.get('pod')} ({body.get('namespace')})"
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _tcp(host: str, port: int, send: bytes = b"", tls_name: str = "") -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw:
            s = raw
            if tls_name:  # the backend's own certificate: handshake only, no verification
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(raw, server_hostname=tls_name)
            if not send:
                return True, "TCP connected"
            s.sendall(send)
            s.settimeout(PROBE_TIMEOUT_S)
            try:
                data = s.recv(4096)
            except TimeoutError:
                return True, "TCP connected (no answer to a line)"
            return True, f"TCP answered {len(data)} B: {data[:80]!r}"
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _udp_dns(host: str, port: int) -> tuple[bool, str]:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(PROBE_TIMEOUT_S)
            s.sendto(dns_query("foo.bar.com."), (host, port))
            data = s.recv(4096)
        rcode = data[3] & 0x0F if len(data) >= 4 else -1
        return rcode == 0, f"DNS answer {len(data)} B, rcode {rcode}"
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def probe_plan(services: list[dict[str, Any]],
               deployments: dict[tuple[str, str], dict[str, Any]]
               ) -> list[tuple[str, str, Callable[[], tuple[bool, str]]]]:
    """One probe per Service port, chosen by what the backend pod runs (pure but for the
    probe functions it returns)."""
    plan: list[tuple[str, str, Callable[[], tuple[bool, str]]]] = []
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        ip = svc["spec"].get("clusterIP")
        selector = svc["spec"].get("selector") or {}
        dep = next((d for (dns_, _), d in deployments.items() if dns_ == ns and
                    all((d["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v
                        for k, v in selector.items())), None)
        env = {}
        if dep is not None:
            c = dep["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
        for port in svc["spec"]["ports"]:
            p, proto = int(port["port"]), port.get("protocol", "TCP")
            label = f"{ns}/{name}:{p}/{proto}"
            probe: tuple[str, Callable[[], tuple[bool, str]]]
            if proto == "UDP":
                probe = ("dns", functools.partial(_udp_dns, ip, p))
            elif env.get("GRPC_ECHO_SERVER"):
                probe = ("tcp (gRPC)", functools.partial(_tcp, ip, p))
            elif env.get("TCP_ECHO_SERVER") and "tls" in str(port.get("name", "")):
                probe = ("tls echo", functools.partial(_tcp, ip, p, b"hello\n",
                                                       "abc.example.com"))
            elif env.get("TCP_ECHO_SERVER"):
                probe = ("tcp echo", functools.partial(_tcp, ip, p, b"hello\n"))
            elif port.get("appProtocol") == "kubernetes.io/h2c":
                probe = ("tcp (h2c)", functools.partial(_tcp, ip, p))
            elif env.get("TLS_SERVER_CERT") and p == 443:
                probe = ("https", functools.partial(_http, f"https://{ip}:{p}/", True))
            else:
                probe = ("http", functools.partial(_http, f"http://{ip}:{p}/"))
            plan.append((label, *probe))
    return plan


class BackendCheck:
    """The suite's backends applied alone, waited for, probed and removed again."""

    def __init__(self, lc: LabCluster, base: Path, workdir: Path) -> None:
        self.lc = lc
        self.docs = backend_objects([d for d in yaml.safe_load_all(base.read_text()) if d])
        self.workdir = workdir
        self.figures: dict[str, float] = {}

    def secrets(self) -> list[dict[str, Any]]:
        ca = pki.CertificateAuthority(self.workdir / "backend-ca")
        out = []
        for i, (ns, name, host) in enumerate(TLS_SECRETS):
            pair = ca.issue(f"backend-{i}", host, server=True, dns=(host,))
            out.append(tls_secret(ns, name, pair.cert.read_bytes(), pair.key.read_bytes()))
        return out

    def run(self) -> list[Probe]:
        t0 = time.monotonic()
        namespaces = [d for d in self.docs if d["kind"] == "Namespace"]
        rest = [d for d in self.docs if d["kind"] != "Namespace"]
        for items in (namespaces, [*self.secrets(), *rest]):  # namespaces first
            self.lc.kubectl("apply", "-f", "-", input_text=json.dumps(
                {"apiVersion": "v1", "kind": "List", "items": items}))
        self.wait_pods_ready()
        self.figures["backends_ready_s"] = round(time.monotonic() - t0, 1)
        return self.probe()

    def pods(self) -> list[dict[str, Any]]:
        out = []
        for ns in SUITE_NAMESPACES:
            out += self.lc.get(f"/api/v1/namespaces/{ns}/pods")["items"]
        return out

    def not_ready(self) -> list[str]:
        pods = self.pods()
        if not pods:
            return ["no pods yet"]
        wanted = sum(int(d["spec"].get("replicas", 1)) for d in self.docs
                     if d["kind"] == "Deployment")
        out = [] if len(pods) >= wanted else [f"{len(pods)}/{wanted} pods exist"]
        for pod in pods:
            st = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in st.get("conditions") or [])
            if not ready:
                waiting = [str(((c.get("state") or {}).get("waiting") or {}).get("reason", ""))
                           + ": " + str(((c.get("state") or {}).get("waiting") or {})
                                        .get("message", ""))[:200]
                           for c in st.get("containerStatuses") or []
                           if (c.get("state") or {}).get("waiting")]
                out.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']} "
                           f"{st.get('phase')} {' '.join(waiting)}".rstrip())
        return out

    def wait_pods_ready(self) -> None:
        deadline = time.monotonic() + PODS_READY_TIMEOUT_S
        last: list[str] = []
        while time.monotonic() < deadline:
            last = self.not_ready()
            if not last:
                return
            time.sleep(1.0)
        raise ConformanceRunError("the suite's backends are not ready after "
                                  f"{PODS_READY_TIMEOUT_S:.0f} s: " + "; ".join(last[:12]))

    def probe(self) -> list[Probe]:
        assert self.lc.lab is not None
        services = []
        for ns in SUITE_NAMESPACES:
            services += self.lc.get(f"/api/v1/namespaces/{ns}/services")["items"]
        deps = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in self.docs
                if d["kind"] == "Deployment"}
        node_ns = self.lc.lab.nodes[-1].ns  # a worker: ClusterIPs as any pod or node sees them
        results = []
        for label, what, fn in probe_plan(services, deps):
            # Ready pods reach kube-proxy's rules through EndpointSlices a moment later
            # (until then the ClusterIP rejects: ECONNREFUSED, or EPERM for UDP).
            deadline = time.monotonic() + PROBE_RETRY_S
            t0 = time.monotonic()
            while True:
                ok, detail = netns.run_in_netns(node_ns, fn, timeout=30.0)
                if ok or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            waited = time.monotonic() - t0
            if ok and waited > 1.0:
                detail += f" (after {waited:.1f} s)"
            results.append(Probe(label, what, ok, detail))
        return results

    def delete(self) -> None:
        for ns in SUITE_NAMESPACES:
            self.lc.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false",
                            check=False)
        deadline = time.monotonic() + NAMESPACE_GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            left = [ns for ns in SUITE_NAMESPACES if self._exists(ns)]
            if not left:
                return
            time.sleep(1.0)
        raise ConformanceRunError(f"namespaces {left} still there after "
                                  f"{NAMESPACE_GONE_TIMEOUT_S:.0f} s")

    def _exists(self, ns: str) -> bool:
        try:
            self.lc.get(f"/api/v1/namespaces/{ns}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True


# ---- the run ---------------------------------------------------------------------------------

def check_gateway_api(lc: LabCluster, gateway_class: str) -> list[str]:
    """What the chart installed: the Standard-channel CRDs (bundle version, Established) and
    the GatewayClass with its conditions. Raises when a CRD is missing or not established."""
    lines = []
    crds = [c for c in lc.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
            if c["spec"]["group"] == "gateway.networking.k8s.io"]
    established = [c for c in crds if any(
        x.get("type") == "Established" and x.get("status") == "True"
        for x in (c.get("status") or {}).get("conditions") or [])]
    versions = sorted({(c["metadata"].get("annotations") or {}).get(
        "gateway.networking.k8s.io/bundle-version", "?") for c in crds})
    channels = sorted({(c["metadata"].get("annotations") or {}).get(
        "gateway.networking.k8s.io/channel", "?") for c in crds})
    lines.append(f"Gateway API CRDs: {len(established)}/{len(crds)} established, bundle "
                 f"{','.join(versions)}, channel {','.join(channels)}")
    kinds = {c["spec"]["names"]["kind"] for c in crds}
    missing = {"GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant",
               "TLSRoute", "TCPRoute", "ListenerSet"} - kinds
    if missing or len(established) != len(crds):
        raise ConformanceRunError(f"Gateway API CRDs missing or not established: "
                                  f"{sorted(missing)}")
    try:
        gc = lc.get(f"/apis/gateway.networking.k8s.io/v1/gatewayclasses/{gateway_class}")
    except urllib.error.HTTPError as exc:  # the suite says the rest (--set may drop it)
        return [*lines, f"GatewayClass {gateway_class}: HTTP {exc.code}"]
    conds = ", ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason')})"
                      for c in (gc.get("status") or {}).get("conditions") or [])
    features = [f.get("name") for f in (gc.get("status") or {}).get("supportedFeatures") or []]
    lines.append(f"GatewayClass {gateway_class}: controllerName "
                 f"{gc['spec']['controllerName']}; {conds or 'no conditions'}; "
                 f"{len(features)} supported features published")
    return lines


def start_client_relay(lc: LabCluster, workdir: Path) -> tuple[Relay, Path]:
    """A relay listening on the client namespace's loopback to the API server, and an admin
    kubeconfig naming it (the serving certificate names 127.0.0.1)."""
    assert lc.lab is not None
    cp = lc.cp
    relay = Relay(upstream=(cp.host, cp.port), listen=("127.0.0.1", 0),
                  listen_ns=lc.lab.client).start()
    kubeconfig = pki.kubeconfig(workdir / "client.kubeconfig", relay.url, cp.ca.pem,
                                user="admin", client=cp.admin_client)
    return relay, kubeconfig


def run_suite(lc: LabCluster, options: SuiteOptions, workdir: Path, log: Path) -> int:
    assert lc.lab is not None
    binary = binaries.binary("gateway-conformance.test")
    relay, kubeconfig = start_client_relay(lc, workdir)
    argv = suite_argv(binary, options)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir),
           "KUBECONFIG": str(kubeconfig)}
    (workdir / "suite-argv.txt").write_text(" ".join(argv) + "\n")
    print(f"suite: {' '.join(argv[1:])}", flush=True)
    print(f"suite: in namespace {lc.lab.client}, go test log {log}", flush=True)
    t0 = time.monotonic()
    with log.open("wb") as fh:
        # `ip netns exec` execs the binary: the Popen PID is the suite's own.
        proc = subprocess.Popen(["ip", "netns", "exec", lc.lab.client, *argv], cwd=workdir,
                                stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    (workdir / "suite.pid").write_text(f"{proc.pid}\n")
    try:
        limit = _seconds(options.timeout) + 60.0
        rc = _wait_echoing(proc, log, limit, echo_skipped=not options.run_test)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        relay.stop()
    if options.report is not None and options.report.exists():
        options.report.chmod(0o644)  # the suite writes it 0600; it is a document
    print(f"suite: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
    return rc


def _seconds(go_duration: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(h|m|s)", go_duration):
        total += float(num) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total or 3600.0


def _wait_echoing(proc: subprocess.Popen[bytes], log: Path, limit: float,
                  echo_skipped: bool = True) -> int:
    """Wait for the suite, echoing which test starts (``go test -v`` prints the suite's
    results only when TestConformance ends) and any result line as it comes."""
    deadline = time.monotonic() + limit
    seen = 0
    while True:
        rc = proc.poll()
        with contextlib.suppress(OSError), log.open("rb") as f:
            f.seek(seen)
            chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            seen += cut
            for line in chunk[:cut].decode("utf-8", "replace").splitlines():
                started = _STARTED.match(line)
                if started and echo_skipped:
                    print(f"  run   {started.group(1)}", flush=True)
                m = _RESULT.match(line)
                if m and m.group(2).count("/") == 1 and (echo_skipped or
                                                          m.group(1) != "SKIP"):
                    print(f"  {m.group(1):4}  {m.group(2).split('/', 1)[1]}  "
                          f"({float(m.group(3)):.1f} s)", flush=True)
        if rc is not None:
            return rc
        if time.monotonic() > deadline:
            raise ConformanceRunError(f"the suite ran longer than {limit:.0f} s")
        time.sleep(1.0)


def print_report(path: Path) -> None:
    if not path.exists():
        print(f"report: none written ({path})")
        return
    doc = yaml.safe_load(path.read_text())
    print(f"report: {path}")
    for prof in doc.get("profiles") or []:
        core = prof.get("core") or {}
        stats = core.get("statistics") or {}
        ext = prof.get("extended") or {}
        print(f"  {prof.get('name')}: core {core.get('result')} "
              f"(passed {stats.get('Passed', 0)}, failed {stats.get('Failed', 0)}, "
              f"skipped {stats.get('Skipped', 0)}); extended {ext.get('result', '-')}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m lab.gateway_conformance",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--run-test", default="", metavar="NAME",
                    help="run one test (its ShortName, e.g. HTTPRouteSimpleSameNamespace)")
    ap.add_argument("--skip-tests", default="", metavar="A,B", help="tests to skip")
    ap.add_argument("--profiles", default=",".join(PROFILES),
                    help=f"conformance profiles (default {','.join(PROFILES)})")
    ap.add_argument("--supported-features", default="", metavar="A,B",
                    help="features to test (default: inferred from the GatewayClass status)")
    ap.add_argument("--exempt-features", default="", metavar="A,B")
    ap.add_argument("--all-features", action="store_true")
    ap.add_argument("--report", type=Path, default=None,
                    help=f"report file (default: {REPORT.relative_to(REPO)} for a full run, "
                         "the run directory otherwise)")
    ap.add_argument("--timeout", default=SUITE_TIMEOUT, help="the suite's -test.timeout")
    ap.add_argument("--debug", action="store_true", help="the suite's -debug")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a chart value over the runner's (dotted key, YAML value)")
    ap.add_argument("--skip-backend-check", action="store_true",
                    help="do not check the suite's backends on their own first")
    ap.add_argument("--backends-only", action="store_true",
                    help="check the backends, then stop (no suite)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the lab's and the control plane's logs")
    ap.add_argument("--suite-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for the test binary (e.g. -fail-fast)")
    return ap.parse_args(argv)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGINT, which a shell's background job inherits ignored) tear the lab
    # down like Ctrl-C: the suite by its PID, then the cluster (context managers).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if os.geteuid() != 0:
        print("gateway-conformance: needs root (network namespaces)", file=sys.stderr)
        return 2
    try:
        binaries.binary("gateway-conformance.test")
        binaries.binary("echo-basic")
        base = binaries.product_dir(binaries.product("gateway-api")) / "base" / "manifests.yaml"
        if not base.exists():
            raise binaries.BuildError(f"{base} missing: run `make binaries`")
    except binaries.BuildError as exc:
        print(f"gateway-conformance: {exc}", file=sys.stderr)
        return 2
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix=f"portico-gateway-conformance-{stamp}-"))
    log = workdir / "go-test.log"
    partial = bool(args.run_test or args.skip_tests)
    report = args.report or (workdir / "report.yaml" if partial else REPORT)
    report.parent.mkdir(parents=True, exist_ok=True)
    options = SuiteOptions(profiles=tuple(p for p in args.profiles.split(",") if p),
                           report=report.resolve(), run_test=args.run_test,
                           skip_tests=args.skip_tests,
                           supported_features=args.supported_features,
                           exempt_features=args.exempt_features,
                           all_features=args.all_features, debug=args.debug,
                           timeout=args.timeout, extra=list(args.suite_arg))
    print(f"gateway-conformance: Gateway API {VERSION} suite; run directory {workdir}",
          flush=True)
    t0 = time.monotonic()
    rc = 1
    try:
        values = helm_values(args.set)
        with LabCluster(values=values, keep_logs=lambda: args.keep_logs) as lc:
            print(f"lab cluster up in {time.monotonic() - t0:.0f} s: "
                  f"{json.dumps(lc.figures)}", flush=True)
            for line in check_gateway_api(lc, options.gateway_class):
                print(line, flush=True)
            if not args.skip_backend_check or args.backends_only:
                check = BackendCheck(lc, base, workdir)
                try:
                    probes = check.run()
                finally:
                    check.delete()
                bad = [p for p in probes if not p.ok]
                print(f"backends: every pod Running and Ready in "
                      f"{check.figures.get('backends_ready_s')} s; {len(probes) - len(bad)}/"
                      f"{len(probes)} Service ports answer through their ClusterIP:", flush=True)
                for p in probes:
                    print(f"  {'ok  ' if p.ok else 'FAIL'}  {p.service}  {p.what}: {p.detail}")
                if bad:
                    raise ConformanceRunError(f"{len(bad)} backend probes failed")
                if args.backends_only:
                    return 0
            rc = run_suite(lc, options, workdir, log)
    except (ConformanceRunError, LabClusterError, ValueError) as exc:
        print(f"gateway-conformance: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gateway-conformance: interrupted (lab torn down)", file=sys.stderr)
        return 130
    finally:
        print(f"gateway-conformance: {time.monotonic() - t0:.0f} s in all", flush=True)
    text = log.read_text(errors="replace") if log.exists() else ""
    results = parse_results(text)
    print("results:")
    for line in summary(results, list_skipped=not args.run_test):
        print(line)
    if not {k for k in results if k}:
        why = setup_failure(text)
        print(f"no test ran: {why or 'see the log'}")
    print_report(report)
    print(f"go test log: {log}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
