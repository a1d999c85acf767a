"""The alert engine: findings over time become alerts, alerts become grouped notifications.

One alert per (name, pool) goes inactive -> pending -> firing -> resolved. Alerts of one pool
form one group and one message: a group is notified when an alert joins or leaves it, and again
every ``repeat_interval`` while it fires. A firing alert listed in ``INHIBITS`` silences the
weaker alerts of its pool. Runs in the sampler's thread; ``active()`` may be read from any.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._models import PoolSnapshot
from .._sampler import Sample
from ._message import render
from ._model import Alert, Notification, format_duration
from ._rules import (
    INHIBITS,
    Finding,
    PoolHistory,
    Rules,
    callsite_lines,
    evaluate_pool,
    trend_facts,
)

__all__ = ["PROCESS_GROUP", "Engine", "Transition"]

log = logging.getLogger("poolwatch.alerts")

#: The group of process-wide alerts (CLOSE_WAIT growth, channel failures).
PROCESS_GROUP = "process"


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changing state: for tests, the rule-test helper and the admin app."""

    at: float  # the engine clock (monotonic)
    wall: float
    name: str
    pool: str
    old: str
    new: str


@dataclass(slots=True)
class _State:
    state: str  # pending | firing
    since: float
    since_wall: float
    finding: Finding
    severity: str
    fired_wall: float | None = None


@dataclass(slots=True)
class _Group:
    told: dict[str, Alert] = field(default_factory=dict)  # alerts last announced as firing
    last_sent: float = 0.0
    notes: list[str] = field(default_factory=list)


class Engine:
    """Evaluate ``rules`` on each sample and hand notifications to the subscribed sinks.

    ``pools``: fnmatch patterns of pool labels to watch (all by default). ``admin_url`` is
    linked from every message. ``drill=True`` marks every message as a drill.
    """

    def __init__(
        self,
        rules: Rules | None = None,
        *,
        pools: Sequence[str] = (),
        admin_url: str | None = None,
        drill: bool = False,
        history: int = 1000,
    ) -> None:
        self.rules = rules or Rules()
        self.pools = tuple(pools)
        self.admin_url = admin_url
        self.drill = drill
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], _State] = {}
        self._groups: dict[str, _Group] = {}
        self._histories: dict[str, PoolHistory] = {}
        self._close_wait: deque[tuple[float, float]] = deque()
        self._suspects: dict[tuple[str, int], tuple[str, float]] = {}  # -> (site, taken at)
        self._external: dict[tuple[str, str], Alert] = {}
        self._transitions: deque[Transition] = deque(maxlen=history)
        self._sinks: list[Callable[[Notification], None]] = []
        self.evaluations = 0

    def __repr__(self) -> str:
        firing = sum(1 for s in self._states.values() if s.state == "firing")
        pending = sum(1 for s in self._states.values() if s.state == "pending")
        return f"<Engine [firing {firing} | pending {pending} | groups {len(self._groups)}]>"

    def subscribe(self, sink: Callable[[Notification], None]) -> None:
        """Call ``sink(notification)`` for each notification (e.g. ``Dispatcher.submit``)."""
        self._sinks.append(sink)

    def watches(self, label: str) -> bool:
        return not self.pools or any(fnmatch.fnmatchcase(label, p) for p in self.pools)

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self, sample: Sample) -> list[Notification]:
        """Run every rule on ``sample``; returns (and sends to sinks) the notifications due."""
        now, wall = sample.at, sample.wall
        rules = self.rules
        out: list[Notification] = []
        with self._lock:
            self.evaluations += 1
            seen: set[str] = set()
            snapshots: dict[str, PoolSnapshot] = {}
            for pool in sample.snapshot.pools:
                label = f"{pool.kind} {pool.name}"
                if not self.watches(label):
                    continue
                seen.add(label)
                snapshots[label] = pool
                hist = self._histories.get(label)
                if hist is None:
                    hist = self._histories[label] = PoolHistory(
                        rules.trend_window, new=self.evaluations > 1
                    )
                hist.update(now, pool)
                was = {n: True for (n, p) in self._states if p == label}
                for finding in evaluate_pool(rules, pool, hist, now, was):
                    self._step(finding, label, now, wall)
                self._track_suspects(label, pool, now)
            self._step_close_wait(sample)
            # A pool that went away (garbage collected, closed) resolves its alerts.
            for name, label in list(self._states):
                if label != PROCESS_GROUP and label not in seen:
                    state = self._states[(name, label)]
                    self._step(replace(state.finding, active=False), label, now, wall)
            for label in list(self._histories):
                if label not in seen:
                    del self._histories[label]
                    for key in [k for k in self._suspects if k[0] == label]:
                        del self._suspects[key]
            groups = {p for (_n, p) in self._states} | set(self._groups)
            for label in sorted(groups):
                note = self._notify_group(label, snapshots.get(label), now, wall)
                if note is not None:
                    out.append(note)
        for note in out:
            for sink in list(self._sinks):
                try:
                    sink(note)
                except Exception as exc:  # one broken sink must not starve the others
                    log.warning("poolwatch: alert sink %r failed: %r", sink, exc, exc_info=exc)
        return out

    def _step(self, finding: Finding, label: str, now: float, wall: float) -> None:
        key = (finding.name, label)
        state = self._states.get(key)
        if finding.active:
            if state is None:
                state = _State("pending", now, wall, finding, finding.severity)
                self._states[key] = state
                self._transition(now, wall, finding.name, label, "inactive", "pending")
            state.finding = finding
            if state.state == "pending" and now - state.since >= self.rules.for_of(finding.name):
                state.state = "firing"
                state.since, state.since_wall, state.fired_wall = now, wall, wall
                self._transition(now, wall, finding.name, label, "pending", "firing")
        elif state is not None:
            del self._states[key]
            new = "resolved" if state.state == "firing" else "inactive"
            self._transition(now, wall, finding.name, label, state.state, new)
            if state.state == "firing":
                group = self._groups.setdefault(label, _Group())
                if finding.name in group.told:
                    group.told[finding.name] = replace(
                        group.told[finding.name], state="resolved", since=wall
                    )

    def _transition(
        self, now: float, wall: float, name: str, pool: str, old: str, new: str
    ) -> None:
        self._transitions.append(Transition(now, wall, name, pool, old, new))

    def _track_suspects(self, label: str, pool: PoolSnapshot, now: float) -> None:
        """Remember leases reported as suspected; one that comes back is told as returned."""
        if not self.rules.leak_age or "SuspectedLeak" in self.rules.disabled:
            return
        leak_age = self.rules.leak_age
        for lease in pool.leases:
            if lease.age >= leak_age and lease.state == "leased":
                # Remember when it was taken, on the engine's clock: age at first sight.
                self._suspects.setdefault(
                    (label, lease.seq), (str(lease.callsite), now - lease.age)
                )
        mine = [k for k in self._suspects if k[0] == label] if self._suspects else []
        if not mine:
            return
        live = {lease.seq for lease in pool.leases}
        for key in [k for k in mine if k[1] not in live]:
            site, taken = self._suspects.pop(key)
            group = self._groups.setdefault(label, _Group())
            group.notes.append(f"lease from {site} returned after {format_duration(now - taken)}")
            del group.notes[:-20]

    def _step_close_wait(self, sample: Sample) -> None:
        rules = self.rules
        if sample.close_wait is None or not rules.close_wait_growth:
            return
        if "CloseWaitGrowing" in rules.disabled:
            return
        points = self._close_wait
        points.append((sample.at, float(sample.close_wait)))
        while points and sample.at - points[0][0] > rules.close_wait_window:
            points.popleft()
        low = min(v for _, v in points)
        growth = sample.close_wait - low
        active = growth >= rules.close_wait_growth
        self._step(
            Finding(
                "CloseWaitGrowing",
                "warning",
                active,
                float(sample.close_wait),
                f"this process has {sample.close_wait} sockets in CLOSE_WAIT, up {growth:.0f} "
                f"in {format_duration(rules.close_wait_window)} (peers closed, we never did)",
            ),
            PROCESS_GROUP,
            sample.at,
            sample.wall,
        )

    # -- grouping and notification -----------------------------------------------------------

    def _alerts_of(self, label: str) -> list[Alert]:
        states = [(n, s) for (n, p), s in self._states.items() if p == label]
        firing = {n for n, s in states if s.state == "firing"}
        alerts = []
        for name, s in states:
            inhibitor = next(
                (src for src in firing if name in INHIBITS.get(src, frozenset())), None
            )
            alerts.append(
                Alert(
                    name=name,
                    severity=s.severity,
                    pool=label,
                    state=s.state,
                    summary=s.finding.summary,
                    since=s.since_wall,
                    value=s.finding.value,
                    details=s.finding.details,
                    fired_at=s.fired_wall,
                    inhibited_by=inhibitor if s.state == "firing" else None,
                )
            )
        return alerts

    def _notify_group(
        self, label: str, pool: PoolSnapshot | None, now: float, wall: float
    ) -> Notification | None:
        alerts = self._alerts_of(label)
        group = self._groups.setdefault(label, _Group())
        loud = {a.name: a for a in alerts if a.state == "firing" and a.inhibited_by is None}
        firing_any = {a.name for a in alerts if a.state == "firing"}
        new = [n for n in loud if n not in group.told]
        gone = [a for a in group.told.values() if a.state == "resolved"]
        kind = None
        if new:
            kind = "firing"
        elif gone:
            kind = "firing" if loud else "resolved"
        elif loud and now - group.last_sent >= self.rules.repeat_interval:
            kind = "repeat"
        if kind is None:
            if not alerts and not group.told:
                self._groups.pop(label, None)
            return None
        facts = self._facts(label, pool)
        if group.notes:
            facts["notes"] = list(group.notes)
            group.notes.clear()
        note = render(kind, label, [*loud.values(), *gone], facts, drill=self.drill, created=wall)
        # Remember what was told: silenced alerts that still fire stay "told" (no new mail
        # when the inhibitor resolves), resolved ones are forgotten once announced.
        group.told = {
            n: a
            for n, a in {**group.told, **loud}.items()
            if n in firing_any and a.state != "resolved"
        }
        group.last_sent = now
        return note

    def _facts(self, label: str, pool: PoolSnapshot | None) -> dict[str, Any]:
        facts: dict[str, Any] = {"pool": label}
        if self.admin_url:
            facts["admin_url"] = self.admin_url
        if pool is None:
            return facts
        facts.update(
            {
                "utilisation": pool.utilisation,
                "leased": pool.leased,
                "idle": pool.idle,
                "waiting": pool.waiting,
                "max": pool.max,
                "exhaustions": pool.exhaustions,
                "confirmed_leaks": pool.confirmed_leaks,
                "callsites": callsite_lines(pool.leases),
                "leak_callsites": [f"{n} x {site}" for site, n in pool.leaks_by_callsite[:5]],
            }
        )
        hist = self._histories.get(label)
        if hist is not None:
            facts.update(trend_facts(self.rules, pool, hist))
        return facts

    # -- external alerts (a failing channel) -------------------------------------------------

    def set_external(self, alert: Alert | None, *, name: str, pool: str = PROCESS_GROUP) -> None:
        """Show (or with ``None`` clear) an alert raised outside the rules, e.g. ChannelFailing."""
        with self._lock:
            if alert is None:
                self._external.pop((name, pool), None)
            else:
                self._external[(name, pool)] = alert

    # -- reading -----------------------------------------------------------------------------

    def active(self) -> list[Alert]:
        """Pending and firing alerts (inhibited ones flagged), strongest first."""
        with self._lock:
            labels = {p for (_n, p) in self._states}
            alerts = [a for label in labels for a in self._alerts_of(label)]
            alerts.extend(self._external.values())
        rank = {"critical": 0, "warning": 1, "info": 2}
        alerts.sort(key=lambda a: (a.state != "firing", rank.get(a.severity, 3), a.pool, a.name))
        return alerts

    def transitions(self) -> list[Transition]:
        """Recent state changes, oldest first."""
        with self._lock:
            return list(self._transitions)

    def firing(self, pool: str | None = None) -> set[str]:
        """Names of firing alerts (of one pool)."""
        return {
            a.name
            for a in self.active()
            if a.state == "firing" and (pool is None or a.pool == pool)
        }
