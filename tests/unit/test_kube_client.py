"""KubeClient against the emulator: verbs, error conversion, timeouts, watch decoding."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from common.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Refused,
    Throttled,
)
from common.kube import resources as R
from common.kube.client import KubeClient, WatchHandle, error_for_status
from lab.emulator import Emulator


@pytest.fixture
def kube(emu: Emulator) -> KubeClient:
    return KubeClient.from_environment(server=emu.url, request_timeout=0.5,
                                       watch_read_slack=0.5)


def test_crud_round_trip_with_plain_dicts(kube: KubeClient) -> None:
    pool = kube.create(R.IPADDRESSPOOLS, {"metadata": {"name": "p"},
                                          "spec": {"addresses": ["192.0.2.0/28"],
                                                   "unknownFutureField": True}})
    assert pool["spec"]["unknownFutureField"] is True  # nothing validated or dropped
    assert pool["kind"] == "IPAddressPool" and pool["apiVersion"] == "lb.portico.dev/v1alpha1"
    got = kube.patch(R.IPADDRESSPOOLS, "p", {"status": {"conditions": []}}, subresource="status")
    assert got["status"] == {"conditions": []}
    items, rv = kube.list(R.IPADDRESSPOOLS)
    assert [i["kind"] for i in items] == ["IPAddressPool"]  # list items get their kind back
    assert rv == got["metadata"]["resourceVersion"]
    kube.delete(R.IPADDRESSPOOLS, "p")
    with pytest.raises(NotFound):
        kube.get(R.IPADDRESSPOOLS, "p")


def test_namespace_taken_from_body_and_required(kube: KubeClient) -> None:
    s = kube.create(R.SERVICES, {"metadata": {"name": "s", "namespace": "a"}})
    assert s["metadata"]["namespace"] == "a"
    with pytest.raises(KubeError, match="namespace is required"):
        kube.get(R.SERVICES, "s")
    with pytest.raises(KubeError, match="invalid name"):
        kube.get(R.SERVICES, "../x", "a")


def test_errors_are_converted(emu: Emulator, kube: KubeClient) -> None:
    s = kube.create(R.SERVICES, {"metadata": {"name": "s", "namespace": "a"}})
    kube.patch(R.SERVICES, "s", {"spec": {"type": "LoadBalancer"}}, "a")
    with pytest.raises(Conflict):
        kube.replace(R.SERVICES, "s", s)
    emu.faults.fail("GET", "/services/s", 429, retry_after=7)
    with pytest.raises(Throttled) as exc:
        kube.get(R.SERVICES, "s", "a")
    assert exc.value.retry_after == 7.0 and exc.value.status == 429
    emu.faults.fail("GET", "/services/s", 500)
    with pytest.raises(KubeError) as exc2:
        kube.get(R.SERVICES, "s", "a")
    assert exc2.value.status == 500
    # urllib3 must not retry silently: one request per call.
    assert emu.count("GET", "/services/s") == 2


@pytest.mark.parametrize(("code", "cls", "reason"), [
    (403, Forbidden, "Forbidden"), (422, Invalid, "Invalid"), (400, Invalid, "BadRequest")])
def test_refusals_are_their_own_errors(emu: Emulator, kube: KubeClient, code: int,
                                       cls: type[Refused], reason: str) -> None:
    """400/403/422 are Refused (never worth a retry of the same request), with the server's
    reason and message; 401, 404, 409, 429 and 5xx are not."""
    emu.faults.fail("PATCH", "/services/s/status", code)
    with pytest.raises(cls) as exc:
        kube.patch(R.SERVICES, "s", {"status": {}}, "a", subresource="status")
    assert exc.value.status == code and exc.value.reason == reason
    assert exc.value.detail == f"injected fault {code}"
    for other in (401, 404, 409, 410, 429, 500, 503):
        assert not isinstance(error_for_status(other, "x"), Refused), other


def test_invalid_names_the_fields_of_the_status_causes() -> None:
    from common.kube.client import _status_info

    body = (b'{"kind":"Status","status":"Failure","reason":"Invalid","code":422,'
            b'"message":"Service \\"s\\" is invalid: status.loadBalancer.ingress[0].ip: '
            b'Invalid value","details":{"causes":[{"field":"status.loadBalancer.ingress[0].ip"},'
            b'{"field":"status.loadBalancer.ingress[0].ip"},{"reason":"x"}]}}')
    message, reason, fields = _status_info(body)
    assert reason == "Invalid" and fields == ("status.loadBalancer.ingress[0].ip",)
    assert "is invalid" in message
    err = error_for_status(422, "PATCH x: 422: " + message, None, reason=reason,
                           detail=message, fields=fields)
    assert isinstance(err, Invalid) and err.fields == fields and err.detail == message
    assert _status_info(b"not json") == ("not json", "", ())
    assert _status_info(b'{"message":"m","details":{"causes":"junk"}}') == ("m", "", ())


def test_connection_refused_is_a_kube_error() -> None:
    e = Emulator().start()
    url = e.url
    e.stop()
    kube = KubeClient.from_environment(server=url, connect_timeout=0.5)
    with pytest.raises(KubeError) as exc:
        kube.list(R.SERVICES)
    assert exc.value.status is None


def test_read_timeout_fires_on_slow_response(emu: Emulator, kube: KubeClient) -> None:
    emu.faults.delay("LIST", "services", 6.0)
    t0 = time.monotonic()
    with pytest.raises(KubeError, match=r"ReadTimeout|timed out"):
        kube.list(R.SERVICES)
    assert time.monotonic() - t0 < 4  # the 0.5 s read timeout, not the 6 s stall


def test_watch_events_bookmarks_and_gone(emu: Emulator, kube: KubeClient) -> None:
    _, rv = kube.list(R.SERVICES)
    kube.create(R.SERVICES, {"metadata": {"name": "s", "namespace": "a"}})
    events = list(kube.watch(R.SERVICES, rv, timeout_seconds=1))
    assert events[0][0] == "ADDED" and events[0][1]["kind"] == "Service"
    assert {t for t, _ in events[1:]} == {"BOOKMARK"}
    emu.compact()
    with pytest.raises(Gone):
        list(kube.watch(R.SERVICES, rv, timeout_seconds=1))
    emu.faults.fail("WATCH", "services", 410, as_watch_event=False)
    with pytest.raises(Gone):
        list(kube.watch(R.SERVICES, str(emu.store.resource_version), timeout_seconds=1))


def test_watch_query_carries_server_timeout_and_bookmarks(emu: Emulator,
                                                          kube: KubeClient) -> None:
    list(kube.watch(R.SERVICES, "", namespace="a", label_selector="x=y", timeout_seconds=1))
    target = next(t for v, t, _ in emu.log if v == "WATCH")
    assert target.startswith("/api/v1/namespaces/a/services?")
    for part in ("watch=1", "allowWatchBookmarks=true", "timeoutSeconds=1",
                 "labelSelector=x%3Dy"):
        assert part in target


def test_abrupt_drop_raises_and_clean_drop_returns(emu: Emulator, kube: KubeClient) -> None:
    def drop_later(abrupt: bool) -> None:
        deadline = time.monotonic() + 5
        while emu.store.watcher_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        emu.drop_watches(abrupt=abrupt)

    threading.Thread(target=drop_later, args=(True,)).start()
    with pytest.raises(KubeError, match="stream broke"):
        list(kube.watch(R.SERVICES, "", timeout_seconds=10))
    threading.Thread(target=drop_later, args=(False,)).start()
    t0 = time.monotonic()
    assert list(kube.watch(R.SERVICES, "", timeout_seconds=10)) == []
    assert time.monotonic() - t0 < 5


def test_watch_handle_cancels_a_blocked_watch(emu: Emulator, kube: KubeClient) -> None:
    handle = WatchHandle()
    threading.Timer(0.3, handle.cancel).start()
    t0 = time.monotonic()
    assert [t for t, _ in kube.watch(R.NODES, "", timeout_seconds=10, handle=handle)
            if t != "BOOKMARK"] == []
    assert time.monotonic() - t0 < 5  # not the 10 s server timeout


def test_list_follows_continue_pages(emu: Emulator, kube: KubeClient) -> None:
    for i in range(7):
        kube.create(R.SERVICES, {"metadata": {"name": f"s{i}", "namespace": "a"}})
    items, rv = kube.list(R.SERVICES, limit=3)
    assert [i["metadata"]["name"] for i in items] == [f"s{i}" for i in range(7)]
    assert emu.count("LIST") == 3 and rv == str(emu.store.resource_version)
    # An expired continue token is a 410: the caller lists again from scratch.
    emu.faults.delay("LIST", "continue=", 0.2)

    def write_and_compact() -> None:
        emu.store.create(R.SERVICES, {"metadata": {"name": "late", "namespace": "a"}})
        emu.compact()

    t = threading.Timer(0.1, write_and_compact)
    t.start()
    with pytest.raises(Gone):
        kube.list(R.SERVICES, limit=3)
    t.join()


def test_per_call_timeout_overrides_default(emu: Emulator, kube: KubeClient) -> None:
    kube.create(R.SERVICES, {"metadata": {"name": "s", "namespace": "a"}})
    emu.faults.delay("GET", "/services/s", 0.8)
    assert kube.get(R.SERVICES, "s", "a", timeout=3)["metadata"]["name"] == "s"


def test_kubeconfig_credentials_reach_the_server(emu: Emulator, tmp_path: Path) -> None:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": emu.url}}],
        "users": [{"name": "u", "user": {"token": "s3cr3t-token"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}],
    }))
    kube = KubeClient.from_environment(kubeconfig=str(cfg))
    kube.list(R.NODES)
    assert emu.log[-1].authorization == "Bearer s3cr3t-token"
    with pytest.raises(KubeError, match="no usable Kubernetes configuration"):
        KubeClient.from_environment(kubeconfig=str(tmp_path / "missing"))
    with pytest.raises(KubeError, match="http"):
        KubeClient.from_environment(server="127.0.0.1:1")
