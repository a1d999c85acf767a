"""`poolwatch sockets`: output, thresholds and exit codes, the click-free fast path, --watch,
and the exit code 3 of a census of another user's process."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwatch.cli._sockets import (  # type: ignore[attr-defined]
    Options,
    _watch,
    dumps,
    fast_main,
    sockets,
)

from .conftest import Farm, ss_count

BIN = Path(sys.executable).parent
POOLWATCH = str(BIN / "poolwatch")


def click_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(sockets, [str(a) for a in args])
    return result.exit_code, result.output


def fast_run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int | None, str]:
    capsys.readouterr()
    code = fast_main([str(a) for a in args])
    return code, capsys.readouterr().out


@pytest.fixture
def three(farm4: Farm) -> Farm:
    """A farm with 3 CLOSE_WAIT sockets and 2 ESTABLISHED pairs."""
    farm4.close_wait(3)
    farm4.established(2)
    return farm4


def test_counts_by_state_match_ss(three: Farm) -> None:
    """The state table shows the farm's counts, equal to ss's, and a total."""
    code, out = click_run("--port", three.port, "--state", "close-wait,estab")
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["STATE", "COUNT"]
    assert ["CLOSE_WAIT", str(ss_count("close-wait", three.port))] in lines
    assert ["CLOSE_WAIT", "3"] in lines
    assert ["ESTABLISHED", "4"] in lines
    assert lines[-1] == ["total", "7"]


@pytest.mark.parametrize(
    "args",
    [
        ["--state", "close-wait"],
        ["--json"],
        ["--state", "CLOSE_WAIT", "--state", "established", "--json"],
        ["--by", "peer"],
        ["--by", "socket", "--state", "close-wait"],
        ["--state", "close-wait", "--warn", "2", "--crit", "5"],
        ["--state=close-wait", "--warn=9", "--json"],
    ],
)
def test_fast_path_prints_what_click_prints(
    three: Farm, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """The hand-parsed fast path and the click command give the same output and exit code."""
    full = ["--pid", str(os.getpid()), "--port", str(three.port), *args]
    fast_code, fast_out = fast_run(capsys, *full)
    click_code, click_out = click_run(*full)
    assert fast_code is not None, "these options must not need click"
    assert (fast_code, fast_out) == (click_code, click_out)
    assert fast_out.strip()


def test_fast_path_defers_to_click_for_help_and_watch(capsys: pytest.CaptureFixture[str]) -> None:
    """--help, --watch and unknown options return None so click handles them."""
    assert fast_main(["--help"]) is None
    assert fast_main(["--watch", "1"]) is None
    assert fast_main(["--bogus"]) is None
    assert fast_main(["--port", "notanumber"]) is None


def test_fast_path_imports_neither_click_nor_rich(three: Farm) -> None:
    """`poolwatch sockets --state close-wait` runs without importing click, rich, typing or
    dataclasses (start-up is what cron pays)."""
    script = textwrap.dedent(
        f"""
        import sys
        from poolwatch.cli import main
        try:
            main(["sockets", "--state", "close-wait", "--port", "{three.port}", "--json"])
        except SystemExit as exc:
            names = ("click", "rich", "typing", "dataclasses", "json")
            heavy = sorted(m for m in names if m in sys.modules)
            print("HEAVY", heavy, "EXIT", exc.code)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    first, last = out.stdout.strip().splitlines()
    assert json.loads(first)["counts"] == {"CLOSE_WAIT": 3}
    assert last == "HEAVY [] EXIT 0"


@pytest.mark.parametrize(
    ("warn", "crit", "code", "word"),
    [(4, 5, 0, "OK"), (3, 5, 1, "WARNING"), (1, 3, 2, "CRITICAL")],
)
def test_thresholds_give_monitoring_exit_codes(
    three: Farm, warn: int, crit: int, code: int, word: str
) -> None:
    """--warn/--crit exit 0/1/2 with a plugin status line and perfdata, as a whole process."""
    out = subprocess.run(
        [
            POOLWATCH,
            "sockets",
            "--state",
            "close-wait",
            "--port",
            str(three.port),
            "--warn",
            str(warn),
            "--crit",
            str(crit),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == code, out.stderr
    assert out.stdout.startswith(f"SOCKETS {word} - 3 CLOSE_WAIT sockets (host; ")
    assert out.stdout.rstrip().endswith(f"| close_wait=3;{warn};{crit};0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "bogus"], "unknown TCP state 'bogus'"),
        (["--by", "nope"], "Invalid value for '--by'"),
        (["--bogus"], "No such option"),
        (["--warn", "5", "--crit", "2"], "--warn 5 is above --crit 2"),
        (["--peer", "example.org"], "give an IP literal"),
        (["--pid", "4194303"], "no process 4194303"),
    ],
)
def test_bad_usage_and_errors_exit_3(args: list[str], message: str) -> None:
    """Bad options and failed censuses exit 3 (UNKNOWN), never click's 2 (= CRITICAL)."""
    result = CliRunner().invoke(sockets, args)
    assert result.exit_code == 3
    assert message in result.output


def test_error_with_thresholds_prints_unknown_status_line() -> None:
    """With --warn/--crit an error still prints a plugin status line: SOCKETS UNKNOWN."""
    out = subprocess.run(
        [POOLWATCH, "sockets", "--pid", "4194303", "--warn", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 3
    assert out.stdout.startswith("SOCKETS UNKNOWN - no process 4194303")


def _setpriv() -> str:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to test another user's process")
    return setpriv


NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]


def _as(user: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv as ``user`` (setpriv options) with no capabilities at all."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [_setpriv(), *user, "--inh-caps=-all", "--bounding-set=-all", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def nobodys_process() -> Iterator[int]:
    """The pid of a process running as nobody (a sleep, killed afterwards)."""
    proc = subprocess.Popen([_setpriv(), *NOBODY, "sleep", "120"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _assert_denied(out: subprocess.CompletedProcess[str], pid: int) -> None:
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert f"cannot read /proc/{pid}/fd: permission denied" in out.stderr
    assert "ptrace read access" in out.stderr
    assert "same user as the process" in out.stderr
    assert "root" in out.stderr


def test_another_users_process_without_permission_exits_3(nobodys_process: int) -> None:
    """A census of nobody's process by a process that is neither nobody nor privileged (root
    stripped of every capability) exits 3 naming the access needed, fast path and click."""
    pid = nobodys_process
    for extra in ([], ["--watch", "0.01", "--count", "1"]):
        out = _as([], POOLWATCH, "sockets", "--pid", str(pid), "--state", "close-wait", *extra)
        _assert_denied(out, pid)
    # With its capabilities, root may: the failure above is about permission, nothing else.
    allowed = subprocess.run(
        [POOLWATCH, "sockets", "--pid", str(pid)], capture_output=True, text=True, check=False
    )
    assert allowed.returncode == 0, allowed.stderr


def test_unprivileged_user_cannot_census_roots_process() -> None:
    """Run as nobody against this (root) process: exit 3 with the same message."""
    check = _as(NOBODY, sys.executable, "-c", "import poolwatch.census")
    if check.returncode != 0:
        pytest.skip(f"nobody cannot run this checkout's Python here: {check.stderr[-200:]}")
    pid = os.getpid()
    _assert_denied(_as(NOBODY, POOLWATCH, "sockets", "--pid", str(pid)), pid)


def test_library_raises_permission_error_for_another_user(nobodys_process: int) -> None:
    """process_sockets() of another user's process, without privilege, raises
    CensusPermissionError."""
    script = textwrap.dedent(
        f"""
        from poolwatch.census import CensusPermissionError, process_sockets
        try:
            process_sockets({nobodys_process})
        except CensusPermissionError as exc:
            print("DENIED", exc)
        """
    )
    out = _as([], sys.executable, "-c", script)
    assert out.stdout.startswith(f"DENIED cannot read /proc/{nobodys_process}/fd"), out.stderr


def test_by_pid_names_the_owning_process(three: Farm) -> None:
    """--by pid puts this process's CLOSE_WAIT sockets under its pid and command name."""
    code, out = click_run("--by", "pid", "--state", "close-wait", "--port", three.port, "--json")
    assert code == 0
    groups = json.loads(out)["groups"]
    mine = [g for g in groups if g["pid"] == os.getpid()]
    assert mine
    assert mine[0]["counts"] == {"CLOSE_WAIT": 3}
    assert mine[0]["command"]


@pytest.fixture
def holder() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A separate process holding 4 CLOSE_WAIT sockets, with a unique word in its command line."""
    marker = f"census-holder-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(
        """
        import socket, sys
        listener = socket.create_server(("127.0.0.1", 0))
        held = []
        for _ in range(4):
            client = socket.create_connection(listener.getsockname())
            listener.accept()[0].close()
            held.append(client)
        print(listener.getsockname()[1], flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        yield marker, proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    assert port


def test_name_targets_processes_by_command_line(holder: tuple[str, subprocess.Popen[str]]) -> None:
    """--name finds the holder by a word of its command line and counts its sockets."""
    marker, proc = holder
    code, out = click_run("--name", marker, "--state", "close-wait", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["pids"] == [proc.pid]
    assert doc["counts"] == {"CLOSE_WAIT": 4}
    code, out = click_run("--name", "no-such-process-" + marker)
    assert code == 3
    assert "no process has" in out


def test_watch_reports_growth_per_minute(farm4: Farm) -> None:
    """--watch samples --count times; growing CLOSE_WAIT shows a positive rate per minute."""
    farm4.close_wait(2)
    opts = Options()
    opts.states = ["CLOSE_WAIT"]
    opts.port = farm4.port
    opts.watch = 0.05
    opts.count = 3
    opts.json = True
    out = io.StringIO()

    def grow(_seconds: float) -> None:  # the seam for time.sleep: sockets leak meanwhile
        farm4.close_wait(3)

    assert _watch(opts, out, sleep=grow) == 0
    samples = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [s["total"] for s in samples] == [2, 5, 8]
    assert samples[0]["rate_per_minute"] is None
    assert all(s["rate_per_minute"] > 0 for s in samples[1:])


def test_watch_plain_lines_with_thresholds(three: Farm) -> None:
    """Without a terminal, --watch prints one line per sample, with the status, and exits
    with the last sample's code."""
    code, out = click_run(
        "--state",
        "close-wait",
        "--port",
        three.port,
        "--watch",
        "0.01",
        "--count",
        "2",
        "--warn",
        "2",
    )
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 2
    assert all("total 3  CLOSE_WAIT 3" in line and line.endswith("WARNING") for line in lines)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_dumps_writes_what_json_dumps_writes(value: object) -> None:
    """The json-free encoder of the fast path writes exactly what json.dumps writes."""
    assert dumps(value) == json.dumps(value)
