"""What FRR bfdd needs to run the speaker's way, measured with the real bfdd (Debian 12's FRR
8.4): the speaker's process (``speaker.bgp.bfdd.BfddProcess``) started as uid 0 in a fresh
network namespace with the capability bounding set the chart gives the speaker container,
``no_new_privs`` (allowPrivilegeEscalation: false), no ambient capabilities and no groups,
and ``/var/run/frr`` read-only (the image's root filesystem is).

- the chart's set with ``speaker.bfd.enabled=true`` (NET_RAW, NET_ADMIN, SYS_NICE, IPC_LOCK +
  NET_BIND_SERVICE, SYS_ADMIN): bfdd starts, keeps exactly NET_BIND_SERVICE, NET_RAW and
  SYS_ADMIN permitted (none effective), stays uid/gid 0, writes only its run directory;
- the default set: the speaker refuses before starting bfdd and names the chart value;
- the default set with that check bypassed: bfdd itself exits ("initial cap_set_proc
  failed"), and the error quotes it with the chart value — the check is not a guess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from speaker.bgp.bfdd import FRR_LIB

SPEAKER = "NET_RAW,NET_ADMIN,SYS_NICE,IPC_LOCK"
BFD = "NET_BIND_SERVICE,SYS_ADMIN"
# Runs inside the restricted process: starts bfdd as the speaker does and reports.
SNIPPET = r"""
import json, os, sys
from speaker.bgp import bfdd as B
if sys.argv[2] == "bypass":
    B.missing_capabilities = lambda: ()
p = B.BfddProcess(sys.argv[1])
try:
    p.start("bfd\nexit\n")
except B.BfddUnavailable as e:
    print(json.dumps({"refused": str(e)}))
else:
    status = dict(line.split(":", 1) for line in open(f"/proc/{p.proc.pid}/status"))
    files = sorted(x.name for x in p.rundir.iterdir())
    print(json.dumps({"started": {k: status[k].strip() for k in
                                  ("Uid", "Gid", "CapPrm", "CapEff", "CapBnd")},
                      "files": files, "rundir": str(p.rundir)}))
    p.stop()
"""
# Private mount namespace: /var/run/frr read-only, as in the image; then the container's
# privileges (setpriv), then the speaker's code.
WRAPPER = r"""
set -e
mount --make-rprivate /
mkdir -p /run/frr
mount -t tmpfs -o ro,mode=0755 tmpfs /run/frr
exec setpriv --reuid 0 --regid 0 --clear-groups --inh-caps=-all --ambient-caps=-all \
  --bounding-set="-all,$CAPS" --no-new-privs -- "$PY" -c "$SNIPPET" "$STATE" "$MODE"
"""


@pytest.fixture
def state_dir() -> Iterator[str]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    assert (FRR_LIB / "bfdd").exists(), "FRR is not installed (apt-get install frr)"
    # Short: bfdd's sockets live in <state>/bfdd when their paths fit sun_path.
    d = tempfile.mkdtemp(prefix="pbfd-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run(state: str, caps: str, mode: str = "check") -> dict[str, object]:
    plus = ",".join("+" + c.lower() for c in caps.split(","))
    env = {**os.environ, "CAPS": plus, "PY": sys.executable, "SNIPPET": SNIPPET,
           "STATE": state, "MODE": mode,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # unshare: a new network namespace (bfdd binds its UDP ports there, nowhere else) and
    # mount namespace; both vanish with the process.
    proc = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", WRAPPER], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    result: dict[str, object] = json.loads(lines[-1])
    return result


def _caps(mask: str) -> set[int]:
    value = int(mask, 16)
    return {n for n in range(64) if value >> n & 1}


def test_bfdd_runs_with_the_charts_bfd_capabilities(state_dir: str) -> None:
    got = _run(state_dir, f"{SPEAKER},{BFD}")
    assert "started" in got, got
    st = got["started"]
    assert isinstance(st, dict)
    assert st["Uid"].split() == ["0"] * 4 and st["Gid"].split() == ["0"] * 4
    assert _caps(st["CapPrm"]) == {10, 13, 21}  # NET_BIND_SERVICE, NET_RAW, SYS_ADMIN
    assert _caps(st["CapEff"]) == set()  # raised only around the calls that need them
    assert got["rundir"] == f"{state_dir}/bfdd"
    assert got["files"] == ["bfdd.conf", "bfdd.pid", "bfdd.sock", "bfdd.vty"]


def test_speaker_refuses_with_the_default_capabilities_and_names_the_value(
        state_dir: str) -> None:
    got = _run(state_dir, SPEAKER)
    assert "refused" in got, got
    assert "lacks NET_BIND_SERVICE, SYS_ADMIN" in str(got["refused"])
    assert "--set speaker.bfd.enabled=true" in str(got["refused"])


@pytest.mark.parametrize("missing", ["NET_BIND_SERVICE", "SYS_ADMIN"])
def test_bfdd_itself_exits_without_either_capability(state_dir: str, missing: str) -> None:
    caps = ",".join(c for c in f"{SPEAKER},{BFD}".split(",") if c != missing)
    got = _run(state_dir, caps, mode="bypass")
    assert "refused" in got, got
    text = str(got["refused"])
    assert "cap_set_proc failed" in text and "speaker.bfd.enabled=true" in text, text
