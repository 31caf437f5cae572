"""Authenticated heartbeats for real (issue 15 A): an attacker on the node segment forges and
replays heartbeats; VIP ownership does not move, and the speakers count what they refused.

Own lab (3 nodes, every speaker with ``--liveness-key-file``) plus an attacker namespace
``pl-TAG-at`` on segment A. The segment's bridge runs as a hub (``ageing_time 0``: it floods
every frame to every port), so the attacker really sniffs the unicast heartbeats between
nodes, as on a hub, a mirror port or a flooding switch. ``--liveness-max-age 30`` widens the
freshness window so that replays of an earlier process land *inside* it: what refuses them
here is the boot/sequence rule, not the clock (stale ones are covered by the unit tests).

Bounded: every capture and every flood has a count and a time limit. The Lab tears down
every namespace and process; the attacker namespace is recorded in the Lab's own list.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from lab import netns
from lab.topology import Lab, wait_until
from speaker.core.l2_plan import election_order
from speaker.core.liveness import Heartbeat
from speaker.core.liveness_auth import INSECURE_KEY, seal

pytestmark = pytest.mark.lab

NODES = ("node1", "node2", "node3")
PORT = 7946  # --liveness-port default
ATTACKER_HOST, ATTACKER_MAC = 66, "02:aa:00:00:06:06"  # 192.0.2.66 on segment A
ETH_P_ALL = 0x0003
MAX_FRAMES = 5000  # capture bound (3 nodes x 2 peers x 10/s = 60 frames/s)
VIP = "192.0.2.210"
KEY1 = secrets.token_urlsafe(48).encode()
KEY2 = secrets.token_urlsafe(48).encode()


@dataclass
class AuthLab:
    lab: Lab
    attacker: str
    keyfile: Path


@pytest.fixture(scope="module")
def authlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthLab]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    keyfile = tmp_path_factory.mktemp("liveness") / "keys"
    keyfile.write_bytes(KEY1 + b"\n")
    args: tuple[str, ...] = ("--liveness-key-file", str(keyfile), "--liveness-max-age", "30")
    if os.environ.get("PORTICO_LAB_NO_LIVENESS_KEY") == "1":  # to see these tests fail
        args = args[2:]
    with Lab(nodes_count=3, speaker_args=args) as lab:
        attacker = lab.client.removesuffix("-cl") + "-at"
        lab._ns(attacker)  # recorded: teardown deletes it (and its veth with it)
        lab._wire_host(attacker, "at", ATTACKER_HOST, ATTACKER_MAC, segment_b=False)
        netns.ip("link", "set", "pl-br0", "type", "bridge", "ageing_time", "0", ns=lab.sw)
        lab.add_pool("a4", ["192.0.2.192/27"])
        lab.add_l2("seg-a", ipAddressPools=["a4"])
        lab.start_speakers()
        lab.wait_speakers_live()
        lab.add_service("auth", ips=[VIP])
        wait_until(lambda: lab.service_ips("auth") == [VIP], 10, what="auth gets its VIP")
        yield AuthLab(lab, attacker, keyfile)


# --- what the speakers think ------------------------------------------------------------------


def metrics(lab: Lab, node: str) -> dict[str, float]:
    """Every sample of a speaker's /metrics, keyed by name{labels} as printed."""
    url = f"http://{lab.node(node).mgmt}:7473/metrics"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    out: dict[str, float] = {}
    for line in netns.run_in_netns(lab.api, fetch).splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def rejected(m: dict[str, float], reason: str) -> float:
    return m.get(f'portico_speaker_heartbeats_rejected_total{{reason="{reason}"}}', 0.0)


def changes(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items()
               if k.startswith("portico_speaker_l2_ownership_changes_total{"))


def owner(lab: Lab) -> str:
    macs = wait_until(lambda: lab.who_has(VIP, timeout=0.2), 15, what=f"an answer for {VIP}")
    assert len(macs) == 1, macs
    name = lab.node_by_mac(macs.pop())
    assert name is not None
    return name


def snapshot(lab: Lab) -> dict[str, dict[str, float]]:
    return {n: metrics(lab, n) for n in NODES}


def assert_undisturbed(lab: Lab, before: dict[str, dict[str, float]], who: str) -> None:
    """Same owner, everyone sees everyone, no speaker gained or released anything."""
    after = snapshot(lab)
    assert owner(lab) == who
    for n in NODES:
        assert after[n]["portico_speaker_live_nodes"] == 3.0, n
        assert changes(after[n]) == changes(before[n]), (n, "ownership changed")


# --- the attacker ------------------------------------------------------------------------------


def _heartbeat_frame(frame: bytes) -> bool:
    """IPv4 UDP to the liveness port (what the speakers send; IPv4 InternalIPs here)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    ihl = (frame[14] & 0x0F) * 4
    (dport,) = struct.unpack("!H", frame[14 + ihl + 2:14 + ihl + 4])
    return bool(dport == PORT)


class Sniffer:
    """Captures heartbeat frames on the attacker's port (bounded by MAX_FRAMES and stop())."""

    def __init__(self, ns: str) -> None:
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = netns.start_thread_in_netns(ns, self._run, "sniffer")
        assert self._ready.wait(5)

    def _run(self) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            s.bind(("pl-eth0", ETH_P_ALL))
            s.settimeout(0.05)
            self._ready.set()
            while not self._stop.is_set() and len(self.frames) < MAX_FRAMES:
                try:
                    frame = s.recv(2048)
                except TimeoutError:
                    continue
                if _heartbeat_frame(frame):
                    self.frames.append(frame)
        finally:
            s.close()

    def stop(self) -> list[bytes]:
        self._stop.set()
        self._thread.join(5)
        return list(self.frames)


def replayable(frame: bytes) -> bytes:
    """A captured frame as the attacker re-sends it: UDP checksum 0 ("none", valid for IPv4).
    Captured on a veth, the checksum field holds only the partial sum the sender's kernel left
    for offload; the payload — the sealed heartbeat — is replayed byte for byte."""
    ihl = (frame[14] & 0x0F) * 4
    at = 14 + ihl + 6
    return frame[:at] + b"\x00\x00" + frame[at + 2:]


def inject(ns: str, frames: list[bytes], spacing: float = 0.002) -> None:
    """Send raw frames from the attacker's port (count bounded by the caller's list)."""
    assert len(frames) <= MAX_FRAMES

    def send() -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            s.bind(("pl-eth0", 0))
            for f in frames:
                s.send(f)
                time.sleep(spacing)
        finally:
            s.close()

    netns.run_in_netns(ns, send, timeout=60)


def forged(lab: Lab, claimed: str, payload: bytes) -> list[bytes]:
    """One frame per other node carrying ``payload`` from ``claimed``'s address."""
    src = lab.node(claimed)
    return [bytes(Ether(src=ATTACKER_MAC, dst=lab.node(n).mac_a)
                  / IP(src=src.ip4, dst=lab.node(n).ip4)
                  / UDP(sport=40000, dport=PORT) / payload)
            for n in NODES if n != claimed]


def forgeries(claimed: str, seq: int, *, leaving: bool) -> list[bytes]:
    """Heartbeats the attacker can make without the key: wrong key, the empty key (what a
    speaker without a key file uses), no MAC, the old (version 1, unauthenticated) format."""
    hb = Heartbeat(claimed, "forged", seq, not leaving, leaving, ("pl-eth0",), time.time())
    v1 = (b'{"v":1,"node":"%s","boot":"forged","seq":%d,"ready":%s,"leaving":%s,"ifs":[]}'
          % (claimed.encode(), seq, b"false" if leaving else b"true",
             b"true" if leaving else b"false"))
    return [seal(hb, b"attacker-guess-" + b"x" * 32), seal(hb, INSECURE_KEY), hb.encode(), v1]


# --- tests ---------------------------------------------------------------------------------


def test_forged_leaving_and_alive_change_nothing(authlab: AuthLab) -> None:
    lab = authlab.lab
    who = owner(lab)
    assert who == election_order(NODES, ipaddress.ip_address(VIP))[0]
    before = snapshot(lab)
    for i in range(30):  # 30 rounds x 8 forgeries to each of 2 receivers, every ~50 ms
        frames: list[bytes] = []
        for payload in forgeries(who, 10**9 + i, leaving=True) + \
                forgeries(who, 10**9 + i, leaving=False):
            frames += forged(lab, who, payload)  # stamped now: fresh, newest seq
        inject(authlab.attacker, frames)
        time.sleep(0.02)
    time.sleep(1.0)  # > timeout + join delay: any effect would have shown by now
    assert_undisturbed(lab, before, who)
    after = snapshot(lab)
    for n in NODES:
        if n != who:
            assert rejected(after[n], "unauthenticated") - rejected(before[n], "unauthenticated") \
                >= 30 * 8, n  # every forgery, to each receiver


def test_replayed_heartbeats_change_nothing_even_of_an_earlier_process(
        authlab: AuthLab) -> None:
    """Capture the owner's heartbeats and its graceful-stop "leaving" beats; restart it; when
    it owns the VIP again, replay everything: refused as replayed, ownership stays."""
    lab = authlab.lab
    who = owner(lab)
    sniffer = Sniffer(authlab.attacker)
    try:
        time.sleep(1.0)
        assert lab.stop_proc(f"speaker-{who}", signal.SIGTERM, wait=10) == 0
        time.sleep(0.3)
    finally:
        captured = sniffer.stop()
    src_ip = socket.inet_aton(lab.node(who).ip4)
    from_owner = [f for f in captured if f[26:30] == src_ip]
    assert len(from_owner) >= 20, len(from_owner)  # two peers x 10/s x 1 s, and the leaves
    assert any(b'"leaving":true' in f for f in from_owner)
    lab.start_speaker(who)
    wait_until(lambda: lab.who_has(VIP, timeout=0.2) == {lab.node(who).mac_a}, 20,
               what="VIP back on the restarted owner")
    lab.wait_speakers_live()
    before = snapshot(lab)
    # well inside --liveness-max-age 30: only the boot/sequence rule can refuse these
    inject(authlab.attacker, [replayable(f) for f in captured[:MAX_FRAMES]])
    time.sleep(1.0)
    assert_undisturbed(lab, before, who)
    after = snapshot(lab)
    for n in NODES:
        got = rejected(after[n], "replayed") - rejected(before[n], "replayed")
        assert got >= 1, (n, got)
        assert rejected(after[n], "unauthenticated") == rejected(before[n], "unauthenticated")


def test_dead_owner_is_not_kept_alive_by_forged_or_replayed_beats(authlab: AuthLab) -> None:
    lab = authlab.lab
    who = owner(lab)
    sniffer = Sniffer(authlab.attacker)
    time.sleep(1.0)
    captured = sniffer.stop()
    src_ip = socket.inet_aton(lab.node(who).ip4)
    replay = [replayable(f) for f in captured if f[26:30] == src_ip][:200]
    fakes = [f for i in range(50) for p in forgeries(who, 10**9 + i, leaving=False)
             for f in forged(lab, who, p)]
    flood = threading.Thread(target=inject, args=(authlab.attacker, (replay + fakes) * 2, 0.003),
                             daemon=True)
    lab.stop_proc(f"speaker-{who}", signal.SIGKILL)
    try:
        flood.start()  # ~1,800 frames over ~5 s, while the owner is dead
        expected = election_order([n for n in NODES if n != who], ipaddress.ip_address(VIP))[0]
        wait_until(lambda: lab.who_has(VIP, timeout=0.2) == {lab.node(expected).mac_a}, 10,
                   what="takeover despite the attacker")
        flood.join(30)
    finally:
        lab.start_speaker(who)
    wait_until(lambda: lab.who_has(VIP, timeout=0.2) == {lab.node(who).mac_a}, 20,
               what="VIP back on the restarted owner")
    lab.wait_speakers_live()


def test_key_rotation_moves_nothing(authlab: AuthLab) -> None:
    """The documented procedure on the shared key file (each speaker notices a change within
    its 1 s check, at different moments): add KEY2, sign with KEY2, drop KEY1. Nobody is ever
    declared dead; the attacker's old key stops working."""
    lab = authlab.lab
    who = owner(lab)
    before = snapshot(lab)

    def write(*keys: bytes) -> None:
        tmp = authlab.keyfile.with_suffix(".tmp")
        tmp.write_bytes(b"\n".join(keys) + b"\n")
        tmp.replace(authlab.keyfile)  # a new inode, as the kubelet's symlink swap gives

    low = 3.0
    for keys in ((KEY1, KEY2), (KEY2, KEY1), (KEY2,)):
        write(*keys)
        deadline = time.monotonic() + 2.5  # > KEY_CHECK_INTERVAL: every speaker reloaded
        while time.monotonic() < deadline:  # bounded polling: ~12 rounds of 3 scrapes
            low = min([low] + [metrics(lab, n)["portico_speaker_live_nodes"] for n in NODES])
            time.sleep(0.2)
    assert low == 3.0, "a speaker lost a peer during the rotation"
    assert_undisturbed(lab, before, who)
    # KEY1 is now refused
    hb = Heartbeat(who, "old-key", 10**9, False, True, (), time.time())
    inject(authlab.attacker, forged(lab, who, seal(hb, KEY1)))
    time.sleep(0.5)
    after = snapshot(lab)
    assert owner(lab) == who
    assert all(rejected(after[n], "unauthenticated") > rejected(before[n], "unauthenticated")
               for n in NODES if n != who)
    log = lab.procs[f"speaker-{who}"].log.read_text()
    assert "liveness_keys_loaded" in log and KEY1.decode() not in log
