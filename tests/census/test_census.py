"""The census against ss, on real loopback sockets in CLOSE_WAIT, ESTABLISHED and TIME_WAIT."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from poolwatch.census import (
    TCP_STATES,
    CensusError,
    Endpoint,
    ProcessNotFound,
    TcpSocket,
    by_peer,
    by_state,
    census,
    host_counts,
    host_sockets,
    process_counts,
    process_sockets,
)

from .conftest import Farm, normalise, settle, ss_count, ss_endpoints, ss_lines

T = TypeVar("T")

# Our name -> ss's state filter name.
SS_NAMES = {
    "CLOSE_WAIT": "close-wait",
    "ESTABLISHED": "established",
    "TIME_WAIT": "time-wait",
    "FIN_WAIT2": "fin-wait-2",
    "LISTEN": "listening",
}


def _built(farm: Farm, *, close_wait: int = 7, established: int = 4, time_wait: int = 5) -> None:
    farm.close_wait(close_wait)
    farm.established(established)
    farm.time_wait(time_wait)
    # The server halves go FIN_WAIT1 -> FIN_WAIT2 when the client's (possibly delayed) ACK
    # lands: wait for that, or ss and the census may see the two sides of the transition.
    settle(
        lambda: (
            host_counts(["close-wait", "fin-wait-2"], port=farm.port)
            == {"CLOSE_WAIT": close_wait, "FIN_WAIT2": close_wait}
        )
    )


def _stable(ours: Callable[[], T], theirs: Callable[[], T]) -> tuple[T, T]:
    """(ours, theirs) on a snapshot ss saw unchanged before and after ours (bounded retries)."""
    for _ in range(30):
        before = theirs()
        mine = ours()
        if theirs() == before:
            return mine, before
    pytest.fail("the TCP table never held still around the census for 30 tries")


@pytest.mark.parametrize("backend", ["netlink", "procfs"])
def test_host_counts_per_state_equal_ss(farm: Farm, backend: str) -> None:
    """Host-wide counts per state toward the farm's port equal ss -H's, IPv4 and IPv6."""
    _built(farm)
    ours, theirs = _stable(
        lambda: host_counts(list(SS_NAMES), port=farm.port, backend=backend),
        lambda: {state: ss_count(name, farm.port) for state, name in SS_NAMES.items()},
    )
    assert ours == theirs
    # Not vacuous: the states the farm built are there in the numbers it built.
    assert (ours["CLOSE_WAIT"], ours["ESTABLISHED"], ours["FIN_WAIT2"]) == (7, 8, 7)
    assert ours["TIME_WAIT"] >= 5  # and any left on this port by an earlier listener
    assert ours["LISTEN"] == 1


def test_per_family_counts_equal_ss_4_and_6(farm: Farm) -> None:
    """Each socket's family is right: per-family counts equal ss -4 / ss -6."""
    _built(farm, close_wait=3, established=2, time_wait=2)
    for flag, family in (("-4", socket.AF_INET), ("-6", socket.AF_INET6)):
        ours, theirs = _stable(
            lambda family=family: {  # type: ignore[misc]
                state: sum(
                    1
                    for s in host_sockets(port=farm.port)
                    if (s.family, s.state) == (family, state)
                )
                for state in SS_NAMES
            },
            lambda flag=flag: {  # type: ignore[misc]
                state: ss_count(name, farm.port, family=flag) for state, name in SS_NAMES.items()
            },
        )
        assert ours == theirs, flag


def test_process_counts_and_endpoints_equal_ss_p(farm: Farm) -> None:
    """This process's sockets (counts and exact endpoints) equal ss -tanp's for our pid."""
    _built(farm)
    pid = os.getpid()
    counts, theirs = _stable(
        lambda: process_counts(states=list(SS_NAMES), port=farm.port),
        lambda: {state: ss_count(name, farm.port, pid=pid) for state, name in SS_NAMES.items()},
    )
    assert counts == theirs
    # TIME_WAIT sockets belong to no process: none is ours, although the host has 5.
    assert counts["TIME_WAIT"] == 0
    assert counts["CLOSE_WAIT"] == 7
    sockets = process_sockets(port=farm.port)
    for state, name in (("CLOSE_WAIT", "close-wait"), ("ESTABLISHED", "established")):
        ours = {
            (normalise(_ss_text(s.local)), normalise(_ss_text(s.remote)))
            for s in sockets
            if s.state == state
        }
        assert ours == {(normalise(a), normalise(b)) for a, b in ss_endpoints(name, farm.port, pid)}


def _ss_text(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def test_process_sockets_carry_fd_and_inode(farm4: Farm) -> None:
    """Each socket of this process carries the fd that holds it and that fd's inode."""
    clients = farm4.close_wait(2)
    by_fd = {s.fd: s for s in process_sockets(port=farm4.port)}
    for client in clients:
        sock = by_fd[client.fileno()]
        assert sock.inode == os.fstat(client.fileno()).st_ino
        assert sock.local == client.getsockname()[:2]
        assert sock.remote == client.getpeername()[:2]


def test_host_wide_unfiltered_counts_equal_ss_on_a_stable_snapshot(farm4: Farm) -> None:
    """Host-wide counts of every state equal ss -H -tan's when ss sees the same before and after."""
    _built(farm4)

    def ss_all() -> dict[str, int]:
        counts = dict.fromkeys(TCP_STATES, 0)
        names = {
            "ESTAB": "ESTABLISHED",
            "SYN-SENT": "SYN_SENT",
            "SYN-RECV": "SYN_RECV",
            "FIN-WAIT-1": "FIN_WAIT1",
            "FIN-WAIT-2": "FIN_WAIT2",
            "TIME-WAIT": "TIME_WAIT",
            "UNCONN": "CLOSE",
            "CLOSE-WAIT": "CLOSE_WAIT",
            "LAST-ACK": "LAST_ACK",
            "LISTEN": "LISTEN",
            "CLOSING": "CLOSING",
        }
        for line in ss_lines("-tan", "state", "all"):
            counts[names[line.split()[0]]] += 1
        return counts

    # Other processes on this host open and close sockets: compare on a snapshot that ss saw
    # unchanged on both sides of ours.
    ours, theirs = _stable(host_counts, ss_all)
    assert ours == theirs
    assert ours["CLOSE_WAIT"] >= 7


def test_dual_stack_socket_matches_ipv4_filter() -> None:
    """An IPv4 peer filter also finds a dual-stack IPv6 socket's ::ffff:127.0.0.1 peer."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client.connect(("::ffff:127.0.0.1", port))
        server, _ = listener.accept()
        server.close()
        settle(lambda: bool(process_sockets(states="close-wait", remote=f"127.0.0.1:{port}")))
        found = process_sockets(states="close-wait", remote=f"127.0.0.1:{port}")
        assert [s.remote for s in found] == [("::ffff:127.0.0.1", port)]
        assert found[0].family == socket.AF_INET6
    finally:
        client.close()
        listener.close()


def test_address_filters_select_the_farm(farm4: Farm) -> None:
    """local= / remote= / port= select exactly the farm's sockets, by address and port."""
    clients = farm4.close_wait(3)
    mine = {c.getsockname()[1] for c in clients}
    remote = host_sockets("close-wait", remote=f"127.0.0.1:{farm4.port}")
    assert {s.local[1] for s in remote} == mine
    one = clients[0].getsockname()[1]
    # A local port alone is not unique host-wide (ephemeral ports are reused toward other
    # destinations): with the remote end, it is.
    local = host_sockets("close-wait", local=f":{one}", remote=f"127.0.0.1:{farm4.port}")
    assert [(s.local, s.remote) for s in local] == [(("127.0.0.1", one), ("127.0.0.1", farm4.port))]
    assert host_sockets("close-wait", remote=f"[::1]:{farm4.port}") == []


def test_grouping_by_peer_and_state(farm4: Farm) -> None:
    """by_peer groups the farm's client sockets under the listener's address with their states."""
    farm4.close_wait(3)
    farm4.established(2)
    sockets = process_sockets(port=farm4.port)
    peers = by_peer(sockets)
    assert peers[("127.0.0.1", farm4.port)] == {"CLOSE_WAIT": 3, "ESTABLISHED": 2}
    assert by_state(sockets) == {"ESTABLISHED": 4, "CLOSE_WAIT": 3, "LISTEN": 1}


def test_census_repr_shows_scope_backend_and_states(farm4: Farm) -> None:
    """A Census's repr names the scope, the backend and the non-zero states."""
    farm4.close_wait(2)
    taken = census("close-wait,estab", port=farm4.port)
    assert repr(taken) == f"<Census pid {os.getpid()} via descriptors [CLOSE_WAIT 2]>"
    sock = taken.sockets[0]
    assert isinstance(sock, TcpSocket)
    assert repr(sock).startswith("<TcpSocket CLOSE_WAIT 127.0.0.1:")
    assert sock.as_dict()["family"] == "ipv4"


def test_captured_proc_files_give_the_same_census(farm4: Farm, tmp_path: Path) -> None:
    """A census over captured /proc files (tables + fd links) equals the live one."""
    farm4.close_wait(4)
    farm4.established(2)
    pid = os.getpid()
    live = census(pid=pid, port=farm4.port)
    (tmp_path / "net").mkdir()
    for name in ("tcp", "tcp6"):
        shutil.copyfile(f"/proc/net/{name}", tmp_path / "net" / name)
    fd_dir = tmp_path / str(pid) / "fd"
    fd_dir.mkdir(parents=True)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        os.symlink(target, fd_dir / fd)
    captured = census(pid=pid, port=farm4.port, proc=str(tmp_path))
    assert captured.backend == "procfs"
    assert captured.counts == live.counts
    assert sorted(captured.sockets, key=repr) == sorted(live.sockets, key=repr)
    host = host_counts("close-wait", port=farm4.port, proc=str(tmp_path))
    assert host == {"CLOSE_WAIT": 4}


def test_missing_process_raises_process_not_found() -> None:
    """A pid with no process raises ProcessNotFound naming the pid."""
    with pytest.raises(ProcessNotFound, match="no process 4194303"):
        process_sockets(4194303)


def test_wrong_proc_root_is_a_clear_error(tmp_path: Path) -> None:
    """A proc root without TCP tables says what to pass instead."""
    with pytest.raises(CensusError, match="pass the root of a mounted procfs"):
        host_counts(proc=str(tmp_path))


def test_bad_filters_say_what_is_expected() -> None:
    """A host name, a bad port or an unknown backend raise ValueError saying what to give."""
    with pytest.raises(ValueError, match="give an IP literal"):
        Endpoint("localhost:80")
    with pytest.raises(ValueError, match="give an IP literal"):
        Endpoint("127.0.0.1:99999")
    with pytest.raises(ValueError, match="out of range"):
        host_counts(port=70000)
    with pytest.raises(ValueError, match="unknown census backend"):
        host_counts(backend="nope")
    with pytest.raises(ValueError, match="unknown TCP state 'wait'"):
        host_counts("wait")


def test_psutil_backend_agrees_with_netlink(farm4: Farm) -> None:
    """The psutil fallback (other platforms) counts the farm's sockets like netlink does."""
    pytest.importorskip("psutil")
    farm4.close_wait(3)
    farm4.established(2)
    states = ["CLOSE_WAIT", "ESTABLISHED"]
    netlink = process_counts(states=states, port=farm4.port)
    fallback = process_counts(states=states, port=farm4.port, backend="psutil")
    assert fallback == netlink == {"CLOSE_WAIT": 3, "ESTABLISHED": 4}


def test_process_in_another_network_namespace_is_read_from_its_table() -> None:
    """A process in its own network namespace: its sockets come from /proc/PID/net (ours
    cannot see them through netlink), joined by inode like any other."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux) to make a network namespace")
    script = (
        "import socket, sys\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [unshare, "--net", sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        taken = census(pid=proc.pid)
        assert taken.backend == "procfs"
        assert [(s.state, s.local) for s in taken.sockets] == [("LISTEN", ("127.0.0.1", port))]
        # Our own namespace has no such listener (or, by chance, another one on that port).
        assert all(s.inode != taken.sockets[0].inode for s in host_sockets("listen"))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
