"""Secure by default: loopback binding, the bearer token, and no secret in any endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import urllib3

from poolwatch.admin import AdminBindError, check_bind, parse_address, serve

from .conftest import get

TOKEN = "s3cret-admin-token-for-tests"
DATA_PAGES = [
    "healthcheck",
    "metrics",
    "threads",
    "leases",
    "pools",
    "sockets",
    "dashboard.json",
]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.invalid"])
def test_refuses_non_loopback_binding(host: str) -> None:
    """serve() refuses to listen beyond loopback unless allow_public=True, naming the fix."""
    with pytest.raises(AdminBindError, match="allow_public=True"):
        serve(host=host, port=0)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_allowed(host: str) -> None:
    """Loopback addresses and localhost pass the binding check."""
    check_bind(host, allow_public=False)


def test_allow_public_lifts_the_refusal() -> None:
    """allow_public=True accepts a non-loopback address (checked without binding it)."""
    check_bind("0.0.0.0", allow_public=True)


def test_serves_on_ipv6_loopback() -> None:
    """The server listens on [::1] when asked and builds its URL with brackets."""
    with serve(host="::1") as admin:
        assert admin.url.startswith("http://[::1]:")
        assert get(admin.url + "ping").text == "pong\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9091", ("127.0.0.1", 9091)),
        ("[::1]:0", ("::1", 0)),
        (":8081", ("127.0.0.1", 8081)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, [IPv6]:PORT and :PORT parse to (host, port)."""
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"])
def test_parse_address_rejects_bad_input(text: str) -> None:
    """A missing or bad port is an error that shows the expected form."""
    with pytest.raises(AdminBindError, match=r"HOST:PORT|out of range"):
        parse_address(text)


@pytest.fixture
def guarded() -> Iterator[str]:
    with serve(token=TOKEN) as admin:
        yield admin.url


@pytest.mark.parametrize("page", DATA_PAGES)
def test_token_is_enforced(guarded: str, page: str) -> None:
    """With a token, data pages answer 401 without it or with a wrong one, 200 with it."""
    assert get(guarded + page).status == 401
    wrong = "x" * len(TOKEN)
    assert get(guarded + page, {"Authorization": f"Bearer {wrong}"}).status == 401
    assert get(guarded + page, {"Authorization": f"Basic {TOKEN}"}).status == 401
    reply = get(guarded + page, {"Authorization": f"Bearer {TOKEN}"})
    # /healthcheck may be 500 from other pools of this test process: not a refusal either way.
    assert reply.status in ((200, 500) if page == "healthcheck" else (200,)), reply.text[:200]
    assert "Authorization" not in reply.text


def test_unauthorised_reply_names_the_scheme(guarded: str) -> None:
    """A 401 says which header to send."""
    reply = get(guarded + "leases")
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="poolwatch"'
    assert "Authorization: Bearer" in reply.json()["error"]


def test_ping_and_page_shell_need_no_token(guarded: str) -> None:
    """/ping and the dashboard's static page hold no data and stay open."""
    assert get(guarded + "ping").status == 200
    page = get(guarded)
    assert page.status == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert get(guarded + "static/dashboard.js").status == 200


def test_empty_token_is_refused() -> None:
    """An empty token is a configuration error, not an open door."""
    with pytest.raises(ValueError, match="non-empty"):
        serve(token=" ")


URL_USER = "leakuser"
URL_PASSWORD = "pw-in-url-7f3a"
QUERY_SECRET = "qs-token-91bd"
HEADER_SECRET = "bearer-hdr-55ce"
COOKIE_SECRET = "cookie-val-0a1e"
LOCAL_SECRET = "local-var-secret-c0de"
SECRETS = [URL_PASSWORD, QUERY_SECRET, HEADER_SECRET, COOKIE_SECRET, LOCAL_SECRET]


def test_no_secret_in_any_endpoint(downstream: str) -> None:
    """URL credentials, query strings, Authorization/Cookie headers and locals appear nowhere."""
    port = downstream.rsplit(":", 1)[1]
    url = f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{port}/403/path?token={QUERY_SECRET}"
    manager = urllib3.PoolManager(maxsize=2)
    kept = [
        manager.request(
            "GET",
            url,
            headers={"Authorization": f"Bearer {HEADER_SECRET}", "Cookie": COOKIE_SECRET},
            preload_content=False,
        )
    ]
    parked = threading.Event()
    release = threading.Event()

    def holds_a_secret_local() -> None:
        secret = LOCAL_SECRET  # a local of a live frame: the thread dump must not show it
        parked.set()
        release.wait(10)
        assert secret

    thread = threading.Thread(target=holds_a_secret_local, name="secret-holder")
    thread.start()
    try:
        parked.wait(5)
        with serve() as admin:
            pages = [*DATA_PAGES, "threads?format=json", "leases?format=text", ""]
            bodies = {page: get(admin.url + page).text for page in pages}
    finally:
        release.set()
        thread.join(5)
        for response in kept:
            response.drain_conn()
            response.release_conn()
        manager.clear()
    assert f"127.0.0.1:{port}" in bodies["leases"]  # the leak is shown ...
    for page, body in bodies.items():
        for secret in SECRETS:
            assert secret not in body, f"{secret!r} leaked through /{page}"  # ... its secrets not
        assert URL_USER not in body, page


def test_dashboard_url_carries_the_token_in_the_fragment() -> None:
    """dashboard_url puts the token after '#', the part of a URL no server receives."""
    with serve(token="a b/c") as admin:
        assert admin.dashboard_url == admin.url + "#token=a%20b%2Fc"
    with serve() as admin:
        assert admin.dashboard_url == admin.url
