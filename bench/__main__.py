"""`make bench`: run every benchmark module's ``main()`` in turn."""

from __future__ import annotations

import importlib
import sys

#: Modules under bench/ with a ``main()`` that prints its tables. Add yours here.
BENCHES: list[str] = [
    "bench.admin",
    "bench.tracker",
    "bench.alerts",
    "bench.census",
    "bench.hunt",
    "bench.sqlalchemy_loop",
    "bench.redis_loop",
    "bench.aiohttp_loop",
    "bench.httpx_loop",
]


def run(names: list[str]) -> None:
    for name in names or BENCHES:
        module = importlib.import_module(name if name.startswith("bench.") else f"bench.{name}")
        module.main()


if __name__ == "__main__":
    run(sys.argv[1:])
