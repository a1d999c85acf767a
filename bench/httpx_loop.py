"""httpx, sync and async: a keep-alive GET loop, plain vs poolwatch vs OpenTelemetry's httpx.

One client per turn against the fast local server (bench/_server.py), each request
``client.get(url)`` (body read, connection back in the pool), 200 sequential requests per timed
call. The variants alternate in one run (ABCABC...), each turn with a client made after its
instrumentation was switched on, as in bench/aiohttp_loop.py, and each loop runs in several
fresh processes (``_common.in_processes``):

- plain httpx;
- + poolwatch (the httpx adapter, call sites on): target ratio <= 1.03;
- + OpenTelemetry ``HTTPXClientInstrumentor`` with the SDK's TracerProvider (always-on
  sampling, a BatchSpanProcessor whose exporter drops the spans): the peer users already run
  in production; poolwatch's overhead should sit below it;
- plain httpx again (``_common.AGAIN``): the A/A row, what the bench reads for no overhead at
  all.

The same loops run a second time over an in-memory network backend (no kernel, no server):
httpx's own CPU is then the whole baseline, so the ratio is the hooks' cost at its harshest and
is steady even on a loaded machine, where the socket figures are not. Each loop prints wall time
and the client process's CPU time over the same calls: on the socket, wall time also carries the
server's scheduling on this machine's other core, CPU time only what the client spent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpcore
import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

import poolwatch

from ._common import AGAIN, Timings, alternate, in_processes, paired_label, print_wall_and_cpu
from ._otel import switch_off, tracer_provider
from ._server import RESPONSE

REQUESTS_PER_CALL = 200
CALLS = 5
ROUNDS = 4  # per process (``in_processes`` runs many)


class _Echo(httpcore.NetworkStream):
    """Answers each request written to it with RESPONSE, in memory."""

    def __init__(self) -> None:
        self._out = b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._out += RESPONSE * buffer.count(b"\r\n\r\n")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data, self._out = self._out[:max_bytes], self._out[max_bytes:]
        return data

    def close(self) -> None:
        pass


class _AsyncEcho(httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self._sync = _Echo()

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._sync.write(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._sync.read(max_bytes)

    async def aclose(self) -> None:
        pass


class _EchoBackend(httpcore.NetworkBackend):
    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _Echo()


class _AsyncEchoBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _AsyncEcho()


def _client(in_memory: bool) -> httpx.Client:
    if not in_memory:
        return httpx.Client()
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(network_backend=_EchoBackend())
    return httpx.Client(transport=transport)


def _async_client(in_memory: bool) -> httpx.AsyncClient:
    if not in_memory:
        return httpx.AsyncClient()
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(network_backend=_AsyncEchoBackend())
    return httpx.AsyncClient(transport=transport)


def _switches(provider: TracerProvider) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    otel = HTTPXClientInstrumentor()
    return {
        "plain": (lambda: None, lambda: None),
        "poolwatch": (lambda: poolwatch.instrument("httpx"), poolwatch.uninstrument),
        "otel": (lambda: otel.instrument(tracer_provider=provider), switch_off(otel, provider)),
        AGAIN: (lambda: None, lambda: None),
    }


def _table(kind: str, result: Timings, in_memory: bool) -> None:
    where = "in memory (no socket)" if in_memory else "on 127.0.0.1"
    rows = {
        "plain": f"httpx {kind} plain",
        "poolwatch": f"httpx {kind} + poolwatch (call sites on)",
        "otel": f"httpx {kind} + OpenTelemetry httpx",
    }
    print_wall_and_cpu(
        lambda what: (
            f"httpx {kind}: keep-alive GET loop {where}, {what} per request "
            f"({paired_label(result, ROUNDS, f'{CALLS * REQUESTS_PER_CALL} requests')})"
        ),
        rows,
        result,
        per_call=REQUESTS_PER_CALL,
    )


def sync_loop(url: str, where: str) -> Timings:
    """The sync loop's rounds, ``where`` "socket" or "memory"; run by ``in_processes``."""
    in_memory = where == "memory"
    provider = tracer_provider()
    state: dict[str, httpx.Client] = {}

    def batch() -> None:
        client = state["client"]
        for _ in range(REQUESTS_PER_CALL):
            client.get(url)

    setup, teardown = {}, {}
    for name, (on, off) in _switches(provider).items():

        def begin(on: Callable[[], Any] = on) -> None:
            on()
            state["client"] = _client(in_memory)

        def finish(off: Callable[[], Any] = off) -> None:
            state.pop("client").close()
            off()

        setup[name], teardown[name] = begin, finish
    variants = {name: batch for name in setup}
    try:
        return alternate(variants, calls=CALLS, rounds=ROUNDS, setup=setup, teardown=teardown)
    finally:
        provider.shutdown()


def async_loop(url: str, where: str) -> Timings:
    """The async loop's rounds, ``where`` "socket" or "memory"; run by ``in_processes``."""
    in_memory = where == "memory"
    provider = tracer_provider()
    loop = asyncio.new_event_loop()
    state: dict[str, httpx.AsyncClient] = {}

    async def batch() -> None:
        client = state["client"]
        for _ in range(REQUESTS_PER_CALL):
            await client.get(url)

    def run_batch() -> None:
        loop.run_until_complete(batch())

    async def close() -> None:
        await state.pop("client").aclose()

    setup, teardown = {}, {}
    for name, (on, off) in _switches(provider).items():

        def begin(on: Callable[[], Any] = on) -> None:
            on()
            state["client"] = _async_client(in_memory)

        def finish(off: Callable[[], Any] = off) -> None:
            loop.run_until_complete(close())
            off()

        setup[name], teardown[name] = begin, finish
    variants = {name: run_batch for name in setup}
    try:
        return alternate(variants, calls=CALLS, rounds=ROUNDS, setup=setup, teardown=teardown)
    finally:
        loop.close()
        provider.shutdown()


def main() -> None:
    from ._server import start

    url, stop = start()
    try:
        for where in ("socket", "memory"):
            for kind, function in (("sync", "sync_loop"), ("async", "async_loop")):
                result = in_processes(f"bench.httpx_loop:{function}", url, where)
                _table(kind, result, where == "memory")
    finally:
        stop()


if __name__ == "__main__":
    main()
