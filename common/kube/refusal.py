"""Writes the API server refuses as such: report once, try again only after a change.

A 400 (Bad Request), 403 (Forbidden) or 422 (Invalid) answer (``common.errors.Refused``) will be
given again to the same request: the body breaks the schema or a CEL rule, or the
component's ServiceAccount lacks the permission (RBAC edited by hand). Retrying it with
backoff would repeat the refusal for ever and fill the log; the user would still not know.
So every component does the same thing with it:

- report it once: a Warning Event on the object concerned (reason ``StatusWriteRefused``,
  the HTTP code, the server's reason and message), one structured log line with the object,
  the field written and the status, and ``portico_kube_writes_refused_total``;
- do not send the same write to the same version of the object again (``RefusalMemo``): the
  next informer event for the object (a new resourceVersion) or a different wanted content
  is what makes it worth another try. Nothing is lost: the object's next change brings it
  back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Counter

from common.errors import Refused
from common.kube.resources import Resource

STATUS_WRITE_REFUSED = "StatusWriteRefused"

REFUSED_WRITES = Counter(
    "portico_kube_writes_refused_total",
    "Writes the API server refused as such (400/403/422): reported once, retried only after "
    "the object changes.",
    ["component", "resource", "code"],
)

K = TypeVar("K", bound=Hashable)


class Recorder(Protocol):
    def record(self, involved: dict[str, Any], type_: str, reason: str, message: str,
               /) -> None: ...


class Logger(Protocol):
    def warning(self, event: str, **kw: Any) -> Any: ...


def fingerprint(obj: Mapping[str, Any], wanted: Any) -> tuple[str, str]:
    """(resourceVersion, canonical JSON of what we want to write): a refused write is sent
    again only when one of the two changed."""
    meta = obj.get("metadata") or {}
    rv = str(meta.get("resourceVersion") or "") if isinstance(meta, Mapping) else ""
    return rv, json.dumps(wanted, sort_keys=True, separators=(",", ":"), default=str)


def refusal_message(err: Refused, what: str = "status write") -> str:
    """What the Event says: the write, the HTTP code and reason, the server's message."""
    fields = f" (fields: {', '.join(err.fields)})" if err.fields else ""
    return (f"the API server refused the {what} with HTTP {err.status} "
            f"{err.reason or 'error'}{fields}: {err.detail}; Portico does not retry it until "
            "the object changes")


def report_refusal(events: Recorder, log: Logger, obj: Mapping[str, Any], err: Refused, *,
                   component: str, resource: str, field: str = "status",
                   what: str = "status write", reason: str = STATUS_WRITE_REFUSED) -> None:
    """Warning Event on ``obj`` + one log line + the metric. Never raises (Events never do)."""
    meta = obj.get("metadata") or {}
    ns = str(meta.get("namespace") or "") if isinstance(meta, Mapping) else ""
    name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
    REFUSED_WRITES.labels(component, resource, str(err.status)).inc()
    log.warning("write_refused", object=f"{ns}/{name}" if ns else name,
                kind=str(obj.get("kind") or ""), field=field, status=err.status,
                reason=err.reason, fields=list(err.fields), error=err.detail)
    events.record(dict(obj), "Warning", reason, refusal_message(err, what))


class RefusalMemo(Generic[K]):
    """Which write was refused for which key, so the same one is not sent again.

    ``blocked(key, fp)``: the write with this fingerprint was refused before, skip it.
    ``refused(key, fp)``: remember it; True when it is news (report it), False when this
    exact write had already been refused (do not report again). ``done(key)`` after a
    successful write, ``retain(keys)`` to forget objects that are gone.
    Not thread-safe: each owner uses it from its one worker thread.
    """

    def __init__(self) -> None:
        self._refused: dict[K, object] = {}  # key -> fingerprint (compared with ==)

    def blocked(self, key: K, fp: object) -> bool:
        return key in self._refused and self._refused[key] == fp

    def refused(self, key: K, fp: object) -> bool:
        new = self._refused.get(key) != fp
        self._refused[key] = fp
        return new

    def done(self, key: K) -> None:
        self._refused.pop(key, None)

    def retain(self, keys: Iterable[K]) -> None:
        keep = set(keys)
        for k in [k for k in self._refused if k not in keep]:
            del self._refused[k]

    def __contains__(self, key: object) -> bool:
        return key in self._refused

    def __len__(self) -> int:
        return len(self._refused)


ACCESS_REFUSED = "AccessRefused"

READS_REFUSED = Counter(
    "portico_kube_reads_refused_total",
    "Lists and watches the API server refused as such (400/403/422), one per refusal streak: "
    "the informer keeps retrying with backoff (RBAC may be fixed), the user is told once.",
    ["component", "resource", "code"],
)


def own_pod(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The component's own Pod as an Event's involved object, from the downward API
    (``POD_NAME``/``POD_NAMESPACE``, set by the chart); None outside a pod."""
    name, ns = environ.get("POD_NAME"), environ.get("POD_NAMESPACE")
    if not name or not ns:
        return None
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}}


def report_access_refused(events: Recorder, log: Logger, pod: Mapping[str, Any] | None,
                          err: Refused, *, component: str, resource: str) -> None:
    """A list/watch this component needs was refused: a Warning Event ``AccessRefused`` on
    its own Pod (where it runs in one), one log line and the metric. The informer still
    retries with backoff: a fixed ClusterRole takes effect without a restart."""
    READS_REFUSED.labels(component, resource, str(err.status)).inc()
    message = (f"the API server refused to list/watch {resource} with HTTP {err.status} "
               f"{err.reason or 'error'}: {err.detail}; {component} cannot see these objects "
               "until its RBAC allows it (it keeps retrying)")
    log.warning("access_refused", resource=resource, status=err.status, reason=err.reason,
                error=err.detail)
    if pod is not None:
        events.record(dict(pod), "Warning", ACCESS_REFUSED, message)


def access_refused_reporter(events: Recorder, log: Logger, component: str,
                            environ: Mapping[str, str] | None = None,
                            ) -> Callable[[Resource, Refused], None]:
    """The ``on_refused`` callback of a component's informers: ``report_access_refused`` on
    the component's own Pod (``environ``: the process environment by default)."""
    pod = own_pod(os.environ if environ is None else environ)

    def report(res: Resource, err: Refused) -> None:
        report_access_refused(events, log, pod, err, component=component, resource=str(res))

    return report
