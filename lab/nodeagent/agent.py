"""The node agent's loop (the thin shell around the pure modules).

Threads: an informer on the pods bound to this node (``spec.nodeName=NODE``, as the Node
authorizer requires) wakes the sync loop; the sync loop (the main thread) owns every
runtime record and makes every decision; a heartbeat thread renews the node Lease and
reports the Node's status; a small pool runs probes and hands results back to the loop.

One pass of the sync loop, per pod (``_sync_pod``):

- gone from the API: stop its containers (a short grace), remove its namespace, forget it;
- ``deletionTimestamp``: SIGTERM every container, SIGKILL what is left after the grace
  period, write the final status, delete the pod with grace period 0 (the kubelet's order);
- otherwise: the sandbox (network namespace and addresses, or the node's for hostNetwork),
  the volumes (Secrets, ConfigMaps, the bound ServiceAccount token — refreshed at 80 % of
  its life), then each container: reap an exit and apply the restart policy with back-off,
  kill on a failed liveness/startup probe, start what should run, schedule due probes;
- finally the status, patched only when it differs from the last one known.

State is rebuilt from the cluster on start (restart counts, pod addresses); what a killed
agent left on this machine (processes, namespaces) is removed from its ledger.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from common.errors import Forbidden, KubeError, NotFound
from common.kube.client import KubeClient
from common.kube.clock import rfc3339, rfc3339_micro
from common.kube.events import EventRecorder
from common.kube.informer import Informer
from common.kube.resources import PODS, resource_version
from lab.controlplane import binaries
from lab.nodeagent import images, lifecycle, plan, podnet, probes, runtime, status
from lab.nodeagent import node as nodes
from lab.nodeagent.errors import NodeAgentError, SetupError, StartFailed
from lab.nodeagent.images import Toolbox
from lab.nodeagent.kube import NodeApi

Obj = dict[str, Any]
log = structlog.get_logger("lab.nodeagent").bind(component="nodeagent")

REPO = Path(__file__).resolve().parents[2]
# A pass every 200 ms bounds how late an exit or a probe result is seen; an informer event
# or a probe result wakes the loop at once.
TICK_S = 0.2
RETRY_S = 2.0  # a sandbox, volume or config failure is retried this often
SOURCES_TTL_S = 2.0  # Secrets/ConfigMaps fetched for a pod are reused this long
# Volumes made from Secrets/ConfigMaps are rewritten this often (the kubelet's sync period is
# a minute too); a refreshed token rewrites them at once.
VOLUME_RESYNC_S = 60.0
TOKEN_REFRESH = 0.8  # the kubelet refreshes a projected token at 80 % of its life
TOKEN_REFRESH_MAX_S = 24 * 3600.0
FORCED_GRACE_S = 2.0  # a pod deleted without waiting for us (the kubelet's minimum)
PROBE_WORKERS = 8
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}$")
_SAFE_UID = re.compile(r"^[0-9a-fA-F-]{8,64}$")


@dataclass
class AgentConfig:
    node: str
    node_ips: tuple[str, ...]
    pod_cidrs: tuple[str, ...]
    state_dir: Path
    kubeconfig: str | None = None
    cluster_cidrs: tuple[str, ...] = ()
    api_host: str | None = None
    api_port: int | None = None
    netns_prefix: str = ""
    lease_renew_s: float = 5.0
    status_update_s: float = 10.0
    status_report_s: float = 300.0
    backoff: lifecycle.BackoffPolicy = field(default_factory=lifecycle.BackoffPolicy)
    max_pods: int = 110
    shutdown_grace_s: float = 2.0


@dataclass
class ContainerRuntime:
    name: str
    image: str
    restart_count: int = 0
    generation: int = 0  # starts so far in this agent (a first start may be a restart)
    proc: runtime.Process | None = None
    container_id: str = ""
    started_at: str | None = None
    plan: plan.LaunchPlan | None = None
    waiting: tuple[str, str] = ("ContainerCreating", "")
    terminated: Obj | None = None  # final: will not restart
    last_terminated: Obj | None = None
    backoff: lifecycle.Backoff | None = None
    finished_mono: float = 0.0
    restart_at: float | None = None
    next_attempt: float = 0.0
    kill_deadline: float | None = None
    killed_by_probe: bool = False
    probe_specs: dict[str, probes.ProbeSpec] = field(default_factory=dict)
    probe_states: dict[str, probes.ProbeState] = field(default_factory=dict)

    def verdict(self) -> probes.Verdict:
        return probes.verdict(self.probe_specs, self.probe_states, self.proc is not None)

    def view(self) -> status.ContainerView:
        v = self.verdict()
        if self.proc is not None and self.started_at:
            state = status.running(self.started_at)
        elif self.terminated is not None:
            state = self.terminated
        else:
            state = status.waiting(*self.waiting)
        return status.ContainerView(
            name=self.name, image=self.image, state=state,
            last_state=self.last_terminated or {}, ready=v.ready, started=v.started,
            restart_count=self.restart_count, container_id=self.container_id,
            image_id=f"portico-lab://{self.image}")


@dataclass
class PodRuntime:
    uid: str
    namespace: str
    name: str
    dir: Path
    host_network: bool
    start_time: str
    containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    netns: str | None = None
    pod_ips: list[str] = field(default_factory=list)
    sandbox_ready: bool = False
    sandbox_retry: float = 0.0
    sources: plan.Sources | None = None
    sources_at: float = -1e9
    tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    token_errors: dict[tuple[str, str], str] = field(default_factory=dict)
    volume_dirs: dict[str, str] = field(default_factory=dict)
    volumes_error: tuple[str, str] | None = None
    volumes_ready: bool = False
    volumes_at: float = -1e9
    terminating: bool = False
    term_deadline: float = 0.0
    killed: bool = False
    finished: bool = False  # terminal phase reached: nothing runs or restarts any more
    deleted: bool = False  # the final delete was sent
    written: Obj | None = None  # the status as the last patch left it
    rv_at_write: str = ""
    status_retry: float = 0.0  # after a refused status write, wait until then

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def running(self) -> list[ContainerRuntime]:
        return [c for c in self.containers.values() if c.proc is not None]


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def built_programs() -> tuple[tuple[str, str], ...]:
    """The image programs built from Go modules that this machine has (images.BUILT)."""
    found = []
    for tool in images.BUILT:
        with contextlib.suppress(binaries.BuildError):
            found.append((tool, str(binaries.binary(tool))))
    return tuple(found)


class Agent:
    def __init__(self, cfg: AgentConfig, client: KubeClient) -> None:
        self.cfg = cfg
        self.client = client
        self.api = NodeApi(client, cfg.node)
        self.events = EventRecorder(client, "kubelet", host=cfg.node)
        self.box = Toolbox(python=str(Path(sys.executable)), bin_dir=str(Path(sys.executable)
                                                                         .parent), repo=str(REPO),
                           built=built_programs())
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = runtime.Ledger(cfg.state_dir / "ledger.json")
        self.launcher = runtime.Launcher(self.box.python, REPO, self.ledger)
        self.net = podnet.PodNetwork(cfg.pod_cidrs, cfg.cluster_cidrs)
        self.node_cfg = self._node_config()
        self.node_uid = ""
        self.pods: dict[str, PodRuntime] = {}
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.results: queue.Queue[tuple[str, str, int, str, bool, str]] = queue.Queue()
        self.pool = concurrent.futures.ThreadPoolExecutor(PROBE_WORKERS, "probe")
        self.api_endpoint = ("", 0)
        self.informer: Informer | None = None
        self.ready_at: float | None = None

    # ---- node -------------------------------------------------------------------------------

    def _node_config(self) -> nodes.NodeConfig:
        mem_kib = 0
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        except OSError:
            pass
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                           platform.machine())
        return nodes.NodeConfig(
            name=self.cfg.node, ips=self.cfg.node_ips, pod_cidrs=self.cfg.pod_cidrs,
            cpu=str(os.cpu_count() or 1), memory=f"{mem_kib}Ki", pods=self.cfg.max_pods,
            kernel=platform.release(), os_image="portico lab node", arch=arch)

    def register(self) -> None:
        """Create the Node, or bring an existing one's labels and pod CIDRs to ours (a pod
        CIDR already set stays: it cannot change), then its status and Lease."""
        node = self.api.get_node()
        if node is None:
            try:
                node = self.api.create_node(nodes.node_object(self.node_cfg))
            except KubeError as exc:
                if exc.status != 409:
                    raise
                node = self.api.get_node() or {}
        else:
            patch: Obj = {"metadata": {"labels": nodes.labels(self.node_cfg)}}
            if not (node.get("spec") or {}).get("podCIDR") and self.cfg.pod_cidrs:
                patch["spec"] = nodes.node_spec(self.node_cfg)
            node = self.api.patch_node(patch)
        have = tuple((node.get("spec") or {}).get("podCIDRs") or ())
        if have and have != self.cfg.pod_cidrs:
            log.warning("pod_cidr_mismatch", node_pod_cidrs=list(have),
                        agent_pod_cidrs=list(self.cfg.pod_cidrs))
        self.node_uid = str((node.get("metadata") or {}).get("uid") or "")
        self._report_status(node.get("status"))
        self._renew_lease()

    def _report_status(self, current: Obj | None = None) -> None:
        self.api.patch_node_status(nodes.node_status(self.node_cfg, rfc3339(_now()), current))

    def _renew_lease(self) -> None:
        # A renewal that hangs (the node's link is cut) must not outlive the next one: the
        # kubelet bounds its heartbeat requests the same way.
        self.api.renew_lease(nodes.lease(self.node_cfg, self.node_uid, rfc3339_micro(_now())),
                             timeout=max(1.0, 2 * self.cfg.lease_renew_s))

    def heartbeat(self) -> None:
        """The Lease every ``lease_renew_s`` (what the lifecycle controller watches); the
        Node's status checked every ``status_update_s`` and written when what the server
        shows differs from what the agent reports (after the lifecycle controller marked the
        node Unknown, say), and at least every ``status_report_s`` — the kubelet's
        nodeStatusUpdateFrequency and nodeStatusReportFrequency. Errors are logged and
        retried on the next beat."""
        now = time.monotonic()
        next_check, next_report = now + self.cfg.status_update_s, now + self.cfg.status_report_s
        while not self.stop.wait(self.cfg.lease_renew_s):
            try:
                self._renew_lease()
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + self.cfg.status_update_s
                    node = self.api.get_node() or {}
                    current = node.get("status") or {}
                    if now >= next_report or nodes.status_differs(self.node_cfg, current):
                        self._report_status(current)
                        next_report = now + self.cfg.status_report_s
            except KubeError as exc:
                log.warning("heartbeat_failed", error=str(exc))

    # ---- start and stop ---------------------------------------------------------------------

    def cleanup_leftovers(self) -> None:
        pids, namespaces = self.ledger.leftovers()
        for pid in pids:
            runtime.kill_group(pid)
        for ns in namespaces:
            self.net.remove_pod(ns)
        if pids or namespaces:
            log.info("leftovers_removed", processes=len(pids), namespaces=len(namespaces))
        self.ledger.reset()

    def run(self) -> int:
        self.cleanup_leftovers()
        self.net.setup()
        self.register()
        found = self.api.kubernetes_service()
        host = self.cfg.api_host or (found[0] if found else "")
        port = self.cfg.api_port or (found[1] if found else 443)
        self.api_endpoint = (host, port)
        log.info("registered", node=self.cfg.node, node_uid=self.node_uid,
                 pod_cidrs=list(self.cfg.pod_cidrs), api_host=host, api_port=port)
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        self.informer = Informer(self.client, PODS, field_selector=f"spec.nodeName={self.cfg.node}",
                                 on_event=lambda _t, _o: self.wake.set(), name="pods")
        self.informer.start()
        while not self.stop.is_set() and not self.informer.wait_for_sync(1.0):
            pass
        self.ready_at = time.monotonic()
        try:
            while not self.stop.is_set():
                self.wake.wait(TICK_S)
                self.wake.clear()
                self.sync_all()
        finally:
            self.shutdown()
        return 0

    def request_stop(self, *_: Any) -> None:
        self.stop.set()
        self.wake.set()

    def shutdown(self) -> None:
        """Stop every container (SIGTERM, ``shutdown_grace_s``, SIGKILL) and remove the pod
        network. Unlike a kubelet, whose containers outlive it, the agent owns its
        processes: a lab torn down must leave nothing running. No status is written (as a
        kubelet that dies); a restarted agent starts the pods again."""
        if self.informer is not None:
            self.informer.stop(timeout=1.0)
        procs = [c.proc for rt in self.pods.values() for c in rt.running() if c.proc]
        for p in procs:
            runtime.send(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.shutdown_grace_s
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):  # killed below
                p.popen.wait(max(0.0, deadline - time.monotonic()))
        for p in procs:
            runtime.kill_group(p.pid)
            runtime.reap(p.popen, 2.0)
            self.ledger.remove_proc(p.pid)
        for rt in self.pods.values():
            self._teardown_sandbox(rt)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.net.teardown()
        log.info("stopped", node=self.cfg.node, containers_stopped=len(procs))

    # ---- the loop ---------------------------------------------------------------------------

    def sync_all(self) -> None:
        self._drain_probe_results()
        assert self.informer is not None
        by_uid = {str((p.get("metadata") or {}).get("uid")): p for p in self.informer.store.list()}
        for uid in list(self.pods):
            if uid not in by_uid:
                try:
                    self._sync_gone(self.pods[uid])
                except (NodeAgentError, OSError) as exc:
                    log.warning("sync_failed", pod=self.pods[uid].key, error=str(exc))
        for uid, pod in by_uid.items():
            try:
                self._sync_pod(uid, pod)
            except (NodeAgentError, KubeError, OSError) as exc:
                log.warning("sync_failed", pod=plan.pod_ref(pod), error=str(exc))

    def _sync_pod(self, uid: str, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        rt = self.pods.get(uid)
        if rt is None:
            phase = (pod.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp"):
                # Nothing of it runs here (finished before, or an earlier agent's): delete.
                self.api.delete_pod_now(str(meta.get("namespace")), str(meta.get("name")), uid)
                return
            if phase in status.TERMINAL:
                return
            rt = self._new_runtime(uid, pod)
            self.pods[uid] = rt
        if rt.deleted:
            return
        now = time.monotonic()
        if meta.get("deletionTimestamp"):
            self._sync_terminating(rt, pod, now)
            return
        if not rt.finished:
            self._sync_active(rt, pod, now)
        self._write_status(rt, pod)

    def _new_runtime(self, uid: str, pod: Obj) -> PodRuntime:
        meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        safe = (f"{ns}_{name}_" if _SAFE_NAME.match(ns) and _SAFE_NAME.match(name) else "")
        if not _SAFE_UID.match(uid):
            raise NodeAgentError(f"pod {ns}/{name}: unexpected uid {uid!r}")
        rt = PodRuntime(uid=uid, namespace=ns, name=name,
                        dir=self.cfg.state_dir / "pods" / f"{safe}{uid}",
                        host_network=bool(spec.get("hostNetwork")),
                        start_time=str(st.get("startTime") or rfc3339(_now())))
        previous = {c.get("name"): c for c in st.get("containerStatuses") or []
                    if isinstance(c, dict)}
        restart_policy = str(spec.get("restartPolicy") or lifecycle.ALWAYS)
        for c in spec.get("containers") or []:
            cr = ContainerRuntime(name=str(c.get("name")), image=str(c.get("image")))
            self._seed_from_status(cr, previous.get(cr.name), restart_policy)
            rt.containers[cr.name] = cr
        log.info("pod_added", pod=rt.key, uid=uid, host_network=rt.host_network)
        return rt

    @staticmethod
    def _seed_from_status(cr: ContainerRuntime, old: Obj | None, restart_policy: str) -> None:
        """A container an earlier agent run reported (state is a cache of the cluster): its
        restart count goes on; one that finished for good stays finished; one that ran is
        gone (the agent stops its containers when it stops), so its next start is a restart,
        as after a node reboot."""
        if not old:
            return
        state, last = old.get("state") or {}, old.get("lastState") or {}
        cr.restart_count = int(old.get("restartCount") or 0)
        done = state.get("terminated")
        if isinstance(done, dict) and not lifecycle.should_restart(
                restart_policy, int(done.get("exitCode") or 0), False):
            cr.terminated = {"terminated": done}
            cr.last_terminated = {"terminated": last["terminated"]} \
                if isinstance(last.get("terminated"), dict) else None
            return
        if "running" in state or done:
            cr.generation = 1
            cr.last_terminated = status.terminated(
                137, "ContainerStatusUnknown", None, rfc3339(_now()), "",
                message="The container could not be located when the node agent restarted")
        elif isinstance(last.get("terminated"), dict):
            cr.generation = 1
            cr.last_terminated = {"terminated": last["terminated"]}

    # ---- sandbox and volumes ----------------------------------------------------------------

    def _ensure_sandbox(self, rt: PodRuntime, pod: Obj, now: float) -> bool:
        if rt.sandbox_ready:
            return True
        if now < rt.sandbox_retry:
            return False
        if rt.host_network:
            rt.pod_ips = list(self.cfg.node_ips)
            rt.sandbox_ready = True
            return True
        used = {ip for other in self.pods.values() if other is not rt for ip in other.pod_ips}
        previous = [str(p.get("ip")) for p in (pod.get("status") or {}).get("podIPs") or []
                    if isinstance(p, dict)]
        ips = []
        for cidr in self.cfg.pod_cidrs:
            pref = next((p for p in previous if nodes.allocate(cidr, set(), p) == p), None)
            ip = nodes.allocate(cidr, used, pref)
            if ip is None:
                self._sandbox_failed(rt, pod, now, f"no free address in pod CIDR {cidr}")
                return False
            ips.append(ip)
        short = rt.uid.replace("-", "")[:10]
        netns = f"{self.cfg.netns_prefix or f'pl-pod-{self.cfg.node}-'}{short}"
        try:
            self.ledger.add_netns(netns)
            self.net.add_pod(netns, f"pv{short}", ips)
        except SetupError as exc:
            self.ledger.remove_netns(netns)
            self._sandbox_failed(rt, pod, now, str(exc))
            return False
        rt.netns, rt.pod_ips, rt.sandbox_ready = netns, ips, True
        log.info("sandbox_ready", pod=rt.key, netns=netns, pod_ips=ips)
        return True

    def _sandbox_failed(self, rt: PodRuntime, pod: Obj, now: float, why: str) -> None:
        rt.sandbox_retry = now + RETRY_S
        for c in rt.containers.values():
            c.waiting = ("ContainerCreating", f"pod sandbox: {why}")
        self.events.warning(pod, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {why}")

    def _teardown_sandbox(self, rt: PodRuntime) -> None:
        if rt.netns:
            self.net.remove_pod(rt.netns)
            self.ledger.remove_netns(rt.netns)
            log.info("sandbox_removed", pod=rt.key, netns=rt.netns)
            rt.netns = None
        rt.sandbox_ready = False

    def _context(self, rt: PodRuntime) -> plan.PodContext:
        return plan.PodContext(
            node_name=self.cfg.node, pod_ips=tuple(rt.pod_ips), host_ips=self.cfg.node_ips,
            api_host=self.api_endpoint[0], api_port=self.api_endpoint[1], box=self.box,
            netns=rt.netns, volume_dirs=dict(rt.volume_dirs),
            allocatable={"cpu": self.node_cfg.cpu, "memory": self.node_cfg.memory})

    def _sources(self, rt: PodRuntime, pod: Obj, now: float, fresh: bool) -> plan.Sources:
        """The pod's Secrets, ConfigMaps and tokens (reused for SOURCES_TTL_S unless
        ``fresh``: a container start reads current values, as the kubelet does)."""
        refs = plan.references(pod)
        if rt.sources is None or fresh or now - rt.sources_at > SOURCES_TTL_S:
            secrets: dict[str, dict[str, bytes]] = {}
            configmaps: dict[str, dict[str, bytes]] = {}
            for name in refs.secrets:
                got = self._fetch(self.api.secret, rt.namespace, name)
                if got is not None:
                    secrets[name] = got
            for name in refs.configmaps:
                got = self._fetch(self.api.configmap, rt.namespace, name)
                if got is not None:
                    configmaps[name] = got
            rt.sources = plan.Sources(secrets, configmaps)
            rt.sources_at = now
        return plan.Sources(rt.sources.secrets, rt.sources.configmaps,
                            {k: v[0] for k, v in rt.tokens.items()}, dict(rt.token_errors))

    @staticmethod
    def _fetch(fn: Any, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            result: dict[str, bytes] | None = fn(namespace, name)
            return result
        except Forbidden as exc:
            # The Node authorizer learns of a new pod's references a moment after the pod:
            # a 403 right after creation is "not yet", like a missing object.
            log.info("reference_forbidden", namespace=namespace, name=name, error=str(exc))
            return None

    def _refresh_tokens(self, rt: PodRuntime, pod: Obj, now: float) -> bool:
        """Request the tokens that are missing or due; True when one changed."""
        sa = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        changed = False
        for t in plan.references(pod).tokens:
            key = (t.volume, t.path)
            have = rt.tokens.get(key)
            if have is not None and now < have[1]:
                continue
            try:
                token, expiry = self.api.request_token(rt.namespace, sa, t.audience,
                                                       t.seconds, pod)
            except KubeError as exc:
                rt.token_errors[key] = str(exc)
                continue
            # Refresh at 80 % of the token's life (at most a day), as the kubelet does.
            end = _parse_time(expiry)
            life = (end - _now()).total_seconds() if end else float(t.seconds)
            rt.tokens[key] = (token, now + min(TOKEN_REFRESH * max(life, 1.0),
                                               TOKEN_REFRESH_MAX_S))
            rt.token_errors.pop(key, None)
            changed = True
        return changed

    def _ensure_volumes(self, rt: PodRuntime, pod: Obj, now: float) -> bool:
        """Write the pod's volumes when they were never written, a token changed, or the
        resync period passed; False while they cannot be (the reason in volumes_error)."""
        tokens_changed = self._refresh_tokens(rt, pod, now)
        if rt.volumes_ready and not tokens_changed and now - rt.volumes_at < VOLUME_RESYNC_S:
            return True
        if not rt.volumes_ready and now - rt.volumes_at < RETRY_S:
            return False
        rt.volumes_at = now
        sources = self._sources(rt, pod, now, fresh=False)
        vols = plan.volume_contents(pod, sources, self._context(rt))
        if isinstance(vols, plan.Failure):
            if rt.volumes_error != (vols.reason, vols.message):
                self.events.warning(pod, "FailedMount", vols.message)
            rt.volumes_error = (vols.reason, vols.message)
            # Volumes that were written stay as they are: running containers keep them.
            return rt.volumes_ready
        rt.volumes_error = None
        for vol in vols:
            d = rt.dir / "volumes" / vol.name
            _write_volume(d, vol)
            rt.volume_dirs[vol.name] = str(d)
        rt.volumes_ready = True
        return True

    # ---- containers -------------------------------------------------------------------------

    def _sync_active(self, rt: PodRuntime, pod: Obj, now: float) -> None:
        spec = pod.get("spec") or {}
        if spec.get("initContainers"):
            for c in rt.containers.values():
                c.waiting = (plan.CONFIG_ERROR, "init containers are not supported by the lab "
                                                "node agent yet")
            return
        containers = {str(c.get("name")): c for c in spec.get("containers") or []}
        for c in rt.containers.values():
            self._reap(rt, pod, c, now, terminating=False)
        if not self._ensure_sandbox(rt, pod, now):
            return
        volumes_ok = self._ensure_volumes(rt, pod, now)
        for name, c in rt.containers.items():
            cspec = containers.get(name)
            if cspec is None:
                continue
            if c.proc is not None:
                self._watch_running(rt, pod, c, cspec, now)
            elif c.terminated is None:
                if volumes_ok:
                    self._maybe_start(rt, pod, c, cspec, now)
                elif rt.volumes_error is not None:
                    c.waiting = rt.volumes_error
        views = [c.view() for c in rt.containers.values()]
        restart_policy = str(spec.get("restartPolicy") or lifecycle.ALWAYS)
        if status.phase(restart_policy, views, terminal=False) in status.TERMINAL:
            rt.finished = True
            self._teardown_sandbox(rt)

    def _reap(self, rt: PodRuntime, pod: Obj, c: ContainerRuntime, now: float,
              terminating: bool) -> None:
        if c.proc is None:
            return
        rc = c.proc.popen.poll()
        if rc is None:
            return
        pid = c.proc.pid
        runtime.kill_group(pid)  # whatever the container left in its group
        self.ledger.remove_proc(pid)
        ex = lifecycle.classify(rc)
        message = ""
        if ex.signal:
            message = f"killed by {_signal_name(ex.signal)}"
        term = status.terminated(ex.code, ex.reason, c.started_at, rfc3339(_now()),
                                 c.container_id, ex.signal, message)
        log.info("container_exited", pod=rt.key, container=c.name, pid=pid,
                 exit_code=ex.code, signal=ex.signal)
        self._after_exit(rt, pod, c, term, ex.code, now, terminating)

    def _after_exit(self, rt: PodRuntime, pod: Obj, c: ContainerRuntime, term: Obj,
                    exit_code: int, now: float, terminating: bool) -> None:
        c.proc = None
        c.plan = None
        c.probe_states.clear()
        c.kill_deadline = None
        restart_policy = str((pod.get("spec") or {}).get("restartPolicy") or lifecycle.ALWAYS)
        if terminating or not lifecycle.should_restart(restart_policy, exit_code,
                                                       c.killed_by_probe):
            c.terminated = term
            c.killed_by_probe = False
            return
        c.killed_by_probe = False
        c.last_terminated = term
        c.finished_mono = now
        wait = lifecycle.restart_wait(c.backoff, now, now, self.cfg.backoff)
        c.restart_at = now + wait if wait > 0 else None
        if wait > 0 and c.backoff is not None:
            msg = (f"back-off {c.backoff.delay:g}s restarting failed container={c.name} "
                   f"pod={rt.name}_{rt.namespace}({rt.uid})")
            c.waiting = ("CrashLoopBackOff", msg)
            self.events.warning(pod, "BackOff", f"Back-off restarting failed container "
                                                f"{c.name} in pod {rt.name}_{rt.namespace}")

    def _maybe_start(self, rt: PodRuntime, pod: Obj, c: ContainerRuntime, cspec: Obj,
                     now: float) -> None:
        if c.restart_at is not None and now < c.restart_at:
            return
        if now < c.next_attempt:
            return
        sources = self._sources(rt, pod, now, fresh=True)
        launch = plan.plan_container(pod, cspec, sources, self._context(rt))
        if isinstance(launch, plan.Failure):
            if c.waiting != (launch.reason, launch.message):
                self.events.warning(pod, "Failed", f"Error: {launch.reason}: {launch.message}")
            c.waiting = (launch.reason, launch.message)
            c.next_attempt = now + RETRY_S
            return
        restarting = c.generation > 0
        log_path = rt.dir / "logs" / f"{c.name}.log"
        started_at = rfc3339(_now())
        try:
            proc = self.launcher.start(launch, log_path)
        except StartFailed as exc:
            # A failed start counts as a start for the back-off (else a command that can
            # never start would be retried on every pass).
            c.generation += 1
            if restarting:
                c.restart_count += 1
            c.backoff = lifecycle.after_restart(c.backoff, c.finished_mono, now,
                                                self.cfg.backoff)
            self.events.warning(pod, "Failed", f"Error: failed to start container "
                                               f"{c.name}: {exc}")
            term = status.terminated(lifecycle.SIGNAL_EXIT_BASE, "StartError", None,
                                     rfc3339(_now()), "", message=str(exc))
            self._after_exit(rt, pod, c, term, lifecycle.SIGNAL_EXIT_BASE, now, False)
            return
        if restarting:
            c.restart_count += 1
            c.backoff = lifecycle.after_restart(c.backoff, c.finished_mono, now,
                                                self.cfg.backoff)
        c.generation += 1
        c.proc, c.plan, c.started_at = proc, launch, started_at
        c.container_id = f"portico-lab://{proc.pid}"
        c.restart_at = None
        c.waiting = ("ContainerCreating", "")
        c.probe_specs = probes.container_probes(cspec)
        c.probe_states = {k: probes.initial(s, proc.started_mono)
                          for k, s in c.probe_specs.items()}
        log.info("container_started", pod=rt.key, container=c.name, pid=proc.pid,
                 restart_count=c.restart_count, argv0=launch.argv[0], uid=launch.uid)
        self.events.normal(pod, "Started", f"Started container {c.name}")

    def _watch_running(self, rt: PodRuntime, pod: Obj, c: ContainerRuntime, cspec: Obj,
                       now: float) -> None:
        assert c.proc is not None
        if c.kill_deadline is not None:
            if now >= c.kill_deadline:
                runtime.kill_group(c.proc.pid)
            return
        v = c.verdict()
        if v.kill:
            grace = self._grace(pod, c, v.kill)
            self.events.normal(pod, "Killing", f"Container {c.name} failed "
                                               f"{v.kill.split()[0].lower()} probe, will be "
                                               "restarted")
            log.info("container_killing", pod=rt.key, container=c.name, reason=v.kill,
                     grace_s=grace)
            c.killed_by_probe = True
            c.kill_deadline = now + grace
            runtime.send(c.proc.pid, signal.SIGTERM)
            return
        for kind, spec_ in c.probe_specs.items():
            st = c.probe_states[kind]
            if probes.active(kind, v.started) and probes.due(st, now):
                c.probe_states[kind] = probes.begin(st)
                self._submit_probe(rt, c, cspec, kind, spec_)

    @staticmethod
    def _grace(pod: Obj, c: ContainerRuntime, reason: str) -> float:
        kind = probes.LIVENESS if reason.startswith("Liveness") else probes.STARTUP
        spec_ = c.probe_specs.get(kind)
        if spec_ is not None and spec_.termination_grace is not None:
            return float(spec_.termination_grace)
        value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return float(value) if isinstance(value, int) else 30.0

    # ---- probes -----------------------------------------------------------------------------

    def _submit_probe(self, rt: PodRuntime, c: ContainerRuntime, cspec: Obj, kind: str,
                      spec_: probes.ProbeSpec) -> None:
        pod_ip = rt.pod_ips[0] if rt.pod_ips else ""
        launch, generation, image = c.plan, c.generation, c.image

        def run() -> None:
            try:
                ok, msg = self._probe(spec_, pod_ip, cspec, launch, image)
            except Exception as exc:
                ok, msg = False, f"probe error: {exc}"
            self.results.put((rt.uid, c.name, generation, kind, ok, msg))
            self.wake.set()

        with contextlib.suppress(RuntimeError):  # the pool is shutting down
            self.pool.submit(run)

    def _probe(self, spec_: probes.ProbeSpec, pod_ip: str, cspec: Obj,
               launch: plan.LaunchPlan | None, image: str) -> tuple[bool, str]:
        action = spec_.action
        if isinstance(action, probes.HttpGet | probes.TcpSocket):
            port = probes.port_number(action.port, cspec)
            if port is None:
                return False, f"port {action.port!r} is not a port of the container"
            host = action.host or pod_ip
            if isinstance(action, probes.HttpGet):
                return runtime.http_probe(action, host, port, spec_.timeout)
            return runtime.tcp_probe(host, port, spec_.timeout)
        if isinstance(action, probes.Exec):
            if launch is None:
                return False, "container not running"
            exec_plan = plan.plan_exec(launch, image, list(action.command), self.box)
            if isinstance(exec_plan, plan.Failure):
                return False, exec_plan.message
            return self.launcher.run_exec(exec_plan, spec_.timeout)
        return False, f"{action.what} probes are not supported by the lab node agent"

    def _drain_probe_results(self) -> None:
        now = time.monotonic()
        while True:
            try:
                uid, name, generation, kind, ok, msg = self.results.get_nowait()
            except queue.Empty:
                return
            rt = self.pods.get(uid)
            c = rt.containers.get(name) if rt else None
            if rt is None or c is None or c.generation != generation or c.proc is None:
                continue  # a result about a container that is gone or was restarted
            spec_ = c.probe_specs[kind]
            before = c.probe_states[kind].result
            c.probe_states[kind] = probes.record(spec_, c.probe_states[kind], ok, now, msg)
            if not ok and self.informer is not None:
                pod = self.informer.store.get(rt.namespace, rt.name)
                if pod is not None:
                    self.events.warning(pod, "Unhealthy",
                                        f"{kind.capitalize()} probe failed: {msg}")
            if before != c.probe_states[kind].result:
                log.info("probe_result_changed", pod=rt.key, container=name, probe=kind,
                         result=c.probe_states[kind].result, message=msg[:200])

    # ---- termination ------------------------------------------------------------------------

    def _sync_terminating(self, rt: PodRuntime, pod: Obj, now: float) -> None:
        meta = pod.get("metadata") or {}
        if not rt.terminating:
            grace = meta.get("deletionGracePeriodSeconds")
            if not isinstance(grace, int):
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
            rt.terminating = True
            rt.term_deadline = now + float(grace if isinstance(grace, int) else 30)
            for c in rt.running():
                assert c.proc is not None
                self.events.normal(pod, "Killing", f"Stopping container {c.name}")
                runtime.send(c.proc.pid, signal.SIGTERM)
            log.info("pod_terminating", pod=rt.key, grace_s=grace,
                     containers=[c.name for c in rt.running()])
        for c in rt.containers.values():
            self._reap(rt, pod, c, now, terminating=True)
        if rt.running():
            if now >= rt.term_deadline and not rt.killed:
                rt.killed = True
                for c in rt.running():
                    assert c.proc is not None
                    log.info("container_sigkill", pod=rt.key, container=c.name, pid=c.proc.pid)
                    runtime.kill_group(c.proc.pid)
            return
        self._teardown_sandbox(rt)
        # The final status first (terminal phase, containers terminated), then the delete:
        # watchers see how the pod ended before it disappears.
        self._write_status(rt, pod, terminal=True)
        self.api.delete_pod_now(rt.namespace, rt.name, rt.uid)
        rt.deleted = True
        log.info("pod_deleted", pod=rt.key)

    def _sync_gone(self, rt: PodRuntime) -> None:
        """The pod object is gone (deleted with grace 0 by someone, or by us)."""
        now = time.monotonic()
        if not rt.terminating:
            rt.terminating = True
            rt.term_deadline = now + FORCED_GRACE_S
            for c in rt.running():
                assert c.proc is not None
                runtime.send(c.proc.pid, signal.SIGTERM)
        for c in rt.running():
            assert c.proc is not None
            if c.proc.popen.poll() is not None:
                runtime.kill_group(c.proc.pid)
                self.ledger.remove_proc(c.proc.pid)
                c.proc = None
            elif now >= rt.term_deadline:
                runtime.kill_group(c.proc.pid)
        if rt.running():
            return
        self._teardown_sandbox(rt)
        del self.pods[rt.uid]
        log.info("pod_forgotten", pod=rt.key, uid=rt.uid)

    # ---- status -----------------------------------------------------------------------------

    def _write_status(self, rt: PodRuntime, pod: Obj, terminal: bool = False) -> None:
        rv = resource_version(pod)
        current = rt.written if rt.written is not None and rv == rt.rv_at_write else \
            (pod.get("status") or {})
        views = [c.view() for c in rt.containers.values()]
        desired = status.pod_status(
            {**pod, "status": current}, views, pod_ips=rt.pod_ips,
            host_ips=list(self.cfg.node_ips), start_time=rt.start_time,
            sandbox_ready=rt.sandbox_ready, now=rfc3339(_now()), terminal=terminal)
        patch = status.status_patch(current, desired)
        if patch is None or (not terminal and time.monotonic() < rt.status_retry):
            return
        try:
            out = self.api.patch_pod_status(rt.namespace, rt.name, patch)
        except NotFound:
            return
        except KubeError as exc:
            # Refused or failed: not again on every pass (the loop runs five times a second).
            rt.status_retry = time.monotonic() + RETRY_S
            log.warning("pod_status_write_failed", pod=rt.key, error=str(exc))
            return
        rt.written = out.get("status") or {}
        rt.rv_at_write = rv
        log.debug("pod_status_written", pod=rt.key, phase=desired.get("phase"),
                  fields=sorted(patch["status"]))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _write_volume(d: Path, vol: plan.Volume) -> None:
    """An emptyDir (0777, as the kubelet makes it), or files rewritten when they changed
    (temporary file + rename: a reader never sees half a token)."""
    if vol.empty_dir:
        if not d.is_dir():
            d.mkdir(parents=True)
            os.chmod(d, 0o2777 if vol.fs_group is not None else 0o777)
            if vol.fs_group is not None:
                os.chown(d, -1, vol.fs_group)
        return
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    for f in vol.files:
        rel = Path(f.path)
        if rel.is_absolute() or ".." in rel.parts or not f.path:
            raise NodeAgentError(f"volume {vol.name}: bad item path {f.path!r}")
        target = d / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = f.mode | (0o040 if vol.fs_group is not None else 0)
        try:
            same = target.read_bytes() == f.data
        except OSError:
            same = False
        if not same:
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(f.data)
            os.chmod(tmp, mode)
            if vol.fs_group is not None:
                os.chown(tmp, -1, vol.fs_group)
            tmp.replace(target)

