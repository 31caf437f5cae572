"""The HAProxy data plane: process supervision, config check and apply (I/O adapter).

Directory layout under ``state_dir``::

    conf/        live config; HAProxy's working directory (the config uses relative paths)
    conf/certs/  default.pem (self-signed, generated at start) and one PEM per TLS Secret
    run/         master.sock (master CLI), admin.sock (Runtime API), haproxy.log
    $TMPDIR/portico-check-*/  short-lived copies for ``haproxy -c``, owned by ``nobody``
                 when we are root (the check never runs privileged)

HAProxy runs in master-worker mode (``-W -S run/master.sock``); a reload asks the master to
re-exec, the new worker takes the listening sockets over the stats socket (``expose-fd
listeners``) and the old worker finishes its connections (``option idle-close-on-response``
lets keep-alive clients go without errors, measured in LAB-NOTES).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from ingress.core.render import CFG, DEFAULT_CERT, MAP_FILES, Rendered
from ingress.errors import HAProxyError, RuntimeApiError
from ingress.haproxy_runtime import MasterClient, ProcInfo, RuntimeClient

log = structlog.get_logger().bind(component="ingress.haproxy")
NOBODY = 65534  # Debian's nobody/nogroup


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    output: str
    bad_lines: tuple[int, ...]  # haproxy.cfg line numbers named in the errors


def _parse_bad_lines(output: str) -> tuple[int, ...]:
    lines: list[int] = []
    for token in output.replace("]", " ").replace("[", " ").split():
        if token.startswith(f"{CFG}:") and token[len(CFG) + 1:].isdigit():
            lines.append(int(token[len(CFG) + 1:]))
    return tuple(sorted(set(lines)))


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def generate_self_signed(path: Path, openssl: str = "openssl") -> None:
    """Default certificate for SNI misses (the cryptography package is not available here)."""
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = Path(tmp, "k.pem"), Path(tmp, "c.pem")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "3650",
             "-subj", "/CN=portico-ingress-default", "-addext",
             "subjectAltName=DNS:portico-ingress-default"],
            check=True, capture_output=True, timeout=30,
        )
        _write_atomic(path, crt.read_bytes() + key.read_bytes())


_cert_cache: dict[str, str | None] = {}


def certificate_problem(pem: bytes, openssl: str = "openssl") -> str | None:
    """None if ``pem`` holds a certificate and its matching private key (openssl checks)."""
    digest = hashlib.sha256(pem).hexdigest()
    if digest in _cert_cache:
        return _cert_cache[digest]
    problem: str | None = None
    try:
        cert_pub = subprocess.run([openssl, "x509", "-noout", "-pubkey"], input=pem,
                                  capture_output=True, timeout=10)
        key_pub = subprocess.run([openssl, "pkey", "-pubout"], input=pem,
                                 capture_output=True, timeout=10)
        if cert_pub.returncode != 0:
            problem = "tls.crt is not a readable X.509 certificate"
        elif key_pub.returncode != 0:
            problem = "tls.key is not a readable private key"
        elif cert_pub.stdout.strip() != key_pub.stdout.strip():
            problem = "tls.key does not match the certificate in tls.crt"
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = f"could not check the certificate: {exc}"
    _cert_cache[digest] = problem
    return problem


# Memory pool options (``-dM``, HAProxy's management guide): Debian builds HAProxy with
# DEBUG_MEMORY_POOLS, which turns on per-object tags (a debugging aid that upstream's default
# build leaves off), and HAProxy leaves its process-wide pool off with glibc, so an object
# leaving the small per-thread cache goes back to malloc. ``no-tag`` restores upstream's
# default; ``global`` keeps released objects in HAProxy's own pool. Together they take ~1,600
# of ~34,000 user-space instructions off every proxied request (callgrind, bench/ingress.py's
# one-host config); memory stays bounded by the peak in use, as with the thread caches.
POOL_OPTIONS = "-dMglobal,no-tag"


def _die_with_parent() -> None:
    """preexec_fn: HAProxy gets SIGTERM when the thread that started it goes away.

    Without it a crashed or SIGKILLed controller would leave HAProxy serving a config
    nobody updates any more (and holding the ports its replacement needs).
    """
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class DataPlane:
    def __init__(self, state_dir: str, binary: str = "haproxy",
                 scratch_parent: str | None = None) -> None:
        self.state = Path(state_dir)
        # Scratch dirs live outside the state dir by default: every ancestor must be
        # traversable by the unprivileged checker, and /tmp is.
        self.scratch_parent = scratch_parent
        self.conf = self.state / "conf"
        self.run = self.state / "run"
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.master = MasterClient(str(self.run / "master.sock"))
        self.runtime = RuntimeClient(str(self.run / "admin.sock"))
        self.applied: Rendered | None = None
        self._log_start = 0  # offset in run/haproxy.log where the latest start began

    # -- setup ---------------------------------------------------------------------------
    def prepare(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (self.conf / "certs", self.run):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        default = self.conf / DEFAULT_CERT
        if not default.exists():
            generate_self_signed(default)

    # -- check ---------------------------------------------------------------------------
    def _materialise(self, rendered: Rendered, root: Path) -> None:
        for name, text in rendered.files.items():
            _write_atomic(root / name, text.encode())
        for name, pem in rendered.certs.items():
            _write_atomic(root / name, pem)

    def check(self, rendered: Rendered) -> CheckResult:
        """``haproxy -c`` of the full render in a scratch directory, unprivileged if root."""
        scratch = Path(tempfile.mkdtemp(prefix="portico-check-", dir=self.scratch_parent))
        try:
            self._materialise(rendered, scratch)
            (scratch / "certs").mkdir(exist_ok=True)
            shutil.copy2(self.conf / DEFAULT_CERT, scratch / DEFAULT_CERT)
            as_root = os.geteuid() == 0
            if as_root:
                for p in [scratch, *scratch.rglob("*")]:
                    os.chown(p, NOBODY, NOBODY)
            res = subprocess.run(
                [self.binary, "-c", "-q", "-f", CFG], cwd=scratch, capture_output=True,
                timeout=120, user=NOBODY if as_root else None,
                group=NOBODY if as_root else None,
            )
            out = (res.stdout + res.stderr).decode(errors="replace")
            return CheckResult(res.returncode == 0, out[-4000:], _parse_bad_lines(out))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- apply ---------------------------------------------------------------------------
    def write_live(self, rendered: Rendered) -> None:
        self._materialise(rendered, self.conf)
        keep = set(rendered.certs) | {DEFAULT_CERT}
        for p in (self.conf / "certs").glob("*.pem"):
            if f"certs/{p.name}" not in keep:
                p.unlink(missing_ok=True)

    def write_maps(self, rendered: Rendered) -> None:
        for name in MAP_FILES:
            if name in rendered.files:
                _write_atomic(self.conf / name, rendered.files[name].encode())

    def start(self, timeout_s: float = 30.0) -> ProcInfo:
        log_file = open(self.run / "haproxy.log", "ab")  # noqa: SIM115 - owned by the child
        # haproxy.log is appended to across restarts: an error names only this attempt's part.
        self._log_start = log_file.seek(0, os.SEEK_END)
        self.proc = subprocess.Popen(
            [self.binary, "-W", POOL_OPTIONS, "-S", str(self.run / "master.sock"), "-f", CFG],
            cwd=self.conf, stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        log_file.close()
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise HAProxyError(f"haproxy exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            try:
                info = self.master.show_proc()
                if info.workers and Path(self.runtime.path).exists():
                    log.info("haproxy_started", master=info.master_pid, workers=info.workers)
                    return info
            except (OSError, RuntimeApiError):
                pass
            time.sleep(0.02)
        raise HAProxyError("haproxy did not start in time")

    def apply(self, rendered: Rendered) -> ProcInfo:
        """Write the (checked) render live and start or seamlessly reload HAProxy."""
        self.write_live(rendered)
        if self.proc is None or self.proc.poll() is not None:
            info = self.start()
        else:
            info = self.master.reload()
        self.applied = rendered
        return info

    def update_cert(self, name: str, pem: bytes) -> bool:
        """Rotate a certificate in place through the Runtime API (no reload)."""
        _write_atomic(self.conf / name, pem)
        payload = pem.decode("ascii")
        try:
            from ingress.haproxy_runtime import send_once

            out = send_once(self.runtime.path, f"set ssl cert {name} <<\n{payload}\n")
            if "Transaction created" not in out and "Transaction updated" not in out:
                log.warning("set_ssl_cert_failed", cert=name, output=out[:200])
                return False
            out = send_once(self.runtime.path, f"commit ssl cert {name}")
            return "Success" in out
        except OSError as exc:
            log.warning("set_ssl_cert_failed", cert=name, error=str(exc))
            return False

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` bytes HAProxy wrote since the latest start (never older attempts)."""
        try:
            with open(self.run / "haproxy.log", "rb") as f:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(self._log_start, end - n))
                return f.read(n).decode(errors="replace").strip()
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def master_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout_s: float = 10.0, graceful: bool = False) -> None:
        """Stop HAProxy; ``graceful`` (SIGUSR1, soft stop) lets in-flight requests finish."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # The master is our child and the leader of its own session: signal it by PID.
            self.proc.send_signal(signal.SIGUSR1 if graceful else signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def files_differ(a: Mapping[str, bytes], b: Mapping[str, bytes]) -> bool:
    return dict(a) != dict(b)
