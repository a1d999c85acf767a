"""One benchmark loop in a fresh interpreter, for ``_common.in_processes``.

    python -m bench._child MODULE:FUNCTION [ARG ...]

Calls ``FUNCTION(*ARGS)`` of ``MODULE``, which returns ``Timings``, and prints them as JSON on
the last line of its output.
"""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> None:
    target, *args = argv
    module, _, function = target.partition(":")
    if not function:
        raise SystemExit(f"usage: python -m bench._child MODULE:FUNCTION [ARG ...], not {target!r}")
    result = getattr(importlib.import_module(module), function)(*args)
    print(result.dumps(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
