"""Restart policy, crash-loop back-off and exit classification (pure: data in, data out).

Back-off follows the kubelet's (``pkg/kubelet/kuberuntime`` doBackOff over client-go's
``flowcontrol.Backoff``): the first restart after a container exits is immediate, the next
waits ``initial`` seconds after the exit, then twice as long each time up to ``cap``; a
container that ran for more than ``2 * cap`` since the last back-off starts afresh. The
kubelet's numbers are 10 s and 300 s; the agent takes smaller ones for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

ALWAYS, ON_FAILURE, NEVER = "Always", "OnFailure", "Never"
# What a container exits with when a signal ended it: the shell's convention, which the
# container runtimes follow (SIGKILL -> 137, SIGTERM -> 143).
SIGNAL_EXIT_BASE = 128


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 10.0
    cap: float = 300.0


@dataclass(frozen=True)
class Backoff:
    delay: float
    updated: float  # monotonic seconds of the restart that set ``delay``


def _expired(entry: Backoff, event: float, policy: BackoffPolicy) -> bool:
    return event - entry.updated > 2 * policy.cap


def restart_wait(entry: Backoff | None, finished: float, now: float,
                 policy: BackoffPolicy) -> float:
    """Seconds still to wait before a container that exited at ``finished`` may restart."""
    if entry is None or _expired(entry, finished, policy):
        return 0.0
    return max(0.0, finished + entry.delay - now)


def after_restart(entry: Backoff | None, finished: float, now: float,
                  policy: BackoffPolicy) -> Backoff:
    """The back-off entry once the container was restarted (flowcontrol.Backoff.Next)."""
    if entry is None or _expired(entry, finished, policy):
        return Backoff(policy.initial, now)
    return Backoff(min(entry.delay * 2, policy.cap), now)


def should_restart(restart_policy: str, exit_code: int, killed_by_probe: bool) -> bool:
    """A container killed by its liveness or startup probe restarts unless the policy is
    Never, whatever it exited with (the kubelet's computePodActions)."""
    if restart_policy == NEVER:
        return False
    if restart_policy == ON_FAILURE:
        return exit_code != 0 or killed_by_probe
    return True


@dataclass(frozen=True)
class Exit:
    code: int
    signal: int | None
    reason: str  # Completed | Error


def classify(returncode: int) -> Exit:
    """A ``Popen.returncode`` (negative: killed by that signal) as the container status
    reports it."""
    if returncode < 0:
        return Exit(SIGNAL_EXIT_BASE - returncode, -returncode, "Error")
    return Exit(returncode, None, "Completed" if returncode == 0 else "Error")

