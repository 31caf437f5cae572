"""Classic BPF programs for the layer-2 responder's AF_PACKET sockets (pure: bytes out).

The kernel runs the filter on every frame of the interface, so Python only wakes up for:

* ARP frames whose target or sender protocol address is one of our VIPs (requests to answer;
  replies / gratuitous ARP from other MACs for the duplicate detector),
* ICMPv6 Neighbor Solicitations / Advertisements whose target is one of our VIPs,

and never for frames we sent ourselves (packet type OUTGOING). With no VIP at all the program
accepts nothing. When the VIP list is too long for classic BPF's 8-bit relative jumps the
program falls back to matching the frame types only (Python then checks the addresses).

Offsets assume untagged Ethernet: ARP at 14 (oper 20, SPA 28, TPA 38); IPv6 at 14 (next header
20, no extension headers — NDP forbids none but senders do not add any), ICMPv6 at 54 (type
54, NS/NA target 62..77).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from common.api.model import IPAddress

# <linux/filter.h> opcodes
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
JEQ_K, JA = 0x15, 0x05
RET_K = 0x06
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE (ancillary load)
PACKET_OUTGOING = 4
ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD
ICMPV6, NS, NA = 58, 135, 136
ACCEPT_LEN = 0xFFFF
MAX_JUMP = 255  # jt/jf are u8
MAX_PRECISE_VIPS = 24  # beyond this, type-only filter (jump offsets would overflow)


@dataclass(frozen=True, slots=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return struct.pack("=HBBI", self.code, self.jt, self.jf, self.k)


class _Asm:
    """Tiny assembler: jumps name labels; resolved to relative offsets at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str | int, str | int, int] | str] = []

    def label(self, name: str) -> None:
        self.items.append(name)

    def op(self, code: int, k: int = 0, jt: str | int = 0, jf: str | int = 0) -> None:
        self.items.append((code, jt, jf, k))

    def assemble(self) -> list[Insn] | None:
        pos: dict[str, int] = {}
        n = 0
        for it in self.items:
            if isinstance(it, str):
                pos[it] = n
            else:
                n += 1
        out: list[Insn] = []
        for it in self.items:
            if isinstance(it, str):
                continue
            code, jt, jf, k = it
            here = len(out)

            def rel(target: str | int, here: int = here) -> int:
                return target if isinstance(target, int) else pos[target] - here - 1

            rjt, rjf = rel(jt), rel(jf)
            if code == JA:
                k, rjt, rjf = rel(jt), 0, 0
            if not (0 <= rjt <= MAX_JUMP and 0 <= rjf <= MAX_JUMP):
                return None
            out.append(Insn(code, rjt, rjf, k))
        return out


def _words(addr: IPAddress) -> list[int]:
    packed = addr.packed
    return [int.from_bytes(packed[i:i + 4], "big") for i in range(0, len(packed), 4)]


def responder_filter(vips: Iterable[IPAddress]) -> list[Insn]:
    """The filter for a responder socket owning ``vips`` (see module docstring)."""
    v4 = sorted({v for v in vips if isinstance(v, ipaddress.IPv4Address)})
    v6 = sorted({v for v in vips if isinstance(v, ipaddress.IPv6Address)})
    precise = len(v4) + len(v6) <= MAX_PRECISE_VIPS
    if precise:
        prog = _build(v4, v6, True)
        if prog is not None:
            return prog
    prog = _build(v4, v6, False)
    assert prog is not None  # the type-only program is short
    return prog


def _build(v4: list[ipaddress.IPv4Address], v6: list[ipaddress.IPv6Address],
           precise: bool) -> list[Insn] | None:
    a = _Asm()
    a.op(LD_W_ABS, SKF_AD_PKTTYPE)
    a.op(JEQ_K, PACKET_OUTGOING, "drop", 0)
    a.op(LD_H_ABS, 12)
    a.op(JEQ_K, ETH_P_ARP, "arp" if v4 else "drop", 0)
    a.op(JEQ_K, ETH_P_IPV6, "ip6" if v6 else "drop", "drop")
    if v4:
        a.label("arp")
        if not precise:
            a.op(JA, 0, "accept")
        else:
            for off in (38, 28):  # target, then sender protocol address
                a.op(LD_W_ABS, off)
                for vip in v4:
                    a.op(JEQ_K, _words(vip)[0], "accept", 0)
            a.op(JA, 0, "drop")
    if v6:
        a.label("ip6")
        a.op(LD_B_ABS, 20)
        a.op(JEQ_K, ICMPV6, 0, "drop")
        a.op(LD_B_ABS, 54)
        a.op(JEQ_K, NS, "nd", 0)
        a.op(JEQ_K, NA, "nd", "drop")
        a.label("nd")
        if not precise:
            a.op(JA, 0, "accept")
        else:
            for i, vip6 in enumerate(v6):
                nxt = f"v6next{i}"
                for j, word in enumerate(_words(vip6)):
                    a.op(LD_W_ABS, 62 + 4 * j)
                    a.op(JEQ_K, word, "accept" if j == 3 else 0, nxt)
                a.label(nxt)
            a.op(JA, 0, "drop")
    a.label("accept")
    a.op(RET_K, ACCEPT_LEN)
    a.label("drop")
    a.op(RET_K, 0)
    return a.assemble()


def run(prog: list[Insn], frame: bytes, pkttype: int = 0) -> int:
    """A minimal interpreter for the subset above (for unit tests): returns the accept length."""
    pc, acc = 0, 0
    while True:
        ins = prog[pc]
        if ins.code in (LD_W_ABS, LD_H_ABS, LD_B_ABS):
            if ins.k == SKF_AD_PKTTYPE:
                acc = pkttype
            else:
                size = {LD_W_ABS: 4, LD_H_ABS: 2, LD_B_ABS: 1}[ins.code]
                if ins.k + size > len(frame):
                    return 0  # the kernel aborts with 0 on out-of-bounds loads
                acc = int.from_bytes(frame[ins.k:ins.k + size], "big")
            pc += 1
        elif ins.code == JEQ_K:
            pc += 1 + (ins.jt if acc == ins.k else ins.jf)
        elif ins.code == JA:
            pc += 1 + ins.k
        elif ins.code == RET_K:
            return ins.k
        else:
            raise ValueError(f"unknown opcode {ins.code:#x}")
