"""ingress-nginx's ``tcp-services`` ConfigMap, for people migrating (pure).

Format (ingress-nginx's, kept as is so the ConfigMap moves over unedited)::

    data:
      "5432": "db/postgres:5432"              # port -> namespace/service:port
      "6379": "cache/redis:6379:PROXY"        # accept PROXY protocol from the client side
      "8883": "mqtt/broker:8883::PROXY"       # send PROXY protocol to the Service's pods
      "9000": "ns/svc:9000:PROXY:PROXY"       # both

Each entry becomes a ``mode tcp`` frontend of HAProxy on a pod port (the entry's port, or
10000 + port below 1024 so HAProxy needs no privilege; the chart's ``ingress.tcp`` value
creates the ConfigMap and the Service ports with the same rule). Bytes pass through
untouched; endpoints change at run time like every other backend. A bad entry is reported
(Event on the ConfigMap naming the key) and skipped; the others are served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.api.model import ObjectRef
from ingress.core.annotations import Annotations
from ingress.core.filters import Filters
from ingress.core.model import Backend, Event, backend_name
from ingress.core.render import cfg_addr, cfg_name
from ingress.core.validate import name_problem

_VALUE = re.compile(r"(?P<ns>[^/:]+)/(?P<svc>[^/:]+):(?P<port>[^:]+)"
                    r"(?::(?P<decode>PROXY)?)?(?::(?P<encode>PROXY)?)?")
PRIVILEGED = 1024
PORT_OFFSET = 10000


@dataclass(frozen=True, slots=True)
class TcpService:
    port: int  # the port clients use (the Service port)
    pod_port: int  # where HAProxy listens
    backend: str
    accept_proxy: bool


def pod_port(port: int) -> int:
    return port + PORT_OFFSET if port < PRIVILEGED else port


def parse(cm: Mapping[str, Any] | None, reserved: frozenset[int] = frozenset()) -> tuple[
        list[TcpService], dict[str, Backend], list[Event]]:
    """(listeners, backends, problems) of a tcp-services ConfigMap (None: no ConfigMap)."""
    if cm is None:
        return [], {}, []
    meta = cm.get("metadata") or {}
    ref = ObjectRef("ConfigMap", str(meta.get("name", "")), str(meta.get("namespace", "")))
    out: list[TcpService] = []
    backends: dict[str, Backend] = {}
    events: list[Event] = []

    def bad(key: str, why: str) -> None:
        events.append(Event(ref, "Warning", "InvalidTCPService",
                            f"data[{key[:20]!r}]: {why}; this entry is not served"))

    for key, value in sorted((cm.get("data") or {}).items()):
        if not re.fullmatch(r"[0-9]{1,5}", str(key)) or not 0 < int(key) < 65536:
            bad(str(key), "the key must be a port number (1-65535)")
            continue
        port = int(key)
        if pod_port(port) in reserved or pod_port(port) >= 65536:
            bad(str(key), f"pod port {pod_port(port)} is used by the ingress itself")
            continue
        m = _VALUE.fullmatch(str(value).strip())
        if m is None:
            bad(str(key), "the value must be namespace/service:port[:PROXY][:PROXY]")
            continue
        ns, svc = m["ns"], m["svc"]
        problem = name_problem(ns) or name_problem(svc)
        if problem:
            bad(str(key), f"Service {ns[:63]}/{svc[:63]}: {problem}")
            continue
        svc_port: int | str = int(m["port"]) if m["port"].isdigit() else m["port"]
        if isinstance(svc_port, str) and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?",
                                                          svc_port):
            bad(str(key), f"Service port {svc_port[:20]!r} is not a number or port name")
            continue
        flt = Filters(mode="tcp", send_proxy=m["encode"] == "PROXY")
        name = backend_name(ns, svc, svc_port, "tcp:" + repr(flt))
        backends[name] = Backend(name, ns, svc, svc_port, Annotations(), False, None, gw=flt)
        out.append(TcpService(port, pod_port(port), name, m["decode"] == "PROXY"))
    return out, backends, events


def frontend_lines(services: list[TcpService], bind_addresses: tuple[str, ...],
                   owner: ObjectRef | None = None) -> list[tuple[str, ObjectRef | None]]:
    lines: list[tuple[str, ObjectRef | None]] = []
    for ts in services:
        lines.append((f"frontend tcp_{ts.port}", owner))
        lines.append(("    mode tcp", None))
        proxy = " accept-proxy" if ts.accept_proxy else ""
        for addr in bind_addresses:
            v6 = " v6only" if ":" in addr else ""
            lines.append((f"    bind {cfg_addr(addr, ts.pod_port)}{v6}{proxy}", owner))
        lines.append((f"    default_backend {cfg_name(ts.backend)}", owner))
    return lines
