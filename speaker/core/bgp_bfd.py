"""BFD for BGP sessions: the FRR ``bfdd`` configuration for this node's sessions (pure).

exabgp has no BFD. When a BGPPeer has ``spec.bfd``, the speaker runs FRR's ``bfdd`` (Debian
package ``frr``) beside exabgp, standalone (no zebra, no bgpd: bfdd speaks RFC 5880/5881 on its
own sockets), with one ``peer`` per such session. The router runs BFD on its BGP neighbor
(FRR: ``neighbor X bfd``); when BFD goes down there it resets the BGP session and withdraws
the node's routes within the detection time (multiplier x interval: 300 ms x 3 by default,
100 ms x 3 measured here in 0.3-0.6 s) instead of the hold time.

Every value comes from the parsed model (addresses are ``ipaddress`` objects, timers bounded
integers), so nothing user-supplied reaches the file as free text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from speaker.core.bgp import Session


def bfd_sessions(sessions: Iterable[Session]) -> list[Session]:
    return sorted((s for s in sessions if s.bfd is not None), key=lambda s: s.neighbor)


def render_bfdd_config(sessions: Iterable[Session], hostname: str = "portico-bfdd") -> str | None:
    """The bfdd configuration, or None when no session asks for BFD (bfdd is not run)."""
    wanted = bfd_sessions(sessions)
    if not wanted:
        return None
    lines = [f"hostname {hostname}", "log stdout informational", "bfd"]
    for s in wanted:
        b = s.bfd
        assert b is not None
        peer = ipaddress.ip_address(s.neighbor)
        local = ipaddress.ip_address(s.local_address)
        hop = " multihop" if s.multihop else ""
        lines.append(f" peer {peer.compressed}{hop} local-address {local.compressed}")
        lines.append(f"  receive-interval {int(b.receive_interval)}")
        lines.append(f"  transmit-interval {int(b.transmit_interval)}")
        lines.append(f"  detect-multiplier {int(b.detect_multiplier)}")
        if s.multihop:
            lines.append(f"  minimum-ttl {int(b.minimum_ttl)}")
        if b.passive_mode:
            lines.append("  passive-mode")
        lines.append(" exit")
    lines.append("exit")
    return "\n".join(lines) + "\n"
