"""Probe specs and the per-probe result state machine (pure: data in, data out).

The semantics are the kubelet's prober worker (``pkg/kubelet/prober/worker.go``):

- a readiness probe starts as failure (not ready), a liveness probe as success, a startup
  probe as unknown;
- nothing is probed before ``initialDelaySeconds`` after the container started, then every
  ``periodSeconds``; a probe that takes longer than ``timeoutSeconds`` failed;
- the reported result changes only after ``successThreshold`` consecutive successes or
  ``failureThreshold`` consecutive failures;
- liveness and readiness wait until the startup probe succeeded (if there is one), and the
  startup probe stops then;
- a liveness or startup result of failure kills the container (the restart policy decides
  what comes next). A restarted container starts with fresh probe state.

Times are the caller's monotonic seconds: no clock in here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

STARTUP, LIVENESS, READINESS = "startup", "liveness", "readiness"
KINDS = (STARTUP, LIVENESS, READINESS)
SPEC_KEYS = {STARTUP: "startupProbe", LIVENESS: "livenessProbe", READINESS: "readinessProbe"}
# The API server's defaults (it fills them in on create; these cover objects that lack them).
DEFAULT_PERIOD, DEFAULT_TIMEOUT, DEFAULT_FAILURES = 10, 1, 3


@dataclass(frozen=True)
class HttpGet:
    scheme: str  # HTTP or HTTPS (certificates are not verified, as the kubelet does)
    host: str  # "" = the pod's IP
    port: int | str  # a number, or the name of a container port
    path: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TcpSocket:
    host: str
    port: int | str


@dataclass(frozen=True)
class Exec:
    command: tuple[str, ...]


@dataclass(frozen=True)
class Unsupported:
    what: str  # e.g. grpc


Action = HttpGet | TcpSocket | Exec | Unsupported


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    action: Action
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int
    termination_grace: int | None  # probe-level terminationGracePeriodSeconds


def _int(d: dict[str, Any], key: str, default: int) -> int:
    v = d.get(key)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else default


def parse(kind: str, probe: Any) -> ProbeSpec | None:
    if not isinstance(probe, dict):
        return None
    action: Action
    if isinstance(probe.get("httpGet"), dict):
        h = probe["httpGet"]
        action = HttpGet(str(h.get("scheme") or "HTTP").upper(), str(h.get("host") or ""),
                         h.get("port", 80), str(h.get("path") or "/"),
                         tuple((str(x.get("name", "")), str(x.get("value", "")))
                               for x in h.get("httpHeaders") or [] if isinstance(x, dict)))
    elif isinstance(probe.get("tcpSocket"), dict):
        t = probe["tcpSocket"]
        action = TcpSocket(str(t.get("host") or ""), t.get("port", 0))
    elif isinstance(probe.get("exec"), dict):
        action = Exec(tuple(str(w) for w in probe["exec"].get("command") or []))
    else:
        action = Unsupported(next((k for k in ("grpc",) if k in probe), "no handler"))
    # Startup and liveness probes must have successThreshold 1 (API validation).
    success = 1 if kind != READINESS else max(1, _int(probe, "successThreshold", 1))
    grace = probe.get("terminationGracePeriodSeconds")
    return ProbeSpec(kind, action,
                     initial_delay=float(_int(probe, "initialDelaySeconds", 0)),
                     period=float(max(1, _int(probe, "periodSeconds", DEFAULT_PERIOD))),
                     timeout=float(max(1, _int(probe, "timeoutSeconds", DEFAULT_TIMEOUT))),
                     success_threshold=success,
                     failure_threshold=max(1, _int(probe, "failureThreshold",
                                                   DEFAULT_FAILURES)),
                     termination_grace=int(grace) if isinstance(grace, int) else None)


def container_probes(container: dict[str, Any]) -> dict[str, ProbeSpec]:
    out: dict[str, ProbeSpec] = {}
    for kind in KINDS:
        spec = parse(kind, container.get(SPEC_KEYS[kind]))
        if spec is not None:
            out[kind] = spec
    return out


def port_number(port: int | str, container: dict[str, Any]) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for p in container.get("ports") or []:
        if isinstance(p, dict) and p.get("name") == text and isinstance(p.get("containerPort"),
                                                                        int):
            return int(p["containerPort"])
    return None


@dataclass(frozen=True)
class ProbeState:
    result: bool | None  # what the prober reports now (None: unknown)
    next_due: float  # monotonic seconds
    last: bool | None = None  # the last single outcome
    run: int = 0  # how many times in a row ``last`` came out
    in_flight: bool = False
    message: str = ""  # the last failure's explanation (for the Unhealthy event)


def initial(spec: ProbeSpec, started: float) -> ProbeState:
    result = {READINESS: False, LIVENESS: True, STARTUP: None}[spec.kind]
    return ProbeState(result=result, next_due=started + spec.initial_delay)


def due(state: ProbeState, now: float) -> bool:
    return not state.in_flight and now >= state.next_due


def begin(state: ProbeState) -> ProbeState:
    return replace(state, in_flight=True)


def record(spec: ProbeSpec, state: ProbeState, ok: bool, now: float,
           message: str = "") -> ProbeState:
    """One probe outcome: the reported result moves only when a threshold is met."""
    run = state.run + 1 if state.last == ok else 1
    threshold = spec.success_threshold if ok else spec.failure_threshold
    result = ok if run >= threshold else state.result
    return ProbeState(result=result, next_due=now + spec.period, last=ok, run=run,
                      in_flight=False, message="" if ok else message)


@dataclass(frozen=True)
class Verdict:
    started: bool  # the startup probe passed (or there is none)
    ready: bool  # counts toward the pod's Ready condition
    kill: str | None  # why the container must be killed (a probe failed), else None


def verdict(specs: dict[str, ProbeSpec], states: dict[str, ProbeState],
            running: bool) -> Verdict:
    """What a running container's probe results mean for its status and its life."""
    if not running:
        return Verdict(started=False, ready=False, kill=None)
    startup = states.get(STARTUP)
    started = STARTUP not in specs or (startup is not None and startup.result is True)
    if startup is not None and startup.result is False:
        return Verdict(started=False, ready=False, kill="Startup probe failed")
    live = states.get(LIVENESS)
    if started and live is not None and live.result is False:
        return Verdict(started=True, ready=False, kill="Liveness probe failed")
    readiness = states.get(READINESS)
    ready = started and (READINESS not in specs
                         or (readiness is not None and readiness.result is True))
    return Verdict(started=started, ready=ready, kill=None)


def active(kind: str, started: bool) -> bool:
    """Which probes run: startup until it passed, the others after."""
    return not started if kind == STARTUP else started
