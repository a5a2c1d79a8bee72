"""eventbus with the OpenTelemetry tracing middleware on every handler: what tracing costs.

A span per message on the OpenTelemetry SDK with a BatchSpanProcessor, as an application would
configure it, and an exporter that discards the spans: the cost measured is eventbus's and the
SDK's in this process, not a collector's network round trips.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.contenders.eventbus_app import main
from benchmarks.contenders.recorder import load, run
from eventbus.middlewares.tracing import tracing_middleware


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


if __name__ == "__main__":
    _, recorder = load(sys.argv, "eventbus_tracing")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    run(recorder, lambda: main(recorder, [tracing_middleware(tracer_provider=provider)]))
