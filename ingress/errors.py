"""Exception tree of the ingress package (drawn in ``ingress/__init__.py`` too).

    PorticoError                  common.errors
    └── IngressError              anything the ingress tier itself raises on purpose
        ├── RuntimeApiError       the HAProxy Runtime API or master CLI failed or refused
        ├── HAProxyError          the HAProxy process could not be started, checked or reloaded
        ├── UnsafeValue           a value would change the meaning of haproxy.cfg or a map file
        └── UnsafeToken           a token would change the meaning of a Runtime API line

``UnsafeValue`` and ``UnsafeToken`` mean a bug (the model's allow-lists should make them
unreachable); the sync pass then keeps the last good configuration. Pure (import-linter
``pure`` contract): the pure cores raise these too.
"""

from __future__ import annotations

from common.errors import PorticoError


class IngressError(PorticoError):
    """Root of every exception the ingress package defines."""


class RuntimeApiError(IngressError):
    """The HAProxy Runtime API or master CLI failed or refused a command."""


class HAProxyError(IngressError):
    """The HAProxy process could not be started, checked or reloaded."""


class UnsafeValue(IngressError):
    """A value would change the meaning of the grammar it is written into (haproxy.cfg, map
    files: ``ingress.core.render``'s quoting functions)."""


class UnsafeToken(IngressError):
    """A token would change the meaning of a Runtime API line (``ingress.core.runtime``)."""
