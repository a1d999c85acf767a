"""A fast keep-alive HTTP/1.1 server for benchmarks, in its own process.

It answers every request with the same small 200 response, so the client side dominates
the measured time. `start()` spawns it and returns (base_url, stop).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


class _Protocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin


def start() -> tuple[str, Callable[[], None]]:
    """Spawn the server; returns its base URL and a function that stops it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())

    def stop() -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()

    return f"http://127.0.0.1:{port}", stop


if __name__ == "__main__":
    asyncio.run(_serve())
