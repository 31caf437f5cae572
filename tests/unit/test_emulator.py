"""The API emulator's semantics, over real HTTP (raw urllib3, not our client)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import urllib3

from common.kube import resources as R
from lab.emulator import Emulator

HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=5))


def call(emu: Emulator, method: str, path: str, body: Any = None,
         ctype: str = "application/json") -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    r = HTTP.request(method, emu.url + path, body=data, headers={"Content-Type": ctype})
    return r.status, json.loads(r.data) if r.data else None


def svc(name: str, ns: str = "a", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, **extra},
            "spec": {"type": "LoadBalancer"}}


SVC = "/api/v1/namespaces/a/services"


def test_create_sets_server_fields_and_global_resource_version(emu: Emulator) -> None:
    code, a = call(emu, "POST", SVC, {**svc("x"), "status": {"bogus": 1}})
    assert code == 201
    meta = a["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert "status" not in a  # POST drops status of kinds with a status subresource
    code, p = call(emu, "POST", "/apis/lb.portico.dev/v1alpha1/ipaddresspools",
                   {"metadata": {"name": "p"}, "spec": {}})
    assert code == 201
    assert int(p["metadata"]["resourceVersion"]) == int(meta["resourceVersion"]) + 1
    assert call(emu, "POST", SVC, svc("x"))[0] == 409  # AlreadyExists


def test_generate_name(emu: Emulator) -> None:
    names = {call(emu, "POST", SVC, {"metadata": {"generateName": "g-"}})[1]["metadata"]["name"]
             for _ in range(5)}
    assert len(names) == 5 and all(n.startswith("g-") and len(n) == 7 for n in names)
    assert call(emu, "POST", SVC, {"metadata": {}})[0] == 422


def test_put_conflicts_on_stale_resource_version_and_bumps_generation(emu: Emulator) -> None:
    _, a = call(emu, "POST", SVC, svc("x"))
    a["spec"]["ports"] = [{"port": 80}]
    code, b = call(emu, "PUT", SVC + "/x", a)
    assert code == 200 and b["metadata"]["generation"] == 2
    a["spec"]["ports"] = [{"port": 81}]
    code, err = call(emu, "PUT", SVC + "/x", a)  # a carries the old resourceVersion
    assert code == 409 and err["reason"] == "Conflict"


def test_status_subresource_separation(emu: Emulator) -> None:
    _, _a = call(emu, "POST", SVC, svc("x"))
    st = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    code, b = call(emu, "PATCH", SVC + "/x/status", {"status": st, "spec": {"type": "X"}},
                   "application/merge-patch+json")
    assert code == 200 and b["status"] == st and b["spec"]["type"] == "LoadBalancer"
    code, c = call(emu, "PATCH", SVC + "/x", {"status": {"x": 1}, "spec": {"type": "Y"}},
                   "application/merge-patch+json")
    assert c["status"] == st and c["spec"]["type"] == "Y"
    assert c["metadata"]["generation"] == 2  # status writes never bump generation


def test_noop_write_keeps_resource_version(emu: Emulator) -> None:
    _, a = call(emu, "POST", SVC, svc("x"))
    _, b = call(emu, "PATCH", SVC + "/x", {"spec": {"type": "LoadBalancer"}},
                "application/merge-patch+json")
    assert b["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"]


def test_json_patch_and_strategic_treated_as_merge(emu: Emulator) -> None:
    call(emu, "POST", SVC, svc("x"))
    code, b = call(emu, "PATCH", SVC + "/x",
                   [{"op": "add", "path": "/metadata/labels", "value": {"k": "v"}}],
                   "application/json-patch+json")
    assert code == 200 and b["metadata"]["labels"] == {"k": "v"}
    code, c = call(emu, "PATCH", SVC + "/x", {"metadata": {"labels": {"k": None}}},
                   "application/strategic-merge-patch+json")
    assert code == 200 and c["metadata"]["labels"] == {}


def test_list_selectors(emu: Emulator) -> None:
    call(emu, "POST", SVC, svc("x", labels={"app": "web", "tier": "1"}))
    call(emu, "POST", SVC, svc("y", labels={"app": "db"}))
    call(emu, "POST", "/api/v1/namespaces/b/services", svc("z", "b", labels={"app": "web"}))

    def names(q: str) -> list[str]:
        code, body = call(emu, "GET", "/api/v1/services?" + q)
        assert code == 200
        return [i["metadata"]["name"] for i in body["items"]]

    assert names("labelSelector=app%3Dweb") == ["x", "z"]
    assert names("labelSelector=app%20in%20(db,web),tier") == ["x"]
    assert names("labelSelector=!tier,app!%3Ddb") == ["z"]
    assert names("fieldSelector=metadata.namespace%3Db") == ["z"]
    assert names("fieldSelector=metadata.name%3Dy") == ["y"]
    _code, body = call(emu, "GET", SVC)
    assert [i["metadata"]["name"] for i in body["items"]] == ["x", "y"]
    assert call(emu, "GET", "/api/v1/services?labelSelector=%3D%3D")[0] == 400


def stream(emu: Emulator, query: str, seconds: float) -> list[dict[str, Any]]:
    """Read a watch until it ends (timeoutSeconds in the query)."""
    r = HTTP.request("GET", emu.url + "/api/v1/services?watch=1&" + query,
                     preload_content=False, timeout=urllib3.Timeout(read=seconds + 5))
    out = [json.loads(line) for line in b"".join(r.stream()).splitlines() if line.strip()]
    r.release_conn()
    return out


def test_watch_replays_from_resource_version_and_filters(emu: Emulator) -> None:
    _, a = call(emu, "POST", SVC, svc("x", labels={"app": "web"}))
    rv = a["metadata"]["resourceVersion"]
    call(emu, "POST", SVC, svc("y"))
    call(emu, "PATCH", SVC + "/x", {"metadata": {"labels": {"app": "other"}}},
         "application/merge-patch+json")
    call(emu, "DELETE", SVC + "/y")
    events = stream(emu, f"resourceVersion={rv}&timeoutSeconds=1", 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "y"), ("MODIFIED", "x"), ("DELETED", "y")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    # A selector turns "stopped matching" into DELETED, as the API server does.
    sel = stream(emu, f"resourceVersion={rv}&timeoutSeconds=1&labelSelector=app%3Dweb", 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in sel] == [("DELETED", "x")]


def test_watch_from_zero_lists_then_streams_and_bookmarks(emu: Emulator) -> None:
    call(emu, "POST", SVC, svc("x"))
    threading.Timer(0.3, lambda: call(emu, "POST", SVC, svc("y"))).start()
    events = stream(emu, "timeoutSeconds=1&allowWatchBookmarks=true", 1)
    kinds = [e["type"] for e in events]
    assert kinds[:1] == ["ADDED"] and kinds.count("ADDED") == 2 and "BOOKMARK" in kinds
    last = events[-1]
    assert last["type"] == "BOOKMARK"
    assert last["object"]["metadata"]["resourceVersion"] == str(emu.store.resource_version)


def test_compaction_gives_410(emu: Emulator) -> None:
    _, a = call(emu, "POST", SVC, svc("x"))
    call(emu, "POST", SVC, svc("y"))
    emu.compact()
    events = stream(emu, f"resourceVersion={a['metadata']['resourceVersion']}", 1)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    # The current resourceVersion stays watchable after compaction.
    ok = stream(emu, f"resourceVersion={emu.store.resource_version}&timeoutSeconds=1", 1)
    assert all(e["type"] != "ERROR" for e in ok)


def test_history_window_is_bounded() -> None:
    with Emulator(history_limit=5) as e:
        rvs = [call(e, "POST", SVC, svc(f"s{i}"))[1]["metadata"]["resourceVersion"]
               for i in range(12)]
        events = stream(e, f"resourceVersion={rvs[0]}&timeoutSeconds=1", 1)
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
        events = stream(e, f"resourceVersion={rvs[8]}&timeoutSeconds=1", 1)
        assert [x["object"]["metadata"]["name"] for x in events] == ["s9", "s10", "s11"]


def test_finalizers_delay_deletion(emu: Emulator) -> None:
    call(emu, "POST", SVC, svc("x", finalizers=["portico.dev/x"]))
    code, a = call(emu, "DELETE", SVC + "/x")
    assert code == 200 and a["metadata"]["deletionTimestamp"]
    assert call(emu, "GET", SVC + "/x")[0] == 200
    call(emu, "PATCH", SVC + "/x", {"metadata": {"finalizers": None}},
         "application/merge-patch+json")
    assert call(emu, "GET", SVC + "/x")[0] == 404


def test_faults_and_access_log(emu: Emulator) -> None:
    emu.faults.fail("GET", r"/services/x$", 500, count=2)
    emu.faults.fail("POST", r"/services", 429, retry_after=3)
    call(emu, "POST", SVC, svc("y"))  # 429 consumed here
    assert call(emu, "GET", SVC + "/x")[0] == 500
    assert call(emu, "GET", SVC + "/x")[0] == 500
    assert call(emu, "GET", SVC + "/x")[0] == 404  # faults used up
    assert emu.count("GET", SVC + "/x") == 3
    assert emu.count("POST") == 1
    r = HTTP.request("POST", emu.url + SVC, body=b"{}")
    assert r.status == 422
    emu.faults.delay("LIST", "services", 0.3)
    t0 = time.monotonic()
    assert call(emu, "GET", SVC)[0] == 200
    assert time.monotonic() - t0 >= 0.3
    assert emu.count("LIST") == 1


def test_drop_watches_ends_streams(emu: Emulator) -> None:
    result: list[list[dict[str, Any]]] = []
    t = threading.Thread(target=lambda: result.append(stream(emu, "timeoutSeconds=30", 30)))
    t.start()
    deadline = time.monotonic() + 5
    while emu.store.watcher_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emu.drop_watches() == 1
    t.join(5)
    assert not t.is_alive() and result == [[]]


def test_namespace_and_cluster_scoped_routes(emu: Emulator) -> None:
    assert call(emu, "POST", "/api/v1/namespaces", {"metadata": {"name": "a"}})[0] == 201
    assert call(emu, "GET", "/api/v1/namespaces/a")[0] == 200
    assert call(emu, "GET", "/api/v1/nodes")[0] == 200
    assert call(emu, "GET", "/apis/lb.portico.dev/v1alpha1/namespaces/a/bgppeers")[0] == 404
    assert call(emu, "GET", "/apis/nothing/v1/things")[0] == 404
    store = emu.store
    lease = store.create(R.LEASES, {"metadata": {"name": "l", "namespace": "a"}})
    assert call(emu, "GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l")[1][
        "metadata"]["uid"] == lease["metadata"]["uid"]
