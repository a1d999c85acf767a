"""The values that flow from the engine to the channels: alerts and notifications.

Both are plain frozen data that round-trip through JSON, because a notification waiting for
delivery is spooled to disk and may be sent by the next process.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SEVERITIES", "Alert", "Notification", "format_duration", "format_wall"]

#: Weakest first; a stronger alert on the same pool inhibits a weaker one.
SEVERITIES = ("info", "warning", "critical")


def format_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 20 min`, `2 d 4 h`: what a person reads at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_wall(wall: float) -> str:
    """UTC, to the second: `2026-11-28 22:51:03 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of one pool as it stands: ``pending``, ``firing`` or ``resolved``.

    ``since`` is the wall time it entered its current state; ``fired_at`` when it first fired.
    ``inhibited_by`` names the stronger alert that silences it, if any.
    """

    name: str
    severity: str
    pool: str
    state: str
    summary: str
    since: float
    value: float | None = None
    details: tuple[str, ...] = ()
    fired_at: float | None = None
    inhibited_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["details"] = list(self.details)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(**{**data, "details": tuple(data.get("details", ()))})


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for every channel: a group of alerts of one pool, already rendered.

    ``kind`` is ``firing``, ``resolved``, ``repeat``, ``channel`` (a channel is failing or
    recovered) or ``test`` (a drill). ``facts`` holds what the message says, as JSON values,
    for the webhook payload.
    """

    kind: str
    group: str
    subject: str
    text: str
    alerts: tuple[Alert, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    drill: bool = False

    @property
    def severity(self) -> str:
        """The strongest severity among its alerts (``info`` when it has none)."""
        ranks = [SEVERITIES.index(a.severity) for a in self.alerts if a.severity in SEVERITIES]
        return SEVERITIES[max(ranks)] if ranks else "info"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "group": self.group,
            "subject": self.subject,
            "text": self.text,
            "alerts": [a.to_dict() for a in self.alerts],
            "facts": self.facts,
            "created": self.created,
            "drill": self.drill,
            "severity": self.severity,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(
            kind=data["kind"],
            group=data["group"],
            subject=data["subject"],
            text=data["text"],
            alerts=tuple(Alert.from_dict(a) for a in data.get("alerts", ())),
            facts=dict(data.get("facts", {})),
            created=float(data["created"]),
            id=str(data["id"]),
            drill=bool(data.get("drill", False)),
        )
