"""Instructions per request, plain vs poolwatch, counted by valgrind's callgrind.

The HTTP clients' keep-alive GET loops, and SQLAlchemy's `select 1` loops (sync and asyncio
engines) on a local PostgreSQL, where a third variant, no-op pool listeners, counts the floor
that listening to pool events at all costs (bench/sqlalchemy_loop.py).

The time-based loops (bench.tracker, bench.httpx_loop, bench.aiohttp_loop) are what the
targets are read from, but on a shared 2-core machine an A/A run of the same loop already
differs by up to 3%, the size of the target itself. Callgrind counts instructions, which do
not depend on what else the machine is doing: the same binary, input and memory layout give
the same count. Each loop runs in a child process under callgrind twice, with 0 and with
REQUESTS requests after the same warm-up; the difference over REQUESTS is the per-request
count, start-up and warm-up cancelled out. Our hooks run colder than the library's own code
(they touch data the library does not), so a time ratio comes out somewhat above the
instruction ratio.

The memory layout is not the same from one variant to the next, and it moves the count: which
attribute lookups share a slot of the interpreter's type cache (by type version tag and name
address) decides how many of them miss it. On the SQLAlchemy sync loop, plain SQLAlchemy read
430.2k-438.9k instructions per statement with nothing changed but the layout, and a child
that only imported its modules in another order read 2% more; poolwatch instrumented and then
uninstrumented read 2.6% under plain. One layout per variant can then put the ratio 2-4% off.
So each variant is counted at several layouts (``LAYOUTS``: the child first makes that many
throwaway classes, each given its version tag, which moves every later type's tag, and as
many buffers, which move later objects), the row is the median, and the table adds the ratio
at each layout.

Run it with `python -m bench instructions` (about 40 minutes with three layouts; needs
valgrind; the SQLAlchemy loops also PostgreSQL, and are skipped without it). It is not part
of plain `make bench`.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack

from ._common import print_table

REQUESTS = 1000
WARM_UP = 300
#: Layout shifts each variant is counted at (``POOLWATCH_BENCH_LAYOUTS``, comma-separated).
LAYOUTS = tuple(int(k) for k in os.environ.get("POOLWATCH_BENCH_LAYOUTS", "0,17,53").split(","))
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


def _shift_layout(shift: int) -> list[object]:
    """``shift`` throwaway classes, each given its type version tag now (an attribute lookup
    on it), and ``shift`` buffers of a few sizes: every type met later gets another tag, and
    later objects other addresses. Keep what it returns alive."""
    kept: list[object] = []
    for i in range(shift):
        instance = type(f"_Shift{i}", (), {})()
        getattr(instance, "shift", None)
        kept += [instance, bytearray(64 * (i % 7 + 1))]
    return kept


def _child(name: str, variant: str, count: int, shift: int, url: str = "") -> None:
    """What runs under callgrind: warm up, then ``count`` more requests (or statements, on
    the PostgreSQL at ``url``), at layout ``shift``."""
    kept = _shift_layout(shift)
    import poolwatch

    from ._server import start

    with ExitStack() as stack:
        if name in SQLALCHEMY_LOOPS:
            # every variant imports what the no-op one needs: modules imported by one variant
            # alone would give it another layout (and the no-op listeners read 1.019-1.057)
            from .sqlalchemy_loop import _listen

            run = _sqlalchemy_loop(name, url)
        else:
            url, stop = start()
            stack.callback(stop)
            run = _loop(name, url)
        if variant == "poolwatch":
            poolwatch.instrument(_ADAPTER.get(name, name))
        elif variant == "noop":
            _listen()
        run(WARM_UP)
        run(count)
    del kept


def _instructions(name: str, variant: str, count: int, shift: int, url: str = "") -> int:
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
            str(shift),
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
    """Count each variant (``labels``: variant -> row, plain first) at each layout and print
    the table: the median count, and the ratio at each layout."""
    per_op = {
        variant: [
            (
                _instructions(name, variant, REQUESTS, shift, url)
                - _instructions(name, variant, 0, shift, url)
            )
            / REQUESTS
            for shift in LAYOUTS
        ]
        for variant in labels
    }
    plain = per_op["plain"]
    print_table(
        f"{name}: instructions per {what} (callgrind, {REQUESTS} of them; median of "
        f"{len(LAYOUTS)} memory layouts)",
        [(labels[variant], statistics.median(counts)) for variant, counts in per_op.items()],
        baseline=labels["plain"],
        unit="k instr",
        scale=1e-3,
        limit=1.03,
        spread={
            labels[variant]: [n / p for n, p in zip(counts, plain, strict=True)]
            for variant, counts in per_op.items()
            if variant != "plain"
        },
        spread_label="per layout",
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
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), *sys.argv[6:])
    else:
        main()
