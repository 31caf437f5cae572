"""``portico controller`` as real processes: leader election, hand-over, health, metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.kube.resources import IPADDRESSPOOLS, LEASES, SERVICES

from .conftest import Lab, eventually, pool, service

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    def __init__(self, lab: Lab, identity: str, log: Path) -> None:
        self.port = _free_port()
        self.identity = identity
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portico", "controller", *lab.server_args,
             "--identity", identity, "--lease-namespace", lab.ns,
             "--metrics-addr", f"127.0.0.1:{self.port}", "--log-level", "info"],
            cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except (urllib.error.URLError, OSError):
            return 0, ""  # not listening yet

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def replicas(lab: Lab, tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        r.stop()


def _holder(lab: Lab) -> str:
    lease = lab.store.get(LEASES, "portico-controller", "default")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def test_leader_election_and_handover(lab: Lab, replicas: list[Replica], tmp_path: Path) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/29"))
    lab.store.create(SERVICES, service("s0"), namespace="default")
    a = Replica(lab, "replica-a", tmp_path / "a.log")
    replicas.append(a)
    eventually(lambda: _holder(lab) == "replica-a", timeout=20)
    assert lab.wait_ips("s0") == ["192.0.2.0"]
    b = Replica(lab, "replica-b", tmp_path / "b.log")
    replicas.append(b)
    eventually(lambda: b.get("/healthz")[0] == 200, timeout=20)
    assert _holder(lab) == "replica-a"  # the standby waits
    assert b.get("/readyz")[0] != 200
    status, text = a.get("/metrics")
    assert status == 200 and 'portico_pool_addresses_total{family="IPv4",pool="p"} 8.0' in text

    a.stop()  # graceful: releases the Lease, so the standby takes over at once
    assert a.proc.returncode == 0
    eventually(lambda: _holder(lab) == "replica-b", timeout=10)
    lab.store.create(SERVICES, service("s1"), namespace="default")
    assert lab.wait_ips("s1") == ["192.0.2.1"]
    assert lab.ips("s0") == ["192.0.2.0"]  # the new leader rebuilt, nothing moved
    eventually(lambda: b.get("/readyz")[0] == 200)


def test_losing_the_lease_ends_the_process(lab: Lab, replicas: list[Replica],
                                           tmp_path: Path) -> None:
    a = Replica(lab, "replica-a", tmp_path / "a.log")
    replicas.append(a)
    eventually(lambda: _holder(lab) == "replica-a", timeout=20)
    lease = lab.store.get(LEASES, "portico-controller", "default")
    assert lease is not None
    lease["spec"]["holderIdentity"] = "usurper"
    lab.store.update(LEASES, lease)
    a.proc.wait(30)
    assert a.proc.returncode == 3, (tmp_path / "a.log").read_text()[-2000:]
