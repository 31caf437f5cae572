"""FRR ``bfdd`` beside exabgp: started, restarted and stopped by the BGP announcer's worker.

Runs standalone (no zebra): ``bfdd -N PATHSPACE -f CONF``. FRR daemons drop to user ``frr``,
so the pathspace directory ``/var/run/frr/PATHSPACE`` (vty socket, pid file) and the
configuration file inside it belong to ``frr``. The pathspace is derived from the speaker's
state directory, so several speakers on one machine (the lab) never share one.

bfdd gets PR_SET_PDEATHSIG like exabgp: it dies with the speaker. (In a pod the container's
processes die together anyway.) A BFD session whose bfdd died goes down at the router after
the detection time: the router then withdraws the node's routes — a crashed control plane
stops attracting traffic, which is what BFD is asked for.

A configuration change restarts bfdd (rare: a BGPPeer's ``spec.bfd`` or address changed); the
router sees those BFD sessions go down and back up, so their BGP sessions reset once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import structlog

from speaker.bgp.process import _pdeathsig_for

log = structlog.get_logger(component="speaker-bfd")

FRR_LIB = Path("/usr/lib/frr")
FRR_RUN = Path("/var/run/frr")
START_TIMEOUT_S = 10.0


def pathspace_for(state_dir: str) -> str:
    digest = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:10]
    return f"portico-{digest}"


class BfddProcess:
    def __init__(self, state_dir: str, bfdd: Path = FRR_LIB / "bfdd",
                 vtysh: str = "vtysh") -> None:
        self.bfdd = bfdd
        self.vtysh_path = vtysh
        self.pathspace = pathspace_for(state_dir)
        self.rundir = FRR_RUN / self.pathspace
        self.proc: subprocess.Popen[bytes] | None = None
        self.config: str | None = None

    def available(self) -> bool:
        return self.bfdd.exists()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, config: str) -> None:
        """Start bfdd with ``config``; raises OSError/RuntimeError when it cannot run."""
        self.stop()
        self.rundir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyError, LookupError, PermissionError):
            shutil.chown(self.rundir, "frr", "frr")
        conf = self.rundir / "bfdd.conf"
        conf.write_text(config)
        with contextlib.suppress(KeyError, LookupError, PermissionError):
            shutil.chown(conf, "frr", "frr")
        vty = self.rundir / "bfdd.vty"
        with contextlib.suppress(FileNotFoundError):
            vty.unlink()
        try:
            self.proc = subprocess.Popen(
                [str(self.bfdd), "-N", self.pathspace, "-f", str(conf),
                 "-i", str(self.rundir / "bfdd.pid"), "--log", "stdout"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                preexec_fn=_pdeathsig_for(os.getpid()), close_fds=True)
        except OSError:
            shutil.rmtree(self.rundir, ignore_errors=True)
            raise
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True,
                         name="bfdd-log").start()
        self.config = config
        # Ready when its vty socket exists (the config is applied before it listens).
        done = threading.Event()
        for _ in range(int(START_TIMEOUT_S / 0.05)):
            if vty.exists() or self.proc.poll() is not None:
                break
            done.wait(0.05)
        if not vty.exists():
            code = self.proc.poll()
            self.stop()
            raise RuntimeError(f"bfdd did not start (exit code {code})")
        log.info("bfdd_started", pid=self.proc.pid, pathspace=self.pathspace)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        self.config = None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(3)
        shutil.rmtree(self.rundir, ignore_errors=True)

    def peers_json(self) -> str:
        """``show bfd peers json`` (tests, debugging)."""
        out = subprocess.run([self.vtysh_path, "-N", self.pathspace, "-c",
                              "show bfd peers json"], capture_output=True, text=True,
                             timeout=10, check=False)
        return out.stdout

    @staticmethod
    def _drain(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                log.debug("bfdd", line=text[:300])
