"""A company-style HTTP helper: call sites should point past it once it is declared a library."""

from __future__ import annotations

from typing import Any

import requests


def get_streamed(session: requests.Session, url: str) -> requests.Response:
    return session.get(url, stream=True)


def check_out(tracker: Any, record: Any, key: int, conn: Any) -> Any:
    """A helper that leases on its caller's behalf (a library's frame, once declared one)."""
    return tracker.checkout(record, key, conn)


async def connect_async(engine: Any) -> Any:
    """A helper that takes an asyncio engine's connection on its caller's behalf."""
    return await engine.connect()
