"""The admin endpoints' data: plain JSON values built from snapshots, never from live objects.

Nothing here holds the tracker's lock or touches a client library. What a value may contain is
limited to what the tracker keeps (pool labels without credentials, call sites, response status,
content type and framing, socket addresses), so no endpoint can show a URL's password or query,
or a request's headers.
"""

from __future__ import annotations

import importlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from .._models import Lease, PoolSnapshot, Snapshot, SocketInfo

if TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = [
    "CensusUnavailable",
    "census_join",
    "health",
    "jsonable",
    "lease_json",
    "leak_sites",
    "pool_json",
    "runtime_part",
    "timeline",
]

#: Lease states a ``/leases?state=`` filter accepts.
LEASE_STATES = ("leased", "lost", "closed", "gc_returned", "orphaned")


class CensusUnavailable(Exception):
    """The socket census cannot run here; the message says why."""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def _endpoint(pair: tuple[str, int] | None) -> str | None:
    if pair is None:
        return None
    host, port = pair
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def jsonable(value: Any) -> Any:
    """A JSON value from an alert, a ledger entry, a dataclass or a mapping (else its str)."""
    to_dict = getattr(value, "to_dict", None) or getattr(value, "as_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def pool_json(pool: PoolSnapshot, suspected: int | None = None) -> dict[str, Any]:
    """A pool's numbers: leased/idle/waiting/max, utilisation and counters."""
    util = pool.utilisation
    data: dict[str, Any] = {
        "label": f"{pool.kind} {pool.name}",
        "kind": pool.kind,
        "name": pool.name,
        "leased": pool.leased,
        "idle": pool.idle,
        "waiting": pool.waiting,
        "max": pool.max,
        "utilisation": None if util is None else round(util, 4),
        "checkouts": pool.checkouts,
        "checkins": pool.checkins,
        "exhaustions": pool.exhaustions,
        "confirmed_leaks": pool.confirmed_leaks,
        "orphans": pool.orphans,
        "leaks_by_callsite": [
            {"callsite": str(site), "count": count} for site, count in pool.leaks_by_callsite
        ],
    }
    if suspected is not None:
        data["suspected_leaks"] = suspected
    return data


def _socket_json(info: SocketInfo | None, states: dict[int, str] | None) -> dict[str, Any] | None:
    if info is None:
        return None
    state = info.state
    if state is None and states is not None and info.inode is not None:
        state = states.get(info.inode)
    return {
        "local": _endpoint(info.local),
        "peer": _endpoint(info.peer),
        "inode": info.inode,
        "fd": info.fd,
        "state": state,
    }


def lease_json(lease: Lease, states: dict[int, str] | None = None) -> dict[str, Any]:
    """A lease: pool, age, call site, thread/task, response facts and socket state."""
    response = None
    if lease.response is not None:
        r = lease.response
        response = {
            "status": r.status,
            "content_type": r.content_type,
            "content_length": r.content_length,
            "chunked": r.chunked,
            "text": r.describe(),
        }
    return {
        "seq": lease.seq,
        "pool": lease.pool,
        "pool_kind": lease.pool_kind,
        "state": lease.state,
        "age": round(lease.age, 3),
        "acquired": _iso(lease.acquired_wall),
        "callsite": str(lease.callsite),
        "stack": [str(frame) for frame in lease.stack],
        "thread": lease.thread_name,
        "thread_id": lease.thread_id,
        "task": lease.task_name,
        "where": lease.where,
        "response": response,
        "socket": _socket_json(lease.socket, states),
        "note": lease.note,
    }


def leak_sites(snap: Snapshot, limit: int = 10) -> list[dict[str, Any]]:
    """Call sites holding or having lost connections, most first, with the responses involved.

    Live leases give counts, ages and responses; confirmed leaks add the tracker's per-site
    counters and, while they are in the event history, the responses of the leases lost.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def group(pool: str, site: str) -> dict[str, Any]:
        entry = groups.get((pool, site))
        if entry is None:
            entry = groups[pool, site] = {
                "pool": pool,
                "callsite": site,
                "live": 0,
                "confirmed": 0,
                "oldest_age": None,
                "responses": Counter(),
                "threads": Counter(),
            }
        return entry

    seen: set[int] = set()
    for pool in snap.pools:
        label = f"{pool.kind} {pool.name}"
        for lease in pool.leases:
            seen.add(lease.seq)
            entry = group(label, str(lease.callsite))
            if lease.state == "leased":  # "lost" ones are in the confirmed counter already
                entry["live"] += 1
            age = round(lease.age, 3)
            oldest = entry["oldest_age"]
            entry["oldest_age"] = age if oldest is None else max(oldest, age)
            entry["responses"][_response_text(lease)] += 1
            entry["threads"][lease.where] += 1
        for site, count in pool.leaks_by_callsite:
            group(label, str(site))["confirmed"] += count
    from_events: Counter[tuple[str, str]] = Counter()
    for event in snap.events:
        ended = event.lease
        if event.kind == "leak.confirmed" and ended is not None and ended.seq not in seen:
            seen.add(ended.seq)
            key = (ended.pool, str(ended.callsite))
            group(*key)["responses"][_response_text(ended)] += 1
            from_events[key] += 1
    for key, count in from_events.items():
        # A pool collected since keeps no counters; its leak events still count.
        groups[key]["confirmed"] = max(groups[key]["confirmed"], count)
    out = []
    for entry in groups.values():
        responses: Counter[str] = entry.pop("responses")
        threads: Counter[str] = entry.pop("threads")
        entry["responses"] = [{"text": t, "count": n} for t, n in responses.most_common(5)]
        entry["threads"] = [{"where": t, "count": n} for t, n in threads.most_common(3)]
        out.append(entry)
    out.sort(key=lambda e: (-(e["live"] + e["confirmed"]), e["pool"], e["callsite"]))
    return out[:limit]


def _response_text(lease: Lease) -> str:
    return lease.response.describe() if lease.response is not None else "no response read yet"


def census_join(tracker: Tracker) -> dict[str, Any]:
    """This process's TCP sockets joined with the live leases (``census.join_leases``).

    Each lease gets its socket's TCP state, and CLOSE_WAIT sockets are split into leased
    (leaks), idle (pooled, harmless) and unknown. Raises ``CensusUnavailable`` when
    ``poolwatch.census`` is missing or cannot read here.
    """
    try:
        census: Any = importlib.import_module("poolwatch.census")
        join_leases = census.join_leases
    except Exception as exc:
        raise CensusUnavailable(
            f"the socket census is not available in this build ({type(exc).__name__}: {exc})"
        ) from None
    try:
        joined = join_leases(tracker)
    except Exception as exc:
        raise CensusUnavailable(
            f"the socket census cannot read this process's sockets: {exc}"
        ) from None
    return {
        "available": True,
        **jsonable(joined),
        "sockets": [jsonable(sock) for sock in joined.sockets],
    }


def census_states() -> dict[int, str] | None:
    """inode -> TCP state of this process's sockets, or None without a census."""
    try:
        census: Any = importlib.import_module("poolwatch.census")
        return {
            int(s.inode): str(s.state) for s in census.process_sockets() if getattr(s, "inode", 0)
        }
    except Exception:
        return None


def runtime_part(runtime: Any, *names: str) -> Any:
    """``runtime.a.b`` or None when any part is missing (every runtime part is optional)."""
    value = runtime
    for name in names:
        if value is None:
            return None
        value = getattr(value, name, None)
    return value


def health(
    snap: Snapshot,
    runtime: Any,
    *,
    critical: float,
    exhaustion_window: float,
    now: float,
) -> dict[str, dict[str, Any]]:
    """Dropwizard-style checks: ``{name: {"healthy": bool, "message": str}}``."""
    checks: dict[str, dict[str, Any]] = {}
    full = []
    for pool in snap.pools:
        util = pool.utilisation
        if util is not None and util >= critical:
            full.append(
                f"{pool.kind} {pool.name}: {pool.leased} of {pool.max} leased ({util:.0%}), "
                f"{pool.waiting} waiting"
            )
    checks["pools"] = {
        "healthy": not full,
        "message": "; ".join(full)
        if full
        else f"{_count(len(snap.pools), 'pool')} below {critical:.0%} utilisation",
    }
    recent: Counter[str] = Counter()
    last: dict[str, float] = {}
    for event in snap.events:
        if event.kind == "exhausted" and now - event.wall <= exhaustion_window:
            recent[event.pool] += 1
            last[event.pool] = max(last.get(event.pool, 0.0), event.wall)
    checks["exhaustion"] = {
        "healthy": not recent,
        "message": "; ".join(
            f"{pool}: exhausted {_count(n, 'time')} in the last {exhaustion_window:g} s, "
            f"last {now - last[pool]:.1f} s ago"
            for pool, n in recent.most_common()
        )
        if recent
        else f"no pool exhausted in the last {exhaustion_window:g} s",
    }
    ledger = runtime_part(runtime, "ledger")
    if ledger is not None and callable(getattr(ledger, "healthy", None)):
        ok, message = ledger.healthy()
        checks["alert_delivery"] = {"healthy": bool(ok), "message": str(message)}
    sampler = runtime_part(runtime, "sampler")
    if sampler is not None:
        alive = bool(getattr(sampler, "alive", False))
        checks["sampler"] = {
            "healthy": alive,
            "message": "sampling" if alive else "the sampler thread is not running or is stuck",
        }
    return checks


def timeline(runtime: Any, labels: Iterable[str]) -> dict[str, Any] | None:
    """Leased, waiting and CLOSE_WAIT series from the sampler, or None when none runs."""
    sampler = runtime_part(runtime, "sampler")
    series_of = getattr(sampler, "series", None)
    if not callable(series_of):
        return None
    out: dict[str, Any] = {"pools": {}, "close_wait": None}
    for label in labels:
        out["pools"][label] = {
            metric: [[round(t, 3), v] for t, v in series_of(f"{metric}/{label}")]
            for metric in ("leased", "waiting", "max")
        }
    close_wait = series_of("tcp.close_wait")
    if close_wait:
        out["close_wait"] = [[round(t, 3), v] for t, v in close_wait]
    return out
