"""The census joined with the tracker: which CLOSE_WAIT socket is which leaked connection.

A CLOSE_WAIT count alone misleads (FACTS.md): idle pooled sockets sit in CLOSE_WAIT after the
server's keep-alive timeout, harmlessly, and a dropped urllib3 leak leaves none. Joined by inode
(``/proc/self/fd`` vs the inode of each leased or idle connection's socket), each CLOSE_WAIT
socket of this process is *leased* (a leak, with the line that took it), *idle* (in a pool,
harmless) or *unknown* (not seen through any instrumented pool).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .._models import Lease, SocketInfo
from ._census import by_state, census
from ._model import TcpSocket, format_endpoint

if TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = ["LeaseCensus", "join_leases"]

#: The state of a socket whose fd is open but that no TCP table lists (reset, never
#: connected, or already closed by the kernel): netstat's name for TCP_CLOSE.
CLOSED = "CLOSE"


@dataclass(frozen=True, slots=True)
class LeaseCensus:
    """This process's TCP sockets joined with the live leases and idle pooled connections.

    ``leases``: every live lease, its ``socket.state`` filled in from the census.
    ``close_wait_leased``: (lease, socket) pairs: CLOSE_WAIT sockets held by a lease (leaks).
    ``close_wait_idle``: (pool label, socket) pairs: idle pooled sockets (harmless).
    ``close_wait_unknown``: CLOSE_WAIT sockets no instrumented pool accounts for.
    """

    pid: int
    leases: tuple[Lease, ...]
    sockets: tuple[TcpSocket, ...]
    close_wait_leased: tuple[tuple[Lease, TcpSocket], ...]
    close_wait_idle: tuple[tuple[str, TcpSocket], ...]
    close_wait_unknown: tuple[TcpSocket, ...]

    @property
    def counts(self) -> dict[str, int]:
        """This process's TCP sockets per state."""
        return by_state(self.sockets)

    @property
    def close_wait(self) -> dict[str, int]:
        """``{"leased": n, "idle": n, "unknown": n}`` for this process's CLOSE_WAIT sockets."""
        return {
            "leased": len(self.close_wait_leased),
            "idle": len(self.close_wait_idle),
            "unknown": len(self.close_wait_unknown),
        }

    def describe(self) -> str:
        """A few lines: the CLOSE_WAIT split, then each leaked socket with its call site."""
        split = self.close_wait
        total = sum(split.values())
        lines = [
            f"process {self.pid}: {len(self.sockets)} TCP sockets, {total} CLOSE_WAIT "
            f"({split['leased']} leased = leaks, {split['idle']} idle in a pool, "
            f"{split['unknown']} unknown)"
        ]
        for lease, sock in self.close_wait_leased:
            lines.append(
                f"  leased {lease.age:.1f} s ago at {lease.callsite} ({lease.pool}), "
                f"socket {sock.describe()}"
            )
        for pool, sock in self.close_wait_idle:
            lines.append(f"  idle in {pool}: socket {sock.describe()}")
        lines.extend(f"  unknown: socket {sock.describe()}" for sock in self.close_wait_unknown)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (no secrets: pools are named without credentials)."""
        return {
            "pid": self.pid,
            "counts": self.counts,
            "close_wait": {
                **self.close_wait,
                "leased_sockets": [
                    {**_lease_dict(lease), "socket": sock.as_dict()}
                    for lease, sock in self.close_wait_leased
                ],
                "idle_sockets": [
                    {"pool": pool, "socket": sock.as_dict()} for pool, sock in self.close_wait_idle
                ],
                "unknown_sockets": [sock.as_dict() for sock in self.close_wait_unknown],
            },
            "leases": [_lease_dict(lease) for lease in self.leases],
        }

    def __repr__(self) -> str:
        split = self.close_wait
        return (
            f"<LeaseCensus pid {self.pid} [leases {len(self.leases)} | CLOSE_WAIT leased "
            f"{split['leased']} | idle {split['idle']} | unknown {split['unknown']}]>"
        )


def _lease_dict(lease: Lease) -> dict[str, object]:
    sock = lease.socket
    return {
        "pool": lease.pool,
        "callsite": str(lease.callsite),
        "age": round(lease.age, 3),
        "state": lease.state,
        "thread": lease.thread_name,
        "task": lease.task_name,
        "socket_state": sock.state if sock is not None else None,
        "local": format_endpoint(sock.local) if sock is not None and sock.local else None,
        "remote": format_endpoint(sock.peer) if sock is not None and sock.peer else None,
        "inode": sock.inode if sock is not None else None,
    }


class _Index:
    """Find a socket of the census by inode, or by its two endpoints where inodes are unknown."""

    def __init__(self, sockets: Iterable[TcpSocket]) -> None:
        self.by_inode: dict[int, TcpSocket] = {}
        self.by_ends: dict[tuple[tuple[str, int], tuple[str, int]], TcpSocket] = {}
        for sock in sockets:
            if sock.inode:
                self.by_inode[sock.inode] = sock
            self.by_ends[(sock.local, sock.remote)] = sock

    def find(self, info: SocketInfo) -> TcpSocket | None:
        if info.inode and info.inode in self.by_inode:
            return self.by_inode[info.inode]
        if info.local and info.peer:
            key = ((str(info.local[0]), int(info.local[1])), (str(info.peer[0]), int(info.peer[1])))
            return self.by_ends.get(key)
        return None


def join_leases(
    tracker: Tracker | None = None, *, proc: str = "/proc", backend: str = "auto"
) -> LeaseCensus:
    """Join this process's TCP sockets with ``tracker``'s live leases and idle connections.

    ``tracker`` defaults to the one ``poolwatch.instrument()`` feeds. Each returned lease
    carries its socket's TCP state (``CLOSE`` when its fd is open but no TCP table lists it);
    the process's CLOSE_WAIT sockets are split into leased, idle and unknown.
    """
    if tracker is None:
        from .._api import get_tracker

        tracker = get_tracker()
    leases = tracker.snapshot(sockets=True).leases
    idle = tracker.idle_sockets()
    pid = os.getpid()
    taken = census(pid=pid, proc=proc, backend=backend)
    index = _Index(taken.sockets)

    joined: list[Lease] = []
    leased_at: dict[int, tuple[Lease, TcpSocket]] = {}
    for original in leases:
        lease, info = original, original.socket
        if info is not None:
            found = index.find(info)
            if found is not None:
                state: str | None = found.state
            elif info.inode is not None and taken.backend != "psutil":
                state = CLOSED
            else:
                state = None
            lease = replace(lease, socket=replace(info, state=state))
            if found is not None:
                leased_at[id(found)] = (lease, found)
        joined.append(lease)
    idle_at: dict[int, tuple[str, TcpSocket]] = {}
    for pool, info in idle:
        found = index.find(info)
        if found is not None:
            idle_at[id(found)] = (pool, found)

    leased_cw: list[tuple[Lease, TcpSocket]] = []
    idle_cw: list[tuple[str, TcpSocket]] = []
    unknown_cw: list[TcpSocket] = []
    for sock in taken.sockets:
        if sock.state != "CLOSE_WAIT":
            continue
        if id(sock) in leased_at:
            leased_cw.append(leased_at[id(sock)])
        elif id(sock) in idle_at:
            idle_cw.append(idle_at[id(sock)])
        else:
            unknown_cw.append(sock)
    return LeaseCensus(
        pid, tuple(joined), taken.sockets, tuple(leased_cw), tuple(idle_cw), tuple(unknown_cw)
    )
