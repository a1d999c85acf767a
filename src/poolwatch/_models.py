"""Frozen value objects that consumers read: call sites, leases, pool snapshots, events."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "CallSite",
    "Event",
    "Lease",
    "PoolSnapshot",
    "ResponseFacts",
    "Snapshot",
    "SocketInfo",
    "Waiter",
]


def _short_path(path: str) -> str:
    """A path relative to the working directory when it lies below it, else as it is."""
    cwd = os.getcwd()
    if path.startswith(cwd + os.sep):
        return path[len(cwd) + 1 :]
    return path


@dataclass(frozen=True, slots=True)
class CallSite:
    """The first frame of user code that asked for a connection."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{_short_path(self.filename)}:{self.lineno} in {self.function}"


UNKNOWN_CALLSITE = CallSite("<unknown>", 0, "<unknown>")


class ResponseFacts(NamedTuple):
    """What the response on a leased connection looked like, without any secret in it.

    A NamedTuple rather than a frozen dataclass: adapters build one per response, and a
    frozen dataclass's ``__init__`` costs several times more.
    """

    status: int | None = None
    content_type: str | None = None
    content_length: int | None = None
    chunked: bool = False

    @property
    def has_body(self) -> bool | None:
        """True when a body follows the headers, False when none can, None when unknown."""
        if self.status is not None and (self.status in (204, 304) or self.status < 200):
            return False
        if self.chunked:
            return True
        if self.content_length is not None:
            return self.content_length > 0
        return None

    def describe(self) -> str:
        """`403 text/html, 1234-byte body` / `204, no body` / `200 chunked body`."""
        head = str(self.status) if self.status is not None else "no status yet"
        if self.content_type:
            head += f" {self.content_type.split(';')[0].strip()}"
        if self.chunked:
            body = "chunked body"
        elif self.content_length is not None:
            body = f"{self.content_length}-byte body" if self.content_length else "empty body"
        elif self.has_body is False:
            body = "no body"
        else:
            body = "body until close"
        return f"{head}, {body}"


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """The OS identity of a connection's socket: enough to join it with a socket census."""

    local: tuple[str, int] | None = None
    peer: tuple[str, int] | None = None
    inode: int | None = None
    fd: int | None = None
    state: str | None = None

    def describe(self) -> str:
        parts = []
        if self.local and self.peer:
            parts.append(f"{self.local[0]}:{self.local[1]} -> {self.peer[0]}:{self.peer[1]}")
        if self.inode is not None:
            parts.append(f"inode {self.inode}")
        if self.state:
            parts.append(self.state)
        return ", ".join(parts) if parts else "socket closed"


@dataclass(frozen=True, slots=True)
class Lease:
    """One checkout of a connection from a pool, as it stood when the snapshot was taken.

    ``state`` is ``leased`` (out of the pool, owner alive), ``lost`` (the owner was garbage
    collected and the slot was never returned), ``closed`` (the pool was closed under it),
    ``returned`` / ``discarded`` / ``gc_returned`` / ``orphaned`` for leases that ended.
    """

    seq: int
    pool: str
    pool_kind: str
    connection_id: int
    acquired_at: float
    acquired_wall: float
    age: float
    callsite: CallSite
    stack: tuple[CallSite, ...]
    thread_id: int
    thread_name: str
    task_name: str | None
    response: ResponseFacts | None
    state: str
    socket: SocketInfo | None = None
    note: str | None = None

    @property
    def where(self) -> str:
        """`thread MainThread` or `task fetch-3 on thread MainThread`."""
        if self.task_name:
            return f"task {self.task_name} on thread {self.thread_name}"
        return f"thread {self.thread_name}"

    def describe(self) -> str:
        """Two lines naming the pool, the acquiring line, the age, thread/task and response."""
        first = f"{self.pool}: {self.callsite}"
        what = {
            "leased": "leased",
            "lost": "dropped unread, its slot never returned to the pool; leased",
            "closed": "pool closed while leased; leased",
            "gc_returned": "returned only by the garbage collector; leased",
            "orphaned": "orphaned by the library; leased",
        }.get(self.state, self.state)
        second = f"{what} {self.age:.2f} s ago on {self.where}"
        if self.response is not None:
            second += f", response {self.response.describe()}"
        else:
            second += ", no response read yet"
        if self.socket is not None:
            second += f", socket {self.socket.describe()}"
        if self.note:
            second += f" ({self.note})"
        lines = [first, "    " + second]
        lines.extend(f"    called from {frame}" for frame in self.stack)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Waiter:
    """A caller blocked inside the pool, waiting for a connection."""

    pool: str
    since: float
    waited: float
    thread_name: str
    callsite: CallSite


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """One pool's state: the PoolStats of Apache HttpClient plus poolwatch's counters."""

    kind: str
    name: str
    leased: int
    idle: int | None
    waiting: int
    max: int | None
    checkouts: int
    checkins: int
    exhaustions: int
    confirmed_leaks: int
    orphans: int
    leases: tuple[Lease, ...] = ()
    waiters: tuple[Waiter, ...] = ()
    leaks_by_callsite: tuple[tuple[CallSite, int], ...] = ()

    @property
    def utilisation(self) -> float | None:
        """leased / max, or None for an unbounded pool."""
        if not self.max:
            return None
        return self.leased / self.max

    def __repr__(self) -> str:
        idle = "?" if self.idle is None else str(self.idle)
        cap = "unbounded" if self.max is None else str(self.max)
        return (
            f"<Pool {self.kind} {self.name} [leased {self.leased} | idle {idle} | "
            f"waiting {self.waiting} | max {cap}]>"
        )


@dataclass(frozen=True, slots=True)
class Event:
    """Something notable the tracker saw: an exhaustion, a confirmed leak, an orphan ..."""

    kind: str
    pool: str
    wall: float
    message: str
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the tracker knows at one instant, copied out from under its lock."""

    taken_at: float
    pools: tuple[PoolSnapshot, ...]
    events: tuple[Event, ...] = ()
    internal_errors: dict[str, int] = field(default_factory=dict)

    @property
    def leases(self) -> tuple[Lease, ...]:
        """Every live lease of every pool, oldest first."""
        out = [lease for pool in self.pools for lease in pool.leases]
        out.sort(key=lambda lease: lease.acquired_at)
        return tuple(out)
