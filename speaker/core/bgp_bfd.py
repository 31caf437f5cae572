"""BFD for BGP sessions: the FRR ``bfdd`` configuration for this node's sessions (pure).

exabgp has no BFD. When a BGPPeer has ``spec.bfd``, the speaker runs FRR's ``bfdd`` (Debian
package ``frr``) beside exabgp, standalone (no zebra, no bgpd: bfdd speaks RFC 5880/5881 on its
own sockets), with one ``peer`` per such session. The router runs BFD on its BGP neighbor
(FRR: ``neighbor X bfd``); when BFD goes down there it resets the BGP session and withdraws
the node's routes within the detection time (multiplier x interval: 300 ms x 3 by default,
100 ms x 3 measured here in 0.3-0.6 s) instead of the hold time.

Every value comes from the parsed model (addresses are ``ipaddress`` objects, timers bounded
integers), so nothing user-supplied reaches the file as free text.

Also here: which capabilities bfdd needs and the text that tells the user how to give them
(the Helm value ``speaker.bfd.enabled``), so that the ``BFDUnavailable`` Event names the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from common.api.model import BFD_CHART_VALUE
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


# --- what FRR bfdd needs from the speaker's container (measured, FRR 8.4.4, Debian 12) -------
#
# bfdd is run as the speaker's own user (``-u root -g frrvty``: uid 0, no setuid/setgroups,
# so no CAP_SETUID/SETGID) with every file under the speaker's state directory (no chown, no
# writable /var/run/frr, so no CAP_CHOWN and a read-only root filesystem is fine). What is
# left is bfdd's compiled-in capability list: at start it sets its permitted set to exactly
# NET_BIND_SERVICE, NET_RAW and SYS_ADMIN and exits ("privs_init: initial cap_set_proc
# failed") unless all three are in the set it was started with — a set can only shrink.
# (SYS_ADMIN is there for VRF network-namespace switching, NET_RAW for the echo socket.) bfdd
# keeps them permitted, not effective, and raises them only around the calls that need them.
BFDD_CAPABILITIES: tuple[str, ...] = ("NET_BIND_SERVICE", "NET_RAW", "SYS_ADMIN")
# <linux/capability.h> numbers (kernel ABI).
_CAP_NUMBERS = {"NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_ADMIN": 21}
# The Helm value that gives the speaker's container those capabilities.
CHART_VALUE = BFD_CHART_VALUE


def missing_capabilities(cap_mask: int) -> tuple[str, ...]:
    """The capabilities bfdd needs that ``cap_mask`` (a /proc status Cap* bit mask) lacks."""
    return tuple(c for c in BFDD_CAPABILITIES if not cap_mask >> _CAP_NUMBERS[c] & 1)


def capabilities_fix(missing: Iterable[str]) -> str:
    """The Event text for a speaker that cannot give bfdd its capabilities."""
    names = ", ".join(missing)
    return (f"bfdd needs the capabilities {', '.join(BFDD_CAPABILITIES)} and the speaker's "
            f"container lacks {names}: install or upgrade the Helm chart with "
            f"--set {CHART_VALUE} (it adds them to the speaker's container only)")


def missing_binary_fix(path: str) -> str:
    return (f"FRR bfdd is not installed ({path}): run the Portico image built from the "
            f"project's Dockerfile (it installs Debian's frr) and install the Helm chart "
            f"with --set {CHART_VALUE}")
