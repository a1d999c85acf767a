"""redis-py: GET loops against a real redis-server on 127.0.0.1, plain vs instrumented.

Each command takes and releases one pooled connection, so the loop measures poolwatch's
checkout+checkin (call sites on) against a real round trip: `client.get(key)` on a sync
client, and 20 of them awaited in turn on a `redis.asyncio` client. Each loop runs as the
client loops do (``_common.in_processes``: many fresh processes, a warm-up round, plain again
as the A/A row), with the 1.03 target. Skipped when redis-server is not installed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack

import redis
import redis.asyncio as aredis

import poolwatch

from ._common import AGAIN, Timings, alternate, in_processes, paired_label, print_wall_and_cpu


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


ROUNDS = 2  # per process (``in_processes`` runs many)
SYNC_CALLS = 2000
ASYNC_PER_CALL = 20
ASYNC_CALLS = 100


def redis_loop(kind: str, port: str) -> Timings:
    """The rounds of the ``kind`` ("sync" or "async") loop against the redis-server on
    ``port``; run by ``in_processes``."""
    with ExitStack() as stack:
        client = redis.Redis(host="127.0.0.1", port=int(port))
        stack.callback(client.close)
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        aclient = aredis.Redis(host="127.0.0.1", port=int(port))
        stack.callback(lambda: loop.run_until_complete(aclient.aclose()))

        def get() -> None:
            client.get("bench")

        async def aget_many(n: int) -> None:
            for _ in range(n):
                await aclient.get("bench")

        def aget() -> None:
            loop.run_until_complete(aget_many(ASYNC_PER_CALL))

        fn, calls = (get, SYNC_CALLS) if kind == "sync" else (aget, ASYNC_CALLS)
        return alternate(
            {"plain": fn, "instrumented": fn, AGAIN: fn},
            calls=calls,
            rounds=ROUNDS,
            setup={"instrumented": lambda: poolwatch.instrument("redis")},
            teardown={"instrumented": lambda: poolwatch.uninstrument("redis")},
        )


def main() -> None:
    if shutil.which("redis-server") is None:
        print("\nredis: skipped (redis-server is not installed)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = _start(tmp)
        try:
            redis.Redis(host="127.0.0.1", port=port).set("bench", "x")
            for kind, name, calls, per_call in (
                ("sync", "redis GET (sync)", SYNC_CALLS, 1),
                ("async", "redis.asyncio GET", ASYNC_CALLS, ASYNC_PER_CALL),
            ):
                result = in_processes("bench.redis_loop:redis_loop", kind, str(port))
                label = paired_label(result, ROUNDS, calls * per_call)
                print_wall_and_cpu(
                    lambda what, name=name, label=label: (
                        f"{name} on 127.0.0.1, {what} per command ({label})"
                    ),
                    {"plain": "plain", "instrumented": "+ poolwatch (call sites on)"},
                    result,
                    per_call=per_call,
                )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
