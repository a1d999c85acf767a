"""OpenTelemetry as the loops' peer: the SDK's TracerProvider whose spans go nowhere.

Always-on sampling and a BatchSpanProcessor, as in production, with an exporter that drops the
spans: the instrumentation's own cost without an exporter's I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["tracer_provider"]


class _DropExporter(SpanExporter):
    """Accepts and forgets spans."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def tracer_provider() -> TracerProvider:
    """A provider for the instrumentors; ``shutdown()`` it when done."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_DropExporter()))
    return provider
