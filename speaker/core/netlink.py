"""rtnetlink link messages -> (interface, carrier) (pure: bytes in, values out).

The speaker listens to the kernel's RTMGRP_LINK multicast group on a raw NETLINK_ROUTE socket
(``speaker.health``) rather than polling ``/sys/class/net/*/carrier``: a carrier change arrives
as one message within microseconds of the driver noticing, and costs nothing meanwhile.
No dependency (pyroute2 is not one of ours) for a dozen lines of ``struct``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
RTATTR = struct.Struct("=HH")  # len, type
NLMSG_DONE, NLMSG_ERROR = 3, 2
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME = 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
RTMGRP_LINK = 0x1
AF_UNSPEC = 0


@dataclass(frozen=True, slots=True)
class LinkEvent:
    name: str
    index: int
    carrier: bool  # administratively up AND lower layer up (cable, peer veth)
    deleted: bool = False


def _align(n: int) -> int:
    return (n + 3) & ~3


def dump_request(seq: int = 1) -> bytes:
    """RTM_GETLINK dump: the kernel answers with one RTM_NEWLINK per interface."""
    body = IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), RTM_GETLINK,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse(data: bytes) -> tuple[list[LinkEvent], bool]:
    """Link events in one datagram, and whether it ended a dump (NLMSG_DONE). Malformed
    parts are skipped, never raised."""
    out: list[LinkEvent] = []
    done = False
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            break
        if mtype in (NLMSG_DONE, NLMSG_ERROR):
            done = True
        elif mtype in (RTM_NEWLINK, RTM_DELLINK):
            ev = _link(data[off + NLMSG_HDR.size: off + length], mtype == RTM_DELLINK)
            if ev is not None:
                out.append(ev)
        off += _align(length)
    return out, done


def _link(body: bytes, deleted: bool) -> LinkEvent | None:
    if len(body) < IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(body, 0)
    off = IFINFOMSG.size
    name = None
    while off + RTATTR.size <= len(body):
        alen, atype = RTATTR.unpack_from(body, off)
        if alen < RTATTR.size or off + alen > len(body):
            break
        if atype == IFLA_IFNAME:
            name = body[off + RTATTR.size: off + alen].split(b"\0", 1)[0].decode(
                "utf-8", "replace")
        off += _align(alen)
    if not name:
        return None
    carrier = bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP) and not deleted
    return LinkEvent(name, index, carrier, deleted)


def build_newlink(name: str, index: int, flags: int, mtype: int = RTM_NEWLINK) -> bytes:
    """One RTM_NEWLINK/RTM_DELLINK message (tests)."""
    raw = name.encode() + b"\0"
    attr = RTATTR.pack(RTATTR.size + len(raw), IFLA_IFNAME) + raw
    attr += b"\0" * (_align(len(attr)) - len(attr))
    body = IFINFOMSG.pack(AF_UNSPEC, 0, index, flags, 0) + attr
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), mtype, 0, 0, 0) + body
