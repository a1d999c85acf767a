"""Real TCP sockets in known states on loopback, and ss to check the census against."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

SS = shutil.which("ss")
#: Linux's TCP_CLOSE_WAIT (include/net/tcp_states.h), the first byte of TCP_INFO.
TCP_CLOSE_WAIT = 8


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


LINGER_RST = struct.pack("ii", 1, 0)


class Farm:
    """A listener on 127.0.0.1 or ::1 and sockets toward it in chosen TCP states.

    ``close_wait(n)``: n client sockets whose server half closed (the clients never read or
    close). ``established(n)``: n connected pairs, both ends held (2n ESTABLISHED sockets).
    ``time_wait(n)``: n connections the client closed first (client half in TIME_WAIT, no fd).
    Everything is closed with an RST at teardown so nothing lingers.
    """

    def __init__(self, family: socket.AddressFamily) -> None:
        self.family = family
        self.host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((self.host, 0))
        self.listener.listen(256)
        self.port: int = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []

    def _pair(self) -> tuple[socket.socket, socket.socket]:
        client = socket.socket(self.family, socket.SOCK_STREAM)
        client.connect((self.host, self.port))
        server, _ = self.listener.accept()
        return client, server

    def close_wait(self, n: int) -> list[socket.socket]:
        clients = []
        for _ in range(n):
            client, server = self._pair()
            server.close()
            clients.append(client)
        self.held.extend(clients)
        # Each client is in CLOSE_WAIT once the server's FIN has landed (see settle).
        settle(lambda: all(_tcp_state(client) == TCP_CLOSE_WAIT for client in clients))
        return clients

    def established(self, n: int) -> None:
        for _ in range(n):
            self.held.extend(self._pair())

    def time_wait(self, n: int) -> None:
        for _ in range(n):
            client, server = self._pair()
            client.close()
            server.close()

    def close(self) -> None:
        for sock in self.held:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            sock.close()
        self.listener.close()


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def farm(request: pytest.FixtureRequest) -> Iterator[Farm]:
    """A Farm on 127.0.0.1 and on ::1 (the test runs once for each)."""
    made = Farm(request.param)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def farm4() -> Iterator[Farm]:
    """A Farm on 127.0.0.1."""
    made = Farm(socket.AF_INET)
    try:
        yield made
    finally:
        made.close()


def ss_lines(*args: str) -> list[str]:
    """Output lines of ``ss -H`` with ``args`` (no header: -H)."""
    if SS is None:
        pytest.skip("ss (iproute2) is not installed")
    out = subprocess.run([SS, "-H", *args], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def ss_count(state: str, port: int, *, pid: int | None = None, family: str = "") -> int:
    """How many sockets ss lists in ``state`` with ``port`` at either end (of ``pid``)."""
    args = ["-tan"] + (["-p"] if pid is not None else []) + ([family] if family else [])
    lines = ss_lines(*args, "state", state, f"( sport = :{port} or dport = :{port} )")
    if pid is not None:
        lines = [line for line in lines if f"pid={pid}," in line]
    return len(lines)


def ss_endpoints(state: str, port: int, pid: int) -> set[tuple[str, str]]:
    """(local, peer) text of the sockets of ``pid`` in ``state`` with ``port`` at either end."""
    lines = ss_lines("-tanp", "state", state, f"( sport = :{port} or dport = :{port} )")
    out = set()
    for line in lines:
        if f"pid={pid}," not in line:
            continue
        # With a state filter ss drops the State column: Recv-Q Send-Q Local Peer ...
        fields = line.split()
        out.add((fields[2], fields[3]))
    return out


def normalise(endpoint: str) -> str:
    """ss prints IPv6 as [::1]:port and IPv4-mapped as [::ffff:127.0.0.1]:port."""
    return re.sub(r"%\w+", "", endpoint)


def settle(check: object, *, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` is true: FINs on loopback land within microseconds,
    but a loaded machine can delay the softirq that processes them."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
