"""Instructions per request, plain vs poolwatch, counted by valgrind's callgrind.

The time-based loops (bench.tracker, bench.httpx_loop, bench.aiohttp_loop) are what the
targets are read from, but on a shared 2-core machine an A/A run of the same loop already
differs by up to 3%, the size of the target itself. Callgrind counts instructions, which do
not depend on what else the machine is doing: the same binary and input give the same count.
Each loop runs in a child process under callgrind twice, with 0 and with REQUESTS requests
after the same warm-up; the difference over REQUESTS is the per-request count, start-up and
warm-up cancelled out. Our hooks run colder than the library's own code (they touch data the
library does not), so a time ratio comes out somewhat above the instruction ratio.

Run it with `python -m bench instructions` (about 5 minutes; needs valgrind). It is not part
of plain `make bench`.
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

from ._common import print_table

REQUESTS = 1000
WARM_UP = 300
LOOPS = ("urllib3", "requests", "httpx sync", "httpx async", "aiohttp")
_ADAPTER = {"requests": "urllib3", "httpx sync": "httpx", "httpx async": "httpx"}


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


def _child(name: str, variant: str, count: int) -> None:
    """What runs under callgrind: warm up, then ``count`` more requests."""
    import poolwatch

    from ._server import start

    url, stop = start()
    try:
        run = _loop(name, url)
        if variant == "poolwatch":
            poolwatch.instrument(_ADAPTER.get(name, name))
        run(WARM_UP)
        run(count)
    finally:
        stop()


def _instructions(name: str, variant: str, count: int) -> int:
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


def main() -> None:
    if shutil.which("valgrind") is None:
        print("\nbench.instructions: valgrind is not installed; skipped")
        return
    for name in LOOPS:
        per_request = {
            variant: (_instructions(name, variant, REQUESTS) - _instructions(name, variant, 0))
            / REQUESTS
            for variant in ("plain", "poolwatch")
        }
        print_table(
            f"{name}: instructions per keep-alive GET on 127.0.0.1 (callgrind, {REQUESTS} GETs)",
            [
                (f"{name} plain", per_request["plain"]),
                (f"{name} + poolwatch", per_request["poolwatch"]),
            ],
            baseline=f"{name} plain",
            unit="k instr",
            scale=1e-3,
            limit=1.03,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
