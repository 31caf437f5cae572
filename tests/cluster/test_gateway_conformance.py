"""The upstream Gateway API conformance suite, one core test, inside `make test`: the whole
chain (chart with gateway.enabled and the CRD subchart, RBAC, the Gateway's Service and VIP
from the pools, statuses, routing through HAProxy) on the lab cluster, judged by the
upstream code. The full run (`make conformance`, ~15 minutes) writes docs/conformance/."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.topology import REPO

pytestmark = pytest.mark.lab

TEST = "HTTPRouteMatching"  # core: path and header matches across two backends


def test_upstream_conformance_core_test_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lab.gateway_conformance", "--run-test", TEST,
         "--skip-backend-check", "--timeout", "10m"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"PASS  {TEST}" in out, out[-4000:]
