"""What the OpenTelemetry SDK alone costs for what one traced call records.

    python benchmarks/otel_floor.py [--iterations N] [--repeats N]

`overhead.py` measures all we add to a call; part of that is the OpenTelemetry SDK's work
for the span and the histogram points the GenAI semantic conventions define, which any
instrumentation recording them pays. This script measures that part alone. It makes one
instrumented non-streamed call and one 200-chunk stream (`overhead.py`'s payloads,
in-process transport, real SDK providers), takes the span each made and the histogram
points each recorded, and replays exactly those (names, kinds, attributes, values, bucket
boundaries) through fresh providers set up as in `overhead.py` (`TracerProvider` +
`BatchSpanProcessor` into an exporter that drops spans; `MeterProvider` +
`InMemoryMetricReader`), in a tight loop, with none of our code and none of the openai
SDK's: start the span with its attributes, end it, record each point.

In a loop everything stays warm in the CPU's caches; between the openai SDK's own work, as
in a real call, the same code runs slower, so this is a floor, not the SDK's share of
`overhead.py`'s figures. The clock is `time.process_time_ns()` (all threads, so the batch
processor's worker counts); each figure is the median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import overhead
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor


@dataclass(frozen=True)
class Point:
    name: str
    unit: str
    boundaries: tuple[float, ...]
    value: float
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Recorded:
    """What one call recorded: its span and its histogram points."""

    span: ReadableSpan
    points: tuple[Point, ...]


def record_one(stream: bool) -> Recorded:
    """One instrumented call through the real SDK, and what it recorded."""
    http = overhead.http_module()
    client = overhead.sync_client(http, overhead.MockOpenAI(http, overhead.CHUNKS))
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        overhead.sync_paths(client, stream=stream).instrumented()
    finally:
        instrumentor.uninstrument()
        client.close()
    (span,) = exporter.get_finished_spans()
    points = []
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        assert point.count == 1, (metric.name, point.count)
                        points.append(
                            Point(
                                metric.name,
                                metric.unit or "",
                                tuple(point.explicit_bounds),
                                point.sum,
                                dict(point.attributes or {}),
                            )
                        )
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return Recorded(span, tuple(points))


def replayer(
    recorded: Recorded, spans: bool, points: bool
) -> tuple[Callable[[], None], tuple[TracerProvider, MeterProvider]]:
    """A function doing the recorded span and/or points once, and what to shut down after."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(overhead.DroppingExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracer = tracer_provider.get_tracer("otel_floor")
    meter = meter_provider.get_meter("otel_floor")
    span = recorded.span
    name, kind, attributes = span.name, span.kind, dict(span.attributes or {})
    records = [
        (
            meter.create_histogram(
                p.name, unit=p.unit, explicit_bucket_boundaries_advisory=list(p.boundaries)
            ).record,
            p.value,
            p.attributes,
        )
        for p in recorded.points
    ]

    def once() -> None:
        if spans:
            tracer.start_span(name, kind=kind, attributes=attributes).end()
        if points:
            for record, value, point_attributes in records:
                record(value, point_attributes)

    return once, (tracer_provider, meter_provider)


def microseconds(once: Callable[[], None], iterations: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.process_time_ns()
        for _ in range(iterations):
            once()
        runs.append((time.process_time_ns() - start) / iterations / 1000)
    return statistics.median(runs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000, help="per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is shown")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        "| case | span attributes | histogram points | span | points | OpenTelemetry SDK in all |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for title, stream in (
        ("non-streamed call", False),
        (f"stream {overhead.CHUNKS} chunks", True),
    ):
        recorded = record_one(stream)
        figures = []
        for spans, points in ((True, False), (False, True), (True, True)):
            once, providers = replayer(recorded, spans, points)
            once()  # instruments and attribute sets seen once before timing
            figures.append(microseconds(once, args.iterations, args.repeats))
            for provider in providers:
                provider.shutdown()
        span_us, points_us, all_us = figures
        print(
            f"| {title} | {len(recorded.span.attributes or {})} | {len(recorded.points)} |"
            f" {span_us:.1f} µs | {points_us:.1f} µs | {all_us:.1f} µs |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
