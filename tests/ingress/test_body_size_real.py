"""proxy-body-size through real HAProxy: Content-Length and chunked bodies.

What happens to a request of a backend with limit L (ingress/core/render.py, BUFFERED_BODY):
Content-Length > L is a 413 at once; a body without Content-Length is held until L + 1
bytes (or all of it) are in when that fits the request buffer (L < 12 KiB) and then answered
413; every other body is counted as it streams and the transaction is aborted the moment it
passes L (the backend never receives a complete request; the client sees the connection
close).
"""

from __future__ import annotations

import http.client
import time

import pytest

from lab.ingress_kit import Backends, Harness, ingress, path, rule

pytestmark = pytest.mark.lab
N = "nginx.ingress.kubernetes.io/"
P = "ingress.portico.dev/"


def _post(hx: Harness, host: str, size: int, chunked: bool,
          headers: dict[str, str] | None = None) -> int | None:
    """Status of a POST of ``size`` bytes, None if the proxy closed without answering."""
    try:
        return hx.get(host, "/", method="POST", body=b"x" * size, chunked=chunked,
                      headers=headers).status
    except (OSError, http.client.HTTPException):
        return None


def test_chunked_bodies_over_a_buffered_limit_get_413(hx: Harness, backends: Backends) -> None:
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("small", [rule("small.example.com", path("/", "Prefix", "svc-a"))],
                         annotations={N + "proxy-body-size": "1k"}))
    res = hx.sync()
    assert not [e for e in res.events if e.type == "Warning"], res.events
    seen = backends["A"].server.bodies
    r = hx.get("small.example.com", "/", method="POST", body=b"x" * 1024, chunked=True)
    assert r.status == 200 and r.json()["body_len"] == 1024
    assert r.seen_headers().get("transfer-encoding") == "chunked"
    for size in (1025, 4096):
        assert _post(hx, "small.example.com", size, chunked=True) == 413, size
        assert _post(hx, "small.example.com", size, chunked=False) == 413, size
    # http.client reads the answer only after sending everything: with 200 kB still to
    # send it may see the connection closed after the 413 instead of the 413 itself.
    assert _post(hx, "small.example.com", 200_000, chunked=True) in (413, None)
    # Headers that fill most of the buffer: the wait ends with less than the limit in it,
    # and the streaming count cuts the body off instead.
    pad = {f"X-Pad-{i}": "p" * 1500 for i in range(10)}
    for size in (1025, 5000):
        assert _post(hx, "small.example.com", size, chunked=True, headers=pad) in (413, None)
    assert seen == [1024]  # nothing over the limit reached the backend
    r = hx.get("small.example.com", "/", method="POST", body=b"x" * 1000, chunked=True,
               headers=pad)
    assert r.status == 200 and r.json()["body_len"] == 1000
    assert hx.get("small.example.com", "/", method="POST", body=b"x" * 900).json()[
        "body_len"] == 900
    assert seen == [1024, 1000, 900]
    started = time.monotonic()
    assert hx.get("small.example.com", "/").name == "A"  # no body: no wait
    assert time.monotonic() - started < 2


def test_chunked_bodies_over_a_limit_beyond_the_buffer_are_cut_off(
    hx: Harness, backends: Backends
) -> None:
    limit = 64 * 1024  # four times HAProxy's request buffer
    hx.world.backend_service("svc-a", [backends["A"]])
    hx.world.add(ingress("big", [rule("big.example.com", path("/", "Prefix", "svc-a"))],
                         annotations={P + "proxy-body-size": "64k"}))
    hx.sync()
    seen = backends["A"].server.bodies
    for size in (50_000, limit):
        r = hx.get("big.example.com", "/", method="POST", body=b"x" * size, chunked=True)
        assert r.status == 200 and r.json()["body_len"] == size
    assert _post(hx, "big.example.com", limit + 1, chunked=False) == 413
    for size in (limit + 1, 3 * limit):
        assert _post(hx, "big.example.com", size, chunked=True) is None, size
    assert seen == [50_000, limit]  # no over-limit body ever arrived complete
    assert hx.get("big.example.com", "/").name == "A"  # the proxy itself is fine
