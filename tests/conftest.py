"""Fixtures shared by the test suite: a real HTTP/1.1 server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import poolwatch
from poolwatch import Tracker

from ._httpserver import HTML_403

__all__ = ["HTML_403"]


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """Base URL of a real keep-alive HTTP/1.1 server in its own process on 127.0.0.1.

    Paths: /403 (HTML error page), /empty (403, no body), /hangup (closes without answering),
    anything else 200 JSON.
    """
    script = Path(__file__).with_name("_httpserver.py")
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}"
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()


@pytest.fixture
def tracker() -> Iterator[Tracker]:
    """A fresh tracker fed by every installed adapter; the default one is put back afterwards."""
    previous = poolwatch.get_tracker()
    fresh = Tracker()
    poolwatch.instrument(tracker=fresh)
    yield fresh
    poolwatch.instrument(tracker=previous)


@pytest.fixture
def faulty_tracker() -> Iterator[Tracker]:
    """A tracker whose clock raises on every lease, fed by every adapter (a fault-injection seam).

    Requests through an instrumented library must still succeed; the faults land in
    ``faulty_tracker.internal_errors``.
    """
    calls = {"n": 0}

    def broken_clock() -> float:
        calls["n"] += 1
        if calls["n"] > 1:  # the first call sets up the wall-clock offset
            raise RuntimeError("injected fault")
        return 0.0

    previous = poolwatch.get_tracker()
    faulty = Tracker(clock=broken_clock)
    poolwatch.instrument(tracker=faulty)
    yield faulty
    poolwatch.instrument(tracker=previous)
