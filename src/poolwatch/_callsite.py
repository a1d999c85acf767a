"""Find the first frame of user code below poolwatch, the client libraries and the stdlib.

Like structlog's ``_frames``: walk ``sys._getframe()`` outward, skipping frames whose file lives
in a library we know. Decisions are cached per file name (strings cache their hash) and call
sites are interned per (code object, line), so a hot loop costs a few dict lookups per frame
and thousands of leases from one line share one record. Only file, line and function name are
kept: never a frame, so never a local variable.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Protocol

from ._models import UNKNOWN_CALLSITE, CallSite
from ._native import speedups

__all__ = ["CallSiteFinder", "default_library_modules"]

#: Packages whose frames are never the call site: the pools' own code and what drives tests.
default_library_modules: tuple[str, ...] = (
    "poolwatch",
    "urllib3",
    "requests",
    "botocore",
    "httpx",
    "httpcore",
    "anyio",
    "sniffio",
    "h11",
    "h2",
    "aiohttp",
    "yarl",
    "multidict",
    "sqlalchemy",
    "redis",
    "psycopg",
    "psycopg_pool",
    "_pytest",
    "pytest",
    "pluggy",
    "pytest_asyncio",
    "opentelemetry",
)

_MAX_INTERNED = 100_000
_UNKNOWN: tuple[CallSite, tuple[CallSite, ...]] = (UNKNOWN_CALLSITE, ())
#: A request coroutine driven by its own task (``create_task(session.get(...))``) has no user
#: frame: the walk reaches the event loop. Saying so beats blaming the ``asyncio.run`` line.
TASK_CALLSITE = CallSite("<asyncio task>", 0, "<request run as its own task: no user frame>")
_TASK: tuple[CallSite, tuple[CallSite, ...]] = (TASK_CALLSITE, ())
# Frame kinds cached per file name.
_USER, _LIBRARY, _LOOP = 0, 1, 2
Captured = tuple[CallSite, tuple[CallSite, ...]]


class _Capture(Protocol):
    def __call__(self, depth: int = 0, skip: int = 0, trusted: int = 0) -> Captured: ...


def _module_dirs(names: Iterable[str]) -> list[str]:
    dirs: list[str] = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            dirs.extend(os.path.join(p, "") for p in spec.submodule_search_locations)
        elif spec.origin:
            dirs.append(spec.origin)
    return dirs


def _stdlib_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({os.path.join(paths[k], "") for k in ("stdlib", "platstdlib") if k in paths})


class CallSiteFinder:
    """Captures interned call sites; one per tracker so tests can inject ``_getframe``."""

    def __init__(
        self,
        library_modules: Iterable[str] = default_library_modules,
        *,
        _getframe: Callable[[int], FrameType] = sys._getframe,
    ) -> None:
        self._library_prefixes = tuple(_module_dirs(library_modules))
        # poolwatch.examples is user code by design: the demo's call sites must point there.
        self._user_prefixes = (os.path.join(os.path.dirname(__file__), "examples", ""),)
        self._stdlib_prefixes = tuple(_stdlib_dirs())
        self._getframe = _getframe
        self._skip: dict[str, int] = {}
        #: Goes up with every add_library_modules: a cache of is_library answers kept
        #: elsewhere (SQLAlchemy's greenlet walk) starts again when it changes.
        self.generation = 0
        # Found without importing asyncio (start-up cost): its directory from the import system.
        self._loop_files = tuple(d + "events.py" for d in _module_dirs(["asyncio"]))
        self._interned: dict[
            tuple[int, int], tuple[tuple[CallSite, tuple[CallSite, ...]], CodeType]
        ] = {}
        self._sites: dict[CallSite, CallSite] = {}
        self._lock = threading.Lock()
        # The C twin of _capture where this build has it; a test's own frame source keeps
        # the Python one (the C code walks the interpreter's frames itself).
        #: Whether ``capture`` is the C one (the tracker's C checkout then calls it directly).
        self.native = False
        self.capture: _Capture = self._capture
        if speedups is not None and _getframe is sys._getframe:
            self.native = True
            self.capture = functools.partial(speedups.capture, self)

    def add_library_modules(self, names: Iterable[str]) -> None:
        """Treat these modules' frames as library frames too (a company's HTTP wrapper)."""
        self._library_prefixes += tuple(_module_dirs(names))
        # A new dict, not the old one cleared: a capture running meanwhile on another thread
        # stores the kind it worked out with the old prefixes into the old dict, unread now.
        self._skip = {}
        self.generation += 1
        if speedups is not None:
            speedups.forget()  # its caches mirror the kinds just dropped

    def _kind(self, filename: str) -> int:
        if filename in self._loop_files:
            return _LOOP
        return _LIBRARY if self.is_library(filename) else _USER

    def is_library(self, filename: str) -> bool:
        """True for files of known libraries, the stdlib and frozen/built-in code."""
        if filename.startswith("<frozen") or filename.startswith("<built-in"):
            return True
        if filename.startswith(self._user_prefixes):
            return False
        if filename.startswith(self._library_prefixes):
            return True
        if filename.startswith(self._stdlib_prefixes):
            # site-packages may live under the stdlib directory; those files are not stdlib.
            return "site-packages" not in filename and "dist-packages" not in filename
        return False

    def _capture(self, depth: int = 0, skip: int = 0, trusted: int = 0) -> Captured:
        """``capture``: the call site, and up to ``depth`` further user frames outward.

        ``skip`` frames above the caller (poolwatch's own) and then ``trusted`` more (frames an
        adapter expects to be the library's, like urllib3's ``urlopen`` above ``_get_conn``)
        are jumped over unexamined: ``sys._getframe(n)`` builds only the frame object it
        returns, where walking builds one per frame (~0.2 us each on 3.11). If the first frame
        past them is user code, the trusted ones are walked after all: code calling a private
        hook point directly must still get its own line. Returns one interned ``(site, stack)``
        pair per call point: the hot path allocates nothing once a line has been seen.
        """
        try:
            frame: FrameType | None = self._getframe(1 + skip + trusted)
        except ValueError:  # the stack is shallower than the caller said
            frame, trusted = self._getframe(1 + skip), 0
        kinds = self._skip
        first = True
        while frame is not None:
            filename = frame.f_code.co_filename
            kind = kinds.get(filename)
            if kind is None:
                kind = kinds[filename] = self._kind(filename)
            if kind == _USER:
                if first and trusted:
                    # +1: this call's own frame now stands between the caller and the stack.
                    return self._capture(depth, skip + 1)
                break
            if kind == _LOOP:
                return _TASK
            first = False
            frame = frame.f_back
        if frame is None:
            return _UNKNOWN
        if depth:
            return self._with_stack(frame, depth)
        # f_lasti is O(1) where f_lineno walks the line table: key on the instruction and
        # compute the line once per call point. The code object is pinned in the value so its
        # id cannot be reused while the entry exists.
        hit = self._interned.get((id(frame.f_code), frame.f_lasti))
        if hit is not None:
            return hit[0]
        return self._intern(frame)

    def _intern(self, frame: FrameType) -> tuple[CallSite, tuple[CallSite, ...]]:
        code = frame.f_code
        pair: tuple[CallSite, tuple[CallSite, ...]] = (self._site(frame), ())
        if len(self._interned) < _MAX_INTERNED:
            with self._lock:
                pair = self._interned.setdefault((id(code), frame.f_lasti), (pair, code))[0]
        return pair

    def _site(self, frame: FrameType) -> CallSite:
        code = frame.f_code
        site = CallSite(
            code.co_filename, frame.f_lineno or 0, getattr(code, "co_qualname", code.co_name)
        )
        # One CallSite object per line, so Counters keyed by call site merge equal lines.
        return self._sites.setdefault(site, site) if len(self._sites) < _MAX_INTERNED else site

    def _with_stack(self, frame: FrameType, depth: int) -> tuple[CallSite, tuple[CallSite, ...]]:
        skip = self._skip
        stack: list[CallSite] = []
        outer = frame.f_back
        while outer is not None and len(stack) < depth:
            filename = outer.f_code.co_filename
            kind = skip.get(filename)
            if kind is None:
                kind = skip[filename] = self._kind(filename)
            if kind == _LOOP:
                break
            if kind == _USER:
                stack.append(self._site(outer))
            outer = outer.f_back
        return self._site(frame), tuple(stack)
