"""The responder's BPF program, run through a small interpreter on real frames."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether

from speaker.core.bpf import MAX_PRECISE_VIPS, PACKET_OUTGOING, responder_filter, run

V1, V2 = ipaddress.ip_address("192.0.2.200"), ipaddress.ip_address("192.0.2.201")
V6 = ipaddress.ip_address("2001:db8::1:5")


def arp(op: int, psrc: str, pdst: str) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=op, psrc=psrc, pdst=pdst))


def nd(kind: type, tgt: str) -> bytes:
    return bytes(Ether() / IPv6(src="2001:db8::9", dst="ff02::1:ff01:5") / kind(tgt=tgt))


def test_precise_filter_accepts_only_our_vips() -> None:
    prog = responder_filter([V1, V6])
    assert run(prog, arp(1, "192.0.2.9", "192.0.2.200"))
    assert run(prog, arp(2, "192.0.2.200", "192.0.2.9"))  # somebody else claims our VIP
    assert not run(prog, arp(1, "192.0.2.9", "192.0.2.201"))
    assert run(prog, nd(ICMPv6ND_NS, "2001:db8::1:5"))
    assert run(prog, nd(ICMPv6ND_NA, "2001:db8::1:5"))
    assert not run(prog, nd(ICMPv6ND_NS, "2001:db8::1:6"))
    assert not run(prog, bytes(Ether() / IP(dst="192.0.2.200") / UDP()))
    assert not run(prog, arp(1, "192.0.2.9", "192.0.2.200"), pkttype=PACKET_OUTGOING)
    assert not run(prog, b"\x00" * 20)  # short frame: out-of-bounds load drops it


def test_no_vips_accepts_nothing() -> None:
    prog = responder_filter([])
    assert not run(prog, arp(1, "192.0.2.9", "192.0.2.200"))
    assert not run(prog, nd(ICMPv6ND_NS, "2001:db8::1:5"))


def test_many_vips_fall_back_to_type_filter() -> None:
    many = [ipaddress.ip_address(f"192.0.2.{i}") for i in range(MAX_PRECISE_VIPS + 10)]
    many.append(V6)
    prog = responder_filter(many)
    assert len(prog) < 20
    assert run(prog, arp(1, "192.0.2.9", "192.0.2.250"))  # Python filters the rest
    assert run(prog, nd(ICMPv6ND_NS, "2001:db8::1:6"))
    assert not run(prog, bytes(Ether() / IP(dst="192.0.2.200") / UDP()))


def test_program_packs_to_kernel_layout() -> None:
    prog = responder_filter([V1, V2, V6])
    assert all(len(i.pack()) == 8 for i in prog)
    assert all(0 <= i.jt <= 255 and 0 <= i.jf <= 255 for i in prog)
