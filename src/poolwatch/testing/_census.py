"""This process's TCP sockets toward one port: what the hunt and the tests read from the OS.

A thin layer over ``poolwatch.census``, which reads this process's sockets from its own
descriptors where the platform allows (cost per descriptor, not per socket of the host) and
from the kernel's table elsewhere. The callers here see ``PeerSocket`` rows, with an IPv4
address plain even on an IPv6 socket (``127.0.0.1``, not ``::ffff:127.0.0.1``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from poolwatch.census import TcpSocket, census

__all__ = ["PeerSocket", "shutdown_sockets_toward", "sockets_toward"]


@dataclass(frozen=True, slots=True)
class PeerSocket:
    """One TCP socket this process holds: state, local and remote (host, port), inode."""

    state: str
    local: tuple[str, int]
    remote: tuple[str, int]
    inode: int


def _plain(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _peer(sock: TcpSocket) -> PeerSocket:
    return PeerSocket(
        sock.state,
        (_plain(sock.local[0]), sock.local[1]),
        (_plain(sock.remote[0]), sock.remote[1]),
        sock.inode,
    )


def _toward(
    port: int, states: tuple[str, ...] | None, proc: str, backend: str = "auto"
) -> list[TcpSocket]:
    return list(census(states, remote=f":{port}", proc=proc, backend=backend).sockets)


def sockets_toward(
    port: int, *, states: tuple[str, ...] | None = None, proc: str = "/proc"
) -> list[PeerSocket]:
    """This process's TCP sockets whose remote port is ``port``, optionally in ``states``."""
    return [_peer(sock) for sock in _toward(port, states, proc)]


def _census_rows(port: int, states: tuple[str, ...] | None, proc: str) -> list[PeerSocket]:
    """``sockets_toward`` read from the kernel's table (netlink), to check the fast path by."""
    return [_peer(sock) for sock in _toward(port, states, proc, backend="netlink")]


def _read_procfs(proc: str) -> list[PeerSocket]:
    """Every TCP socket of this process read from the ``/proc`` text tables, to check by."""
    return [_peer(sock) for sock in census(proc=proc, backend="procfs").sockets]


def shutdown_sockets_toward(port: int, *, proc: str = "/proc") -> int:
    """Shut down this process's CLOSE_WAIT sockets toward ``port``; returns how many.

    For the hunt's clean-up once a scenario's downstream is gone: a leaked response the user's
    code still holds keeps its socket open (in CLOSE_WAIT) whatever its connection object says.
    Shutting the socket down through a duplicate of its descriptor sends the FIN and ends
    CLOSE_WAIT without closing the descriptor under the code that holds it.
    """
    done = 0
    # Once the downstream has closed its side, every socket still open toward it is here.
    for target in _toward(port, ("CLOSE_WAIT",), proc):
        if target.fd is None:
            continue
        try:
            dup = os.dup(target.fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            try:
                # The fd may have been closed and its number reused since the census.
                if os.fstat(dup).st_ino != target.inode:
                    continue
                sock.shutdown(socket.SHUT_RDWR)
                done += 1
            except OSError:
                pass
    return done
