"""SQLAlchemy: pool round trips of real engines, plain vs instrumented, alternated.

On a real PostgreSQL server on 127.0.0.1 (psycopg 3, QueuePool of 5), each loop in several
fresh processes (``_common.in_processes``), where the target is set:
ratio <= 1.03 with call sites on, and below OpenTelemetry's SQLAlchemy instrumentation on the
same loop:
- `with engine.connect(): execute("select 1")`, a sync engine;
- `async with engine.connect(): execute("select 1")`, an asyncio engine.
Plain runs again as the A/A row (``_common.AGAIN``): what the bench reads for no overhead.

Then three loops on a SQLite file engine, where nothing leaves the process: the worst case for
any pool instrumentation, with nothing to hide its cost behind. No target is set there, because
listening to pool events at all makes SQLAlchemy take its slower checkout path (it skips it
when nobody listens): the "no-op listeners" row is that floor, what any event-based
instrumentation pays before doing anything, and on the bare loops it is over 3% by itself.
- `engine.connect()` + close, no statement: the pool round trip alone;
- `with engine.connect(): execute("select 1")`;
- `engine.raw_connection()` + close: the pool without the Connection wrapper.

The PostgreSQL loops are skipped when no PostgreSQL server is installed.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import Pool

import poolwatch

from ._common import (
    AGAIN,
    Timings,
    alternate,
    in_processes,
    paired_label,
    print_table,
    print_wall_and_cpu,
)
from ._otel import switch_off, tracer_provider

ROUNDS = 2  # per process, on PostgreSQL (``in_processes`` runs many)
SELECTS = 2000
ASYNC_PER_CALL = 100
ASYNC_CALLS = 10


def _noop_checkout(dbapi_connection: object, record: object, proxy: object) -> None:
    pass


def _noop_checkin(dbapi_connection: object, record: object) -> None:
    pass


def _listen() -> None:
    event.listen(Pool, "checkout", _noop_checkout)
    event.listen(Pool, "checkin", _noop_checkin)


def _unlisten() -> None:
    event.remove(Pool, "checkout", _noop_checkout)
    event.remove(Pool, "checkin", _noop_checkin)


def _instrument() -> None:
    poolwatch.instrument("sqlalchemy")


def _uninstrument() -> None:
    poolwatch.uninstrument("sqlalchemy")


def _otel_on(otel: SQLAlchemyInstrumentor, engine: Engine, provider: TracerProvider) -> None:
    # Its declared range ends before SQLAlchemy 2.1, where it would instrument nothing; its
    # hooks work there (_check_otel_spans), so the dependency check is skipped.
    otel.instrument(engine=engine, tracer_provider=provider, skip_dep_check=True)


def _check_otel_spans(otel: SQLAlchemyInstrumentor, engine: Engine) -> None:
    """Fail unless the OpenTelemetry row measures real instrumentation: spans per statement."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    _otel_on(otel, engine, provider)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1")).scalar()
    finally:
        otel.uninstrument()
    names = [span.name for span in spans.get_finished_spans()]
    if not any(name.startswith("select") for name in names):
        raise RuntimeError(f"OpenTelemetry's SQLAlchemy instrumentation made no span: {names}")


def main() -> None:
    was = poolwatch.instrumented()
    poolwatch.uninstrument()
    try:
        _postgres_loops()
        _sqlite_loops()
    finally:
        poolwatch.uninstrument()
        if was:
            poolwatch.instrument(*was)


def postgres_url(stack: ExitStack, what: str) -> str | None:
    """A local PostgreSQL for ``what``'s loops, stopped with ``stack``: its psycopg URL, or
    None (``what`` said skipped) when no PostgreSQL server is installed."""
    from tests._postgres import PostgresUnavailable, running_postgres

    try:
        port = stack.enter_context(running_postgres("bench", "bench-password"))
    except PostgresUnavailable as exc:
        print(f"\n{what} on PostgreSQL: skipped ({exc})")
        return None
    return f"postgresql+psycopg://bench:bench-password@127.0.0.1:{port}/postgres"


def _postgres_loops() -> None:
    with ExitStack() as stack:
        url = postgres_url(stack, "sqlalchemy")
        if url is None:
            return
        for kind, name, per_call in (
            ("sync", "with engine.connect(): select 1", 1),
            ("async", "async with engine.connect(): select 1", ASYNC_PER_CALL),
        ):
            result = in_processes("bench.sqlalchemy_loop:postgres_loop", kind, url)
            calls = SELECTS if kind == "sync" else ASYNC_CALLS
            label = paired_label(result, ROUNDS, calls * per_call)
            print_wall_and_cpu(
                lambda what, name=name, label=label: (
                    f"sqlalchemy {name} on PostgreSQL (psycopg, 127.0.0.1), {what} per "
                    f"statement ({label})"
                ),
                {
                    "plain": "plain",
                    "noop": "+ no-op pool listeners (event floor)",
                    "poolwatch": "+ poolwatch (call sites on)",
                    "otel": "+ OpenTelemetry SQLAlchemy",
                },
                result,
                per_call=per_call,
            )


def postgres_loop(kind: str, url: str) -> Timings:
    """The rounds of the ``kind`` ("sync" or "async") loop on PostgreSQL at ``url``; run by
    ``in_processes``."""
    with ExitStack() as stack:
        engine = create_engine(url, pool_size=5, max_overflow=0)
        stack.callback(engine.dispose)
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        async_engine = create_async_engine(url, pool_size=5, max_overflow=0)
        stack.callback(lambda: loop.run_until_complete(async_engine.dispose()))
        provider = tracer_provider()
        stack.callback(provider.shutdown)
        otel = SQLAlchemyInstrumentor()
        _check_otel_spans(otel, engine)

        def select_one() -> None:
            with engine.connect() as conn:
                conn.execute(text("select 1")).scalar()

        async def select_many(n: int) -> None:
            for _ in range(n):
                async with async_engine.connect() as conn:
                    (await conn.execute(text("select 1"))).scalar()

        def async_select() -> None:
            loop.run_until_complete(select_many(ASYNC_PER_CALL))

        fn, calls, sync_engine = (
            (select_one, SELECTS, engine)
            if kind == "sync"
            else (async_select, ASYNC_CALLS, async_engine.sync_engine)
        )
        return alternate(
            {"plain": fn, "noop": fn, "poolwatch": fn, "otel": fn, AGAIN: fn},
            calls=calls,
            rounds=ROUNDS,
            setup={
                "noop": _listen,
                "poolwatch": _instrument,
                "otel": partial(_otel_on, otel, sync_engine, provider),
            },
            teardown={
                "noop": _unlisten,
                "poolwatch": _uninstrument,
                "otel": switch_off(otel, provider),
            },
        )


def _sqlite_loops() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(
            f"sqlite:///{Path(tmp) / 'bench.db'}", pool_size=5, max_overflow=0, pool_timeout=5
        )

        def connect_close() -> None:
            engine.connect().close()

        def select_one() -> None:
            with engine.connect() as conn:
                conn.execute(text("select 1")).scalar()

        def raw_connection() -> None:
            engine.raw_connection().close()

        try:
            for name, fn, calls in (
                ("engine.connect() + close()", connect_close, 20_000),
                ("with engine.connect(): select 1", select_one, 10_000),
                ("engine.raw_connection() + close()", raw_connection, 20_000),
            ):
                result = alternate(
                    {"plain": fn, "noop": fn, "poolwatch": fn},
                    calls=calls,
                    rounds=9,
                    setup={"noop": _listen, "poolwatch": _instrument},
                    teardown={"noop": _unlisten, "poolwatch": _uninstrument},
                )
                rows = {
                    "plain": "plain",
                    "noop": "+ no-op pool listeners (event floor)",
                    "poolwatch": "+ poolwatch (call sites on)",
                }
                print_table(
                    f"sqlalchemy {name} on a SQLite file, in process, no target (median of 9 "
                    f"alternated rounds x {calls}; ratio: median of blocks of two rounds')",
                    [(label, result[key]) for key, label in rows.items()],
                    baseline="plain",
                    ratios={rows[key]: result.ratio(key, "plain") for key in ("noop", "poolwatch")},
                )
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
