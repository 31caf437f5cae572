"""Container processes and probes (I/O): start through the launcher, signal, reap; run
httpGet/tcpSocket/exec probes; remember every process and namespace in a ledger so that a
restarted agent can remove what a killed one left behind.

Each container is its own session and process group (the launcher execs into the command,
so the group id is the container's main PID): stopping a container signals the main process
as a runtime signals PID 1 of a container, and once it is gone whatever it left in its group
is killed too — the container's "cgroup" here.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.nodeagent import probes
from lab.nodeagent.errors import StartFailed
from lab.nodeagent.plan import LaunchPlan

# The launcher sets up namespaces and mounts in tens of milliseconds; a launcher that has not
# exec'd after this long is stuck (a hung mount), and its container fails to start.
LAUNCH_TIMEOUT_S = 10.0
PROBE_OUTPUT_MAX = 10 * 1024  # the kubelet keeps 10 KiB of an exec probe's output
PROBE_USER_AGENT = "kube-probe/1.37 (portico-lab)"
LAUNCHER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    started_mono: float

    @property
    def pid(self) -> int:
        return self.popen.pid


class Ledger:
    """Processes and pod namespaces this agent made, on disk (``STATE_DIR/ledger.json``).

    A PID is remembered with its start time (``/proc/PID/stat`` field 22), so a PID reused by
    an unrelated process after a reboot or a wrap-around is never killed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._procs: dict[int, int] = {}
        self._netns: set[str] = set()

    @staticmethod
    def start_time(pid: int) -> int | None:
        try:
            data = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # comm may contain spaces and parentheses: fields follow the last ')'.
        return int(data.rsplit(")", 1)[1].split()[19])

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"procs": {str(k): v for k, v in self._procs.items()},
                                   "netns": sorted(self._netns)}))
        tmp.replace(self.path)

    def add_proc(self, pid: int) -> None:
        st = self.start_time(pid)
        with self._lock:
            if st is not None:
                self._procs[pid] = st
                self._save()

    def remove_proc(self, pid: int) -> None:
        with self._lock:
            if self._procs.pop(pid, None) is not None:
                self._save()

    def add_netns(self, name: str) -> None:
        with self._lock:
            self._netns.add(name)
            self._save()

    def remove_netns(self, name: str) -> None:
        with self._lock:
            self._netns.discard(name)
            self._save()

    def reset(self) -> None:
        """Forget everything (after the leftovers of an earlier run were removed)."""
        with self._lock:
            self._procs.clear()
            self._netns.clear()
            self._save()

    def leftovers(self) -> tuple[list[int], list[str]]:
        """(live process groups, namespaces) an earlier run recorded and did not remove."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return [], []
        pids = [int(p) for p, st in (data.get("procs") or {}).items()
                if self.start_time(int(p)) == st]
        return pids, [str(n) for n in data.get("netns") or []]


class Launcher:
    def __init__(self, python: str, repo: Path, ledger: Ledger) -> None:
        self.python = python
        self.repo = repo
        self.ledger = ledger

    def _spawn(self, plan: LaunchPlan, stdout: Any) -> tuple[subprocess.Popen[bytes], str]:
        """Start the launcher with ``plan``; returns the process and the launcher's error
        ("" once it exec'd the command)."""
        spec_r, spec_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            # -S: the launcher needs the standard library only; skipping site saves startup.
            popen = subprocess.Popen(
                [self.python, "-S", "-m", "lab.nodeagent.launch", str(spec_r), str(err_w)],
                pass_fds=(spec_r, err_w), stdin=subprocess.DEVNULL, stdout=stdout,
                stderr=subprocess.STDOUT, cwd=self.repo, env=LAUNCHER_ENV,
                start_new_session=True)
        except OSError as exc:
            for fd in (spec_r, spec_w, err_r, err_w):
                os.close(fd)
            raise StartFailed(f"cannot run the launcher: {exc}") from exc
        os.close(spec_r)
        os.close(err_w)
        self.ledger.add_proc(popen.pid)
        try:
            with os.fdopen(spec_w, "wb") as f:
                f.write(json.dumps(plan.launcher_spec()).encode())
        except OSError:
            pass  # the launcher died early: its error (or exit) tells why
        message = _read_all(err_r, LAUNCH_TIMEOUT_S)
        return popen, message

    def start(self, plan: LaunchPlan, log: Path) -> Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            popen, error = self._spawn(plan, fh)
        if error:
            reap(popen)
            self.ledger.remove_proc(popen.pid)
            raise StartFailed(error)
        return Process(popen, time.monotonic())

    def run_exec(self, plan: LaunchPlan, timeout: float) -> tuple[bool, str]:
        """An exec probe: success is exit code 0 within ``timeout``."""
        try:
            popen, error = self._spawn(plan, subprocess.PIPE)
        except StartFailed as exc:
            return False, str(exc)
        try:
            if error:
                reap(popen)
                return False, error
            try:
                out, _ = popen.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(popen.pid)
                reap(popen)
                return False, f"command timed out after {timeout:g}s"
            kill_group(popen.pid)
            text = (out or b"")[:PROBE_OUTPUT_MAX].decode("utf-8", "replace").strip()
            if popen.returncode == 0:
                return True, text
            return False, f"command exited with {popen.returncode}: {text}"
        finally:
            self.ledger.remove_proc(popen.pid)


def _read_all(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "the launcher did not start the command in time"
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return b"".join(chunks).decode("utf-8", "replace")
            chunks.append(chunk)
    finally:
        os.close(fd)


def send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in a container's process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def reap(popen: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(popen.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return popen.wait(timeout)
    return None


# ---- probes -----------------------------------------------------------------------------

def http_probe(action: probes.HttpGet, host: str, port: int,
               timeout: float) -> tuple[bool, str]:
    conn: http.client.HTTPConnection
    if action.scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"User-Agent": PROBE_USER_AGENT, "Accept": "*/*", **dict(action.headers)}
    try:
        conn.request("GET", action.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(PROBE_OUTPUT_MAX)
    except (OSError, http.client.HTTPException) as exc:
        return False, f'Get "{action.scheme.lower()}://{_hostport(host, port)}{action.path}": {exc}'
    finally:
        conn.close()
    # 2xx and 3xx succeed; the kubelet does not follow redirects to other hosts.
    if 200 <= resp.status < 400:
        return True, ""
    text = body[:200].decode("utf-8", "replace")
    return False, f"HTTP probe failed with statuscode: {resp.status} {text}".strip()


def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"dial tcp {_hostport(host, port)}: {exc}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
