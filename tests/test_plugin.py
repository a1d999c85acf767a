"""The pytest plugin, run on real test files with pytester (inner tests use a real server)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Imported here so that pytester's in-process runs do not import (and then drop) a second copy:
# requests objects from one copy fail isinstance checks against the other.
import requests  # noqa: F401

INNER = pytest.mark.allow_leaks(reason="the inner pytester session leaks on purpose")

CONFTEST = f"""
import subprocess, sys
import pytest

@pytest.fixture(scope="session")
def server():
    proc = subprocess.Popen([sys.executable, {str(Path(__file__).with_name("_httpserver.py"))!r}],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{{port}}"
    proc.stdin.close(); proc.wait(10); proc.stdout.close()
"""

LEAKY_TESTS = """
import requests

def fetch_status(session, url):
    response = session.get(url, stream=True)
    return response.status_code

def test_leaks(server):
    session = requests.Session()
    assert fetch_status(session, server + "/403?api_key=TOPSECRET") == 403

def test_clean(server):
    with requests.Session() as session:
        with session.get(server + "/403", stream=True) as response:
            assert response.status_code == 403
"""


INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    return pytester


def line_of(source: str, text: str) -> int:
    """The line number of ``text`` in a file written by makepyfile (which strips the source)."""
    return next(n for n, line in enumerate(source.strip().splitlines(), 1) if text in line)


@INNER
def test_leaking_test_fails_naming_line_response_and_thread(suite: pytest.Pytester) -> None:
    """A test that leaves a response unread fails; the report names the acquiring line."""
    suite.makepyfile(test_app=LEAKY_TESTS)
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*poolwatch: 1 connection leaked in test_app.py::test_leaks:",
            f"*urllib3 http://127.0.0.1:*: test_app.py:{line_of(LEAKY_TESTS, 'stream=True')} in "
            "fetch_status",
            "*dropped unread*leased * s ago on thread MainThread, response 403 text/html, "
            "86-byte body",
        ]
    )
    assert "TOPSECRET" not in result.stdout.str()
    assert "api_key" not in result.stdout.str()


@INNER
def test_report_header_names_mode_and_libraries(suite: pytest.Pytester) -> None:
    """The session header says poolwatch's mode and which libraries are instrumented."""
    suite.makepyfile(test_nothing="def test_ok():\n    pass\n")
    result = suite.runpytest()
    result.stdout.fnmatch_lines(["poolwatch: fail on leaked connections (*urllib3*)"])


@INNER
def test_allow_leaks_marker_passes_and_keeps_the_report(suite: pytest.Pytester) -> None:
    """@pytest.mark.allow_leaks(reason=...) lets a test leak; its report section says why."""
    suite.makepyfile(
        test_allowed=LEAKY_TESTS.replace(
            "def test_leaks(",
            "@pytest.mark.allow_leaks(reason='reproduces bug 42')\ndef test_leaks(",
        ).replace("import requests", "import pytest, requests")
    )
    result = suite.runpytest("-rA")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*poolwatch (allowed)*", "*allowed: reproduces bug 42*"])


@INNER
def test_allow_leaks_without_reason_is_an_error(suite: pytest.Pytester) -> None:
    """The marker needs a reason: a bare one fails the test and says how to write it."""
    suite.makepyfile(
        test_bare=LEAKY_TESTS.replace(
            "def test_leaks(", "@pytest.mark.allow_leaks\ndef test_leaks("
        ).replace("import requests", "import pytest, requests")
    )
    result = suite.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*allow_leaks needs a reason*"])


@INNER
def test_warn_mode_warns_instead_of_failing(suite: pytest.Pytester) -> None:
    """--poolwatch=warn turns the failure into a PoolwatchLeakWarning."""
    suite.makepyfile(test_app=LEAKY_TESTS)
    result = suite.runpytest_subprocess("--poolwatch=warn")  # outer filterwarnings=error
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*PoolwatchLeakWarning: poolwatch: 1 connection leaked*"])


@INNER
def test_ini_off_mode_disables_checks(suite: pytest.Pytester) -> None:
    """`poolwatch = off` in the ini file: no checks, and the header says so."""
    suite.makeini(INI + "poolwatch = off\n")
    suite.makepyfile(test_app=LEAKY_TESTS)
    result = suite.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["poolwatch: off"])


def test_bad_ini_mode_is_a_usage_error(suite: pytest.Pytester) -> None:
    """An unknown mode in the ini file stops the run with the allowed values."""
    suite.makeini(INI + "poolwatch = loud\n")
    suite.makepyfile(test_app="def test_ok():\n    pass\n")
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*poolwatch = 'loud' * use one of: fail, warn, off*"])


@INNER
def test_module_fixture_leak_is_checked_at_its_finalization(suite: pytest.Pytester) -> None:
    """A module fixture's leased connection is not blamed on the first test that used it."""
    fixture_tests = """
import pytest, requests

@pytest.fixture(scope="module")
def warm_client(server):
    session = requests.Session()
    held = session.get(server + "/403", stream=True)
    yield session

def test_first(warm_client):
    pass

def test_second(warm_client):
    pass
"""
    suite.makepyfile(test_fixture_scope=fixture_tests)
    result = suite.runpytest("-v")
    result.stdout.fnmatch_lines(
        [
            "*test_first PASSED*",
            "*test_second PASSED*",
            "*test_second ERROR*",
            "*1 connection leaked by fixture 'warm_client' (module scope):*",
            f"*test_fixture_scope.py:{line_of(fixture_tests, 'held =')} in warm_client*",
        ]
    )
    result.assert_outcomes(passed=2, errors=1)


@INNER
def test_async_test_leak_names_the_task(suite: pytest.Pytester) -> None:
    """A leak made inside asyncio.run in a test names the coroutine line and the task."""
    async_tests = """
import asyncio, requests

async def fetch(url):
    return requests.get(url, stream=True)

def test_async_leak(server):
    async def main():
        task = asyncio.create_task(fetch(server + "/403"), name="fetcher-1")
        return await task
    kept = asyncio.run(main())
"""
    suite.makepyfile(test_async=async_tests)
    result = suite.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            f"*test_async.py:{line_of(async_tests, 'stream=True')} in fetch*",
            "*on task fetcher-1 on thread MainThread*",
        ]
    )


def test_orphan_is_reported_but_not_the_tests_fault(suite: pytest.Pytester) -> None:
    """A connection the library orphaned is listed in the report and does not fail the test."""
    suite.makepyfile(
        test_orphan="""
import poolwatch

class Conn:
    pass

def test_library_orphans_a_connection():
    tracker = poolwatch.get_tracker()
    pool_obj, conn = Conn(), Conn()
    pool = tracker.pool(pool_obj, "demo", "library pool")
    tracker.checkout(pool, id(conn), conn)
    tracker.end(pool, id(conn), "orphaned", "cancelled mid-connect; the library kept the slot")
"""
    )
    result = suite.runpytest("-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*poolwatch (orphaned by the library)*",
            "*demo library pool: test_orphan.py:*in test_library_orphans_a_connection",
            "*orphaned*cancelled mid-connect; the library kept the slot*",
        ]
    )


def test_a_fault_in_poolwatch_never_fails_the_users_test(suite: pytest.Pytester) -> None:
    """With a tracker that raises, the test passes and the report says it was not checked."""
    suite.makepyfile(
        test_broken="""
import poolwatch

def broken_clock():
    raise RuntimeError("injected fault")

def test_runs_with_a_broken_tracker():
    tracker = poolwatch.Tracker()
    tracker._clock = broken_clock
    poolwatch.instrument(tracker=tracker)
"""
    )
    result = suite.runpytest_subprocess("-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*poolwatch could not check this test for leaks: RuntimeError('injected fault')*"]
    )
