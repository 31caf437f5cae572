"""A small Kubernetes REST client that speaks plain JSON dicts.

The ``kubernetes`` package is used only for what it does well — finding and loading the
configuration (in-cluster service account, kubeconfig with TLS/exec/token refresh) and
building the TLS-configured urllib3 pool — never for its models: those validate dict bodies
against built-in schemas and drop fields of CRDs and of newer API versions.

Every call has a connect timeout and a read timeout; urllib3's own retries are off (it would
otherwise silently retry 429/503 answers and hide them from our backoff); every library error
is converted here into ``common.errors`` (KubeError, Conflict, Gone, NotFound, Throttled for
429/503, and Refused: Forbidden for 403, Invalid for 400/422).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import urllib3
from prometheus_client import Counter

from common.errors import Conflict, Forbidden, Gone, Invalid, KubeError, NotFound, Throttled
from common.kube.resources import Resource

Obj = dict[str, Any]

# client-go's defaults: 5 s to connect is plenty on a cluster network; 30 s bounds a hung
# request to a sick API server without cutting off a large list.
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
# Server-side watch timeout: client-go uses 5 min scaled by (1 + rand); we use 300-360 s so that
# many watchers started together do not all reconnect in the same second.
WATCH_TIMEOUT_S = 300
WATCH_TIMEOUT_JITTER_S = 60
# The client read timeout of a watch must outlast the server's timeoutSeconds (a healthy idle
# watch is silent until the server closes it); this margin covers clock skew and scheduling.
WATCH_READ_SLACK_S = 30.0

USER_AGENT = "portico/0.1"
# Connections kept per API server: each informer's watch holds one for its whole life, every
# concurrent writer needs one more (lb controller: up to 16 workers, plus Events and the
# leader Lease). A request that finds the pool full still runs, but its connection is thrown
# away afterwards, so the next one pays a new TCP + TLS handshake (milliseconds of CPU on
# both sides) - the kubernetes library's default is 5 x CPUs, 10 on a 2-core node.
POOL_MAXSIZE = 32
# How long credentials from the kubeconfig / in-cluster loader are reused. Their refresh hook
# re-reads the configuration on every call (tens of microseconds, about a tenth of the
# controller's CPU per Service at 10,000 Services); client-go re-reads a token file once a
# minute. Shorter here, and dropped at once on a 401, so a rotated token is picked up.
AUTH_CACHE_S = 10.0

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}

REQUESTS = Counter(
    "portico_kube_requests_total",
    "Kubernetes API requests by verb, resource and HTTP status ('error' = no response).",
    ["verb", "resource", "code"],
)


def watch_timeout(rand: Callable[[], float] = random.random) -> int:
    return WATCH_TIMEOUT_S + int(WATCH_TIMEOUT_JITTER_S * rand())


def _status_info(data: bytes) -> tuple[str, str, tuple[str, ...]]:
    """(message, reason, fields named in details.causes) of a metav1.Status body."""
    try:
        body = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace"), "", ()
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return data[:200].decode("utf-8", "replace"), "", ()
    reason = body.get("reason") if isinstance(body.get("reason"), str) else ""
    details = body.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    fields = tuple(dict.fromkeys(
        str(c["field"]) for c in (causes if isinstance(causes, list) else [])
        if isinstance(c, dict) and isinstance(c.get("field"), str) and c["field"]))
    return str(body["message"]), str(reason), fields


def error_for_status(status: int, message: str, retry_after: str | None = None,
                     reason: str = "", detail: str = "",
                     fields: tuple[str, ...] = ()) -> KubeError:
    if status == 404:
        return NotFound(message, status)
    if status == 409:
        return Conflict(message, status)
    if status == 410:
        return Gone(message, status)
    if status == 403:
        return Forbidden(message, status, reason or "Forbidden", detail, fields)
    if status in (400, 422):
        return Invalid(message, status, reason or ("Invalid" if status == 422 else "BadRequest"),
                       detail, fields)
    if status in (429, 503):
        delay: float | None = None
        if retry_after:
            try:
                delay = float(retry_after)
            except ValueError:
                delay = None
        return Throttled(message, status, delay)
    return KubeError(message, status)


class CachedAuth:
    """Reuses the headers of ``load`` for ``ttl`` seconds; ``invalidate()`` (on a 401) makes
    the next call load them again. Thread-safe; a failing ``load`` raises to the caller."""

    def __init__(self, load: Callable[[], dict[str, str]], ttl: float = AUTH_CACHE_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._headers: dict[str, str] | None = None
        self._until = 0.0

    def __call__(self) -> dict[str, str]:
        now = self._monotonic()
        with self._lock:
            if self._headers is not None and now < self._until:
                return self._headers
        headers = self._load()
        with self._lock:
            self._headers, self._until = headers, now + self._ttl
        return headers

    def invalidate(self) -> None:
        with self._lock:
            self._headers = None


class WatchHandle:
    """Lets another thread end a blocked watch at once (Informer.stop)."""

    def __init__(self) -> None:
        self._resp: urllib3.BaseHTTPResponse | None = None
        self.cancelled = False

    def _attach(self, resp: urllib3.BaseHTTPResponse) -> None:
        self._resp = resp
        if self.cancelled:
            self.cancel()

    def cancel(self) -> None:
        self.cancelled = True
        resp = self._resp
        if resp is not None and hasattr(resp, "shutdown"):
            # urllib3 >= 2.3: shuts the socket down so a read blocked in another thread
            # returns immediately. It raises ValueError once the response has let go of its
            # socket (stream finished meanwhile): then there is nothing to cut.
            with contextlib.suppress(ValueError, OSError):
                resp.shutdown()


class KubeClient:
    def __init__(
        self,
        base_url: str,
        pool: urllib3.PoolManager | None = None,
        auth_headers: Callable[[], dict[str, str]] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        watch_read_slack: float = WATCH_READ_SLACK_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # maxsize: informers hold one streaming connection each, plus concurrent writers.
        self._pool = pool or urllib3.PoolManager(num_pools=4, maxsize=POOL_MAXSIZE,
                                                 retries=False)
        self._auth = auth_headers or (lambda: {})
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.watch_read_slack = watch_read_slack

    # ----- construction -------------------------------------------------------------------

    @classmethod
    def from_environment(
        cls,
        kubeconfig: str | None = None,
        server: str | None = None,
        context: str | None = None,
        **kwargs: Any,
    ) -> KubeClient:
        """An explicit plain server URL (the test emulator, no auth), else the in-cluster
        service account, else a kubeconfig (explicit path, $KUBECONFIG, ~/.kube/config)."""
        if server:
            if not server.startswith(("http://", "https://")):
                raise KubeError(f"--server must be an http(s) URL, got {server!r}")
            return cls(server, **kwargs)
        from kubernetes import config as kconfig
        from kubernetes.client import Configuration

        configuration = Configuration()
        try:
            if kubeconfig is None:
                try:
                    kconfig.load_incluster_config(  # type: ignore[no-untyped-call]
                        client_configuration=configuration
                    )
                    return cls.from_configuration(configuration, **kwargs)
                except kconfig.ConfigException:
                    pass
            kconfig.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (kconfig.ConfigException, OSError) as e:
            raise KubeError(f"no usable Kubernetes configuration: {e}") from e
        return cls.from_configuration(configuration, **kwargs)

    @classmethod
    def from_configuration(cls, configuration: Any, **kwargs: Any) -> KubeClient:
        from kubernetes.client.rest import RESTClientObject

        # The library's REST client builds the pool with the CA, client cert and proxy
        # settings from the configuration; we reuse only that pool (sized for our writers).
        configuration.connection_pool_maxsize = max(
            configuration.connection_pool_maxsize or 0, POOL_MAXSIZE)
        pool = RESTClientObject(configuration).pool_manager

        def auth() -> dict[str, str]:
            # auth_settings() runs the refresh hook (rotated service-account tokens, exec
            # plugins) on every call: CachedAuth calls it at most every AUTH_CACHE_S.
            headers: dict[str, str] = {}
            for setting in configuration.auth_settings().values():
                if setting.get("in") == "header" and setting.get("value"):
                    headers[setting["key"]] = setting["value"]
            return headers

        return cls(configuration.host, pool=pool, auth_headers=CachedAuth(auth), **kwargs)

    # ----- transport ----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        res: Resource,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        read_timeout: float | None = None,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        verb = "WATCH" if query and query.get("watch") else method
        try:
            auth = self._auth()
        except Exception as e:  # a failing exec plugin or token refresh: report, don't crash
            raise KubeError(f"{method} {path}: credentials unavailable: {e}") from e
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **auth}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        url = self.base_url + path
        timeout = urllib3.Timeout(
            connect=self.connect_timeout, read=read_timeout or self.request_timeout
        )
        try:
            resp = self._pool.urlopen(
                method, url + _query_string(query), body=data, headers=headers,
                timeout=timeout, retries=False, preload_content=not stream, redirect=False,
            )
        except urllib3.exceptions.HTTPError as e:
            REQUESTS.labels(verb, res.plural, "error").inc()
            raise KubeError(f"{method} {path}: {type(e).__name__}: {e}") from e
        REQUESTS.labels(verb, res.plural, str(resp.status)).inc()
        if resp.status == 401 and isinstance(self._auth, CachedAuth):
            self._auth.invalidate()  # maybe a rotated token: load credentials afresh
        if resp.status >= 400:
            try:
                payload = resp.data if not stream else resp.read()
            except urllib3.exceptions.HTTPError:
                payload = b""
            finally:
                if stream:
                    resp.release_conn()
            detail, reason, fields = _status_info(payload)
            raise error_for_status(
                resp.status,
                f"{method} {path}: {resp.status}: {detail}",
                resp.headers.get("Retry-After"),
                reason=reason, detail=detail, fields=fields,
            )
        return resp

    def _json(self, method: str, res: Resource, path: str, **kw: Any) -> Obj:
        resp = self._request(method, res, path, **kw)
        try:
            body = json.loads(resp.data)
        except ValueError as e:
            raise KubeError(f"{method} {path}: answer is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise KubeError(f"{method} {path}: answer is not a JSON object")
        return body

    # ----- verbs --------------------------------------------------------------------------

    def get(
        self, res: Resource, name: str, namespace: str | None = None,
        timeout: float | None = None,
    ) -> Obj:
        obj = self._json("GET", res, res.api_path(_ns(res, namespace), name),
                         read_timeout=timeout)
        return _typed(res, obj)

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> tuple[list[Obj], str]:
        """All items (following ``continue`` pages) and the list's resourceVersion."""
        path = res.api_path(namespace if res.namespaced else None)
        items: list[Obj] = []
        cont = ""
        while True:
            query = _selectors(label_selector, field_selector)
            if limit:
                query["limit"] = str(limit)
            if cont:
                query["continue"] = cont
            body = self._json("GET", res, path, query=query, read_timeout=timeout)
            meta = body.get("metadata") or {}
            got = body.get("items") or []
            if not isinstance(got, list):
                raise KubeError(f"GET {path}: items is not a list")
            items.extend(_typed(res, o) for o in got if isinstance(o, dict))
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def watch(
        self,
        res: Resource,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        handle: WatchHandle | None = None,
    ) -> Iterator[tuple[str, Obj]]:
        """Stream (type, object) from ``resource_version`` until the server ends the watch.

        Types: ADDED, MODIFIED, DELETED, BOOKMARK. An ERROR event with code 410 raises Gone,
        any other ERROR raises KubeError; a broken stream raises KubeError. A watch that ends
        cleanly (server timeout) just returns: resume from the last resourceVersion seen.
        """
        timeout_seconds = timeout_seconds or watch_timeout()
        query = _selectors(label_selector, field_selector)
        query.update(
            watch="1",
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout_seconds),
        )
        if resource_version:
            query["resourceVersion"] = resource_version
        path = res.api_path(namespace if res.namespaced else None)
        resp = self._request(
            "GET", res, path, query=query, stream=True,
            read_timeout=timeout_seconds + self.watch_read_slack,
        )
        if handle is not None:
            handle._attach(resp)
        try:
            buf = b""
            for chunk in resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield _watch_event(res, path, line)
            if buf.strip():
                yield _watch_event(res, path, buf)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if handle is not None and handle.cancelled:
                return
            raise KubeError(f"watch {path}: stream broke: {type(e).__name__}: {e}") from e
        finally:
            # A half-read stream cannot go back to the pool: close, then release the slot.
            resp.close()
            resp.release_conn()

    def create(
        self, res: Resource, body: Obj, namespace: str | None = None,
        timeout: float | None = None, name: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        """POST a new object; with ``name`` and ``subresource``, POST to that subresource
        (e.g. serviceaccounts/NAME/token: ``body`` is then the subresource's own kind, and
        the answer is returned as it is)."""
        ns = _ns(res, namespace if namespace is not None else _body_ns(body))
        if subresource is not None:
            return self._json("POST", res, res.api_path(ns, name, subresource), body=body,
                              read_timeout=timeout)
        return _typed(res, self._json("POST", res, res.api_path(ns), body=_with_type(res, body),
                                      read_timeout=timeout))

    def replace(
        self, res: Resource, name: str, body: Obj, namespace: str | None = None,
        subresource: str | None = None, timeout: float | None = None,
    ) -> Obj:
        ns = _ns(res, namespace if namespace is not None else _body_ns(body))
        path = res.api_path(ns, name, subresource)
        return _typed(res, self._json("PUT", res, path, body=_with_type(res, body),
                                      read_timeout=timeout))

    def patch(
        self, res: Resource, name: str, patch: Any, namespace: str | None = None,
        subresource: str | None = None, patch_type: str = "merge",
        timeout: float | None = None,
    ) -> Obj:
        if patch_type not in PATCH_TYPES:
            raise KubeError(f"unknown patch type {patch_type!r}")
        path = res.api_path(_ns(res, namespace), name, subresource)
        return _typed(res, self._json(
            "PATCH", res, path, body=patch, content_type=PATCH_TYPES[patch_type],
            read_timeout=timeout,
        ))

    def delete(
        self, res: Resource, name: str, namespace: str | None = None,
        resource_version: str | None = None, timeout: float | None = None,
        uid: str | None = None, grace_period_seconds: int | None = None,
    ) -> None:
        """DELETE, optionally only if the object still has ``resource_version`` / ``uid``,
        and with a grace period (0: at once, what a kubelet does once a pod's containers
        are gone)."""
        body: Obj | None = None
        preconditions = {k: v for k, v in (("resourceVersion", resource_version),
                                           ("uid", uid)) if v}
        if preconditions or grace_period_seconds is not None:
            body = {"kind": "DeleteOptions", "apiVersion": "v1"}
            if preconditions:
                body["preconditions"] = preconditions
            if grace_period_seconds is not None:
                body["gracePeriodSeconds"] = grace_period_seconds
        self._request("DELETE", res, res.api_path(_ns(res, namespace), name), body=body,
                      read_timeout=timeout)

    def close(self) -> None:
        self._pool.clear()


def _query_string(query: dict[str, str] | None) -> str:
    if not query:
        return ""
    return "?" + urlencode(query)


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    q: dict[str, str] = {}
    if label_selector:
        q["labelSelector"] = label_selector
    if field_selector:
        q["fieldSelector"] = field_selector
    return q


def _ns(res: Resource, namespace: str | None) -> str | None:
    if not res.namespaced:
        return None
    if not namespace:
        raise KubeError(f"{res} is namespaced: a namespace is required")
    return namespace


def _body_ns(body: Obj) -> str | None:
    meta = body.get("metadata")
    return str(meta["namespace"]) if isinstance(meta, dict) and meta.get("namespace") else None


def _typed(res: Resource, obj: Obj) -> Obj:
    # List items come without kind/apiVersion; Event recording and logs need them.
    obj.setdefault("kind", res.kind)
    obj.setdefault("apiVersion", res.api_version)
    return obj


def _with_type(res: Resource, body: Obj) -> Obj:
    if "kind" in body and "apiVersion" in body:
        return body
    return {"apiVersion": res.api_version, "kind": res.kind, **body}


def _watch_event(res: Resource, path: str, line: bytes) -> tuple[str, Obj]:
    try:
        ev = json.loads(line)
    except ValueError as e:
        raise KubeError(f"watch {path}: bad event line: {e}") from e
    if not isinstance(ev, dict) or not isinstance(ev.get("object"), dict):
        raise KubeError(f"watch {path}: malformed event")
    etype = str(ev.get("type") or "")
    obj: Obj = ev["object"]
    if etype == "ERROR":
        code = obj.get("code")
        msg = f"watch {path}: {obj.get('message', 'error event')}"
        if code == 410:
            raise Gone(msg, 410)
        raise error_for_status(int(code) if isinstance(code, int) else 500, msg)
    if etype not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise KubeError(f"watch {path}: unknown event type {etype!r}")
    if etype != "BOOKMARK":
        _typed(res, obj)
    return etype, obj
