"""Optional readings beside the tracker: the socket census and the alert delivery ledger.

Both come from other parts of poolwatch that may be absent (the census needs Linux) or not
running (alerts). Each reader returns None when its source is not there, so exporters skip the
metric instead of failing the scrape.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["census_states", "ledger_outcomes"]


def census_states() -> Counter[str] | None:
    """This process's TCP sockets counted by state, or None without ``poolwatch.census``."""
    try:
        census: Any = importlib.import_module("poolwatch.census")
        process_sockets: Callable[[], Iterable[Any]] = census.process_sockets
    except Exception:
        return None
    return Counter(str(getattr(sock, "state", "UNKNOWN")) for sock in process_sockets())


def _field(entry: Any, name: str) -> Any:
    if isinstance(entry, dict):
        return entry.get(name)
    return getattr(entry, name, None)


def ledger_outcomes(runtime: Any, limit: int = 100_000) -> Counter[tuple[str, str]] | None:
    """Notifications per (channel, outcome) from a runtime's delivery ledger, or None.

    Prefers a ledger's own ``counts()`` (exact over its whole life); otherwise counts its
    ``entries(limit)``, the final outcome of each.
    """
    ledger = getattr(runtime, "ledger", None) if runtime is not None else None
    if ledger is None:
        return None
    counts = getattr(ledger, "counts", None)
    if callable(counts):
        return Counter({(str(k[0]), str(k[1])): int(v) for k, v in dict(counts()).items()})
    entries = getattr(ledger, "entries", None)
    if not callable(entries):
        return None
    out: Counter[tuple[str, str]] = Counter()
    for entry in entries(limit):
        channel = _field(entry, "channel") or "unknown"
        outcome = _field(entry, "outcome") or _field(entry, "status") or "unknown"
        out[str(channel), str(outcome)] += 1
    return out
