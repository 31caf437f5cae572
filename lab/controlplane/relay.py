"""A TCP relay in front of the real API server, for the faults a server cannot be asked for.

TLS passes through untouched (the serving certificate names the relay's address too), so
clients authenticate to the real kube-apiserver exactly as without the relay. The relay can
cut every open connection at once (``drop_all``: what a load balancer restart or a network
blip does to long-lived watches) and refuse new ones for a while (``refuse``). Faults inside
HTTP (5xx storms, 409 storms, slow responses) need the HTTP layer, which TLS hides here:
those stay with ``lab.emulator`` (see docs/testing.md).

The listening socket may be created inside a lab network namespace (``listen_ns``) while the
upstream connections are made from this process's own namespace: that is how lab nodes reach
a control plane that listens on loopback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

BUF = 65536


class Relay:
    def __init__(self, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0),
                 listen_ns: str | None = None) -> None:
        self.upstream = upstream
        self._listen = listen
        self._listen_ns = listen_ns
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._refusing = False
        self._closed = False
        self.accepted = 0
        self.dropped = 0
        self.sock: socket.socket | None = None

    def start(self) -> Relay:
        def bind() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(self._listen)
            s.listen(256)
            return s

        if self._listen_ns:
            from lab import netns

            self.sock = netns.run_in_netns(self._listen_ns, bind)
        else:
            self.sock = bind()
        threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True).start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"https://{host}:{port}"

    def _accept_loop(self) -> None:
        assert self.sock is not None
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            # The refusal check and the registration happen under one lock, which refuse()
            # and drop_all() take too: a connection accepted while a test switches to
            # refusing is either refused or registered in time to be cut, never kept alive
            # (a kept keep-alive connection would let a client reconnect through a cut).
            with self._lock:
                if self._refusing:
                    client.close()
                    continue
                self._conns.add(client)
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._close_pair(client)
                continue
            up.settimeout(None)
            with self._lock:
                if client not in self._conns:  # cut by drop_all() while connecting
                    cut = True
                else:
                    cut = False
                    self._conns.add(up)
                    self.accepted += 1
            if cut:
                self._close_pair(client, up)
                continue
            threading.Thread(target=self._pump, args=(client, up), daemon=True,
                             name="relay-pump").start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                if self._closed:
                    return
                for s in ready:
                    data = s.recv(BUF)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            self._close_pair(a, b)

    def _close_pair(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._conns.discard(s)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def drop_all(self) -> int:
        """Cut every open connection (both directions, abruptly); returns how many pairs."""
        with self._lock:
            conns = list(self._conns)
            # Forget them now: a pair still connecting upstream sees it was cut.
            self._conns.clear()
        self.dropped += len(conns) // 2
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        return len(conns) // 2

    def refuse(self, on: bool = True) -> None:
        with self._lock:
            self._refusing = on

    def stop(self) -> None:
        self._closed = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.drop_all()
