"""Load for soak runs: CPU hogs and a memory churner at a higher priority than the speakers.

Used by ``bench/l2_failover.py --soak-seconds N --hogs`` and the lab test of a short hog run.
Every process is bounded twice: it stops by itself after ``seconds`` (even if its starter
died), and the starter kills it by PID (``stop_hogs``), also on failure. Nothing here sends a
packet.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

CPU_HOG = """import time
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pass
"""
# Allocates 64 MiB chunks, touches every page (bytearray is calloc'd: untouched pages cost
# nothing), frees them all at the cap and starts again: page faults, zeroing and freeing. This
# machine has no swap and ~20 GB free, so this is churn, not reclaim: real pressure would
# endanger other users' processes.
MEM_HOG = """import time
end = time.monotonic() + {seconds}
chunk = 64 << 20
ones = b"\\x01" * (chunk // 4096)
held = []
while time.monotonic() < end:
    b = bytearray(chunk)
    b[::4096] = ones
    held.append(b)
    if len(held) * 64 >= {mb}:
        held.clear()
"""
MAX_SECONDS = 3700.0  # no hog outlives an hour-long soak plus its grace


def start_hogs(seconds: float, mem_mb: int, nice: int = -10,
               per_core: int = 1) -> list[subprocess.Popen[bytes]]:
    """``per_core`` busy loops per core and (``mem_mb`` > 0) one memory churner, all at
    ``nice`` (-10: ahead of every nice-0 process, the speakers included). Returns them for
    ``stop_hogs``."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"hogs run 0..{MAX_SECONDS:g} s")
    procs: list[subprocess.Popen[bytes]] = []

    def renice() -> None:
        os.nice(nice)

    try:
        for _ in range((os.cpu_count() or 1) * per_core):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CPU_HOG.format(seconds=seconds)], preexec_fn=renice))
        if mem_mb > 0:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", MEM_HOG.format(seconds=seconds, mb=mem_mb)],
                preexec_fn=renice))
    except BaseException:
        stop_hogs(procs)
        raise
    return procs


def stop_hogs(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill each by its PID and reap it."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
