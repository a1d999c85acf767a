"""Downstream: each scripted behaviour checked on the wire, with real clients and raw sockets."""

from __future__ import annotations

import gzip
import json
import socket
import time

import aiohttp
import httpx
import pytest
import requests
import urllib3

from poolwatch.testing import Downstream, Reply, error_page
from poolwatch.testing._census import PeerSocket, _census_rows, _read_procfs, sockets_toward

from ._wire import header_lines, raw_exchange, raw_get


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- statuses, headers and body kinds ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [
        ("html", "text/html"),
        ("json", "application/json"),
        ("text", "text/plain"),
        ("large", "application/octet-stream"),
    ],
)
def test_body_kinds_arrive_with_their_type_and_length(
    downstream: Downstream, kind: str, content_type: str
) -> None:
    """Each body kind arrives with its content type and a Content-Length matching the bytes."""
    downstream.route("/r", status=403, body=kind, size=200_000)
    with requests.Session() as session:
        response = session.get(downstream.url_for("/r"))
    assert response.status_code == 403
    assert response.headers["Content-Type"] == content_type
    assert int(response.headers["Content-Length"]) == len(response.content)
    if kind == "large":
        assert len(response.content) == 200_000
    if kind == "json":
        assert response.json() == {"reason": "Forbidden", "status": 403}
    if kind == "html":
        assert b"<title>403 Forbidden</title>" in response.content


def test_literal_bytes_and_custom_headers_are_sent_as_given(downstream: Downstream) -> None:
    """A bytes body and extra headers are sent verbatim."""
    downstream.route("/b", body=b"hello", headers={"X-Trace": "t1"}, content_type="text/x-demo")
    head, body = raw_get(downstream, "/b")
    headers = header_lines(head)
    assert body == b"hello"
    assert headers["x-trace"] == "t1"
    assert headers["content-type"] == "text/x-demo"
    assert headers["content-length"] == "5"


def test_content_length_zero_is_on_the_wire(downstream: Downstream) -> None:
    """body='empty' sends `Content-Length: 0` and no body bytes."""
    downstream.route("/e", status=403, body="empty")
    head, body = raw_get(downstream, "/e")
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert header_lines(head)["content-length"] == "0"
    assert body == b""


def test_body_none_has_no_length_and_ends_with_the_connection(downstream: Downstream) -> None:
    """body='none' sends neither a length nor chunking, then closes; clients see an empty body."""
    downstream.route("/n", status=200, body="none")
    head, body = raw_get(downstream, "/n")
    headers = header_lines(head)
    assert "content-length" not in headers
    assert "transfer-encoding" not in headers
    assert body == b""
    with requests.Session() as session:
        assert session.get(downstream.url_for("/n")).content == b""
        assert session.get(downstream.url_for("/n")).content == b""
    numbers = [r.connection for r in downstream.requests if r.path == "/n"]
    assert len(set(numbers)) == 3  # never reused: the message was delimited by the close


def test_204_and_head_carry_no_body(downstream: Downstream) -> None:
    """A 204 and the answer to HEAD have no body bytes even when a body kind is scripted."""
    downstream.route("/nc", status=204, body="json")
    downstream.route("/h", status=200, body="text")
    head, body = raw_get(downstream, "/nc")
    assert head.startswith(b"HTTP/1.1 204 No Content")
    assert body == b""
    head, body = raw_get(downstream, "/h", method="HEAD")
    assert header_lines(head)["content-length"] == str(len(b"200 OK\n"))
    assert body == b""


def test_chunked_body_is_really_chunked(downstream: Downstream) -> None:
    """framing='chunked' sends Transfer-Encoding: chunked and hex-sized chunks ending in 0."""
    downstream.route("/c", body="large", size=40_000, framing="chunked", chunk_size=16_384)
    head, body = raw_get(downstream, "/c")
    headers = header_lines(head)
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert body.startswith(b"4000\r\n")
    assert body.endswith(b"0\r\n\r\n")
    assert b"\r\n1c40\r\n" in body  # the last 7232-byte chunk
    with httpx.Client() as client:
        response = client.get(downstream.url_for("/c"))
    assert len(response.content) == 40_000


def test_close_framing_sends_no_length_and_closes(downstream: Downstream) -> None:
    """framing='close' sends the body without a length and ends the message by closing."""
    downstream.route("/u", body="text", framing="close")
    head, body = raw_get(downstream, "/u")
    assert "content-length" not in header_lines(head)
    assert body == b"200 OK\n"


def test_gzip_body_is_compressed_on_the_wire(downstream: Downstream) -> None:
    """encoding='gzip' sends gzip bytes with Content-Encoding; requests decodes them."""
    downstream.route("/g", body="json", encoding="gzip")
    head, body = raw_get(downstream, "/g")
    assert header_lines(head)["content-encoding"] == "gzip"
    assert body[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(body)) == {"reason": "OK", "status": 200}
    with requests.Session() as session:
        assert session.get(downstream.url_for("/g")).json()["status"] == 200


# -- connection behaviour ---------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(downstream: Downstream) -> None:
    """Kept-alive replies let a session send both requests over one TCP connection."""
    with requests.Session() as session:
        session.get(downstream.url_for("/a"))
        session.get(downstream.url_for("/a"))
    first, second = downstream.requests
    assert first.connection == second.connection
    assert downstream.connections_opened == 1


def test_close_after_response_forces_a_new_connection(downstream: Downstream) -> None:
    """connection='close' sends Connection: close and closes, so the next request reconnects."""
    downstream.route("/a", connection="close")
    with requests.Session() as session:
        first = session.get(downstream.url_for("/a"))
        session.get(downstream.url_for("/a"))
    assert first.headers["Connection"] == "close"
    assert [r.connection for r in downstream.requests] == [1, 2]


def test_idle_close_leaves_the_client_socket_in_close_wait(downstream: Downstream) -> None:
    """close_idle_after closes the idle kept-alive connection: the pooled client socket sits
    in CLOSE_WAIT (the peer closed, this process did not)."""
    downstream.route("/i", close_idle_after=0.1)
    with urllib3.PoolManager() as manager:
        response = manager.request("GET", downstream.url_for("/i"))
        assert response.status == 200
        assert downstream.wait_connections_closed(timeout=5.0)
        states = {}
        for _ in range(100):  # the FIN crosses loopback at once; poll a bounded while
            states = {s.state for s in sockets_toward(downstream.port)}
            if "CLOSE_WAIT" in states:
                break
            time.sleep(0.02)
        assert states == {"CLOSE_WAIT"}


def test_census_sources_agree_on_a_close_wait_socket(downstream: Downstream) -> None:
    """The per-descriptor reading, the census and the /proc tables see the same CLOSE_WAIT."""
    downstream.route("/i", close_idle_after=0.05)
    with urllib3.PoolManager() as manager:
        manager.request("GET", downstream.url_for("/i"))
        assert downstream.wait_connections_closed(timeout=5.0)
        mine: list[PeerSocket] = []
        for _ in range(100):
            mine = sockets_toward(downstream.port, states=("CLOSE_WAIT",))
            if mine:
                break
            time.sleep(0.02)
        assert len(mine) == 1
        port = downstream.port
        from_census = [
            s for s in _census_rows(port, ("CLOSE_WAIT",), "/proc") if s.remote[1] == port
        ]
        from_proc = [s for s in _read_procfs("/proc") if s.remote[1] == port]
        assert from_census == mine
        assert from_proc == mine


def test_server_idle_timeout_applies_to_every_connection() -> None:
    """Downstream(idle_timeout=...) closes a kept-alive connection that stays idle."""
    with Downstream(idle_timeout=0.5) as ds, requests.Session() as session:
        session.get(ds.url_for("/"))
        assert ds.wait_connections_closed(timeout=5.0)
        assert ds.open_connections == 0
        session.get(ds.url_for("/"))  # urllib3 notices the dropped socket and reconnects
        assert ds.connections_opened == 2


def test_reset_mid_body_breaks_the_client_read(downstream: Downstream) -> None:
    """connection='reset' sends part of the body then a TCP RST: the client's read fails."""
    downstream.route("/r", body="large", size=300_000, connection="reset")
    with requests.Session() as session:
        response = session.get(downstream.url_for("/r"), stream=True)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            response.content  # noqa: B018
        response.close()


def test_reset_raw_socket_sees_connection_reset(downstream: Downstream) -> None:
    """A raw reader gets ECONNRESET (not a clean end) after fewer bytes than announced."""
    downstream.route("/r", body="large", size=300_000, connection="reset")
    with pytest.raises(ConnectionResetError):
        raw_get(downstream, "/r")


def test_http10_answer_is_not_reused(downstream: Downstream) -> None:
    """http_version='1.0' answers with an HTTP/1.0 status line and closes the connection."""
    downstream.route("/o", http_version="1.0")
    with urllib3.PoolManager() as manager:
        first = manager.request("GET", downstream.url_for("/o"))
        manager.request("GET", downstream.url_for("/o"))
    assert first.version == 10
    assert [r.connection for r in downstream.requests] == [1, 2]


# -- delays -----------------------------------------------------------------------------------


def _connect(ds: Downstream, path: str) -> socket.socket:
    sock = socket.create_connection((ds.host, ds.port), timeout=5.0)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return sock


def test_delay_before_headers_holds_the_status_line(downstream: Downstream) -> None:
    """delay_headers: nothing arrives during the delay, then the whole response does."""
    downstream.route("/d", delay_headers=1.0)
    with _connect(downstream, "/d") as sock:
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(5.0)
        assert sock.recv(12) == b"HTTP/1.1 200"


def test_delay_before_final_chunk_stalls_after_the_data(downstream: Downstream) -> None:
    """delay_final_chunk: every data chunk arrives, the terminating chunk only later."""
    downstream.route(
        "/s", body=b"a" * 50 + b"b" * 50, framing="chunked", chunk_size=50, delay_final_chunk=1.0
    )
    with _connect(downstream, "/s") as sock:
        data = b""
        while not data.endswith(b"\r\n32\r\n" + b"b" * 50 + b"\r\n"):
            data += sock.recv(4096)
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(5.0)
        rest = b""
        while chunk := sock.recv(4096):
            rest += chunk
        assert rest == b"0\r\n\r\n"


def test_delay_mid_body_stalls_after_half(downstream: Downstream) -> None:
    """delay_mid_body: half the body arrives, then nothing during the delay, then the rest."""
    downstream.route("/m", body=b"a" * 10 + b"b" * 10, delay_mid_body=1.0)
    with _connect(downstream, "/m") as sock:
        data = b""
        while not data.endswith(b"a" * 10):
            data += sock.recv(4096)
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(5.0)
        assert sock.recv(4096) == b"b" * 10


def test_client_read_timeout_fires_on_a_slow_final_chunk(downstream: Downstream) -> None:
    """httpx with a short read timeout fails on a chunked body stalled before its last chunk."""
    downstream.route("/s", body="text", framing="chunked", delay_final_chunk=2.0)
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=0.1)) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get(downstream.url_for("/s"))


# -- load-balancer mode -----------------------------------------------------------------------


def test_load_balancer_rewrites_error_bodies_to_html(downstream: Downstream) -> None:
    """In load-balancer mode a 403 with no body reaches the client as an HTML page; 200 not."""
    downstream.load_balancer = True
    downstream.route("/forbidden", status=403, body="empty")
    downstream.route("/ok", status=200, body="json")
    with requests.Session() as session:
        forbidden = session.get(downstream.url_for("/forbidden"))
        ok = session.get(downstream.url_for("/ok"))
    assert forbidden.headers["Content-Type"] == "text/html"
    assert forbidden.content == error_page(403)
    assert int(forbidden.headers["Content-Length"]) == len(error_page(403))
    assert forbidden.headers["Server"] == "poolwatch-lb"
    assert ok.json() == {"reason": "OK", "status": 200}


def test_load_balancer_replaces_chunked_gzip_with_plain_length(downstream: Downstream) -> None:
    """The balancer's page is sent with a Content-Length, uncompressed, whatever was scripted."""
    downstream.load_balancer = True
    downstream.route("/x", status=502, body="json", framing="chunked", encoding="gzip")
    head, body = raw_get(downstream, "/x")
    headers = header_lines(head)
    assert "transfer-encoding" not in headers
    assert "content-encoding" not in headers
    assert body == error_page(502)


# -- scripting per call, recording ------------------------------------------------------------


def test_enqueued_replies_come_first_then_the_route(downstream: Downstream) -> None:
    """Queued replies answer the next calls in order; then the route answers again."""
    downstream.route("/q", status=200)
    downstream.enqueue(Reply(status=503), Reply(status=429), path="/q")
    with requests.Session() as session:
        statuses = [session.get(downstream.url_for("/q")).status_code for _ in range(3)]
    assert statuses == [503, 429, 200]


def test_requests_are_recorded_with_secrets_redacted(downstream: Downstream) -> None:
    """Recorded requests keep method, path and sizes but never credentials or query values."""
    url = downstream.url_for("/login?user=alice&token=s3cr3t").replace(
        "http://", "http://bob:hunter2@"
    )
    with requests.Session() as session:
        session.post(
            url,
            data=b"password=hunter2",
            headers={"Cookie": "sid=abc", "X-Api-Key": "k-123", "X-Request-Id": "r1"},
        )
    (recorded,) = downstream.requests
    assert recorded.method == "POST"
    assert recorded.path == "/login"
    assert recorded.target == "/login?user=<redacted>&token=<redacted>"
    assert recorded.header("authorization") == "<redacted>"
    assert recorded.header("cookie") == "<redacted>"
    assert recorded.header("x-api-key") == "<redacted>"
    assert recorded.header("x-request-id") == "r1"
    assert recorded.body_size == len(b"password=hunter2")
    text = repr(downstream.requests)
    for secret in ("s3cr3t", "hunter2", "sid=abc", "k-123", "alice"):
        assert secret not in text


def test_chunked_request_body_is_read_and_sized(downstream: Downstream) -> None:
    """A chunked upload is consumed (the connection stays usable) and its size recorded."""
    with httpx.Client() as client:
        client.post(downstream.url_for("/up"), content=iter([b"abc", b"defg"]))
        client.get(downstream.url_for("/up"))
    upload, follow = downstream.requests
    assert upload.body_size == 7
    assert upload.connection == follow.connection


def test_wait_for_requests_times_out_with_a_count() -> None:
    """wait_for_requests raises TimeoutError saying how many arrived."""
    with Downstream() as ds, pytest.raises(TimeoutError, match="0 of 1 requests"):
        ds.wait_for_requests(1, timeout=0.05)


def test_repr_shows_state(downstream: Downstream) -> None:
    """The repr names the URL, the request count, the open connections and the mode."""
    downstream.load_balancer = True
    with requests.Session() as session:
        session.get(downstream.url)
        assert repr(downstream) == (
            f"<Downstream {downstream.url} [requests 1 | connections open 1 | load-balancer]>"
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"body": "htm"}, "body must be bytes or one of none, empty, html"),
        ({"status": 99}, "status must be an int from 100 to 599"),
        ({"framing": "chunky"}, "framing must be one of length, chunked, close"),
        ({"http_version": "1.0", "framing": "chunked"}, "HTTP/1.0 has no chunked framing"),
        ({"delay_headers": -1}, "delay_headers must be >= 0"),
    ],
)
def test_bad_reply_fields_are_named(fields: dict[str, object], message: str) -> None:
    """A wrong Reply field raises ValueError naming the field and the accepted values."""
    with pytest.raises(ValueError, match=message):
        Reply(**fields)  # type: ignore[arg-type]


def test_route_rejects_reply_and_fields_together(downstream: Downstream) -> None:
    """route() takes a Reply or its fields, not both."""
    with pytest.raises(TypeError, match="not both"):
        downstream.route("/x", Reply(), status=404)


def test_port_before_start_says_how_to_start() -> None:
    """Asking an unstarted Downstream for its URL explains how to start it."""
    with pytest.raises(RuntimeError, match="not started"):
        _ = Downstream().url


def test_busy_port_is_a_clear_error(downstream: Downstream) -> None:
    """Asking for a port already listened on fails naming the address."""
    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{downstream.port}"):
        Downstream(port=downstream.port).start()


def test_http10_request_gets_an_answer_and_a_close(downstream: Downstream) -> None:
    """An HTTP/1.0 request without keep-alive is answered, recorded as 1.0, then closed."""
    data = raw_exchange(downstream, b"GET /old HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in data
    (recorded,) = downstream.requests
    assert recorded.http_version == "1.0"


def test_stop_closes_connections_with_fin(downstream: Downstream) -> None:
    """stop() closes kept-alive connections cleanly: the client socket reads EOF, not a reset."""
    with socket.create_connection((downstream.host, downstream.port), timeout=5.0) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b'"status": 200}'):
            data += sock.recv(4096)
        downstream.stop()
        assert sock.recv(1) == b""


# -- async, TLS, IPv6 -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_with_serves_aiohttp() -> None:
    """`async with Downstream()` serves an aiohttp session from a coroutine."""
    async with Downstream() as ds, aiohttp.ClientSession() as session:
        ds.route("/a", status=418, body="text")
        async with session.get(ds.url_for("/a")) as response:
            assert response.status == 418
            assert await response.text() == "418 I'm a Teapot\n"


@pytest.mark.asyncio
async def test_aiohttp_reads_chunked_and_gzip(downstream: Downstream) -> None:
    """aiohttp decodes a chunked gzip body from the downstream fixture."""
    downstream.route("/cg", body="json", framing="chunked", encoding="gzip", chunk_size=7)
    async with aiohttp.ClientSession() as session, session.get(downstream.url_for("/cg")) as r:
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert await r.json() == {"reason": "OK", "status": 200}


@pytest.mark.asyncio
async def test_httpx_async_client(downstream: Downstream) -> None:
    """httpx.AsyncClient gets the scripted status from the fixture's server."""
    downstream.route("/x", status=404, body="html")
    async with httpx.AsyncClient() as client:
        response = await client.get(downstream.url_for("/x"))
    assert response.status_code == 404
    assert "<title>404 Not Found</title>" in response.text


def test_tls_with_a_trustme_certificate() -> None:
    """tls=True serves HTTPS that requests, httpx and urllib3 verify against the test CA."""
    with Downstream(tls=True) as ds:
        assert ds.url.startswith("https://127.0.0.1:")
        with requests.Session() as session:
            assert session.get(ds.url, verify=ds.ca_file).status_code == 200
        with httpx.Client(verify=ds.client_ssl_context()) as client:
            assert client.get(ds.url).status_code == 200
        with urllib3.PoolManager(ssl_context=ds.client_ssl_context()) as manager:
            assert manager.request("GET", ds.url).status == 200
        with requests.Session() as session, pytest.raises(requests.exceptions.SSLError):
            session.get(ds.url)  # the system trust store does not know the test CA


@pytest.mark.asyncio
async def test_tls_with_aiohttp() -> None:
    """aiohttp verifies the TLS downstream with client_ssl_context()."""
    async with (
        Downstream(tls=True) as ds,
        aiohttp.ClientSession() as session,
        session.get(ds.url, ssl=ds.client_ssl_context()) as response,
    ):
        assert response.status == 200
        await response.read()


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback() -> None:
    """host='::1' listens on the IPv6 loopback with a bracketed URL."""
    with Downstream(host="::1") as ds:
        assert ds.url == f"http://[::1]:{ds.port}"
        with requests.Session() as session:
            assert session.get(ds.url_for("/six")).status_code == 200
        data = raw_exchange(ds, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK")
