"""``TcpSocket``: one row of the TCP table, and the raw rows the readers produce.

The readers (netlink, procfs) produce *raw rows* (``_raw.RawRow``), plain tuples that are cheap
to build in bulk; only the rows a caller keeps become ``TcpSocket`` values.
"""

from __future__ import annotations

from _socket import AF_INET6, inet_ntop
from dataclasses import dataclass

from ._raw import RawRow
from ._states import STATE_NAMES

__all__ = ["TcpSocket", "format_endpoint", "to_socket"]


def format_endpoint(endpoint: tuple[str, int]) -> str:
    """`127.0.0.1:8080` / `[::1]:8080`, the way ss prints them."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, repr=False)
class TcpSocket:
    """One TCP socket as the kernel's table shows it.

    ``state`` is netstat's name (``CLOSE_WAIT``, ``ESTABLISHED``, ``TIME_WAIT`` ...);
    ``local`` and ``remote`` are ``(host, port)``; ``family`` is ``socket.AF_INET`` or
    ``socket.AF_INET6``; ``inode`` is 0 for sockets no process holds (TIME_WAIT, orphans);
    ``fd`` is the descriptor in the process whose census this is, when known.
    """

    family: int
    state: str
    local: tuple[str, int]
    remote: tuple[str, int]
    inode: int
    uid: int | None = None
    fd: int | None = None

    @property
    def ip_version(self) -> int:
        """4 or 6."""
        return 6 if self.family == AF_INET6 else 4

    def describe(self) -> str:
        """`CLOSE_WAIT 127.0.0.1:41234 -> 127.0.0.1:8080 (inode 123)`."""
        text = f"{self.state} {format_endpoint(self.local)} -> {format_endpoint(self.remote)}"
        if self.inode:
            text += f" (inode {self.inode})"
        return text

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "family": f"ipv{self.ip_version}",
            "state": self.state,
            "local": format_endpoint(self.local),
            "remote": format_endpoint(self.remote),
            "inode": self.inode,
            "uid": self.uid,
            "fd": self.fd,
        }

    def __repr__(self) -> str:
        return f"<TcpSocket {self.describe()}>"


def to_socket(row: RawRow, fd: int | None = None) -> TcpSocket:
    """A ``TcpSocket`` from a raw row."""
    family, state, src, sport, dst, dport, uid, inode = row
    name = STATE_NAMES[state] if 0 < state < len(STATE_NAMES) else f"UNKNOWN_{state}"
    return TcpSocket(
        family,
        name,
        (inet_ntop(family, src), sport),
        (inet_ntop(family, dst), dport),
        inode,
        uid,
        fd,
    )
