"""The heartbeat socket loop's receiving side (``speaker.liveness``), on loopback, with fake
clocks: rejected datagrams are counted by reason and logged rate-limited, and the key file is
re-read when it changes (rotation) without any restart."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from speaker.core.liveness import Heartbeat, LivenessConfig
from speaker.core.liveness_auth import seal
from speaker.errors import LivenessKeyError
from speaker.liveness import Liveness

WALL0 = 1_800_000_000.0
OLD, NEW = b"o" * 40, b"n" * 40
LOOP = ipaddress.ip_address("127.0.0.1")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t


class Counter:
    def __init__(self) -> None:
        self.n: dict[str, int] = {}
        self._label = ""

    def labels(self, label: str) -> Counter:
        c = Counter()
        c.n = self.n
        c._label = label
        return c

    def inc(self, by: int = 1) -> None:
        self.n[self._label] = self.n.get(self._label, 0) + by

    def set(self, v: float) -> None:
        self.n[self._label] = int(v)


class Metrics:
    def __init__(self) -> None:
        self.heartbeats_sent = Counter()
        self.heartbeats_received = Counter()
        self.heartbeats_rejected = Counter()
        self.liveness_keys = Counter()
        self.live_nodes = Counter()


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.lines.append((level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [kw for _, e, kw in self.lines if e == name]


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    p = tmp_path / "keys"
    p.write_bytes(OLD + b"\n")
    return p


@pytest.fixture
def live(keyfile: Path) -> Iterator[tuple[Liveness, Clock, Metrics, Log]]:
    clock, metrics, log = Clock(), Metrics(), Log()
    lv = Liveness("n1", 0, LivenessConfig(), lambda _live: None, log, metrics,
                  bind_addr="::", monotonic=clock.mono, key_file=str(keyfile),
                  wall=clock.wall)
    lv.set_nodes({"n1": [ipaddress.ip_address("192.0.2.250")], "n2": [LOOP]})
    try:
        yield lv, clock, metrics, log
    finally:
        lv.stop()


def send(lv: Liveness, data: bytes) -> None:
    port = lv.rx.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))
    lv._drain()


def beat(seq: int, clock: Clock, key: bytes = OLD, leaving: bool = False,
         node: str = "n2") -> bytes:
    return seal(Heartbeat(node, "b", seq, not leaving, leaving, (), clock.wall()), key)


def test_rejections_counted_by_reason_and_logged_rate_limited(
        live: tuple[Liveness, Clock, Metrics, Log]) -> None:
    lv, clock, metrics, log = live
    send(lv, beat(5, clock))
    assert metrics.heartbeats_received.n == {"": 1}
    for _ in range(50):  # a flood of forgeries: 50 counted, 1 line logged
        send(lv, beat(6, clock, key=NEW, leaving=True))
    send(lv, beat(5, clock))  # replay
    send(lv, beat(1, clock, node="n3"))  # authentic but not from n3's address
    send(lv, b"x" * 10)
    clock.t += 3.0
    send(lv, seal(Heartbeat("n2", "b", 9, True, False, (), clock.wall() - 2.5), OLD))
    assert metrics.heartbeats_rejected.n == {"unauthenticated": 50, "replayed": 1,
                                             "foreign_address": 1, "malformed": 1, "stale": 1}
    rejected = log.events("heartbeat_rejected")
    assert [r["reason"] for r in rejected] == ["unauthenticated", "replayed", "foreign_address",
                                               "malformed", "stale"]
    assert rejected[-1]["skew"] == 2.5 and rejected[0]["source"] == "127.0.0.1"
    clock.t += 10.0
    send(lv, beat(6, clock, key=NEW))
    again = log.events("heartbeat_rejected")[-1]
    assert again["reason"] == "unauthenticated" and again["suppressed"] == 49
    assert metrics.heartbeats_received.n == {"": 1}
    assert not lv.membership.peer_live("n2", clock.t)


def test_key_file_rotation_is_picked_up_without_restart(
        live: tuple[Liveness, Clock, Metrics, Log], keyfile: Path) -> None:
    lv, clock, metrics, log = live
    assert metrics.liveness_keys.n == {"": 1}
    send(lv, beat(1, clock, key=NEW))
    assert metrics.heartbeats_rejected.n == {"unauthenticated": 1}
    # step 1: NEW accepted (second line); still signing with OLD
    tmp = keyfile.with_suffix(".tmp")
    tmp.write_bytes(OLD + b"\n" + NEW + b"\n")
    os.replace(tmp, keyfile)  # like the kubelet: a new file swapped in
    lv._load_keys()
    send(lv, beat(2, clock, key=NEW))
    send(lv, beat(3, clock, key=OLD))
    assert metrics.heartbeats_received.n == {"": 2}
    loaded = log.events("liveness_keys_loaded")[-1]
    assert loaded["keys"] == 2 and OLD.decode() not in str(log.lines)
    assert lv._keys[0] == OLD
    # a broken edit keeps the keys in use (and says so) instead of going deaf
    keyfile.write_bytes(b"too-short\n")
    lv._load_keys()
    assert lv._keys == (OLD, NEW) and log.events("liveness_keys_unusable")
    keyfile.unlink()
    lv._load_keys()
    assert lv._keys == (OLD, NEW) and log.events("liveness_keys_unreadable")
    # step 2: sign with NEW
    keyfile.write_bytes(NEW + b"\n" + OLD + b"\n")
    lv._load_keys()
    assert lv._keys == (NEW, OLD)


def test_unusable_key_file_at_start_is_fatal(tmp_path: Path) -> None:
    for content in (None, b"", b"# nothing\n", b"short\n"):
        p = tmp_path / "keys"
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(LivenessKeyError):
            Liveness("n1", 0, LivenessConfig(), lambda _l: None, Log(), Metrics(),
                     key_file=str(p))


def test_warm_up_starts_when_the_node_list_arrives(keyfile: Path) -> None:
    """A restarted speaker drops every heartbeat until its informers hand it the Nodes (it
    cannot check their addresses), so its warm-up must count from then (rule J): otherwise
    its first ``ready`` beats name peers it could not hear, and they let go of their VIPs."""
    clock, metrics, log = Clock(), Metrics(), Log()
    lv = Liveness("n1", 0, LivenessConfig(), lambda _live: None, log, metrics,
                  bind_addr="::", monotonic=clock.mono, key_file=str(keyfile),
                  wall=clock.wall)
    try:
        send(lv, beat(1, clock))
        assert metrics.heartbeats_rejected.n == {"foreign_address": 1}
        clock.t += 0.5  # informers synced half a second after the process started
        lv.set_nodes({"n1": [ipaddress.ip_address("192.0.2.250")], "n2": [LOOP]})
        lv.set_synced(True)
        first = lv.membership.heartbeat(clock.t, clock.wall())
        assert not first.ready and first.down == ()
        clock.t += 0.025
        send(lv, beat(2, clock))
        clock.t += LivenessConfig().timeout
        send(lv, beat(3, clock))
        ready = lv.membership.heartbeat(clock.t, clock.wall())
        assert ready.ready and ready.down == ()
    finally:
        lv.stop()
