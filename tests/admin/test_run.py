"""``poolwatch run``: a Flask app started as a subprocess is watched without code changes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import get

pytest.importorskip("flask")

APP = """
import os, subprocess, sys
import urllib3
from flask import Flask
from werkzeug.serving import make_server

pool = urllib3.HTTPConnectionPool("127.0.0.1", int(sys.argv[1]), maxsize=4)
kept = []
app = Flask("leaky")


@app.get("/leak")
def leak():
    kept.append(pool.request("GET", "/403", preload_content=False))
    return "leaked"


@app.get("/child")
def child():
    code = "import os, sys; print(os.environ.get('POOLWATCH_RUN'), 'poolwatch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout


server = make_server("127.0.0.1", 0, app, threaded=True)
print(f"APP {server.server_port}", flush=True)
server.serve_forever()
"""


class Lines:
    """Collects a pipe's lines on a thread so the test can wait for one without blocking."""

    def __init__(self, pipe: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            self.lines.append(line)

    def wait_for(self, pattern: str, seconds: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in {''.join(self.lines)[-3000:]}")

    def close(self, pipe: object) -> None:
        self._thread.join(10)
        pipe.close()  # type: ignore[attr-defined]

    @property
    def text(self) -> str:
        return "".join(self.lines)


def _poolwatch(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "poolwatch", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _app_url(out: Lines) -> str:
    port = out.wait_for(r"APP (\d+)")[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def app_process(
    tmp_path: Path, downstream: str
) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    """`poolwatch run --admin 127.0.0.1:0 --sigquit -- python app.py PORT`, stopped afterwards."""
    (tmp_path / "app.py").write_text(APP)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    port = downstream.rsplit(":", 1)[1]
    proc = _poolwatch(
        "run",
        "--admin",
        "127.0.0.1:0",
        "--sigquit",
        "--",
        sys.executable,
        "app.py",
        port,
        cwd=tmp_path,
        env=env,
    )
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        yield proc, out, err
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        out.close(proc.stdout)
        err.close(proc.stderr)


def test_run_watches_an_unmodified_flask_app(
    app_process: tuple[subprocess.Popen[str], Lines, Lines],
) -> None:
    """The app's leak shows on the admin app that `poolwatch run` started, with its call site."""
    _proc, out, err = app_process
    admin = err.wait_for(r"poolwatch: watching .*urllib3.*; admin at (http://127\.0\.0\.1:\d+/)")[1]
    app = _app_url(out)
    assert get(app + "/leak").text == "leaked"
    leases = get(admin + "leases").json()["leases"]
    assert len(leases) == 1
    line = (
        APP.splitlines().index(
            '    kept.append(pool.request("GET", "/403", preload_content=False))'
        )
        + 1
    )
    assert leases[0]["callsite"] == f"app.py:{line} in leak"
    assert leases[0]["response"]["status"] == 403
    assert get(admin + "healthcheck").json()["sampler"]["healthy"] is True


def test_sigquit_prints_a_thread_dump_and_keeps_running(
    app_process: tuple[subprocess.Popen[str], Lines, Lines],
) -> None:
    """kill -3 prints every thread's stack to stderr; the program carries on serving."""
    proc, out, err = app_process
    err.wait_for(r"admin at")
    app = _app_url(out)
    proc.send_signal(signal.SIGQUIT)
    err.wait_for(r"^Full thread dump CPython")
    err.wait_for(r"in serve_forever")
    assert '"MainThread"' in err.text
    assert proc.poll() is None
    assert get(app + "/leak").text == "leaked"


def test_child_processes_are_not_instrumented(
    app_process: tuple[subprocess.Popen[str], Lines, Lines],
) -> None:
    """Only the first Python process is watched: its children get no POOLWATCH_RUN."""
    _proc, out, err = app_process
    err.wait_for(r"admin at")
    app = _app_url(out)
    assert get(app + "/child").text.strip() == "None False"


def test_run_refuses_a_public_admin_address(tmp_path: Path) -> None:
    """--admin on a non-loopback address stops before running anything, saying why."""
    proc = _poolwatch("run", "--admin", "0.0.0.0:9091", "--", sys.executable, "-V", cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "refusing to serve the poolwatch admin app on '0.0.0.0'" in stderr
    assert "Python" not in stdout


def test_run_reports_a_missing_command(tmp_path: Path) -> None:
    """An unknown command exits 127 with its name, like a shell."""
    proc = _poolwatch("run", "--", "no-such-program-pw", cwd=tmp_path)
    _stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 127
    assert "command not found: no-such-program-pw" in stderr


def test_run_passes_the_exit_code_through(tmp_path: Path) -> None:
    """The program replaces `poolwatch run`: its exit code is the command's."""
    proc = _poolwatch("run", "--", sys.executable, "-c", "raise SystemExit(7)", cwd=tmp_path)
    proc.communicate(timeout=30)
    assert proc.returncode == 7


def test_a_bad_config_never_stops_the_program(tmp_path: Path) -> None:
    """A config poolwatch rejects is reported on stderr; the program runs on, unwatched."""
    config = tmp_path / "poolwatch.toml"
    config.write_text('interval = "soon"\n')
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = _poolwatch(
        "run",
        "--config",
        str(config),
        "--",
        sys.executable,
        "-c",
        "print('ran')",
        cwd=tmp_path,
        env=env,
    )
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert stdout == "ran\n"
    assert "poolwatch: could not start watching (ConfigError:" in stderr
    assert "interval" in stderr
    assert "running unwatched" in stderr
