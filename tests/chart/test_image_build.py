"""The Dockerfile, built without a Docker engine: scripts/build-image.sh makes a debootstrap
stand-in for the python base image, builds with buildah (runc) and runs the image's entry points
with podman. Cold (empty ~/.cache/portico/image): about 90 s plus installing buildah, podman,
runc and debootstrap; warm (the image with the same build key is there): about 4 s, checks
included."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build-image.sh"

CHECKS = (
    "IMAGE (CMD --help)",
    "IMAGE --version",
    "IMAGE controller --help",
    "IMAGE speaker --help",
    "IMAGE ingress --help",
    "haproxy -v",
    "exabgp version",
    "tini --version",
    "ip -V",
    "runs as 10001:10001",
    "component modules import",
    "bfdd -v",
    "FRR daemons: bfdd only",
    "bfdd starts with BFD caps",
    "bfdd refused without them",
)


def test_build_image_script_passes_bash_n_and_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (scripts/install-deps.sh installs it)")
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.timeout(1500)
def test_image_builds_and_its_entry_points_run() -> None:
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1400,
                          check=False, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for name in CHECKS:
        assert re.search(rf"^    ok    {re.escape(name)} ", proc.stdout, re.M), (name, out)
    assert "FAIL" not in out
    assert re.search(r"^build-image: \[ *\d+s\] image localhost/portico:\S+ ok ", proc.stdout,
                     re.M), out
