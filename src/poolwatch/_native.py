"""The tracker's hot path in C (``_speedups.c``), when this build has it and it is wanted.

``POOLWATCH_PURE_PYTHON=1`` in the environment keeps the pure-Python code, which is the
reference: the test suite runs the core tests both ways. Python 3.10, free-threaded builds,
other interpreters and installs without a compiler use the Python code too.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("POOLWATCH_PURE_PYTHON"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups if _speedups.AVAILABLE else None


#: The C module, or None where the pure-Python hot path runs.
speedups = _load()
