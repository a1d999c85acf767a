"""The pytest plugin on real test files that use httpx: sync, pytest-asyncio and asyncio.run."""

from __future__ import annotations

from pathlib import Path

# Imported here so that pytester's in-process runs reuse this copy (see tests/test_plugin.py).
import httpx  # noqa: F401
import pytest

INNER = pytest.mark.allow_leaks(reason="the inner pytester session leaks on purpose")

SERVER_SCRIPT = str(Path(__file__).parent.parent / "_httpserver.py")

CONFTEST = f"""
import subprocess, sys
import pytest

@pytest.fixture(scope="session")
def server():
    proc = subprocess.Popen([sys.executable, {SERVER_SCRIPT!r}],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{{port}}"
    proc.stdin.close(); proc.wait(10); proc.stdout.close()
"""

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

TESTS = """
import asyncio
import httpx
import pytest

def fetch_sync(client, url):
    return client.send(client.build_request("GET", url), stream=True).status_code

async def fetch_async(client, url):
    response = await client.send(client.build_request("GET", url), stream=True)
    return response.status_code

def test_sync_leak(server):
    with httpx.Client() as client:
        assert fetch_sync(client, server + "/403?api_key=TOPSECRET") == 403

def test_sync_clean(server):
    with httpx.Client() as client, client.stream("GET", server + "/403") as response:
        assert response.status_code == 403

@pytest.mark.asyncio
async def test_async_leak(server):
    async with httpx.AsyncClient() as client:
        task = asyncio.create_task(fetch_async(client, server + "/403"), name="leaky-task")
        assert await task == 403

@pytest.mark.asyncio
async def test_async_clean(server):
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", server + "/403") as response:
            assert response.status_code == 403

def test_asyncio_run_leak(server):
    async def main():
        async with httpx.AsyncClient() as client:
            return await fetch_async(client, server + "/403")
    assert asyncio.run(main()) == 403

def test_asyncio_run_clean(server):
    async def main():
        async with httpx.AsyncClient() as client:
            return (await client.get(server + "/403")).status_code
    assert asyncio.run(main()) == 403
"""


def line_of(source: str, text: str) -> int:
    """The line number of ``text`` in a file written by makepyfile (which strips the source)."""
    return next(n for n, line in enumerate(source.strip().splitlines(), 1) if text in line)


@INNER
def test_plugin_fails_each_leaking_httpx_test_and_passes_clean_ones(
    pytester: pytest.Pytester,
) -> None:
    """Sync, pytest-asyncio and asyncio.run tests that leak fail naming the line; clean pass."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_app=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, errors=3)
    sync_line = line_of(TESTS, "stream=True).status_code")
    async_line = line_of(TESTS, "response = await client.send")
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_sync_leak*",
            "*poolwatch: 1 connection leaked in test_app.py::test_sync_leak:",
            f"*httpx http://127.0.0.1:*: test_app.py:{sync_line} in fetch_sync",
            "*response 403 text/html, 86-byte body*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_async_leak*",
            f"*httpx http://127.0.0.1:*: test_app.py:{async_line} in fetch_async",
            "*on task leaky-task on thread MainThread*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_asyncio_run_leak*",
            f"*httpx http://127.0.0.1:*: test_app.py:{async_line} in fetch_async",
        ]
    )
    assert "TOPSECRET" not in result.stdout.str()
    assert "api_key" not in result.stdout.str()
