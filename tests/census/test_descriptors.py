"""This process's census from its own descriptors, checked against netlink on real sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poolwatch.census import (
    TCP_STATES,
    Census,
    TcpSocket,
    census,
    count,
    process_counts,
    process_sockets,
)
from poolwatch.census._descriptors import supported
from poolwatch.testing._census import shutdown_sockets_toward, sockets_toward

from .conftest import LINGER_RST, Farm, settle

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not supported(),
    reason="the descriptors backend needs Linux with TCP_INFO",
)


def _both(**kwargs: Any) -> tuple[Census, Census]:
    """The same census through this process's descriptors and through netlink."""
    return census(backend="descriptors", **kwargs), census(backend="netlink", **kwargs)


def _sorted(sockets: tuple[TcpSocket, ...]) -> list[TcpSocket]:
    return sorted(sockets, key=lambda s: (s.inode, s.state))


def _agree(**kwargs: Any) -> tuple[Census, Census]:
    """Both censuses, retaken (bounded) while they differ: a FIN may land between them."""
    fast, slow = _both(**kwargs)
    for _ in range(20):
        if _sorted(fast.sockets) == _sorted(slow.sockets) and fast.counts == slow.counts:
            break
        fast, slow = _both(**kwargs)
    return fast, slow


def by_state_of(taken: Census) -> dict[str, int]:
    return {state: n for state, n in taken.counts.items() if n}


@pytest.fixture
def mapped() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """An IPv6 listener on ::ffff:127.0.0.1 and a connected pair through it (mapped ends)."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    held: list[socket.socket] = []
    try:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::ffff:127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        held.append(client)
        client.connect(("::ffff:127.0.0.1", port))
        held.append(listener.accept()[0])
        yield listener, held
    finally:
        for sock in held:
            sock.close()
        listener.close()


def test_same_sockets_as_netlink_in_every_state(farm: Farm) -> None:
    """CLOSE_WAIT, ESTABLISHED and LISTEN sockets on 127.0.0.1 and ::1 come out equal to the
    netlink census, field for field (state, ends, inode, uid, fd)."""
    farm.close_wait(3)
    farm.established(2)
    farm.time_wait(1)
    settle(lambda: census("close-wait", port=farm.port, backend="netlink").total == 3)
    fast, slow = _agree(port=farm.port)
    assert fast.backend == "descriptors"
    assert slow.backend == "netlink"
    assert _sorted(fast.sockets) == _sorted(slow.sockets)
    assert fast.counts == slow.counts
    assert by_state_of(fast) == {"CLOSE_WAIT": 3, "ESTABLISHED": 4, "LISTEN": 1}
    listen = next(s for s in fast.sockets if s.state == "LISTEN")
    assert listen.remote == (("::" if farm.family == socket.AF_INET6 else "0.0.0.0"), 0)
    assert listen.local == (farm.host, farm.port)


def test_ipv4_mapped_ends_keep_their_ipv6_form(
    mapped: tuple[socket.socket, list[socket.socket]],
) -> None:
    """An IPv6 socket with IPv4-mapped ends reads ::ffff:127.0.0.1 on both paths."""
    listener, _held = mapped
    port = listener.getsockname()[1]
    fast, slow = _agree(port=port)
    assert _sorted(fast.sockets) == _sorted(slow.sockets)
    assert {s.state for s in fast.sockets} == {"LISTEN", "ESTABLISHED"}
    for sock in fast.sockets:
        assert sock.family == socket.AF_INET6
        assert sock.local[0] == "::ffff:127.0.0.1"


def test_a_descriptor_held_twice_is_one_socket_with_the_higher_fd(farm4: Farm) -> None:
    """A socket under two descriptors is listed once, with the fd /proc/PID/fd gives last."""
    client = farm4.close_wait(1)[0]
    extra = os.dup(client.fileno())
    try:
        fast, slow = _agree(states="close-wait", port=farm4.port)
        assert [s.fd for s in fast.sockets] == [max(client.fileno(), extra)]
        assert _sorted(fast.sockets) == _sorted(slow.sockets)
    finally:
        os.close(extra)


def test_sockets_in_no_tcp_table_are_left_out_on_both_paths(farm4: Farm) -> None:
    """A reset client, a bound-only and a never-connected TCP socket are in neither census."""
    client, server = farm4._pair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    server.close()  # RST: the client's socket leaves the TCP table (state CLOSE)
    bound = socket.socket()
    loose = socket.socket()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        bound.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", farm4.port))
        settle(lambda: census("estab", port=farm4.port, backend="netlink").total == 0)
        fast, slow = _agree(states="all")
        inodes = {os.fstat(s.fileno()).st_ino for s in (client, bound, loose, udp)}
        assert not inodes & {s.inode for s in fast.sockets}
        assert not inodes & {s.inode for s in slow.sockets}
        assert [s.state for s in fast.sockets if s.local[1] == farm4.port] == ["LISTEN"]
        # Counting alone (no rows) leaves them out too.
        assert census("close", sockets=False, backend="descriptors").counts == {"CLOSE": 0}
    finally:
        for sock in (client, bound, loose, udp):
            sock.close()


def test_connect_in_progress_is_read_from_the_table(farm4: Farm) -> None:
    """A SYN_SENT socket (its peer unknown to getpeername) is listed as netlink lists it."""
    crowded = socket.socket()
    waiting: list[socket.socket] = []
    try:
        crowded.bind(("127.0.0.1", 0))
        crowded.listen(0)  # a full accept queue drops further SYNs: clients stay in SYN_SENT
        port = crowded.getsockname()[1]
        for _ in range(4):
            sock = socket.socket()
            sock.setblocking(False)
            waiting.append(sock)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
        settle(lambda: census("syn-sent", port=port, backend="netlink").total > 0)
        fast, slow = _agree(port=port)
        assert fast.counts["SYN_SENT"] > 0
        assert _sorted(fast.sockets) == _sorted(slow.sockets)
        syn = next(s for s in fast.sockets if s.state == "SYN_SENT")
        assert syn.remote == ("127.0.0.1", port)
        counted = process_counts(states="syn-sent", port=port)
        assert counted == {"SYN_SENT": fast.counts["SYN_SENT"]}
    finally:
        for sock in waiting:
            sock.close()
        crowded.close()


def test_counts_of_the_whole_process_equal_netlink(farm: Farm) -> None:
    """process_counts() (no filter: the count-only path) equals the netlink counts, per state."""
    farm.close_wait(2)
    farm.established(1)
    settle(lambda: census("close-wait", port=farm.port, backend="netlink").total == 2)
    for states in (None, "close-wait", "estab,listen"):
        fast = slow = {}
        for _ in range(20):  # bounded retries: another thread may open or close a socket
            fast = census(states, sockets=False, backend="descriptors").counts
            slow = census(states, sockets=False, backend="netlink").counts
            if fast == slow:
                break
        assert fast == slow, states
    assert process_counts(states="close-wait")["CLOSE_WAIT"] >= 2
    assert count() >= 2
    assert set(process_counts()) == set(TCP_STATES)


def test_this_process_uses_its_descriptors_and_other_pids_netlink(tmp_path: Path) -> None:
    """pid None or our own pid reads descriptors; another pid, host or a proc root do not."""
    assert census().backend == "descriptors"
    assert census(pid=os.getpid()).backend == "descriptors"
    assert census(host=True, states="listen", sockets=False).backend == "netlink"
    assert census(pid=1, sockets=False).backend in ("netlink", "procfs")
    assert census(backend="netlink").backend == "netlink"
    with pytest.raises(ValueError, match="this process's own sockets"):
        census(pid=1, backend="descriptors")
    with pytest.raises(ValueError, match="this process's own sockets"):
        census(host=True, backend="descriptors")
    with pytest.raises(ValueError, match="this process's own sockets"):
        census(proc=str(tmp_path), backend="descriptors")


def test_process_sockets_and_sockets_toward_agree(farm4: Farm) -> None:
    """process_sockets() and the hunt's sockets_toward() see the farm's CLOSE_WAIT sockets."""
    farm4.close_wait(2)
    settle(lambda: len(process_sockets(states="close-wait", port=farm4.port)) == 2)
    mine = process_sockets(states="close-wait", remote=f":{farm4.port}")
    toward = sockets_toward(farm4.port, states=("CLOSE_WAIT",))
    assert sorted(s.inode for s in toward) == sorted(s.inode for s in mine)
    assert len(mine) == 2


def test_shutdown_sockets_toward_ends_close_wait_and_keeps_the_descriptor(farm4: Farm) -> None:
    """shutdown_sockets_toward ends the CLOSE_WAIT sockets toward a port; their fds stay open."""
    clients = farm4.close_wait(2)
    settle(lambda: len(sockets_toward(farm4.port, states=("CLOSE_WAIT",))) == 2)
    assert shutdown_sockets_toward(farm4.port) == 2
    settle(lambda: not sockets_toward(farm4.port, states=("CLOSE_WAIT",)))
    assert sockets_toward(farm4.port, states=("CLOSE_WAIT",)) == []
    for client in clients:
        assert client.fileno() >= 0
        os.fstat(client.fileno())  # still open: only shut down
