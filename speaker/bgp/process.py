"""One exabgp child process and its API pipe.

- The configuration (it may hold a TCP-MD5 key) is written 0600 into the speaker's state
  directory, atomically, and never logged.
- The API: exabgp runs ``relay.py``, which connects to a Unix socket we listen on. A reader
  thread ALWAYS drains that socket (LAB-NOTES "ack wedge": exabgp blocks on writing acks and
  freezes, keepalives stop, the session dies), putting acks on a queue and handing every other
  message to a callback. ``send`` writes one command and waits for its done/error ack;
  ``query`` does the same for a ``show`` command and returns the text lines exabgp wrote
  before the ack (its answer; events are JSON lines and still go to the callback).
- A second thread drains exabgp's own log output (stdout+stderr), redacting the password.
- exabgp is the one of the speaker's own Python environment (``--exabgp`` default): it runs
  through ``exabgp_run.py`` in the speaker's interpreter, which makes ``teardown 2`` send its
  NOTIFICATION (Cease) on sessions with graceful restart (see there why). Any other
  executable is run as given, and the announcer then does not ask for a Cease (``ceases``).
- exabgp gets PR_SET_PDEATHSIG: if the speaker dies, exabgp dies with it (a restarted
  speaker must not find an orphan exabgp still announcing). The signal fires when the
  *thread* that forked exits; that is the announcer's worker thread, which lives as long as
  the announcer (stop() ends it only after exabgp was stopped). Its relay child exits when
  either the speaker's socket or exabgp's pipe closes.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import pwd
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from speaker.core.bgp_exabgp import Ack, ApiMessage, Other, parse_api_line
from speaker.errors import ExaBgpError

# lazy proxy: resolves at first use, so the speaker's common.logs.configure() applies
log = structlog.get_logger(component="speaker-bgp")

RELAY = Path(__file__).with_name("relay.py")
LAUNCHER = Path(__file__).with_name("exabgp_run.py")
PR_SET_PDEATHSIG = 1
ACCEPT_TIMEOUT_S = 15.0  # exabgp 5 imports in ~1 s here; generous for loaded CI machines
# exabgp.reactor.speed: the reactor's idle poll timeout is speed/100 s. The default (1.0 ->
# 10 ms) leaves exabgp asleep between passes while it still has queued API work.
REACTOR_SPEED = "1.0"
# exabgp.api.chunk: answer lines of "show adj-rib out" written per reactor step. The default
# (1) spreads 10,000 routes over 200 reactor passes with a 10 ms idle wait each: 2.3 s during
# which route commands queue behind the answer; 500 answers in 0.09 s (measured here, exabgp
# 5.0.15, 10,000 routes, docs/bgp.md). ~30 KB per step, a few ms of reactor time.
SHOW_CHUNK = "500"


def _load_prctl() -> Callable[..., int] | None:
    # Resolved once, in the parent: dlopen() between fork and exec of a multi-threaded
    # process may deadlock on a loader lock another thread held at fork time.
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


_PRCTL = _load_prctl()


def exabgp_argv(exabgp_path: str) -> tuple[list[str], bool]:
    """The command that runs exabgp, and whether its teardown sends a NOTIFICATION.

    The exabgp next to this interpreter is this environment's exabgp (the pinned version the
    launcher was written for), so the launcher runs it in-process; anything else (another
    installation, a wrapper script) is run as given."""
    ours = os.path.join(os.path.dirname(sys.executable), "exabgp")
    if os.path.realpath(exabgp_path) == os.path.realpath(ours):
        return [sys.executable, str(LAUNCHER)], True
    return [exabgp_path], False


def _pdeathsig_for(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        # The parent may have died between fork and prctl: then no signal will ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class Redactor:
    """Replaces every secret (raw and base64 forms) in text that is about to be logged."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def set(self, secrets: Iterable[bytes]) -> None:
        out: list[str] = []
        for s in secrets:
            out.append(s.decode("utf-8", "replace"))
            out.append(base64.b64encode(s).decode())
        self._secrets = [s for s in out if s]

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "[REDACTED]")
        return text


class ExaBgpProcess:
    def __init__(
        self,
        exabgp_path: str,
        state_dir: str,
        on_message: Callable[[ApiMessage], None],
        redact: Redactor,
    ) -> None:
        self.exabgp_path = exabgp_path
        self._argv, self.ceases = exabgp_argv(exabgp_path)
        self.state_dir = Path(state_dir)
        self.on_message = on_message
        self.redact = redact
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: socket.socket | None = None
        self._acks: queue.Queue[Ack | None] = queue.Queue()
        self._send_lock = threading.RLock()  # query() holds it around send()
        # Text answer lines of the command in flight (``query``); None: none is collected.
        self._answer: list[str] | None = None
        self.log_tail: deque[str] = deque(maxlen=50)

    @property
    def config_path(self) -> Path:
        return self.state_dir / "exabgp.conf"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "api.sock"

    def relay_argv(self) -> list[str]:
        return [sys.executable, str(RELAY), str(self.socket_path)]

    def _write_config(self, text: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.state_dir / "exabgp.conf.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an older file may have had other bits
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.config_path)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("exabgp")}
        env.update({
            # as root exabgp drops to `nobody` unless told otherwise (LAB-NOTES)
            "exabgp.daemon.user": pwd.getpwuid(os.getuid()).pw_name,
            "exabgp.daemon.drop": "false",
            "exabgp.daemon.daemonize": "false",
            "exabgp.api.cli": "false",  # no named pipes: we drive exabgp over our process only
            "exabgp.api.ack": "true",
            "exabgp.api.encoder": "json",
            "exabgp.api.respawn": "false",
            "exabgp.api.terminate": "true",  # relay gone -> exabgp exits -> supervisor restarts
            "exabgp.log.destination": "stdout",
            "exabgp.log.short": "true",
            "exabgp.log.statistics": "false",
            "exabgp.log.packets": "false",
            "exabgp.log.configuration": "false",  # would echo the parsed config
            # one "route added/removed" line per prefix: 20,000 lines per 10k-VIP pass cost
            # seconds of exabgp CPU; session/network lines stay on
            "exabgp.log.processes": "false",
            "exabgp.log.rib": "false",
            "exabgp.tcp.bind": "",  # never listen: we only connect out
            "exabgp.reactor.speed": REACTOR_SPEED,
            "exabgp.api.chunk": SHOW_CHUNK,
        })
        # exabgp reads both dotted and underscore spellings; use underscores for shells
        return {k.replace(".", "_") if k.startswith("exabgp.") else k: v for k, v in env.items()}

    def start(self, config_text: str) -> None:
        self._write_config(config_text)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
            listener.listen(1)
            listener.settimeout(ACCEPT_TIMEOUT_S)
            self._acks = queue.Queue()
            try:
                self.proc = subprocess.Popen(
                    [*self._argv, "server", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env=self._env(), preexec_fn=_pdeathsig_for(os.getpid()), close_fds=True,
                )
            except OSError as e:  # converted at the boundary: the loop owns the retry
                self.proc = None
                raise ExaBgpError(f"cannot run {self.exabgp_path}: {e.strerror}") from e
            threading.Thread(target=self._drain_log, args=(self.proc,), daemon=True,
                             name="exabgp-log").start()
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError) as e:
                self.kill()
                raise ExaBgpError(f"exabgp API process did not connect: {e}") from e
        finally:
            listener.close()
        conn.settimeout(None)
        self._conn = conn
        threading.Thread(target=self._read_api, args=(conn,), daemon=True,
                         name="exabgp-api").start()
        log.info("exabgp_started", pid=self.proc.pid)

    def _drain_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = self.redact(raw.decode("utf-8", "replace").rstrip())
            if line:
                self.log_tail.append(line)
                log.debug("exabgp_log", line=line)

    def _read_api(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    msg = parse_api_line(raw.decode("utf-8", "replace"))
                    if isinstance(msg, Ack):
                        self._acks.put(msg)
                    elif (isinstance(msg, Other) and self._answer is not None
                          and not msg.text.startswith("{")):
                        # a text answer line of the query in flight (events are JSON);
                        # written before its ack, on this same thread: complete at the ack
                        self._answer.append(msg.text)
                    else:
                        self.on_message(msg)
        except OSError:
            pass
        finally:
            self._acks.put(None)  # wakes a waiting sender: the pipe is gone

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._conn is not None

    def send(self, command: str, timeout: float) -> bool:
        """Send one API command; True on ``done``, False on ``error``; ExaBgpError if dead."""
        with self._send_lock:
            conn = self._conn
            if conn is None or not self.alive():
                raise ExaBgpError("exabgp is not running")
            try:
                conn.sendall(command.encode() + b"\n")
            except OSError as e:
                raise ExaBgpError(f"API pipe write failed: {e}") from e
            try:
                ack = self._acks.get(timeout=timeout)
            except queue.Empty as e:
                raise ExaBgpError(f"no acknowledgement from exabgp within {timeout}s") from e
            if ack is None:
                raise ExaBgpError("exabgp API pipe closed")
            return ack.ok

    def query(self, command: str, timeout: float) -> list[str] | None:
        """Send one ``show ...`` command; its text answer lines, or None on ``error``.
        ExaBgpError if exabgp is dead or does not answer within ``timeout``."""
        with self._send_lock:
            self._answer = []
            try:
                ok = self.send(command, timeout)
                lines = self._answer
            finally:
                self._answer = None
        return lines if ok else None

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM: exabgp closes its sessions (no NOTIFICATION: the announcer tears them down
        with a Cease first when it wants one) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
