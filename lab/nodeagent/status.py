"""Container states -> the pod's status, and the patch that writes only what changed (pure).

Phase and conditions follow the kubelet (``pkg/kubelet/kubelet_pods.go`` getPhase,
``pkg/kubelet/status/generate.go``): a container waiting without ever having run keeps the
pod Pending; all started and one running is Running; all stopped is Succeeded/Failed unless
the restart policy restarts them. ``PodScheduled`` is True as the kubelet writes it too (a
pod bound with ``spec.nodeName`` never met the scheduler); conditions merge by type in the
strategic merge patch, so conditions of others (readiness gates) stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.nodeagent.lifecycle import ALWAYS, NEVER

Obj = dict[str, Any]

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL = (SUCCEEDED, FAILED)
SANDBOX, INITIALIZED = "PodReadyToStartContainers", "Initialized"
CONTAINERS_READY, READY, SCHEDULED = "ContainersReady", "Ready", "PodScheduled"
OWNED_CONDITIONS = (SANDBOX, INITIALIZED, CONTAINERS_READY, READY, SCHEDULED)
# The container status keys the agent writes; the comparison looks at these only.
CONTAINER_KEYS = ("name", "image", "imageID", "containerID", "ready", "started",
                  "restartCount", "state", "lastState")
OWNED_FIELDS = ("phase", "hostIP", "hostIPs", "podIP", "podIPs", "startTime",
                "containerStatuses")


def running(started_at: str) -> Obj:
    return {"running": {"startedAt": started_at}}


def waiting(reason: str, message: str = "") -> Obj:
    body = {"reason": reason}
    if message:
        body["message"] = message
    return {"waiting": body}


def terminated(exit_code: int, reason: str, started_at: str | None, finished_at: str,
               container_id: str, signal: int | None = None, message: str = "") -> Obj:
    body: Obj = {"exitCode": exit_code, "reason": reason, "finishedAt": finished_at,
                 "containerID": container_id}
    if started_at:
        body["startedAt"] = started_at
    if signal:
        body["signal"] = signal
    if message:
        body["message"] = message
    return {"terminated": body}


@dataclass(frozen=True)
class ContainerView:
    name: str
    image: str
    state: Obj  # one of running/waiting/terminated (helpers above)
    last_state: Obj  # {} or {"terminated": ...}
    ready: bool
    started: bool
    restart_count: int
    container_id: str = ""
    image_id: str = ""

    def as_status(self) -> Obj:
        out: Obj = {"name": self.name, "image": self.image, "imageID": self.image_id,
                    "ready": self.ready, "started": self.started,
                    "restartCount": self.restart_count, "state": self.state,
                    "lastState": self.last_state}
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def phase(restart_policy: str, views: list[ContainerView], terminal: bool) -> str:
    """getPhase for pods without init containers; ``terminal``: the pod is being deleted and
    its containers will not restart."""
    running_n = waiting_n = stopped = succeeded = 0
    for v in views:
        if "running" in v.state:
            running_n += 1
        elif "terminated" in v.state:
            stopped += 1
            succeeded += int(v.state["terminated"].get("exitCode") == 0)
        elif "terminated" in v.last_state:
            stopped += 1  # waiting to restart
        else:
            waiting_n += 1
    if waiting_n:
        return PENDING
    if running_n:
        return RUNNING
    if stopped:
        if terminal:
            return SUCCEEDED if stopped == succeeded else FAILED
        if restart_policy == ALWAYS:
            return RUNNING
        if stopped == succeeded:
            return SUCCEEDED
        return FAILED if restart_policy == NEVER else RUNNING
    return PENDING


def _condition(ctype: str, ok: bool, now: str, previous: Obj | None, reason: str = "",
               message: str = "") -> Obj:
    status = "True" if ok else "False"
    since = now
    if previous is not None and previous.get("status") == status and \
            previous.get("lastTransitionTime"):
        since = str(previous["lastTransitionTime"])
    cond: Obj = {"type": ctype, "status": status, "lastProbeTime": None,
                 "lastTransitionTime": since}
    if not ok and reason:
        cond["reason"] = reason
    if not ok and message:
        cond["message"] = message
    return cond


def pod_status(pod: Obj, views: list[ContainerView], *, pod_ips: list[str],
               host_ips: list[str], start_time: str, sandbox_ready: bool, now: str,
               terminal: bool = False) -> Obj:
    """The status the agent owns, from the containers' views (in spec order)."""
    spec = pod.get("spec") or {}
    current = pod.get("status") or {}
    previous = {c.get("type"): c for c in current.get("conditions") or []
                if isinstance(c, dict)}
    ph = phase(str(spec.get("restartPolicy") or ALWAYS), views, terminal)
    if current.get("phase") in TERMINAL:
        ph = str(current["phase"])  # a terminal phase is final
    unready = [v.name for v in views if not v.ready]
    if ph == SUCCEEDED:
        ready_reason, ready_message = "PodCompleted", ""
    else:
        ready_reason = "ContainersNotReady"
        ready_message = f"containers with unready status: [{' '.join(unready)}]"
    containers_ready = not unready and ph == RUNNING
    gates = [str(g.get("conditionType")) for g in spec.get("readinessGates") or []
             if isinstance(g, dict)]
    unmet = [g for g in gates if (previous.get(g) or {}).get("status") != "True"]
    ready = containers_ready and not unmet
    if containers_ready and unmet:
        ready_reason = "ReadinessGatesNotReady"
        ready_message = f"corresponding condition of pod readiness gate {unmet} does not exist."
    conditions = [
        _condition(SANDBOX, sandbox_ready and ph not in TERMINAL, now, previous.get(SANDBOX)),
        _condition(INITIALIZED, True, now, previous.get(INITIALIZED)),
        _condition(CONTAINERS_READY, containers_ready, now, previous.get(CONTAINERS_READY),
                   ready_reason, ready_message),
        _condition(READY, ready, now, previous.get(READY), ready_reason, ready_message),
        _condition(SCHEDULED, True, now, previous.get(SCHEDULED)),
    ]
    status: Obj = {"phase": ph, "conditions": conditions, "startTime": start_time,
                   "containerStatuses": [v.as_status() for v in views]}
    if host_ips:
        status["hostIP"] = host_ips[0]
        status["hostIPs"] = [{"ip": ip} for ip in host_ips]
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    return status


def _norm(value: Any) -> Any:
    """The API server leaves out empty strings, nulls and empty objects: compare without."""
    if isinstance(value, dict):
        out = {k: _norm(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _container(status: Any) -> Obj:
    if not isinstance(status, dict):
        return {}
    return dict(_norm({k: status.get(k) for k in CONTAINER_KEYS}))


def status_patch(current: Obj, desired: Obj) -> Obj | None:
    """A strategic merge patch of ``status`` carrying only what differs (conditions: only
    the changed ones; they merge by type), or None when nothing does."""
    patch: Obj = {}
    for key in OWNED_FIELDS:
        if key not in desired:
            continue
        if key == "containerStatuses":
            mine = [_container(c) for c in desired[key]]
            theirs = [_container(c) for c in current.get(key) or []]
            if mine != theirs:
                patch[key] = desired[key]
        elif _norm(desired[key]) != _norm(current.get(key)):
            patch[key] = desired[key]
    have = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, dict)}
    changed = []
    for cond in desired.get("conditions") or []:
        old = have.get(cond["type"])
        if old is None or any(_norm(cond.get(k)) != _norm(old.get(k))
                              for k in ("status", "reason", "message", "lastTransitionTime")):
            changed.append(cond)
    if changed:
        patch["conditions"] = changed
    return {"status": patch} if patch else None
