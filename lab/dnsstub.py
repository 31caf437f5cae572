"""A stand-in for the CoreDNS image (registry.k8s.io/coredns/coredns) as the Gateway API
conformance suite runs it: ``coredns -conf FILE`` with a Corefile of server blocks, the UDP
backend of its UDPRoute tests. The node agent's image table (``lab/nodeagent/images.py``)
runs it for that image.

    -conf FILE   the Corefile (default ``Corefile``); ``-dns.port N`` the default port (53)

What it serves, on UDP only: a zone whose block holds ``whoami`` answers as CoreDNS's whoami
plugin does (NOERROR, empty answer; in the additional section an A/AAAA record of the
client's address and an SRV record of its port under ``_udp.<name>``). Every other name is
answered REFUSED: ``forward`` is never followed, so nothing leaves the lab (the suite's
Corefile forwards the root zone to public resolvers). Standard library only; the message
building is pure (``answer``), the socket loop is ``serve``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import sys

DEFAULT_PORT = 53
TYPE_A, TYPE_AAAA, TYPE_SRV, CLASS_IN = 1, 28, 33, 1
RCODE_FORMERR, RCODE_REFUSED = 1, 5
WHOAMI_TTL = 0  # CoreDNS's whoami answers with TTL 0


def parse_corefile(text: str, default_port: int = DEFAULT_PORT) -> dict[int, list[str]]:
    """Port -> the zones (lower case, ending in a dot) whose block has ``whoami``."""
    out: dict[int, list[str]] = {}
    text = re.sub(r"#[^\n]*", "", text)
    for m in re.finditer(r"([^{}]+?)\{([^{}]*)\}", text):
        keys, body = m.group(1).split(), m.group(2)
        plugins = {line.split()[0] for line in body.splitlines() if line.split()}
        for key in keys:
            key = re.sub(r"^(dns|udp)://", "", key)
            zone, _, port = key.rpartition(":") if ":" in key else (key, "", "")
            zone = zone.lower().rstrip(".") + "."
            p = int(port) if port else default_port
            out.setdefault(p, [])
            if "whoami" in plugins:
                out[p].append(zone)
    return out


def _name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


def _question(msg: bytes) -> tuple[list[bytes], int, int, int] | None:
    """(labels, qtype, qclass, end offset) of the first question; no compression expected."""
    i, labels = 12, list[bytes]()
    while i < len(msg):
        n = msg[i]
        if n == 0:
            if i + 5 > len(msg):
                return None
            qtype, qclass = struct.unpack("!HH", msg[i + 1:i + 5])
            return labels, qtype, qclass, i + 5
        if n & 0xC0 or i + 1 + n > len(msg):
            return None
        labels.append(msg[i + 1:i + 1 + n])
        i += 1 + n
    return None


def in_zone(name: str, zone: str) -> bool:
    return zone == "." or name == zone or name.endswith("." + zone)


def answer(query: bytes, zones: list[str], client: tuple[str, int]) -> bytes | None:
    """The reply to one query datagram (None: not even a header to answer)."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:  # a response, not a query
        return None
    rd = flags & 0x0100
    q = _question(query) if qdcount == 1 else None
    if q is None:
        return struct.pack("!HHHHHH", ident, 0x8000 | rd | RCODE_FORMERR, 0, 0, 0, 0)
    labels, _qtype, _qclass, end = q  # whoami answers every type alike
    question = query[12:end]
    name = (b".".join(labels).decode("ascii", "replace").lower() + ".") if labels else "."
    if not any(in_zone(name, z) for z in zones):
        return struct.pack("!HHHHHH", ident, 0x8000 | rd | RCODE_REFUSED, 1, 0, 0, 0) + question
    addr = ipaddress.ip_address(client[0].split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    rtype = TYPE_A if addr.version == 4 else TYPE_AAAA
    owner = _name(labels)
    extra = owner + struct.pack("!HHIH", rtype, CLASS_IN, WHOAMI_TTL, len(addr.packed))
    extra += addr.packed
    target = _name(labels)
    srv = struct.pack("!HHH", 0, 0, client[1]) + target
    extra += _name([b"_udp", *labels]) + struct.pack("!HHIH", TYPE_SRV, CLASS_IN, WHOAMI_TTL,
                                                     len(srv)) + srv
    # QR + AA, RD copied, NOERROR: one question, no answer, two additional records.
    return struct.pack("!HHHHHH", ident, 0x8400 | rd, 1, 0, 0, 2) + question + extra


def serve(port: int, zones: list[str]) -> None:
    try:  # both families where the pod has IPv6, else IPv4 alone
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
    print(f"dnsstub: UDP :{port}, whoami zones {zones or 'none'}; everything else REFUSED",
          flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        reply = answer(data, zones, (peer[0], peer[1]))
        if reply is not None:
            print(f"dnsstub: {peer[0]}:{peer[1]} {len(data)} B", flush=True)
            sock.sendto(reply, peer)


def main(argv: list[str]) -> int:
    conf, port = "Corefile", DEFAULT_PORT
    i = 0
    while i < len(argv):
        word = argv[i].lstrip("-")
        name, eq, value = word.partition("=")
        if name in ("conf", "dns.port"):
            if not eq:
                i += 1
                if i >= len(argv):
                    print(f"flag needs an argument: -{name}", file=sys.stderr)
                    return 2
                value = argv[i]
            if name == "conf":
                conf = value
            else:
                port = int(value)
        else:
            print(f"dnsstub: flag -{name} is not implemented (-conf, -dns.port are)",
                  file=sys.stderr)
            return 2
        i += 1
    with open(conf) as f:
        blocks = parse_corefile(f.read(), port)
    if len(blocks) != 1:
        print(f"dnsstub: one port only, the Corefile has {sorted(blocks)}", file=sys.stderr)
        return 2
    (p, zones), = blocks.items()
    try:
        serve(p, zones)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
