"""Exporters: Prometheus families by name and OpenTelemetry instruments via the SDK reader."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poolwatch import Tracker
from poolwatch.export import PoolwatchCollector, instrument_opentelemetry, make_registry, measure

from .conftest import Leaker, pool_of


class FakeQueuePool:
    """Stands in for a database pool object: the tracker only needs something to weakref."""


def _families(registry: Any) -> dict[str, Any]:
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    for sample in families[family].samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no {name} {labels} in {families[family].samples}")


def test_db_pools_use_db_client_connection_names() -> None:
    """A SQLAlchemy-kind pool is exported as db.client.connection.* with used/idle states."""
    tracker = Tracker()
    pool = FakeQueuePool()
    record = tracker.pool(pool, "sqlalchemy", "postgresql://db:5432/app", stats=lambda p: (5, 2, 1))
    keys = [object() for _ in range(3)]
    for key in keys:
        tracker.checkout(record, id(key), key)
    tracker.exhausted(record)
    families = _families(make_registry(tracker, census=False))
    label = "sqlalchemy postgresql://db:5432/app"
    name_label = {"db_client_connection_pool_name": label}
    assert (
        _value(
            families,
            "db_client_connection_count",
            "db_client_connection_count",
            db_client_connection_state="used",
            **name_label,
        )
        == 3
    )
    assert (
        _value(
            families,
            "db_client_connection_count",
            "db_client_connection_count",
            db_client_connection_state="idle",
            **name_label,
        )
        == 2
    )
    assert (
        _value(families, "db_client_connection_max", "db_client_connection_max", **name_label) == 5
    )
    assert (
        _value(
            families,
            "db_client_connection_pending_requests",
            "db_client_connection_pending_requests",
            **name_label,
        )
        == 1
    )
    assert (
        _value(
            families,
            "db_client_connection_timeouts",
            "db_client_connection_timeouts_total",
            **name_label,
        )
        == 1
    )
    http = families["http_client_open_connections"].samples
    assert all(s.labels["pool"] != label for s in http)


def test_confirmed_leaks_by_call_site_and_suspected_by_age() -> None:
    """Confirmed leaks are counted per call site; leases past suspect_after are suspected."""
    tracker = Tracker()
    pool = FakeQueuePool()
    record = tracker.pool(pool, "urllib3", "http://127.0.0.1:1", stats=lambda p: (2, 0, 0))
    key = object()
    lease = tracker.checkout(record, id(key), key)
    tracker.end(record, id(key), "closed", "test")
    other = object()
    tracker.checkout(record, id(other), other)
    label = "urllib3 http://127.0.0.1:1"
    families = _families(make_registry(tracker, census=False, suspect_after=0.0))
    assert (
        _value(
            families,
            "poolwatch_leaks_confirmed",
            "poolwatch_leaks_confirmed_total",
            pool=label,
            callsite=str(lease.callsite),
        )
        == 1
    )
    assert (
        _value(families, "poolwatch_leaks_suspected", "poolwatch_leaks_suspected", pool=label) == 1
    )
    families = _families(make_registry(tracker, census=False, suspect_after=3600.0))
    assert (
        _value(families, "poolwatch_leaks_suspected", "poolwatch_leaks_suspected", pool=label) == 0
    )


def test_two_pools_with_one_label_are_summed() -> None:
    """Two pool objects for one host give one series (Prometheus rejects duplicates)."""
    tracker = Tracker()
    pools = [FakeQueuePool(), FakeQueuePool()]
    keys = []
    for pool in pools:
        record = tracker.pool(pool, "urllib3", "http://127.0.0.1:2", stats=lambda p: (4, 1, 0))
        key = object()
        keys.append(key)
        tracker.checkout(record, id(key), key)
    reading = measure(tracker)
    assert [(p.label, p.leased, p.max, p.idle) for p in reading.pools] == [
        ("urllib3 http://127.0.0.1:2", 2, 8, 2)
    ]
    assert len(reading.pools[0].ages) == 2


def test_collector_counts_internal_errors() -> None:
    """A stats callback that raises is counted under poolwatch_internal_errors, not raised."""
    tracker = Tracker()
    pool = FakeQueuePool()

    def broken(_pool: object) -> tuple[int, int, int]:
        raise RuntimeError("stats broke")

    tracker.pool(pool, "urllib3", "http://127.0.0.1:3", stats=broken)
    families = _families(make_registry(tracker, census=False))
    assert (
        _value(
            families,
            "poolwatch_internal_errors",
            "poolwatch_internal_errors_total",
            where="urllib3.stats",
        )
        >= 1
    )


def test_collector_follows_the_default_tracker(leaker: Leaker) -> None:
    """With no tracker given, the collector reads the default tracker at each scrape."""
    leaker.leak(2)
    families = _families(make_registry(census=False))
    assert (
        _value(
            families,
            "http_client_open_connections",
            "http_client_open_connections",
            pool=leaker.label,
            http_connection_state="active",
        )
        == pool_of(leaker.label).leased
        == 2
    )
    assert repr(PoolwatchCollector()).startswith("<poolwatch.export")


def test_census_gauge_counts_this_process_sockets(leaker: Leaker) -> None:
    """poolwatch_tcp_sockets shows this process's ESTABLISHED sockets from the census."""
    leaker.leak(1)
    families = _families(make_registry(census=True))
    assert (
        _value(families, "poolwatch_tcp_sockets", "poolwatch_tcp_sockets", state="ESTABLISHED") >= 1
    )


def _otel_points(reader: Any) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    if data is None:  # nothing observed at all
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def test_opentelemetry_instruments_with_the_sdk_reader(leaker: Leaker) -> None:
    """OTel observable instruments report the leak under semconv names, read by the SDK."""
    sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    reader = export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    handle = instrument_opentelemetry(meter_provider=provider, census=False)
    try:
        leaker.leak(2)
        points = _otel_points(reader)
        active = [
            p
            for p in points["http.client.open_connections"]
            if p.attributes.get("pool") == leaker.label
            and p.attributes.get("http.connection.state") == "active"
        ]
        assert len(active) == 1
        assert active[0].value == pool_of(leaker.label).leased == 2
        assert active[0].attributes["server.address"] == "127.0.0.1"
        assert active[0].attributes["server.port"] == leaker.pool.port
        maxima = [
            p.value for p in points["poolwatch.pool.max"] if p.attributes["pool"] == leaker.label
        ]
        assert maxima == [4]
        leaker.leak(1)
        points = _otel_points(reader)
        active = [
            p.value
            for p in points["http.client.open_connections"]
            if p.attributes.get("pool") == leaker.label
            and p.attributes.get("http.connection.state") == "active"
        ]
        assert active == [3]
        handle.stop()
        points = _otel_points(reader)
        assert not [
            p
            for p in points.get("http.client.open_connections", [])
            if p.attributes.get("pool") == leaker.label
        ]
    finally:
        handle.stop()
        provider.shutdown()
