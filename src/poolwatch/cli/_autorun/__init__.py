"""Start-up of a program run under ``poolwatch run``: the code its ``sitecustomize`` calls.

``poolwatch run`` puts this directory first on ``PYTHONPATH`` and its options in
``POOLWATCH_RUN``; Python imports ``sitecustomize`` from here at start-up (the way
``opentelemetry-instrument`` and ``ddtrace-run`` work), which calls ``boot()``. Only the first
Python process claims the options: they and the path entry are removed from the environment so
that processes it starts (a reloader's child, a subprocess) run unwatched and do not fight over
the admin port.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

__all__ = ["ENV", "HERE", "boot", "strip_path"]

#: The environment variable carrying ``poolwatch run``'s options as JSON.
ENV = "POOLWATCH_RUN"
#: This directory: what ``poolwatch run`` prepends to PYTHONPATH.
HERE = os.path.dirname(os.path.abspath(__file__))


def strip_path(value: str, entry: str = HERE) -> str:
    """``value`` (a PYTHONPATH) without ``entry``."""
    parts = [p for p in value.split(os.pathsep) if p and os.path.abspath(p) != entry]
    return os.pathsep.join(parts)


def _say(text: str) -> None:
    sys.stderr.write(f"poolwatch: {text}\n")
    sys.stderr.flush()


def _start(options: dict[str, Any]) -> Any:
    """``poolwatch.start()`` when this build has it; else instrument and serve by hand."""
    import poolwatch

    libraries = list(options.get("libraries") or [])
    admin = options.get("admin")
    start = getattr(poolwatch, "start", None)
    if start is None:
        try:
            from poolwatch._runtime import start
        except ImportError:
            start = None
    if start is not None:
        return start(options.get("config"), admin=admin, instrument=libraries or True)
    poolwatch.instrument(*libraries)
    if admin:
        from poolwatch.admin import parse_address, serve

        host, port = parse_address(admin)
        return serve(host=host, port=port, token=os.environ.get("POOLWATCH_ADMIN_TOKEN") or None)
    return None


def boot() -> None:
    """Claim ``POOLWATCH_RUN``, start watching, announce the admin URL; never raise."""
    raw = os.environ.pop(ENV, None)
    pythonpath = strip_path(os.environ.get("PYTHONPATH", ""))
    if pythonpath:
        os.environ["PYTHONPATH"] = pythonpath
    else:
        os.environ.pop("PYTHONPATH", None)
    if raw is None:
        return
    try:
        options = json.loads(raw)
        if options.get("sigquit"):
            from poolwatch.admin import install_sigquit_handler

            install_sigquit_handler()
        started = _start(options)
        import poolwatch

        watching = ", ".join(poolwatch.instrumented()) or "no installed client library"
        admin = getattr(started, "admin", started)
        url = getattr(admin, "url", None)
        _say(f"watching {watching}" + (f"; admin at {url}" if url else ""))
        stop = getattr(started, "stop", None)
        if callable(stop):
            atexit.register(stop)
    except Exception as exc:
        # The program runs whatever happens to poolwatch: never hurt the host.
        _say(f"could not start watching ({type(exc).__name__}: {exc}); running unwatched")
