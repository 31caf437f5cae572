"""The process that becomes a container: ``python -S -m lab.nodeagent.launch SPEC_FD ERR_FD``.

Runs as root, reads its ``LaunchPlan`` (JSON) from ``SPEC_FD``, then — in this order, so each
step still has the privileges it needs:

1. joins the pod's network namespace (``/run/netns/NAME``; none for hostNetwork pods);
2. gets a private mount namespace (and a UTS namespace with the pod's hostname), mounts a
   fresh tmpfs on ``/run`` (an image's /run is empty too; ``/var/run`` is a link to it), and
   makes the checkout's interpreter reachable for non-root users (see ``_expose``);
3. makes the mount points the node lacks (``/etc/secret-volume``: an image would have
   them or the runtime would create them in the image's root) in a copy-on-write overlay of
   their nearest existing directory, private to the container (``_make_mount_points``), then
   bind-mounts the pod's volumes — the ServiceAccount token, ``ca.crt`` and ``namespace`` at
   ``/var/run/secrets/kubernetes.io/serviceaccount`` among them — read-only where asked;
4. limits the capability bounding set (a root process keeps exactly that set across exec; a
   non-root one gets no capabilities, as in Kubernetes, which grants no ambient ones), clears
   ambient capabilities, sets groups, gid, uid, and ``no_new_privs``;
5. changes to the working directory and execs the command with the container's environment.

A failure before exec is written to ``ERR_FD`` (close-on-exec: the agent reads EOF when the
exec succeeded) and the process exits 128, so the agent reports ``StartError`` with the
reason. Standard library only (ctypes for setns/unshare/mount/prctl): it starts for every
container and exec probe.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import stat
import sys
from typing import Any

from lab.nodeagent import caps as capabilities

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = (
    1, 2, 4, 32, 4096, 8192, 16384, 1 << 18)
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
START_ERROR_EXIT = 128  # what a runtime reports for a container that could not start
RUN_TMPFS = "mode=0755,size=16m"
STAGE = "/run/.portico-lab-stage"
OVERLAYS = "/run/.portico-lab-overlay"  # upper and work layers, on the container's own /run

_libc = ctypes.CDLL(None, use_errno=True)


class LaunchFailed(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise LaunchFailed(f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {target}")


def _prctl(option: int, arg2: int = 0) -> int:
    # Every argument as unsigned long: prctl is variadic, and the kernel rejects options
    # whose unused arguments are not zero (a 32-bit int leaves the upper half undefined).
    zero = ctypes.c_ulong(0)
    return int(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), zero, zero, zero))


def _join_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
    finally:
        os.close(fd)


def _closed_ancestor(path: str) -> tuple[str, str] | None:
    """The topmost directory on ``path`` that others may not traverse, and its child on the
    way to ``path``; None when every ancestor is traversable."""
    parts = os.path.realpath(path).split("/")[1:]
    current = ""
    for i, part in enumerate(parts[:-1]):
        current += "/" + part
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current, current + "/" + parts[i + 1]
    return None


def _expose(paths: list[str]) -> None:
    """Non-root containers run this machine's interpreter; here it lives under /root (mode
    0700). An image's files are readable by its user, so in the container's own mount
    namespace the closed directory is replaced by an empty tmpfs holding just the needed
    subtree (bind-mounted back), leaving the real /root out of sight."""
    plan: dict[str, set[str]] = {}
    for p in paths:
        found = _closed_ancestor(p)
        if found:
            plan.setdefault(found[0], set()).add(found[1])
    for n, (closed, children) in enumerate(sorted(plan.items())):
        staged = []
        for m, child in enumerate(sorted(children)):
            stage = f"{STAGE}/{n}-{m}"
            os.makedirs(stage)
            _mount(child, stage, None, MS_BIND | MS_REC)
            staged.append((stage, closed + "/" + os.path.basename(child)))
        _mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for stage, target in staged:
            os.makedirs(target)
            _mount(stage, target, None, MS_MOVE)


def _open_sources(mounts: list[dict[str, Any]]) -> list[tuple[int, str, bool]]:
    """Every bind source opened (O_PATH) before anything is mounted: a volume mounted on
    /tmp would otherwise hide the sources of the next ones (the agent's state directory may
    itself be under /tmp). Parents are mounted before their children, as runtimes do."""
    out = []
    for m in sorted(mounts, key=lambda m: os.path.normpath(str(m["target"])).count("/")):
        try:
            fd = os.open(str(m["source"]), os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise LaunchFailed(f"volume source {m['source']}: {exc.strerror}") from exc
        out.append((fd, str(m["target"]), bool(m.get("readonly"))))
    return out


def _make_mount_points(targets: list[str]) -> None:
    """Mount points missing on this node, made without writing to the node's filesystem.

    A runtime creates a missing mount point inside the container's root filesystem; here the
    root is the node's, so the nearest existing ancestor (``/etc`` for ``/etc/secret-volume``)
    gets an overlay in the container's mount namespace whose upper layer lives on its /run
    tmpfs: the directory is made there and vanishes with the container. Under /run (a fresh
    tmpfs already) directories are made directly; ``/`` itself is refused (an overlay there
    would hide /proc, /dev and every other mount)."""
    missing: list[str] = []
    parents: set[str] = set()
    for target in targets:
        real = os.path.realpath(target)
        if os.path.exists(real):
            continue
        missing.append(real)
        if _under(real, "/run"):
            continue
        parent = os.path.dirname(real)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent == "/" or any(c in parent for c in ",:\\"):
            raise LaunchFailed(f"mount path {target} does not exist on this node and the lab "
                               "node agent cannot make it (it overlays an existing directory "
                               "other than /)")
        parents.add(parent)
    # The topmost ones only: an overlay on /etc after one on /etc/a would hide the latter.
    tops = sorted(p for p in parents if not any(q != p and _under(p, q) for q in parents))
    for n, parent in enumerate(tops):
        layer = f"{OVERLAYS}/{n}"
        os.makedirs(f"{layer}/upper")
        os.makedirs(f"{layer}/work")
        _mount("overlay", parent, "overlay", 0,
               f"lowerdir={parent},upperdir={layer}/upper,workdir={layer}/work")
    for real in missing:
        os.makedirs(real, exist_ok=True)


def _bind(source_fd: int, target: str, readonly: bool) -> None:
    real = os.path.realpath(target)
    if not os.path.exists(real):  # _make_mount_points made every one
        raise LaunchFailed(f"mount path {target} does not exist")
    _mount(f"/proc/self/fd/{source_fd}", real, None, MS_BIND | MS_REC)
    if readonly:
        _mount(None, real, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)
    os.close(source_fd)


# The checkout the lab runs from: the "image" of every lab container (its programs, the
# virtualenv with the editable install). In a real image the program lives in the image, so a
# volume mounted over /tmp cannot hide it; a checkout under /tmp (a CI clone) would be hidden
# by the chart's emptyDir on /tmp, so it is bound back on top of the volumes.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _under(path: str, top: str) -> bool:
    return os.path.commonpath([path, top]) == top


def _open_hidden(keep: list[str], targets: list[str]) -> list[tuple[int, str]]:
    """O_PATH handles of the ``keep`` directories a volume target would hide."""
    out = []
    for path in keep:
        if any(_under(path, os.path.realpath(t)) for t in targets):
            out.append((os.open(path, os.O_PATH | os.O_CLOEXEC), path))
    return out


def _limit_capabilities(keep: list[str] | None) -> None:
    if keep is None:  # privileged: the agent's own set
        return
    wanted = {capabilities.NUMBERS[c] for c in keep}
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for number in range(last + 1):
        if number not in wanted:
            _check(_prctl(PR_CAPBSET_DROP, number), f"drop capability {number}")
    _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL), "clear ambient")


def prepare(spec: dict[str, Any], expose: list[str]) -> None:
    if spec.get("netns"):
        _join_netns(str(spec["netns"]))
    flags = CLONE_NEWNS | (CLONE_NEWUTS if spec.get("hostname") else 0)
    _check(_libc.unshare(flags), "unshare")
    # Private first: nothing mounted below may reach the node's (or the agent's) namespace.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened in the new namespace (a mount of another namespace cannot be bind-mounted) and
    # before the first mount below.
    sources = _open_sources(list(spec.get("mounts") or []))
    hidden = _open_hidden([REPO], [target for _, target, _ in sources])
    if spec.get("hostname"):
        name = str(spec["hostname"]).encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")
    _mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, RUN_TMPFS)
    if int(spec["uid"]) != 0:
        _expose(expose)
    _make_mount_points([target for _, target, _ in sources])
    for fd, target, readonly in sources:
        _bind(fd, target, readonly)
    for fd, path in hidden:
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    _limit_capabilities(spec.get("caps"))
    os.setgroups([int(g) for g in spec.get("groups") or []])
    os.setgid(int(spec["gid"]))
    os.setuid(int(spec["uid"]))
    if spec.get("no_new_privs"):
        _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
    os.chdir(str(spec.get("cwd") or "/"))


def main(argv: list[str]) -> int:
    spec_fd, err_fd = int(argv[1]), int(argv[2])
    os.set_inheritable(err_fd, False)  # closes on exec: EOF tells the agent it worked
    try:
        with os.fdopen(spec_fd, "rb") as f:
            spec = json.loads(f.read())
        argv0 = str(spec["argv"][0])
        prepare(spec, [argv0, sys.executable, *spec.get("expose", [])])
        env = {str(k): str(v) for k, v in spec["env"]}
        os.execve(argv0, [str(a) for a in spec["argv"]], env)
    except (OSError, LaunchFailed, ValueError, KeyError, IndexError) as exc:
        message = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
        with contextlib.suppress(OSError):
            os.write(err_fd, message.encode()[:4000])
        return START_ERROR_EXIT
    return START_ERROR_EXIT  # not reached: execve does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv))
