"""The README's demo runs end to end (so the first thing users run never rots): Helm installs
the chart into the lab cluster, the examples are applied with kubectl, HTTP and HTTPS answer
through the ingress VIP, the owner's death moves the VIP to another node, and everything is
removed afterwards."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab import netns
from lab.demo import HOSTS, OBSERVE_S

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600  # about a minute and a half here; a slow CI machine gets room


@pytest.mark.lab
def test_demo_runs_end_to_end() -> None:
    reason = netns.available()
    if reason:
        pytest.skip(f"needs root and network namespaces: {reason}")
    out = subprocess.run([sys.executable, "-m", "lab.demo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=TIMEOUT_S)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    # Portico came from the chart, and its pods became Ready.
    assert "$ helm install portico charts/portico --namespace portico-system" in text
    assert "every Portico pod Running and Ready" in text
    # The kubectl views: the pool's counts, the announced VIP, the Ingress address.
    vip = re.search(r"from the client \(\S+\): HTTP and HTTPS through the ingress VIP (\S+)",
                    text)
    assert vip, text[-4000:]
    assert re.search(r"demo\s+\[192\.0\.2\.200-192\.0\.2\.210\]\s+11\s+1\s+10", text), text
    assert re.search(rf"portico-ingress\s+{re.escape(vip[1])}\s+True\s+"
                     rf"{re.escape(vip[1])} announced by node node\d", text), text
    assert re.search(rf"demo\s+demo\s+portico\s+\S+\s+{re.escape(vip[1])}\s+80, 443", text)
    # HTTP redirects to HTTPS, HTTPS reaches the host's app, before and after the failover.
    for host, app in zip(HOSTS, ("web-a", "web-b"), strict=True):
        assert text.count(f"https://{host}/ -> HTTP 200 {app}-") == 2, text
        assert text.count(f"http://{host}/ -> HTTP 308 -> https://{host}/") == 2, text
    assert "HTTPS before and after failover: all 200" in text
    # The failover: another node took the VIP over and connects resumed while the client
    # watched (within the observation window: a correctness bound, not a timing goal).
    failover = re.search(r"owner (node\d) died -> (node\d) took over; client outage (\d+) ms "
                         r".*connects again (\d+) ms after the cut", text)
    assert failover, text[-4000:]
    assert failover[1] != failover[2]
    assert int(failover[4]) < OBSERVE_S * 1000
    assert "no namespace or process left behind" in text
