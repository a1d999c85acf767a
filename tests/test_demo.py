"""`poolwatch demo` as a person runs it: a real process, real servers, exit code 0."""

from __future__ import annotations

import subprocess
import sys


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
    assert "permission_check: 10 of 10 scenarios leak" in out
    assert "permission_check_fixed: 0 of 10 scenarios leak" in out
