"""The root of every Portico exception, and the errors of the shared kernel.

Each package has one exception tree, hung from ``PorticoError``; ``except PorticoError``
catches anything Portico raises on purpose (a bug still surfaces as another exception).
Library errors (urllib3, kubernetes, OSError from sockets and processes) are converted into
these at the boundary that meets them (``common.kube.client`` for the API server)::

    PorticoError                  common.errors (this module)
    ├── InvalidObject             user input that cannot be used; .problems name the fields
    ├── KubeError                 a Kubernetes API call failed; .status (None: no answer)
    │   ├── Conflict              409: changed since read; re-read and retry
    │   ├── Gone                  410: resourceVersion too old; list again
    │   ├── NotFound              404
    │   ├── Throttled             429/503; .retry_after (Retry-After, seconds) for the backoff
    │   └── Refused               400/403/422: cannot succeed unchanged; never retried on a timer
    │       ├── Forbidden         403: RBAC or admission
    │       └── Invalid           400/422: schema, CEL rule, field validation
    ├── IngressError              ingress.errors (the ingress tier's tree)
    └── SpeakerError              speaker.errors (the speaker's tree)

The controller (``lb``) defines no exception of its own: it raises these.
"""

from __future__ import annotations

from common.api.model import FieldProblem


class PorticoError(Exception):
    """Root of every exception Portico raises on purpose; every package's tree hangs here."""


class InvalidObject(PorticoError):
    """User input that cannot be used; carries every problem found, each naming its field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class KubeError(PorticoError):
    """A Kubernetes API call failed (after the library error was converted at the boundary)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class Conflict(KubeError):
    """409: the object changed since it was read; re-read and retry."""


class Gone(KubeError):
    """410: the watch's resourceVersion is too old; list again."""


class NotFound(KubeError):
    """404."""


class Throttled(KubeError):
    """429 (or 503) with an optional Retry-After the caller's backoff should honour."""

    def __init__(self, message: str, status: int, retry_after: float | None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class Refused(KubeError):
    """400, 403 or 422: the server refused the request as such.

    Sending it again unchanged cannot succeed (the body breaks the schema, or this
    component's ServiceAccount lacks the permission), so callers report it once and try again
    only when the object or what they want to write changes (``common.kube.refusal``), never on
    a backoff timer. ``reason`` is the Status reason (``Forbidden``, ``Invalid``,
    ``BadRequest``), ``detail`` the server's own message, ``fields`` the fields it named.
    """

    def __init__(self, message: str, status: int, reason: str = "", detail: str = "",
                 fields: tuple[str, ...] = ()) -> None:
        super().__init__(message, status)
        self.reason = reason
        self.detail = detail or message
        self.fields = fields


class Forbidden(Refused):
    """403: RBAC (or an admission policy) does not allow this request."""


class Invalid(Refused):
    """422 or 400: the request body is invalid (schema, CEL rule, field validation)."""

