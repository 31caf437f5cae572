"""The CoreDNS stand-in the Gateway API suite's UDP backend runs as (lab.dnsstub)."""

from __future__ import annotations

import struct

from lab import dnsstub

# The suite's Corefile (conformance/base/manifests.yaml, ConfigMap coredns).
COREFILE = """\
.:53 {
    forward . 8.8.8.8 9.9.9.9
    log
    errors
}
foo.bar.com:53 {
  whoami
}
"""


def _query(name: str, qtype: int = dnsstub.TYPE_A, ident: int = 0x1234) -> bytes:
    labels = [x.encode() for x in name.rstrip(".").split(".")]
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + dnsstub._name(labels) + \
        struct.pack("!HH", qtype, dnsstub.CLASS_IN)


def test_corefile_whoami_zones_only_and_the_root_forward_is_not_served() -> None:
    assert dnsstub.parse_corefile(COREFILE) == {53: ["foo.bar.com."]}


def test_whoami_answers_with_the_clients_address_and_port() -> None:
    reply = dnsstub.answer(_query("foo.bar.com."), ["foo.bar.com."], ("192.0.2.7", 40000))
    assert reply is not None
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    assert (ident, flags & 0x800F, qd, an, ns, ar) == (0x1234, 0x8000, 1, 0, 0, 2)
    assert bytes([192, 0, 2, 7]) in reply
    assert struct.pack("!HHH", 0, 0, 40000) in reply  # SRV priority, weight, port


def test_ipv6_client_gets_aaaa() -> None:
    reply = dnsstub.answer(_query("foo.bar.com."), ["foo.bar.com."], ("2001:db8::5", 53000))
    assert reply is not None
    assert struct.pack("!HH", dnsstub.TYPE_AAAA, dnsstub.CLASS_IN) in reply


def test_other_names_are_refused_never_forwarded() -> None:
    reply = dnsstub.answer(_query("example.org."), ["foo.bar.com."], ("192.0.2.7", 1))
    assert reply is not None
    assert struct.unpack("!H", reply[2:4])[0] & 0x000F == dnsstub.RCODE_REFUSED


def test_garbage_gets_formerr_or_nothing() -> None:
    assert dnsstub.answer(b"\x00\x01", ["."], ("192.0.2.7", 1)) is None
    bad = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab"
    reply = dnsstub.answer(bad, ["."], ("192.0.2.7", 1))
    assert reply is not None and reply[3] & 0x0F == dnsstub.RCODE_FORMERR
