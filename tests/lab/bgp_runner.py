"""A minimal speaker stand-in for BGP lab tests: runs one BgpAnnouncer in its own process.

Started inside a node namespace (``ip netns exec NS python -m tests.lab.bgp_runner ...``) so
that SIGTERM / SIGKILL act on a real process, as they would on the speaker. The snapshot comes
from a pickle file, re-read on SIGHUP. SIGTERM -> stop(graceful=True), exit 0.
"""

from __future__ import annotations

import pickle
import signal
import sys
import threading
from pathlib import Path

from lb.logs import configure
from speaker.bgp.announcer import BgpAnnouncer
from tests.lab.bgp_helpers import FakeEvents, FakeKube


def main() -> None:
    node, snap_path, exabgp, state_dir = sys.argv[1:5]
    configure("speaker", "debug")
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    a = BgpAnnouncer(node, FakeKube(), FakeEvents(), exabgp, state_dir)
    a.sync(pickle.loads(Path(snap_path).read_bytes()))
    while not stop.is_set():
        if reload.wait(0.05):
            reload.clear()
            a.sync(pickle.loads(Path(snap_path).read_bytes()))
    a.stop(graceful=True)


if __name__ == "__main__":
    main()
