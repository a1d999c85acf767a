"""The census joined with leases: a leaked requests connection whose server closed is CLOSE_WAIT
and counted as leased; an idle pooled one as idle; a socket outside any pool as unknown."""

from __future__ import annotations

import http.server
import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

import poolwatch
from poolwatch.census import LeaseCensus, join_leases, process_counts

from .conftest import settle

requests = pytest.importorskip("requests")


class _ClosingHandler(http.server.BaseHTTPRequestHandler):
    """Answers with a keep-alive-looking HTTP/1.1 response, then hangs up (FIN, or RST on
    /reset): the client is left holding a socket the server has closed."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"x" * 64
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path.startswith("/reset"):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def closing_server() -> Iterator[tuple[str, int]]:
    """(base URL, port) of a real HTTP server on 127.0.0.1 that closes after each response."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClosingHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="closing-server", daemon=True)
    thread.start()
    port = server.server_address[1]
    yield f"http://127.0.0.1:{port}", port
    server.shutdown()
    server.server_close()


def _mine(result: LeaseCensus, port: int) -> LeaseCensus:
    """The parts of a process-wide join that concern the test server's port."""
    return LeaseCensus(
        result.pid,
        tuple(lease for lease in result.leases if lease.pool.endswith(f":{port}")),
        tuple(s for s in result.sockets if s.remote[1] == port),
        tuple(pair for pair in result.close_wait_leased if pair[1].remote[1] == port),
        tuple(pair for pair in result.close_wait_idle if pair[1].remote[1] == port),
        tuple(s for s in result.close_wait_unknown if s.remote[1] == port),
    )


def test_leaked_connection_is_close_wait_and_counted_as_leased(
    closing_server: tuple[str, int],
) -> None:
    """Leaked (unread stream) -> leased CLOSE_WAIT with its call site; read and returned ->
    idle CLOSE_WAIT in its pool; a bare socket -> unknown CLOSE_WAIT."""
    url, port = closing_server
    if "urllib3" not in poolwatch.instrumented():
        pytest.skip("poolwatch's urllib3 adapter is not installed in this run")
    session = requests.Session()
    raw = socket.create_connection(("127.0.0.1", port))
    leaked = None
    try:
        leaked = session.get(f"{url}/leak", stream=True)  # never read: the slot stays leased
        body = session.get(f"{url}/idle").content  # read: the connection goes back idle
        assert body == b"x" * 64
        raw.sendall(b"GET /raw HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        settle(
            lambda: (
                process_counts(states="close-wait", remote=f"127.0.0.1:{port}")["CLOSE_WAIT"] == 3
            )
        )

        result = _mine(join_leases(), port)

        assert len(result.leases) == 1
        lease = result.leases[0]
        assert lease.socket is not None
        assert lease.socket.state == "CLOSE_WAIT"
        assert "test_join.py" in str(lease.callsite)
        assert "socket 127.0.0.1:" in lease.describe()
        assert "CLOSE_WAIT" in lease.describe()
        assert result.close_wait == {"leased": 1, "idle": 1, "unknown": 1}
        leased_lease, leased_socket = result.close_wait_leased[0]
        assert leased_lease.seq == lease.seq
        assert leased_socket.inode == lease.socket.inode
        pool, idle_socket = result.close_wait_idle[0]
        assert pool == f"urllib3 http://127.0.0.1:{port}"
        assert idle_socket.inode != leased_socket.inode
        assert result.close_wait_unknown[0].local == raw.getsockname()[:2]
        text = result.describe()
        assert "1 leased = leaks, 1 idle in a pool, 1 unknown" in text
        assert f"({pool})" in text
        doc = result.as_dict()
        assert doc["close_wait"]["leased"] == 1  # type: ignore[index]
    finally:
        if leaked is not None:
            leaked.close()  # requests returns the slot: the test leaves no lease behind
        session.close()
        raw.close()


def test_reset_socket_of_a_lease_is_close(closing_server: tuple[str, int]) -> None:
    """A leased connection whose server reset it is in no TCP table: its state is CLOSE."""
    url, port = closing_server
    if "urllib3" not in poolwatch.instrumented():
        pytest.skip("poolwatch's urllib3 adapter is not installed in this run")
    session = requests.Session()
    leaked = None
    try:
        leaked = session.get(f"{url}/reset", stream=True)
        settle(
            lambda: (
                not process_counts(remote=f"127.0.0.1:{port}", states="all")["CLOSE_WAIT"]
                and not process_counts(remote=f"127.0.0.1:{port}", states="all")["ESTABLISHED"]
            )
        )
        result = _mine(join_leases(), port)
        assert [lease.socket.state for lease in result.leases if lease.socket] == ["CLOSE"]
        assert result.close_wait == {"leased": 0, "idle": 0, "unknown": 0}
    finally:
        if leaked is not None:
            leaked.close()
        session.close()


def test_join_with_an_empty_tracker_counts_everything_unknown(
    closing_server: tuple[str, int],
) -> None:
    """A tracker that saw no pool leaves every CLOSE_WAIT socket unknown."""
    _url, port = closing_server
    raw = socket.create_connection(("127.0.0.1", port))
    try:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        settle(
            lambda: (
                process_counts(states="close-wait", remote=f"127.0.0.1:{port}")["CLOSE_WAIT"] == 1
            )
        )
        result = _mine(join_leases(poolwatch.Tracker()), port)
        assert result.leases == ()
        assert result.close_wait == {"leased": 0, "idle": 0, "unknown": 1}
        assert repr(result).startswith(f"<LeaseCensus pid {result.pid} [leases 0 |")
    finally:
        raw.close()


def test_readme_census_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's census example runs as written and prints the CLOSE_WAIT split."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Socket census", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("{'leased': ")
    assert out[1].startswith(f"process {os.getpid()}: ")
