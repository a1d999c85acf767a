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
