"""The interface every announcer (layer 2, BGP) implements for ``speaker.main``."""

from __future__ import annotations

from typing import Protocol

from speaker.core.snapshot import ClusterSnapshot


class Announcer(Protocol):
    def sync(self, snapshot: ClusterSnapshot) -> None:
        """Make announcements match ``snapshot`` (called after every debounced change)."""
        ...

    def stop(self, graceful: bool) -> None:
        """Stop announcing; ``graceful``: hand over / withdraw cleanly before going silent."""
        ...
