"""A prometheus_client collector over the tracker, under OpenTelemetry's metric names.

Names are what OpenTelemetry's Prometheus exporter makes of the semantic-convention names
(dots to underscores, ``_total`` on counters, ``_seconds`` on second-valued histograms), so a
dashboard built for OTel-instrumented services reads poolwatch's series unchanged. Every scrape
reads the tracker afresh (see ``_measure``); nothing is kept between scrapes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._measure import DEFAULT_SUSPECT_AFTER, Measurement, measure
from ._sources import census_states, ledger_outcomes

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from .._tracker import Tracker

__all__ = ["AGE_BUCKETS", "PoolwatchCollector", "make_registry"]

#: Upper bounds (seconds) of the live-lease age histogram: a healthy request, a slow one, the
#: leak ages people set (30 s, the default 60 s), then minutes and an hour. Few on purpose:
#: bucket lines are most of a scrape's text with many pools.
AGE_BUCKETS = (0.1, 1.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class PoolwatchCollector:
    """Yields poolwatch's metric families on each ``collect()``.

    ``tracker`` is read on each scrape (a callable returning the tracker is accepted too, so
    the collector follows ``poolwatch.instrument(tracker=...)``); ``runtime`` adds the delivery
    ledger's notification counts when alerts run; ``census=False`` leaves out the TCP socket
    gauge (reading the process's sockets costs a netlink round trip per scrape).
    """

    def __init__(
        self,
        tracker: Tracker | Callable[[], Tracker] | None = None,
        *,
        runtime: Any = None,
        suspect_after: float = DEFAULT_SUSPECT_AFTER,
        census: bool = True,
    ) -> None:
        self._tracker = tracker
        self.runtime = runtime
        self.suspect_after = suspect_after
        self.census = census

    @property
    def tracker(self) -> Tracker:
        source = self._tracker
        if source is None:
            from .._api import get_tracker

            return get_tracker()
        if callable(source) and not hasattr(source, "snapshot"):
            return source()
        return source  # type: ignore[return-value]

    def describe(self) -> list[Metric]:
        # An empty describe() keeps registration from calling collect() (and the tracker).
        return []

    def collect(self) -> Iterator[Metric]:
        tracker = self.tracker
        try:
            reading = measure(tracker, suspect_after=self.suspect_after)
        except Exception as exc:
            tracker.internal_error("export.prometheus", exc)
            return
        yield from self._pool_families(reading)
        yield from self._extra_families(tracker)

    def _pool_families(self, reading: Measurement) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        http_open = GaugeMetricFamily(
            "http_client_open_connections",
            "Connections of HTTP client pools, by state (active = leased).",
            labels=["http_connection_state", "server_address", "server_port", "pool"],
        )
        db_count = GaugeMetricFamily(
            "db_client_connection_count",
            "Connections of database client pools, by state (used = leased).",
            labels=["db_client_connection_state", "db_client_connection_pool_name"],
        )
        db_max = GaugeMetricFamily(
            "db_client_connection_max",
            "Maximum connections a database client pool allows.",
            labels=["db_client_connection_pool_name"],
        )
        db_pending = GaugeMetricFamily(
            "db_client_connection_pending_requests",
            "Callers waiting for a connection of a database client pool.",
            labels=["db_client_connection_pool_name"],
        )
        db_timeouts = CounterMetricFamily(
            "db_client_connection_timeouts",
            "Callers that timed out waiting for a connection of a database client pool.",
            labels=["db_client_connection_pool_name"],
        )
        pool_max = GaugeMetricFamily(
            "poolwatch_pool_max", "Maximum connections an HTTP pool keeps.", labels=["pool"]
        )
        pool_pending = GaugeMetricFamily(
            "poolwatch_pool_pending", "Callers waiting for a connection.", labels=["pool"]
        )
        pool_timeouts = CounterMetricFamily(
            "poolwatch_pool_timeouts",
            "Callers that timed out waiting for a connection (pool exhaustion).",
            labels=["pool"],
        )
        suspected = GaugeMetricFamily(
            "poolwatch_leaks_suspected",
            f"Live leases older than the leak threshold ({self.suspect_after:g} s).",
            labels=["pool"],
        )
        confirmed = CounterMetricFamily(
            "poolwatch_leaks_confirmed",
            "Leases whose owner was collected, or whose pool closed, while leased.",
            labels=["pool", "callsite"],
        )
        age = HistogramMetricFamily(
            "poolwatch_lease_age_seconds",
            "Age of each live lease.",
            labels=["pool"],
            unit="seconds",
        )
        for pool in reading.pools:
            label = pool.label
            if pool.family == "db":
                db_count.add_metric(["used", label], pool.leased)
                if pool.idle is not None:
                    db_count.add_metric(["idle", label], pool.idle)
                if pool.max is not None:
                    db_max.add_metric([label], pool.max)
                db_pending.add_metric([label], pool.waiting)
                db_timeouts.add_metric([label], pool.exhaustions)
            else:
                where = [pool.server_address, pool.server_port, label]
                http_open.add_metric(["active", *where], pool.leased)
                if pool.idle is not None:
                    http_open.add_metric(["idle", *where], pool.idle)
                if pool.max is not None:
                    pool_max.add_metric([label], pool.max)
                pool_pending.add_metric([label], pool.waiting)
                pool_timeouts.add_metric([label], pool.exhaustions)
            suspected.add_metric([label], pool.suspected)
            for site, count in pool.leaks_by_callsite.items():
                confirmed.add_metric([label, site], count)
            ages = sorted(pool.ages)
            buckets = [(_le(b), float(bisect.bisect_right(ages, b))) for b in AGE_BUCKETS]
            buckets.append(("+Inf", float(len(ages))))
            age.add_metric([label], buckets, sum(ages))
        yield from (http_open, db_count, db_max, db_pending, db_timeouts)
        yield from (pool_max, pool_pending, pool_timeouts, suspected, confirmed, age)
        errors = CounterMetricFamily(
            "poolwatch_internal_errors",
            "Faults inside poolwatch, caught and counted (never raised into the host).",
            labels=["where"],
        )
        for place, count in sorted(reading.internal_errors.items()):
            errors.add_metric([place], count)
        yield errors

    def _extra_families(self, tracker: Tracker) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.census:
            try:
                states = census_states()
            except Exception as exc:
                tracker.internal_error("export.census", exc)
                states = None
            if states is not None:
                sockets = GaugeMetricFamily(
                    "poolwatch_tcp_sockets",
                    "This process's TCP sockets by state (CLOSE_WAIT: peer closed, we did not).",
                    labels=["state"],
                )
                for state, count in sorted(states.items()):
                    sockets.add_metric([state], count)
                yield sockets
        try:
            outcomes = ledger_outcomes(self.runtime)
        except Exception as exc:
            tracker.internal_error("export.ledger", exc)
            outcomes = None
        if outcomes is not None:
            notes = CounterMetricFamily(
                "poolwatch_alert_notifications",
                "Alert notifications by channel and outcome (delivered / failed / spooled).",
                labels=["channel", "outcome"],
            )
            for (channel, outcome), count in sorted(outcomes.items()):
                notes.add_metric([channel, outcome], count)
            yield notes


def make_registry(
    tracker: Tracker | Callable[[], Tracker] | None = None,
    *,
    runtime: Any = None,
    suspect_after: float = DEFAULT_SUSPECT_AFTER,
    census: bool = True,
) -> CollectorRegistry:
    """A fresh ``CollectorRegistry`` holding only poolwatch's collector."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        PoolwatchCollector(tracker, runtime=runtime, suspect_after=suspect_after, census=census)
    )
    return registry
