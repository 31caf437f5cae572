"""User-space instructions per proxied request: HAProxy configs vs nginx, counted, not timed.

    .venv/bin/python bench/proxy_instructions.py [--seconds 4] [--haproxy PATH]

Why: bench/ingress.py's CPU time per request moves by a few per cent from run to run on this
shared 2-core VM, more than the differences between configs. Valgrind's callgrind counts the
instructions a process executes in user space, which load does not change: each proxy runs
under callgrind, its counters are zeroed once it serves, wrk (1 thread, 32 keep-alive
connections, ``--seconds``) sends ``GET /`` with the bench host, the counters are dumped, and
the total is divided by the requests wrk completed. Kernel work (the TCP stack, ~75-85 % of
either proxy's CPU time, see bench/ingress.py) is not counted: this says where a proxy's own
code spends, not what a request costs in all.

Rows (the same shapes as bench/ingress.py section 1, the same backend: an HAProxy answering
200 itself, run natively):
* hand-written HAProxy, and with X-Forwarded-For/-Proto (``bench.ingress.hand_config``);
* Portico's rendered config for one host (rendered by the real Syncer, run with the flags
  ``ingress.haproxy`` starts HAProxy with, and once without them);
* nginx as ingress-nginx renders one host (``bench.ingress.NGINX_BASE`` with the minimal
  header set), single process (``master_process off``) so one process does all the work.
``--haproxy PATH`` runs the HAProxy rows with another binary (e.g. a newer build).

Then the same rows natively (no valgrind), each for ``--seconds`` under wrk, with the kernel's
side counted per request: system calls and context switches of the proxy's processes (perf
tracepoints ``raw_syscalls:sys_enter`` and ``sched:sched_switch``; skipped without perf) and
TCP segments sent on the machine (``nstat`` TcpOutSegs: wrk's, the proxy's and the
backend's, so ~4 per proxied request).

Needs valgrind (installed with apt-get when missing, as root). Every process is started here,
recorded by PID and killed at the end; ports are ephemeral on 127.0.0.1; each wrk run is
bounded by ``--seconds``. Writes ``bench/results/proxy-instructions-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ingress as B
from bench.procstat import process_tree
from ingress.haproxy import POOL_OPTIONS
from lab.ingress_kit import World, free_port, ingress, path, rule

RESULTS_DIR = Path(__file__).resolve().parent / "results"
START_TIMEOUT_S = 60.0  # a proxy under valgrind starts ~50x slower


@dataclass
class Row:
    label: str
    argv: list[str]
    cwd: Path
    port: int
    requests: int = 0
    per_request: float = 0.0


def _ensure_valgrind() -> None:
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return
    if os.geteuid() != 0:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    print("apt-get install valgrind", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                   stdout=subprocess.DEVNULL)


def _count(argv: list[str], cwd: Path, port: int, seconds: int) -> tuple[int, float]:
    """(requests, user-space instructions per request) of ``argv`` run under callgrind."""
    out = cwd / "callgrind.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             *argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    B.PROCS.append(proc)
    try:
        B.wait_http(port, B.HOST, lambda s, b: s == 200, timeout=START_TIMEOUT_S)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True,
                       check=True, timeout=60)
        text, requests = B.run_wrk(port, seconds)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True,
                       check=True, timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    if not requests:
        raise RuntimeError(f"wrk completed no request: {text[-300:]}")
    # The dump taken after the run (the last file written); its "totals:" line is the count
    # since the zeroing: the requests and the idle polling around them.
    dumps = sorted(glob.glob(f"{out}*"), key=os.path.getmtime)
    totals = re.search(r"^totals:\s+(\d+)", Path(dumps[-1]).read_text(), re.M)
    if not totals:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return requests, int(totals.group(1)) / requests


def _nstat_out_segs() -> int:
    out = subprocess.run(["nstat", "-az", "TcpOutSegs"], capture_output=True, text=True,
                         timeout=10).stdout
    m = re.search(r"^TcpOutSegs\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


def _kernel_side(rows: list[Row], seconds: int) -> dict[str, dict[str, float]]:
    """Per row, natively: syscalls, context switches and machine-wide TCP segments sent, per
    request."""
    perf = shutil.which("perf")
    print("== The kernel's side, natively (per request) ==")
    if not perf:
        print("  skipped: no perf")
        return {}
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        proc = subprocess.Popen(row.argv, cwd=row.cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        B.PROCS.append(proc)
        try:
            B.wait_http(row.port, B.HOST, lambda s, b: s == 200)
            stat = row.cwd / "perf-stat.txt"
            pids = ",".join(str(p) for p in process_tree(proc.pid))
            counter = subprocess.Popen(
                [perf, "stat", "-x,", "-o", str(stat), "-e",
                 "raw_syscalls:sys_enter,sched:sched_switch", "-p", pids],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            segs0 = _nstat_out_segs()
            _, n = B.run_wrk(row.port, seconds)
            segs = _nstat_out_segs() - segs0
            counter.send_signal(signal.SIGINT)
            counter.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        counts = {}
        for line in stat.read_text().splitlines():
            f = line.split(",")
            if len(f) > 2 and f[0].isdigit():
                counts[f[2]] = int(f[0])
        if not n:
            continue
        out[row.label] = {
            "syscalls": round(counts.get("raw_syscalls:sys_enter", 0) / n, 2),
            "context_switches": round(counts.get("sched:sched_switch", 0) / n, 2),
            "tcp_segments_machine": round(segs / n, 2)}
        k = out[row.label]
        print(f"  {row.label:<52}syscalls {k['syscalls']:5.2f}  context switches "
              f"{k['context_switches']:5.2f}  TCP segments {k['tcp_segments_machine']:5.2f}")
        time.sleep(0.5)
    return out


def _portico_conf(tmp: Path, backend: int) -> tuple[Path, int]:
    """Portico's rendered config for one host, copied out of a real Syncer's data plane."""
    syncer, st = B.portico_plane(tmp, "render")
    world = World()
    world.add({"metadata": {"name": "svc", "namespace": "default"},
               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend}]}})
    world.set_endpoints("svc", [("127.0.0.1", backend)])
    world.add(ingress("bench", [rule(B.HOST, path("/", "Prefix", "svc"))]))
    try:
        assert syncer.sync(world.snapshot()).error is None
        B.wait_http(st.http_port, B.HOST, lambda s, b: s == 200)
    finally:
        syncer.plane.stop()
    conf = tmp / "portico-conf"
    shutil.copytree(syncer.plane.conf, conf)
    return conf, st.http_port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=4, help="wrk duration per row")
    ap.add_argument("--haproxy", default="haproxy", help="HAProxy binary for the HAProxy rows")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args()
    for tool in ("haproxy", "wrk", "nginx"):
        if not shutil.which(tool):
            print(f"needs {tool} (scripts/install-deps.sh)")
            return 2
    _ensure_valgrind()
    tmp = Path(tempfile.mkdtemp(prefix="pi-instr-"))
    rows: list[Row] = []
    try:
        backend = B.fast_backend(tmp, "ok")
        conf, portico_port = _portico_conf(tmp, backend)
        hap = args.haproxy
        for headers in (False, True):
            port = free_port()
            d = tmp / f"hand-{headers}"
            d.mkdir()
            (d / "h.cfg").write_text(B.hand_config(port, backend, headers))
            label = "hand-written HAProxy" + (" + X-Fwd hdrs" if headers else "")
            rows.append(Row(label, [hap, "-f", "h.cfg"], d, port))
        rows.append(Row(f"Portico rendered config ({POOL_OPTIONS})",
                        [hap, POOL_OPTIONS, "-f", "haproxy.cfg"], conf, portico_port))
        rows.append(Row("Portico rendered config (no -dM)", [hap, "-f", "haproxy.cfg"], conf,
                        portico_port))
        port = free_port()
        d = tmp / "nginx-min"
        d.mkdir()
        (d / "nginx.conf").write_text(B.NGINX_BASE.format(
            d=d, port=port, backend=backend, host=B.HOST, headers=B.NGINX_MIN_HEADERS)
            .replace("master_process on;", "master_process off;"))
        rows.append(Row("nginx, ingress-nginx minimal",
                        ["nginx", "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")], d,
                        port))
        print(f"== User-space instructions per request (callgrind; wrk -t1 -c32 keep-alive, "
              f"{args.seconds} s per row) ==")
        for row in rows:
            row.requests, row.per_request = _count(row.argv, row.cwd, row.port, args.seconds)
            time.sleep(0.5)  # the port of a killed proxy is reused by the next Portico row
        base = rows[-1].per_request
        for row in rows:
            print(f"  {row.label:<52}{row.per_request:>9.0f}  x{row.per_request / base:.2f} "
                  f"nginx   ({row.requests} requests)")
        kernel = _kernel_side(rows, args.seconds)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"proxy-instructions-{stamp}.json"
        out.write_text(json.dumps({
            "seconds": args.seconds, "versions": B.versions(), "haproxy": hap,
            "rows": [{"label": r.label, "requests": r.requests,
                      "instructions_per_request": round(r.per_request)} for r in rows],
            "kernel_side_per_request": kernel},
            indent=1) + "\n")
        print(f"  results: {out}")
    finally:
        for p in B.PROCS:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
