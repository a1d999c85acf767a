"""What every adapter shares: exact patch/restore, availability and version checks."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import PoolwatchWarning
from .._native import speedups

if TYPE_CHECKING:
    from .._tracker import Tracker

__all__ = ["Adapter", "Patcher", "hook", "parse_version", "wraps"]

_MISSING = object()


def parse_version(text: str) -> tuple[int, ...]:
    """`2.8.0` -> (2, 8, 0); `1.0.0rc1` -> (1, 0, 0); enough to compare release numbers."""
    parts = []
    for piece in text.split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


class Patcher:
    """Replaces class attributes and puts back exactly what was there (or nothing)."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def patch(self, owner: Any, name: str, new: Any) -> Any:
        """Set ``owner.name = new``; returns the attribute as it resolved before."""
        own = vars(owner).get(name, _MISSING)
        self._saved.append((owner, name, own))
        before = getattr(owner, name)
        setattr(owner, name, new)
        return before

    def restore(self) -> None:
        while self._saved:
            owner, name, own = self._saved.pop()
            if own is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


class Adapter:
    """One client library. Subclasses hook its checkout/checkin points in ``_install``."""

    #: The name users pass to ``instrument()``.
    name: ClassVar[str]
    #: The import name whose presence means the library is installed.
    module: ClassVar[str]
    #: The distribution whose version is checked, and the tested range [low, high).
    distribution: ClassVar[str]
    tested: ClassVar[tuple[tuple[int, ...], tuple[int, ...]]]

    def __init__(self) -> None:
        self.patcher = Patcher()
        self.installed = False

    @classmethod
    def available(cls) -> bool:
        try:
            return importlib.util.find_spec(cls.module) is not None
        except (ImportError, ValueError):
            return False

    @classmethod
    def check_version(cls) -> str | None:
        """Warn (never fail) when the installed version is outside the tested range."""
        try:
            version = importlib.metadata.version(cls.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None
        low, high = cls.tested
        if not low <= parse_version(version) < high:
            warnings.warn(
                f"poolwatch was tested with {cls.distribution} "
                f"{'.'.join(map(str, low))} to before {'.'.join(map(str, high))}; "
                f"{version} is installed. Leases may be missed; please report what you see.",
                PoolwatchWarning,
                stacklevel=4,
            )
        return version

    def install(self, tracker: Tracker) -> None:
        if self.installed:
            return
        self.check_version()
        try:
            self._install(tracker)
        except BaseException:
            self.patcher.restore()
            raise
        self.installed = True

    def uninstall(self) -> None:
        self.patcher.restore()
        self.installed = False

    def _install(self, tracker: Tracker) -> None:
        raise NotImplementedError


def wraps(wrapper: Any, wrapped: Any) -> Any:
    """Give ``wrapper`` the name and doc of ``wrapped`` and mark it as poolwatch's."""
    wrapper.__name__ = wrapped.__name__
    wrapper.__qualname__ = wrapped.__qualname__
    wrapper.__doc__ = wrapped.__doc__
    wrapper.__wrapped__ = wrapped
    wrapper.__poolwatch__ = True
    return wrapper


def _kind(mode: str, modes: tuple[str, ...]) -> int:
    """The C ``Hook`` mode constant named ``mode`` (its upper case), one of ``modes``."""
    if mode not in modes or speedups is None:
        raise ValueError(f"poolwatch: no C hook mode {mode!r} here; one of {modes}")
    kind: int = getattr(speedups, mode.upper())
    return kind


def hook(original: Any, slow: Any, tracker: Tracker, where: str, mode: str, **spec: Any) -> Any:
    """What to patch in for ``original``: the Python hook ``slow``, or, where this build has the
    C hot path, a C ``Hook`` that does the common case itself and calls ``slow`` for the rest.

    ``mode`` "after" / "before": ``spec["call"](args[first], args[second])`` after / before the
    original (``miss`` the same way when it returns None; ``first`` / ``second`` may name
    attributes of ``args[0]`` instead; with ``attr``, only while ``args[0].<attr> is <value>``);
    "guard": the original alone while ``args[0].<attr> is <value>``; "result": the original,
    then ``spec["call"](args[0], result)`` when ``result.<attr> is <value>``;
    "httpcore_handle" / "httpcore_wait": httpcore's sync pool, "urllib3_checkout": urllib3's
    ``_get_conn``, each with ``spec["state"]`` (see ``_speedups.c``); "sqlalchemy_get":
    SQLAlchemy's ``QueuePool._do_get``, the original alone while the pool cannot block. Errors
    in ``call``/``miss`` go to ``tracker.internal_error`` under ``where``. ``slow`` must do the
    same as the C hook, and does, on the Python path.
    """
    slow = wraps(slow, original)
    if speedups is None:
        return slow
    kind = _kind(
        mode,
        (
            "after",
            "before",
            "guard",
            "result",
            "httpcore_handle",
            "httpcore_wait",
            "urllib3_checkout",
            "sqlalchemy_get",
        ),
    )
    call = spec.get("call")
    if isinstance(call, functools.partial) and not call.keywords:
        # The hook lays the bound arguments out itself: a partial of 7 would allocate per call.
        spec.update(call=call.func, bound=call.args)
    fast = speedups.Hook(kind, original, slow, tracker.internal_error, where, **spec)
    return wraps(fast, original)


def listener(slow: Any, tracker: Tracker, where: str, mode: str, state: tuple[Any, ...]) -> Any:
    """What to register as a library's event listener: the Python listener ``slow``, or, where
    this build has the C hot path, a C ``Hook`` that does the common case itself and calls
    ``slow`` for the rest. ``mode``: "sqlalchemy_checkout" / "sqlalchemy_checkin", with the
    ``state`` tuple ``_speedups.c`` describes. Errors go to ``tracker.internal_error`` under
    ``where``, as ``slow``'s own do.
    """
    if speedups is None:
        return slow
    kind = _kind(mode, ("sqlalchemy_checkout", "sqlalchemy_checkin"))
    # No library method is wrapped: the listener stands in for `original`, never called. The
    # hook takes its name, so it reads as the listener it stands for.
    fast = speedups.Hook(kind, slow, slow, tracker.internal_error, where, state=state)
    return wraps(fast, slow)
