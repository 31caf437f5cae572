"""Runs exabgp (``exabgp server CONF``) in this interpreter, so that an API ``teardown 2`` sends
its NOTIFICATION even on a session that negotiated graceful restart.

Why. exabgp 5.0.15 ends a torn-down session whose OPEN announced the graceful-restart
capability *without* a NOTIFICATION (``Peer._main``: "graceful restarted negotiated, closing
without sending any notification"), and on SIGTERM it just closes the TCP connection. Either
way the router enters graceful-restart helper mode and keeps our routes — or at least the
session's restart state — for the restart time (120 s): right for a crash or a restart, wrong
for a speaker that is going away on purpose (LAB-NOTES, BGP 2026-12-06). There is no API
command or setting that changes this, and the capability must stay announced for the crash
case. So the speaker runs exabgp through this file, which wraps one method:

``Peer.teardown(code, restart)``, which only the API's ``neighbor X teardown CODE`` calls. For
``CODE`` = 2 (Cease/Administrative Shutdown, what ``speaker.core.bgp_exabgp.teardown_command``
sends) it clears the neighbor's graceful-restart setting *of this running process* — the flag
``_main`` consults after its loop, so it raises ``Notify(6, 2)`` and the NOTIFICATION goes out —
and asks for no reconnection (``restart=False``): the speaker terminates exabgp right after.
Other codes, and everything else exabgp does, are untouched. If exabgp's code no longer looks
as expected, exabgp runs unpatched and a line says so (the lab test would then fail).

Standalone (run by path with the speaker's interpreter, like ``relay.py``): it imports exabgp
and nothing of the speaker.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import os
import sys

CEASE_ADMINISTRATIVE_SHUTDOWN = 2  # RFC 4486; the speaker's teardown_command sends this
PR_SET_NAME = 15  # <linux/prctl.h>

# Run by path, Python put this file's directory first on sys.path; exabgp must not import
# the speaker's modules (process.py, metrics.py, ...) by accident.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]


def patch() -> bool:
    """Wrap ``Peer.teardown``; False (and exabgp unchanged) if it does not look as expected."""
    from exabgp.reactor.peer import Peer

    original = Peer.teardown
    if list(inspect.signature(original).parameters) != ["self", "code", "restart"]:
        return False

    def teardown(self: Peer, code: int, restart: bool = True) -> None:
        if code == CEASE_ADMINISTRATIVE_SHUTDOWN:
            capability = self.neighbor["capability"]
            if isinstance(capability, dict) and "graceful-restart" in capability:
                capability["graceful-restart"] = False
                restart = False
        original(self, code, restart)

    Peer.teardown = teardown
    return True


def _name_process() -> None:
    # The process is "python" otherwise; operators (ps, top) and the lab tests look for the
    # comm "exabgp" among the speaker's children.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, b"exabgp", 0, 0, 0)


def main() -> int:
    _name_process()
    if not patch():
        print("portico: exabgp's Peer.teardown changed; running unpatched: a graceful stop "
              "will close sessions without a NOTIFICATION", flush=True)
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    result: int | None = exabgp_main()
    return result or 0


if __name__ == "__main__":
    sys.exit(main())
