"""Imported by Python at start-up under ``poolwatch run`` (this directory is on PYTHONPATH)."""

from __future__ import annotations

import importlib
import os
import sys


def _run() -> None:
    try:
        from poolwatch.cli._autorun import HERE, boot
    except Exception as exc:  # poolwatch is not importable by this interpreter
        here = os.path.dirname(os.path.abspath(__file__))
        os.environ.pop("POOLWATCH_RUN", None)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p
            for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.abspath(p) != here
        )
        sys.stderr.write(
            f"poolwatch: cannot watch this program: {sys.executable} cannot import poolwatch "
            f"({exc}); running unwatched\n"
        )
        return
    boot()
    # Python imports only the first sitecustomize on the path: run the one we shadowed, if any.
    sys.path[:] = [p for p in sys.path if p != HERE]
    this = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise
        if this is not None:
            sys.modules["sitecustomize"] = this


_run()
