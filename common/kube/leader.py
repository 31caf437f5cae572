"""Leader election on a coordination.k8s.io/v1 Lease (client-go's leaderelection, in short).

- Expiry is judged on the observer's own monotonic clock: a Lease held by someone else is
  expired when its record has not changed for ``leaseDurationSeconds`` since *we* last saw it
  change. Remote wall clocks (renewTime) are never compared with ours.
- Writes carry metadata.resourceVersion: a 409 means another candidate won the race.
- The leader renews every ``retry_period``; if no renewal succeeds for ``renew_deadline`` it
  calls ``on_lost()`` (the component exits: a stale leader must not keep acting).
- A graceful stop releases the Lease (empty holderIdentity) so a standby takes over at once.

renew_deadline < lease_duration gives the old leader time to stop acting before anyone may
take over (15 s / 10 s / 2 s are client-go's defaults).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import Gauge

from common.errors import Conflict, KubeError, NotFound
from common.kube.client import KubeClient
from common.kube.clock import Clock, RealClock, rfc3339_micro
from common.kube.resources import LEASES

log = structlog.get_logger("common.kube.leader")

IS_LEADER = Gauge("portico_leader_is_leader", "1 while this replica holds the Lease.", ["lease"])

# client-go's JitterFactor for the acquire loop: spreads candidates' retries.
ACQUIRE_JITTER = 1.2


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Clock | None = None,
        on_lost: Callable[[], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not (lease_duration > renew_deadline > retry_period > 0):
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        if not identity:
            raise ValueError("identity must not be empty")
        self.client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock: Clock = clock or RealClock()
        self.on_lost = on_lost
        self._rand = rand
        self._observed: dict[str, Any] | None = None  # last Lease spec seen
        self._observed_rv = ""
        self._observed_at = 0.0  # our monotonic time when the spec last changed
        self._last_renew = 0.0
        self._leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost_called = False
        # One attempt must fit in the renew deadline (client-go bounds it with a context);
        # the client's default 30 s read timeout would outlast it.
        self._call_timeout = max(1.0, renew_deadline / 2)

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def holder(self) -> str:
        return str((self._observed or {}).get("holderIdentity") or "")

    # ----- one step -----------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards. Never raises KubeError."""
        now = self.clock.monotonic()
        stamp = rfc3339_micro(self.clock.now())
        try:
            lease = self.client.get(LEASES, self.name, self.namespace,
                                    timeout=self._call_timeout)
        except NotFound:
            return self._create(now, stamp)
        except KubeError as e:
            log.warning("lease_get_failed", lease=self.name, error=str(e))
            return False
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        if spec != self._observed:
            self._observed, self._observed_rv, self._observed_at = spec, rv, now
        else:
            self._observed_rv = rv
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > now:
            if self._leader:
                log.warning("lease_taken", lease=self.name, holder=holder)
            self._set_follower()
            return False
        new_spec = dict(spec)
        new_spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.lease_duration),
            renewTime=stamp,
        )
        if holder != self.identity:
            new_spec["acquireTime"] = stamp
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        body = dict(lease)
        body["spec"] = new_spec
        try:
            updated = self.client.replace(LEASES, self.name, body, self.namespace,
                                          timeout=self._call_timeout)
        except Conflict:
            log.info("lease_race_lost", lease=self.name)
            return False
        except KubeError as e:
            log.warning("lease_update_failed", lease=self.name, error=str(e))
            return False
        self._took(updated, now, was=holder)
        return True

    def _create(self, now: float, stamp: str) -> bool:
        body = {
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            created = self.client.create(LEASES, body, self.namespace,
                                         timeout=self._call_timeout)
        except Conflict:  # AlreadyExists: someone created it first
            log.info("lease_race_lost", lease=self.name)
            return False
        except KubeError as e:
            log.warning("lease_create_failed", lease=self.name, error=str(e))
            return False
        self._took(created, now, was="")
        return True

    def _took(self, lease: dict[str, Any], now: float, was: str) -> None:
        self._observed = dict(lease.get("spec") or {})
        self._observed_rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        self._observed_at = now
        self._last_renew = now
        IS_LEADER.labels(self.name).set(1)
        if not self._leader:
            log.info("leader_acquired", lease=self.name, identity=self.identity,
                     previous=was or None)
        self._leader = True

    # ----- loops --------------------------------------------------------------------------

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until we are leader (True) or ``stop``/``self.stop()`` is set (False)."""
        stop_ev = stop or self._stop
        while not stop_ev.is_set() and not self._stop.is_set():
            if self.try_acquire_or_renew():
                return True
            # client-go: wait.JitterUntil(retryPeriod, JitterFactor 1.2)
            delay = self.retry_period * (1 + ACQUIRE_JITTER * self._rand())
            self.clock.wait(stop_ev, delay)
        return False

    def renew_loop(self) -> None:
        """Renew until stopped or lost; on loss call on_lost() once."""
        while not self._stop.is_set():
            if self.clock.wait(self._stop, self.retry_period):
                return
            if self.renew_once():
                continue
            return

    def renew_once(self) -> bool:
        """One renewal attempt; False (after calling on_lost) when leadership is lost."""
        if self.try_acquire_or_renew():
            return True
        lost = (
            (self.holder and self.holder != self.identity)
            or self.clock.monotonic() - self._last_renew >= self.renew_deadline
        )
        if not lost:
            return True  # transient failure; keep trying until renew_deadline
        self._set_follower()
        self._lose()
        return False

    def _set_follower(self) -> None:
        self._leader = False
        IS_LEADER.labels(self.name).set(0)

    def _lose(self) -> None:
        if self._lost_called:
            return
        self._lost_called = True
        log.error("leader_lost", lease=self.name, identity=self.identity)
        if self.on_lost is not None:
            self.on_lost()

    def start_renewing(self) -> threading.Thread:
        self._thread = threading.Thread(
            target=self.renew_loop, name=f"lease-{self.name}", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, release: bool = True) -> None:
        """Stop renewing; release the Lease so a standby takes over without waiting."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.retry_period + 5)
        if release:
            self.release()

    def release(self) -> bool:
        if not self._leader:
            return False
        self._set_follower()
        try:
            lease = self.client.get(LEASES, self.name, self.namespace,
                                    timeout=self._call_timeout)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return False
            # client-go also shortens the duration to 1 s so old observers expire it fast.
            spec.update(holderIdentity="", leaseDurationSeconds=1,
                        renewTime=rfc3339_micro(self.clock.now()))
            lease["spec"] = spec
            self.client.replace(LEASES, self.name, lease, self.namespace,
                                timeout=self._call_timeout)
        except KubeError as e:
            log.warning("lease_release_failed", lease=self.name, error=str(e))
            return False
        log.info("leader_released", lease=self.name, identity=self.identity)
        return True
