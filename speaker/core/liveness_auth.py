"""Sealing heartbeats: HMAC-SHA256 under the cluster's liveness keys, and the key file.

Pure (bytes in, bytes out); ``speaker.liveness`` reads the key file and the socket. Why the
heartbeats are authenticated and why this together with ``Membership.observe`` stops forged
and replayed ones: ``speaker.core.liveness`` (module docstring, "Authenticity and freshness").

Datagram: ``body || HMAC-SHA256(key, DOMAIN || body)``, the body being the JSON of
``Heartbeat.encode``. The MAC is checked before the body is parsed, so nothing an outsider
sends reaches the JSON parser. ``DOMAIN`` separates these MACs from anything else the same key
might ever sign.

Key file (the chart mounts its Secret there): one key per line; blank lines and lines starting
with ``#`` are ignored; surrounding whitespace is stripped. Heartbeats are signed with the
first key and accepted under any (rotation: docs/speaker.md). A key shorter than
``MIN_KEY_BYTES`` is refused: HMAC is only as strong as its key, and a short one is a typo or
a placeholder, never what the chart generates (64 random alphanumerics, ~380 bits).

Without a key file the speaker seals with ``INSECURE_KEY`` (empty): the wire format is the
same, replay rules still apply, but anyone can forge — the shell logs that at start.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from speaker.core.liveness import MAX_HEARTBEAT_BYTES, Heartbeat

DOMAIN = b"portico-heartbeat-v2\0"
MAC_BYTES = 32  # SHA-256
MIN_KEY_BYTES = 16  # 128 bits even for a key of random bytes; the chart's keys are 64 chars
INSECURE_KEY = b""

# Why a datagram was not taken (metric label ``reason``), in the order they are checked.
MALFORMED = "malformed"  # too short/long, or the body is not a heartbeat
UNAUTHENTICATED = "unauthenticated"  # no MAC, or a MAC under no key we hold
FOREIGN_ADDRESS = "foreign_address"  # authentic, but not from an address of the named node
STALE = "stale"  # outside the freshness window
REPLAYED = "replayed"  # not newer than what was accepted from that node
REASONS = (MALFORMED, UNAUTHENTICATED, FOREIGN_ADDRESS, STALE, REPLAYED)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, DOMAIN + body, hashlib.sha256).digest()


def seal(hb: Heartbeat, key: bytes) -> bytes:
    body = hb.encode()
    return body + _mac(key, body)


def open_sealed(data: bytes, keys: Sequence[bytes]) -> Heartbeat | str:
    """The heartbeat, or the reason (``MALFORMED`` / ``UNAUTHENTICATED``) it is refused."""
    if len(data) > MAX_HEARTBEAT_BYTES or len(data) <= MAC_BYTES:
        return MALFORMED
    body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    # compare_digest: the time taken must not tell an attacker how much of a guess matched.
    if not any(hmac.compare_digest(_mac(k, body), mac) for k in keys):
        return UNAUTHENTICATED
    hb = Heartbeat.decode(body)
    return MALFORMED if hb is None else hb


def key_id(key: bytes) -> str:
    """A short fingerprint for logs: lets an operator check that every speaker loaded the same
    keys without the key itself ever being logged (a separate domain: not a heartbeat MAC)."""
    return hashlib.sha256(b"portico-liveness-key-id\0" + key).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class KeyFile:
    keys: tuple[bytes, ...]  # signing key first; empty: nothing usable in the file
    problems: tuple[str, ...]  # per ignored line, without the line's content

    @property
    def ids(self) -> list[str]:
        return [key_id(k) for k in self.keys]


def parse_keys(data: bytes) -> KeyFile:
    keys: list[bytes] = []
    problems: list[str] = []
    for lineno, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if len(line) < MIN_KEY_BYTES:
            problems.append(f"line {lineno}: key shorter than {MIN_KEY_BYTES} bytes, ignored")
        elif line in keys:
            problems.append(f"line {lineno}: duplicate key, ignored")
        else:
            keys.append(line)
    return KeyFile(tuple(keys), tuple(problems))


@dataclass(slots=True)
class RateLimitedLog:
    """At most one log line per key (e.g. reason + source) every ``period`` seconds, with the
    number suppressed since the last one: a flood of forged datagrams must not become a flood
    of log lines (the metric still counts every one)."""

    period: float = 10.0
    _next: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)
    max_keys: int = 1024  # bounds memory under spoofed sources; beyond it keys share one slot

    def allow(self, key: str, now: float) -> int | None:
        """None: stay quiet. Otherwise log now, mentioning the returned number suppressed."""
        if key not in self._next and len(self._next) >= self.max_keys:
            key = "*"
        if now < self._next.get(key, float("-inf")):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._next[key] = now + self.period
        return self._suppressed.pop(key, 0)
