"""Unit tests for alert rules, in the style of ``promtool test rules``.

Feed synthetic series to the engine on a synthetic clock and assert when alerts fire and
resolve, without waiting in real time::

    t = RuleTest(Rules(warning_for=30), interval=10)
    t.pool("urllib3 http://api:80", max=10, leased="0+1x7 8x20")
    t.assert_alerts(at=60, pending=["PoolUtilisationHigh"])
    t.assert_alerts(at=100, firing=["PoolUtilisationHigh"])

Series use promtool's expanding notation: ``"0+1x3"`` is 0 1 2 3, ``"5x2"`` is 5 5 5,
``"10-2x2"`` is 10 8 6, ``"_"`` repeats the previous value; terms are separated by spaces.
Leased connections are synthetic leases, taken when the count rises and returned newest first
when it falls, so suspected-leak rules see real ages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._models import CallSite, Lease, PoolSnapshot, Snapshot, Waiter
from .._sampler import Sample
from ._engine import Engine, Transition
from ._model import Notification
from ._rules import Rules

__all__ = ["RuleTest", "expand_series"]

_TERM = re.compile(r"^(-?\d+(?:\.\d+)?)(?:([+-])(\d+(?:\.\d+)?))?x(\d+)$")
_WALL0 = 1_800_000_000.0


def expand_series(text: str | Sequence[float]) -> list[float | None]:
    """promtool's notation to values: ``"0+1x3 _ 7"`` -> ``[0, 1, 2, 3, None, 7]``."""
    if not isinstance(text, str):
        return [float(v) for v in text]
    out: list[float | None] = []
    for term in text.split():
        if term == "_":
            out.append(None)
            continue
        match = _TERM.match(term)
        if match:
            start, sign, step, times = match.groups()
            delta = float(step or 0) * (-1 if sign == "-" else 1)
            out.extend(float(start) + delta * i for i in range(int(times) + 1))
            continue
        try:
            out.append(float(term))
        except ValueError:
            raise ValueError(
                f"series term {term!r} is not allowed: expected a number, '_', 'AxN' or 'A+BxN'"
            ) from None
    return out


@dataclass
class _PoolSeries:
    label: str
    max: int | None
    leased: list[float | None]
    exhaustions: list[float | None]
    waiting: list[float | None]
    callsite: CallSite
    leases: list[tuple[int, float]] = field(default_factory=list)  # (seq, taken at)
    waiters: list[float] = field(default_factory=list)
    last: dict[str, float] = field(default_factory=dict)


def _value(values: list[float | None], step: int, last: dict[str, float], key: str) -> float | None:
    if step < len(values):
        value = values[step]
        if value is not None:
            last[key] = value
            return value
        return last.get(key)
    return last.get(key) if values else None


class RuleTest:
    """Run the alert engine over synthetic series, one evaluation per ``interval`` seconds."""

    def __init__(self, rules: Rules | None = None, *, interval: float = 1.0) -> None:
        self.rules = rules or Rules()
        self.interval = interval
        self.engine = Engine(self.rules)
        self._pools: list[_PoolSeries] = []
        self._close_wait: list[float | None] = []
        self._cw_last: dict[str, float] = {}
        self._seq = 0
        self._step = 0
        self._states: list[tuple[float, dict[tuple[str, str], str]]] = []
        self.notifications: list[tuple[float, Notification]] = []
        self.engine.subscribe(lambda n: self.notifications.append((self._now(), n)))

    def pool(
        self,
        label: str,
        *,
        leased: str | Sequence[float],
        max: int | None = 10,
        exhaustions: str | Sequence[float] = (),
        waiting: str | Sequence[float] = (),
        callsite: str = "app.py:1 in handler",
    ) -> RuleTest:
        """Add one pool's series (``label`` is ``"<kind> <name>"``, as in alerts)."""
        if " " not in label:
            raise ValueError(
                f"pool label {label!r}: expected '<kind> <name>' such as 'urllib3 http://api:80'"
            )
        filename, _, rest = callsite.partition(":")
        line, _, function = rest.partition(" in ")
        site = CallSite(filename, int(line or 0), function or "<module>")
        self._pools.append(
            _PoolSeries(
                label,
                max,
                expand_series(leased),
                expand_series(exhaustions),
                expand_series(waiting),
                site,
            )
        )
        return self

    def close_wait(self, values: str | Sequence[float]) -> RuleTest:
        """This process's CLOSE_WAIT count per step."""
        self._close_wait = expand_series(values)
        return self

    def _now(self) -> float:
        return self._step * self.interval

    def _snapshot(self, now: float) -> Snapshot:
        pools = []
        for p in self._pools:
            leased = int(_value(p.leased, self._step, p.last, "leased") or 0)
            while len(p.leases) < leased:
                self._seq += 1
                p.leases.append((self._seq, now))
            del p.leases[leased:]
            waiting = int(_value(p.waiting, self._step, p.last, "waiting") or 0)
            while len(p.waiters) < waiting:
                p.waiters.append(now)
            del p.waiters[waiting:]
            kind, _, name = p.label.partition(" ")
            leases = tuple(
                Lease(
                    seq=seq,
                    pool=p.label,
                    pool_kind=kind,
                    connection_id=seq,
                    acquired_at=taken,
                    acquired_wall=_WALL0 + taken,
                    age=now - taken,
                    callsite=p.callsite,
                    stack=(),
                    thread_id=0,
                    thread_name="synthetic",
                    task_name=None,
                    response=None,
                    state="leased",
                )
                for seq, taken in p.leases
            )
            waiters = tuple(
                Waiter(p.label, since, now - since, "synthetic", p.callsite) for since in p.waiters
            )
            pools.append(
                PoolSnapshot(
                    kind=kind,
                    name=name,
                    leased=leased,
                    idle=None if p.max is None else max(0, p.max - leased),
                    waiting=waiting,
                    max=p.max,
                    checkouts=self._seq,
                    checkins=0,
                    exhaustions=int(_value(p.exhaustions, self._step, p.last, "exh") or 0),
                    confirmed_leaks=0,
                    orphans=0,
                    leases=leases,
                    waiters=waiters,
                )
            )
        return Snapshot(_WALL0 + now, tuple(pools))

    def _advance_to(self, at: float) -> None:
        target = round(at / self.interval)
        while self._step <= target:
            now = self._now()
            cw = _value(self._close_wait, self._step, self._cw_last, "cw")
            sample = Sample(now, _WALL0 + now, self._snapshot(now), None if cw is None else int(cw))
            self.engine.evaluate(sample)
            states = {(a.name, a.pool): a.state for a in self.engine.active()}
            self._states.append((now, states))
            self._step += 1

    def run(self, until: float) -> list[Transition]:
        """Evaluate every step up to ``until`` seconds; returns the transitions so far."""
        self._advance_to(until)
        return self.engine.transitions()

    def alerts_at(self, at: float, pool: str | None = None) -> dict[str, str]:
        """``{alert name: state}`` of the alerts active at ``at`` seconds."""
        self._advance_to(at)
        index = round(at / self.interval)
        _, states = self._states[index]
        return {n: s for (n, p), s in states.items() if pool is None or p == pool}

    def assert_alerts(
        self,
        at: float,
        *,
        firing: Sequence[str] = (),
        pending: Sequence[str] = (),
        pool: str | None = None,
    ) -> None:
        """Fail unless exactly these alerts are firing and pending at ``at`` seconds."""
        __tracebackhide__ = True
        states = self.alerts_at(at, pool)
        got_firing = sorted(n for n, s in states.items() if s == "firing")
        got_pending = sorted(n for n, s in states.items() if s == "pending")
        if got_firing != sorted(firing) or got_pending != sorted(pending):
            raise AssertionError(
                f"at {at:g} s: expected firing {sorted(firing)} pending {sorted(pending)}, "
                f"got firing {got_firing} pending {got_pending}"
            )

    def sent(self, kind: str | None = None) -> list[tuple[float, Notification]]:
        """Notifications sent so far (of one kind), with the time they were sent."""
        return [(t, n) for t, n in self.notifications if kind is None or n.kind == kind]
