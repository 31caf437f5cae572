"""The README's demo runs end to end (so the first thing users run never rots)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import netns

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.lab
def test_demo_runs_end_to_end() -> None:
    reason = netns.available()
    if reason:
        pytest.skip(f"needs root and network namespaces: {reason}")
    out = subprocess.run([sys.executable, "-m", "lab.demo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=240)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    for host in ("a.demo.example", "b.demo.example"):
        assert f"https://{host}/ -> app=web-" in text
        assert f"http://{host}/ -> [HTTP 308] https://{host}/" in text
    assert "HTTPS after failover: all 200" in text
    assert "took over; client outage" in text
    assert "no namespace or process left behind" in text
