"""Client-side probes, run inside the client namespace (see ``netns.run_in_netns``).

``resolve`` asks "who has VIP?" by ARP or NDP from a made-up sender (so the client kernel's
neighbour table is untouched) and returns every MAC that answered — two MACs means two
speakers think they own the VIP. ``http_get`` fetches through the kernel like any client.
"""

from __future__ import annotations

import http.client
import ipaddress
import select
import socket
import time

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def arp_request(src_mac: str, src_ip: str, target: str) -> bytes:
    from scapy.layers.l2 import ARP, Ether

    return bytes(Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=src_mac, psrc=src_ip, hwdst="00:00:00:00:00:00", pdst=target))


def neighbor_solicitation(src_mac: str, src_ip: str, target: str) -> bytes:
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils6 import in6_getnsma, in6_getnsmac

    tgt = socket.inet_pton(socket.AF_INET6, target)
    group = socket.inet_ntop(socket.AF_INET6, in6_getnsma(tgt))
    return bytes(Ether(src=src_mac, dst=in6_getnsmac(in6_getnsma(tgt)))
                 / IPv6(src=src_ip, dst=group, hlim=255)
                 / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=src_mac))


def parse_answer(frame: bytes, target: str) -> str | None:
    """The answering MAC if ``frame`` is an ARP reply / NA for ``target``, else None."""
    if len(frame) < 42:
        return None
    etype = int.from_bytes(frame[12:14], "big")
    addr = ipaddress.ip_address(target)
    if etype == ETH_P_ARP and addr.version == 4:
        op = int.from_bytes(frame[20:22], "big")
        if op == 2 and frame[28:32] == addr.packed:
            return _mac_str(frame[22:28])
    elif (etype == ETH_P_IPV6 and addr.version == 6 and len(frame) >= 78
          and frame[20] == 58 and frame[54] == 136 and frame[62:78] == addr.packed):
        return _mac_str(frame[6:12])
    return None


def resolve(iface: str, src_mac: str, src_ip: str, target: str, timeout: float = 0.5,
            tries: int = 2) -> set[str]:
    v6 = ipaddress.ip_address(target).version == 6
    proto = ETH_P_IPV6 if v6 else ETH_P_ARP
    frame = (neighbor_solicitation if v6 else arp_request)(src_mac, src_ip, target)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    answers: set[str] = set()
    try:
        sock.bind((iface, proto))
        for _ in range(tries):
            sock.send(frame)
            deadline = time.monotonic() + timeout / tries
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                data, addr = sock.recvfrom(2048)
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                mac = parse_answer(data, target)
                if mac:
                    answers.add(mac)
    finally:
        sock.close()
    return answers


def http_get(host: str, port: int = 80, timeout: float = 2.0) -> str | None:
    """Body of GET / or None on any failure (connection refused, timeout, ...)."""
    conn = http.client.HTTPConnection(host, port,
                                      timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.read().decode(errors="replace") if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()
