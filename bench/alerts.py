"""Alerting costs: alert latency (threshold crossed -> SMTP accepted) and the sampler's CPU.

`python -m bench alerts`. Targets (issue 6): latency <= sampler interval + 0.5 s; the sampler
under 1% CPU at a 1 s interval with 50 pools.
"""

from __future__ import annotations

import http.server
import random
import statistics
import threading
from typing import Any

import urllib3

import poolwatch
from poolwatch._config import Config, SmtpConfig
from poolwatch._sampler import Sampler
from poolwatch.alerts import SmtpSink, induce

from ._common import alternate, print_table

INTERVALS = (1.0, 0.25)
ROUNDS = 12
POOLS = 50
LEASES_PER_POOL = 2


def latency(interval: float, rounds: int = ROUNDS) -> list[float]:
    """Seconds from the lease that crosses 75% to the SMTP server's 250, per induced drill."""
    out = []
    with SmtpSink() as smtp:
        config = Config(
            interval=interval,
            log=False,
            census=False,
            smtp=SmtpConfig(host=smtp.host, port=smtp.port, sender="b@bench", to=("o@bench",)),
        )
        for _ in range(rounds):
            # Cross the threshold at a random phase between two samples, as a real leak would.
            settle = random.uniform(0, interval)
            report = induce(config, interval=interval, timeout=10 + interval, settle=settle)
            (result,) = report.results
            if not result.delivered or result.latency is None:
                raise RuntimeError(f"bench: alert not delivered: {result.describe()}")
            out.append(result.latency)
    return out


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def sampler_cost() -> None:
    """CPU seconds per sampler tick with 50 live pools (2 leases each) vs an empty tracker."""
    poolwatch.instrument("urllib3")
    servers, pools, held = [], [], []
    for _ in range(POOLS):  # one server per pool: each pool is its own host:port
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        pool = urllib3.HTTPConnectionPool("127.0.0.1", server.server_port, maxsize=10)
        pools.append(pool)
        held.extend(pool.request("GET", "/", preload_content=False) for _ in range(LEASES_PER_POOL))
    try:
        busy = Sampler(poolwatch.get_tracker(), census=False)
        empty = Sampler(poolwatch.Tracker(), census=False)
        with_engine = Sampler(poolwatch.get_tracker(), census=False)
        from poolwatch.alerts import Engine

        engine = Engine()
        with_engine.subscribe(engine.evaluate)
        results = alternate(
            {
                "empty tracker": empty.sample_once,
                f"{POOLS} pools, {POOLS * LEASES_PER_POOL} leases": busy.sample_once,
                f"{POOLS} pools + rule engine": with_engine.sample_once,
            },
            calls=50,
        )
        census_cost = None
        try:
            import poolwatch.census as census

            census_cost = alternate(
                {"census": lambda: census.process_counts(states="CLOSE_WAIT")}, calls=10, rounds=3
            )["census"]
        except Exception as exc:  # census not available here
            print(f"  (census not measured: {exc!r})")
    finally:
        for response in held:
            response.drain_conn()
            response.release_conn()
        for pool in pools:
            pool.close()
        for server in servers:
            server.shutdown()
            server.server_close()
    rows = list(results.items())
    print_table(
        "sampler: seconds per tick (ratio vs empty tracker)", rows, "empty tracker", unit="us"
    )
    every = Sampler(poolwatch.Tracker()).census_every
    full = results[f"{POOLS} pools + rule engine"] + (census_cost or 0.0) / every
    cpu_rows = [
        ("budget: 1% of a 1 s interval", 0.01),
        (f"{POOLS} pools + engine, per second", results[f"{POOLS} pools + rule engine"]),
    ]
    if census_cost is not None:
        cpu_rows.append((f"  + census every {every:g} s (amortised)", full))
    print_table(
        "sampler CPU at a 1 s interval (seconds of CPU per second; ratio vs the 1% budget)",
        cpu_rows,
        "budget: 1% of a 1 s interval",
        unit="ms/s",
        scale=1e3,
        limit=1.0,
    )


def main() -> None:
    sampler_cost()
    for interval in INTERVALS:
        values = latency(interval)
        budget = interval + 0.5
        rows = [
            (f"budget: interval {interval:g} s + 0.5 s", budget),
            ("median", statistics.median(values)),
            ("p90", statistics.quantiles(values, n=10)[-1]),
            ("max", max(values)),
            ("min", min(values)),
        ]
        print_table(
            f"alert latency, 75% crossed -> SMTP 250, interval {interval:g} s, {len(values)} runs"
            " (ratio vs budget)",
            rows,
            rows[0][0],
            unit="s",
            scale=1.0,
            limit=1.0,
        )
    poolwatch.uninstrument("urllib3")


if __name__ == "__main__":
    main()
