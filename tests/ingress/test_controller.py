"""The controller shell against the Kubernetes API emulator and a real HAProxy."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from common.kube import resources as R
from common.kube.client import KubeClient
from common.kube.clock import Clock
from common.kube.events import EventRecorder
from ingress.controller import DEBOUNCE_S, IngressController
from ingress.core.render import Settings
from ingress.haproxy import DataPlane
from ingress.haproxy_runtime import MasterClient
from ingress.sync import Syncer
from lab.emulator import Emulator
from lab.fakeclock import FakeClock
from lab.ingress_kit import (
    CLASS,
    Backends,
    endpoint_slice,
    free_port,
    get,
    ingress,
    make_cert,
    path,
    rule,
    service,
    tls_secret,
)
from lab.wait import wait_until
from tests.ingress.conftest import need_haproxy

VIP = "192.0.2.10"


class Cluster:
    def __init__(self, emu: Emulator, ctl: IngressController, settings: Settings) -> None:
        self.emu, self.ctl, self.settings = emu, ctl, settings

    def create(self, res: R.Resource, obj: dict[str, Any]) -> None:
        self.emu.store.create(res, obj, obj["metadata"].get("namespace"))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.emu.store.list(R.EVENTS)
                if e.get("involvedObject", {}).get("name") == name]

    def http(self, host: str, target: str = "/") -> Any:
        return get(self.settings.http_port, host, target)


@contextmanager
def make_cluster(tmp_path: Path, clock: Clock | None = None) -> Iterator[Cluster]:
    need_haproxy()
    emu = Emulator(bookmark_interval=0.5).start()
    settings = Settings(http_port=free_port(), https_port=free_port(),
                        bind_addresses=("127.0.0.1",), run_dir=str(tmp_path / "s" / "run"),
                        metrics_bind=None, threads=1)
    plane = DataPlane(str(tmp_path / "s"))
    plane.prepare()
    client = KubeClient.from_environment(server=emu.url)
    ctl = IngressController(client, Syncer(plane, settings), EventRecorder(client, "ingress"),
                            publish_service=("portico-system", "ingress"), clock=clock)
    try:
        yield Cluster(emu, ctl, settings)
    finally:
        ctl.stop()
        plane.stop()
        emu.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with make_cluster(tmp_path) as c:
        yield c


def _start(c: Cluster) -> threading.Thread:
    c.ctl.start()
    c.ctl.request_sync()
    t = threading.Thread(target=c.ctl.run, daemon=True)
    t.start()
    return t


@pytest.mark.lab
def test_controller_end_to_end(cluster: Cluster, backends: Backends,
                               tmp_path: Path) -> None:
    c = cluster
    c.create(R.INGRESSCLASSES, dict(CLASS))
    lb_svc = service("ingress", "portico-system")
    lb_svc["status"] = {"loadBalancer": {"ingress": [{"ip": VIP}]}}
    c.create(R.SERVICES, lb_svc)
    for name in ("a", "b"):
        c.create(R.SERVICES, service(f"svc-{name}"))
    c.create(R.ENDPOINTSLICES, endpoint_slice("svc-a", [("127.0.0.1", backends["A"].port)]))
    crt, key, der = make_cert(tmp_path, "one", ["one.example.com"])
    c.create(R.SECRETS, tls_secret("one-tls", crt, key))
    c.create(R.SECRETS, tls_secret("unrelated", crt, key))
    c.create(R.INGRESSES, ingress("ours", [rule("one.example.com",
                                                 path("/", "Prefix", "svc-a"))],
                                   tls=[{"hosts": ["one.example.com"], "secretName": "one-tls"}]))
    c.create(R.INGRESSES, ingress("theirs", [rule("x.example.com", path("/", "Prefix", "svc-a"))],
                                  cls="other"))
    c.create(R.INGRESSES, ingress("bad", [rule("bad host", path("/", "Prefix", "svc-a"))]))
    _start(c)
    wait_until(lambda: c.ctl.ready.is_set())
    r = get(c.settings.https_port, "one.example.com", "/", https=True, sni="one.example.com")
    assert r.name == "A" and r.peer_cert == der
    # Status: our Ingresses get the VIP, the other class's never does.
    wait_until(lambda: (c.emu.store.get(R.INGRESSES, "ours", "default") or {}).get(
        "status", {}).get("loadBalancer", {}).get("ingress") == [{"ip": VIP}])
    theirs = c.emu.store.get(R.INGRESSES, "theirs", "default")
    assert theirs is not None and not (theirs.get("status") or {}).get("loadBalancer")
    # The invalid Ingress is reported with an Event naming the field.
    wait_until(lambda: any("spec.rules[0].host" in e.get("message", "")
                         for e in c.events("bad")))
    # Only the referenced Secret was read (by name), never a cluster-wide Secret list.
    secret_paths = [t for (_verb, t, _code) in list(c.emu.log) if "/secrets" in t]
    assert secret_paths and all("metadata.name%3Done-tls" in p or "metadata.name=one-tls" in p
                                for p in secret_paths), secret_paths

    # Endpoint change: Runtime API only, no reload.
    master = c.ctl.syncer.plane.master
    before = master.show_proc()
    c.emu.store.update(R.ENDPOINTSLICES, endpoint_slice(
        "svc-a", [("127.0.0.1", backends["B"].port)]))
    wait_until(lambda: get(c.settings.https_port, "one.example.com", "/", https=True,
                         sni="one.example.com").name == "B")
    after = master.show_proc()
    assert (after.master_pid, after.reloads) == (before.master_pid, before.reloads)

    # Publish Service VIP changes -> status follows.
    lb_svc2 = c.emu.store.get(R.SERVICES, "ingress", "portico-system")
    assert lb_svc2 is not None
    lb_svc2["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.11"}]}}
    c.emu.store.update(R.SERVICES, lb_svc2)
    wait_until(lambda: (c.emu.store.get(R.INGRESSES, "ours", "default") or {}).get(
        "status", {}).get("loadBalancer", {}).get("ingress") == [{"ip": "192.0.2.11"}])


@pytest.mark.lab
def test_controller_debounces_bursts(tmp_path: Path, backends: Backends) -> None:
    """On the fake clock: while it stands still no sync can start (the debounce never ends),
    so the burst is counted exactly, not guessed after a sleep."""
    clock = FakeClock()
    with make_cluster(tmp_path, clock) as c:
        # Handlers run in order, so once these saw an event the controller has queued it:
        # the clock is advanced only after the events it is meant to cover.
        seen: dict[str, list[str]] = {name: [] for name in c.ctl.informers}
        for name, inf in c.ctl.informers.items():
            inf.add_handler(lambda etype, _obj, name=name: seen[name].append(etype))
        c.create(R.INGRESSCLASSES, dict(CLASS))
        c.create(R.SERVICES, service("svc-a"))
        c.create(R.ENDPOINTSLICES, endpoint_slice("svc-a",
                                                  [("127.0.0.1", backends["A"].port)]))
        _start(c)
        wait_until(lambda: all(seen[n] for n in ("classes", "services", "slices")))
        clock.advance(DEBOUNCE_S)
        wait_until(lambda: c.ctl.ready.is_set())
        wait_until(lambda: c.ctl.syncs == 1)
        syncs = c.ctl.syncs
        for i in range(30):  # a burst of 30 new Ingresses
            c.create(R.INGRESSES, ingress(f"i{i}", [rule(f"h{i}.example.com",
                                                          path("/", "Prefix", "svc-a"))]))
        # Every event of the burst has reached the controller; the clock has not moved.
        wait_until(lambda: seen["ingresses"].count("ADDED") == 30)
        assert c.ctl.syncs == syncs
        clock.advance(DEBOUNCE_S)
        wait_until(lambda: c.ctl.syncs > syncs)
        wait_until(lambda: c.http("h29.example.com").name == "A")
        # No further sync can have started: that would take the fake clock to move again.
        assert c.ctl.syncs - syncs == 1, "a burst must be coalesced into one sync"
        assert all(c.http(f"h{i}.example.com").name == "A" for i in range(30))


@pytest.mark.lab
def test_cli_process_serves_reports_ready_and_stops(tmp_path: Path,
                                                    backends: Backends) -> None:
    """``portico ingress`` as a real process: serves, /readyz, metrics, clean SIGTERM."""
    need_haproxy()
    import subprocess
    import sys
    import urllib.request

    emu = Emulator().start()
    proc = None
    try:
        emu.store.create(R.INGRESSCLASSES, dict(CLASS))
        emu.store.create(R.SERVICES, service("svc-a"), "default")
        emu.store.create(R.ENDPOINTSLICES, endpoint_slice(
            "svc-a", [("127.0.0.1", backends["A"].port)]), "default")
        emu.store.create(R.INGRESSES, ingress("i", [rule("cli.example.com",
                                                          path("/", "Prefix", "svc-a"))]),
                         "default")
        http_port, metrics = free_port(), f"127.0.0.1:{free_port()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "portico", "ingress", "--server", emu.url,
             "--http-port", str(http_port), "--https-port", str(free_port()),
             "--bind-address", "127.0.0.1", "--metrics-addr", metrics,
             "--haproxy-metrics-addr", f"127.0.0.1:{free_port()}",
             "--state-dir", str(tmp_path / "state"), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def serving() -> bool:
            try:
                return get(http_port, "cli.example.com", "/").name == "A"
            except OSError:
                return False

        def ready() -> bool:
            try:
                return bool(urllib.request.urlopen(f"http://{metrics}/readyz",
                                                   timeout=5).status == 200)
            except OSError:
                return False

        wait_until(serving, 30)
        wait_until(ready, 10)
        text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
        assert "portico_ingress_reloads_total 1.0" in text
        info = MasterClient(str(tmp_path / "state" / "run" / "master.sock")).show_proc()
        proc.terminate()
        assert proc.wait(40) == 0
        with pytest.raises(OSError):
            get(http_port, "cli.example.com", "/")
        for pid in (info.master_pid, *info.workers):  # HAProxy went with the controller
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        emu.stop()


@pytest.mark.lab
def test_controller_restarts_a_dead_haproxy(cluster: Cluster, backends: Backends) -> None:
    c = cluster
    c.ctl.health_s = 0.1
    c.create(R.INGRESSCLASSES, dict(CLASS))
    c.create(R.SERVICES, service("svc-a"))
    c.create(R.ENDPOINTSLICES, endpoint_slice("svc-a", [("127.0.0.1", backends["A"].port)]))
    c.create(R.INGRESSES, ingress("i", [rule("h.example.com", path("/", "Prefix", "svc-a"))]))
    _start(c)
    wait_until(lambda: c.ctl.ready.is_set())
    plane = c.ctl.syncer.plane
    assert plane.proc is not None
    old = plane.proc.pid
    plane.proc.kill()  # the master we started, by its PID
    plane.proc.wait(5)

    def back() -> bool:
        try:
            return bool(c.http("h.example.com").name == "A")
        except OSError:
            return False

    wait_until(back, 15)
    assert plane.proc is not None and plane.proc.pid != old
