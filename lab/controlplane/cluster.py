"""etcd + kube-apiserver + kube-controller-manager + kube-scheduler, started in one call.

``ControlPlane.start()`` makes a CA, certificates, the service-account key pair and an admin
kubeconfig in a fresh run directory, starts each component as a child process with free
loopback ports, waits for ``/readyz``, and returns. ``stop()`` ends each process by its
recorded PID (SIGTERM, then SIGKILL) and removes the run directory unless ``keep_logs``.
``restart(component)`` / ``kill(component)`` / ``start_component(component)`` are the real
faults the tests use (an apiserver or etcd restart with the same data and ports).

Addresses: everything listens on 127.0.0.1 (or on ``bind`` given by a lab namespace's
caller); the service CIDR is from the benchmarking range 198.18.0.0/15 (its upper /16), big
enough for a 10,000-Service benchmark (every Service gets a ClusterIP).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.controlplane import binaries, pki

# Dual stack, like the clusters Portico serves: an IPv4 /16 from the benchmarking range (room
# for a 10,000-Service benchmark: every Service gets a ClusterIP) and an IPv6 /108 (the
# largest the IPv6 service allocator takes) from the documentation range.
CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "portico" / "crds"
SERVICE_CIDR = "198.19.0.0/16,2001:db8:5e::/108"
FIRST_SERVICE_IP = "198.19.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

# Audit everything that writes (Metadata level: who, what, which object, the response code);
# reads are not logged. Tests count a component's writes from this file, on the server side.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  verbs: ["get", "list", "watch"]
- level: Metadata
"""


@contextlib.contextmanager
def running(keep_logs: Callable[[], bool] = lambda: False, crds: bool = True,
            **kwargs: Any) -> Iterator[ControlPlane]:
    """A started control plane (Portico's CRDs installed unless ``crds=False``), stopped on
    exit; its logs are kept when ``keep_logs()`` says so then (e.g. a test failed) or when
    the block raised. ``kwargs`` go to ControlPlane."""
    cp = ControlPlane(**kwargs).start()
    failed = True
    try:
        if crds:
            cp.install_portico_crds()
        yield cp
        failed = False
    finally:
        cp.keep_logs = cp.keep_logs or failed or keep_logs()
        cp.stop()


def _poll(check: Callable[[], bool], timeout: float, what: str,
          interval: float = 0.1) -> None:
    """Call ``check`` until it returns True; ControlPlaneError naming ``what`` at the
    deadline. ``check`` may raise ControlPlaneError itself (a component died) to stop early;
    OSError (URLError, refused connections) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            if check():
                return
        except OSError as exc:
            last = f": {exc}"
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"{what} not ready in {timeout} s{last}")
        time.sleep(interval)


def _crd_path(name: str) -> str:
    return f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"


class ControlPlaneError(Exception):
    """A component did not start or become ready; the message names it and its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class ControlPlane:
    host: str = "127.0.0.1"
    extra_sans: tuple[str, ...] = ()
    keep_logs: bool = False
    apiserver_args: tuple[str, ...] = ()
    # e.g. ("--node-monitor-grace-period=4s", "--node-monitor-period=1s"): the node lifecycle
    # controller gives up on a silent node in seconds (tests of node agents).
    controller_manager_args: tuple[str, ...] = ()
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="portico-cp-")))
    procs: dict[str, Proc] = field(default_factory=dict)

    # ---- set up -------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.etcd_port = free_port(self.host)
        self.etcd_peer_port = free_port(self.host)
        self.port = free_port(self.host)
        self.url = f"https://{self.host}:{self.port}"
        self.etcd_url = f"http://{self.host}:{self.etcd_port}"
        self.audit_log = self.run_dir / "audit.log"

    def _credentials(self) -> None:
        d = self.run_dir
        self.ca = pki.CertificateAuthority(d / "pki")
        ips = ("127.0.0.1", FIRST_SERVICE_IP, self.host, *self.extra_sans)
        self.serving = self.ca.issue(
            "apiserver", "kube-apiserver", server=True,
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"),
            ips=tuple(dict.fromkeys(ips)))
        self.sa = pki.service_account_keys(d / "pki")
        admin = self.ca.issue("admin", "portico-admin", orgs=("system:masters",))
        self.admin_client = admin
        self.kubeconfig = pki.kubeconfig(d / "admin.kubeconfig", self.url, self.ca.pem,
                                         user="admin", client=admin)
        for comp, cn in (("kube-controller-manager", "system:kube-controller-manager"),
                         ("kube-scheduler", "system:kube-scheduler")):
            pair = self.ca.issue(comp, cn)
            pki.kubeconfig(d / f"{comp}.kubeconfig", self.url, self.ca.pem, user=comp,
                           client=pair)
        (d / "audit-policy.yaml").write_text(AUDIT_POLICY)

    def _argv(self, name: str) -> list[str]:
        d = self.run_dir
        if name == "etcd":
            peer = f"http://{self.host}:{self.etcd_peer_port}"
            return [
                str(binaries.binary("etcd")), "--name=lab", f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=lab={peer}",
                # Test data: losing it on a host crash is fine, fsync latency is not.
                "--unsafe-no-fsync", "--log-level=warn",
            ]
        if name == "kube-apiserver":
            return [
                str(binaries.binary("kube-apiserver")),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.host}", f"--secure-port={self.port}",
                f"--advertise-address={self.host}",
                # A loopback advertise address cannot be an endpoint of the `kubernetes`
                # Service; the lab cluster (node agents) gives a routable one instead.
                *(["--endpoint-reconciler-type=none"] if self.host.startswith("127.") else []),
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={self.ca.cert_path}",
                f"--tls-cert-file={self.serving.cert}",
                f"--tls-private-key-file={self.serving.key}",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={self.sa.cert}",
                f"--service-account-signing-key-file={self.sa.key}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--audit-policy-file={d / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json", "--audit-log-mode=blocking",
                "--profiling=false",
                "--v=1",
                *self.apiserver_args,
            ]
        if name == "kube-controller-manager":
            return [
                *self._client_component(name),
                f"--service-account-private-key-file={self.sa.key}",
                f"--root-ca-file={self.ca.cert_path}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                *self.controller_manager_args,
            ]
        if name == "kube-scheduler":
            return self._client_component(name)
        raise ControlPlaneError(f"unknown component {name!r}")

    def _client_component(self, name: str) -> list[str]:
        """Flags of a component that is an API client with its own certificate user and its
        own (loopback) serving port; one instance, so no leader election."""
        kubeconfig = self.run_dir / f"{name}.kubeconfig"
        return [str(binaries.binary(name)), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={self.host}", f"--secure-port={free_port(self.host)}",
                "--leader-elect=false", "--v=1"]

    # ---- processes ----------------------------------------------------------------------------
    def start_component(self, name: str) -> Proc:
        proc = self.procs.get(name)
        if proc is None:
            proc = Proc(name, self._argv(name), self.run_dir / f"{name}.log")
            self.procs[name] = proc
        if proc.alive():
            return proc
        fh = proc.log.open("ab")
        proc.popen = subprocess.Popen(proc.argv, stdout=fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        fh.close()
        (self.run_dir / "pids").open("a").write(f"{name} {proc.pid}\n")
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL, grace: float = 10.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.popen is None:
            return
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.popen.pid, sig)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=grace)

    def start(self, timeout: float = 120.0) -> ControlPlane:
        self._credentials()
        try:
            self.start_component("etcd")
            self.wait_etcd(timeout)
            self.start_component("kube-apiserver")
            self.wait_ready(timeout)
            self.start_component("kube-controller-manager")
            self.start_component("kube-scheduler")
            self.wait_default_service_account(timeout)
        except BaseException:
            self.keep_logs = True
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in reversed(COMPONENTS):
            self.kill(name, signal.SIGTERM, grace=10.0)
        if self.keep_logs:
            print(f"control plane logs kept in {self.run_dir}", flush=True)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.keep_logs = True
        self.stop()

    # ---- readiness ------------------------------------------------------------------------------
    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if not proc.alive():
            tail = proc.log.read_text(errors="replace").splitlines()[-30:]
            raise ControlPlaneError(f"{name} exited ({proc.popen and proc.popen.returncode}); "
                                    f"log {proc.log}:\n" + "\n".join(tail))

    def etcd_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """etcd's v3 JSON gateway (no etcdctl needed)."""
        req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def wait_etcd(self, timeout: float = 60.0) -> None:
        def check() -> bool:
            self._check_alive("etcd")
            self.etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
            return True
        _poll(check, timeout, "etcd")

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        ctx.load_cert_chain(str(self.admin_client.cert), str(self.admin_client.key))
        return ctx

    def api(self, method: str, path: str, body: Any = None,
            content_type: str = "application/json", timeout: float = 30.0) -> Any:
        """A raw admin request; returns the decoded JSON body (HTTPError on >= 400)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        def check() -> bool:
            self._check_alive("kube-apiserver")
            with urllib.request.urlopen(self.url + "/readyz", timeout=5,
                                        context=self.ssl_context()) as r:
                return bool(r.status == 200)
        _poll(check, timeout, "kube-apiserver", interval=0.2)

    def wait_default_service_account(self, timeout: float = 60.0) -> None:
        """The controller-manager is working once it made `default` ServiceAccounts."""
        def check() -> bool:
            self._check_alive("kube-controller-manager")
            self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return True
        _poll(check, timeout, "kube-controller-manager (default ServiceAccount)", interval=0.2)

    # ---- helpers the tests and benches share ----------------------------------------------------
    def service_account_token(self, namespace: str, name: str,
                              seconds: int = 3600) -> str:
        """A bound token of a ServiceAccount (TokenRequest), as a pod would get."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        out = self.api("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                       body)
        return str(out["status"]["token"])

    def token_kubeconfig(self, path: Path, namespace: str, name: str,
                         server: str | None = None) -> tuple[Path, str]:
        """A kubeconfig with a TokenRequest token of ``namespace/name`` (for ``server``, by
        default this control plane's URL); returns (path, token)."""
        token = self.service_account_token(namespace, name)
        return pki.kubeconfig(path, server or self.url, self.ca.pem,
                              user=f"{namespace}-{name}", token=token), token

    def user_kubeconfig(self, path: Path, user: str, groups: tuple[str, ...] = (),
                        server: str | None = None) -> Path:
        """A kubeconfig with a client certificate for ``user`` (audit logs name it)."""
        pair = self.ca.issue(f"user-{user}", user, orgs=groups)
        return pki.kubeconfig(path, server or self.url, self.ca.pem, user=user, client=pair)

    def etcd_revision(self) -> int:
        out = self.etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        return int(out["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision (what the apiserver does every 5 min)."""
        rev = self.etcd_revision()
        self.etcd_call("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def audit_events(self) -> Iterator[dict[str, Any]]:
        if not self.audit_log.exists():
            return
        with self.audit_log.open() as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    yield json.loads(line)

    def apply_crd(self, crd: dict[str, Any]) -> None:
        """Server-side apply of a CustomResourceDefinition (field manager ``portico-lab``).

        A CRD that a previous user of this shared control plane deleted may still be
        terminating (the server first removes its objects): applying to it changes nothing
        and it vanishes moments later, so that deletion is waited out first."""
        name = crd["metadata"]["name"]
        try:
            current = self.api("GET", _crd_path(name))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            current = None
        if current is not None and current.get("metadata", {}).get("deletionTimestamp"):
            self.wait_crd_gone(name)
        path = _crd_path(name) + "?fieldManager=portico-lab&force=true"
        self.api("PATCH", path, crd, content_type="application/apply-patch+yaml")

    def wait_namespace_not_terminating(self, name: str, timeout: float = 60.0) -> None:
        """Return once namespace ``name`` is absent or active: a namespace that an earlier
        user of this shared control plane deleted refuses new objects until it is gone."""
        def usable() -> bool:
            try:
                ns = self.api("GET", f"/api/v1/namespaces/{name}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return True
                raise
            return (ns.get("status") or {}).get("phase") != "Terminating"
        _poll(usable, timeout, f"namespace {name} (not terminating)", interval=0.2)

    def wait_crd_gone(self, name: str, timeout: float = 60.0) -> None:
        def gone() -> bool:
            try:
                self.api("GET", _crd_path(name))
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return True
                raise
            return False
        _poll(gone, timeout, f"CRD {name} (deleted)")

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> None:
        def check() -> bool:
            crd = self.api("GET", _crd_path(name))
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in (crd.get("status") or {}).get("conditions") or [])
        _poll(check, timeout, f"CRD {name} (Established)")

    def install_portico_crds(self) -> list[str]:
        """Apply ``charts/portico/crds/*.yaml`` and wait until each is Established."""
        names = []
        for path in sorted(CRD_DIR.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            self.apply_crd(crd)
            names.append(str(crd["metadata"]["name"]))
        for name in names:
            self.wait_crd_established(name)
        return names

    def pids(self) -> dict[str, int | None]:
        return {n: p.pid for n, p in self.procs.items()}

