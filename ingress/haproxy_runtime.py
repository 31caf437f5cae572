"""HAProxy Runtime API and master CLI clients (thin I/O adapters over Unix sockets).

The Runtime API (stats socket, "level admin") takes endpoint changes; the master CLI
(``-S`` socket of the master-worker process) takes ``reload`` and ``show proc``. Lines
come from ``ingress.core.runtime`` which allow-lists every token.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from ingress.errors import RuntimeApiError

PROMPT = b"\n> "


class RuntimeClient:
    """One interactive ("prompt" mode) connection per batch of commands."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def execute(self, commands: list[str]) -> list[str]:
        if not commands:
            return []
        for c in commands:
            if "\n" in c or "\r" in c or ";" in c or "\0" in c:
                raise RuntimeApiError(f"refusing unsafe command {c[:80]!r}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(b"prompt\n")
                _read_until_prompt(sock, b"")
                replies = []
                for c in commands:
                    sock.sendall(c.encode() + b"\n")
                    replies.append(_read_until_prompt(sock, b""))
                sock.sendall(b"quit\n")
                return replies
        except OSError as exc:
            raise RuntimeApiError(f"runtime API {self.path}: {exc}") from exc


def _read_until_prompt(sock: socket.socket, buf: bytes) -> str:
    while not buf.endswith(PROMPT) and buf != b"> ":
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeApiError("runtime API closed the connection")
        buf += chunk
    return buf[: -len(PROMPT)].decode(errors="replace").strip() if buf != b"> " else ""


def send_once(path: str, command: str, timeout: float = 5.0) -> str:
    """Non-interactive: send one command, read until the peer closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        # Half-close: the master CLI only ends a non-interactive session at end of input.
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True, slots=True)
class ProcInfo:
    master_pid: int
    reloads: int
    workers: tuple[int, ...]  # current workers (not the old ones still draining)
    old_workers: tuple[int, ...]


def parse_show_proc(text: str) -> ProcInfo:
    master, reloads = 0, 0
    workers: list[int] = []
    old: list[int] = []
    section = "master"
    for line in text.splitlines():
        if line.startswith("# workers"):
            section = "workers"
            continue
        if line.startswith("# old workers"):
            section = "old"
            continue
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        if parts[1] == "master":
            master, reloads = int(parts[0]), int(parts[2])
        elif section == "workers":
            workers.append(int(parts[0]))
        elif section == "old":
            old.append(int(parts[0]))
    return ProcInfo(master, reloads, tuple(workers), tuple(old))


class MasterClient:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def show_proc(self) -> ProcInfo:
        try:
            return parse_show_proc(send_once(self.path, "show proc", self.timeout))
        except OSError as exc:
            raise RuntimeApiError(f"master CLI {self.path}: {exc}") from exc

    def reload(self, deadline_s: float = 30.0) -> ProcInfo:
        """Reload and wait until a new worker serves; retries while the master re-execs."""
        before = self.show_proc()
        end = time.monotonic() + deadline_s
        sent = False
        while time.monotonic() < end:
            try:
                if not sent:
                    send_once(self.path, "reload", self.timeout)
                    sent = True
                info = self.show_proc()
                if info.reloads > before.reloads and info.workers and not (
                    set(info.workers) & set(before.workers)
                ):
                    return info
            except (OSError, RuntimeApiError):
                # LAB-NOTES: the master CLI refuses connections briefly while re-executing.
                pass
            time.sleep(0.02)
        raise RuntimeApiError(f"reload did not complete within {deadline_s}s")
