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

What the wire saw (``portico.dev/L2Wire``, ``speaker.core.l2_report``): the announcer submits
the Services whose L2Wire condition this node writes (``ReportState.wire``); the handler reads
the responder's figures (``wire``) when it runs and writes a condition only when
``wire_write_due`` says so — at once when ownership changed, else changed figures at most
every ``wire_interval`` seconds, for which it schedules its own next run. ``poke`` (the
responder's first announcement after a gain) runs it at once, so the write that follows a
takeover already carries the announcement time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
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
from speaker.core.l2_report import (
    ANNOUNCE_WAIT,
    CONDITION_TYPE,
    NOT_ANNOUNCED_YET,
    WIRE_CONDITION_TYPE,
    ServiceCondition,
    VipWire,
    WireCondition,
    WireTarget,
    WireWritten,
    wire_condition,
    wire_refresh_in,
    wire_write_due,
)

RETRY_AFTER = 5.0  # s: longest wait before re-trying failed status writes without a new state
RETRY_FIRST = 0.5  # s: first retry (an API hiccup); doubling up to RETRY_AFTER
REPORT = "report"  # the loop's one key: the handler writes the newest state whole
# s: default --wire-report-interval: the L2Wire figures of a Service (answered requests grow
# with traffic) are refreshed at most this often — 288 writes a day per Service at most.
WIRE_REPORT_INTERVAL = 300.0

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
    # Services whose L2Wire condition this node writes (None: unchanged)
    wire: list[WireTarget] | None = None


class Reporter:
    def __init__(self, client: Any, events: Any, lookup: Lookup, log: Any,
                 clock: Clock | None = None,
                 wire: Callable[[], Mapping[IPAddress, VipWire]] | None = None,
                 me: str = "", wire_interval: float = WIRE_REPORT_INTERVAL) -> None:
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
        self.wire = wire
        self.me = me
        self.wire_interval = wire_interval
        self._wire_targets: list[WireTarget] = []
        # Worker thread only: what was last written per Service (the refresh rule's memory).
        self._wire_written: dict[tuple[str, str], WireWritten] = {}
        self._wire_refused: RefusalMemo[tuple[str, str]] = RefusalMemo()
        # Worker thread only: since when a Service's condition is NotAnnouncedYet (held for
        # the announcement up to ANNOUNCE_WAIT, speaker.core.l2_report).
        self._wire_waiting: dict[tuple[str, str], float] = {}
        # Worker thread only, one handler run long: Services as our own writes returned them,
        # so that the second condition written in a run does not meet a 409 from the first.
        self._fresh: dict[tuple[str, str], dict[str, Any]] = {}
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
            if state.wire is not None:
                self._wire_targets = list(state.wire)
            self._gained += state.gained
            self._duplicates += state.duplicates
        self.loop.add(REPORT)

    def _handle(self, _key: str) -> Outcome:
        """The loop's handler: write the newest state; RETRY when a write failed (the retry
        writes conditions again, not the one-off Events already sent)."""
        with self._lock:
            state = ReportState(list(self._conditions), list(self._problems),
                                self._gained, self._duplicates, list(self._clear),
                                list(self._wire_targets))
            self._gained, self._duplicates = [], []
        self._fresh = {}
        try:
            ok = self._write(state)
            ok = self._write_wire(state.wire or []) and ok
        finally:
            self._fresh = {}
        return Outcome.DONE if ok else Outcome.RETRY

    def poke(self) -> None:
        """Evaluate the L2Wire conditions now (the responder announced a gained VIP)."""
        self.loop.add(REPORT)

    def _write_wire(self, targets: list[WireTarget]) -> bool:
        """Write the L2Wire conditions that are due (module docstring); schedule the next
        refresh. False when a write failed (the loop retries)."""
        if self.wire is None:
            return True
        figures = self.wire()
        now = self.loop.clock.monotonic()
        keys = {(t.namespace, t.name) for t in targets}
        self._wire_waiting = {k: w for k, w in self._wire_waiting.items() if k in keys}
        self._wire_written = {k: w for k, w in self._wire_written.items() if k in keys}
        self._wire_refused.retain(keys)
        ok = True
        for t in targets:
            cond = wire_condition(t, self.me, figures)
            key = (t.namespace, t.name)
            if cond.reason == NOT_ANNOUNCED_YET:
                since = self._wire_waiting.setdefault(key, now)
                if now - since < ANNOUNCE_WAIT:  # look again when the wait is over
                    self.loop.add_after(REPORT, since + ANNOUNCE_WAIT - now)
            else:
                self._wire_waiting.pop(key, None)
            if not wire_write_due(cond, self._wire_written.get(key), now, self.wire_interval,
                                  self._wire_waiting.get(key)):
                continue
            if self._write_condition(cond, WIRE_CONDITION_TYPE, self._wire_refused):
                self._wire_written[key] = WireWritten(cond.key, cond.message, now)
            else:
                ok = False
        if self.wire_interval > 0 and targets:
            # The earliest figures-only refresh (add_after keeps an earlier schedule). A delay
            # of 0 (window open, but this run found nothing changed) is left out: it would
            # re-run at once and spin; the interval below looks again later.
            delays = [d for w in self._wire_written.values()
                      if (d := wire_refresh_in(w, now, self.wire_interval))]
            self.loop.add_after(REPORT, min([*delays, self.wire_interval]))
        return ok

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
        conditions = status.get("conditions")
        types = [t for t in (CONDITION_TYPE, WIRE_CONDITION_TYPE)
                 if find_condition(conditions, t) is not None]
        if not types:
            return True
        fp = fingerprint(obj, None)
        if self._refused.blocked((namespace, name), fp):
            return True  # refused for this version of the Service: wait for a change
        for t in types:
            conditions = remove_condition(conditions, t)
        body = dict(obj)
        body["status"] = dict(status, conditions=conditions)
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

    def _write_condition(self, cond: ServiceCondition | WireCondition,
                         ctype: str = CONDITION_TYPE,
                         memo: RefusalMemo[tuple[str, str]] | None = None) -> bool:
        memo = self._refused if memo is None else memo
        key = (cond.namespace, cond.name)
        obj = self._fresh.get(key) or self.lookup(R.SERVICES, cond.namespace, cond.name)
        if obj is None:
            return True
        # The version the informer shows and what we want: a refused write is sent again
        # only when one of them changes.
        fp = fingerprint(obj, [cond.status, cond.reason, cond.message])
        if memo.blocked(key, fp):
            return True
        for attempt in range(2):
            status = obj.get("status") or {}
            old = find_condition(status.get("conditions"), ctype)
            if old is not None and (old.get("status"), old.get("reason"),
                                    old.get("message")) == (cond.status, cond.reason,
                                                            cond.message):
                return True
            new_conds = set_condition(status.get("conditions"), ctype, cond.status,
                                      cond.reason, cond.message, datetime.now(UTC))
            body = dict(obj)
            body["status"] = dict(status, conditions=new_conds)
            try:
                # Replace with the object's resourceVersion: the controller writes other
                # conditions of the same list, and a merge patch would overwrite the list.
                new = self.client.replace(R.SERVICES, cond.name, body,
                                          namespace=cond.namespace, subresource="status")
                if isinstance(new, dict):
                    self._fresh[key] = new
                memo.done(key)
                return True
            except Refused as exc:
                self._report_refused(key, fp, obj, exc, ctype, memo)
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
                        exc: Refused, ctype: str = CONDITION_TYPE,
                        memo: RefusalMemo[tuple[str, str]] | None = None) -> None:
        if (self._refused if memo is None else memo).refused(key, fp):
            report_refusal(self.events, self.log, obj, exc, component="speaker",
                           resource=R.SERVICES.plural,
                           field=f"status.conditions[{ctype}]")
