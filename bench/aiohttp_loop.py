"""aiohttp: a keep-alive GET loop, plain vs poolwatch vs OpenTelemetry's client instrumentation.

One ``ClientSession`` per turn against the fast local server (bench/_server.py), each request
``async with session.get(url) as r: await r.read()``, 200 sequential requests per timed call.
The variants alternate in one run (ABCABC...), each turn with a session made after its
instrumentation was switched on, because OpenTelemetry's instrumentor adds its TraceConfig only
to sessions created while it is on; the loop runs in several fresh processes
(``_common.in_processes``):

- plain aiohttp;
- + poolwatch (the aiohttp adapter, call sites on): target ratio <= 1.03;
- + OpenTelemetry ``AioHttpClientInstrumentor`` with the SDK's TracerProvider (always-on
  sampling, a BatchSpanProcessor whose exporter drops the spans): the peer users already run
  in production; poolwatch's overhead should sit below it;
- plain aiohttp again (``_common.AGAIN``): the A/A row, what the bench reads for no overhead
  at all.

A second table gives the client process's CPU time per request over the same calls: on a busy
machine wall time also carries the server's scheduling, CPU time only what the client spent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

import poolwatch

from ._common import AGAIN, Timings, alternate, in_processes, paired_label, print_wall_and_cpu
from ._otel import switch_off, tracer_provider

REQUESTS_PER_CALL = 200
CALLS = 5
ROUNDS = 4  # per process (``in_processes`` runs many)


def main() -> None:
    from ._server import start

    url, stop = start()
    try:
        result = in_processes("bench.aiohttp_loop:request_loop", url)
    finally:
        stop()
    rows = {
        "plain": "aiohttp plain",
        "poolwatch": "aiohttp + poolwatch (call sites on)",
        "otel": "aiohttp + OpenTelemetry aiohttp-client",
    }
    print_wall_and_cpu(
        lambda what: (
            f"aiohttp: keep-alive GET loop on 127.0.0.1, {what} per request "
            f"({paired_label(result, ROUNDS, f'{CALLS * REQUESTS_PER_CALL} requests')})"
        ),
        rows,
        result,
        per_call=REQUESTS_PER_CALL,
    )


def request_loop(url: str) -> Timings:
    """The loop's rounds; run by ``in_processes``."""
    loop = asyncio.new_event_loop()
    provider = tracer_provider()
    otel = AioHttpClientInstrumentor()
    state: dict[str, Any] = {}

    async def open_session() -> None:
        state["session"] = aiohttp.ClientSession()

    async def close_session() -> None:
        await state.pop("session").close()

    async def batch() -> None:
        session = state["session"]
        for _ in range(REQUESTS_PER_CALL):
            async with session.get(url) as response:
                await response.read()

    def run_batch() -> None:
        loop.run_until_complete(batch())

    def turn(switch_on: Any) -> Any:
        def setup() -> None:
            switch_on()
            loop.run_until_complete(open_session())

        return setup

    def end(switch_off: Any) -> Any:
        def teardown() -> None:
            loop.run_until_complete(close_session())
            switch_off()

        return teardown

    def nothing() -> None:
        pass

    def otel_on() -> None:
        otel.instrument(tracer_provider=provider)

    variants = {name: run_batch for name in ("plain", "poolwatch", "otel", AGAIN)}
    setup = {
        "plain": turn(nothing),
        "poolwatch": turn(lambda: poolwatch.instrument("aiohttp")),
        "otel": turn(otel_on),
        AGAIN: turn(nothing),
    }
    teardown = {
        "plain": end(nothing),
        "poolwatch": end(lambda: poolwatch.uninstrument("aiohttp")),
        "otel": end(switch_off(otel, provider)),
        AGAIN: end(nothing),
    }
    try:
        return alternate(variants, calls=CALLS, rounds=ROUNDS, setup=setup, teardown=teardown)
    finally:
        loop.close()
        provider.shutdown()


if __name__ == "__main__":
    main()
