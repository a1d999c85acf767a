"""OpenTelemetry as the loops' peer: the SDK's TracerProvider whose spans go nowhere.

Always-on sampling and a BatchSpanProcessor, as in production, with an exporter that drops the
spans: the instrumentation's own cost without an exporter's I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["switch_off", "tracer_provider"]


class _DropExporter(SpanExporter):
    """Accepts and forgets spans."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def tracer_provider() -> TracerProvider:
    """A provider for the instrumentors; ``shutdown()`` it when done."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_DropExporter()))
    return provider


def switch_off(instrumentor: Any, provider: TracerProvider) -> Callable[[], None]:
    """The OpenTelemetry turn's teardown: ``instrumentor.uninstrument()``, then the spans the
    turn left in the BatchSpanProcessor's queue exported (and freed) at once.

    Left alone, they go on the processor's next timer tick, from its own thread, inside
    whichever variant is being timed then: up to 511 spans, about 0.3% of an httpx turn
    measured, charged to the variant after OpenTelemetry's (poolwatch's or the A/A row's,
    as the order turns).
    """

    def off() -> None:
        instrumentor.uninstrument()
        provider.force_flush()

    return off
