"""The main job, runnable with no API key: instrumented OpenAI calls and their token usage.

    python -m opentelemetry.instrumentation.openai_usage.demo [--local] [--quiet]

Without OPENAI_API_KEY (or with --local) it starts the bundled local
OpenAI-compatible server and talks to it through the real openai SDK, so the
spans, metrics and token counts are real ones, produced the way production
produces them. Spans and metrics go to the console, or over OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set: OTLP/HTTP (opentelemetry-exporter-otlp-proto-http),
or OTLP/gRPC with OTEL_EXPORTER_OTLP_PROTOCOL=grpc (opentelemetry-exporter-otlp-proto-grpc).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import OpenAIUsageInstrumentor
from . import telemetry as t
from .estimator import FINISHER
from .localserver import LocalOpenAIServer

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What's 1+1? Answer in one word."}
]


def _say(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


class _Progress:
    """What the demo is doing, on stderr; `--quiet` leaves only the table, where OTLP
    export goes, and problems."""

    quiet = False


def _progress(text: str) -> None:
    if not _Progress.quiet:
        _say(text)


def _otlp_exporters() -> tuple[SpanExporter, MetricExporter] | None:
    """OTLP/gRPC when OTEL_EXPORTER_OTLP_PROTOCOL is `grpc`, else OTLP/HTTP (the SDK's
    default); None, after one line saying what to install, when the exporter package is
    missing: the demo still runs, without OTLP. The exporters read the endpoint (and
    headers, timeouts...) from the OTEL_EXPORTER_OTLP_* variables themselves."""
    grpc = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip().lower() == "grpc"
    protocol = "grpc" if grpc else "http"
    module = f"opentelemetry.exporter.otlp.proto.{protocol}"
    try:
        traces = importlib.import_module(f"{module}.trace_exporter")
        metrics = importlib.import_module(f"{module}.metric_exporter")
    except ImportError:
        package = f"opentelemetry-exporter-otlp-proto-{protocol}"
        _say(f"OTLP export needs {package}, which is missing: pip install {package}")
        return None
    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    # Said even with --quiet: where the telemetry goes, like a problem, is not progress.
    _say(f"exporting over OTLP/{'gRPC' if grpc else 'HTTP'} to {endpoint}")
    span_exporter: SpanExporter = traces.OTLPSpanExporter()
    metric_exporter: MetricExporter = metrics.OTLPMetricExporter()
    return span_exporter, metric_exporter


def _exporters(quiet: bool) -> tuple[SpanExporter | None, MetricExporter | None]:
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        otlp = _otlp_exporters()
        if otlp is not None:
            return otlp
    if quiet:
        return None, None
    return ConsoleSpanExporter(), ConsoleMetricExporter()


@contextmanager
def _target(real: bool) -> Iterator[dict[str, Any]]:
    """Client arguments for the real service, or for a local server started here."""
    if real:
        _progress("calling the real OpenAI service (OPENAI_API_KEY is set)")
        yield {}
        return
    _progress("no OPENAI_API_KEY (or --local): starting the bundled local OpenAI-compatible server")
    with LocalOpenAIServer() as server:
        _progress(f"local server listening on {server.base_url}")
        yield {"base_url": server.base_url, "api_key": "sk-local-demo"}


def _calls(
    client: openai.OpenAI, aclient: openai.AsyncOpenAI
) -> list[tuple[str, Callable[[], Any]]]:
    model = "gpt-4o-mini"

    def non_stream() -> Any:
        return client.chat.completions.create(model=model, messages=MESSAGES)

    def stream_plain() -> Any:
        # No stream_options: the instrumentation asks for usage and hides the chunk.
        return "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
            if c.choices
        )

    def stream_with_usage() -> Any:
        stream = client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        return [c for c in stream][-1].usage

    def stream_broken_off() -> Any:
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        with stream:
            for i, _ in enumerate(stream):
                if i == 1:
                    break  # leaving early: the span still ends, marked "closed"

    def stream_without_usage() -> Any:
        # A server that ignores include_usage (the local one, told so by a header;
        # the real service ignores the header): the tokens are estimated, and say so.
        headers = {"x-mock-scenario": "no_usage"}
        stream = client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True, extra_headers=headers
        )
        return [c for c in stream]

    def legacy_completion_stream() -> Any:
        stream = client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test.", stream=True
        )
        return [c for c in stream]

    async def both_async() -> Any:
        response = await aclient.chat.completions.create(model=model, messages=MESSAGES)
        stream = await aclient.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        return response

    return [
        ("sync, not streamed", non_stream),
        ("sync stream, no include_usage", stream_plain),
        ("sync stream, include_usage", stream_with_usage),
        ("sync stream broken off early", stream_broken_off),
        ("sync stream, server sends no usage", stream_without_usage),
        ("legacy completions stream", legacy_completion_stream),
        ("async: not streamed + stream", lambda: asyncio.run(both_async())),
    ]


def _outcome(attributes: Any) -> str:
    """A stream's outcome; for a call that failed before any stream, its error type."""
    if t.STREAM_OUTCOME in attributes:
        return str(attributes[t.STREAM_OUTCOME])
    if t.ERROR_TYPE in attributes:
        return f"error ({attributes[t.ERROR_TYPE]})"
    return "-"


def _run(calls: list[tuple[str, Callable[[], Any]]], real: bool) -> bool:
    """Make the calls in order; False, after saying why in one line, at the first that the
    SDK failed. With OPENAI_API_KEY set, a machine offline or a key the service refuses
    fails the first call: a traceback would hide both the cause and the `--local` way
    out, and the calls after it would each wait out the SDK's retries for the same answer.
    """
    for i, (label, call) in enumerate(calls, 1):
        _progress(f"call {i}/{len(calls)}: {label}")
        try:
            call()
        except openai.APIError as exc:
            _say(f"call {i}/{len(calls)} failed: {type(exc).__name__}: {exc}")
            if real:
                _say(
                    "OPENAI_API_KEY is set, so the demo calls the real OpenAI service; "
                    "`bash examples/demo.sh --local` uses the bundled local server instead"
                )
            return False
    return True


def _table(spans: list[ReadableSpan]) -> str:
    header = ("#", "span", "stream", "outcome", "input", "output", "total", "usage")
    rows = [header]
    for i, span in enumerate(sorted(spans, key=lambda s: s.start_time or 0), 1):
        a = span.attributes or {}
        source = a.get(t.USAGE_SOURCE)
        usage = {"response": "reported", "estimate": "estimated"}.get(str(source), "none")
        if a.get(t.USAGE_LOWER_BOUND):
            usage += " (at least)"
        rows.append(
            (
                str(i),
                span.name,
                "yes" if a.get(t.REQUEST_STREAM) else "no",
                _outcome(a),
                str(a.get(t.USAGE_INPUT, "-")),
                str(a.get(t.USAGE_OUTPUT, "-")),
                str(a.get(t.USAGE_TOTAL, "-")),
                usage,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--local", action="store_true", help="use the local server even with a key")
    parser.add_argument("--quiet", action="store_true", help="print only the token table")
    args = parser.parse_args(argv)
    _Progress.quiet = args.quiet
    real = bool(os.environ.get("OPENAI_API_KEY")) and not args.local

    resource = Resource.create({"service.name": "openai-usage-demo"})
    collected = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(collected))
    span_exporter, metric_exporter = _exporters(args.quiet)
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    readers = []
    if metric_exporter is not None:
        readers.append(PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60000))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with _target(real) as client_args:
            client = openai.OpenAI(**client_args)
            aclient = openai.AsyncOpenAI(**client_args)
            succeeded = _run(_calls(client, aclient), real)
            client.close()
    finally:
        instrumentor.uninstrument()
        _progress("flushing spans and metrics")
        FINISHER.drain(30)  # calls that ended while a token encoding was still loading
        tracer_provider.shutdown()
        meter_provider.shutdown()
    print()
    print("Token usage per call (from the spans):")
    print(_table(list(collected.get_finished_spans())))
    if not real and succeeded:
        print(
            "\n'reported' = the server's usage; 'estimated' = counted by us with tiktoken.\n"
            "The bundled server reports a simple word count, not a tokenizer's, so the two\n"
            "differ here; against the real service estimates match billed usage closely\n"
            "(see 'Estimated usage' in the README)."
        )
    return 0 if succeeded else 1


if __name__ == "__main__":
    raise SystemExit(main())
