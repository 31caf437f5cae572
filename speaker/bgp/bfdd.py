"""FRR ``bfdd`` beside exabgp: started, restarted and stopped by the BGP announcer's worker.

Runs standalone (no zebra, no pathspace): every file of it — configuration, pid file, vty
socket, control socket — lives in ``<state dir>/bfdd/``, the speaker's own writable directory
(an emptyDir in the chart), so the container's root filesystem stays read-only and nothing
is written to ``/var/run/frr``. Several speakers on one machine (the lab) never share one.
A state directory whose socket paths would exceed ``sun_path`` (108 bytes: deep pytest
temporary directories) falls back to ``/var/run/frr/<pathspace>``.

bfdd runs as the speaker's own user (``-u root -g frrvty`` in the chart's container: uid 0,
so bfdd neither changes uid nor sets groups) and takes the capability set FRR compiled into
it (``speaker.core.bgp_bfd.BFDD_CAPABILITIES``, measured). Before starting it the speaker
checks that set against its own and, when something is missing, says which Helm value
gives it (``speaker.bfd.enabled``) instead of letting bfdd exit with a cap_set_proc error.
The TCP vty is off (``-P 0``): with hostNetwork it would listen on the node's addresses.

bfdd gets PR_SET_PDEATHSIG like exabgp: it dies with the speaker. (In a pod the container's
processes die together anyway.) A BFD session whose bfdd died goes down at the router after
the detection time: the router then withdraws the node's routes — a crashed control plane
stops attracting traffic, which is what BFD is asked for.

A configuration change restarts bfdd (rare: a BGPPeer's ``spec.bfd`` or address changed); the
router sees those BFD sessions go down and back up, so their BGP sessions reset once.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import structlog

from speaker.bgp.process import _pdeathsig_for
from speaker.core.bgp_bfd import CHART_VALUE, capabilities_fix, missing_binary_fix
from speaker.core.bgp_bfd import missing_capabilities as _missing

log = structlog.get_logger(component="speaker-bfd")

FRR_LIB = Path("/usr/lib/frr")
FRR_RUN = Path("/var/run/frr")
# Debian's frr package: vtysh may connect to the daemons' vty sockets as members of this
# group; bfdd refuses to start when its user is not in it (-g makes it the base group).
VTY_GROUP = "frrvty"
START_TIMEOUT_S = 10.0
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL
OUTPUT_LINES_KEPT = 8  # bfdd's last lines, quoted when it exits at start


class BfddUnavailable(RuntimeError):
    """bfdd cannot run here; the message names the fix."""


def pathspace_for(state_dir: str) -> str:
    digest = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:10]
    return f"portico-{digest}"


def run_dir_for(state_dir: str) -> Path:
    own = Path(state_dir).absolute() / "bfdd"
    if len(os.fsencode(own / "bfdd.sock")) <= SUN_PATH_MAX:
        return own
    return FRR_RUN / pathspace_for(state_dir)


def capability_mask(field: str = "CapBnd", status: str = "/proc/self/status") -> int | None:
    """A ``Cap*`` mask of this process, None when it cannot be read (not Linux)."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        return None
    return None


def missing_capabilities() -> tuple[str, ...]:
    """What bfdd would lack if started now. A uid-0 process execs with its bounding set as
    permitted set; any other uid with its ambient set (Kubernetes grants no ambient ones)."""
    mask = capability_mask("CapBnd" if os.geteuid() == 0 else "CapAmb")
    return () if mask is None else _missing(mask)


class BfddProcess:
    def __init__(self, state_dir: str, bfdd: Path = FRR_LIB / "bfdd",
                 vtysh: str = "vtysh") -> None:
        self.bfdd = bfdd
        self.vtysh_path = vtysh
        self.rundir = run_dir_for(state_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.config: str | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)

    def available(self) -> bool:
        return self.bfdd.exists()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        d = self.rundir
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:  # an arbitrary UID without a passwd entry: FRR looks users up by name
            raise BfddUnavailable(f"the speaker's UID {os.geteuid()} has no passwd entry, so "
                                  f"bfdd cannot run as it; run the speaker as the chart "
                                  f"does (UID 0) with --set {CHART_VALUE}") from None
        return [str(self.bfdd), "-f", str(d / "bfdd.conf"), "-i", str(d / "bfdd.pid"),
                "--vty_socket", str(d), "--bfdctl", str(d / "bfdd.sock"),
                # a zebra socket nobody serves: never a node's own FRR
                "-z", str(d / "zserv.api"), "-P", "0",
                "-u", user, "-g", VTY_GROUP,
                "--log", "stdout"]

    def start(self, config: str) -> None:
        """Start bfdd with ``config``; raises BfddUnavailable (the fix in its message) or
        OSError/RuntimeError when it cannot run."""
        self.stop()
        if not self.available():
            raise BfddUnavailable(missing_binary_fix(str(self.bfdd)))
        missing = missing_capabilities()
        if missing:
            raise BfddUnavailable(capabilities_fix(missing))
        argv = self.argv()
        self.rundir.mkdir(parents=True, exist_ok=True)
        (self.rundir / "bfdd.conf").write_text(config)
        vty = self.rundir / "bfdd.vty"
        with contextlib.suppress(FileNotFoundError):
            vty.unlink()
        self._output.clear()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, preexec_fn=_pdeathsig_for(os.getpid()),
                close_fds=True)
        except OSError:
            shutil.rmtree(self.rundir, ignore_errors=True)
            raise
        threading.Thread(target=self._drain, args=(self.proc, self._output), daemon=True,
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
            if code is not None:
                done.wait(0.1)  # its last lines reach the drain thread
            said = " | ".join(self._output)
            self.stop()
            raise BfddUnavailable(f"bfdd did not start (exit code {code}"
                                  f"{': ' + said[:600] if said else ''}); it runs with "
                                  f"the Helm chart's --set {CHART_VALUE}")
        log.info("bfdd_started", pid=self.proc.pid, rundir=str(self.rundir))

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
        out = subprocess.run([self.vtysh_path, "--vty_socket", str(self.rundir), "-c",
                              "show bfd peers json"], capture_output=True, text=True,
                             timeout=10, check=False)
        return out.stdout

    @staticmethod
    def _drain(proc: subprocess.Popen[bytes], keep: collections.deque[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                keep.append(text[:300])
                log.debug("bfdd", line=text[:300])
