"""The public functions: instrument, inspect, and assert that nothing leaked."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from . import adapters
from ._errors import AdapterNotAvailable, LeakError
from ._models import Lease, PoolSnapshot, Snapshot
from ._report import format_leaks
from ._tracker import Tracker

__all__ = [
    "get_tracker",
    "instrument",
    "instrumented",
    "leases",
    "no_leaks",
    "pools",
    "snapshot",
    "uninstrument",
]

_F = TypeVar("_F", bound=Callable[..., Any])

_tracker = Tracker()
_installed: dict[str, adapters.Adapter] = {}


def get_tracker() -> Tracker:
    """The tracker that ``instrument()`` feeds by default."""
    return _tracker


def instrument(*libraries: str, tracker: Tracker | None = None) -> list[str]:
    """Hook the named client libraries' pools (all installed ones by default).

    A library named explicitly but not installed raises ``AdapterNotAvailable``; with no
    names, absent libraries are skipped quietly. Returns the adapters now installed.
    Calling it again is harmless. ``tracker`` replaces the default tracker (a test seam).
    """
    global _tracker
    if tracker is not None and tracker is not _tracker:
        uninstrument()
        _tracker = tracker
    names = list(libraries) or list(adapters.ADAPTERS)
    for name in names:
        canonical = adapters.ALIASES.get(name, name)
        if canonical not in adapters.ADAPTERS:
            known = ", ".join(sorted({*adapters.ADAPTERS, *adapters.ALIASES}))
            raise AdapterNotAvailable(f"poolwatch has no adapter for {name!r}; known: {known}")
        if canonical in _installed:
            continue
        cls = adapters.load(canonical)
        if not cls.available():
            if libraries:
                raise AdapterNotAvailable(
                    f"cannot instrument {name!r}: the module {cls.module!r} is not installed "
                    f"(pip install 'poolwatch[{canonical}]')"
                )
            continue
        adapter = cls()
        adapter.install(_tracker)
        _installed[canonical] = adapter
    return sorted(_installed)


def uninstrument(*libraries: str) -> None:
    """Remove poolwatch's hooks, restoring each library's attributes exactly."""
    names = [adapters.ALIASES.get(n, n) for n in libraries] or list(_installed)
    for name in names:
        adapter = _installed.pop(name, None)
        if adapter is not None:
            adapter.uninstall()


def instrumented() -> list[str]:
    """The names of the adapters installed now."""
    return sorted(_installed)


def snapshot(*, sockets: bool = False) -> Snapshot:
    """Every pool with counters and live leases, as one consistent copy."""
    return _tracker.snapshot(sockets=sockets)


def pools() -> list[PoolSnapshot]:
    """Every pool poolwatch has seen that is still alive (or still holds leases)."""
    return list(_tracker.snapshot().pools)


def leases(*, sockets: bool = False) -> list[Lease]:
    """Every live lease, oldest first (``sockets=True`` adds each socket's identity)."""
    return list(_tracker.snapshot(sockets=sockets).leases)


class no_leaks:
    """Fail with ``LeakError`` if code inside leaves a connection leased (or lost one).

    Works as ``with no_leaks():``, ``async with no_leaks():`` and as a decorator of plain and
    async functions. Leases that were already out before entering are not counted.
    """

    def __init__(self, *, tracker: Tracker | None = None) -> None:
        self._explicit = tracker
        self._marks: list[int] = []

    @property
    def _tracker(self) -> Tracker:
        return self._explicit or _tracker

    def __enter__(self) -> no_leaks:
        self._marks.append(self._tracker.seq)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        mark = self._marks.pop()
        if exc_type is not None:
            return
        leaks = self._tracker.leaks_since(mark)
        if leaks:
            raise LeakError(format_leaks(leaks, "inside no_leaks()"), leaks)

    async def __aenter__(self) -> no_leaks:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: _F) -> _F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with no_leaks(tracker=self._explicit):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_leaks(tracker=self._explicit):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
