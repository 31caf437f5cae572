"""Policy checks on the rendered chart: least-privilege RBAC, security contexts on every
container, and the wiring the components rely on (args, env, ports, probes, Services)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from speaker.bgp.bfdd import run_dir_for
from speaker.core.bgp_bfd import BFDD_CAPABILITIES
from tests.chart.chartkit import (
    CASES,
    CHART,
    NAMESPACE,
    by_kind,
    containers,
    crd_problems,
    crds,
    documents,
    gateway_crds,
    helm,
    one,
    pod_spec,
    render,
    values_for,
    workloads,
)

RBAC_CASES = [c for c in CASES if by_kind(c, "ClusterRole") or by_kind(c, "Role")]
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
READ_VERBS = {"get", "list", "watch"}
# The speaker's own capabilities: raw sockets, and the real-time, memory-locked heartbeat process.
SPEAKER_CAPS = {"NET_RAW", "NET_ADMIN", "SYS_NICE", "IPC_LOCK"}
# What speaker.bfd.enabled adds: what FRR bfdd demands (measured; speaker.core.bgp_bfd) that
# the speaker lacks — NET_BIND_SERVICE and SYS_ADMIN.
BFD_CAPS = set(BFDD_CAPABILITIES) - SPEAKER_CAPS
# Verbs that let a subject grow its own rights or act as someone else.
ESCALATION_VERBS = {"bind", "escalate", "impersonate", "approve", "sign"}


def _rules(case: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for doc in [*by_kind(case, "ClusterRole"), *by_kind(case, "Role")]:
        for rule in doc.get("rules", []):
            out.append((f"{doc['kind']} {doc['metadata']['name']}", rule))
    return out


def _granted(case: str, role_suffix: str, group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for role, rule in _rules(case):
        if role.endswith(role_suffix) and group in rule.get("apiGroups", []) \
                and resource in rule.get("resources", []) and not rule.get("resourceNames"):
            verbs |= set(rule["verbs"])
    return verbs


def test_rbac_is_rendered_where_expected() -> None:
    assert "default" in RBAC_CASES and "all-options" in RBAC_CASES
    assert "components-off" not in RBAC_CASES  # rbac.create=false


@pytest.mark.parametrize("case", RBAC_CASES)
def test_rbac_has_no_wildcards(case: str) -> None:
    for role, rule in _rules(case):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            for item in rule.get(field, []):
                assert "*" not in item, f"{case}: {role} has a wildcard in {field}: {rule}"
        assert rule.get("apiGroups") is not None, f"{role}: every rule names its API groups"
        assert rule.get("resources"), f"{role}: every rule names its resources"
        assert not rule.get("nonResourceURLs"), f"{role}: no non-resource URLs needed"


@pytest.mark.parametrize("case", RBAC_CASES)
def test_rbac_grants_no_write_on_secrets_and_no_escalation(case: str) -> None:
    secret_rules = 0
    for role, rule in _rules(case):
        verbs = set(rule["verbs"])
        assert not verbs & ESCALATION_VERBS, f"{case}: {role}: {rule}"
        if "" in rule["apiGroups"] and "secrets" in rule["resources"]:
            secret_rules += 1
            assert verbs <= READ_VERBS, f"{case}: {role} may write Secrets: {rule}"
        assert not any(r in ("pods/exec", "pods/attach", "nodes/proxy", "serviceaccounts/token")
                       for r in rule["resources"]), f"{case}: {role}: {rule}"
    assert secret_rules >= 1, "the ingress (TLS) and the speaker (BGP passwords) read Secrets"


def test_controller_reads_no_secrets_and_speaker_reads_them_only_in_its_namespace() -> None:
    for role, rule in _rules("default"):
        if "secrets" in rule["resources"]:
            assert "controller" not in role, role
            if "speaker" in role:
                assert role.startswith("Role "), "speaker Secrets access must be namespaced"


def test_speaker_reads_password_secrets_where_its_role_allows() -> None:
    """BGPPeer.passwordSecret lives in the namespace Portico runs in: the speaker's
    ``--namespace`` (POD_NAMESPACE from the downward API unless overridden) must be the
    namespace of the Role that lets it get Secrets, or every read would be a 403."""
    ds = one("default", "DaemonSet", "-speaker")
    [c] = [c for c in containers(ds) if c["name"] == "speaker"]
    assert not any(str(a).startswith("--namespace") for a in c.get("args", [])), c["args"]
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    roles = [r for r in by_kind("default", "Role") if r["metadata"]["name"].endswith("-speaker")
             and any("secrets" in rule["resources"] for rule in r["rules"])]
    assert [r["metadata"]["namespace"] for r in roles] == [ds["metadata"]["namespace"]]


def test_status_writes_go_through_status_subresources() -> None:
    for role, rule in _rules("default"):
        writes = set(rule["verbs"]) & WRITE_VERBS
        if not writes or set(rule["apiGroups"]) & {"coordination.k8s.io"}:
            continue
        for resource in rule["resources"]:
            allowed_whole = {"events"}
            assert resource.endswith("/status") or resource in allowed_whole, (
                f"{role} may write {resource} itself, not only its status: {rule}")


def test_speaker_reads_every_crd_and_controller_reads_pools() -> None:
    plurals = {c["spec"]["names"]["plural"] for c in crds()}
    assert plurals, "charts/portico/crds/ holds no CRD"
    for plural in plurals:
        verbs = _granted("default", "-speaker", "lb.portico.dev", plural)
        assert {"list", "watch"} <= verbs, f"speaker cannot list/watch {plural}"
    assert {"list", "watch"} <= _granted("default", "-controller", "lb.portico.dev",
                                         "ipaddresspools")
    granted = {r for _, rule in _rules("default") for r in rule["resources"]
               if "lb.portico.dev" in rule["apiGroups"]}
    assert {g.split("/")[0] for g in granted} <= plurals, "RBAC for resources no CRD defines"


def test_status_writers_match_the_components() -> None:
    assert _granted("default", "-controller", "", "services/status") == {"patch"}
    assert _granted("default", "-speaker", "", "services/status") == {"update"}
    assert _granted("default", "-ingress", "networking.k8s.io", "ingresses/status") == {"patch"}
    assert _granted("default", "-speaker", "lb.portico.dev", "bgppeers/status") == {"patch"}
    assert _granted("default", "-controller", "", "secrets") == set()


def test_leader_election_lease_is_namespaced_and_named() -> None:
    role = one("default", "Role", "-controller-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and named[0]["resourceNames"] == ["portico-controller"]
    assert set(named[0]["verbs"]) == {"get", "update"}
    assert not by_kind("alternatives", "Role") or all(
        not r["metadata"]["name"].endswith("leader-election")
        for r in by_kind("alternatives", "Role"))


@pytest.mark.parametrize("case", RBAC_CASES)
def test_bindings_point_at_rendered_roles_and_service_accounts(case: str) -> None:
    roles = {(d["kind"], d["metadata"]["name"]) for d in documents(case)
             if d["kind"] in ("Role", "ClusterRole")}
    accounts = {d["metadata"]["name"] for d in by_kind(case, "ServiceAccount")}
    used = {pod_spec(w)["serviceAccountName"] for w in workloads(case)}
    for binding in [*by_kind(case, "RoleBinding"), *by_kind(case, "ClusterRoleBinding")]:
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles, binding["metadata"]["name"]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert subject["namespace"] == NAMESPACE
            assert subject["name"] in used, subject
            if case != "alternatives":  # there, accounts are pre-existing (create: false)
                assert subject["name"] in accounts, subject


# --- security contexts -----------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_every_container_has_a_restrictive_security_context(case: str) -> None:
    checked = 0
    for workload in workloads(case):
        pod = pod_spec(workload)
        pod_sc = pod.get("securityContext", {})
        for container in containers(workload):
            where = f"{case}: {workload['kind']} {workload['metadata']['name']}/{container['name']}"
            sc = container.get("securityContext")
            assert sc, f"{where} has no securityContext"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            added = set(sc.get("capabilities", {}).get("add", []))
            if container["name"] == "speaker":
                bfd = values_for(case).get("speaker", {}).get("bfd", {}).get("enabled", False)
                assert added == SPEAKER_CAPS | (BFD_CAPS if bfd else set()), where
            else:
                assert not added, where
                assert sc.get("runAsNonRoot") is True, where
                assert pod_sc.get("runAsNonRoot") is True, where
                assert int(sc.get("runAsUser", pod_sc.get("runAsUser", 0))) != 0, where
            checked += 1
    assert checked >= 1


def test_bfd_caps_are_golden_tested_both_ways() -> None:
    """The default values leave BFD off and all-options turns it on, so both renderings are
    golden files and pass the security-context test above."""
    assert {"NET_BIND_SERVICE", "SYS_ADMIN"} == BFD_CAPS
    assert not values_for("default").get("speaker", {}).get("bfd", {}).get("enabled", False)
    assert values_for("all-options")["speaker"]["bfd"]["enabled"] is True


def _speaker(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="portico", namespace=NAMESPACE, is_install=True)
    for doc in yaml.safe_load_all(rendered["portico/templates/speaker.yaml"]):
        if doc:
            return dict(doc)
    raise AssertionError("no speaker DaemonSet")


@pytest.mark.parametrize("enabled", [False, True])
def test_speaker_gets_the_bfd_capabilities_only_with_bfd_enabled(enabled: bool) -> None:
    ds = _speaker({"speaker": {"bfd": {"enabled": enabled}}})
    caps = containers(ds)[0]["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert set(caps["add"]) == SPEAKER_CAPS | (BFD_CAPS if enabled else set())
    assert len(caps["add"]) == len(set(caps["add"]))


def test_bfd_changes_nothing_but_the_capabilities() -> None:
    """No volume, no privilege, no other field: bfdd's files go to the state emptyDir."""
    off, on = _speaker({}), _speaker({"speaker": {"bfd": {"enabled": True}}})
    for ds in (off, on):
        containers(ds)[0]["securityContext"]["capabilities"]["add"] = []
    assert on == off
    speaker = containers(on)[0]
    state = next(a.split("=", 1)[1] for a in speaker["args"] if a.startswith("--state-dir="))
    mounts = {m["mountPath"]: m["name"] for m in speaker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(on)["volumes"]}
    assert "emptyDir" in volumes[mounts[state]]
    # bfdd's sockets fit sun_path there, so it uses the emptyDir, never /var/run/frr.
    assert run_dir_for(state) == Path(state) / "bfdd"


def test_image_check_uses_the_charts_capabilities() -> None:
    """scripts/build-image.sh starts bfdd in the built image with the chart's capability sets
    (SPEAKER_CAPS, BFD_CAPS): they must stay what the chart renders."""
    script = (CHART.parents[1] / "scripts" / "build-image.sh").read_text()
    found = {}
    for line in script.splitlines():
        name, _, value = line.strip().partition("=")
        if name in ("SPEAKER_CAPS", "BFD_CAPS") and value:
            found[name] = set(value.split(","))
    assert found == {"SPEAKER_CAPS": SPEAKER_CAPS, "BFD_CAPS": BFD_CAPS}


def test_only_the_speaker_uses_the_host_network() -> None:
    for case in CASES:
        for workload in workloads(case):
            host = pod_spec(workload).get("hostNetwork", False)
            assert host == workload["metadata"]["name"].endswith("-speaker"), workload["metadata"]
            assert not pod_spec(workload).get("hostPID") and not pod_spec(workload).get("hostIPC")


def test_writable_paths_are_emptydirs() -> None:
    ingress = one("default", "Deployment", "-ingress")
    mounts = {m["mountPath"]: m["name"] for m in containers(ingress)[0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(ingress)["volumes"]}
    assert "/var/run/portico-ingress" in mounts
    assert "--state-dir=/var/run/portico-ingress" in containers(ingress)[0]["args"]
    for name in mounts.values():
        assert "emptyDir" in volumes[name]


# --- wiring ----------------------------------------------------------------------------------

def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_controller_runs_two_replicas_with_leader_election() -> None:
    deploy = one("default", "Deployment", "-controller")
    assert deploy["spec"]["replicas"] == 2
    (container,) = containers(deploy)
    assert container["args"][0] == "controller"
    assert "--leader-elect" in container["args"]
    assert "--lease-name=portico-controller" in container["args"]
    env = _env(container)
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    alt = containers(one("alternatives", "Deployment", "-controller"))[0]
    assert "--no-leader-elect" in alt["args"]


def test_speaker_daemonset_reads_its_node_name_and_tolerates_control_plane() -> None:
    ds = one("default", "DaemonSet", "-speaker")
    (container,) = containers(ds)
    assert container["args"][0] == "speaker"
    assert _env(container)["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    keys = {t["key"] for t in pod_spec(ds).get("tolerations", [])}
    assert "node-role.kubernetes.io/control-plane" in keys
    off = one("alternatives", "DaemonSet", "-speaker")
    assert "tolerations" not in pod_spec(off)
    assert pod_spec(ds)["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_ingress_service_maps_80_443_onto_high_container_ports() -> None:
    for case, kind in (("default", "Deployment"), ("all-options", "DaemonSet")):
        service = next(s for s in by_kind(case, "Service")
                       if s["spec"].get("type") == "LoadBalancer")
        assert service["spec"]["externalTrafficPolicy"] == "Local"
        workload = next(w for w in by_kind(case, kind) if w["metadata"]["name"] ==
                        service["metadata"]["name"])
        (container,) = containers(workload)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        by_port = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
        # ingress.tcp (all-options: 53 and 5432) adds its ports; 53 listens on 10053.
        tcp = {53: 10053, 5432: 5432} if case == "all-options" else {}
        assert set(by_port) == {80, 443, *tcp}
        for port, target in by_port.items():
            number = tcp[port] if port in tcp else ports[target]
            assert number >= 1024, "HAProxy listens on unprivileged ports (non-root)"
            assert target == tcp.get(port, target)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        args = container["args"]
        assert f"--http-port={ports['http']}" in args and f"--https-port={ports['https']}" in args
        name = service["metadata"]["name"]
        assert f"--publish-service={NAMESPACE}/{name}" in args


def test_ingress_class_and_default_annotation() -> None:
    cls = one("default", "IngressClass", "portico")
    assert cls["spec"]["controller"] == "portico.dev/ingress"
    assert "annotations" not in cls["metadata"]
    default = by_kind("all-options", "IngressClass")[0]
    assert default["metadata"]["annotations"] == {
        "ingressclass.kubernetes.io/is-default-class": "true"}
    assert not by_kind("alternatives", "IngressClass")


def test_ingress_service_annotations_request_pool_and_addresses() -> None:
    service = next(s for s in by_kind("all-options", "Service")
                   if s["spec"].get("type") == "LoadBalancer")
    annotations = service["metadata"]["annotations"]
    assert annotations["lb.portico.dev/loadBalancerIPs"] == "192.0.2.10,2001:db8::10"
    assert annotations["lb.portico.dev/address-pool"] == "public"
    assert service["spec"]["loadBalancerClass"] == "portico.dev/lb"


@pytest.mark.parametrize("case", CASES)
def test_probes_hit_healthz_and_readyz_on_a_declared_port(case: str) -> None:
    for workload in workloads(case):
        for container in containers(workload):
            ports = {p["name"] for p in container["ports"]}
            # The controller's standby replica is healthy but never /readyz (see
            # controller.yaml), so its readiness uses /healthz.
            ready = "/healthz" if container["name"] == "controller" else "/readyz"
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", ready)):
                get = container[probe]["httpGet"]
                assert get["path"] == path and get["port"] in ports, container["name"]
            assert container["resources"]["requests"], container["name"]
            assert container["resources"]["limits"]["memory"], container["name"]


def test_pod_disruption_budgets_cover_controller_and_ingress() -> None:
    pdbs = {p["metadata"]["name"]: p for p in by_kind("default", "PodDisruptionBudget")}
    assert set(pdbs) == {"portico-controller", "portico-ingress"}
    for name, pdb in pdbs.items():
        workload = next(w for w in workloads("default") if w["metadata"]["name"] == name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["minAvailable"] < workload["spec"]["replicas"], (
            "a PDB as large as the Deployment would block every node drain")
    assert not by_kind("alternatives", "PodDisruptionBudget")


def test_service_monitors_select_the_metrics_services() -> None:
    monitors = by_kind("all-options", "ServiceMonitor")
    assert len(monitors) == 3
    services = by_kind("all-options", "Service")
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        assert len(selected) == 1, monitor["metadata"]["name"]
        (service,) = selected
        assert service["spec"]["clusterIP"] == "None"
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert not by_kind("default", "ServiceMonitor")


def test_image_reference_follows_values() -> None:
    image = containers(one("default", "Deployment", "-controller"))[0]["image"]
    assert image == "portico:0.1.0"
    pinned = containers(one("all-options", "Deployment", "-controller"))[0]["image"]
    assert pinned.startswith("registry.example.test/platform/portico@sha256:")


def test_notes_tell_the_user_to_create_a_pool_and_an_advertisement() -> None:
    notes = render("default")["portico/templates/NOTES.txt"]
    block = notes.split("<<'YAML'\n", 1)[1].split("\n  YAML", 1)[0]
    docs = [d for d in yaml.safe_load_all(textwrap.dedent(block)) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds == ["IPAddressPool", "L2Advertisement"]
    pool, advert = docs
    assert advert["spec"]["ipAddressPools"] == [pool["metadata"]["name"]]
    assert "kubectl get service hello" in notes
    for doc in docs:
        problems = crd_problems(doc)
        assert problems is not None, f"no CRD for {doc['kind']} in charts/portico/crds/"
        assert problems == [], f"NOTES.txt example {doc['kind']}: {problems}"


def test_names_follow_the_release_name() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render({}, name="edge", namespace="lb", is_install=True)
    docs = [d for p, t in rendered.items() if not p.endswith("NOTES.txt")
            for d in yaml.safe_load_all(t) if d]
    names = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "DaemonSet",
                                                                  "Service")}
    assert names == {"edge-portico-controller", "edge-portico-speaker", "edge-portico-ingress"}
    ingress = next(d for d in docs if d["kind"] == "Deployment"
                   and d["metadata"]["name"].endswith("-ingress"))
    assert "--publish-service=lb/edge-portico-ingress" in containers(ingress)[0]["args"]
    assert "edge-portico-ingress" in rendered["portico/templates/NOTES.txt"]


def test_packaged_chart_keeps_crds_schema_and_templates(tmp_path: Path) -> None:
    archive = helm.package(str(CHART), destination=str(tmp_path))
    with helm.Chart.load(archive) as packed, helm.Chart.load(str(CHART)) as source:
        assert {f["name"] for f in packed.templates} == {f["name"] for f in source.templates}
        # The chart's own CRDs and the Gateway API subchart's.
        assert len(packed.crds) == len(crds()) + len(gateway_crds())
        assert packed.schema == source.schema
        assert packed.values == source.values
