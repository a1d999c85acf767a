"""Exporters: poolwatch's numbers as Prometheus metric families and OpenTelemetry instruments.

Both read the tracker at collection time under OpenTelemetry's semantic-convention names
(``http.client.open_connections``, ``db.client.connection.*``) plus a ``poolwatch.*`` family.
Importing this package imports neither prometheus_client nor opentelemetry.
"""

from __future__ import annotations

from ._measure import DB_KINDS, DEFAULT_SUSPECT_AFTER, Measurement, PoolMeasure, measure
from ._otel import OpenTelemetryMetrics, instrument_opentelemetry
from ._prometheus import AGE_BUCKETS, PoolwatchCollector, make_registry

__all__ = [
    "AGE_BUCKETS",
    "DB_KINDS",
    "DEFAULT_SUSPECT_AFTER",
    "Measurement",
    "OpenTelemetryMetrics",
    "PoolMeasure",
    "PoolwatchCollector",
    "instrument_opentelemetry",
    "make_registry",
    "measure",
]
