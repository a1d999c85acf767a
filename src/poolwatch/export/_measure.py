"""One reading of every pool, shaped for exporters: the numbers both Prometheus and OTel show.

Metrics want counters and live-lease ages, not frozen leases: freezing 10,000 leases into
``Lease`` values costs tens of milliseconds, while reading counters and ages costs well under
one. So the counters come from ``Tracker.snapshot(leases=False)`` (copied under the tracker's
lock) and the ages from one ``list()`` copy per pool of the live records (atomic under the GIL,
and no lock held while the ages are binned).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .._tracker import LeaseRecord, PoolRecord, Tracker

__all__ = ["DB_KINDS", "Measurement", "PoolMeasure", "measure"]

#: Pool kinds reported under the database semantic conventions (db.client.connection.*).
DB_KINDS = frozenset(
    {"sqlalchemy", "redis", "psycopg", "psycopg_pool", "asyncpg", "aiomysql", "pymysql"}
)

#: A lease older than this (seconds) is a suspected leak unless the caller says otherwise (the
#: alert rules' default ``leak_age``).
DEFAULT_SUSPECT_AFTER = 60.0


@dataclass(slots=True)
class PoolMeasure:
    """The numbers of the pools sharing one label (`urllib3 http://127.0.0.1:8080`).

    Two pool objects for the same host (two ``PoolManager``s) would give two series with the
    same labels, which Prometheus rejects; they are summed under their common label.
    """

    label: str
    kind: str
    name: str
    family: str
    server_address: str
    server_port: str
    leased: int = 0
    idle: int | None = None
    waiting: int = 0
    max: int | None = None
    exhaustions: int = 0
    confirmed_leaks: int = 0
    leaks_by_callsite: Counter[str] = field(default_factory=Counter)
    ages: list[float] = field(default_factory=list)
    suspected: int = 0


@dataclass(slots=True)
class Measurement:
    """Every pool's numbers and poolwatch's own internal error counts, at one instant."""

    pools: list[PoolMeasure]
    internal_errors: dict[str, int]


def _family(kind: str, name: str) -> tuple[str, str, str]:
    """("http" | "db", server.address, server.port) of a pool; address/port "" when unknown."""
    if kind in DB_KINDS:
        return "db", "", ""
    if name.startswith(("http://", "https://")):
        try:
            parts = urlsplit(name)
            port = parts.port
        except ValueError:
            return "http", "", ""
        if port is None:
            port = 443 if parts.scheme == "https" else 80
        return "http", parts.hostname or "", str(port)
    return "http", "", ""


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _copy_live(record: PoolRecord) -> list[LeaseRecord]:
    """The pool's live lease records. One C-level ``list()`` per container: atomic under the
    GIL; a free-threaded build may see the dict change mid-copy, so retry a few times."""
    for _ in range(3):
        try:
            return [*list(record.leases.values()), *list(record.lost)]
        except RuntimeError:
            continue
    return []


def measure(
    tracker: Tracker, *, suspect_after: float = DEFAULT_SUSPECT_AFTER, ages: bool = True
) -> Measurement:
    """Read every pool's counters and live-lease ages; pools sharing a label are summed.

    ``ages=False`` skips the per-lease pass (``ages`` stays empty, ``suspected`` 0).
    """
    snap = tracker.snapshot(leases=False)
    by_label: dict[str, PoolMeasure] = {}
    for pool in snap.pools:
        label = f"{pool.kind} {pool.name}"
        entry = by_label.get(label)
        if entry is None:
            family, address, port = _family(pool.kind, pool.name)
            entry = by_label[label] = PoolMeasure(
                label, pool.kind, pool.name, family, address, port
            )
        entry.leased += pool.leased
        entry.idle = _add(entry.idle, pool.idle)
        entry.waiting += pool.waiting
        entry.max = _add(entry.max, pool.max)
        entry.exhaustions += pool.exhaustions
        entry.confirmed_leaks += pool.confirmed_leaks
        for site, count in pool.leaks_by_callsite:
            entry.leaks_by_callsite[str(site)] += count
    if not ages:
        return Measurement(list(by_label.values()), dict(snap.internal_errors))
    # Ages: monotonic acquired_at of each live record; `tracker.wall(0.0)` is the offset
    # between the tracker's wall and monotonic clocks, so this needs no private clock.
    offset = tracker.wall(0.0)
    now = tracker.wall() - offset
    for record in tracker.iter_pools():
        entry = by_label.get(record.label)
        if entry is None:
            continue
        live = _copy_live(record)
        pool_ages = [now - lease.acquired_at for lease in live]
        entry.ages.extend(pool_ages)
        entry.suspected += sum(1 for age in pool_ages if age >= suspect_after)
    return Measurement(list(by_label.values()), dict(snap.internal_errors))
