"""Every flag the chart passes to a component is one that component's parser accepts
(`portico COMPONENT --help`), so a rename in the code cannot silently break installs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.chart.chartkit import ROOT, containers, workloads

COMPONENTS = ("controller", "speaker", "ingress")
# Cases whose args come from the chart alone (all-options adds made-up extraArgs); gateway adds
# --gateway-controller-name.
CASES = ("default", "alternatives", "gateway")


def _chart_flags(component: str) -> set[str]:
    flags: set[str] = set()
    for case in CASES:
        for workload in workloads(case):
            for container in containers(workload):
                args = container.get("args", [])
                if args and args[0] == component:
                    flags |= {a.split("=", 1)[0] for a in args[1:] if a.startswith("--")}
    return flags


@pytest.mark.parametrize("component", COMPONENTS)
def test_chart_flags_are_accepted_by_the_component(component: str) -> None:
    flags = _chart_flags(component)
    assert flags, f"the chart runs no {component}"
    proc = subprocess.run([sys.executable, "-m", "portico", component, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    # A component the chart runs must exist: its absence fails here, it is never a skip.
    assert "ModuleNotFoundError" not in proc.stderr, (
        f"portico {component} cannot start: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    known = set(re.findall(r"--[a-z0-9][a-z0-9-]*", proc.stdout))
    assert flags <= known, f"portico {component} does not know {sorted(flags - known)}"
