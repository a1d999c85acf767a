"""This process's TCP sockets toward one port: what the hunt and the tests read from the OS.

``poolwatch.census.process_sockets()`` is the project's census; while it is not importable,
``_read_procfs`` reads ``/proc/self/fd`` and ``/proc/net/tcp{,6}`` directly. Either way the
callers here only see ``PeerSocket`` rows, so swapping the source changes nothing else.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

__all__ = ["PeerSocket", "shutdown_sockets_toward", "sockets_toward"]

_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True, slots=True)
class PeerSocket:
    """One TCP socket this process holds: state, local and remote (host, port), inode."""

    state: str
    local: tuple[str, int]
    remote: tuple[str, int]
    inode: int


def sockets_toward(
    port: int, *, states: tuple[str, ...] | None = None, proc: str = "/proc"
) -> list[PeerSocket]:
    """This process's TCP sockets whose remote port is ``port``, optionally in ``states``.

    On Linux each of this process's own socket descriptors is asked for its TCP state
    (``TCP_INFO``): the cost follows the process's descriptors, not the host's socket table,
    which on a busy test machine holds tens of thousands of entries that a census would parse
    for every scenario. Elsewhere ``poolwatch.census.process_sockets`` answers.
    """
    rows = _own_sockets(proc)
    if rows is None:
        rows = _census_rows(port, states, proc)
    return [
        row for row in rows if row.remote[1] == port and (states is None or row.state in states)
    ]


def _census_rows(port: int, states: tuple[str, ...] | None, proc: str) -> list[PeerSocket]:
    try:
        from poolwatch.census import process_sockets  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return _read_procfs(proc)
    try:
        return [
            PeerSocket(s.state, (s.local[0], s.local[1]), (s.remote[0], s.remote[1]), s.inode)
            for s in process_sockets(states=states, remote=f":{port}")
        ]
    except Exception:
        return _read_procfs(proc)


def _own_sockets(proc: str) -> list[PeerSocket] | None:
    """Every TCP socket this process holds, from its descriptors; None where unsupported."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None or proc != "/proc" or not os.path.isdir("/proc/self/fd"):
        return None
    rows = []
    for fd, inode in _fds(proc).items():
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if sock.type != socket.SOCK_STREAM:
                continue
            try:
                # struct tcp_info starts with the state byte, numbered as in /proc/net/tcp.
                state = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 8)[0]
                local = sock.getsockname()[:2]
                remote = sock.getpeername()[:2]
            except OSError:
                continue  # listening or unconnected: no peer
            rows.append(
                PeerSocket(
                    _STATES.get(f"{state:02X}", str(state)),
                    (_plain(local[0]), local[1]),
                    (_plain(remote[0]), remote[1]),
                    inode,
                )
            )
    return rows


def _plain(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def shutdown_sockets_toward(port: int, *, proc: str = "/proc") -> int:
    """Shut down this process's CLOSE_WAIT sockets toward ``port``; returns how many.

    For the hunt's clean-up once a scenario's downstream is gone: a leaked response the user's
    code still holds keeps its socket open (in CLOSE_WAIT) whatever its connection object says.
    Shutting the socket down through a duplicate of its descriptor sends the FIN and ends
    CLOSE_WAIT without closing the descriptor under the code that holds it.
    """
    # Once the downstream has closed its side, every socket still open toward it is here.
    targets = {row.inode for row in sockets_toward(port, states=("CLOSE_WAIT",), proc=proc)}
    if not targets:
        return 0
    done = 0
    for fd, inode in _fds(proc).items():
        if inode not in targets:
            continue
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                done += 1
            except OSError:
                pass
    return done


def _fds(proc: str) -> dict[int, int]:
    """fd -> socket inode for this process's socket descriptors."""
    found: dict[int, int] = {}
    fd_dir = os.path.join(proc, "self", "fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue  # closed between listdir and readlink
        if target.startswith("socket:["):
            found[int(name)] = int(target[8:-1])
    return found


def _inodes(proc: str) -> set[int]:
    return set(_fds(proc).values())


def _address(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    # The kernel prints each 32-bit word in host byte order.
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    packed = b"".join(struct.pack("!I", word) for word in words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    host = socket.inet_ntop(family, packed)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(port_hex, 16)


def _read_procfs(proc: str) -> list[PeerSocket]:
    mine = _inodes(proc)
    rows = []
    for table in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "self", "net", table), encoding="ascii") as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            inode = int(fields[9])
            if inode not in mine:
                continue
            rows.append(
                PeerSocket(
                    _STATES.get(fields[3], fields[3]),
                    _address(fields[1]),
                    _address(fields[2]),
                    inode,
                )
            )
    return rows
