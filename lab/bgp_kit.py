"""Shared pieces of the BGP lab tests and bench/bgp_scale.py: hand-built snapshots, fakes for
the Kubernetes writes, an exabgp wrapper that runs exabgp inside a node namespace."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from common.api.model import AddressRange as AR
from common.api.model import (
    BGPAdvertisement,
    BGPPeer,
    Community,
    LBService,
    Pool,
    SecretKeyRef,
)
from lab.wait import wait_until
from speaker.core.snapshot import ClusterSnapshot, Endpoint, NodeInfo, SecretReadError

REPO = Path(__file__).resolve().parents[1]
# The namespace the hand-built snapshots say Portico runs in (password Secrets live there).
PORTICO_NAMESPACE = "portico"
EXABGP = str(REPO / ".venv" / "bin" / "exabgp")
ROUTER_ASN = 64500
NODE_ASN = 64512


def pool(name: str, *cidrs: str) -> Pool:
    ranges = []
    for c in cidrs:
        net = ipaddress.ip_network(c)
        ranges.append(AR("IPv4" if net.version == 4 else "IPv6", int(net[0]), int(net[-1]), c))
    return Pool(name=name, ranges=tuple(ranges))


def svc(name: str, *ips: str, policy: str = "Cluster", ns: str = "default") -> LBService:
    return LBService(namespace=ns, name=name,
                     status_ips=tuple(ipaddress.ip_address(i) for i in ips),
                     traffic_policy=policy)  # type: ignore[arg-type]


def peer(name: str, address: str, asn: int = ROUTER_ASN, my_asn: int = NODE_ASN,
         hold: int = 3, secret: str | None = None,
         secret_namespace: str | None = None) -> BGPPeer:
    """``secret``: passwordSecret name; ``secret_namespace`` as the user wrote it (None:
    omitted, i.e. the snapshot's namespace)."""
    return BGPPeer(name=name, my_asn=my_asn, peer_asn=asn,
                   peer_address=ipaddress.ip_address(address), hold_time=hold,
                   password_secret=SecretKeyRef(secret_namespace, secret) if secret else None)


def node(name: str, *addrs: str, **labels: str) -> NodeInfo:
    return NodeInfo(name=name, labels=dict(labels),
                    addresses=tuple(ipaddress.ip_address(a) for a in addrs))


def snapshot(
    services: Iterable[LBService] = (),
    nodes: Iterable[NodeInfo] = (),
    pools: Iterable[Pool] = (),
    advs: Iterable[BGPAdvertisement] = (),
    peers: Iterable[BGPPeer] = (),
    endpoints: Mapping[str, tuple[Endpoint, ...]] | None = None,
    secrets: dict[tuple[str, str], dict[str, bytes]] | None = None,
    secret_errors: Mapping[tuple[str, str], SecretReadError] | None = None,
    namespace: str = PORTICO_NAMESPACE,
) -> ClusterSnapshot:
    return ClusterSnapshot(
        services=tuple(services), nodes={n.name: n for n in nodes}, pools=tuple(pools),
        bgp_advertisements=tuple(advs), bgp_peers=tuple(peers), endpoints=endpoints or {},
        secrets=secrets or {}, secret_errors=secret_errors or {}, namespace=namespace,
    )


def adv(name: str, *pools: str, **kw: Any) -> BGPAdvertisement:
    comms = tuple(Community(tuple(int(p) for p in c.split(":"))) for c in kw.pop("communities",
                                                                                  ()))
    return BGPAdvertisement(name=name, ip_address_pools=tuple(pools), communities=comms, **kw)


class FakeKube:
    """Records status patches (what kubectl would show) instead of calling an API server."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def patch(self, res: Any, name: str, patch: Any, namespace: str | None = None,
              subresource: str | None = None, patch_type: str = "merge") -> Any:
        with self.lock:
            self.patches.append((name, patch))
            nodes = self.status.setdefault(name, {})
            for k, v in patch["status"]["nodes"].items():
                if v is None:
                    nodes.pop(k, None)
                else:
                    nodes[k] = v
        return {}


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []  # (object, type, reason, message)

    def record(self, involved: dict[str, Any], type_: str, reason: str, message: str,
               action: str | None = None, resource: Any = None) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, message))

    def reasons(self) -> list[str]:
        return [e[2] for e in self.events]


def exabgp_wrapper(ns: str, directory: Path) -> str:
    """A script that runs exabgp inside namespace ``ns`` (exec: same PID, so the speaker's
    PDEATHSIG and kill reach exabgp itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"exabgp-{ns}.sh"
    path.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {EXABGP} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def measure(cond: Callable[[], Any], timeout: float, interval: float = 0.01) -> float:
    t0 = time.monotonic()
    wait_until(cond, timeout, interval)
    return time.monotonic() - t0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> list[tuple[int, str]]:
    """Every descendant of ``pid`` as (pid, comm), read from /proc (no pattern matching: the
    caller recorded ``pid`` itself)."""
    parent: dict[int, int] = {}
    comm: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses
        head, _, rest = stat_text.rpartition(")")
        fields = rest.split()
        parent[int(entry)] = int(fields[1])
        comm[int(entry)] = head.partition("(")[2]
    out: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p:
                out.append((c, comm[c]))
                todo.append(c)
    return sorted(out)


@contextlib.contextmanager
def offline_announcer(state_dir: str, node: str = "n1") -> Iterator[Any]:
    """A BgpAnnouncer on fakes whose exabgp never starts (unit tests drive its pieces), and
    stopped afterwards with an ExaBgpProcess that has nothing to stop."""
    from speaker.bgp.announcer import BgpAnnouncer
    from speaker.bgp.process import ExaBgpProcess, Redactor

    a = BgpAnnouncer(node, FakeKube(), FakeEvents(), "/nonexistent/exabgp", state_dir)
    try:
        yield a
    finally:
        a.proc = ExaBgpProcess("/nonexistent/exabgp", state_dir, lambda m: None, Redactor())
        a.stop(graceful=False)

