"""The lab harness itself: topology, honest node behaviour, teardown."""

from __future__ import annotations

import os
import subprocess

import pytest

from common.kube import resources as R
from lab import netns
from lab.topology import Lab

pytestmark = pytest.mark.lab


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def bare_lab() -> Lab:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    return Lab(nodes_count=3, start_controller=False)


def test_nodes_serve_but_never_answer_arp_for_vips(bare_lab: Lab) -> None:
    with bare_lab as lab:
        assert set(lab.namespaces) <= _netns_names()
        for n in lab.nodes:
            assert lab.who_has(n.ip4) == {n.mac_a}
            assert lab.who_has(n.ip6) == {n.mac_a}
            assert lab.http_get(n.ip4) == f"node={n.name}\n"
        # Without a speaker nobody answers for VIPs, IPv4 or IPv6 (arp_ignore / local routes).
        assert lab.who_has("192.0.2.200") == set()
        assert lab.who_has("2001:db8:a::1:5") == set()
        assert lab.who_has("198.51.100.200", segment="b") == set()
        # The API emulator is reachable from the node namespaces (management network).
        node = lab.nodes[0]
        out = subprocess.run(["ip", "netns", "exec", node.ns, "curl", "-s", "-m", "3",
                              lab.url + "/api/v1/nodes"], capture_output=True, text=True)
        assert '"NodeList"' in out.stdout
        # ... and the store is the test's own.
        assert len(lab.store.list(R.NODES)) == 3
        names = set(lab.namespaces)
        pids = [p.popen.pid for p in lab.procs.values()]
    assert not names & _netns_names()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_teardown_after_failure(bare_lab: Lab) -> None:
    names: set[str] = set()
    with pytest.raises(RuntimeError), bare_lab as lab:
        names = set(lab.namespaces)
        raise RuntimeError("test failed inside the lab")
    assert names and not names & _netns_names()
