"""This process's TCP sockets read from its own descriptors (``getsockopt(TCP_INFO)``).

A census of another process must read the whole TCP table of the host (netlink) and keep that
process's inodes, so its cost follows the host's socket count (tens of milliseconds on a host
with 10k+ sockets). For this process the sockets are at hand: each socket descriptor is asked
for its state (``struct tcp_info`` starts with it, numbered as in the kernel's table) and its
two ends, so the cost follows this process's descriptors.

What it reports is what the netlink census reports for this process, row for row:

- LISTEN sockets have a zero remote end (``0.0.0.0:0`` / ``:::0``), as in the table;
- an IPv6 socket keeps its IPv6 form (``::ffff:127.0.0.1`` for an IPv4-mapped peer);
- sockets in no TCP table (state CLOSE: never connected, reset, or shut by the kernel) are
  left out, as the table leaves them out (``join_leases`` reports such a lease as CLOSE);
- ``uid`` is the socket inode's owner, the uid the table shows;
- ``fd`` is the highest descriptor of a socket held under several, as ``/proc/PID/fd`` gives.

One difference, on purpose: a socket this process holds from another network namespace
(received over a Unix socket, or made after ``setns``) is listed; our namespace's table
cannot see it.

A socket whose peer the kernel will not name through its descriptor (SYN_SENT: a connect in
progress) comes back as *pending*; the caller reads those few from the table by inode.
Linux only: elsewhere ``TCP_INFO`` is missing or its states are numbered differently.
"""

from __future__ import annotations

import _socket
import os
import sys

from ._procfs import socket_inodes
from ._raw import AF_INET, AF_INET6, RawRow

__all__ = ["read", "supported"]

TCP_CLOSE = 7
TCP_LISTEN = 10
_FD_DIR = "/proc/self/fd"
_ZERO = {AF_INET: bytes(4), AF_INET6: bytes(16)}
_TCP_INFO: int | None = getattr(_socket, "TCP_INFO", None)
_supported: bool | None = None


def supported() -> bool:
    """Whether this process's descriptors can answer (Linux, ``TCP_INFO``, ``/proc/self/fd``)."""
    global _supported
    if _supported is None:
        _supported = (
            sys.platform.startswith("linux") and _TCP_INFO is not None and os.path.isdir(_FD_DIR)
        )
    return _supported


def _packed(family: int, host: str) -> bytes:
    # An IPv6 link-local name carries its scope ("fe80::1%eth0"): the table has the address.
    return _socket.inet_pton(family, host.partition("%")[0])


def read(
    mask: int,
    *,
    counts: list[int] | None = None,
    rows: list[RawRow] | None = None,
) -> tuple[dict[int, int], set[int]]:
    """Add this process's TCP sockets in states ``mask`` to ``counts`` and/or ``rows``.

    Counts go to ``counts`` only when ``rows`` is None (as ``_netlink.dump``: a caller that
    lists rows counts the ones its filters keep). Returns ``{inode: fd}`` of every socket
    descriptor and the inodes left *pending*: sockets in a wanted state whose ends the
    descriptor would not give. Raises ``CensusError`` when ``/proc/self/fd`` cannot be read.
    """
    assert _TCP_INFO is not None
    tcp_info = _TCP_INFO
    # The fd links, not fstat of every descriptor: fstat of a file on a stuck network or FUSE
    # mount can block, and only sockets are fstat'ed below (sockfs answers in memory).
    fds = socket_inodes(os.getpid())
    pending: set[int] = set()
    dup, close, fstat, make = os.dup, os.close, os.fstat, _socket.socket
    stream, tcp = _socket.SOCK_STREAM, _socket.IPPROTO_TCP
    for inode, fd in fds.items():
        try:
            # A duplicate: the socket object closes it, never the descriptor the owner holds.
            copy = dup(fd)
        except OSError:
            continue
        try:
            st = fstat(copy)
            if st.st_ino != inode:  # the fd was closed and its number reused since the listing
                close(copy)
                continue
            sock = make(fileno=copy)
        except OSError:
            close(copy)
            continue
        try:
            family = sock.family
            if family not in _ZERO or sock.type != stream or sock.proto not in (0, tcp):
                continue
            try:
                state = sock.getsockopt(tcp, tcp_info, 1)[0]
            except OSError:
                continue  # not a TCP socket after all (an MPTCP or SCTP stream)
            if state == TCP_CLOSE or not mask >> state & 1:
                continue  # CLOSE: in no TCP table, so in no census
            if rows is None:
                if counts is not None:
                    counts[state] += 1
                continue
            try:
                local = sock.getsockname()
            except OSError:
                continue  # closed under us: gone from the table too
            try:
                remote = sock.getpeername()
                dst, dport = _packed(family, remote[0]), remote[1]
            except OSError:
                if state != TCP_LISTEN:
                    pending.add(inode)  # SYN_SENT: the table has the peer, the fd will not say
                    continue
                dst, dport = _ZERO[family], 0
            rows.append(
                (family, state, _packed(family, local[0]), local[1], dst, dport, st.st_uid, inode)
            )
        finally:
            sock.close()
    return fds, pending
