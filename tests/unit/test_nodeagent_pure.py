"""The node agent's pure decisions (lab.nodeagent: images, plan, probes, lifecycle, status,
node), with plain data and no clock: the kubelet's rules they follow are named per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.nodeagent import caps, images, lifecycle, node, plan, probes, status
from lab.nodeagent.images import NotMapped, Resolved, Toolbox

REPO = Path(__file__).resolve().parents[2]
BOX = Toolbox(python="/venv/bin/python", bin_dir="/venv/bin", repo="/repo")
CTX = plan.PodContext(node_name="node1", pod_ips=("198.18.1.2", "2001:db8:f0:1::2"),
                      host_ips=("192.0.2.11", "2001:db8:a::11"), api_host="203.0.113.1",
                      api_port=6443, box=BOX, netns="pod-ns",
                      volume_dirs={"tmp": "/state/tmp", "kube-api-access": "/state/sa"},
                      allocatable={"cpu": "2", "memory": "4Gi"})


def pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {"note": 'say "hi"'}},
            "spec": {"containers": containers, "serviceAccountName": "sa", **spec}}


def ok(result: Any) -> Any:
    assert not isinstance(result, plan.Failure | NotMapped), result
    return result


# ---- images ---------------------------------------------------------------------------------

def test_the_chart_image_is_the_one_in_the_table() -> None:
    values = yaml.safe_load((REPO / "charts/portico/values.yaml").read_text())
    assert values["image"]["repository"] == images.PORTICO_REPOSITORY


@pytest.mark.parametrize(("ref", "repo"), [
    ("portico", "portico"), ("portico:0.1.0", "portico"), ("portico@sha256:ab", "portico"),
    ("reg:5000/x/portico:1.2", "reg:5000/x/portico"), ("reg:5000/portico", "reg:5000/portico"),
])
def test_repository_drops_tag_and_digest(ref: str, repo: str) -> None:
    assert images.repository(ref) == repo


def test_kubernetes_command_and_args_rules() -> None:
    # args only: ENTRYPOINT + args; neither: ENTRYPOINT + CMD; command: replaces ENTRYPOINT.
    r = ok(images.resolve("portico:0.1.0", None, ["speaker", "--log-level=info"], BOX))
    assert r.argv == ("/venv/bin/portico", "speaker", "--log-level=info")
    assert ok(images.resolve("portico", None, None, BOX)).argv == ("/venv/bin/portico",
                                                                     "--help")
    r = ok(images.resolve("portico", ["haproxy"], ["-c"], BOX))
    assert r.argv == ("/usr/sbin/haproxy", "-c")
    r = ok(images.resolve("portico-lab/backend", None, ["--port", "80"], BOX))
    assert r.argv == ("/venv/bin/python", "-m", "lab.backend", "--port", "80")
    env = dict(r.env)
    assert env["PATH"].startswith("/venv/bin:") and env["PYTHONPATH"] == "/repo"
    assert "PYTHONPATH" not in dict(ok(images.resolve("portico", None, None, BOX)).env)


def test_unknown_images_and_commands_say_where_the_table_is() -> None:
    r = images.resolve("nginx:1.27", None, None, BOX)
    assert isinstance(r, NotMapped) and r.reason == "ErrImageNotMapped"
    assert '"nginx:1.27"' in r.message and images.TABLE_FILE in r.message
    r = images.resolve("portico", ["/bin/bash"], None, BOX)
    assert isinstance(r, NotMapped) and r.reason == "CreateContainerError"
    assert "/bin/bash" in r.message and images.TABLE_FILE in r.message
    assert isinstance(images.resolve("portico", None, ["x"], BOX), Resolved)


# ---- plan: environment ----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "out"), [
    ("$(A)", "a"), ("x$(A)y", "xay"), ("$$(A)", "$(A)"), ("$(NOPE)", "$(NOPE)"),
    ("$(A", "$(A"), ("$x", "$x"), ("end$", "end$"), ("$$", "$"), ("$(A)$(B)", "ab"),
    ("$()", "$()"),
])
def test_expansion_follows_kubernetes(text: str, out: str) -> None:
    values = {"A": "a", "B": "b"}
    assert plan.expand(text, values.get) == out


def test_env_precedence_references_and_service_variables() -> None:
    c = {"name": "c", "image": "portico",
         "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                     {"secretRef": {"name": "sec"}}],
         "env": [{"name": "CM_a", "value": "override"},
                 {"name": "REF", "value": "$(CM_b)-$(KUBERNETES_SERVICE_HOST)-$(LATER)"},
                 {"name": "LATER", "value": "l"},
                 {"name": "KUBERNETES_SERVICE_PORT", "value": "mine"},
                 {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}},
                 {"name": "TIER", "valueFrom": {"fieldRef": {
                     "fieldPath": "metadata.labels['tier']"}}},
                 {"name": "NOTE", "valueFrom": {"fieldRef": {
                     "fieldPath": "metadata.annotations"}}},
                 {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                 {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k",
                                                                "optional": True}}}]}
    sources = plan.Sources(secrets={"sec": {"pw": b"s3cret", "bad=key": b"x"}},
                           configmaps={"cm": {"a": b"1", "b": b"2"}})
    env = ok(plan.container_env(pod([c]), c, sources, CTX))
    assert env["CM_a"] == "override" and env["CM_b"] == "2" and env["pw"] == "s3cret"
    assert "bad=key" not in env  # not a variable name: skipped, as the kubelet does
    assert env["REF"] == "2-203.0.113.1-$(LATER)"  # only earlier variables expand
    assert env["KUBERNETES_SERVICE_PORT"] == "mine"  # the user's wins
    assert env["KUBERNETES_SERVICE_HOST"] == "203.0.113.1"
    assert env["IP"] == "198.18.1.2" and env["IPS"] == "192.0.2.11,2001:db8:a::11"
    assert env["TIER"] == "front" and env["NOTE"] == 'note="say \\"hi\\""'
    assert "OPT" not in env


@pytest.mark.parametrize(("env", "reason", "words"), [
    ({"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}},
     "CreateContainerConfigError", 'secret "gone" not found'),
    ({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nokey"}}},
     "CreateContainerConfigError", "couldn't find key nokey in Configmap ns/cm"),
    ({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}},
     "CreateContainerConfigError", "unsupported fieldPath: spec.nope"),
])
def test_env_failures_stop_the_container(env: dict[str, Any], reason: str,
                                         words: str) -> None:
    c = {"name": "c", "image": "portico", "env": [env]}
    out = plan.container_env(pod([c]), c, plan.Sources(configmaps={"cm": {}}), CTX)
    assert isinstance(out, plan.Failure) and out.reason == reason and words in out.message


@pytest.mark.parametrize(("quantity", "milli"), [
    ("2", 2000), ("250m", 250), ("1.5Gi", 1536 * 2**20 * 1000), ("1e3", 1_000_000),
    ("0.1", 100), ("64Mi", 64 * 2**20 * 1000), ("1n", 1), ("x", None), ("1.5.5", None),
])
def test_quantities(quantity: str, milli: int | None) -> None:
    assert plan.milli_value(quantity) == milli


def test_resource_field_refs_round_up_and_default_to_allocatable() -> None:
    c = {"name": "c", "image": "portico",
         "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}
    p = pod([c])

    def value(resource: str, divisor: str = "1") -> str | None:
        return plan.resource_value(p, "c", {"resource": resource, "divisor": divisor}, CTX)

    assert value("limits.memory", "1Mi") == "64"
    assert value("requests.cpu", "1m") == "250" and value("requests.cpu") == "1"
    assert value("limits.cpu") == "2"  # no limit: the node's allocatable
    assert value("requests.memory") == "0"
    assert value("limits.gpu") is None


# ---- plan: security context, volumes, the whole container ---------------------------------

def test_credentials_and_capabilities() -> None:
    image = images.IMAGES["portico"]
    c: dict[str, Any] = {"name": "c"}
    creds = ok(plan.credentials(pod([c]), c, image))
    assert (creds.uid, creds.gid) == (10001, 10001)  # the image's USER
    assert creds.caps == caps.RUNTIME_DEFAULT and not creds.no_new_privs
    c = {"name": "c", "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False,
                                          "capabilities": {"drop": ["ALL"],
                                                           "add": ["NET_RAW", "cap_net_admin"]}}}
    creds = ok(plan.credentials(pod([c], securityContext={"fsGroup": 7,
                                                          "supplementalGroups": [5]}),
                                c, image))
    assert (creds.uid, creds.gid, creds.groups) == (0, 0, (5, 7))
    assert creds.caps == {"NET_RAW", "NET_ADMIN"} and creds.no_new_privs
    c = {"name": "c", "securityContext": {"capabilities": {"drop": ["KILL"]}}}
    assert ok(plan.credentials(pod([c]), c, image)).caps == caps.RUNTIME_DEFAULT - {"KILL"}
    c = {"name": "c", "securityContext": {"privileged": True}}
    assert ok(plan.credentials(pod([c]), c, image)).caps is None
    c = {"name": "c", "securityContext": {"runAsUser": 0}}
    out = plan.credentials(pod([c], securityContext={"runAsNonRoot": True}), c, image)
    assert isinstance(out, plan.Failure) and "runAsNonRoot" in out.message
    c = {"name": "c", "securityContext": {"capabilities": {"add": ["WARP_DRIVE"]}}}
    assert isinstance(plan.credentials(pod([c]), c, image), plan.Failure)
    c = {"name": "c", "securityContext": {"runAsUser": 1234}}
    assert ok(plan.credentials(pod([c]), c, image)).gid == 0  # no passwd entry: group 0


SA_VOLUME = {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt",
                                                          "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
        "fieldPath": "metadata.namespace"}}]}}]}}


def test_the_service_account_volume_the_api_server_adds() -> None:
    p = pod([{"name": "c", "image": "portico"}], volumes=[SA_VOLUME, {"name": "tmp",
                                                                      "emptyDir": {}}])
    refs = plan.references(p)
    assert refs.configmaps == {"kube-root-ca.crt"} and not refs.secrets
    assert refs.tokens == (plan.TokenSpec("kube-api-access", "token", "", 3607),)
    missing = plan.volume_contents(p, plan.Sources(configmaps={"kube-root-ca.crt": {
        "ca.crt": b"PEM"}}), CTX)
    assert isinstance(missing, plan.Failure) and missing.reason == "ContainerCreating"
    assert "failed to fetch token" in missing.message
    vols = ok(plan.volume_contents(p, plan.Sources(
        configmaps={"kube-root-ca.crt": {"ca.crt": b"PEM"}},
        tokens={("kube-api-access", "token"): "jwt"}), CTX))
    sa, tmp = vols
    assert {f.path: (f.data, f.mode) for f in sa.files} == {
        "token": (b"jwt", 0o644), "ca.crt": (b"PEM", 0o644), "namespace": (b"ns", 0o644)}
    assert tmp.empty_dir and not tmp.files


def test_volume_items_optional_and_unsupported() -> None:
    vol = {"name": "v", "secret": {"secretName": "s", "defaultMode": 0o400,
                                   "items": [{"key": "a", "path": "dir/a", "mode": 0o600}]}}
    (v,) = ok(plan.volume_contents(pod([], volumes=[vol]),
                                   plan.Sources(secrets={"s": {"a": b"1", "b": b"2"}}), CTX))
    assert [(f.path, f.data, f.mode) for f in v.files] == [("dir/a", b"1", 0o600)]
    vol = {"name": "v", "configMap": {"name": "gone", "optional": True}}
    (v,) = ok(plan.volume_contents(pod([], volumes=[vol]), plan.Sources(), CTX))
    assert v.files == ()
    vol = {"name": "v", "configMap": {"name": "gone"}}
    out = plan.volume_contents(pod([], volumes=[vol]), plan.Sources(), CTX)
    assert isinstance(out, plan.Failure) and 'configmap "gone" not found' in out.message
    out = plan.volume_contents(pod([], volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
                               plan.Sources(), CTX)
    assert isinstance(out, plan.Failure) and "hostPath is not supported" in out.message


def test_a_chart_like_speaker_container_plans_as_the_chart_means_it() -> None:
    c = {"name": "speaker", "image": "portico:0.1.0",
         "args": ["speaker", "--metrics-addr=0.0.0.0:7473", "--state-dir=/var/run/portico"],
         "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {
             "fieldPath": "spec.nodeName"}}}],
         "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
                             "allowPrivilegeEscalation": False,
                             "capabilities": {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}},
         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                          {"name": "kube-api-access", "readOnly": True,
                           "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}
    p = pod([c], hostNetwork=True)
    lp = ok(plan.plan_container(p, c, plan.Sources(), CTX))
    assert lp.argv == ("/venv/bin/portico", "speaker", "--metrics-addr=0.0.0.0:7473",
                       "--state-dir=/var/run/portico")
    env = dict(lp.env)
    assert env["NODE_NAME"] == "node1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HOSTNAME"] == "node1" and env["HOME"] == "/"
    assert (lp.uid, lp.gid, lp.caps, lp.no_new_privs) == (0, 0, {"NET_RAW", "NET_ADMIN"}, True)
    assert lp.hostname is None  # hostNetwork: the node's UTS name
    assert plan.Mount("/state/sa", "/var/run/secrets/kubernetes.io/serviceaccount", True) \
        in lp.mounts
    spec = lp.launcher_spec()
    assert spec["caps"] == ["NET_ADMIN", "NET_RAW"] and spec["netns"] == "pod-ns"
    # Its own network: its own UTS name too.
    assert ok(plan.plan_container(pod([c]), c, plan.Sources(), CTX)).hostname == "p"
    # An exec probe runs with the container's credentials, mounts and environment.
    ex = ok(plan.plan_exec(lp, "portico:0.1.0", ["sh", "-c", "true"], BOX))
    assert ex.argv == ("/bin/sh", "-c", "true") and ex.uid == 0 and ex.mounts == lp.mounts
    bad = dict(c, volumeMounts=[{"name": "tmp", "mountPath": "/x", "subPath": "a"}])
    assert isinstance(plan.plan_container(pod([bad]), bad, plan.Sources(), CTX), plan.Failure)


# ---- probes -----------------------------------------------------------------------------

def spec(kind: str, **kw: Any) -> probes.ProbeSpec:
    out = probes.parse(kind, {"tcpSocket": {"port": 80}, **kw})
    assert out is not None
    return out


def test_probe_defaults_and_named_ports() -> None:
    s = spec(probes.READINESS)
    assert (s.initial_delay, s.period, s.timeout, s.success_threshold,
            s.failure_threshold) == (0, 10, 1, 1, 3)
    assert spec(probes.LIVENESS, successThreshold=5).success_threshold == 1
    http = probes.parse(probes.READINESS, {"httpGet": {"path": "/readyz", "port": "metrics"}})
    assert http is not None and isinstance(http.action, probes.HttpGet)
    container = {"ports": [{"name": "metrics", "containerPort": 7473}]}
    assert probes.port_number("metrics", container) == 7473
    assert probes.port_number(80, container) == 80
    assert probes.port_number("nope", container) is None
    grpc = probes.parse(probes.LIVENESS, {"grpc": {"port": 1}})
    assert grpc is not None and isinstance(grpc.action, probes.Unsupported)


def test_thresholds_move_the_result() -> None:
    s = spec(probes.READINESS, successThreshold=2, failureThreshold=2, periodSeconds=1,
             initialDelaySeconds=5)
    st = probes.initial(s, started=100.0)
    assert st.result is False and st.next_due == 105.0
    assert not probes.due(st, 104.9) and probes.due(st, 105.0)
    st = probes.record(s, probes.begin(st), True, 105.0)
    assert st.result is False and st.next_due == 106.0  # one success of two
    st = probes.record(s, st, True, 106.0)
    assert st.result is True
    st = probes.record(s, st, False, 107.0, "503")
    assert st.result is True and st.message == "503"  # one failure of two
    st = probes.record(s, st, True, 108.0)
    st = probes.record(s, st, False, 109.0)
    assert st.result is True  # the run of failures started again
    st = probes.record(s, st, False, 110.0)
    assert st.result is False


def test_startup_gates_and_liveness_kills() -> None:
    specs = {probes.STARTUP: spec(probes.STARTUP, failureThreshold=1),
             probes.LIVENESS: spec(probes.LIVENESS, failureThreshold=1),
             probes.READINESS: spec(probes.READINESS)}
    states = {k: probes.initial(s, 0.0) for k, s in specs.items()}
    v = probes.verdict(specs, states, running=True)
    assert (v.started, v.ready, v.kill) == (False, False, None)
    assert probes.active(probes.STARTUP, v.started)
    assert not probes.active(probes.READINESS, v.started)
    states[probes.STARTUP] = probes.record(specs[probes.STARTUP], states[probes.STARTUP],
                                           True, 1.0)
    v = probes.verdict(specs, states, running=True)
    assert v.started and not v.ready and not probes.active(probes.STARTUP, v.started)
    states[probes.READINESS] = probes.record(specs[probes.READINESS],
                                             states[probes.READINESS], True, 2.0)
    assert probes.verdict(specs, states, running=True).ready
    states[probes.LIVENESS] = probes.record(specs[probes.LIVENESS], states[probes.LIVENESS],
                                            False, 3.0)
    v = probes.verdict(specs, states, running=True)
    assert v.kill == "Liveness probe failed" and not v.ready
    failed = {probes.STARTUP: probes.record(specs[probes.STARTUP],
                                            probes.initial(specs[probes.STARTUP], 0), False, 1)}
    assert probes.verdict(specs, failed, running=True).kill == "Startup probe failed"
    assert probes.verdict({}, {}, running=True).ready  # no probes: ready once running
    assert not probes.verdict({}, {}, running=False).ready


# ---- lifecycle --------------------------------------------------------------------------

def test_crash_loop_back_off_is_the_kubelets() -> None:
    policy = lifecycle.BackoffPolicy(10.0, 300.0)
    entry: lifecycle.Backoff | None = None
    now, waits = 0.0, []
    for _ in range(9):  # a container that exits 1 s after each start
        now += 1.0
        wait = lifecycle.restart_wait(entry, now, now, policy)
        waits.append(wait)
        now += wait
        entry = lifecycle.after_restart(entry, now - wait, now, policy)
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    # Ran for longer than twice the cap since the last restart: back to the start.
    assert lifecycle.restart_wait(entry, now + 601, now + 601, policy) == 0
    assert lifecycle.after_restart(entry, now + 601, now + 601, policy).delay == 10


@pytest.mark.parametrize(("policy", "code", "probe", "restart"), [
    ("Always", 0, False, True), ("Always", 1, False, True), ("OnFailure", 0, False, False),
    ("OnFailure", 2, False, True), ("OnFailure", 0, True, True), ("Never", 1, True, False),
])
def test_restart_policy(policy: str, code: int, probe: bool, restart: bool) -> None:
    assert lifecycle.should_restart(policy, code, probe) is restart


def test_exit_classification() -> None:
    assert lifecycle.classify(0) == lifecycle.Exit(0, None, "Completed")
    assert lifecycle.classify(3) == lifecycle.Exit(3, None, "Error")
    assert lifecycle.classify(-9) == lifecycle.Exit(137, 9, "Error")
    assert lifecycle.classify(-15).code == 143


# ---- status -------------------------------------------------------------------------------

def view(name: str, state: dict[str, Any], last: dict[str, Any] | None = None,
         ready: bool = False) -> status.ContainerView:
    return status.ContainerView(name, "portico", state, last or {}, ready, ready, 0)


RUN = status.running("2030-01-01T00:00:00Z")
WAIT = status.waiting("ContainerCreating")
DONE0 = status.terminated(0, "Completed", None, "2030-01-01T00:00:01Z", "")
DONE1 = status.terminated(1, "Error", None, "2030-01-01T00:00:01Z", "")


@pytest.mark.parametrize(("policy", "views", "phase"), [
    ("Always", [view("a", WAIT)], "Pending"),
    ("Always", [view("a", RUN), view("b", WAIT)], "Pending"),
    ("Always", [view("a", RUN), view("b", DONE0)], "Running"),
    ("Always", [view("a", status.waiting("CrashLoopBackOff"), DONE1)], "Running"),
    ("Never", [view("a", DONE0)], "Succeeded"),
    ("Never", [view("a", DONE0), view("b", DONE1)], "Failed"),
    ("OnFailure", [view("a", DONE0)], "Succeeded"),
    ("OnFailure", [view("a", status.waiting("CrashLoopBackOff"), DONE1)], "Running"),
])
def test_phase_follows_getphase(policy: str, views: list[status.ContainerView],
                                phase: str) -> None:
    assert status.phase(policy, views, terminal=False) == phase


def test_terminal_pods_end_by_their_exit_codes() -> None:
    assert status.phase("Always", [view("a", DONE0)], terminal=True) == "Succeeded"
    assert status.phase("Always", [view("a", DONE1)], terminal=True) == "Failed"


def _server_side(st: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns for a status written as ``st`` (nulls and empty values
    left out)."""
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items() if x not in (None, "", {}, [])}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v
    return dict(norm(st))


def test_status_conditions_and_write_only_what_changed() -> None:
    p = pod([{"name": "a"}, {"name": "b"}])
    p["status"] = {"conditions": [{"type": "PodScheduled", "status": "True",
                                   "lastTransitionTime": "2029-12-31T23:59:59Z"}]}
    views = [view("a", RUN, ready=True), view("b", RUN)]
    st = status.pod_status(p, views, pod_ips=["198.18.1.2"], host_ips=["192.0.2.11"],
                           start_time="T0", sandbox_ready=True, now="T1")
    conds = {c["type"]: c for c in st["conditions"]}
    assert st["phase"] == "Running" and st["podIP"] == "198.18.1.2"
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["message"] == "containers with unready status: [b]"
    assert conds["PodReadyToStartContainers"]["status"] == "True"
    assert conds["PodScheduled"]["lastTransitionTime"] == "2029-12-31T23:59:59Z"
    first = status.status_patch(p["status"], st)
    assert first is not None and set(first["status"]) >= {"phase", "containerStatuses",
                                                          "conditions"}
    # The server's copy of what was written: nothing to write again, even at a later "now".
    p["status"] = _server_side(st)
    again = status.pod_status(p, views, pod_ips=["198.18.1.2"], host_ips=["192.0.2.11"],
                              start_time="T0", sandbox_ready=True, now="T2")
    assert status.status_patch(p["status"], again) is None
    # b turns ready: only Ready/ContainersReady and the container statuses change.
    views = [view("a", RUN, ready=True), view("b", RUN, ready=True)]
    later = status.pod_status(p, views, pod_ips=["198.18.1.2"], host_ips=["192.0.2.11"],
                              start_time="T0", sandbox_ready=True, now="T3")
    patch = status.status_patch(p["status"], later)
    assert patch is not None
    assert set(patch["status"]) == {"conditions", "containerStatuses"}
    assert {c["type"] for c in patch["status"]["conditions"]} == {"Ready", "ContainersReady"}
    assert all(c["lastTransitionTime"] == "T3" for c in patch["status"]["conditions"])


def test_succeeded_pods_are_not_ready_because_completed() -> None:
    p = pod([{"name": "a"}], restartPolicy="Never")
    st = status.pod_status(p, [view("a", DONE0)], pod_ips=[], host_ips=[], start_time="T0",
                           sandbox_ready=False, now="T1")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert st["phase"] == "Succeeded" and ready["reason"] == "PodCompleted"
    # Terminal is final, whatever the containers say later.
    p["status"] = st
    st = status.pod_status(p, [view("a", WAIT)], pod_ips=[], host_ips=[], start_time="T0",
                           sandbox_ready=False, now="T2")
    assert st["phase"] == "Succeeded"


# ---- node -------------------------------------------------------------------------------

def test_pod_addresses() -> None:
    assert node.gateway("198.18.1.0/24") == "198.18.1.1"
    assert node.allocate("198.18.1.0/24", set()) == "198.18.1.2"
    assert node.allocate("198.18.1.0/24", {"198.18.1.2", "198.18.1.3"}) == "198.18.1.4"
    assert node.allocate("198.18.1.0/24", {"198.18.1.2"}, preferred="198.18.1.9") == \
        "198.18.1.9"
    assert node.allocate("198.18.1.0/24", {"198.18.1.9"}, preferred="198.18.1.9") == \
        "198.18.1.2"
    assert node.allocate("198.18.1.0/24", set(), preferred="198.18.1.255") == "198.18.1.2"
    assert node.allocate("198.18.1.0/30", {"198.18.1.2"}) is None  # .3 is the broadcast
    # A /64 with thousands taken: bounded by what is taken, never by the prefix.
    used = {f"2001:db8:f0:1::{i:x}" for i in range(2, 3002)}
    assert node.allocate("2001:db8:f0:1::/64", used) == "2001:db8:f0:1::bba"


def test_node_status_and_lease() -> None:
    cfg = node.NodeConfig("node1", ("192.0.2.11", "2001:db8:a::11"),
                          ("198.18.1.0/24", "2001:db8:f0:1::/64"), "2", "1000Ki", 110)
    assert node.node_object(cfg)["spec"] == {
        "podCIDR": "198.18.1.0/24", "podCIDRs": ["198.18.1.0/24", "2001:db8:f0:1::/64"]}
    st = node.node_status(cfg, "T1", None)
    assert st["addresses"] == [{"type": "InternalIP", "address": "192.0.2.11"},
                               {"type": "InternalIP", "address": "2001:db8:a::11"},
                               {"type": "Hostname", "address": "node1"}]
    assert st["capacity"] == st["allocatable"] == {"cpu": "2", "memory": "1000Ki",
                                                   "pods": "110"}
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "KubeletReady"
    later = node.node_status(cfg, "T2", st)
    ready = next(c for c in later["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "T1" and ready["lastHeartbeatTime"] == "T2"
    lease = node.lease(cfg, "uid-1", "R")
    assert lease["spec"] == {"holderIdentity": "node1", "leaseDurationSeconds": 40,
                             "renewTime": "R"}
    assert lease["metadata"]["ownerReferences"][0] == {"apiVersion": "v1", "kind": "Node",
                                                       "name": "node1", "uid": "uid-1"}
