"""10,000 LoadBalancer Services on the real control plane: how fast does every one get its VIP?

Run: ``.venv/bin/python -m bench.real_scale [--services 10000] [--workers 12] [--admin]``

What it does, all on loopback (lab rules: addresses from the benchmarking range only):
1. starts ``lab.controlplane.ControlPlane`` (etcd + kube-apiserver + controller-manager +
   scheduler), applies the CRDs, creates an IPAddressPool of 198.18.0.0/16;
2. starts ``portico controller`` as a process. Identity: by default a ServiceAccount bound to
   the chart's own controller ClusterRole (rendered from charts/portico/templates/
   rbac-controller.yaml by the Helm engine), so the figures include RBAC and API Priority and
   Fairness as a real install sees them (a ServiceAccount lands in APF's ``workload-low``
   level; admin would be ``exempt``); ``--admin`` runs it as cluster admin instead;
3. creates N Services of type LoadBalancer from a pool of ``--workers`` threads, as fast as
   the server takes them. ``allocateLoadBalancerNodePorts: false``: with NodePorts, 10,000
   Services cannot exist at all (the default NodePort range 30000-32767 holds 2,768 ports).
   No selector by default (``--selector`` adds one): with a selector kube-controller-manager
   writes an EndpointSlice per Service, 10,000 more writes on the same two cores that are not
   the controller's;
4. measures the time until every Service shows its address (from the first create and from
   the last), the controller's status writes per second (server-side, from the audit log),
   CPU seconds (utime+stime from /proc/PID/stat) and peak RSS (VmHWM) of the controller,
   kube-apiserver and etcd, and of this load generator;
5. restarts the controller (SIGTERM, start again): time to /readyz, time until it has
   processed every Service (work queue drained), and how many addresses changed (must be 0).

``--backlog`` creates every Service first and starts the controller afterwards: that
isolates the controller's own throughput from the server's create rate.

Reading the figures: creates get slower as N grows even with no controller running (about
350/s for the first thousands, about 100/s near 10,000 here): kube-apiserver's ClusterIP
allocator (IPAddress API) counts every allocated IPAddress twice per Service create for its
metrics (``ipallocator.go``: ``Used()`` and ``Free()`` list them all), so creating N Services
costs O(N^2) on the server. On one 2-core machine the control plane, the controller, this
load generator and whatever else runs there share the CPU: "machine busy" and "not ours"
in the table say how much of it the run had.

Prints a table, writes ``bench/results/real_scale-N-<time>.json`` and a PNG of created /
assigned Services over time. Every loop is bounded in count and time; every process this
script starts is stopped by its PID (and the control plane stopped) on success, failure and
Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families

from bench.procstat import cpu_seconds, machine_cpu_seconds, memory_mb
from common.errors import KubeError, Throttled
from common.kube.client import KubeClient
from common.kube.informer import Informer
from common.kube.resources import IPADDRESSPOOLS, NAMESPACES, SERVICES
from common.logs import configure
from lab.controlplane import chart
from lab.controlplane.cluster import ControlPlane, free_port

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "portico"
RESULTS_DIR = REPO / "bench" / "results"
NAMESPACE = "bench"
RELEASE = "portico"
RELEASE_NAMESPACE = "portico-system"
# Benchmarking range (RFC 2544), lower /16: the service CIDR is the upper one (198.19/16).
POOL_RANGE = "198.18.0.0/16"
# Bounds of every wait (seconds). The goal is 30 s for 10,000; these only stop a stuck run.
CREATE_BUDGET_S = 600.0
ASSIGN_BUDGET_S = 900.0
READY_BUDGET_S = 120.0
PROCESS_BUDGET_S = 600.0
STOP_GRACE_S = 30.0
CREATE_ATTEMPTS = 8
SAMPLE_EVERY_S = 0.25

Obj = dict[str, Any]


class BenchError(Exception):
    """The run could not complete (a bound was hit, a process died)."""


# ----- the controller process -----------------------------------------------------------------

@dataclass
class ControllerProc:
    kubeconfig: Path
    log: Path
    log_level: str = "info"
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise BenchError("controller not started")
        return self.popen.pid

    def start(self) -> None:
        argv = [sys.executable, "-m", "portico", "controller", "--kubeconfig", str(self.kubeconfig),
                "--no-leader-elect", "--metrics-addr", f"127.0.0.1:{self.port}",
                "--log-level", self.log_level, *self.extra_args]
        with self.log.open("ab") as fh:
            self.started = time.time()
            self.popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=REPO,
                                          start_new_session=True)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace").splitlines()[-20:]
            raise BenchError(f"controller exited; log {self.log}:\n" + "\n".join(tail))

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            return e.code, b""
        except OSError:
            return 0, b""

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, body = self._get("/metrics")
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        if code != 200:
            return out
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        return out

    def stop(self, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_S) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig)
        try:
            return self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(timeout=grace)


def metric_sum(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
               **labels: str) -> float:
    return sum(v for (n, lab), v in m.items()
               if n == name and all(dict(lab).get(k) == want for k, want in labels.items()))


# ----- set-up ---------------------------------------------------------------------------------

def controller_identity(cp: ControlPlane, run_dir: Path) -> tuple[Path, str]:
    """The chart's controller ServiceAccount + RBAC (rendered by the real Helm CLI) on the real
    server; returns a token kubeconfig and the user name the audit log shows."""
    docs = chart.identity_objects(chart.helm_template(
        RELEASE, RELEASE_NAMESPACE, "--set", "controller.leaderElection.enabled=false",
        "--set", "speaker.enabled=false", "--set", "ingress.enabled=false"))
    cp.api("POST", "/api/v1/namespaces", {"metadata": {"name": RELEASE_NAMESPACE}})
    sa_name = ""
    for doc in docs:
        ns = doc["metadata"].get("namespace", RELEASE_NAMESPACE)
        cp.api("POST", chart.collection_path(doc, ns), doc)
        if doc["kind"] == "ServiceAccount":
            sa_name = doc["metadata"]["name"]
    if not sa_name:
        raise BenchError("the chart rendered no controller ServiceAccount")
    path, _ = cp.token_kubeconfig(run_dir / "controller.kubeconfig", RELEASE_NAMESPACE,
                                  sa_name)
    return path, f"system:serviceaccount:{RELEASE_NAMESPACE}:{sa_name}"


# ----- load generator -------------------------------------------------------------------------

def service_body(i: int, selector: bool) -> Obj:
    spec: Obj = {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}
    if selector:
        spec["selector"] = {"app": f"svc-{i:05d}"}
    return {"metadata": {"name": f"svc-{i:05d}", "namespace": NAMESPACE}, "spec": spec}


def create_services(client: KubeClient, n: int, workers: int, selector: bool,
                    retries: Counter[str]) -> list[float]:
    """Create N Services with ``workers`` concurrent requests; returns each create's end time."""
    deadline = time.monotonic() + CREATE_BUDGET_S
    stop = threading.Event()  # set on any failure or Ctrl-C: the queued creates are skipped

    def one(i: int) -> float:
        for attempt in range(CREATE_ATTEMPTS):
            if stop.is_set():
                raise BenchError("stopped")
            if time.monotonic() > deadline:
                raise BenchError(f"creating {n} Services took over {CREATE_BUDGET_S} s")
            try:
                client.create(SERVICES, service_body(i, selector), NAMESPACE)
                return time.time()
            except Throttled as e:
                retries["throttled"] += 1
                time.sleep(min(e.retry_after or 0.05 * 2 ** attempt, 2.0))
            except KubeError as e:
                if e.status == 409:  # an earlier attempt did land (timeout after commit)
                    return time.time()
                if e.status is not None and e.status < 500:
                    raise
                retries[str(e.status or "error")] += 1
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
        raise BenchError(f"svc-{i:05d}: not created after {CREATE_ATTEMPTS} attempts")

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="create")
    try:
        return list(pool.map(one, range(n)))
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


class Progress:
    """Watches the benchmark namespace; remembers when each Service first showed an address."""

    def __init__(self, client: KubeClient) -> None:
        self._lock = threading.Lock()
        self.assigned: dict[str, float] = {}
        self.informer = Informer(client, SERVICES, namespace=NAMESPACE, on_event=self._on,
                                 name="bench-progress")

    def _on(self, etype: str, obj: Obj) -> None:
        if etype == "DELETED":
            return
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if ingress:
            name = str((obj.get("metadata") or {}).get("name"))
            now = time.time()
            with self._lock:
                self.assigned.setdefault(name, now)

    def count(self) -> int:
        with self._lock:
            return len(self.assigned)


class Sampler:
    """(t, assigned) every SAMPLE_EVERY_S for the timeline, until stopped."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        limit = int((CREATE_BUDGET_S + ASSIGN_BUDGET_S) / SAMPLE_EVERY_S)
        for _ in range(limit):
            self.samples.append((time.time(), self.progress.count()))
            if self._stop.wait(SAMPLE_EVERY_S):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_until(check: Any, budget: float, what: str, alive: Any = None,
               interval: float = 0.05) -> float:
    """Poll ``check()`` until truthy; returns the time.time() it became true."""
    deadline = time.monotonic() + budget
    while True:
        if check():
            return time.time()
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {budget} s")
        time.sleep(interval)


def snapshot(client: KubeClient) -> dict[str, tuple[str, ...]]:
    items, _ = client.list(SERVICES, namespace=NAMESPACE, limit=500)
    out: dict[str, tuple[str, ...]] = {}
    for obj in items:
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        out[str(obj["metadata"]["name"])] = tuple(str(i.get("ip")) for i in ingress)
    return out


# ----- audit log ------------------------------------------------------------------------------

def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_summary(cp: ControlPlane, controller_user: str | None, start: float,
                  end: float) -> Obj:
    """Server-side view of the controller's writes in [start, end] (stageTimestamp)."""
    status_ok: list[float] = []
    codes: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for ev in cp.audit_events():
        if ev.get("stage") != "ResponseComplete":
            continue
        t = _ts(str(ev.get("stageTimestamp")))
        if not start <= t <= end:
            continue
        user = str((ev.get("user") or {}).get("username"))
        ref = ev.get("objectRef") or {}
        verb = str(ev.get("verb"))
        res = str(ref.get("resource"))
        sub = ref.get("subresource")
        code = str((ev.get("responseStatus") or {}).get("code"))
        if controller_user is not None and user != controller_user:
            continue
        if res == "services" and sub == "status" and verb == "patch":
            codes[code] += 1
            if code == "200":
                status_ok.append(t)
        elif controller_user is not None or (res, verb) != ("services", "create"):
            other[f"{verb} {res}{'/' + sub if sub else ''} {code}"] += 1
    status_ok.sort()
    span = status_ok[-1] - status_ok[0] if len(status_ok) > 1 else 0.0
    per_second = Counter(int(t) for t in status_ok)
    return {
        "service_status_patches_by_code": dict(codes),
        "service_status_patches_ok": len(status_ok),
        "status_writes_per_s_mean": round(len(status_ok) / span, 1) if span else None,
        "status_writes_per_s_peak_1s": max(per_second.values()) if per_second else 0,
        "first_status_write": status_ok[0] if status_ok else None,
        "last_status_write": status_ok[-1] if status_ok else None,
        "other_writes": dict(other.most_common()),
    }


# ----- the run --------------------------------------------------------------------------------

def components(cp: ControlPlane) -> dict[str, int]:
    pids = {"bench (load generator)": os.getpid()}
    for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
        pid = cp.procs[name].pid
        if pid is not None:
            pids[name] = pid
    return pids


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def run(args: argparse.Namespace, cp: ControlPlane, ctrls: list[ControllerProc],
        stopping: list[Informer]) -> Obj:
    n = args.services
    run_dir = cp.run_dir
    t_setup = time.monotonic()
    cp.install_portico_crds()
    admin = KubeClient.from_environment(kubeconfig=str(cp.kubeconfig))
    admin.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
    admin.create(IPADDRESSPOOLS, {"metadata": {"name": "bench"},
                                  "spec": {"addresses": [POOL_RANGE]}})
    if args.admin:
        kubeconfig, user, identity = cp.kubeconfig, None, "cluster admin (system:masters)"
    else:
        kubeconfig, sa_user = controller_identity(cp, run_dir)
        user, identity = sa_user, f"{sa_user} bound to the chart's controller ClusterRole"
    ctrl = ControllerProc(kubeconfig, run_dir / "controller-1.log", args.log_level,
                          args.controller_args)
    ctrls.append(ctrl)
    if not args.backlog:
        ctrl.start()
        wait_until(ctrl.ready, READY_BUDGET_S, "controller /readyz", ctrl.check_alive)
    setup_s = time.monotonic() - t_setup

    progress = Progress(admin)
    stopping.append(progress.informer)
    progress.informer.start()
    if not progress.informer.wait_for_sync(60):
        raise BenchError("progress informer did not sync")
    pids = components(cp)
    cpu0 = cpu_of(pids)
    machine0 = machine_cpu_seconds()
    ctrl_cpu0 = cpu_seconds(ctrl.pid) if ctrl.alive() else 0.0
    sampler = Sampler(progress)
    sampler.start()
    retries: Counter[str] = Counter()
    print(f"creating {n} Services with {args.workers} concurrent requests"
          f"{' (controller not running yet)' if args.backlog else ''} ...", flush=True)
    t_first = time.time()
    created = create_services(admin, n, args.workers, args.selector, retries)
    t_last_create = max(created)
    print(f"created in {t_last_create - t_first:.1f} s; waiting for addresses ...", flush=True)
    t_ctrl_ready = None
    cpu_mid = cpu_of(pids)
    machine_mid = machine_cpu_seconds()
    if args.backlog:
        ctrl.start()
        t_ctrl_ready = wait_until(ctrl.ready, READY_BUDGET_S, "controller /readyz",
                                  ctrl.check_alive, interval=0.02)
    wait_until(lambda: progress.count() >= n, ASSIGN_BUDGET_S,
               f"all {n} Services assigned", ctrl.check_alive, interval=0.02)
    t_all = max(progress.assigned.values())
    sampler.stop()
    # Let the debounced pool status write and the last Events land before reading CPU.
    time.sleep(1.5)
    cpu1 = cpu_of(pids)
    machine1 = machine_cpu_seconds()
    t_cpu1 = time.time()
    cpu0["controller"], cpu1["controller"] = ctrl_cpu0, cpu_seconds(ctrl.pid)
    pids["controller"] = ctrl.pid
    rss1 = {name: memory_mb(pid, "VmHWM") for name, pid in pids.items()}
    ours = sum(cpu1[k] - cpu0[k] for k in cpu0)
    m1 = ctrl.metrics()
    audit1 = audit_summary(cp, user, t_first - 1, time.time())
    before = snapshot(admin)
    if len(before) != n or not all(before.values()):
        raise BenchError(f"snapshot: {len(before)} Services, "
                         f"{sum(1 for v in before.values() if not v)} without address")
    dup = n - len({ip for ips in before.values() for ip in ips})
    phase1: Obj = {
        "create_s": round(t_last_create - t_first, 2),
        "create_per_s": round(n / max(t_last_create - t_first, 1e-9), 1),
        "create_retries": dict(retries),
        "all_assigned_from_first_create_s": round(t_all - t_first, 2),
        "all_assigned_from_last_create_s": round(t_all - t_last_create, 2),
        "controller_started_after_creates": args.backlog,
        "all_assigned_from_controller_start_s": round(t_all - ctrl.started, 2),
        "all_assigned_from_controller_ready_s": (round(t_all - t_ctrl_ready, 2)
                                                 if t_ctrl_ready else None),
        "assign_latency_p50_s": _pct([progress.assigned[f"svc-{i:05d}"] - created[i]
                                      for i in range(n)], 50),
        "assign_latency_p99_s": _pct([progress.assigned[f"svc-{i:05d}"] - created[i]
                                      for i in range(n)], 99),
        "duplicate_addresses": dup,
        "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
        "machine_busy_cpu_s": round(machine1 - machine0, 2),
        "other_processes_cpu_s": round(machine1 - machine0 - ours, 2),
        "cpu_window_s": round(t_cpu1 - t_first, 2),
        # Backlog mode: what assigning alone cost (the controller ran only in this phase).
        "assign_phase_cpu_s": ({k: round(cpu1[k] - cpu_mid.get(k, ctrl_cpu0), 2)
                                for k in cpu1} | {
                                   "machine": round(machine1 - machine_mid, 2)}
                               if args.backlog else None),
        "peak_rss_mb": {k: round(v, 1) for k, v in rss1.items()},
        "controller_cpu_ms_per_service": round((cpu1["controller"] - cpu0["controller"])
                                               / n * 1000, 3),
        "controller_requests": {
            f"{dict(lab)['verb']} {dict(lab)['resource']} {dict(lab)['code']}": v
            for (name, lab), v in m1.items() if name == "portico_kube_requests_total"},
        "audit": audit1,
    }
    timeline = {"t0": t_first,
                "created": [round(t - t_first, 3) for t in sorted(created)],
                "assigned_samples": [(round(t - t_first, 3), c) for t, c in sampler.samples]}

    # ---- restart at N ----
    print("restarting the controller (SIGTERM, start again) ...", flush=True)
    t_term = time.time()
    rc = ctrl.stop(signal.SIGTERM)
    t_exited = time.time()
    ctrl2 = ControllerProc(kubeconfig, run_dir / "controller-2.log", args.log_level,
                           args.controller_args)
    ctrls.append(ctrl2)
    ctrl2.start()
    cpu2_0 = cpu_seconds(ctrl2.pid)
    t_ready = wait_until(ctrl2.ready, READY_BUDGET_S, "restarted controller /readyz",
                         ctrl2.check_alive, interval=0.02)

    def drained() -> bool:
        m = ctrl2.metrics()
        handled = metric_sum(m, "portico_workqueue_outcomes_total", queue="controller")
        depth = metric_sum(m, "portico_workqueue_depth", queue="controller")
        return handled >= n and depth == 0

    t_processed = wait_until(drained, PROCESS_BUDGET_S, "restarted controller drained",
                             ctrl2.check_alive, interval=0.05)
    time.sleep(1.5)  # anything it would still write lands now, and is counted below
    m2 = ctrl2.metrics()
    after = snapshot(admin)
    changed = sorted(k for k in before if after.get(k) != before[k])
    restart: Obj = {
        "sigterm_exit_code": rc,
        "sigterm_to_exit_s": round(t_exited - t_term, 2),
        "start_to_ready_s": round(t_ready - ctrl2.started, 2),
        "start_to_processed_all_s": round(t_processed - ctrl2.started, 2),
        "controller_cpu_s_to_processed": round(cpu_seconds(ctrl2.pid) - cpu2_0, 2),
        "controller_peak_rss_mb": round(memory_mb(ctrl2.pid, "VmHWM"), 1),
        "addresses_changed": len(changed),
        "changed_examples": changed[:10],
        "service_status_patches": metric_sum(m2, "portico_kube_requests_total",
                                             verb="PATCH", resource="services"),
        "events_created": metric_sum(m2, "portico_kube_requests_total", verb="POST",
                                     resource="events"),
        "audit": audit_summary(cp, user, ctrl2.started, time.time()),
    }
    return {
        "services": n, "workers": args.workers, "selector": args.selector,
        "backlog": args.backlog, "controller_args": list(args.controller_args),
        "controller_identity": identity, "controller_log_level": args.log_level,
        "setup_s": round(setup_s, 1),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(),
                    "note": "one machine: control plane, controller and load generator "
                            "share these cores"},
        "create_and_assign": phase1, "restart": restart, "timeline": timeline,
    }


def _pct(values: list[float], p: int) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(len(s) * p / 100))], 3) if s else 0.0


# ----- output ---------------------------------------------------------------------------------

def table(r: Obj) -> str:
    p, rs = r["create_and_assign"], r["restart"]
    a = p["audit"]
    rows: list[tuple[str, str]] = [
        ("Services (LoadBalancer, no NodePorts)", f"{r['services']}"),
        ("controller identity", r["controller_identity"]),
        ("create: wall / rate", f"{p['create_s']} s / {p['create_per_s']} per s "
                                f"({r['workers']} concurrent)"),
        ("all assigned, from first create", f"{p['all_assigned_from_first_create_s']} s"),
        ("all assigned, from last create", f"{p['all_assigned_from_last_create_s']} s"),
        ("all assigned, from controller start"
         + (" (started after the creates)" if p["controller_started_after_creates"] else ""),
         f"{p['all_assigned_from_controller_start_s']} s"),
        ("create -> address p50 / p99", f"{p['assign_latency_p50_s']} / "
                                        f"{p['assign_latency_p99_s']} s"),
        ("status writes (200) / mean rate / peak 1 s",
         f"{a['service_status_patches_ok']} / {a['status_writes_per_s_mean']} per s / "
         f"{a['status_writes_per_s_peak_1s']}"),
        ("status patches by code", json.dumps(a["service_status_patches_by_code"])),
        ("duplicate addresses", str(p["duplicate_addresses"])),
    ]
    for name, cpu in p["cpu_s"].items():
        rows.append((f"CPU s / peak RSS MB: {name}",
                     f"{cpu} / {p['peak_rss_mb'].get(name, 0)}"))
    if p["assign_phase_cpu_s"]:
        rows.append(("assigning only: CPU s", ", ".join(
            f"{k.split(' ')[0]} {v}" for k, v in p["assign_phase_cpu_s"].items())))
    rows += [
        (f"machine busy CPU s in {p['cpu_window_s']} s ({r['machine']['cpus']} cores: "
         f"{(r['machine']['cpus'] or 1) * p['cpu_window_s']:.0f} max)",
         f"{p['machine_busy_cpu_s']} (not ours: {p['other_processes_cpu_s']})"),
        ("controller CPU per Service", f"{p['controller_cpu_ms_per_service']} ms"),
        ("restart: SIGTERM -> exit", f"{rs['sigterm_to_exit_s']} s (code "
                                     f"{rs['sigterm_exit_code']})"),
        ("restart: start -> /readyz", f"{rs['start_to_ready_s']} s"),
        ("restart: start -> all processed", f"{rs['start_to_processed_all_s']} s "
                                            f"({rs['controller_cpu_s_to_processed']} CPU s)"),
        ("restart: addresses changed", str(rs["addresses_changed"])),
        ("restart: status patches / events", f"{int(rs['service_status_patches'])} / "
                                             f"{int(rs['events_created'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def timeline_png(r: Obj, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = r["timeline"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    created = tl["created"]
    ax.plot(created, range(1, len(created) + 1), label="created")
    xs = [t for t, _ in tl["assigned_samples"]]
    ys = [c for _, c in tl["assigned_samples"]]
    ax.plot(xs, ys, label="address in status")
    ax.set_xlabel("seconds since first create")
    ax.set_ylabel("Services")
    ax.set_title(f"{r['services']} LoadBalancer Services, real kube-apiserver "
                 f"({r['machine']['cpus']} CPUs shared)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=12,
                    help="concurrent create requests of the load generator")
    ap.add_argument("--admin", action="store_true",
                    help="run the controller as cluster admin instead of its ServiceAccount")
    ap.add_argument("--selector", action="store_true",
                    help="give every Service a selector (kube-controller-manager then writes "
                         "an EndpointSlice per Service)")
    ap.add_argument("--backlog", action="store_true",
                    help="create every Service first, then start the controller: measures "
                         "the controller's own throughput, not the server's create rate")
    ap.add_argument("--controller-args", default="", type=lambda s: tuple(shlex.split(s)),
                    help="extra flags for `portico controller`, e.g. '--workers 1'")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.services <= 60_000:  # the pool and the service CIDR hold ~65k each
        ap.error("--services must be within 1..60000")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    configure("bench", "warning")  # the progress informer's own logs are noise here
    cp = ControlPlane(keep_logs=args.keep_logs)
    ctrls: list[ControllerProc] = []
    informers: list[Informer] = []
    ok = False
    try:
        t = time.monotonic()
        cp.start()
        print(f"control plane up in {time.monotonic() - t:.1f} s ({cp.url})", flush=True)
        result = run(args, cp, ctrls, informers)
        ok = True
    except (BenchError, KubeError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopping every process this run started", file=sys.stderr)
        return 130
    finally:
        for inf in informers:
            inf.stop()
        for c in ctrls:
            c.stop()
        if not ok:
            cp.keep_logs = True
        cp.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out / f"real_scale-{args.services}-{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    png = out.with_suffix(".png")
    timeline_png(result, png)
    print()
    print(table(result))
    print(f"\nresults: {out}\ntimeline: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
