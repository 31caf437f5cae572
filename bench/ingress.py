"""Ingress tier benchmark: proxy overhead, endpoint-change latency, 10,000-Ingress scale, RSS.

Run:  .venv/bin/python bench/ingress.py [--ingresses 10000] [--seconds 5]

Prints, in one run:
1. req/s and p50/p99 latency (wrk -t1 -c32, keep-alive) directly to a backend, through a
   minimal hand-written HAProxy config (also: the same plus the X-Forwarded-For/-Proto
   headers every ingress must send), and through Portico's rendered config (same HAProxy,
   one thread each), in interleaved rounds; the ratio is the median of per-round ratios,
   with each proxy's CPU time per request beside it. Target: Portico >= 0.95 x hand-written.
   The backend is a second HAProxy answering with ``http-request return``: a Python backend
   tops out far below the proxy and would hide its cost.
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
import http.client
import os
import re
import shutil
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

from bench.procstat import cpu_seconds, memory_mb
from ingress.core.render import Settings
from ingress.haproxy import DataPlane
from ingress.sync import Syncer
from lab.ingress_kit import World, free_port, ingress, path, rule

PROCS: list[subprocess.Popen[bytes]] = []
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


def hand_written(tmp: Path, backend_port: int, headers: bool = False) -> tuple[int, int]:
    """Minimal config; ``headers`` adds the X-Forwarded-For/-Proto an ingress must send.

    Same as Portico where it matters per request: one thread, HTTP keep-alive on both sides
    (HAProxy's default mode, which Portico keeps), one backend server. Returns (port, PID).
    """
    port = free_port()
    cfg = tmp / f"hand-{headers}.cfg"
    extra = ("    option forwardfor\n    http-request set-header X-Forwarded-Proto http\n"
             if headers else "")
    cfg.write_text(f"""global
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
""")
    p = spawn(["haproxy", "-f", str(cfg)])
    wait_http(port, HOST, lambda s, b: s == 200)
    return port, p.pid


def wrk(port: int, seconds: int, pid: int | None = None) -> tuple[float, float, float, float]:
    """(req/s, p50 ms, p99 ms, the proxy's CPU microseconds per request or NaN)."""
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "-H",
                          f"Host: {HOST}", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    cpu = cpu_seconds(pid) - cpu0 if pid else float("nan")

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    errors = re.search(r"(Non-2xx|Socket errors).*", out)
    if errors:
        print(f"    (wrk reported: {errors.group(0)})")
    per_req = cpu / int(count.group(1)) * 1e6 if count and int(count.group(1)) else float("nan")
    return (float(rps.group(1)) if rps else 0.0, ms("50"), ms("99"), per_req)


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
)


def section_throughput(tmp: Path, seconds: int, rounds: int) -> None:
    print(f"== 1. Throughput (wrk -t1 -c32 keep-alive, GET /, 1 HAProxy thread, "
          f"{rounds} interleaved rounds of {seconds} s) ==")
    for _key, label, what in PATHS:
        print(f"  {label}: {what}")
    be = fast_backend(tmp, "ok")
    hand, hand_pid = hand_written(tmp, be)
    hand_h, hand_h_pid = hand_written(tmp, be, headers=True)
    syncer, st = portico_plane(tmp, "tput")
    world = World()
    world.add({"metadata": {"name": "svc", "namespace": "default"},
               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": be}]}})
    world.set_endpoints("svc", [("127.0.0.1", be)])
    world.add(ingress("bench", [rule(HOST, path("/", "Prefix", "svc"))]))
    assert syncer.sync(world.snapshot()).error is None
    wait_http(st.http_port, HOST, lambda s, b: b == b"ok")
    worker = syncer.plane.master.show_proc().workers[0]
    targets: dict[str, tuple[int, int | None]] = {
        "direct": (be, None), "hand": (hand, hand_pid), "hand_h": (hand_h, hand_h_pid),
        "portico": (st.http_port, worker)}
    runs: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in targets}
    # Interleaved rounds (A/B/A/B...): the machine is shared and its load drifts, so each
    # ratio compares runs of the same round and the figure is the median over rounds; the
    # proxy's own CPU time per request is a second, steadier view of the same cost.
    for i in range(rounds):
        order = list(targets) if i % 2 == 0 else list(reversed(targets))
        for key in order:
            port, pid = targets[key]
            runs[key].append(wrk(port, seconds, pid))
    print(f"  {'path':<27}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/req':>12}"
          "   (medians over rounds)")
    for key, label, _what in PATHS:
        rs = runs[key]
        print(f"  {label:<27}{statistics.median(r[0] for r in rs):>9.0f}"
              f"{statistics.median(r[1] for r in rs):>8.2f}"
              f"{statistics.median(r[2] for r in rs):>8.2f}"
              f"{statistics.median(r[3] for r in rs):>12.2f}")
    for base, label in (("hand_h", "hand-written + X-Fwd hdrs (equivalent)"),
                        ("hand", "hand-written without headers")):
        per_round = [p[0] / h[0] if h[0] else float("nan")
                     for p, h in zip(runs["portico"], runs[base], strict=True)]
        cpu = (statistics.median(r[3] for r in runs[base])
               / statistics.median(r[3] for r in runs["portico"]))
        print(f"  Portico / {label}: median req/s ratio {statistics.median(per_round):.3f} "
              f"(per round: {' '.join(f'{x:.2f}' for x in per_round)}); "
              f"CPU-per-request ratio {cpu:.3f} (target >= 0.95)")
    syncer.plane.stop()


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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ingresses", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=3, help="wrk duration per run")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved wrk rounds per path")
    ap.add_argument("--skip", default="", help="comma list of sections to skip (1,2,3,4)")
    args = ap.parse_args()
    if not shutil.which("haproxy") or not shutil.which("wrk"):
        print("needs haproxy and wrk")
        return 2
    skip = set(args.skip.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="pi-bench-"))
    try:
        if "1" not in skip:
            section_throughput(tmp, args.seconds, args.rounds)
        if "2" not in skip:
            section_endpoint_latency(tmp)
        if "3" not in skip:
            section_scale(tmp, args.ingresses)
        if "4" not in skip:
            section_controller_rss(tmp, args.ingresses)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()  # by the PID we recorded
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
