"""speaker.secrets.PasswordSecrets against the API emulator: which Secrets are read, when they
are read again, and what a refusal (403) or a missing Secret (404) becomes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from common.kube import resources as R
from common.kube.client import KubeClient
from lab.emulator import Emulator
from speaker.core import bgp as core
from speaker.core.build import build_snapshot
from speaker.secrets import PasswordSecrets

NS = "portico"


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def peer(name: str, secret: str, namespace: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret}
    if namespace is not None:
        ref["namespace"] = namespace
    return {"metadata": {"name": name},
            "spec": {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1",
                     "passwordSecret": ref}}


def secret(name: str, ns: str, password: bytes) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "data": {"password": base64.b64encode(password).decode()}}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(host="127.0.0.1", port=0) as e:
        for ns in (NS, "kube-system"):
            e.store.create(R.NAMESPACES, {"metadata": {"name": ns}})
        yield e


def reader(emu: Emulator) -> tuple[PasswordSecrets, Log, Clock]:
    log, clock = Log(), Clock()
    return (PasswordSecrets(KubeClient.from_environment(server=emu.url), NS, log, clock=clock,
                            refresh=60.0), log, clock)


def test_reads_only_in_porticos_namespace_and_refreshes(emu: Emulator) -> None:
    emu.store.create(R.SECRETS, secret("bgp", NS, b"pw"), NS)
    emu.store.create(R.SECRETS, secret("bgp", "kube-system", b"other"), "kube-system")
    secrets, _log, clock = reader(emu)
    peers = [peer("a", "bgp"), peer("b", "bgp", NS), peer("c", "bgp", "kube-system")]
    data, errors = secrets.read(peers)
    assert data == {(NS, "bgp"): {"password": b"pw"}} and errors == {}
    assert emu.count("GET", "/namespaces/kube-system/secrets") == 0, "read outside namespace"
    assert emu.count("GET", "/secrets/") == 1
    secrets.read(peers)
    assert emu.count("GET", "/secrets/") == 1, "read again before the refresh"
    clock.t += 61
    secrets.read(peers)
    assert emu.count("GET", "/secrets/") == 2


def test_forbidden_is_reported_once_and_not_read_again_until_the_refresh(emu: Emulator
                                                                        ) -> None:
    emu.store.create(R.SECRETS, secret("bgp", NS, b"pw"), NS)
    rule = emu.faults.fail("GET", r"/secrets/bgp", 403, count=100)
    secrets, log, clock = reader(emu)
    peers = [peer("a", "bgp")]
    for _ in range(20):  # twenty rebuilds
        data, errors = secrets.read(peers)
    assert rule.hits == 1 and data == {}
    err = errors[(NS, "bgp")]
    assert err.status == 403 and "injected fault 403" in err.message
    assert [e for e, _ in log.lines] == ["secret_read_failed"]
    # The plan turns it into its own reason, naming the Secret and the cause.
    node = {"metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}
    snap = build_snapshot(services=[], endpoint_slices=[], nodes=[node], pools=[],
                          l2_advertisements=[], bgp_peers=peers, secrets=data,
                          secret_errors=errors, namespace=NS).snapshot
    prob = core.plan("n1", snap).peer_problems["a"]
    assert prob.reason == "PasswordSecretForbidden"
    assert f"Secret {NS}/bgp" in prob.message and "403 Forbidden" in prob.message
    # RBAC fixed by hand sends no event: the periodic re-read notices it.
    emu.faults.clear()
    clock.t += 61
    data, errors = secrets.read(peers)
    assert data == {(NS, "bgp"): {"password": b"pw"}} and errors == {}


def test_missing_secret_is_read_again_at_each_rebuild_and_logged_once(emu: Emulator) -> None:
    secrets, log, _clock = reader(emu)
    peers = [peer("a", "bgp")]
    for _ in range(3):
        data, errors = secrets.read(peers)
    assert data == {} and errors[(NS, "bgp")].status == 404
    assert emu.count("GET", "/secrets/bgp") == 3  # it may be created any moment
    assert len(log.lines) == 1
    emu.store.create(R.SECRETS, secret("bgp", NS, b"pw"), NS)
    data, errors = secrets.read(peers)
    assert data == {(NS, "bgp"): {"password": b"pw"}} and errors == {}


def test_unreferenced_secrets_are_forgotten(emu: Emulator) -> None:
    emu.store.create(R.SECRETS, secret("bgp", NS, b"pw"), NS)
    secrets, _log, _clock = reader(emu)
    assert secrets.read([peer("a", "bgp")])[0]
    assert secrets.read([]) == ({}, {})
    assert secrets.read([peer("a", "bgp")])[0]
    assert emu.count("GET", "/secrets/bgp") == 2
