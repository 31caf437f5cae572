"""Exception tree of the ``lb`` package (controller and ``common.kube`` plumbing)."""

from __future__ import annotations

from common.api.model import FieldProblem


class LbError(Exception):
    """Root of every error raised by the lb package."""


class InvalidObject(LbError):
    """User input that cannot be used; carries every problem found, each naming its field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class KubeError(LbError):
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


class LeadershipLost(LbError):
    """This replica no longer holds the leader Lease; the process must end."""
