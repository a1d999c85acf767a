"""Other platforms: psutil's connection table, when psutil is installed.

psutil names states as netstat does, so they map one to one. It exposes no inode: sockets get
inode 0 and the lease join falls back to matching local and remote addresses.
"""

from __future__ import annotations

from typing import Any

from ._errors import CensusNotSupported, CensusPermissionError, ProcessNotFound
from ._model import TcpSocket
from ._raw import AF_INET, AF_INET6
from ._states import TCP_STATES

__all__ = ["psutil_sockets"]


def _module() -> Any:
    try:
        import psutil
    except ImportError:
        raise CensusNotSupported(
            "the socket census reads netlink or /proc on Linux; on this platform it needs "
            "psutil: pip install psutil"
        ) from None
    return psutil


def _endpoint(addr: Any) -> tuple[str, int]:
    if not addr:
        return ("", 0)
    return (str(addr[0]), int(addr[1]))


def psutil_sockets(pid: int | None = None) -> list[TcpSocket]:
    """TCP sockets of one process (``pid``) or of the host (``pid`` None) via psutil."""
    psutil = _module()
    try:
        if pid is None:
            conns = psutil.net_connections(kind="tcp")
        else:
            process = psutil.Process(pid)
            method = getattr(process, "net_connections", None) or process.connections
            conns = method(kind="tcp")
    except psutil.NoSuchProcess:
        raise ProcessNotFound(f"no process {pid}") from None
    except psutil.AccessDenied:
        what = f"process {pid}" if pid is not None else "the host's connection table"
        raise CensusPermissionError(
            f"permission denied reading the sockets of {what}: run as the same user as the "
            "process, or as root"
        ) from None
    out = []
    for conn in conns:
        state = str(conn.status)
        if state not in TCP_STATES or conn.family not in (AF_INET, AF_INET6):
            continue
        fd = conn.fd if conn.fd is not None and conn.fd >= 0 else None
        out.append(
            TcpSocket(
                int(conn.family), state, _endpoint(conn.laddr), _endpoint(conn.raddr), 0, None, fd
            )
        )
    return out
