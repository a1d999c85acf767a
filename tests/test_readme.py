"""The README's examples are the files under tests/examples/, and they run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(__file__).with_name("examples")


@pytest.mark.parametrize("name", ["quickstart.py", "test_leaky_example.py.txt"])
def test_readme_quotes_the_example_verbatim(name: str) -> None:
    """Each example file appears in README.md exactly as it is on disk."""
    assert (EXAMPLES / name).read_text() in (ROOT / "README.md").read_text()


def test_quickstart_runs_and_prints_the_diagnosis() -> None:
    """The quick start runs as a script and prints the pool, the lease and the LeakError."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[leased 1 | idle 0 | waiting 0 | max 10]>" in result.stdout
    assert "quickstart.py:14 in check_permission" in result.stdout
    assert "response 403 text/html" in result.stdout
    assert "1 connection leaked inside no_leaks()" in result.stdout


@pytest.mark.allow_leaks(reason="the inner pytester session leaks on purpose")
def test_leaky_example_fails_as_the_readme_says(pytester: pytest.Pytester) -> None:
    """The README's leaky test fails under the plugin with the report the README shows."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_app=(EXAMPLES / "test_leaky_example.py.txt").read_text())
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*poolwatch: 1 connection leaked in test_app.py::test_permission_denied:",
            "*test_app.py:5 in fetch_status",
            "*dropped unread, its slot never returned to the pool; leased * s ago on thread "
            "MainThread, response 403 text/html, *-byte body",
        ]
    )
