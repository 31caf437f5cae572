"""KubeClient's per-request overheads: credentials are reused for AUTH_CACHE_S (and loaded
afresh after a 401), and the connection pool holds every watch plus every writer."""

from __future__ import annotations

import pytest

from common.errors import KubeError
from common.kube.client import AUTH_CACHE_S, POOL_MAXSIZE, CachedAuth, KubeClient
from common.kube.resources import SERVICES
from lab.emulator import Emulator
from lb.controller import MAX_WORKERS


class Loader:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        return {"Authorization": f"Bearer token-{self.calls}"}


def test_credentials_are_reused_until_the_ttl_ends() -> None:
    now = [100.0]
    load = Loader()
    auth = CachedAuth(load, ttl=10.0, monotonic=lambda: now[0])
    assert auth() == {"Authorization": "Bearer token-1"}
    now[0] += 9.9
    assert auth() == {"Authorization": "Bearer token-1"}
    assert load.calls == 1
    now[0] += 0.2
    assert auth() == {"Authorization": "Bearer token-2"}
    assert load.calls == 2


def test_invalidate_loads_afresh_on_the_next_call() -> None:
    load = Loader()
    auth = CachedAuth(load, ttl=AUTH_CACHE_S, monotonic=lambda: 0.0)
    auth()
    auth.invalidate()
    assert auth() == {"Authorization": "Bearer token-2"}


def test_a_failing_loader_is_not_cached() -> None:
    calls = []

    def load() -> dict[str, str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("exec plugin failed")
        return {"Authorization": "Bearer ok"}

    auth = CachedAuth(load, monotonic=lambda: 0.0)
    with pytest.raises(RuntimeError):
        auth()
    assert auth() == {"Authorization": "Bearer ok"}


def test_a_401_drops_the_cached_credentials(emu: Emulator) -> None:
    load = Loader()
    auth = CachedAuth(load, monotonic=lambda: 0.0)  # would never expire on its own
    client = KubeClient(emu.url, auth_headers=auth)
    client.list(SERVICES)
    emu.faults.fail("GET", r"/services", 401, count=1)
    with pytest.raises(KubeError):
        client.list(SERVICES)
    client.list(SERVICES)
    assert load.calls == 2
    sent = [a.authorization for a in emu.log if a.verb in ("LIST", "GET")]
    assert sent[-1] == "Bearer token-2"


def test_kubeconfig_client_reuses_credentials_and_sizes_its_pool() -> None:
    from kubernetes.client import Configuration

    conf = Configuration()
    conf.host = "https://127.0.0.1:6443"
    conf.api_key = {"authorization": "Bearer abc"}
    client = KubeClient.from_configuration(conf)
    assert isinstance(client._auth, CachedAuth)
    assert client._auth() == {"authorization": "Bearer abc"}
    assert client._pool.connection_pool_kw["maxsize"] >= POOL_MAXSIZE
    # 3 informer watches + the most controller workers + Events and the leader Lease
    assert POOL_MAXSIZE >= 3 + MAX_WORKERS + 2
