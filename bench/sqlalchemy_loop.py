"""SQLAlchemy: checkout/checkin loops of a real engine, plain vs instrumented, alternated.

Three loops on a SQLite file engine (QueuePool, pool_size 5):
- `engine.connect()` + close, no statement: the pool round trip alone, the worst case for
  poolwatch (nothing else to hide its cost behind);
- `with engine.connect(): execute("select 1")`: the smallest realistic unit of work;
- `engine.raw_connection()` + close: the pool without the Connection wrapper.
The target is ratio <= 1.03 for the realistic loop, call sites on. Listening to pool events at
all makes SQLAlchemy take its slower checkout path (it skips it when nobody listens): the
"no-op listeners" row is that floor, what any event-based instrumentation pays before doing
anything.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import Pool

import poolwatch

from ._common import alternate, print_table


def main() -> None:
    was = poolwatch.instrumented()
    poolwatch.uninstrument()
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

        def noop_checkout(dbapi_connection: object, record: object, proxy: object) -> None:
            pass

        def noop_checkin(dbapi_connection: object, record: object) -> None:
            pass

        def listen() -> None:
            event.listen(Pool, "checkout", noop_checkout)
            event.listen(Pool, "checkin", noop_checkin)

        def unlisten() -> None:
            event.remove(Pool, "checkout", noop_checkout)
            event.remove(Pool, "checkin", noop_checkin)

        on = {"instrumented": lambda: poolwatch.instrument("sqlalchemy"), "noop": listen}
        off = {"instrumented": lambda: poolwatch.uninstrument("sqlalchemy"), "noop": unlisten}
        try:
            for name, fn, calls in (
                ("engine.connect() + close()", connect_close, 20_000),
                ("with engine.connect(): select 1", select_one, 10_000),
                ("engine.raw_connection() + close()", raw_connection, 20_000),
            ):
                result = alternate(
                    {"plain": fn, "noop": fn, "instrumented": fn},
                    calls=calls,
                    rounds=9,
                    setup=on,
                    teardown=off,
                )
                print_table(
                    f"sqlalchemy {name} on a SQLite file (median of 9 alternated rounds x {calls})",
                    [
                        ("plain", result["plain"]),
                        ("+ no-op pool listeners (event floor)", result["noop"]),
                        ("+ poolwatch", result["instrumented"]),
                    ],
                    baseline="plain",
                    limit=1.03,
                )
        finally:
            engine.dispose()
            poolwatch.uninstrument()
            if was:
                poolwatch.instrument(*was)


if __name__ == "__main__":
    main()
