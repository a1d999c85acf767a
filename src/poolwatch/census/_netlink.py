"""The fast path: a ``NETLINK_SOCK_DIAG`` dump of the TCP tables, state filter in the kernel.

One ``inet_diag_req_v2`` per address family (``AF_INET``, then ``AF_INET6``) asks the kernel for
every TCP socket whose state is in a bit mask: the same request ``ss -tan state close-wait``
sends, so a state filter costs nothing in user space and a count is the number of replies.

Message layouts (include/uapi/linux/netlink.h, inet_diag.h), native byte order except the
ports and addresses, which are in network order::

    nlmsghdr       u32 len, u16 type, u16 flags, u32 seq, u32 pid          16 bytes
    inet_diag_msg  u8 family, u8 state, u8 timer, u8 retrans,
                   sockid (be16 sport, be16 dport, 16 bytes src, 16 bytes dst,
                           u32 if, u32 cookie[2]),
                   u32 expires, rqueue, wqueue, uid, inode                  72 bytes

Only ``_socket`` and ``struct`` are imported: this is on the start-up path of the CLI.
"""

from __future__ import annotations

import _socket
import struct

from ._errors import CensusParseError
from ._raw import AF_INET, AF_INET6, RawRow

__all__ = ["dump", "parse_chunk"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Container

AF_NETLINK = 16
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCPDIAG_GETSOCK = 18  # the legacy request: one dump for both families
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300
IPPROTO_TCP = 6
MSG_TRUNC = 0x20

_HEADER = struct.Struct("=IHHII")
_LEN_TYPE = struct.Struct("=IH")
_PORTS = struct.Struct(">HH")
_UID_INODE = struct.Struct("=II")
_INODE = struct.Struct("=I")
_ERRNO = struct.Struct("=i")
_REQUEST = struct.Struct("=IHHII BBBxI 48x")
_LEGACY_REQUEST = struct.Struct("=IHHII BBBB 48x II")
_MSG_MIN = 16 + 72
_SOCKET_REPLIES = (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK)
_BUFFER = 1 << 17


def request(family: int, mask: int, seq: int) -> bytes:
    """An ``inet_diag_req_v2`` dump request for TCP sockets of ``family`` in states ``mask``."""
    return _REQUEST.pack(
        _REQUEST.size,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
        family,
        IPPROTO_TCP,
        0,
        mask,
    )


def legacy_request(mask: int, seq: int) -> bytes:
    """The legacy ``inet_diag_req`` (``TCPDIAG_GETSOCK``): TCP sockets of *both* families.

    The kernel answers it with one walk of the TCP hash tables where two ``inet_diag_req_v2``
    requests walk them twice (``inet_diag_dump_compat`` sets the family to ``AF_UNSPEC``);
    ss sends it too when no family is given.
    """
    return _LEGACY_REQUEST.pack(
        _LEGACY_REQUEST.size,
        TCPDIAG_GETSOCK,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
        AF_INET,
        0,
        0,
        0,
        mask,
        0,
    )


def parse_chunk(
    buf: bytes | bytearray,
    size: int,
    counts: list[int] | None = None,
    rows: list[RawRow] | None = None,
    inodes: Container[int] | None = None,
) -> tuple[bool, int]:
    """Parse the first ``size`` bytes of one datagram of a dump: returns (done, skipped).

    Each socket reply (whose inode is in ``inodes``, if given) adds one to ``counts[state]``
    (13 slots, one per kernel state number) and/or appends a raw row to ``rows``. A reply too
    short to hold an ``inet_diag_msg``, or with an unknown family or state, is skipped and
    counted. A header that breaks the framing (length shorter than a header or past the end)
    makes the rest unreadable: that raises ``CensusParseError`` rather than return a wrong
    total. ``NLMSG_ERROR`` raises ``OSError`` with the kernel's errno.
    """
    if counts is not None and len(counts) < 13:
        raise ValueError("counts needs 13 slots, one per TCP state number")
    off, skipped = _uniform_run(buf, size, counts, rows, inodes)
    while off < size:
        if size - off < 16:
            raise CensusParseError(
                f"netlink reply truncated: {size - off} bytes left at offset {off}, "
                "less than a message header"
            )
        length, mtype = _LEN_TYPE.unpack_from(buf, off)
        if length < 16 or length > size - off:
            raise CensusParseError(
                f"netlink message at offset {off} claims {length} bytes; "
                f"{size - off} remain in the reply"
            )
        if mtype in _SOCKET_REPLIES:
            family = buf[off + 16] if length >= _MSG_MIN else 0
            state = buf[off + 17] if length >= _MSG_MIN else 0
            if family not in (AF_INET, AF_INET6) or not 0 < state < 13:
                skipped += 1
            elif inodes is None or _INODE.unpack_from(buf, off + 84)[0] in inodes:
                if counts is not None:
                    counts[state] += 1
                if rows is not None:
                    rows.append(_row(buf, off, family, state))
        elif mtype == NLMSG_DONE:
            return True, skipped
        elif mtype == NLMSG_ERROR:
            if length < 20:
                raise CensusParseError(f"netlink error message at offset {off} is truncated")
            errno = -_ERRNO.unpack_from(buf, off + 16)[0]
            if errno:
                raise OSError(errno, f"sock_diag request refused by the kernel (errno {errno})")
        # NLMSG_NOOP and types we do not know carry no socket: step over them.
        off += (length + 3) & ~3
    return False, skipped


def _row(buf: bytes | bytearray, off: int, family: int, state: int) -> RawRow:
    sport, dport = _PORTS.unpack_from(buf, off + 20)
    uid, inode = _UID_INODE.unpack_from(buf, off + 80)
    alen = 4 if family == AF_INET else 16
    return (
        family,
        state,
        bytes(buf[off + 24 : off + 24 + alen]),
        sport,
        bytes(buf[off + 40 : off + 40 + alen]),
        dport,
        uid,
        inode,
    )


def _uniform_run(
    buf: bytes | bytearray,
    size: int,
    counts: list[int] | None,
    rows: list[RawRow] | None,
    inodes: Container[int] | None,
) -> tuple[int, int]:
    """Parse a leading run of same-length socket replies with strided slices, not a loop.

    A dump's replies usually all have one length L (the same attributes for every socket).
    If the length field at every multiple of L says L, the run is framed exactly so (each
    message starts where the previous one says it ends) and families, states and inodes can be
    read as strided slices in C. Returns (offset where the run ends, skipped); (0, 0) when
    the chunk does not start with such a run, leaving it all to the message loop.
    """
    if size < _MSG_MIN:
        return 0, 0
    length, mtype = _LEN_TYPE.unpack_from(buf, 0)
    if length < _MSG_MIN or length % 4 or mtype not in _SOCKET_REPLIES:
        return 0, 0
    n = size // length
    end = n * length
    with memoryview(buf) as whole, whole[:end] as view, view.cast("I") as words:
        if words[0 :: length // 4].tolist().count(length) != n:
            return 0, 0
        with view.cast("H") as halves:
            if halves[2 :: length // 2].tolist().count(mtype) != n:
                return 0, 0
        ino = words[21 :: length // 4].tolist() if inodes is not None else None
    families = bytes(buf[16:end:length])
    if families.count(AF_INET) + families.count(AF_INET6) != n:
        return 0, 0
    states = bytes(buf[17:end:length])
    per_state = [states.count(state) for state in range(13)]
    skipped = n - sum(per_state) + per_state[0]
    if ino is None and rows is None:
        if counts is not None:
            for state in range(1, 13):
                counts[state] += per_state[state]
        return end, skipped
    for i in range(n) if ino is None else [i for i, v in enumerate(ino) if v in inodes]:  # type: ignore[operator]
        state = states[i]
        if not 0 < state < 13:
            continue
        if counts is not None:
            counts[state] += 1
        if rows is not None:
            rows.append(_row(buf, i * length, families[i], state))
    return end, skipped


def open_socket() -> _socket.socket:
    """A sock_diag netlink socket; ``OSError`` when the kernel or a sandbox refuses it."""
    sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    sock.settimeout(10.0)  # a dump never legitimately stalls; never hang a cron job
    return sock


def _read_dump(
    sock: _socket.socket,
    buf: bytearray,
    counts: list[int] | None,
    rows: list[RawRow] | None,
    inodes: Container[int] | None,
) -> int:
    skipped = 0
    done = False
    while not done:
        size = sock.recv_into(buf, 0, MSG_TRUNC)
        if size > len(buf):
            raise CensusParseError(
                f"netlink reply of {size} bytes does not fit the {len(buf)}-byte buffer; "
                "it was truncated"
            )
        if size == 0:
            raise CensusParseError("netlink socket closed before the dump ended")
        done, more = parse_chunk(buf, size, counts, rows, inodes)
        skipped += more
    return skipped


def dump(
    mask: int,
    families: tuple[int, ...] = (AF_INET, AF_INET6),
    *,
    counts: list[int] | None = None,
    rows: list[RawRow] | None = None,
    inodes: Container[int] | None = None,
) -> int:
    """Dump the TCP sockets in states ``mask`` into ``counts`` / ``rows``; returns skipped.

    Raises ``OSError`` when netlink is refused (the caller falls back to ``/proc``).
    """
    sock = open_socket()
    buf = bytearray(_BUFFER)
    try:
        if set(families) == {AF_INET, AF_INET6}:
            sock.sendto(legacy_request(mask, 1), (0, 0))
            try:
                return _read_dump(sock, buf, counts, rows, inodes)
            except OSError as exc:
                if exc.errno not in (2, 22, 95):  # ENOENT EINVAL EOPNOTSUPP: no legacy API
                    raise
            # Nothing was counted: an error reply comes first or not at all.
        skipped = 0
        for seq, family in enumerate(families, 2):
            sock.sendto(request(family, mask, seq), (0, 0))
            try:
                skipped += _read_dump(sock, buf, counts, rows, inodes)
            except OSError as exc:
                # A kernel without IPv6 answers the AF_INET6 request with an error: no sockets.
                if family == AF_INET6 and exc.errno in (2, 22, 97):  # ENOENT EINVAL EAFNOSUPPORT
                    continue
                raise
        return skipped
    finally:
        sock.close()
