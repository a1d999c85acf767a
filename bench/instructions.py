"""Instructions per request, plain vs poolwatch, counted by valgrind's callgrind.

The HTTP clients' keep-alive GET loops, and SQLAlchemy's `select 1` loops (sync and asyncio
engines) on a local PostgreSQL, where a third variant, no-op pool listeners, counts the floor
that listening to pool events at all costs (bench/sqlalchemy_loop.py).

The time-based loops (bench.tracker, bench.httpx_loop, bench.aiohttp_loop) are what the
targets are read from, but on a shared 2-core machine an A/A run of the same loop already
differs by up to 3%, the size of the target itself. Callgrind counts instructions, which do
not depend on what else the machine is doing: the same binary and input give the same count.
Each loop runs in a child process under callgrind twice, with 0 and with REQUESTS requests
after the same warm-up; the difference over REQUESTS is the per-request count, start-up and
warm-up cancelled out. Our hooks run colder than the library's own code (they touch data the
library does not), so a time ratio comes out somewhat above the instruction ratio.

Run it with `python -m bench instructions` (about 8 minutes; needs valgrind; the SQLAlchemy
loops also PostgreSQL, and are skipped without it). It is not part of plain `make bench`.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack

from ._common import print_table

REQUESTS = 1000
WARM_UP = 300
LOOPS = ("urllib3", "requests", "httpx sync", "httpx async", "aiohttp")
SQLALCHEMY_LOOPS = ("sqlalchemy sync", "sqlalchemy async")
_ADAPTER = {
    "requests": "urllib3",
    "httpx sync": "httpx",
    "httpx async": "httpx",
    "sqlalchemy sync": "sqlalchemy",
    "sqlalchemy async": "sqlalchemy",
}


def _loop(name: str, url: str) -> Callable[[int], None]:
    """A function running ``n`` keep-alive GETs with the named client."""
    if name in ("urllib3", "requests", "httpx sync"):
        import httpx
        import requests
        import urllib3

        http = urllib3.PoolManager(maxsize=1)
        session = requests.Session()
        client = httpx.Client()
        get: Callable[[], object] = {
            "urllib3": lambda: http.request("GET", url).data,
            "requests": lambda: session.get(url).content,
            "httpx sync": lambda: client.get(url).read(),
        }[name]

        def run(n: int) -> None:
            for _ in range(n):
                get()

        return run

    async def batch(n: int) -> None:
        if name == "httpx async":
            import httpx

            async with httpx.AsyncClient() as client:
                for _ in range(n):
                    (await client.get(url)).read()
        else:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                for _ in range(n):
                    async with session.get(url) as response:
                        await response.read()

    return lambda n: asyncio.run(batch(n))


def _sqlalchemy_loop(name: str, url: str) -> Callable[[int], None]:
    """A function running ``n`` times ``with engine.connect(): select 1``, sync or asyncio."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import create_async_engine

    if name == "sqlalchemy sync":
        engine = create_engine(url, pool_size=5, max_overflow=0)

        def run(n: int) -> None:
            for _ in range(n):
                with engine.connect() as conn:
                    conn.execute(text("select 1")).scalar()

        return run
    async_engine = create_async_engine(url, pool_size=5, max_overflow=0)
    loop = asyncio.new_event_loop()

    async def many(n: int) -> None:
        for _ in range(n):
            async with async_engine.connect() as conn:
                (await conn.execute(text("select 1"))).scalar()

    return lambda n: loop.run_until_complete(many(n))


def _child(name: str, variant: str, count: int, url: str = "") -> None:
    """What runs under callgrind: warm up, then ``count`` more requests (or statements, on
    the PostgreSQL at ``url``)."""
    import poolwatch

    from ._server import start

    with ExitStack() as stack:
        if name in SQLALCHEMY_LOOPS:
            run = _sqlalchemy_loop(name, url)
        else:
            url, stop = start()
            stack.callback(stop)
            run = _loop(name, url)
        if variant == "poolwatch":
            poolwatch.instrument(_ADAPTER.get(name, name))
        elif variant == "noop":
            from .sqlalchemy_loop import _listen

            _listen()
        run(WARM_UP)
        run(count)


def _instructions(name: str, variant: str, count: int, url: str = "") -> int:
    # The same hash seed and, where setarch can, no address randomisation: dict layouts and
    # id()-keyed lookups then repeat from run to run, which moves a count by up to 1%.
    no_aslr = ["setarch", platform.machine(), "-R"]
    if not shutil.which("setarch") or subprocess.run([*no_aslr, "true"], check=False).returncode:
        no_aslr = []  # a container may forbid changing the personality
    result = subprocess.run(
        [
            *no_aslr,
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--child",
            name,
            variant,
            str(count),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    match = re.search(r"Collected : ([\d,]+)", result.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no count:\n{result.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def _table(name: str, labels: dict[str, str], what: str, url: str = "") -> None:
    """Count each variant (``labels``: variant -> row, plain first) and print the table."""
    per_op = {
        variant: (
            _instructions(name, variant, REQUESTS, url) - _instructions(name, variant, 0, url)
        )
        / REQUESTS
        for variant in labels
    }
    print_table(
        f"{name}: instructions per {what} (callgrind, {REQUESTS} of them)",
        [(labels[variant], per_op[variant]) for variant in labels],
        baseline=labels["plain"],
        unit="k instr",
        scale=1e-3,
        limit=1.03,
    )


def main() -> None:
    if shutil.which("valgrind") is None:
        print("\nbench.instructions: valgrind is not installed; skipped")
        return
    for name in LOOPS:
        labels = {"plain": f"{name} plain", "poolwatch": f"{name} + poolwatch"}
        _table(name, labels, "keep-alive GET on 127.0.0.1")

    from .sqlalchemy_loop import postgres_url

    with ExitStack() as stack:
        url = postgres_url(stack, "bench.instructions, sqlalchemy")
        if url is None:
            return
        for name in SQLALCHEMY_LOOPS:
            labels = {
                "plain": f"{name} plain",
                "noop": "+ no-op pool listeners (event floor)",
                "poolwatch": "+ poolwatch",
            }
            _table(name, labels, "`with engine.connect(): select 1` on PostgreSQL", url)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:])
    else:
        main()
