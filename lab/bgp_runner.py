"""A minimal speaker stand-in for BGP lab tests: runs one BgpAnnouncer in its own process.

Started inside a node namespace (``ip netns exec NS python -m lab.bgp_runner ...``) so
that SIGTERM / SIGKILL act on a real process, as they would on the speaker. The snapshot comes
from a pickle file, re-read on SIGHUP. SIGTERM -> stop(graceful=True), exit 0.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from pathlib import Path

from common.logs import configure
from lab.bgp_kit import FakeEvents, FakeKube
from speaker.bgp import process
from speaker.bgp.announcer import BgpAnnouncer
from speaker.core import bgp_exabgp


def main() -> None:
    node, snap_path, exabgp, state_dir = sys.argv[1:5]
    # optional 5th argument: log level (the bench runs at "warning": per-command debug lines
    # would be part of what it measures)
    configure("speaker", sys.argv[5] if len(sys.argv) > 5 else "debug")
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    # bench/bgp_scale.py A/B experiments: override the tunables under test
    if os.environ.get("PORTICO_BENCH_NLRI_PER_COMMAND"):
        bgp_exabgp.NLRI_PER_COMMAND = int(os.environ["PORTICO_BENCH_NLRI_PER_COMMAND"])
    if os.environ.get("PORTICO_BENCH_REACTOR_SPEED"):
        process.REACTOR_SPEED = os.environ["PORTICO_BENCH_REACTOR_SPEED"]
    a = BgpAnnouncer(node, FakeKube(), FakeEvents(), exabgp, state_dir)
    a.sync(pickle.loads(Path(snap_path).read_bytes()))
    while not stop.is_set():
        if reload.wait(0.05):
            reload.clear()
            a.sync(pickle.loads(Path(snap_path).read_bytes()))
    a.stop(graceful=True)


if __name__ == "__main__":
    main()
