"""exabgp API helper process: relays exabgp's API pipe to the speaker's Unix socket.

exabgp talks to "processes" it starts itself, over their stdin/stdout. The speaker is
exabgp's parent, not its API process, so exabgp runs this relay, which connects to the socket
the speaker listens on and copies bytes both ways. Standalone (stdlib only, run by path) so it
starts fast and does not import the speaker. Exits when either side closes; exabgp is run with
``api.terminate`` so it exits too and the speaker's supervisor restarts the pair cleanly.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT_S = 10.0  # the speaker listens before it starts exabgp; this is slack only


def _pump(src: int, dst_write: object) -> None:
    write = dst_write  # callable taking bytes
    while True:
        try:
            data = os.read(src, 65536)
        except OSError:
            data = b""
        if not data:
            break
        try:
            write(data)  # type: ignore[operator]
        except OSError:
            break
    os._exit(0)


def main() -> None:
    path = sys.argv[1]
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            sock.connect(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(2)
            time.sleep(0.05)

    def to_stdout(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(1, view)
            view = view[n:]

    # exabgp -> speaker: acks and events (must always flow, or exabgp wedges)
    threading.Thread(target=_pump, args=(0, sock.sendall), daemon=True).start()
    # speaker -> exabgp: commands
    _pump(sock.fileno(), to_stdout)


if __name__ == "__main__":
    main()
