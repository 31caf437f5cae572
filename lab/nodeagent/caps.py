"""Linux capability names and numbers (``<linux/capability.h>``), and the default set a
container runtime grants.

Stdlib-free on purpose: the launcher (``lab.nodeagent.launch``) imports it in the short-lived
process that becomes the container, before exec.
"""

from __future__ import annotations

# <linux/capability.h>, up to CAP_CHECKPOINT_RESTORE (Linux 5.9). Numbers are the kernel ABI.
NUMBERS: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4,
    "KILL": 5, "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13,
    "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18,
    "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28,
    "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36, "AUDIT_READ": 37,
    "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

# What containerd and CRI-O grant a non-privileged container when the pod asks for nothing
# (containerd's oci.DefaultCapabilities / CRI-O's default_capabilities): the set that
# securityContext.capabilities drop/add is applied to.
RUNTIME_DEFAULT: frozenset[str] = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})


def normalize(name: str) -> str:
    """``net_raw``, ``CAP_NET_RAW`` and ``NET_RAW`` are the same capability to Kubernetes."""
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper
