"""Thread dumps: every thread's stack and the asyncio tasks of running loops, never locals.

The text reads like a JVM thread dump (``kill -3``): innermost frame first, one ``at`` line per
frame. Frames show file, line and function only: no local variables and no source text, since
either can hold a secret (a URL with a password, a token in a literal).
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import IO, Any

from .._models import CallSite

__all__ = ["dump_threads", "format_threads", "install_sigquit_handler"]

_MAX_FRAMES = 200


def _frames(frame: FrameType | None) -> list[dict[str, Any]]:
    """Innermost first: ``{"file", "line", "function"}`` per frame (not the dumper's own)."""
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    out: list[dict[str, Any]] = []
    while frame is not None and len(out) < _MAX_FRAMES:
        code = frame.f_code
        out.append({"file": code.co_filename, "line": frame.f_lineno, "function": code.co_name})
        frame = frame.f_back
    return out


def _is_run_forever(frame: FrameType) -> bool:
    code = frame.f_code
    return code.co_name == "run_forever" and code.co_filename.endswith(
        os.path.join("asyncio", "base_events.py")
    )


def _running_loops(frames: dict[int, FrameType]) -> list[tuple[int, Any]]:
    """(thread ident, loop) of each thread inside ``BaseEventLoop.run_forever``."""
    loops = []
    for ident, frame in frames.items():
        walk: FrameType | None = frame
        while walk is not None:
            if _is_run_forever(walk):
                # The loop object itself, read to list its tasks; never shown.
                loop = walk.f_locals.get("self")
                if loop is not None:
                    loops.append((ident, loop))
                break
            walk = walk.f_back
    return loops


def _coroutine_stack(task: Any) -> list[dict[str, Any]]:
    """The await chain of a task, innermost first (``Task.get_stack`` gives only the outer)."""
    chain: list[dict[str, Any]] = []
    coro = task.get_coro()
    while coro is not None and len(chain) < _MAX_FRAMES:
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is None:
            break
        code = frame.f_code
        chain.append({"file": code.co_filename, "line": frame.f_lineno, "function": code.co_name})
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    chain.reverse()
    return chain


def _task_info(task: Any) -> dict[str, Any]:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or type(coro).__name__
    state = ("cancelled" if task.cancelled() else "done") if task.done() else "pending"
    return {
        "name": task.get_name(),
        "state": state,
        "coroutine": f"{name}()",
        "stack": _coroutine_stack(task),
    }


def dump_threads() -> dict[str, Any]:
    """Every thread (name, ids, daemon, stack) and every running loop's tasks, as JSON values."""
    frames = sys._current_frames()
    by_ident = {t.ident: t for t in threading.enumerate()}
    threads = []
    for ident, frame in frames.items():
        thread = by_ident.get(ident)
        threads.append(
            {
                "name": thread.name if thread is not None else f"<unnamed {ident}>",
                "ident": ident,
                "native_id": getattr(thread, "native_id", None),
                "daemon": thread.daemon if thread is not None else None,
                "current": ident == threading.get_ident(),
                "stack": _frames(frame),
            }
        )
    threads.sort(key=lambda t: (t["name"] != "MainThread", t["name"]))
    loops = []
    for ident, loop in _running_loops(frames):
        import asyncio

        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:  # the set changed under us; one retry is enough for a dump
            tasks = list(asyncio.all_tasks(loop))
        thread = by_ident.get(ident)
        loops.append(
            {
                "thread": thread.name if thread is not None else str(ident),
                "ident": ident,
                "tasks": sorted((_task_info(t) for t in tasks), key=lambda t: t["name"]),
            }
        )
    del frames
    return {
        "taken_at": time.time(),
        "pid": os.getpid(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "threads": threads,
        "loops": loops,
    }


def _at(frame: dict[str, Any]) -> str:
    return f"\tat {CallSite(frame['file'], frame['line'], frame['function'])}"


def format_threads(dump: dict[str, Any] | None = None) -> str:
    """A thread dump as text, like a JVM's: threads, then each running loop's tasks."""
    dump = dump if dump is not None else dump_threads()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(dump["taken_at"]))
    lines = [
        when,
        f"Full thread dump {dump['python']} (pid {dump['pid']}, "
        f"{len(dump['threads'])} threads, {len(dump['loops'])} running event loops):",
        "",
    ]
    for thread in dump["threads"]:
        flags = " daemon" if thread["daemon"] else ""
        here = " (this dump)" if thread["current"] else ""
        lines.append(
            f'"{thread["name"]}" ident={thread["ident"]} native_id={thread["native_id"]}'
            f"{flags}{here}"
        )
        lines.extend(_at(frame) for frame in thread["stack"])
        lines.append("")
    for loop in dump["loops"]:
        lines.append(
            f'asyncio tasks of the event loop running on "{loop["thread"]}" '
            f"({len(loop['tasks'])} tasks):"
        )
        lines.append("")
        for task in loop["tasks"]:
            lines.append(f'"{task["name"]}" {task["state"]} {task["coroutine"]}')
            lines.extend(_at(frame) for frame in task["stack"])
            lines.append("")
    return "\n".join(lines)


def install_sigquit_handler(file: IO[str] | None = None) -> Callable[[], None]:
    """Print a thread dump to ``file`` (stderr) on SIGQUIT (``kill -3``) instead of dying.

    Call it from the main thread (Python's rule for signal handlers). Returns a function that
    puts back the previous handler. Raises ``RuntimeError`` on platforms without SIGQUIT.
    """
    sigquit = getattr(signal, "SIGQUIT", None)
    if sigquit is None:
        raise RuntimeError("this platform has no SIGQUIT; use the admin app's /threads")

    def handler(_signum: int, _frame: FrameType | None) -> None:
        out = file if file is not None else sys.stderr
        try:
            out.write(format_threads() + "\n")
            out.flush()
        except Exception:  # a dump must never take the process down
            pass

    previous = signal.signal(sigquit, handler)

    def restore() -> None:
        signal.signal(sigquit, previous)

    return restore
