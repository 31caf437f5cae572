"""The node agent's exception tree (DESIGN.md habit 8)::

    PorticoError (common.errors)
    └── NodeAgentError        lab.nodeagent
        ├── SetupError        a namespace, link, address, route or nftables step failed
        └── StartFailed       a container's process could not be started (the launcher's
                              reason, reported as the container's StartError)
"""

from __future__ import annotations

from common.errors import PorticoError


class NodeAgentError(PorticoError):
    pass


class SetupError(NodeAgentError):
    pass


class StartFailed(NodeAgentError):
    pass
