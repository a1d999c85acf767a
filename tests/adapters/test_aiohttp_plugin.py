"""The pytest plugin with aiohttp: async tests (pytest-asyncio, asyncio.run) fail on a leak."""

from __future__ import annotations

import pytest

INNER = pytest.mark.allow_leaks(reason="the inner pytester session leaks on purpose")

CONFTEST = """
import pytest
from poolwatch.testing import Downstream

@pytest.fixture
def ds():
    with Downstream() as server:
        server.route("/403", status=403, body="html")
        server.route("/large", status=200, body="large")
        yield server
"""

INI = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"

TESTS = """
import asyncio
import aiohttp
import pytest

async def fetch_status(session, url):
    response = await session.get(url)
    return response.status

@pytest.mark.asyncio
async def test_async_leak(ds):
    async with aiohttp.ClientSession() as session:
        assert await fetch_status(session, ds.url_for("/large?api_key=TOPSECRET")) == 200

@pytest.mark.asyncio
async def test_async_small_unread_is_clean(ds):
    async with aiohttp.ClientSession() as session:
        assert await fetch_status(session, ds.url_for("/403")) == 403

@pytest.mark.asyncio
async def test_async_with_is_clean(ds):
    async with aiohttp.ClientSession() as session, session.get(ds.url_for("/large")) as r:
        assert r.status == 200

def test_asyncio_run_leak(ds):
    async def main():
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(fetch_status(session, ds.url_for("/large")), name="bg")
            return await task
    assert asyncio.run(main()) == 200

def test_asyncio_run_clean(ds):
    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.get(ds.url_for("/large")) as response:
                return len(await response.read())
    assert asyncio.run(main()) == 1024 * 1024
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    return pytester


def line_of(source: str, text: str) -> int:
    """The line number of ``text`` in a file written by makepyfile (which strips the source)."""
    return next(n for n, line in enumerate(source.strip().splitlines(), 1) if text in line)


@INNER
def test_async_tests_that_leak_fail_naming_line_task_and_response(
    suite: pytest.Pytester,
) -> None:
    """pytest-asyncio and asyncio.run tests that leave a body unreleased fail at teardown."""
    suite.makepyfile(test_app=TESTS)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=2)
    line = line_of(TESTS, "response = await session.get(url)")
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_async_leak*",
            "*poolwatch: 1 connection leaked in test_app.py::test_async_leak:",
            f"*aiohttp TCPConnector 0x*; limit 100: test_app.py:{line} in fetch_status",
            "*pool closed while leased; leased * s ago on task * on thread MainThread, "
            "response 200 application/octet-stream, 1048576-byte body*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_asyncio_run_leak*",
            "*poolwatch: 1 connection leaked in test_app.py::test_asyncio_run_leak:",
            f"*aiohttp TCPConnector 0x*; limit 100: test_app.py:{line} in fetch_status",
            "*pool closed while leased; leased * s ago on task bg on thread MainThread*",
        ]
    )
    for clean in (
        "test_async_small_unread_is_clean",
        "test_async_with_is_clean",
        "test_asyncio_run_clean",
    ):
        assert f"ERROR at teardown of {clean}" not in result.stdout.str()
    assert "TOPSECRET" not in result.stdout.str()
    assert "api_key" not in result.stdout.str()


@INNER
def test_report_header_lists_aiohttp(suite: pytest.Pytester) -> None:
    """With aiohttp installed, the session header says it is instrumented."""
    suite.makepyfile(test_nothing="def test_ok():\n    pass\n")
    result = suite.runpytest_subprocess()
    result.stdout.fnmatch_lines(["poolwatch: fail on leaked connections (*aiohttp*)"])
