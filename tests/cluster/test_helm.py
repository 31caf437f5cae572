"""`helm install`, `helm upgrade` and `helm uninstall` of charts/portico with the real Helm CLI
(v4: server-side apply with strict field validation) against the real kube-apiserver.

What is expected on the server is derived from what Helm says it applied (`helm get
manifest`), never from a hand-kept list. Each test installs its own release into a namespace
of its own; the fixture's finaliser uninstalls it and deletes what is left of it (cluster-scoped
objects, the namespace); the module's finaliser waits until the namespaces are gone, then
deletes the chart's CRDs if they did not exist before the module (the session's `crds`
fixture may have made them: the tests pass either way).
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.controlplane import binaries, chart
from lab.controlplane.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "portico"
RELEASE = "portico-helm"
# Cluster-scoped names must not collide with another Portico install sharing the session's
# control plane, so the IngressClass gets this release's name instead of the chart's default.
BASE_ARGS = ("--set", f"ingress.ingressClass.name={RELEASE}")
HELM_TIMEOUT = 120.0  # seconds for one helm command; none of them waits for pods
GONE_TIMEOUT = 60.0  # seconds for deletions (namespace controller, garbage collector)
_namespaces = itertools.count(1)

Obj = dict[str, Any]


def chart_crd_names() -> list[str]:
    return sorted(yaml.safe_load(p.read_text())["metadata"]["name"]
                  for p in (CHART / "crds").glob("*.yaml"))


def deadline_loop(timeout: float, what: str, check: Callable[[], bool],
                  interval: float = 0.1) -> None:
    """Polls ``check`` until it is true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(interval)


# ---- the server ---------------------------------------------------------------------------


class Server:
    """Admin reads of arbitrary kinds; resource paths come from the server's discovery."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self._discovery: dict[str, dict[str, tuple[str, bool]]] = {}

    def _resources(self, api_version: str) -> dict[str, tuple[str, bool]]:
        """kind -> (plural, namespaced) of one group/version."""
        if api_version not in self._discovery:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            found = self.cp.api("GET", base)["resources"]
            self._discovery[api_version] = {
                r["kind"]: (r["name"], bool(r["namespaced"]))
                for r in found if "/" not in r["name"]}
        return self._discovery[api_version]

    def collection(self, api_version: str, kind: str, namespace: str | None) -> str:
        plural, namespaced = self._resources(api_version)[kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        return f"{base}/namespaces/{namespace}/{plural}" if namespaced else f"{base}/{plural}"

    def path(self, doc: Obj) -> str:
        meta = doc["metadata"]
        collection = self.collection(doc["apiVersion"], doc["kind"], meta.get("namespace"))
        return f"{collection}/{meta['name']}"

    def get(self, path: str) -> Obj | None:
        try:
            found: Obj = self.cp.api("GET", path)
            return found
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def delete(self, path: str) -> None:
        try:
            self.cp.api("DELETE", path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def dry_run_apply(self, doc: Obj) -> tuple[int, str]:
        """(HTTP status, message) of a server-side apply of ``doc`` as Helm would send it."""
        query = "dryRun=All&fieldManager=helm&fieldValidation=Strict&force=false"
        try:
            self.cp.api("PATCH", f"{self.path(doc)}?{query}", doc,
                        content_type="application/apply-patch+yaml")
            return 200, ""
        except urllib.error.HTTPError as exc:
            return exc.code, str(json.loads(exc.read() or b"{}").get("message", ""))

    def crd_exists(self, name: str) -> bool:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        return self.get(path) is not None


def objects(manifest: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(manifest) if d]


def key(doc: Obj) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']} {meta.get('namespace', '')}/{meta['name']}"


def mismatches(want: Any, have: Any, where: str = "") -> list[str]:
    """Where ``have`` (the server's object) lacks or differs from a field of ``want``."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [f"{where or '.'}: {have!r} on the server, not an object"]
        out = []
        for k, v in want.items():
            if k not in have:
                out.append(f"{where}.{k}: missing on the server")
            else:
                out += mismatches(v, have[k], f"{where}.{k}")
        return out
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return [f"{where}: {have!r} on the server, rendered {want!r}"]
        return [m for i, (w, h) in enumerate(zip(want, have, strict=True))
                for m in mismatches(w, h, f"{where}[{i}]")]
    return [] if want == have else [f"{where}: {have!r} on the server, rendered {want!r}"]


# ---- helm ---------------------------------------------------------------------------------


@dataclass
class Helm:
    binary: Path
    env: dict[str, str]
    namespace: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *args, "--namespace", self.namespace],
                              env=self.env, capture_output=True, text=True,
                              timeout=HELM_TIMEOUT, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--output", "json").stdout)


@dataclass
class Release:
    """One Helm release of charts/portico in its own namespace, with server access."""

    helm: Helm
    server: Server
    name: str = RELEASE

    @property
    def namespace(self) -> str:
        return self.helm.namespace

    def install(self, *args: str) -> Any:
        return self.helm.json("install", self.name, str(CHART), "--create-namespace",
                              "--hide-notes", *BASE_ARGS, *args)

    def upgrade(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.helm.run("upgrade", self.name, str(CHART), "--hide-notes", *BASE_ARGS,
                             *args, check=check)

    def status(self) -> Any:
        return self.helm.json("status", self.name)

    def history(self) -> list[tuple[int, str]]:
        return [(int(r["revision"]), str(r["status"]))
                for r in self.helm.json("history", self.name)]

    def manifest(self) -> list[Obj]:
        return objects(self.helm.run("get", "manifest", self.name).stdout)

    def live(self, doc: Obj) -> Obj:
        found = self.server.get(self.server.path(doc))
        assert found is not None, f"{key(doc)} is not on the server"
        return found

    def workload(self, kind: str, suffix: str) -> Obj:
        doc = {"apiVersion": "apps/v1", "kind": kind,
               "metadata": {"name": f"{self.name}-{suffix}", "namespace": self.namespace}}
        return self.live(doc)

    def leftovers(self) -> list[str]:
        """Cluster-scoped objects of this release still on the server."""
        selector = urllib.parse.quote(f"app.kubernetes.io/instance={self.name}")
        out = []
        for api_version, kind in (("rbac.authorization.k8s.io/v1", "ClusterRole"),
                                  ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                                  ("networking.k8s.io/v1", "IngressClass")):
            path = self.server.collection(api_version, kind, None)
            for item in self.server.cp.api("GET", f"{path}?labelSelector={selector}")["items"]:
                out.append(f"{path}/{item['metadata']['name']}")
        return out

    def clean_up(self) -> None:
        """Uninstall, then remove whatever is left even when the uninstall failed; the
        namespace's deletion is only started (the module's finaliser waits for it)."""
        self.helm.run("uninstall", self.name, "--ignore-not-found", "--wait",
                      "--timeout", f"{int(GONE_TIMEOUT)}s", check=False)
        for path in self.leftovers():
            self.server.delete(path)
        self.server.delete(f"/api/v1/namespaces/{self.namespace}")


@dataclass
class Cleanup:
    """What the module's tests leave for the end: namespaces being deleted, and the chart's
    CRDs when they did not exist before the module (Helm creates, never deletes them)."""

    server: Server
    crds_before: set[str]
    namespaces: list[str] = field(default_factory=list)

    def finish(self) -> None:
        # Namespaces first: the namespace controller's discovery fails (and backs off) while
        # a CRD of a group is going away.
        ns_paths = [f"/api/v1/namespaces/{ns}" for ns in self.namespaces]
        deadline_loop(GONE_TIMEOUT, "the tests' namespaces deleted",
                      lambda: all(self.server.get(p) is None for p in ns_paths), interval=0.2)
        crd_paths = [f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}"
                     for n in chart_crd_names() if n not in self.crds_before]
        for path in crd_paths:
            self.server.delete(path)
        deadline_loop(GONE_TIMEOUT, "CRDs the tests' installs created deleted",
                      lambda: all(self.server.get(p) is None for p in crd_paths), interval=0.2)


@pytest.fixture(scope="module")
def cleanup(control_plane: ControlPlane) -> Iterator[Cleanup]:
    server = Server(control_plane)
    done = Cleanup(server, {n for n in chart_crd_names() if server.crd_exists(n)})
    try:
        yield done
    finally:
        done.finish()


@pytest.fixture(scope="module")
def helm_env(control_plane: ControlPlane,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Helm's environment, isolated: its own HOME and XDG/Helm directories, the admin
    kubeconfig of the session's control plane and nothing else from the caller."""
    return chart.helm_env(tmp_path_factory.mktemp("helm-home"), control_plane.kubeconfig)


@pytest.fixture
def release(cleanup: Cleanup, helm_env: dict[str, str]) -> Iterator[Release]:
    namespace = f"{RELEASE}-{next(_namespaces)}"
    cleanup.namespaces.append(namespace)
    rel = Release(Helm(binaries.binary("helm"), helm_env, namespace), cleanup.server)
    try:
        yield rel
    finally:
        rel.clean_up()


# ---- the tests ----------------------------------------------------------------------------


def assert_on_server_as_rendered(rel: Release, docs: list[Obj]) -> None:
    """Every rendered object exists, belongs to the release, was applied server-side by Helm
    and holds every rendered field with the rendered value (nothing pruned or rejected)."""
    problems = []
    for doc in docs:
        live = rel.live(doc)
        meta = live["metadata"]
        annotations = meta.get("annotations") or {}
        assert annotations.get("meta.helm.sh/release-name") == rel.name, key(doc)
        assert annotations.get("meta.helm.sh/release-namespace") == rel.namespace, key(doc)
        assert any(m.get("manager") == "helm" and m.get("operation") == "Apply"
                   for m in meta.get("managedFields") or []), f"{key(doc)}: no helm Apply"
        problems += [f"{key(doc)} {m}" for m in mismatches(doc, live)]
    assert problems == []


def test_install_creates_every_rendered_object(release: Release,
                                               control_plane: ControlPlane) -> None:
    seen_before = sum(1 for _ in control_plane.audit_events())
    out = release.install()
    assert out["info"]["status"] == "deployed"
    assert out["version"] == 1
    assert out["apply_method"] == "ssa"
    # Established whether this install created the CRDs or found them (Helm skips existing
    # CRDs of crds/, e.g. from the session's `crds` fixture).
    for name in chart_crd_names():
        control_plane.wait_crd_established(name)

    docs = release.manifest()
    kinds = {d["kind"] for d in docs}
    # A guard against an empty or partial manifest, not the expected list (that is `docs`).
    assert {"Deployment", "DaemonSet", "Service", "ServiceAccount", "ClusterRole",
            "ClusterRoleBinding", "Role", "RoleBinding", "IngressClass",
            "PodDisruptionBudget"} <= kinds
    assert_on_server_as_rendered(release, docs)

    # Server-side validation: every write Helm made to an object of the release was a
    # server-side apply with strict field validation, and the server accepted it.
    wanted = {release.server.path(d) for d in docs}
    applied = set()
    for event in itertools.islice(control_plane.audit_events(), seen_before, None):
        uri = str(event.get("requestURI", ""))
        path = uri.split("?")[0]
        if not str(event.get("userAgent", "")).startswith("Helm/") or path not in wanted:
            continue
        assert event["verb"] == "patch", f"{event['verb']} {uri}"
        query = urllib.parse.parse_qs(uri.partition("?")[2])
        assert query.get("fieldManager") == ["helm"], uri
        assert query.get("fieldValidation") == ["Strict"], uri
        assert event["responseStatus"]["code"] < 300, (uri, event["responseStatus"])
        applied.add(path)
    assert applied == wanted

    status = release.status()
    assert (status["info"]["status"], status["version"]) == ("deployed", 1)
    assert release.history() == [(1, "deployed")]


def test_upgrade_with_changed_values_changes_the_server_objects(release: Release,
                                                                tmp_path: Path) -> None:
    release.install()
    controller = release.workload("Deployment", "controller")
    speaker = release.workload("DaemonSet", "speaker")
    assert controller["spec"]["replicas"] == 2
    assert "--log-level=info" in controller["spec"]["template"]["spec"]["containers"][0]["args"]
    assert speaker["spec"]["template"]["spec"]["tolerations"]
    # The speakers' heartbeat key was generated at install; an operator rotates it by editing
    # the Secret (docs/speaker.md): the upgrade must keep the live value (chart `lookup`).
    liveness = release.live({"apiVersion": "v1", "kind": "Secret",
                             "metadata": {"name": f"{release.name}-speaker-liveness",
                                          "namespace": release.namespace}})
    assert len(base64.b64decode(liveness["data"]["keys"]).strip()) == 64
    rotated = base64.b64encode(b"rotated-by-the-operator-" + b"k" * 40 + b"\n").decode()
    release.server.cp.api("PATCH", release.server.path(liveness), {"data": {"keys": rotated}},
                          content_type="application/merge-patch+json")

    values = tmp_path / "upgrade.yaml"
    values.write_text(yaml.safe_dump({
        "logLevel": "debug",
        "controller": {"replicas": 1},
        "speaker": {"tolerateControlPlane": False, "livenessPort": 7947,
                    "terminationGracePeriodSeconds": 20},
    }))
    release.upgrade("--values", str(values))

    status = release.status()
    assert (status["info"]["status"], status["version"]) == ("deployed", 2)
    assert release.history() == [(1, "superseded"), (2, "deployed")]
    assert_on_server_as_rendered(release, release.manifest())

    controller = release.workload("Deployment", "controller")
    assert controller["spec"]["replicas"] == 1
    for workload in (controller, release.workload("Deployment", "ingress"),
                     release.workload("DaemonSet", "speaker")):
        args = workload["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--log-level=debug" in args, workload["metadata"]["name"]
        assert "--log-level=info" not in args
    speaker = release.workload("DaemonSet", "speaker")
    pod = speaker["spec"]["template"]["spec"]
    # Removed from the rendered object, so removed from the server (Helm's field manager
    # owned the list: server-side apply drops what the new apply no longer sets).
    assert "tolerations" not in pod
    assert pod["terminationGracePeriodSeconds"] == 20
    assert "--liveness-port=7947" in pod["containers"][0]["args"]
    assert {"name": "liveness", "containerPort": 7947, "protocol": "UDP"} in [
        {k: p[k] for k in ("name", "containerPort", "protocol")}
        for p in pod["containers"][0]["ports"]]
    assert speaker["metadata"]["generation"] == 2
    assert release.live(liveness)["data"]["keys"] == rotated


@pytest.mark.parametrize(("args", "complaint"), [
    (("--set", "controller.replicas=0"), "/controller/replicas"),
    (("--set", "logLevel=verbose"), "/logLevel"),
    (("--set", "controller.replica=1"), "replica"),
    (("--set", "ingress.kind=StatefulSet"), "/ingress/kind"),
], ids=["replicas-0", "logLevel-verbose", "unknown-key", "ingress-kind"])
def test_upgrade_with_an_invalid_value_is_refused_and_revision_2_stays(
        release: Release, args: tuple[str, ...], complaint: str) -> None:
    release.install()
    release.upgrade("--set", "controller.replicas=1")
    before = release.workload("Deployment", "controller")

    refused = release.upgrade(*args, check=False)
    assert refused.returncode != 0
    assert "values don't meet the specifications of the schema" in refused.stderr
    assert complaint in refused.stderr

    status = release.status()
    assert (status["info"]["status"], status["version"]) == ("deployed", 2)
    assert release.history() == [(1, "superseded"), (2, "deployed")]
    after = release.workload("Deployment", "controller")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]


# (install args, upgrade args, the value named, kind and name suffix of the object that
# holds the immutable field)
IMMUTABLE = [
    pytest.param((), ("--set", "loadBalancerClass=portico.dev/lb"), "loadBalancerClass",
                 "Service", "ingress", id="service-loadBalancerClass"),
    pytest.param((), ("--set", "ingress.ingressClass.controllerName=example.test/other"),
                 "ingress.ingressClass.controllerName", "IngressClass", "",
                 id="ingressclass-controller"),
    pytest.param(("--set", f"fullnameOverride={RELEASE}"),
                 ("--set", f"fullnameOverride={RELEASE}", "--set", "nameOverride=edge"),
                 "nameOverride", "Deployment", "controller", id="workload-selector"),
]


@pytest.mark.parametrize(("install_args", "upgrade_args", "value", "kind", "suffix"),
                         IMMUTABLE)
def test_upgrade_changing_an_immutable_field_is_refused_before_anything_is_applied(
        release: Release, install_args: tuple[str, ...], upgrade_args: tuple[str, ...],
        value: str, kind: str, suffix: str) -> None:
    release.install(*install_args)
    docs = release.manifest()
    generations = {key(d): release.live(d)["metadata"].get("generation") for d in docs}

    # The real server refuses the changed object (the reason for the chart's check) ...
    rendered = objects(release.helm.run("template", release.name, str(CHART), *BASE_ARGS,
                                        *upgrade_args).stdout)
    target = next(d for d in rendered if d["kind"] == kind
                  and d["metadata"]["name"].endswith(suffix))
    code, message = release.server.dry_run_apply(target)
    assert code == 422, message
    assert "immutable" in message or "may not change" in message, message

    # ... and the chart refuses the upgrade while rendering, naming the value: no object is
    # touched and no failed revision is recorded.
    refused = release.upgrade(*upgrade_args, check=False)
    assert refused.returncode != 0
    assert f"{value} cannot change on an installed release" in refused.stderr, refused.stderr
    assert release.history() == [(1, "deployed")]
    assert {key(d): release.live(d)["metadata"].get("generation") for d in docs} == generations
    assert_on_server_as_rendered(release, docs)


def test_capabilities_kube_version_is_the_servers(release: Release,
                                                  control_plane: ControlPlane,
                                                  tmp_path: Path) -> None:
    """The chart itself uses the Kubernetes version only through Chart.yaml's kubeVersion;
    a copy with a probe template shows what `.Capabilities.KubeVersion` holds."""
    server_version = control_plane.api("GET", "/version")["gitVersion"]
    assert server_version == binaries.KUBERNETES_VERSION
    offline_version = ".".join(server_version.split(".")[:2]) + ".0"
    assert offline_version != server_version  # the checks below could not tell them apart

    chart = tmp_path / "portico"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kube-version-probe\n"
        "  namespace: {{ .Release.Namespace }}\n"
        "data:\n  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n")
    helm = release.helm

    def probe(*args: str) -> str:
        out = helm.run("template", release.name, str(chart), "--show-only",
                       "templates/zz-probe.yaml", *args).stdout
        return str(objects(out)[0]["data"]["kubeVersion"])

    assert probe("--dry-run=server") == server_version
    assert probe() == offline_version  # no server: Helm's built-in default

    # The real chart's constraint holds against the real server (a server-side dry run
    # renders with the server's version and lookups, and writes nothing) ...
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["kubeVersion"] == ">=1.27.0-0"
    dry = helm.json("install", release.name, str(CHART), "--dry-run=server", *BASE_ARGS)
    assert dry["info"]["status"] == "pending-install"
    # ... and is honoured: a Kubernetes below it is refused.
    old = helm.run("template", release.name, str(CHART), "--kube-version", "v1.26.15",
                   check=False)
    assert old.returncode != 0
    assert "kubeVersion: >=1.27.0-0 which is incompatible with Kubernetes v1.26.15" in old.stderr

    # A constraint between the offline default and the server's version: Helm must use the
    # server's (v1.37.2) when it has a cluster, and the server's patch release counts.
    def with_constraint(constraint: str) -> Path:
        meta2 = copy.deepcopy(meta)
        meta2["kubeVersion"] = constraint
        (chart / "Chart.yaml").write_text(yaml.safe_dump(meta2))
        return chart

    between = with_constraint(f">={server_version[1:]}-0")
    offline = helm.run("template", release.name, str(between), check=False)
    assert offline.returncode != 0
    assert f"incompatible with Kubernetes {offline_version}" in offline.stderr
    assert helm.json("install", release.name, str(between), "--dry-run=server",
                     *BASE_ARGS)["info"]["status"] == "pending-install"
    major_minor, _, patch = server_version[1:].rpartition(".")
    above = with_constraint(f">={major_minor}.{int(patch) + 1}-0")
    refused = helm.run("install", release.name, str(above), "--dry-run=server", *BASE_ARGS,
                       check=False)
    assert refused.returncode != 0
    assert f"incompatible with Kubernetes {server_version}" in refused.stderr
    # Dry runs leave nothing behind.
    assert release.server.get(f"/api/v1/namespaces/{release.namespace}") is None


def test_uninstall_removes_every_object_and_a_second_install_works(
        release: Release, control_plane: ControlPlane) -> None:
    release.install()
    docs = release.manifest()
    assert_on_server_as_rendered(release, docs)
    paths = {key(d): release.server.path(d) for d in docs}
    assert any("/namespaces/" not in p for p in paths.values()), "no cluster-scoped object?"

    out = release.helm.run("uninstall", release.name, "--wait", "--timeout",
                           f"{int(GONE_TIMEOUT)}s")
    assert f'release "{release.name}" uninstalled' in out.stdout

    def remaining() -> list[str]:
        return [k for k, p in paths.items() if release.server.get(p) is not None]

    deadline_loop(GONE_TIMEOUT, "release objects deleted", lambda: remaining() == [])
    assert release.leftovers() == []
    # What the workloads made goes too (the garbage collector follows ownerReferences).
    selector = urllib.parse.quote(f"app.kubernetes.io/instance={release.name}")
    owned = [f"/api/v1/namespaces/{release.namespace}/pods",
             f"/apis/apps/v1/namespaces/{release.namespace}/replicasets",
             f"/apis/apps/v1/namespaces/{release.namespace}/controllerrevisions"]
    deadline_loop(GONE_TIMEOUT, "pods, ReplicaSets, ControllerRevisions collected",
                  lambda: all(not control_plane.api("GET", f"{p}?labelSelector={selector}")
                              ["items"] for p in owned), interval=0.2)
    # Helm's release records are gone; the CRDs stay (Helm never deletes crds/ CRDs).
    records = control_plane.api(
        "GET", f"/api/v1/namespaces/{release.namespace}/secrets?labelSelector="
        + urllib.parse.quote(f"owner=helm,name={release.name}"))["items"]
    assert records == []
    assert release.helm.json("list") == []
    for name in chart_crd_names():
        assert release.server.crd_exists(name), name

    again = release.install()
    assert (again["info"]["status"], again["version"]) == ("deployed", 1)
    # The same objects, but for the speakers' liveness key: a fresh install generates a new
    # one (a reinstall is a new cluster identity; an upgrade keeps it, see below).
    assert _masked(release.manifest()) == _masked(docs)
    docs = release.manifest()
    assert_on_server_as_rendered(release, docs)
    assert release.history() == [(1, "deployed")]


def _masked(docs: list[Obj]) -> list[Obj]:
    """Manifests with the generated liveness key of the speakers' Secret blanked out."""
    out = []
    for d in docs:
        if d.get("kind") == "Secret" and str(d["metadata"]["name"]).endswith("-liveness"):
            d = {**d, "data": {k: "<generated>" for k in d.get("data") or {}},
                 "stringData": {k: "<generated>" for k in d.get("stringData") or {}}}
        out.append(d)
    return out

