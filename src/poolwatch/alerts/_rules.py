"""The rules: what makes a pool worth a person's attention, with sensible defaults.

Each rule turns one pool's snapshot (plus a short history) into a ``Finding``: active or not,
a value and a sentence. The engine owns time: pending -> firing after ``for``, resolution,
grouping, repeats and inhibition. Hysteresis lives here because it depends on the value: once
active, a utilisation alert stays active until the value drops ``hysteresis`` below the
threshold, so a pool hovering around 75% does not flap.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .._models import Lease, PoolSnapshot
from .._tracker import group_by_callsite
from ._model import format_duration

__all__ = [
    "ALERT_NAMES",
    "INHIBITS",
    "Finding",
    "PoolHistory",
    "Rules",
    "linear_fit",
]

#: The alert names the rules produce (Prometheus-style, so the fleet rules can share them).
ALERT_NAMES = (
    "PoolUtilisationHigh",
    "PoolUtilisationCritical",
    "PoolExhausted",
    "SuspectedLeak",
    "PoolExhaustionPredicted",
    "CloseWaitGrowing",
)

#: A firing alert on the left silences these alerts of the same pool (Alertmanager's
#: inhibit_rules): an exhausted pool needs no "75% used" mail.
INHIBITS: dict[str, frozenset[str]] = {
    "PoolExhausted": frozenset(
        {"PoolUtilisationHigh", "PoolUtilisationCritical", "PoolExhaustionPredicted"}
    ),
    "PoolUtilisationCritical": frozenset({"PoolUtilisationHigh", "PoolExhaustionPredicted"}),
}


@dataclass(frozen=True, slots=True)
class Rules:
    """Thresholds and durations of every rule (seconds, fractions of 1).

    ``for`` durations delay firing until a condition has held that long; ``hysteresis`` is
    how far below its threshold utilisation must fall before a utilisation alert resolves.
    ``leak_age = 0`` disables suspected-leak alerts, ``predict_horizon = 0`` predictions,
    ``close_wait_growth = 0`` the CLOSE_WAIT rule. ``disabled`` names alerts never raised.
    """

    utilisation_warning: float = 0.75
    utilisation_critical: float = 0.90
    warning_for: float = 30.0
    critical_for: float = 10.0
    hysteresis: float = 0.05
    exhausted_hold: float = 300.0
    hang_after: float = 30.0
    leak_age: float = 60.0
    trend_window: float = 600.0
    trend_min_points: int = 5
    predict_horizon: float = 3600.0
    close_wait_growth: int = 20
    close_wait_window: float = 300.0
    repeat_interval: float = 3600.0
    disabled: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in ("utilisation_warning", "utilisation_critical", "hysteresis"):
            value = getattr(self, name)
            if not 0 <= value <= 10:
                raise ValueError(f"rules.{name} = {value!r}: expected a fraction such as 0.75")
        if self.utilisation_critical < self.utilisation_warning:
            raise ValueError(
                f"rules.utilisation_critical = {self.utilisation_critical!r} is below "
                f"rules.utilisation_warning = {self.utilisation_warning!r}: "
                "expected critical >= warning"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"rules.{f.name} = {value!r}: expected a value >= 0")
        unknown = set(self.disabled) - set(ALERT_NAMES)
        if unknown:
            raise ValueError(
                f"rules.disabled = {sorted(unknown)!r}: "
                f"expected alert names among {list(ALERT_NAMES)}"
            )

    def for_of(self, name: str) -> float:
        """How long a condition must hold before ``name`` fires."""
        if name == "PoolUtilisationHigh":
            return self.warning_for
        if name == "PoolUtilisationCritical":
            return self.critical_for
        return 0.0

    def replace(self, **changes: object) -> Rules:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on one pool at one sample."""

    name: str
    severity: str
    active: bool
    value: float | None = None
    summary: str = ""
    details: tuple[str, ...] = ()


def linear_fit(points: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of ``(t, v)`` points, as PromQL's ``predict_linear``."""
    pts = list(points)
    n = len(pts)
    if n < 2:
        return None
    mean_t = sum(t for t, _ in pts) / n
    mean_v = sum(v for _, v in pts) / n
    var = sum((t - mean_t) ** 2 for t, _ in pts)
    if var == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in pts) / var
    return slope, mean_v - slope * mean_t


class PoolHistory:
    """What the rules remember of one pool: leased counts over the trend window, exhaustions."""

    __slots__ = ("last_exhausted_at", "last_exhaustions", "points", "window")

    def __init__(self, window: float, *, new: bool = False) -> None:
        self.window = window
        self.points: deque[tuple[float, float]] = deque()
        # A pool that appeared while we watched starts from zero: exhaustions it had before
        # its first sample happened under our eyes. A pool already there when watching began
        # starts from its current count (old exhaustions are history, not news).
        self.last_exhaustions: int | None = 0 if new else None
        self.last_exhausted_at: float | None = None

    def update(self, now: float, pool: PoolSnapshot) -> None:
        self.points.append((now, float(pool.leased)))
        while self.points and now - self.points[0][0] > self.window:
            self.points.popleft()
        if self.last_exhaustions is not None and pool.exhaustions > self.last_exhaustions:
            self.last_exhausted_at = now
        self.last_exhaustions = pool.exhaustions

    def trend(self, rules: Rules) -> tuple[float, float] | None:
        """(leaks per second, fitted leased now) when enough history covers the window."""
        pts = self.points
        if len(pts) < max(2, rules.trend_min_points):
            return None
        if pts[-1][0] - pts[0][0] < rules.trend_window / 2:
            return None
        fit = linear_fit(pts)
        if fit is None:
            return None
        slope, intercept = fit
        return slope, slope * pts[-1][0] + intercept


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def evaluate_pool(
    rules: Rules,
    pool: PoolSnapshot,
    history: PoolHistory,
    now: float,
    was_active: dict[str, bool],
) -> list[Finding]:
    """Every rule's finding for ``pool`` (inactive ones too, so the engine can resolve)."""
    out: list[Finding] = []
    label = f"{pool.kind} {pool.name}"
    util = pool.utilisation
    cap = "unbounded" if pool.max is None else pool.max
    for name, severity, threshold in (
        ("PoolUtilisationHigh", "warning", rules.utilisation_warning),
        ("PoolUtilisationCritical", "critical", rules.utilisation_critical),
    ):
        if util is None:
            out.append(Finding(name, severity, False))
            continue
        limit = threshold - rules.hysteresis if was_active.get(name) else threshold
        active = util >= limit
        # The sentence is built only when someone may read it: most pools, most ticks, are fine.
        summary = (
            f"{label}: {pool.leased} of {cap} connections leased ({_pct(util)}), "
            f"threshold {_pct(threshold)}"
            if active or was_active.get(name)
            else ""
        )
        out.append(Finding(name, severity, active, util, summary))

    hung = [w for w in pool.waiters if rules.hang_after and w.waited >= rules.hang_after]
    recent = (
        history.last_exhausted_at is not None
        and now - history.last_exhausted_at <= rules.exhausted_hold
    )
    if hung or recent:
        if hung:
            oldest = max(w.waited for w in hung)
            what = (
                f"{len(hung)} caller(s) blocked waiting for a connection, the oldest for "
                f"{format_duration(oldest)} (at {hung[0].callsite}, thread {hung[0].thread_name})"
            )
        else:
            what = f"a caller timed out waiting for a connection ({pool.exhaustions} so far)"
        out.append(
            Finding(
                "PoolExhausted",
                "critical",
                True,
                float(pool.exhaustions),
                f"{label} is exhausted: {what}",
            )
        )
    else:
        out.append(Finding("PoolExhausted", "critical", False, float(pool.exhaustions)))

    if rules.leak_age:
        old = [
            lease
            for lease in pool.leases
            if lease.age >= rules.leak_age and lease.state in ("leased", "lost")
        ]
        if old:
            out.append(
                Finding(
                    "SuspectedLeak",
                    "warning",
                    True,
                    float(len(old)),
                    f"{label}: {len(old)} connection(s) leased for longer than "
                    f"{format_duration(rules.leak_age)}",
                    tuple(group_by_callsite(old)[:5]),
                )
            )
        else:
            out.append(Finding("SuspectedLeak", "warning", False, 0.0))

    if rules.predict_horizon and pool.max:
        trend = history.trend(rules)
        active = False
        summary = ""
        value = None
        if trend is not None:
            slope, fitted = trend
            value = slope * 3600
            if slope > 0:
                full_in = max(0.0, (pool.max - fitted) / slope)
                active = full_in <= rules.predict_horizon
                summary = (
                    f"{label}: at {value:.1f} leaks/h the pool is full in "
                    f"{format_duration(full_in)} ({pool.leased} of {pool.max} leased now)"
                )
        out.append(Finding("PoolExhaustionPredicted", "warning", active, value, summary))

    return [f for f in out if f.name not in rules.disabled]


def trend_facts(rules: Rules, pool: PoolSnapshot, history: PoolHistory) -> dict[str, object]:
    """Leak rate per hour and seconds until full (None when unknown or not growing)."""
    trend = history.trend(rules)
    if trend is None:
        return {"leaks_per_hour": None, "full_in_seconds": None}
    slope, fitted = trend
    full_in = None
    if slope > 0 and pool.max:
        full_in = max(0.0, (pool.max - fitted) / slope)
    return {"leaks_per_hour": round(slope * 3600, 2), "full_in_seconds": full_in}


def callsite_lines(leases: Iterable[Lease], limit: int = 5) -> list[str]:
    """The top call sites holding connections, with counts and response facts."""
    return group_by_callsite(list(leases))[:limit]
