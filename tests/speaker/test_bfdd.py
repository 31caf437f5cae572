"""What the speaker checks before it starts FRR bfdd, and the fix its BFDUnavailable Event
names (no bfdd run here: tests/lab/test_bfdd_privileges.py runs it with the chart's
capability sets, tests/cluster/test_bgp_bfd_chart.py through the Helm chart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from speaker.bgp import bfdd as B
from speaker.core.bgp_bfd import (
    BFDD_CAPABILITIES,
    CHART_VALUE,
    capabilities_fix,
    missing_binary_fix,
    missing_capabilities,
)

# /proc/self/status CapBnd of the chart's speaker container: NET_ADMIN 12, NET_RAW 13,
# IPC_LOCK 14, SYS_NICE 23 — and with speaker.bfd.enabled also NET_BIND_SERVICE 10, SYS_ADMIN 21.
SPEAKER_MASK = (1 << 12) | (1 << 13) | (1 << 14) | (1 << 23)
BFD_MASK = SPEAKER_MASK | (1 << 10) | (1 << 21)


def test_missing_capabilities_from_a_mask() -> None:
    assert missing_capabilities(SPEAKER_MASK) == ("NET_BIND_SERVICE", "SYS_ADMIN")
    assert missing_capabilities(BFD_MASK) == ()
    assert missing_capabilities(0) == BFDD_CAPABILITIES
    assert missing_capabilities(0x1FFFFFFFFFF) == ()


def test_fix_texts_name_the_chart_value() -> None:
    text = capabilities_fix(("NET_BIND_SERVICE", "SYS_ADMIN"))
    assert f"--set {CHART_VALUE}" in text and "lacks NET_BIND_SERVICE, SYS_ADMIN" in text
    assert CHART_VALUE == "speaker.bfd.enabled=true"
    text = missing_binary_fix("/usr/lib/frr/bfdd")
    assert "/usr/lib/frr/bfdd" in text and "Dockerfile" in text and CHART_VALUE in text


def test_capability_mask_reads_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapBnd:\t0000000000a07000\nCapAmb:\t0000000000000000\n")
    assert B.capability_mask("CapBnd", str(status)) == 0xA07000
    assert B.capability_mask("CapAmb", str(status)) == 0
    assert B.capability_mask("CapBnd", str(tmp_path / "none")) is None


def test_run_dir_is_the_state_dir_unless_its_sockets_would_not_fit() -> None:
    assert B.run_dir_for("/var/run/portico-speaker") == Path("/var/run/portico-speaker/bfdd")
    deep = "/tmp/" + "d" * 100
    got = B.run_dir_for(deep)
    assert got.parent == B.FRR_RUN and got.name == B.pathspace_for(deep)


def test_argv_keeps_every_file_in_the_run_dir_and_no_tcp_vty() -> None:
    p = B.BfddProcess("/var/run/portico-speaker")
    argv = p.argv()
    d = "/var/run/portico-speaker/bfdd"
    assert argv[0] == "/usr/lib/frr/bfdd"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["-f"] == f"{d}/bfdd.conf" and pairs["-i"] == f"{d}/bfdd.pid"
    assert pairs["--vty_socket"] == d and pairs["--bfdctl"] == f"{d}/bfdd.sock"
    assert pairs["-z"] == f"{d}/zserv.api"
    assert pairs["-P"] == "0"  # no TCP vty on the node's addresses (hostNetwork)
    assert pairs["-g"] == "frrvty" and "-N" not in argv


def test_start_refuses_without_the_binary(tmp_path: Path) -> None:
    p = B.BfddProcess(str(tmp_path), bfdd=Path("/nonexistent/bfdd"))
    with pytest.raises(B.BfddUnavailable, match=r"--set speaker\.bfd\.enabled=true"):
        p.start("bfd\nexit\n")
    assert not p.alive() and p.config is None


def test_start_refuses_without_the_capabilities(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bfdd"
    fake.write_text("#!/bin/sh\nexit 1\n")
    monkeypatch.setattr(B, "capability_mask", lambda field="CapBnd": SPEAKER_MASK)
    p = B.BfddProcess(str(tmp_path / "st"), bfdd=fake)
    with pytest.raises(B.BfddUnavailable) as err:
        p.start("bfd\nexit\n")
    assert "lacks NET_BIND_SERVICE, SYS_ADMIN" in str(err.value)
    assert "--set speaker.bfd.enabled=true" in str(err.value)
    assert not (tmp_path / "st" / "bfdd").exists()  # refused before anything was written


def test_a_bfdd_that_exits_at_start_is_quoted_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bfdd"
    fake.write_text("#!/bin/sh\necho 'privs_init: initial cap_set_proc failed'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(B, "capability_mask", lambda field="CapBnd": BFD_MASK)
    p = B.BfddProcess(str(tmp_path / "st"), bfdd=fake)
    with pytest.raises(B.BfddUnavailable) as err:
        p.start("bfd\nexit\n")
    assert "exit code 1" in str(err.value)
    assert "cap_set_proc failed" in str(err.value)
    assert CHART_VALUE in str(err.value)
    assert not p.alive()


def test_a_uid_without_a_passwd_entry_is_refused_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bfdd"
    fake.write_text("#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(B, "capability_mask", lambda field="CapBnd": BFD_MASK)

    def no_entry(uid: int) -> object:
        raise KeyError(uid)
    monkeypatch.setattr(B.pwd, "getpwuid", no_entry)
    p = B.BfddProcess(str(tmp_path / "st"), bfdd=fake)
    with pytest.raises(B.BfddUnavailable, match="no passwd entry"):
        p.start("bfd\nexit\n")
    assert not (tmp_path / "st" / "bfdd").exists()
