"""``/proc``: the TCP tables as text (the fallback), and which sockets a process holds.

``/proc/net/tcp`` and ``tcp6`` list the sockets of the *network namespace* of the reader
(``/proc/PID/net/tcp``: of PID's namespace), never of one process: a process's sockets are the
``socket:[INODE]`` links in ``/proc/PID/fd`` joined with a table by inode. A socket can be
in a process's fd table and in no TCP table (reset, or never connected); such an fd is simply
not a TCP socket of the census.

Every reader takes the ``/proc`` root as ``proc`` so tests can feed captured files.
"""

from __future__ import annotations

import os
import sys

from ._errors import CensusError, CensusPermissionError, ProcessNotFound
from ._raw import AF_INET, AF_INET6, RawRow

__all__ = [
    "parse_table",
    "process_net_dir",
    "read_tables",
    "socket_inodes",
    "socket_owners",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Container

_ORDER = sys.byteorder
_HEX = b"0123456789ABCDEFabcdef"


def _hex(text: bytes) -> int:
    """A hex field; ``ValueError`` for anything but hex digits (``int`` would take ``_``, ``+``)."""
    if not text or text.translate(None, _HEX):
        raise ValueError("not hex digits")
    return int(text, 16)


def _decimal(text: bytes) -> int:
    if not text.isdigit():
        raise ValueError("not decimal digits")
    return int(text)


def _address(text: bytes, family: int) -> bytes:
    """Packed network-order address from the table's hex: words printed in host order."""
    if family == AF_INET:
        if len(text) != 8:
            raise ValueError("IPv4 address is not 8 hex digits")
        return _hex(text).to_bytes(4, _ORDER)
    if len(text) != 32:
        raise ValueError("IPv6 address is not 32 hex digits")
    return b"".join(_hex(text[i : i + 8]).to_bytes(4, _ORDER) for i in (0, 8, 16, 24))


def _endpoint(text: bytes, family: int) -> tuple[bytes, int]:
    host, sep, port = text.partition(b":")
    if not sep or len(port) != 4:
        raise ValueError("endpoint is not ADDRESS:PORT")
    return _address(host, family), _hex(port)


def parse_table(
    data: bytes,
    family: int,
    mask: int,
    counts: list[int] | None = None,
    rows: list[RawRow] | None = None,
    inodes: Container[int] | None = None,
) -> int:
    """Parse the text of ``/proc/net/tcp`` (or ``tcp6``); returns how many lines were skipped.

    Lines whose state is in ``mask`` (and whose inode is in ``inodes``, if given) add to
    ``counts[state]`` (13 slots) and/or append a raw row to ``rows``. A malformed line is
    skipped and counted, never guessed at: counting and listing validate a line alike, so
    both give the same total. The header line is recognised and not counted.
    """
    skipped = 0
    for number, line in enumerate(data.split(b"\n")):
        fields = line.split()
        if not fields:
            continue
        if number == 0 and fields[0] == b"sl":
            continue
        try:
            if len(fields) < 10 or not fields[0].endswith(b":") or len(fields[3]) != 2:
                raise ValueError("not a socket line")
            state = _hex(fields[3])
            if not 0 < state < 13:
                raise ValueError("state out of range")
            if not mask >> state & 1:
                continue
            inode = _decimal(fields[9])
            if inodes is not None and inode not in inodes:
                continue
            uid = _decimal(fields[7])
            src, sport = _endpoint(fields[1], family)
            dst, dport = _endpoint(fields[2], family)
        except ValueError:
            skipped += 1
            continue
        if counts is not None:
            counts[state] += 1
        if rows is not None:
            rows.append((family, state, src, sport, dst, dport, uid, inode))
    return skipped


def read_tables(
    net_dir: str,
    mask: int,
    *,
    counts: list[int] | None = None,
    rows: list[RawRow] | None = None,
    inodes: Container[int] | None = None,
) -> int:
    """Read ``NET_DIR/tcp`` and ``NET_DIR/tcp6``; returns the number of lines skipped.

    A missing ``tcp6`` means a kernel without IPv6: no IPv6 sockets. A missing ``tcp`` means
    ``net_dir`` is not a procfs ``net`` directory: ``CensusError``.
    """
    skipped = 0
    for name, family in (("tcp", AF_INET), ("tcp6", AF_INET6)):
        path = f"{net_dir}/{name}"
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            if family == AF_INET6:
                continue
            raise CensusError(
                f"no TCP table at {path}: pass the root of a mounted procfs as proc= "
                "(default /proc)"
            ) from None
        except PermissionError as exc:
            raise CensusPermissionError(f"cannot read {path}: {exc.strerror}") from None
        skipped += parse_table(data, family, mask, counts, rows, inodes)
    return skipped


def process_net_dir(pid: int, proc: str) -> str | None:
    """``PROC/PID/net`` when PID lives in another network namespace than ours, else None."""
    try:
        theirs = os.stat(f"{proc}/{pid}/ns/net").st_ino
        ours = os.stat(f"{proc}/self/ns/net").st_ino
    except OSError:
        return None
    return f"{proc}/{pid}/net" if theirs != ours else None


def _permission_message(path: str, pid: int) -> str:
    return (
        f"cannot read {path}: permission denied. Listing the sockets of process {pid} needs "
        "ptrace read access to it: run as the same user as the process "
        f"(sudo -u USER poolwatch sockets --pid {pid}), or as root / with CAP_SYS_PTRACE"
    )


def socket_inodes(pid: int, proc: str = "/proc") -> dict[int, int]:
    """``{inode: fd}`` of every socket in the fd table of process ``pid``.

    Raises ``ProcessNotFound`` when there is no such process, ``CensusPermissionError``
    (saying what access is needed) when its fd table may not be read.
    """
    path = f"{proc}/{pid}/fd"
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise ProcessNotFound(f"no process {pid}: {path} does not exist") from None
    except PermissionError:
        raise CensusPermissionError(_permission_message(path, pid)) from None
    except NotADirectoryError:
        raise ProcessNotFound(f"no process {pid}: {path} is not a directory") from None
    inodes: dict[int, int] = {}
    try:
        try:
            names = os.listdir(dfd)
        except PermissionError:
            raise CensusPermissionError(_permission_message(path, pid)) from None
        readlink = os.readlink
        try:
            targets = [readlink(name, dir_fd=dfd) for name in names]
        except OSError:  # an fd closed since the listing: redo it one by one
            targets = []
            for name in names:
                try:
                    targets.append(readlink(name, dir_fd=dfd))
                except OSError:
                    targets.append("")
        try:
            inodes = {
                int(target[8:-1]): int(name)
                for name, target in zip(names, targets, strict=True)
                if target[:8] == "socket:["
            }
        except ValueError:  # not what the kernel writes (a captured or fake tree): go slowly
            for name, target in zip(names, targets, strict=True):
                if target[:8] == "socket:[" and target[-1:] == "]":
                    try:
                        inodes[int(target[8:-1])] = int(name)
                    except ValueError:
                        continue
    finally:
        os.close(dfd)
    return inodes


def socket_owners(proc: str = "/proc") -> tuple[dict[int, list[int]], int]:
    """``{inode: [pid, ...]}`` over every process we may read, and how many we may not.

    What ``ss -p`` does: a walk of every ``/proc/PID/fd``. Processes that exit during the walk
    are skipped; processes we lack permission for are counted, not fatal.
    """
    owners: dict[int, list[int]] = {}
    denied = 0
    try:
        entries = os.listdir(proc)
    except OSError as exc:
        raise CensusError(f"cannot list {proc}: {exc.strerror}") from None
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            inodes = socket_inodes(pid, proc)
        except ProcessNotFound:
            continue
        except CensusPermissionError:
            denied += 1
            continue
        for inode in inodes:
            owners.setdefault(inode, []).append(pid)
    return owners, denied
