"""HTTP front of the emulator: Kubernetes REST paths, watch streaming, fault injection."""

from __future__ import annotations

import contextlib
import json
import queue
import select
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from common.kube.resources import Resource

from .faults import FaultRule, Faults
from .kinds import served
from .selectors import Pred, SelectorError, object_matcher
from .store import DROP_ABRUPT, DROP_CLEAN, ApiError, Store, Watcher, WatchEvent

Obj = dict[str, Any]

# The real API server closes a watch without timeoutSeconds after 30-60 minutes.
DEFAULT_WATCH_TIMEOUT_S = 1800
# Largest request body accepted (the real API server allows ~3 MB objects).
MAX_BODY = 3 * 1024 * 1024

PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    # Strategic merge differs from merge only for lists with patch keys; our components
    # send merge patches, so treating both alike is enough here.
    "application/strategic-merge-patch+json": "merge",
    "application/json-patch+json": "json",
}


def status_body(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }


_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass
class Access:
    """One access-log entry; iterable as (verb, path?query, status)."""

    verb: str
    target: str
    status: int = 0  # filled in when the answer is known (200 for a watch stream)
    authorization: str = ""  # the Authorization header, to check credential plumbing
    # The decoded request body (POST/PUT/PATCH/DELETE), to check what a write carried, e.g.
    # the resourceVersion precondition of a status patch.
    body: Any = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.verb, self.target, self.status))


class Emulator:
    """A small Kubernetes API server for tests. ``Emulator().start()`` -> ``.url``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        resources: Iterable[Resource] | None = None,
        history_limit: int = 10_000,
        bookmark_interval: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self.store = Store(served() if resources is None else resources, history_limit)
        self.faults = Faults()
        self.bookmark_interval = bookmark_interval
        self.requests: Counter[tuple[str, str]] = Counter()  # (verb, path) -> count
        self.log: deque[Access] = deque(maxlen=100_000)
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Resource] = {}
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        for r in self.store.resources:
            self._routes[(r.prefix, r.plural)] = r

    def register(self, res: Resource) -> None:
        self.store.register(res)
        self._routes[(res.prefix, res.plural)] = res

    # ----- lifecycle ----------------------------------------------------------------------

    def start(self) -> Emulator:
        handler = type("Handler", (_Handler,), {"emu": self})
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_cls = type("Server", (ThreadingHTTPServer,), {
            "address_family": family, "daemon_threads": True, "request_queue_size": 128,
            "allow_reuse_address": True,
        })
        self._server = server_cls((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="kube-emulator", daemon=True,
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._stopping.set()
        self.store.drop_watches(abrupt=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        # Idle keep-alive connections would keep their handler threads blocked in a read.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- test helpers -------------------------------------------------------------------

    def drop_watches(self, abrupt: bool = False) -> int:
        """End every open watch now: cleanly (terminating chunk) or abruptly (TCP reset)."""
        return self.store.drop_watches(abrupt)

    def compact(self) -> None:
        self.store.compact()

    def count(self, verb: str | None = None, path: str | None = None) -> int:
        """Requests seen with this verb (GET/LIST/WATCH/POST/PUT/PATCH/DELETE) whose path
        (without query) contains ``path``."""
        with self._log_lock:
            return sum(
                n for (v, p), n in self.requests.items()
                if (verb is None or v == verb) and (path is None or path in p)
            )

    def reset_counts(self) -> None:
        with self._log_lock:
            self.requests.clear()
            self.log.clear()

    def _account(self, verb: str, path: str, target: str, auth: str = "",
                 body: Any = None) -> Access:
        entry = Access(verb, target, authorization=auth, body=body)
        with self._log_lock:
            self.requests[(verb, path)] += 1
            self.log.append(entry)
        return entry

    # ----- routing ------------------------------------------------------------------------

    def route(self, path: str) -> tuple[Resource, str | None, str | None, str | None]:
        """(resource, namespace, name, subresource) of a REST path; ApiError 404 if none."""
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 2 and segs[0] == "api":
            n = 2
        elif len(segs) >= 3 and segs[0] == "apis":
            n = 3
        else:
            raise ApiError(404, "NotFound", f"the server could not find {path}")
        prefix = "/" + "/".join(segs[:n])
        rest = segs[n:]
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (prefix, rest[2]) in self._routes:
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3 or (prefix, rest[0]) not in self._routes:
            raise ApiError(404, "NotFound", f"the server could not find {path}")
        res = self._routes[(prefix, rest[0])]
        if ns is not None and not res.namespaced:
            raise ApiError(404, "NotFound", f"{res} is not namespaced")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and res.status_subresource):
            raise ApiError(404, "NotFound", f"{res} has no subresource {sub}")
        return res, ns, name, sub


class _Handler(BaseHTTPRequestHandler):
    emu: Emulator
    protocol_version = "HTTP/1.1"
    server_version = "portico-kube-emulator/0.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
    # client's delayed ACK adds ~40 ms to every request.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.emu._conns_lock:
            self.emu._conns.add(self.connection)

    def finish(self) -> None:
        with self.emu._conns_lock:
            self.emu._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the access log lives in Emulator.requests/log

    # -- plumbing --

    def _send_json(self, code: int, body: Obj, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self._status = code

    def _send_error(self, e: ApiError, extra: dict[str, str] | None = None) -> None:
        self._send_json(e.code, status_body(e.code, e.reason, e.message), extra)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge", "request body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"body is not JSON: {e}") from e

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        emu = self.emu
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self._status = 0
        entry: Access | None = None
        verb = method
        try:
            body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
            if url.path in ("/version", "/healthz", "/readyz", "/livez"):
                self._send_json(200, {"major": "1", "minor": "31",
                                      "gitVersion": "v1.31.0-portico-emulator"})
                return
            res, ns, name, sub = emu.route(url.path)
            if method == "GET" and name is None:
                verb = "WATCH" if q.get("watch") in ("1", "true") else "LIST"
            # Counted before answering: a test that asserts right after its call returns
            # must see it.
            entry = emu._account(verb, url.path, self.path,
                                 self.headers.get("Authorization") or "", body)
            rule = emu.faults.take(method, verb, self.path)
            if rule is not None and self._apply_fault(rule, verb):
                return
            if verb == "WATCH":
                self._watch(res, ns, q)
                return
            self._dispatch(method, res, ns, name, sub, q, body)
        except ApiError as e:
            if entry is None:
                entry = emu._account(verb, url.path, self.path)
            entry.status = e.code
            self._send_error(e)
        except SelectorError as e:
            self._send_error(ApiError(400, "BadRequest", str(e)))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if entry is not None and not entry.status:
                entry.status = self._status

    def _apply_fault(self, rule: FaultRule, verb: str) -> bool:
        """Stall and/or fail; True when the request has been answered."""
        if rule.delay:
            self.emu._stopping.wait(rule.delay)
        if rule.status is None:
            return False
        code = rule.status
        if verb == "WATCH" and code == 410 and rule.as_watch_event:
            self._start_stream()
            self._chunk({"type": "ERROR", "object": status_body(
                410, "Expired", "too old resource version (injected)")})
            self._end_stream()
            return True
        extra = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else None
        self._send_error(ApiError(code, _REASONS.get(code, "InternalError"),
                                  f"injected fault {code}"), extra)
        return True

    # -- CRUD --

    def _dispatch(
        self, method: str, res: Resource, ns: str | None, name: str | None, sub: str | None,
        q: dict[str, str], body: Any,
    ) -> None:
        store = self.emu.store
        if res.namespaced and name is not None and ns is None:
            raise ApiError(404, "NotFound", f"{res} is namespaced: the path needs a namespace")
        if method == "GET" and name is None:
            match = object_matcher(ns, q.get("labelSelector"), q.get("fieldSelector"))
            limit, offset = int(q.get("limit") or 0), 0
            token_rv: int | None = None
            if q.get("continue"):
                # Token "rv:offset". Unlike the real server, later pages are not a snapshot
                # at the first page's resourceVersion; the token only carries it.
                try:
                    token_rv, offset = (int(x) for x in q["continue"].split(":"))
                except ValueError:
                    raise ApiError(400, "BadRequest", "bad continue token") from None
                if token_rv < store.compacted_rv(res):
                    raise ApiError(410, "Expired", "the continue token has expired")
            items, rv, total = store.list_page(res, ns, match, offset, limit)
            meta: Obj = {"resourceVersion": str(token_rv if token_rv is not None else rv)}
            if limit > 0 and offset + limit < total:
                meta["continue"] = f"{meta['resourceVersion']}:{offset + limit}"
            self._send_json(200, {
                "kind": f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": meta, "items": items,
            })
        elif method == "GET":
            assert name is not None
            obj = store.get(res, name, ns)
            if obj is None:
                raise ApiError(404, "NotFound", f'{res} "{name}" not found')
            self._send_json(200, obj)
        elif method == "POST" and name is None:
            if res.namespaced and ns is None:
                raise ApiError(405, "MethodNotAllowed", "POST needs a namespace in the path")
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "body must be a JSON object")
            self._send_json(201, store.create(res, body, ns, keep_status=False))
        elif method == "PUT" and name is not None:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "body must be a JSON object")
            bmeta = body.get("metadata") or {}
            if bmeta.get("name") not in (None, name):
                raise ApiError(400, "BadRequest", "the name in the body does not match the URL")
            if ns and bmeta.get("namespace") not in (None, "", ns):
                raise ApiError(400, "BadRequest", "the namespace in the body does not match")
            mode = "status" if sub == "status" else "main"
            self._send_json(200, store.replace(res, name, body, ns, mode=mode, check_rv=True))
        elif method == "PATCH" and name is not None:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype not in PATCH_TYPES:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype}")
            mode = "status" if sub == "status" else "main"
            self._send_json(200, store.patch(
                res, name, body, ns, mode=mode, patch_type=PATCH_TYPES[ctype]))
        elif method == "DELETE" and name is not None:
            pre = (body or {}).get("preconditions") or {} if isinstance(body, dict) else {}
            gone = store.delete(res, name, ns, pre.get("resourceVersion"))
            if gone is None:
                raise ApiError(404, "NotFound", f'{res} "{name}" not found')
            self._send_json(200, gone)
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} not allowed here")

    # -- watch --

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._status = 200

    def _chunk(self, event: Obj) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _watch(self, res: Resource, ns: str | None, q: dict[str, str]) -> None:
        store = self.emu.store
        rv_s = q.get("resourceVersion", "")
        try:
            since = int(rv_s) if rv_s not in ("", "0") else None
        except ValueError:
            raise ApiError(400, "BadRequest", f"bad resourceVersion {rv_s!r}") from None
        timeout = float(q.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        match = object_matcher(ns, q.get("labelSelector"), q.get("fieldSelector"))
        try:
            w, replay = store.subscribe(res, since, match)
        except ApiError as e:
            if e.code != 410:
                raise
            self._start_stream()
            self._chunk({"type": "ERROR", "object": status_body(410, e.reason, e.message)})
            self._end_stream()
            return
        try:
            self._start_stream()
            self._stream(w, replay, res, match, timeout, bookmarks)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            store.unsubscribe(w)

    def _stream(
        self, w: Watcher, replay: list[WatchEvent], res: Resource, match: Pred,
        timeout: float, bookmarks: bool,
    ) -> None:
        emu = self.emu
        for ev in replay:
            self._send_event(ev, match)
        start = time.monotonic()
        deadline = start + timeout
        next_bookmark = start + emu.bookmark_interval
        while True:
            now = time.monotonic()
            if emu._stopping.is_set():
                self._abort()
                return
            if now >= deadline:
                if bookmarks:
                    self._bookmark(w, res)
                self._end_stream()
                return
            if bookmarks and now >= next_bookmark:
                self._bookmark(w, res)
                next_bookmark = now + emu.bookmark_interval
            wait = min(deadline - now, 0.25)
            if bookmarks:
                wait = max(0.0, min(wait, next_bookmark - now))
            try:
                item = w.q.get(timeout=wait)
            except queue.Empty:
                if self._client_gone():
                    self.close_connection = True
                    return
                continue
            if item == DROP_ABRUPT:
                self._abort()
                return
            if item == DROP_CLEAN:
                # A terminated chunked response leaves the connection reusable (keep-alive),
                # as with the real API server; closing it would race the client's pool.
                self._end_stream()
                return
            assert isinstance(item, WatchEvent)
            self._send_event(item, match)

    def _client_gone(self) -> bool:
        """A watching client never sends anything; readable-with-EOF means it hung up, so
        the watcher is removed now rather than at the next write."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _bookmark(self, w: Watcher, res: Resource) -> None:
        rv = self.emu.store.bookmark_rv(w)
        if rv is not None:
            self._chunk({"type": "BOOKMARK", "object": {
                "kind": res.kind, "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(rv)},
            }})

    def _send_event(self, ev: WatchEvent, match: Pred) -> None:
        new_ok = match(ev.obj)
        if ev.type == "MODIFIED" and ev.old is not None:
            old_ok = match(ev.old)
            if new_ok and not old_ok:
                etype = "ADDED"
            elif old_ok and not new_ok:
                etype = "DELETED"
            elif new_ok:
                etype = "MODIFIED"
            else:
                return
        elif not new_ok:
            return
        else:
            etype = ev.type
        self._chunk({"type": etype, "object": ev.obj})
