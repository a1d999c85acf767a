"""redis-py: GET loops against a real redis-server on 127.0.0.1, plain vs instrumented.

Each command takes and releases one pooled connection, so the loop measures poolwatch's
checkout+checkin (call sites on) against a real round trip. Skipped when redis-server is not
installed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time

import redis
import redis.asyncio as aredis

import poolwatch

from ._common import alternate, print_table


def _start(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    assert binary is not None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(host="127.0.0.1", port=port).ping()
            return proc, port
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                proc.terminate()
                raise
            time.sleep(0.02)


def main() -> None:
    if shutil.which("redis-server") is None:
        print("\nredis: skipped (redis-server is not installed)")
        return
    was = poolwatch.instrumented()
    poolwatch.uninstrument()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = _start(tmp)
        client = redis.Redis(host="127.0.0.1", port=port)
        client.set("bench", "x")
        loop = asyncio.new_event_loop()
        aclient = aredis.Redis(host="127.0.0.1", port=port)

        def get() -> None:
            client.get("bench")

        async def aget_many(n: int) -> None:
            for _ in range(n):
                await aclient.get("bench")

        def aget() -> None:
            loop.run_until_complete(aget_many(20))

        on = {"instrumented": lambda: poolwatch.instrument("redis")}
        off = {"instrumented": lambda: poolwatch.uninstrument("redis")}
        try:
            for name, fn, calls, per_call in (
                ("redis GET (sync)", get, 5000, 1),
                ("redis.asyncio GET", aget, 250, 20),
            ):
                result = alternate(
                    {"plain": fn, "instrumented": fn},
                    calls=calls,
                    rounds=9,
                    setup=on,
                    teardown=off,
                )
                print_table(
                    f"{name} on 127.0.0.1 (median of 9 alternated rounds x {calls * per_call})",
                    [
                        ("plain", result["plain"] / per_call),
                        ("+ poolwatch", result["instrumented"] / per_call),
                    ],
                    baseline="plain",
                    limit=1.03,
                )
        finally:
            client.close()
            loop.run_until_complete(aclient.aclose())
            loop.close()
            proc.terminate()
            proc.wait(10)
            poolwatch.uninstrument()
            if was:
                poolwatch.instrument(*was)


if __name__ == "__main__":
    main()
