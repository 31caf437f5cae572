"""A small Kubernetes API emulator for tests (HTTP, threaded).

Semantics the components depend on: a global monotonically increasing resourceVersion,
uid/creationTimestamp/generation, generateName, list with label/field selectors, watch from a
resourceVersion with bookmarks and 410 Gone for compacted history, 409 on stale PUT, merge and
JSON patch, the status subresource, finalizers; plus fault injection (``emulator.faults``),
dropped watches, history compaction and an access log (``emulator.requests``/``count()``).

    emu = Emulator(host="127.0.0.1", port=0).start()
    client = KubeClient.from_environment(server=emu.url)
    ...
    emu.stop()

Run standalone for lab tests: ``python -m lab.emulator --host 192.0.2.1 --port 6443``.
"""

from .faults import FaultRule, Faults
from .server import Emulator, status_body
from .store import ApiError, Store, WatchEvent

__all__ = ["ApiError", "Emulator", "FaultRule", "Faults", "Store", "WatchEvent", "status_body"]
