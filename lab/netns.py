"""Network-namespace primitives for the lab: namespaces, veths, bridges, addresses, sysctls.

Everything goes through ``ip -n NS ...`` (LAB-NOTES: much faster than ``ip netns exec``,
which remounts sysfs) and names every object explicitly, so a teardown can remove exactly what
was created, by name. Nothing here touches the root namespace except creating/deleting the
named namespaces themselves.

``run_in_netns`` runs a Python callable in a helper thread that has ``setns()``-ed into a
namespace: network namespaces are per thread on Linux, and a socket keeps the namespace it was
created in, so the test process can own listening/probing sockets inside lab namespaces
(Python 3.11 has no ``os.setns``: ctypes to libc).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
NETNS_DIR = "/run/netns"
IP_TIMEOUT = 10.0  # seconds; an `ip` command that takes longer is wedged


class LabError(Exception):
    """A lab setup step failed (the message carries the command and its stderr)."""


def available() -> str | None:
    """None when the lab can run here; the reason when it cannot because this is not root
    (the one reason tests may skip for). A missing program is an installation error and
    raises LabError: scripts/install-deps.sh installs what the lab needs."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    if shutil.which("ip") is None:
        raise LabError("iproute2 `ip` not found (scripts/install-deps.sh installs it)")
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError(f"`ip netns` unavailable: {exc}") from exc
    return None


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=IP_TIMEOUT)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def ip_batch(ns: str, commands: Sequence[str]) -> None:
    """Several `ip` commands in one process (``ip -n NS -batch -``): one fork, not dozens."""
    if not commands:
        return
    proc = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n",
                          capture_output=True, text=True, timeout=IP_TIMEOUT)
    if proc.returncode != 0:
        raise LabError(f"ip -n {ns} -batch: {proc.stderr.strip()}")


def add_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", ns=name)


def del_netns(name: str) -> None:
    """Delete a namespace (its links go with it); no error when it is already gone."""
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        ip("netns", "del", name, check=False)


def sysctls(ns: str, values: dict[str, str]) -> None:
    """Set sysctls inside ``ns`` by writing /proc/sys from a thread inside the namespace."""

    def write() -> None:
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)

    run_in_netns(ns, write)


def add_veth(ns_a: str, name_a: str, ns_b: str, name_b: str, mac_b: str | None = None) -> None:
    """A veth pair created inside ``ns_a`` with its peer moved straight into ``ns_b``."""
    ip("link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b, ns=ns_a)
    if mac_b:
        ip("link", "set", "dev", name_b, "address", mac_b, ns=ns_b)


def add_bridge(ns: str, name: str) -> None:
    # STP off (the default) puts ports in forwarding state at once: no 15 s listening delay.
    ip("link", "add", name, "type", "bridge", "stp_state", "0", ns=ns)
    ip("link", "set", name, "up", ns=ns)


def enslave(ns: str, port: str, bridge: str) -> None:
    ip_batch(ns, [f"link set {port} master {bridge}", f"link set {port} up"])


def link_set(ns: str, name: str, up: bool) -> None:
    ip("link", "set", name, "up" if up else "down", ns=ns)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def setns_current_thread(ns: str) -> None:
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(ns: str, fn: Callable[[], T], timeout: float = 60.0) -> T:
    """Run ``fn`` in a fresh thread that lives in ``ns``; return its result or re-raise."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            setns_current_thread(ns)
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LabError(f"call in {ns} did not finish within {timeout} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def start_thread_in_netns(ns: str, fn: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread running ``fn`` inside ``ns`` (for long-running probers)."""

    def body() -> None:
        setns_current_thread(ns)
        fn()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread
