"""Ingress tier benchmark: proxy overhead, endpoint-change latency, 10,000-Ingress scale, RSS.

Run:  .venv/bin/python bench/ingress.py [--ingresses 10000] [--seconds 5] [--rounds 5]
      .venv/bin/python bench/ingress.py --skip 2,3,4          (throughput vs nginx only)

Prints, in one run:
1. req/s, p50/p99 latency and each proxy's CPU time per request (utime + stime of all its
   processes from /proc, divided by the requests wrk completed) for: direct to the backend;
   a minimal hand-written HAProxy config (also with the X-Forwarded-For/-Proto headers every
   ingress must send); Portico's rendered config; and nginx (Debian's) configured as
   ingress-nginx renders one host: keep-alive upstream pool, HTTP/1.1 upstream,
   ``Connection ""``, Host + X-Forwarded-For/-Host/-Proto ("nginx minimal"), and the same
   with ingress-nginx's full header set. 1 HAProxy thread vs 1 nginx worker, wrk -t1 -c32
   keep-alive, interleaved rounds in rotating order; ratios against nginx minimal are
   medians of per-round ratios. Target: Portico's CPU per request <= nginx minimal's.
   Neither side logs requests (Portico renders no access log; ingress-nginx's default access
   log is turned off here). No Lua in nginx (ingress-nginx runs its balancer in Lua: the
   hand-written upstream is the cheaper, stricter peer). The backend is a second HAProxy
   answering with ``http-request return``: a Python backend tops out far below the proxy
   and would hide its cost. Writes ``bench/results/ingress-throughput-<time>.json``.
2. Time from an endpoint change (Syncer.sync with the new EndpointSlice) to the first
   response from the new endpoint, seen by a client polling in a tight loop. Target < 100 ms.
3. With N Ingress objects (each its own host and Service): full render + haproxy -c + start,
   and a full render + check + seamless reload; then the time for one more Ingress (new
   Service) to serve. Targets: < 5 s and < 500 ms.
4. Controller RSS: a real ``portico ingress`` process against the API emulator holding the N
   Ingresses (plus N Services and N EndpointSlices), measured once it serves. Target < 300 MB.

All processes are started by this script, recorded by PID and killed at the end; every
port is ephemeral on 127.0.0.1; every load loop is bounded by count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import cpu_seconds, machine_cpu_seconds, memory_mb, process_tree
from ingress.core.render import Settings
from ingress.haproxy import DataPlane
from ingress.sync import Syncer
from lab.ingress_kit import World, free_port, ingress, path, rule

PROCS: list[subprocess.Popen[bytes]] = []
RESULTS_DIR = Path(__file__).resolve().parent / "results"
HOST = "bench.example.com"


def spawn(cmd: list[str], cwd: str | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, **kw)
    PROCS.append(p)
    return p


def wait_http(port: int, host: str, want: Callable[[int, bytes], bool],
              timeout: float = 30.0) -> float:
    """Poll until a response satisfies ``want``; returns the time it was first seen."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/", headers={"Host": host})
            r = c.getresponse()
            body = r.read()
            c.close()
            if want(r.status, body):
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.002)
    raise TimeoutError(f"port {port} host {host}: condition not met in {timeout}s")


def fast_backend(tmp: Path, body: str) -> int:
    """A second HAProxy answering 200 itself: ~10x faster than any Python backend."""
    port = free_port()
    cfg = tmp / f"backend-{body}.cfg"
    cfg.write_text(f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend f
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "{body}"
""")
    spawn(["haproxy", "-f", str(cfg)])
    wait_http(port, "x", lambda s, b: s == 200)
    return port


def hand_config(port: int, backend_port: int, headers: bool = False) -> str:
    """Minimal config; ``headers`` adds the X-Forwarded-For/-Proto an ingress must send.

    Same as Portico where it matters per request: one thread, HTTP keep-alive on both sides
    (HAProxy's default mode, which Portico keeps), one backend server."""
    extra = ("    option forwardfor\n    http-request set-header X-Forwarded-Proto http\n"
             if headers else "")
    return f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend f
    bind 127.0.0.1:{port}
{extra}    default_backend b
backend b
    server s1 127.0.0.1:{backend_port}
"""


def hand_written(tmp: Path, backend_port: int, headers: bool = False) -> tuple[int, int]:
    """``hand_config`` running; returns (port, PID)."""
    port = free_port()
    cfg = tmp / f"hand-{headers}.cfg"
    cfg.write_text(hand_config(port, backend_port, headers))
    p = spawn(["haproxy", "-f", str(cfg)])
    wait_http(port, HOST, lambda s, b: s == 200)
    return port, p.pid


NGINX_BASE = """daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    multi_accept on;
    worker_connections 16384;
    use epoll;
}}
http {{
    # ingress-nginx's http-level defaults (its nginx.tmpl with the default ConfigMap), minus
    # the access log: Portico logs no request either, so neither side pays for one.
    access_log off;
    tcp_nopush on;
    tcp_nodelay on;
    reset_timedout_connection on;
    keepalive_timeout 75s;
    keepalive_requests 1000;
    client_header_buffer_size 1k;
    large_client_header_buffers 4 8k;
    client_body_buffer_size 8k;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server_tokens off;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}
    map $http_x_request_id $req_id {{
        default $http_x_request_id;
        "" $request_id;
    }}
    upstream default-svc-80 {{
        server 127.0.0.1:{backend} max_fails=0 fail_timeout=0;
        keepalive 320;
        keepalive_timeout 60s;
        keepalive_requests 10000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        server_name {host};
        location / {{
            set $pass_access_scheme $scheme;
            set $pass_server_port $server_port;
            set $best_http_host $http_host;
            set $pass_port $pass_server_port;
{headers}
            proxy_connect_timeout 5s;
            proxy_send_timeout 60s;
            proxy_read_timeout 60s;
            proxy_buffering off;
            proxy_buffer_size 4k;
            proxy_buffers 4 4k;
            proxy_request_buffering on;
            proxy_http_version 1.1;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_redirect off;
            proxy_pass http://default-svc-80;
        }}
    }}
}}
"""
# What every ingress must send, as ingress-nginx sets it for one host, with an upstream
# keep-alive pool ('Connection ""' rather than "close").
NGINX_MIN_HEADERS = """\
            proxy_set_header Host $best_http_host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $best_http_host;
            proxy_set_header X-Forwarded-Proto $pass_access_scheme;"""
# ingress-nginx's full per-location header set (nginx.tmpl, default ConfigMap).
NGINX_FULL_HEADERS = """\
            proxy_set_header Host $best_http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Request-ID $req_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $best_http_host;
            proxy_set_header X-Forwarded-Port $pass_port;
            proxy_set_header X-Forwarded-Proto $pass_access_scheme;
            proxy_set_header X-Forwarded-Scheme $pass_access_scheme;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Scheme $pass_access_scheme;
            proxy_set_header X-Original-Forwarded-For $http_x_forwarded_for;
            proxy_set_header Proxy "";"""


def nginx_proxy(tmp: Path, backend_port: int, full: bool) -> tuple[int, list[int]]:
    """nginx as ingress-nginx renders one host: 1 worker, keep-alive upstream (no Lua).

    Returns (port, PIDs of the master and its worker)."""
    port = free_port()
    d = tmp / ("nginx-full" if full else "nginx-min")
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(NGINX_BASE.format(
        d=d, port=port, backend=backend_port, host=HOST,
        headers=NGINX_FULL_HEADERS if full else NGINX_MIN_HEADERS))
    p = spawn(["nginx", "-e", str(d / "error.log"), "-c", str(conf)])
    wait_http(port, HOST, lambda s, b: s == 200)
    return port, process_tree(p.pid)


Run = tuple[float, float, float, float, int]  # req/s, p50 ms, p99 ms, CPU us/request, errors


def proxy_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def run_wrk(port: int, seconds: int, latency: bool = False) -> tuple[str, int]:
    """wrk -t1 -c32 keep-alive, ``GET /`` with the bench host: (its output, requests done)."""
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s",
                          *(["--latency"] if latency else []), "-H", f"Host: {HOST}",
                          f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    count = re.search(r"(\d+) requests in", out)
    return out, int(count.group(1)) if count else 0


def wrk(port: int, seconds: int, pids: list[int]) -> Run:
    """(req/s, p50 ms, p99 ms, CPU microseconds per request of all the proxy's processes
    (master and workers; NaN without PIDs), non-2xx + socket errors)."""
    cpu0 = proxy_cpu(pids)
    out, count = run_wrk(port, seconds, latency=True)
    cpu = proxy_cpu(pids) - cpu0 if pids else float("nan")

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"(Non-2xx|Socket errors).*", out)
    nerr = 0
    if errors:
        print(f"    (wrk reported: {errors.group(0)})")
        nerr = sum(int(x) for x in re.findall(r"\d+", errors.group(0)))
    per_req = cpu / count * 1e6 if count else float("nan")
    return (float(rps.group(1)) if rps else 0.0, ms("50"), ms("99"), per_req, nerr)


def portico_plane(tmp: Path, name: str, spares: int = 16) -> tuple[Syncer, Settings]:
    settings = Settings(http_port=free_port(), https_port=free_port(),
                        bind_addresses=("127.0.0.1",), run_dir=str(tmp / name / "run"),
                        metrics_bind=None, threads=1, spare_backends=spares)
    plane = DataPlane(str(tmp / name))
    plane.prepare()
    return Syncer(plane, settings), settings


PATHS = (
    ("direct", "direct to backend", "wrk -> backend (an HAProxy answering 200 itself)"),
    ("hand", "hand-written HAProxy", "1 thread, keep-alive both sides, default_backend"),
    ("hand_h", "hand-written + X-Fwd hdrs", "the same + option forwardfor + "
     "set-header X-Forwarded-Proto http (what every ingress must send)"),
    ("portico", "Portico rendered config", "master-worker, 1 thread, the rendered routing "
     "rules + maps, X-Forwarded-For/-Proto, 4 server slots (1 ready)"),
    ("nginx_min", "nginx, ingress-nginx minimal", "1 worker, one server block, keep-alive "
     "upstream (320), HTTP/1.1, Connection \"\", Host + X-Forwarded-For/-Host/-Proto"),
    ("nginx_full", "nginx, ingress-nginx headers", "the same with ingress-nginx's full "
     "header set (X-Request-ID, X-Real-IP, X-Forwarded-*, X-Scheme, X-Original-URI, ...)"),
)
BASE = "nginx_min"  # the proxy users leave: the ratios below are against it


def _ratio(num: list[Run], den: list[Run], col: int) -> list[float]:
    return [a[col] / b[col] if b[col] else float("nan") for a, b in zip(num, den, strict=True)]


def section_throughput(tmp: Path, seconds: int, rounds: int, keys: list[str]) -> dict[str, Any]:
    print(f"== 1. Throughput (wrk -t1 -c32 keep-alive, GET /, 1 HAProxy thread / 1 nginx "
          f"worker, {rounds} interleaved rounds of {seconds} s) ==")
    for key, label, what in PATHS:
        if key in keys:
            print(f"  {label}: {what}")
    be = fast_backend(tmp, "ok")
    targets: dict[str, tuple[int, list[int]]] = {"direct": (be, [])}
    syncer = None
    if "hand" in keys:
        port, pid = hand_written(tmp, be)
        targets["hand"] = (port, [pid])
    if "hand_h" in keys:
        port, pid = hand_written(tmp, be, headers=True)
        targets["hand_h"] = (port, [pid])
    if "portico" in keys:
        syncer, st = portico_plane(tmp, "tput")
        world = World()
        world.add({"metadata": {"name": "svc", "namespace": "default"},
                   "spec": {"ports": [{"name": "http", "port": 80, "targetPort": be}]}})
        world.set_endpoints("svc", [("127.0.0.1", be)])
        world.add(ingress("bench", [rule(HOST, path("/", "Prefix", "svc"))]))
        assert syncer.sync(world.snapshot()).error is None
        wait_http(st.http_port, HOST, lambda s, b: b == b"ok")
        info = syncer.plane.master.show_proc()
        targets["portico"] = (st.http_port, [info.master_pid, *info.workers])
    for key, full in (("nginx_min", False), ("nginx_full", True)):
        if key in keys:
            targets[key] = nginx_proxy(tmp, be, full)
    order0 = [k for k, *_ in PATHS if k in keys]
    runs: dict[str, list[Run]] = {k: [] for k in order0}
    # Interleaved rounds in rotating order: the machine is shared and its load drifts, so
    # each ratio compares runs of the same round and the figure is the median over rounds;
    # each proxy's own CPU time per request (all its processes) is a steadier view.
    load0, busy0, t0 = os.getloadavg()[0], machine_cpu_seconds(), time.monotonic()
    for i in range(rounds):
        order = order0[i % len(order0):] + order0[:i % len(order0)]
        for key in order:
            port, pids = targets[key]
            runs[key].append(wrk(port, seconds, pids))
    busy = (machine_cpu_seconds() - busy0) / (time.monotonic() - t0)
    load1 = os.getloadavg()[0]
    # Others' work on the machine shifts every row: say how busy it was.
    print(f"  machine during the rounds: {busy:.2f} of {os.cpu_count()} CPUs busy, "
          f"load average {load0:.1f} -> {load1:.1f}")
    base = runs.get(BASE)
    print(f"  {'path':<30}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/req':>11}"
          f"{'req/s vs':>10}{'CPU vs':>8}   (medians over rounds;")
    print(f"  {'':<30}{'':>9}{'':>8}{'':>8}{'':>11}{'nginx-min':>10}{'n-min':>8}"
          "    ratios: median of per-round ratios)")
    result: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "wrk": "-t1 -c32",
                              "base": BASE, "machine_busy_cpus": round(busy, 2),
                              "loadavg_before_after": [load0, load1], "paths": {}}
    for key, label, what in PATHS:
        if key not in runs:
            continue
        rs = runs[key]
        row = {"label": label, "what": what,
               "rps": statistics.median(r[0] for r in rs),
               "p50_ms": statistics.median(r[1] for r in rs),
               "p99_ms": statistics.median(r[2] for r in rs),
               "cpu_us_per_req": statistics.median(r[3] for r in rs),
               "errors": sum(r[4] for r in rs),
               "rounds": [dict(zip(("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "errors"),
                                   r, strict=True)) for r in rs]}
        if base is not None:
            row["rps_ratio_vs_base"] = statistics.median(_ratio(rs, base, 0))
            row["cpu_ratio_vs_base"] = statistics.median(_ratio(rs, base, 3))
        result["paths"][key] = row
        rr = f"{row['rps_ratio_vs_base']:>10.3f}" if base is not None else f"{'-':>10}"
        cr = (f"{row['cpu_ratio_vs_base']:>8.3f}" if base is not None and key != "direct"
              else f"{'-':>8}")
        print(f"  {label:<30}{row['rps']:>9.0f}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
              f"{row['cpu_us_per_req']:>11.2f}{rr}{cr}")
    if "portico" in runs and base is not None:
        p = result["paths"]["portico"]
        n = result["paths"][BASE]
        verdict = "met" if p["cpu_us_per_req"] <= n["cpu_us_per_req"] else "NOT met"
        print(f"  Portico / nginx minimal: median req/s ratio {p['rps_ratio_vs_base']:.3f} "
              f"(per round: {' '.join(f'{x:.2f}' for x in _ratio(runs['portico'], base, 0))}); "
              f"CPU per request {p['cpu_us_per_req']:.2f} vs {n['cpu_us_per_req']:.2f} us "
              f"(target <=: {verdict})")
    if "portico" in runs and "hand_h" in runs:
        per_round = _ratio(runs["portico"], runs["hand_h"], 0)
        print(f"  Portico / hand-written HAProxy + X-Fwd hdrs: median req/s ratio "
              f"{statistics.median(per_round):.3f}")
    if syncer is not None:
        syncer.plane.stop()
    return result


def section_endpoint_latency(tmp: Path, rounds: int = 20) -> None:
    print("== 2. Endpoint change -> traffic on the new endpoint (Runtime API, no reload) ==")
    one, two = fast_backend(tmp, "one"), fast_backend(tmp, "two")
    syncer, st = portico_plane(tmp, "ep")
    world = World()
    world.add({"metadata": {"name": "svc", "namespace": "default"},
               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 80}]}})
    world.set_endpoints("svc", [("127.0.0.1", one)])
    world.add(ingress("bench", [rule(HOST, path("/", "Prefix", "svc"))]))
    assert syncer.sync(world.snapshot()).error is None
    wait_http(st.http_port, HOST, lambda s, b: b == b"one")
    reloads = syncer.plane.master.show_proc().reloads
    latencies, syncs = [], []
    for i in range(rounds):
        target, body = (two, b"two") if i % 2 == 0 else (one, b"one")
        world.set_endpoints("svc", [("127.0.0.1", target)])
        t0 = time.perf_counter()
        res = syncer.sync(world.snapshot())
        syncs.append(time.perf_counter() - t0)
        assert res.error is None and not res.reloaded
        def arrived(_status: int, got: bytes, want: bytes = body) -> bool:
            return got == want

        seen = wait_http(st.http_port, HOST, arrived, timeout=5)
        latencies.append(seen - t0)
    assert syncer.plane.master.show_proc().reloads == reloads
    lat = sorted(x * 1000 for x in latencies)
    print(f"  {rounds} changes: p50 {statistics.median(lat):.1f} ms, max {lat[-1]:.1f} ms "
          f"(sync itself p50 {statistics.median(syncs) * 1000:.1f} ms); reloads: 0 "
          "(target < 100 ms)")
    syncer.plane.stop()


def big_world(n: int, port: int) -> World:
    world = World()
    for i in range(n):
        svc = f"svc-{i}"
        world.add({"metadata": {"name": svc, "namespace": "default"},
                   "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}})
        world.set_endpoints(svc, [("127.0.0.1", port)])
        world.add(ingress(f"ing-{i}", [rule(f"h{i}.bench.example.com",
                                            path("/", "Prefix", svc))]))
    return world


def section_scale(tmp: Path, n: int) -> None:
    print(f"== 3. Scale: {n} Ingress objects, {n} Services, {n} backends ==")
    be = fast_backend(tmp, "ok")
    world = big_world(n, be)
    syncer, st = portico_plane(tmp, "scale")
    t0 = time.perf_counter()
    res = syncer.sync(world.snapshot())
    t1 = time.perf_counter()
    assert res.error is None and res.reloaded, res.error
    wait_http(st.http_port, f"h{n - 1}.bench.example.com", lambda s, b: b == b"ok")
    t2 = time.perf_counter()
    print(f"  first full render+check+start: {t1 - t0:.2f} s (serving after {t2 - t0:.2f} s)")
    # A structural change (non-plain backend) forces a full render + check + reload.
    world.add(ingress("tuned", [rule("tuned.bench.example.com", path("/", "Prefix", "svc-0"))],
                      annotations={"ingress.portico.dev/proxy-read-timeout": "30"}))
    t0 = time.perf_counter()
    res = syncer.sync(world.snapshot())
    t1 = time.perf_counter()
    assert res.error is None and res.reloaded, res.error
    wait_http(st.http_port, "tuned.bench.example.com", lambda s, b: b == b"ok")
    t2 = time.perf_counter()
    print(f"  full render+check+reload: {t1 - t0:.2f} s, new config serving after "
          f"{t2 - t0:.2f} s (target < 5 s)")
    # One more Ingress with a new Service: maps + a spare backend, no reload.
    world.add({"metadata": {"name": "one-more", "namespace": "default"},
               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": be}]}})
    world.set_endpoints("one-more", [("127.0.0.1", be)])
    world.add(ingress("one-more", [rule("one-more.bench.example.com",
                                        path("/", "Prefix", "one-more"))]))
    t0 = time.perf_counter()
    snap = world.snapshot()
    t1 = time.perf_counter()
    res = syncer.sync(snap)
    t2 = time.perf_counter()
    assert res.error is None and not res.reloaded, res
    seen = wait_http(st.http_port, "one-more.bench.example.com", lambda s, b: b == b"ok")
    print(f"  one more Ingress (new Service) serving after {(seen - t0) * 1000:.0f} ms, "
          f"no reload (target < 500 ms): snapshot {(t1 - t0) * 1000:.0f} ms, sync "
          f"{(t2 - t1) * 1000:.0f} ms ({res.runtime_commands} Runtime API commands), "
          f"first answer {(seen - t2) * 1000:.0f} ms later")
    worker = syncer.plane.master.show_proc().workers
    if worker:
        print(f"  HAProxy worker RSS: {memory_mb(worker[0]):.0f} MB")
    syncer.plane.stop()


def section_controller_rss(tmp: Path, n: int) -> None:
    print(f"== 4. Controller RSS: portico ingress against the API emulator, {n} Ingresses ==")
    from common.kube import resources as R
    from lab.emulator import Emulator

    be = fast_backend(tmp, "ok")
    world = big_world(n, be)
    emu = Emulator(history_limit=1000).start()
    try:
        emu.store.create(R.INGRESSCLASSES, dict(world.classes[0]))
        for obj in world.services.values():
            emu.store.create(R.SERVICES, obj, "default")
        for obj in world.slices:
            emu.store.create(R.ENDPOINTSLICES, obj, "default")
        for obj in world.ingresses.values():
            emu.store.create(R.INGRESSES, obj, "default")
        http_port = free_port()
        state = tmp / "ctl"
        t0 = time.perf_counter()
        proc = spawn([sys.executable, "-m", "portico", "ingress", "--server", emu.url,
                      "--http-port", str(http_port), "--https-port", str(free_port()),
                      "--bind-address", "127.0.0.1", "--metrics-addr",
                      f"127.0.0.1:{free_port()}", "--haproxy-metrics-addr", "",
                      "--state-dir", str(state), "--log-level", "warning"],
                     cwd=str(Path(__file__).resolve().parents[1]))
        seen = wait_http(http_port, f"h{n - 1}.bench.example.com", lambda s, b: b == b"ok",
                         timeout=180)
        rss = memory_mb(proc.pid)
        print(f"  controller start to serving {n} Ingresses: {seen - t0:.1f} s; "
              f"controller RSS {rss:.0f} MB (target < 300 MB)")
        proc.terminate()
        proc.wait(40)
    finally:
        emu.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ingresses", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=5, help="wrk duration per run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved wrk rounds per path")
    ap.add_argument("--paths", default=",".join(k for k, *_ in PATHS),
                    help="comma list of section 1 rows (default: all)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip (1,2,3,4)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR,
                    help="directory for the JSON result of section 1")
    args = ap.parse_args()
    if not shutil.which("haproxy") or not shutil.which("wrk"):
        print("needs haproxy and wrk (scripts/install-deps.sh)")
        return 2
    keys = [k for k in args.paths.split(",") if k]
    if unknown := set(keys) - {k for k, *_ in PATHS}:
        ap.error(f"unknown paths: {sorted(unknown)}")
    if {"nginx_min", "nginx_full"} & set(keys) and not shutil.which("nginx"):
        print("needs nginx (scripts/install-deps.sh)")
        return 2
    skip = set(args.skip.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="pi-bench-"))
    try:
        if "1" not in skip:
            result = section_throughput(tmp, args.seconds, args.rounds, keys)
            result["versions"] = versions()
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
            args.out.mkdir(parents=True, exist_ok=True)
            out = args.out / f"ingress-throughput-{stamp}.json"
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(f"  results: {out}")
        if "2" not in skip:
            section_endpoint_latency(tmp)
        if "3" not in skip:
            section_scale(tmp, args.ingresses)
        if "4" not in skip:
            section_controller_rss(tmp, args.ingresses)
    finally:
        for p in PROCS:
            # By the PID we recorded: each was started in a session (and process group) of
            # its own, and the whole group goes, since nginx workers outlive a killed master.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def versions() -> dict[str, str]:
    out = {}
    for name, cmd in (("haproxy", ["haproxy", "-v"]), ("nginx", ["nginx", "-v"]),
                      ("wrk", ["wrk", "-v"])):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out[name] = (res.stdout + res.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out[name] = "?"
    out["cpus"] = str(os.cpu_count())
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
