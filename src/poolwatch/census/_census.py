"""The census: TCP sockets of the host or of one process, by state, address and port.

Backends, in order: for this process, its own descriptors (``TCP_INFO``, cost per descriptor
rather than per socket of the host); netlink sock_diag (fast, state filter in the kernel),
``/proc/net/tcp{,6}`` when netlink is refused (seccomp, old kernels) or when ``proc`` points at
captured files, and psutil on platforms other than Linux.
"""

from __future__ import annotations

import os
import sys

from . import _descriptors, _netlink, _procfs
from ._raw import AF_INET, AF_INET6, RawRow
from ._states import STATE_NAMES, parse_states, state_mask

__all__ = [
    "BACKENDS",
    "Census",
    "Endpoint",
    "by_peer",
    "by_state",
    "census",
    "count",
    "host_counts",
    "host_sockets",
    "process_counts",
    "process_sockets",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._model import TcpSocket

BACKENDS = ("auto", "descriptors", "netlink", "procfs", "psutil")

_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


class Endpoint:
    """An address filter: ``127.0.0.1``, ``::1``, ``[::1]:8080``, ``10.0.0.1:5432``, ``:443``.

    IP literals only (a census must not wait on DNS). An IPv4 address also matches its
    IPv4-mapped IPv6 form (``::ffff:127.0.0.1``), as a dual-stack socket shows it.
    """

    __slots__ = ("hosts", "port", "text")

    def __init__(self, text: str) -> None:
        from _socket import inet_pton

        self.text = text
        spec = text.strip()
        host, port = spec, ""
        if spec.startswith("["):
            host, sep, rest = spec[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(self._usage(text))
            port = rest[1:]
        elif spec.count(":") == 1:
            host, _, port = spec.partition(":")
        self.port: int | None = None
        if port:
            if not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(self._usage(text))
            self.port = int(port)
        self.hosts: frozenset[bytes] | None = None
        if host:
            try:
                packed = inet_pton(AF_INET, host)
                self.hosts = frozenset({packed, _MAPPED_PREFIX + packed})
            except OSError:
                try:
                    self.hosts = frozenset({inet_pton(AF_INET6, host)})
                except OSError:
                    raise ValueError(self._usage(text)) from None
        elif self.port is None:
            raise ValueError(self._usage(text))

    @staticmethod
    def _usage(text: str) -> str:
        return (
            f"{text!r} is not an address: give an IP literal, optionally with a port "
            "(127.0.0.1, 127.0.0.1:8080, ::1, [::1]:8080) or a port alone (:8080)"
        )

    def matches(self, addr: bytes, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        return self.hosts is None or addr in self.hosts

    def __repr__(self) -> str:
        return f"<Endpoint {self.text}>"


def _endpoint(value: str | Endpoint | None) -> Endpoint | None:
    if value is None or isinstance(value, Endpoint):
        return value
    return Endpoint(value)


class Census:
    """One census: counts per state, the sockets (when asked for), what it read and skipped.

    ``skipped`` counts netlink replies or ``/proc`` lines that could not be parsed: they are
    not in ``counts``, so a non-zero value says the total may be short by that much. (A plain
    class, not a dataclass: counting must not import ``dataclasses``.)
    """

    __slots__ = ("backend", "counts", "pid", "skipped", "sockets")

    def __init__(
        self,
        counts: dict[str, int],
        sockets: tuple[TcpSocket, ...],
        backend: str,
        pid: int | None = None,
        skipped: int = 0,
    ) -> None:
        self.counts = counts
        self.sockets = sockets
        self.backend = backend
        self.pid = pid
        self.skipped = skipped

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __repr__(self) -> str:
        where = f"pid {self.pid}" if self.pid is not None else "host"
        states = " | ".join(f"{state} {n}" for state, n in self.counts.items() if n) or "empty"
        return f"<Census {where} via {self.backend} [{states}]>"


def _pick_backend(proc: str, backend: str, own: bool) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown census backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "descriptors":
        if not own or proc != "/proc":
            raise ValueError(
                "the descriptors backend reads this process's own sockets: use it without "
                "pid (or with os.getpid()), host or proc, or pick another backend"
            )
        if not _descriptors.supported():
            raise ValueError(
                "the descriptors backend needs Linux with TCP_INFO and /proc/self/fd: "
                "use backend='auto'"
            )
        return backend
    if backend != "auto":
        return backend
    if proc != "/proc":
        return "procfs"
    if own and _descriptors.supported():
        return "descriptors"
    if sys.platform.startswith("linux"):
        return "netlink"
    return "psutil"


def census(
    states: str | Iterable[str] | None = None,
    *,
    pid: int | None = None,
    host: bool = False,
    local: str | Endpoint | None = None,
    remote: str | Endpoint | None = None,
    port: int | None = None,
    sockets: bool = True,
    proc: str = "/proc",
    backend: str = "auto",
) -> Census:
    """Take a census of TCP sockets: the host's (``host=True``) or a process's (``pid``).

    ``pid=None`` without ``host`` means this process (read from its own descriptors where
    the platform allows, the same sockets as netlink gives). ``states`` takes netstat or ss names
    (``"close-wait"``, ``["ESTABLISHED", "TIME_WAIT"]``; default all). ``local`` / ``remote``
    filter by address (``"127.0.0.1"``, ``"[::1]:8080"``, ``":443"``); ``port`` matches either
    end. ``sockets=False`` counts only (the fast path). ``proc`` is the procfs root (captured
    files in tests); ``backend`` forces ``descriptors`` (this process only), ``netlink``,
    ``procfs`` or ``psutil``.
    """
    wanted = parse_states(states if states is None or isinstance(states, str) else list(states))
    mask = state_mask(wanted)
    if not host:
        # No process holds a TIME_WAIT or request socket (inode 0): let the kernel skip them.
        mask &= ~state_mask(("TIME_WAIT", "NEW_SYN_RECV"))
    lfilter, rfilter = _endpoint(local), _endpoint(remote)
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    if not host and pid is None:
        pid = os.getpid()
    chosen = _pick_backend(proc, backend, own=not host and pid == os.getpid())
    if chosen == "psutil":
        return _psutil_census(wanted, pid if not host else None, lfilter, rfilter, port, chosen)

    filtered = lfilter is not None or rfilter is not None or port is not None
    need_rows = sockets or filtered
    counts = [0] * len(STATE_NAMES)
    rows: list[RawRow] | None = [] if need_rows else None
    skipped = 0
    fds: dict[int, int] | None = None
    net_dir = f"{proc}/net"
    pending: set[int] = set()
    if chosen == "descriptors":
        fds, pending = _descriptors.read(mask, counts=None if need_rows else counts, rows=rows)
    if not host and fds is None:
        assert pid is not None
        fds = _procfs.socket_inodes(pid, proc)
        theirs = _procfs.process_net_dir(pid, proc)
        if theirs is not None:
            # Another network namespace: our netlink socket cannot see it; its /proc table can.
            net_dir, chosen = theirs, "procfs"
    if pending:
        # Sockets whose peer only the table names (a connect in progress): read those few.
        try:
            skipped = _netlink.dump(mask, rows=rows, inodes=pending)
        except OSError:
            skipped = _procfs.read_tables(net_dir, mask, rows=rows, inodes=pending)
    if chosen == "netlink":
        try:
            skipped = _netlink.dump(
                mask, counts=None if need_rows else counts, rows=rows, inodes=fds
            )
        except OSError:
            # Refused (seccomp, no sock_diag module): the text tables say the same, slower.
            chosen = "procfs"
            rows = [] if need_rows else None
            counts = [0] * len(STATE_NAMES)
    if chosen == "procfs":
        skipped = _procfs.read_tables(
            net_dir, mask, counts=None if need_rows else counts, rows=rows, inodes=fds
        )
    out: list[TcpSocket] = []
    if rows is not None:
        if sockets:
            from ._model import to_socket  # dataclasses: only when sockets are wanted
        for row in rows:
            if port is not None and row[3] != port and row[5] != port:
                continue
            if lfilter is not None and not lfilter.matches(row[2], row[3]):
                continue
            if rfilter is not None and not rfilter.matches(row[4], row[5]):
                continue
            counts[row[1]] += 1
            if sockets:
                out.append(to_socket(row, fds.get(row[7]) if fds is not None else None))
    return Census(
        {name: counts[_number(name)] for name in wanted},
        tuple(out),
        chosen,
        pid if not host else None,
        skipped,
    )


def _number(name: str) -> int:
    return STATE_NAMES.index(name)


def _psutil_census(
    wanted: tuple[str, ...],
    pid: int | None,
    lfilter: Endpoint | None,
    rfilter: Endpoint | None,
    port: int | None,
    backend: str,
) -> Census:
    from _socket import inet_pton

    from ._psutil import psutil_sockets

    counts = dict.fromkeys(wanted, 0)
    out = []
    for sock in psutil_sockets(pid):
        if sock.state not in counts:
            continue
        if port is not None and port not in (sock.local[1], sock.remote[1]):
            continue
        try:
            if lfilter is not None and not lfilter.matches(
                inet_pton(sock.family, sock.local[0]), sock.local[1]
            ):
                continue
            if rfilter is not None and not rfilter.matches(
                inet_pton(sock.family, sock.remote[0] or "0.0.0.0"), sock.remote[1]
            ):
                continue
        except OSError:
            continue
        counts[sock.state] += 1
        out.append(sock)
    return Census(counts, tuple(out), backend, pid, 0)


def host_counts(
    states: str | Iterable[str] | None = None,
    *,
    local: str | Endpoint | None = None,
    remote: str | Endpoint | None = None,
    port: int | None = None,
    proc: str = "/proc",
    backend: str = "auto",
) -> dict[str, int]:
    """Host-wide counts of TCP sockets per state (every asked-for state, zeros included)."""
    return census(
        states,
        host=True,
        local=local,
        remote=remote,
        port=port,
        sockets=False,
        proc=proc,
        backend=backend,
    ).counts


def host_sockets(
    states: str | Iterable[str] | None = None,
    *,
    local: str | Endpoint | None = None,
    remote: str | Endpoint | None = None,
    port: int | None = None,
    proc: str = "/proc",
    backend: str = "auto",
) -> list[TcpSocket]:
    """Every TCP socket of the host (its network namespace) matching the filters."""
    return list(
        census(
            states, host=True, local=local, remote=remote, port=port, proc=proc, backend=backend
        ).sockets
    )


def process_sockets(
    pid: int | None = None,
    *,
    states: str | Iterable[str] | None = None,
    local: str | Endpoint | None = None,
    remote: str | Endpoint | None = None,
    port: int | None = None,
    proc: str = "/proc",
    backend: str = "auto",
) -> list[TcpSocket]:
    """The TCP sockets (IPv4 and IPv6) that process ``pid`` holds (None: this process).

    Raises ``ProcessNotFound``, or ``CensusPermissionError`` saying what access is needed to
    read another user's process.
    """
    if pid is None:
        pid = os.getpid()
    return list(
        census(
            states, pid=pid, local=local, remote=remote, port=port, proc=proc, backend=backend
        ).sockets
    )


def process_counts(
    pid: int | None = None,
    *,
    states: str | Iterable[str] | None = None,
    local: str | Endpoint | None = None,
    remote: str | Endpoint | None = None,
    port: int | None = None,
    proc: str = "/proc",
    backend: str = "auto",
) -> dict[str, int]:
    """Counts per state of the TCP sockets that process ``pid`` holds (None: this process)."""
    if pid is None:
        pid = os.getpid()
    return census(
        states,
        pid=pid,
        local=local,
        remote=remote,
        port=port,
        sockets=False,
        proc=proc,
        backend=backend,
    ).counts


def count(
    state: str = "CLOSE_WAIT",
    *,
    pid: int | None = None,
    host: bool = False,
    port: int | None = None,
    remote: str | Endpoint | None = None,
    proc: str = "/proc",
) -> int:
    """How many sockets are in ``state`` (default CLOSE_WAIT), in one process or host-wide."""
    return census(
        state, pid=pid, host=host, port=port, remote=remote, sockets=False, proc=proc
    ).total


def by_state(sockets: Iterable[TcpSocket]) -> dict[str, int]:
    """``{state: count}``, most common first."""
    counts: dict[str, int] = {}
    for sock in sockets:
        counts[sock.state] = counts.get(sock.state, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def by_peer(sockets: Iterable[TcpSocket]) -> dict[tuple[str, int], dict[str, int]]:
    """``{(remote host, port): {state: count}}``, busiest peer first."""
    peers: dict[tuple[str, int], dict[str, int]] = {}
    for sock in sockets:
        states = peers.setdefault(sock.remote, {})
        states[sock.state] = states.get(sock.state, 0) + 1
    return dict(sorted(peers.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))
