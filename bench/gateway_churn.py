"""Route churn under load: 1,000 HTTPRoutes, routes added, changed and deleted while wrk runs.

Run: ``.venv/bin/python -m bench.gateway_churn [--routes 1000] [--ops 300] [--seconds 40]``

What it does (lab rules: the control plane on loopback, everything else inside one network
namespace of its own, ``pcb-<pid>``, whose loopback carries 198.18.0.1 — EndpointSlices
cannot point at 127.0.0.1 — and where a relay makes the API server reachable):
1. starts the real control plane (``lab.controlplane``) with the Gateway API v1.6.3
   Standard CRDs, and one HAProxy process as the backend farm (``--services`` ports, each
   answering 200 with ``X-Backend: b<N>``); each backend Service has an EndpointSlice
   pointing at its port;
2. creates a GatewayClass, a Gateway with one HTTP listener and ``--routes`` HTTPRoutes
   (route i: host ``r<i>.churn.example`` -> Service ``s<i mod services>``), then starts
   ``portico ingress --gateway-controller-name ...`` as a process and waits until the last
   route answers;
3. runs wrk (bounded by ``--seconds``) on the first half of the routes (a Lua script picks a
   random host per request) and, meanwhile, ``--ops`` operations on the other half, one at a
   time: add a route, change a route's backend, delete a route. After each write returns
   (the object is stored) a prober polls the Gateway every millisecond until the traffic
   follows (the new backend answers, or 404 after a delete): that is the propagation time;
4. prints wrk's non-2xx and socket errors (changes to *other* routes must cause none),
   propagation p50/p99/max per operation and the controller's reload count, and writes
   ``bench/results/gateway_churn-<N>-<time>.json``.

Every loop is bounded in count and time; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.stats import pct
from lab.controlplane import binaries, pki
from lab.controlplane.cluster import ControlPlane, running
from lab.controlplane.relay import Relay
from lab.ingress_kit import WRK, parse_wrk
from lab.netns import add_netns, del_netns, ip, run_in_netns

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NS = "churn"
ADDR = "198.18.0.1"  # the namespace's own address (benchmarking range)
GROUP = "apis/gateway.networking.k8s.io/v1"


def install_gateway_crds(cp: ControlPlane) -> None:
    names = []
    for path in binaries.gateway_api_crds():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                cp.apply_crd(doc)
                names.append(doc["metadata"]["name"])
    for name in names:
        cp.wait_crd_established(name)


@contextlib.contextmanager
def backend_farm(ports: list[int], workdir: Path, netns: str) -> Iterator[None]:
    lines = ["global", "    maxconn 4000", "defaults", "    mode http",
             "    timeout client 30s", "    timeout server 30s", "    timeout connect 5s"]
    for i, port in enumerate(ports):
        lines += [f"frontend b{i}", f"    bind {ADDR}:{port}",
                  f"    http-request return status 200 content-type text/plain "
                  f"hdr X-Backend b{i} string b{i}"]
    cfg = workdir / "farm.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "haproxy", "-f", str(cfg)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        stop(proc, 10)


def stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def route(i: int, svc: int, host: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": f"r{i}", "namespace": NS},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "hostnames": [host or f"r{i}.churn.example"],
                     "rules": [{"backendRefs": [{"name": f"s{svc}", "port": 80}]}]}}


def create_objects(cp: ControlPlane, n_routes: int, ports: list[int]) -> None:
    for ns in (NS, "portico"):
        cp.api("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    cp.api("POST", "/api/v1/namespaces/portico/services", {
        "metadata": {"name": "ingress"},
        "spec": {"selector": {"app": "portico-ingress"}, "ports": [{"port": 80}]}})
    for i, port in enumerate(ports):
        cp.api("POST", f"/api/v1/namespaces/{NS}/services", {
            "metadata": {"name": f"s{i}"}, "spec": {"ports": [{"port": 80, "targetPort": port}]}})
        cp.api("POST", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", {
            "metadata": {"name": f"s{i}-1", "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv4", "ports": [{"name": "", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ADDR], "conditions": {"ready": True}}]})
    cp.api("POST", f"/{GROUP}/gatewayclasses", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "portico"},
        "spec": {"controllerName": "portico.dev/gateway-controller"}})
    cp.api("POST", f"/{GROUP}/namespaces/{NS}/gateways", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "portico",
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
    for i in range(n_routes):
        cp.api("POST", f"/{GROUP}/namespaces/{NS}/httproutes", route(i, i % len(ports)))


class Prober:
    """One keep-alive connection to the Gateway frontend; asks until an answer matches."""

    def __init__(self, port: int, netns: str) -> None:
        self.port = port
        self.netns = netns
        self.conn = self._connect()
        self.last: tuple[int, str] = (0, "")

    def _connect(self) -> http.client.HTTPConnection:
        # A socket belongs to the namespace it was created in: make it there, use it here.
        conn = http.client.HTTPConnection(ADDR, self.port, timeout=5)
        conn.sock = run_in_netns(self.netns, lambda: socket.create_connection(
            (ADDR, self.port), timeout=5))
        return conn

    def ask(self, host: str) -> tuple[int, str]:
        for _attempt in range(2):
            try:
                self.conn.request("GET", "/", headers={"Host": host})
                resp = self.conn.getresponse()
                resp.read()
                return resp.status, resp.getheader("X-Backend") or ""
            except (OSError, http.client.HTTPException):
                self.conn.close()
                with contextlib.suppress(OSError):
                    self.conn = self._connect()
        return 0, ""

    def until(self, host: str, want: tuple[int, str], timeout: float = 5.0) -> float | None:
        start = time.monotonic()
        for _ in range(int(timeout * 1000)):  # bounded: one probe per ms at most
            self.last = self.ask(host)
            if self.last == want:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                break
            time.sleep(0.001)
        return None


def metric(port: int, name: str, netns: str) -> float:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://{ADDR}:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    text = run_in_netns(netns, fetch)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(args: argparse.Namespace) -> dict[str, Any]:
    assert WRK is not None, "wrk not found: scripts/install-deps.sh installs it"
    work = Path(tempfile.mkdtemp(prefix="portico-churn-"))
    ports = [30000 + i for i in range(args.services)]  # the namespace's ports are all free
    rnd = random.Random(7)
    netns = f"pcb-{os.getpid()}"
    add_netns(netns)
    try:
        ip("addr", "add", f"{ADDR}/32", "dev", "lo", ns=netns)
        with running(crds=False, extra_sans=(ADDR,)) as cp, backend_farm(ports, work, netns):
            relay = Relay(upstream=(cp.host, cp.port), listen=(ADDR, 0), listen_ns=netns).start()
            try:
                return _run(args, cp, relay, work, ports, rnd, netns)
            finally:
                relay.stop()
    finally:
        del_netns(netns)


def _run(args: argparse.Namespace, cp: ControlPlane, relay: Relay, work: Path,
         ports: list[int], rnd: random.Random, netns: str) -> dict[str, Any]:
    install_gateway_crds(cp)
    t = time.monotonic()
    create_objects(cp, args.routes, ports)
    print(f"created {args.routes} routes in {time.monotonic() - t:.1f} s", flush=True)
    metrics_port = 29000
    kubeconfig = pki.kubeconfig(work / "admin.kubeconfig", relay.url, cp.ca.pem,
                                user="admin", client=cp.admin_client)
    log = (work / "ingress.log").open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns,
         sys.executable, "-m", "portico", "ingress", f"--kubeconfig={kubeconfig}",
         "--publish-service=portico/ingress",
         "--gateway-controller-name=portico.dev/gateway-controller",
         "--http-port=28080", "--https-port=28443",
         f"--bind-address={ADDR}", f"--state-dir={work / 'ingress'}",
         f"--metrics-addr={ADDR}:{metrics_port}",
         f"--haproxy-metrics-addr={ADDR}:29001"],
        cwd=ROOT, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        tport = 0
        for _ in range(600):  # up to 60 s for the Gateway's Service and port
            items = cp.api("GET", "/api/v1/namespaces/portico/services?labelSelector="
                           "gateway.portico.dev%2Fmanaged%3Dtrue").get("items") or []
            if items:
                tport = int(items[0]["spec"]["ports"][0]["targetPort"])
                break
            time.sleep(0.1)
        assert tport, f"no Gateway Service; log: {work / 'ingress.log'}"
        prober = Prober(tport, netns)
        last = args.routes - 1
        ready = prober.until(f"r{last}.churn.example",
                             (200, f"b{last % args.services}"), timeout=120)
        assert ready is not None, (f"routes not served (last answer {prober.last}); "
                                   f"log: {work / 'ingress.log'}")
        print(f"all routes served {ready:.1f} s after the Gateway port appeared", flush=True)
        reloads0 = metric(metrics_port, "portico_ingress_reloads_total", netns)
        syncs0 = (metric(metrics_port, "portico_ingress_sync_seconds_sum", netns),
                  metric(metrics_port, "portico_ingress_sync_seconds_count", netns))
        stable = args.routes // 2
        script = work / "hosts.lua"
        script.write_text(
            "math.randomseed(1)\nrequest = function()\n"
            f"  local i = math.random(0, {stable - 1})\n"
            '  return wrk.format("GET", "/", {["Host"] = "r" .. i .. ".churn.example"})\n'
            "end\n")
        assert WRK is not None
        wrk = subprocess.Popen(
            ["ip", "netns", "exec", netns, WRK, "-t", str(args.threads),
             "-c", str(args.connections), "-d", f"{args.seconds}s", "--timeout", "5s",
             "-s", str(script), f"http://{ADDR}:{tport}/"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        times: dict[str, list[float]] = {"add": [], "change": [], "delete": []}
        missed: dict[str, int] = {"add": 0, "change": 0, "delete": 0}
        added: list[int] = []
        churnable = list(range(stable, args.routes))
        deadline = time.monotonic() + args.seconds - 2
        next_id = args.routes
        try:
            time.sleep(1.0)  # wrk connected and at speed first
            for op_no in range(args.ops):
                if time.monotonic() > deadline:
                    break
                op = ("add", "change", "delete")[op_no % 3]
                if op == "add" or (op == "delete" and not added):
                    i, svc = next_id, rnd.randrange(args.services)
                    next_id += 1
                    cp.api("POST", f"/{GROUP}/namespaces/{NS}/httproutes", route(i, svc))
                    took = prober.until(f"r{i}.churn.example", (200, f"b{svc}"))
                    added.append(i)
                    op = "add"
                elif op == "change":
                    i = rnd.choice(churnable)
                    svc = rnd.randrange(args.services)
                    cp.api("PATCH", f"/{GROUP}/namespaces/{NS}/httproutes/r{i}",
                           {"spec": {"rules": [{"backendRefs": [
                               {"name": f"s{svc}", "port": 80}]}]}},
                           content_type="application/merge-patch+json")
                    took = prober.until(f"r{i}.churn.example", (200, f"b{svc}"))
                else:
                    i = added.pop(0)
                    cp.api("DELETE", f"/{GROUP}/namespaces/{NS}/httproutes/r{i}")
                    took = prober.until(f"r{i}.churn.example", (404, ""))
                if took is None:
                    missed[op] += 1
                else:
                    times[op].append(took * 1000)
                time.sleep(rnd.uniform(0.02, 0.08))
            out, _ = wrk.communicate(timeout=args.seconds + 30)
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait(5)
        load = parse_wrk(out.decode(errors="replace"))
        reloads = metric(metrics_port, "portico_ingress_reloads_total", netns) - reloads0
        sync_s = metric(metrics_port, "portico_ingress_sync_seconds_sum", netns) - syncs0[0]
        syncs = metric(metrics_port, "portico_ingress_sync_seconds_count", netns) - syncs0[1]
    finally:
        stop(proc, 30)
        log.close()
    all_times = [x for v in times.values() for x in v]
    return {
        "routes": args.routes, "services": args.services, "ops": sum(map(len, times.values())),
        "missed": missed, "reloads_during_churn": reloads,
        "syncs_during_churn": syncs, "sync_ms_mean": 1000 * sync_s / syncs if syncs else None,
        "wrk": {"requests": load.requests, "non_2xx": load.non_2xx,
                "socket_errors": load.socket_errors, "rps": load.rps,
                "errors_line": re.findall(r"Socket errors.*|Non-2xx.*", load.output)},
        "propagation_ms": {
            op: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99),
                 "max": max(v) if v else float("nan"),
                 "mean": statistics.fmean(v) if v else float("nan")}
            for op, v in {**times, "all": all_times}.items()},
        "ingress_log": str(work / "ingress.log"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routes", type=int, default=1000)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--connections", type=int, default=16)
    # One wrk thread by default: on a 2-core machine two would take both cores from the
    # control plane and the controller whose reaction time is being measured.
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    res = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"gateway_churn-{args.routes}-{stamp}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nroutes {res['routes']} (services {res['services']}), operations {res['ops']}, "
          f"missed {res['missed']}, reloads during churn {res['reloads_during_churn']:.0f}")
    if res["sync_ms_mean"] is not None:
        print(f"ingress syncs during churn {res['syncs_during_churn']:.0f}, "
              f"mean {res['sync_ms_mean']:.1f} ms each (portico_ingress_sync_seconds)")
    w = res["wrk"]
    print(f"wrk on the other routes: {w['requests']} requests, {w['rps']:.0f} req/s, "
          f"non-2xx {w['non_2xx']}, socket errors {w['socket_errors']}")
    print(f"{'propagation (ms)':<18}{'n':>6}{'p50':>9}{'p99':>9}{'max':>9}")
    for op, st in res["propagation_ms"].items():
        print(f"{op:<18}{st['n']:>6}{st['p50']:>9.1f}{st['p99']:>9.1f}{st['max']:>9.1f}")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
