"""Rendering: what a person needs to act, in a subject line and a plain-text body."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from ._model import Alert, Notification, format_duration, format_wall

__all__ = ["render"]


def _origin() -> str:
    try:
        host = socket.gethostname()
    except OSError:  # pragma: no cover - no hostname
        host = "?"
    return f"{host}, pid {os.getpid()}"


def render(
    kind: str,
    group: str,
    alerts: Sequence[Alert],
    facts: dict[str, Any],
    *,
    drill: bool = False,
    created: float,
) -> Notification:
    """A notification for ``alerts`` of one pool, its subject and body written out."""
    firing = [a for a in alerts if a.state == "firing"]
    resolved = [a for a in alerts if a.state == "resolved"]
    lead = firing or resolved
    # The strongest alert leads the subject: a person reads one line before deciding.
    lead = sorted(lead, key=lambda a: ("info", "warning", "critical").index(a.severity))
    top = lead[-1] if lead else None
    tag = "[poolwatch DRILL]" if drill else "[poolwatch]"
    if kind == "resolved":
        head = "RESOLVED"
    elif kind == "repeat":
        head = f"STILL FIRING {top.severity}" if top else "STILL FIRING"
    else:
        head = f"FIRING {top.severity}" if top else kind.upper()
    subject = f"{tag} {head}: {top.summary if top else group}"

    lines: list[str] = []
    if drill:
        lines += ["THIS IS A DRILL: a test of the alert path, not an incident.", ""]
    for alert in firing:
        muted = f" (inhibited by {alert.inhibited_by})" if alert.inhibited_by else ""
        since = format_wall(alert.fired_at or alert.since)
        lines.append(f"FIRING   {alert.name} ({alert.severity}) since {since}{muted}")
        lines.append(f"  {alert.summary}")
        lines.extend(f"    {d}" for d in alert.details)
    for alert in resolved:
        lines.append(f"RESOLVED {alert.name} ({alert.severity}) at {format_wall(alert.since)}")
        lines.append(f"  was: {alert.summary}")
        lines.extend(f"    {d}" for d in alert.details)
    lines.append("")
    if facts.get("pool"):
        lines.append(f"Pool:         {facts['pool']}")
    util = facts.get("utilisation")
    if "leased" in facts:
        used = f"{util * 100:.0f}%" if isinstance(util, (int, float)) else "unbounded pool"
        lines.append(
            f"Utilisation:  {used} ({facts.get('leased')} leased, {facts.get('idle', '?')} idle, "
            f"{facts.get('waiting', 0)} waiting, max {facts.get('max') or 'unbounded'})"
        )
    rate = facts.get("leaks_per_hour")
    full_in = facts.get("full_in_seconds")
    if rate is not None:
        trend = f"{rate:+.1f} leaks/h"
        if full_in is not None:
            trend += f"; at this rate the pool is full in {format_duration(full_in)}"
        lines.append(f"Trend:        {trend}")
    elif "leased" in facts:
        lines.append("Trend:        not enough history yet for a leak rate")
    if "exhaustions" in facts:
        lines.append(
            f"Counters:     {facts['exhaustions']} exhaustions, "
            f"{facts.get('confirmed_leaks', 0)} confirmed leaks"
        )
    sites = facts.get("callsites") or []
    if sites:
        lines.append("Held by (call sites of leased connections, most first):")
        lines.extend(f"  {s}" for s in sites)
    leak_sites = facts.get("leak_callsites") or []
    if leak_sites:
        lines.append("Confirmed leaks by call site:")
        lines.extend(f"  {s}" for s in leak_sites)
    for note in facts.get("notes") or []:
        lines.append(f"Note:         {note}")
    if facts.get("admin_url"):
        lines.append(f"Admin:        {facts['admin_url']}")
    lines.append(f"Sent at:      {format_wall(created)} from {_origin()}")
    return Notification(
        kind=kind,
        group=group,
        subject=subject,
        text="\n".join(lines) + "\n",
        alerts=tuple(alerts),
        facts=facts,
        created=created,
        drill=drill,
    )
