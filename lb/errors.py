"""Exception tree of the ``lb`` package (controller and ``lb.kube`` plumbing)."""

from __future__ import annotations

from lb.core.model import FieldProblem


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


class LeadershipLost(LbError):
    """This replica no longer holds the leader Lease; the process must end."""
