"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import poolwatch
from poolwatch import Tracker
from poolwatch._models import CallSite

_T = TypeVar("_T")


def pool_of(tracker: Tracker, kind: str | None = None) -> poolwatch.PoolSnapshot:
    """The one pool (of ``kind``, when given) the tracker knows; fails if there are more."""
    (pool,) = [p for p in tracker.snapshot().pools if kind is None or p.kind == kind]
    return pool


def line_after(func: Callable[..., Any], offset: int = 1) -> CallSite:
    """The call site ``offset`` lines below ``func``'s ``def`` (where it takes a connection)."""
    code = func.__code__
    return CallSite(
        code.co_filename, code.co_firstlineno + offset, getattr(code, "co_qualname", code.co_name)
    )


def wait_for_waiter(tracker: Tracker, timeout: float = 5.0) -> poolwatch.PoolSnapshot:
    """Poll the single pool until a caller waits in it (or ``timeout`` passes); its snapshot."""
    deadline = time.monotonic() + timeout
    pool = pool_of(tracker)
    while pool.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
        pool = pool_of(tracker)
    return pool


def in_threads(threads: int, per_thread: int, step: Callable[[int], _T | None]) -> list[_T]:
    """Run ``step(n)`` for every n below ``threads * per_thread``, ``per_thread`` on each thread.

    What a step returns (a connection or response it keeps on purpose) is collected and
    returned; ``None`` means it gave its connection back. A worker's error fails the caller.
    """
    kept: list[_T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            for n in range(index * per_thread, (index + 1) * per_thread):
                held = step(n)
                if held is not None:
                    with lock:
                        kept.append(held)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert errors == []
    return kept
