"""`poolwatch demo` as a person runs it: a real process, real servers, exit code 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request


def test_demo_replays_the_incident_and_the_fix() -> None:
    """The demo names the leak, mails the 75% alert, shows the waiter, the fix and the hunt."""
    result = subprocess.run(
        [sys.executable, "-m", "poolwatch", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "[leased 8 | idle 0 | waiting 0 | max 8]" in out
    assert "8 x " in out
    assert "examples/incident.py:" in out
    assert "in check_permission: response 403 text/html" in out
    assert "thread request-handler-9 at" in out
    assert "EmptyPoolError" in out
    assert "is exhausted." in out
    assert "100 checks, 0 connections leaked." in out
    assert "Subject: [poolwatch] FIRING warning: urllib3 http://127.0.0.1:" in out
    assert "6 of 8 connections leased (75%)" in out
    assert "Dashboard (live during the demo): http://127.0.0.1:" in out
    assert "permission_check: 10 of 10 scenarios leak" in out
    assert "permission_check_fixed: 0 of 10 scenarios leak" in out


def test_demo_serve_keeps_the_dashboard_up_until_ctrl_c() -> None:
    """`poolwatch demo --serve` serves the dashboard after the story and exits 0 on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolwatch", "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("Serving the dashboard at "):
                url = line.split(" at ", 1)[1].split(" until")[0]
        assert url is not None, "the demo never said it was serving"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert b"poolwatch" in response.read()
        with urllib.request.urlopen(url.rstrip("/") + "/leases", timeout=10) as response:
            leases = json.load(response)
        assert "check_permission" in json.dumps(leases)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
