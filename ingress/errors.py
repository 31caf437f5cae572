"""Exception tree of the ingress package."""

from __future__ import annotations


class IngressError(Exception):
    """Root of every error raised by the ingress package."""


class RuntimeApiError(IngressError):
    """The HAProxy Runtime API or master CLI failed or refused a command."""


class HAProxyError(IngressError):
    """The HAProxy process could not be started, checked or reloaded."""
