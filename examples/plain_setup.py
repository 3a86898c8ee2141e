"""Plain-code setup: providers, exporters and the instrumentor, then ordinary OpenAI calls.

    python examples/plain_setup.py

Spans and metrics go to the console, or over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is
set (needs `pip install opentelemetry-exporter-otlp`). With OPENAI_API_KEY set it calls the
real service (OPENAI_BASE_URL is honoured, as the SDK does); without, the bundled local
OpenAI-compatible server.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer


def exporters() -> tuple[SpanExporter, MetricExporter]:
    """OTLP/HTTP when an endpoint is configured, else the console."""
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(), OTLPMetricExporter()
    return ConsoleSpanExporter(), ConsoleMetricExporter()


def main() -> None:
    # 1. Providers, once, at start-up (here: the global ones).
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "my-llm-app")})
    span_exporter, metric_exporter = exporters()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    # 2. The instrumentor, before the calls you want traced. Every setting is optional.
    OpenAIUsageInstrumentor().instrument(usage_estimate="fallback")

    with ExitStack() as stack:
        client_args: dict[str, Any] = {}
        if not os.environ.get("OPENAI_API_KEY"):
            server = stack.enter_context(LocalOpenAIServer())
            client_args = {"base_url": server.base_url, "api_key": "sk-local-example"}
        client = openai.OpenAI(**client_args)

        # 3. Ordinary SDK calls, under a span of your own if you like.
        tracer = trace.get_tracer("my-llm-app")
        with tracer.start_as_current_span("answer a question"):
            messages = [{"role": "user", "content": "What's 1+1? Answer in one word."}]
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            print("reply:", reply.choices[0].message.content, flush=True)
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            print("streamed:", text, flush=True)

    # 4. Flush before exit (the SDK also does it at exit).
    tracer_provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main()
