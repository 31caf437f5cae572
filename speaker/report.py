"""Writes what the layer-2 announcer decided to the API, off the failover path.

Runs on the shared reconcile loop (``common.kube.loop``) with one worker thread and one key:
``submit`` stores the latest state (older pending states are dropped: only the newest
matters) and adds the key; the handler writes Service conditions, ownership Events and
problem Events. API latency or errors therefore never delay an ARP takeover. A failed write
makes the handler return RETRY: the loop writes the newest state again with backoff (up to
``RETRY_AFTER`` seconds) - except writes the API server refuses as such (400/403/422,
``common.kube.refusal``): those are reported once (Warning Event on the Service, log line,
metric), count as done, and are not sent again until the Service or the wanted condition
changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.api.model import FieldProblem, IPAddress
from common.errors import KubeError, Refused
from common.kube import resources as R
from common.kube.backoff import KeyedBackoff
from common.kube.clock import Clock
from common.kube.loop import ReconcileLoop
from common.kube.refusal import RefusalMemo, fingerprint, report_refusal
from common.kube.status import find_condition, remove_condition, set_condition
from common.kube.workqueue import Outcome
from speaker.core.l2_report import CONDITION_TYPE, ServiceCondition

RETRY_AFTER = 5.0  # s: longest wait before re-trying failed status writes without a new state
RETRY_FIRST = 0.5  # s: first retry (an API hiccup); doubling up to RETRY_AFTER
REPORT = "report"  # the loop's one key: the handler writes the newest state whole

Lookup = Callable[[Any, str | None, str], dict[str, Any] | None]


@dataclass
class ReportState:
    """One submission. ``conditions``/``problems`` None: unchanged since the last one."""

    conditions: list[ServiceCondition] | None = None
    # (kind, name, problem) events this node is responsible for
    problems: list[tuple[str, str, FieldProblem]] | None = None
    # VIPs gained by this node: (vip, services, message)
    gained: list[tuple[IPAddress, tuple[str, ...], str]] = field(default_factory=list)
    # duplicates seen: (vip, services, message)
    duplicates: list[tuple[IPAddress, tuple[str, ...], str]] = field(default_factory=list)
    # Services whose L2 condition must go (they hold no announced address any more)
    clear: list[tuple[str, str]] | None = None


class Reporter:
    def __init__(self, client: Any, events: Any, lookup: Lookup, log: Any,
                 clock: Clock | None = None) -> None:
        self.client = client
        self.events = events
        self.lookup = lookup
        self.log = log
        self._lock = threading.Lock()  # the pending state below (submit vs the worker)
        self._conditions: list[ServiceCondition] = []
        self._problems: list[tuple[str, str, FieldProblem]] = []
        self._clear: list[tuple[str, str]] = []
        self._gained: list[tuple[IPAddress, tuple[str, ...], str]] = []
        self._duplicates: list[tuple[IPAddress, tuple[str, ...], str]] = []
        self._reported_problems: set[tuple[str, str, str, str]] = set()
        # Service condition writes refused as such, by (namespace, name): see module doc.
        self._refused: RefusalMemo[tuple[str, str]] = RefusalMemo()
        self.loop: ReconcileLoop[str] = ReconcileLoop(
            "l2-report", self._handle, clock=clock,
            backoff=KeyedBackoff(base=RETRY_FIRST, cap=RETRY_AFTER, floor=RETRY_FIRST / 2))

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop(3)  # a write in flight may finish; a stuck API must not hold shutdown

    def submit(self, state: ReportState) -> None:
        with self._lock:
            if state.conditions is not None:
                self._conditions = list(state.conditions)
            if state.problems is not None:
                self._problems = list(state.problems)
            if state.clear is not None:
                self._clear = list(state.clear)
            self._gained += state.gained
            self._duplicates += state.duplicates
        self.loop.add(REPORT)

    def _handle(self, _key: str) -> Outcome:
        """The loop's handler: write the newest state; RETRY when a write failed (the retry
        writes conditions again, not the one-off Events already sent)."""
        with self._lock:
            state = ReportState(list(self._conditions), list(self._problems),
                                self._gained, self._duplicates, list(self._clear))
            self._gained, self._duplicates = [], []
        return Outcome.DONE if self._write(state) else Outcome.RETRY

    def _write(self, state: ReportState) -> bool:
        ok = True
        for notices, record, reason in ((state.gained, self.events.normal, "L2Announcing"),
                                        (state.duplicates, self.events.warning,
                                         "DuplicateL2Announcement")):
            for _vip, services, message in notices:
                for key in services:
                    ns, name = key.split("/", 1)
                    obj = self.lookup(R.SERVICES, ns, name)
                    if obj is not None:
                        record(obj, reason, message)
        current = set()
        for kind, name, p in state.problems or []:
            k = (kind, name, p.field, p.message)
            current.add(k)
            if k in self._reported_problems:
                continue
            res = {"L2Advertisement": R.L2ADVERTISEMENTS, "IPAddressPool": R.IPADDRESSPOOLS,
                   "BGPAdvertisement": R.BGPADVERTISEMENTS, "BGPPeer": R.BGPPEERS}.get(kind)
            obj = self.lookup(res, None, name) if res is not None else None
            if obj is not None:
                self.events.warning(obj, p.reason, f"{p.field}: {p.message}")
                self.log.warning("invalid_object", object=f"{kind}/{name}", field=p.field,
                                 reason=p.reason, message=p.message)
            self._reported_problems.add(k)
        self._reported_problems &= current
        self._refused.retain([(c.namespace, c.name) for c in state.conditions or []]
                             + list(state.clear or []))
        for cond in state.conditions or []:
            ok = self._write_condition(cond) and ok
        for ns, name in state.clear or []:
            ok = self._clear_condition(ns, name) and ok
        return ok

    def _clear_condition(self, namespace: str, name: str) -> bool:
        obj = self.lookup(R.SERVICES, namespace, name)
        if obj is None:
            return True
        status = obj.get("status") or {}
        if find_condition(status.get("conditions"), CONDITION_TYPE) is None:
            return True
        fp = fingerprint(obj, None)
        if self._refused.blocked((namespace, name), fp):
            return True  # refused for this version of the Service: wait for a change
        body = dict(obj)
        body["status"] = dict(status, conditions=remove_condition(status.get("conditions"),
                                                                   CONDITION_TYPE))
        try:
            self.client.replace(R.SERVICES, name, body, namespace=namespace,
                                subresource="status")
            self._refused.done((namespace, name))
            return True
        except Refused as exc:
            self._report_refused((namespace, name), fp, obj, exc)
            return True
        except KubeError as exc:
            self.log.warning("l2_condition_clear_failed", object=f"{namespace}/{name}",
                             error=str(exc))
            return False

    def _write_condition(self, cond: ServiceCondition) -> bool:
        obj = self.lookup(R.SERVICES, cond.namespace, cond.name)
        if obj is None:
            return True
        key = (cond.namespace, cond.name)
        # The version the informer shows and what we want: a refused write is sent again
        # only when one of them changes.
        fp = fingerprint(obj, [cond.status, cond.reason, cond.message])
        if self._refused.blocked(key, fp):
            return True
        for attempt in range(2):
            status = obj.get("status") or {}
            old = find_condition(status.get("conditions"), CONDITION_TYPE)
            if old is not None and (old.get("status"), old.get("reason"),
                                    old.get("message")) == (cond.status, cond.reason,
                                                            cond.message):
                return True
            new_conds = set_condition(status.get("conditions"), CONDITION_TYPE, cond.status,
                                      cond.reason, cond.message, datetime.now(UTC))
            body = dict(obj)
            body["status"] = dict(status, conditions=new_conds)
            try:
                # Replace with the object's resourceVersion: the controller writes other
                # conditions of the same list, and a merge patch would overwrite the list.
                self.client.replace(R.SERVICES, cond.name, body, namespace=cond.namespace,
                                    subresource="status")
                self._refused.done(key)
                return True
            except Refused as exc:
                self._report_refused(key, fp, obj, exc)
                return True
            except KubeError as exc:
                if attempt == 0 and getattr(exc, "status", None) == 409:
                    try:
                        obj = self.client.get(R.SERVICES, cond.name, cond.namespace)
                    except KubeError:
                        return False
                    continue
                self.log.warning("l2_condition_write_failed", object=f"{cond.namespace}/"
                                 f"{cond.name}", error=str(exc))
                return False
        return False

    def _report_refused(self, key: tuple[str, str], fp: object, obj: dict[str, Any],
                        exc: Refused) -> None:
        if self._refused.refused(key, fp):
            report_refusal(self.events, self.log, obj, exc, component="speaker",
                           resource=R.SERVICES.plural,
                           field=f"status.conditions[{CONDITION_TYPE}]")
