"""A bug in our own code never reaches the user.

Each of our hooks is forced to raise `RuntimeError("boom")`, and the call must
return exactly what the uninstrumented call returns (or raise exactly what it
raises), log one warning per failing place however many calls fail there, and
still end the span whenever the span could be started.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult

from opentelemetry.instrumentation import openai_usage
from opentelemetry.instrumentation.openai_usage import (
    OpenAIUsageInstrumentor,
    accumulators,
    errors,
    estimator,
    invocation,
    streams,
    sums,
    tally,
    wrappers,
)
from opentelemetry.instrumentation.openai_usage import telemetry as names
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import (
    MESSAGES,
    MID_STREAM_CONNECTION_ERRORS,
    Telemetry,
    collect,
    make_client,
    metric_points,
)

pytestmark = pytest.mark.timeout(30)

LOGGER = "opentelemetry.instrumentation.openai_usage"
CALLS = 3  # the same hook failing on every call is still reported once

START = "starting a span"
FINISH = "reading a response"
CHUNK = "reading a stream chunk"
SUMMARY = "summarising a stream"
END = "recording the end of a call"
GAP = "recording a chunk gap"
SPAN_END = "ending a span"
ESTIMATE = "estimating usage"
TEXT = "collecting output text"
WATCH = "watching a stream"

MODES = ["sync", "sync_stream", "async", "async_stream"]
STREAM_MODES = ["sync_stream", "async_stream"]
PLAIN_MODES = ["sync", "async"]


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("boom")


# -- stand-ins for a broken tracer, span processor and meter ---------------------------------


class BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    start_as_current_span = start_span


class BrokenTracerProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> BrokenTracer:
        return BrokenTracer()


class BrokenOnEnd(SpanProcessor):
    """A span processor whose `on_end` raises: the SDK's `span.end()` raises with it."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("boom")


class RaisingSampler(Sampler):
    """A user's sampler that raises: the SDK's `start_span` raises with it."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        raise RuntimeError("boom")

    def get_description(self) -> str:
        return "RaisingSampler"


class BrokenOnStart(SpanProcessor):
    """A span processor whose `on_start` raises: the SDK's `start_span` raises with it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        raise RuntimeError("boom")


class BrokenInstrument:
    """A histogram or counter whose every measurement raises."""

    def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")


class BrokenMeter:
    def create_histogram(self, *args: Any, **kwargs: Any) -> BrokenInstrument:
        return BrokenInstrument()

    def create_counter(self, *args: Any, **kwargs: Any) -> BrokenInstrument:
        return BrokenInstrument()

    def create_observable_counter(self, *args: Any, **kwargs: Any) -> BrokenInstrument:
        return BrokenInstrument()


class BrokenMeterProvider:
    def get_meter(self, *args: Any, **kwargs: Any) -> BrokenMeter:
        return BrokenMeter()


# -- the faults ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    sites: tuple[str, ...]  # where the warning says it happened (plain call)
    stream_sites: tuple[str, ...]  # ... and for a stream
    span: bool  # whether our span could be started at all
    modes: tuple[str, ...] = tuple(MODES)


FAULTS = {
    f.name: f
    for f in (
        Fault("request.endpoint_attributes", (START,), (START,), span=False),
        Fault("wrappers.start_call", (START,), (START,), span=False),
        # Past the span's start (only streams ask for usage): the span is ended all the same.
        Fault("wrappers.with_usage_requested", (), (START,), span=True, modes=tuple(STREAM_MODES)),
        # The per-chunk work itself, beyond its own fences.
        Fault("StreamState.see", (), (WATCH,), span=True, modes=tuple(STREAM_MODES)),
        Fault("streams.common_chunk", (), (WATCH,), span=True, modes=tuple(STREAM_MODES)),
        Fault("tracer.start_span", (START,), (START,), span=False),
        Fault("wrappers.finish_result", (FINISH,), (FINISH,), span=True),
        Fault("endpoint.facts", (FINISH,), (), span=True, modes=tuple(PLAIN_MODES)),
        Fault("ChatStreamAccumulator.on_chunk", (), (CHUNK,), span=True, modes=tuple(STREAM_MODES)),
        Fault("ChatStreamAccumulator.facts", (), (SUMMARY,), span=True, modes=tuple(STREAM_MODES)),
        Fault("Invocation._record", (END,), (END,), span=True),
        Fault("Invocation._record_chunks", (), (END,), span=True, modes=tuple(STREAM_MODES)),
        Fault("telemetry.response_attributes", (END,), (END,), span=True),
        Fault("errors.record_error", (), (), span=True, modes=()),  # only on failing calls
        Fault("span.end", (SPAN_END,), (SPAN_END,), span=True),
        # A stream's chunk gaps (per_chunk) are recorded after its other points: not reached.
        Fault("histogram.record", (END,), (END,), span=True),
        # The counters whose sums we keep (`sums`): an add that fails.
        Fault("SummedCounter.add", (END,), (END,), span=True),
        # Estimates ("compare" mode: made for every call that returned something).
        Fault("Estimator.estimate", (ESTIMATE,), (ESTIMATE,), span=True),
        Fault(
            "CompletionTally.add_first_content",
            (),
            (TEXT,),
            span=True,
            modes=tuple(STREAM_MODES),
        ),
    )
}


def arm(fault: str, monkeypatch: pytest.MonkeyPatch, tel: Telemetry) -> dict[str, Any]:
    """Make one hook raise; return the arguments for `instrument()`."""
    kwargs: dict[str, Any] = {
        "tracer_provider": tel.tracer_provider,
        "meter_provider": tel.meter_provider,
    }
    if fault == "request.endpoint_attributes":
        monkeypatch.setattr(wrappers, "endpoint_attributes", boom)
    elif fault == "wrappers.start_call":
        monkeypatch.setattr(wrappers, "start_call", boom)
    elif fault == "wrappers.with_usage_requested":
        monkeypatch.setattr(wrappers, "with_usage_requested", boom)
    elif fault == "StreamState.see":
        monkeypatch.setattr(streams.StreamState, "see", boom)
    elif fault == "streams.common_chunk":
        monkeypatch.setattr(streams, "common_chunk", boom)
    elif fault == "tracer.start_span":
        kwargs["tracer_provider"] = BrokenTracerProvider()
    elif fault == "wrappers.finish_result":
        monkeypatch.setattr(wrappers, "finish_result", boom)
    elif fault == "endpoint.facts":
        broken = tuple(dataclasses.replace(e, facts=boom) for e in openai_usage.ENDPOINTS)
        monkeypatch.setattr(openai_usage, "ENDPOINTS", broken)
    elif fault == "ChatStreamAccumulator.on_chunk":
        monkeypatch.setattr(accumulators.ChatStreamAccumulator, "on_chunk", boom)
    elif fault == "ChatStreamAccumulator.facts":
        monkeypatch.setattr(accumulators.ChatStreamAccumulator, "facts", boom)
    elif fault == "Invocation._record":
        monkeypatch.setattr(invocation.Invocation, "_record", boom)
    elif fault == "Invocation._record_chunks":
        monkeypatch.setattr(invocation.Invocation, "_record_chunks", boom)
    elif fault == "telemetry.response_attributes":
        monkeypatch.setattr(names, "response_attributes", boom)
    elif fault == "errors.record_error":
        monkeypatch.setattr(invocation, "record_error", boom)
    elif fault == "span.end":
        tel.tracer_provider.add_span_processor(BrokenOnEnd())  # after the exporter's
    elif fault == "histogram.record":
        kwargs["meter_provider"] = BrokenMeterProvider()
        kwargs["chunk_timing"] = "per_chunk"
    elif fault == "SummedCounter.add":
        monkeypatch.setattr(sums.SummedCounter, "add", boom)
    elif fault == "Estimator.estimate":
        monkeypatch.setattr(estimator.Estimator, "estimate", boom)
        kwargs["usage_estimate"] = "compare"
    elif fault == "CompletionTally.add_first_content":
        monkeypatch.setattr(tally.CompletionTally, "add_first_content", boom)
    else:
        raise ValueError(fault)
    return kwargs


def cases(modes_of: Any) -> list[Any]:
    out = []
    for fault in FAULTS.values():
        for mode in modes_of(fault):
            out.append(pytest.param(fault.name, mode, id=f"{fault.name}-{mode}"))
    return out


# -- fixtures and calls ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Every test starts with no place reported yet, and captures our warnings."""
    monkeypatch.setattr(errors, "_logged", set())
    caplog.set_level(logging.WARNING, logger=LOGGER)


@pytest.fixture
def instrumentor() -> Iterator[OpenAIUsageInstrumentor]:
    inst = OpenAIUsageInstrumentor()
    yield inst
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()
    collect()


def strip(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data.pop("id", None)
    data.pop("created", None)
    return data


async def run(mode: str, clients: dict[str, Any], **kwargs: Any) -> Any:
    """One call as the user makes it; what the user ends up holding, comparable."""
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    if mode == "sync":
        return strip(clients["sync"].chat.completions.create(**kwargs).to_dict())
    if mode == "async":
        return strip((await clients["async"].chat.completions.create(**kwargs)).to_dict())
    if mode == "sync_stream":
        stream = clients["sync"].chat.completions.create(stream=True, **kwargs)
        assert isinstance(stream, openai.Stream)
        return [strip(c.to_dict()) for c in stream]
    stream = await clients["async"].chat.completions.create(stream=True, **kwargs)
    assert isinstance(stream, openai.AsyncStream)
    return [strip(c.to_dict()) async for c in stream]


async def outcome(mode: str, clients: dict[str, Any], **kwargs: Any) -> Any:
    """What a failing call does to the user: the exception's type, text and status."""
    try:
        result = await run(mode, clients, **kwargs)
    except Exception as exc:
        return ("raised", type(exc), str(exc), getattr(exc, "status_code", None))
    return ("returned", result)


@pytest.fixture
async def clients(server: LocalOpenAIServer) -> Any:
    sync, asynchronous = make_client(server, "openai"), make_client(server, "async")
    yield {"sync": sync, "async": asynchronous}
    sync.close()
    await asynchronous.close()


def reported(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The places named by our 'instrumentation failed' warnings, one entry per warning."""
    places = []
    for record in caplog.records:
        if record.name == LOGGER and record.levelno == logging.WARNING:
            assert "RuntimeError" in record.getMessage()
            assert "boom" in record.getMessage()
            places.append(record.args[0] if isinstance(record.args, tuple) else None)
    return places


def expected_sites(fault: Fault, mode: str) -> list[str]:
    return sorted(fault.stream_sites if mode.endswith("stream") else fault.sites)


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault_name", "mode"), cases(lambda f: f.modes))
async def test_a_failing_hook_leaves_the_call_as_uninstrumented_and_warns_once(
    fault_name: str,
    mode: str,
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault = FAULTS[fault_name]
    expected = await run(mode, clients)
    instrumentor.instrument(**arm(fault_name, monkeypatch, telemetry))

    for _ in range(CALLS):
        assert await run(mode, clients) == expected

    assert sorted(reported(caplog)) == expected_sites(fault, mode)
    spans = telemetry.spans()
    if fault.span:
        assert len(spans) == CALLS  # every span that was started was ended
        assert all(s.end_time is not None for s in spans)
    else:
        assert spans == []


# Where each fault is reported when the call itself fails (before any chunk).
FAILED_CALL_SITES = {
    "tracer.start_span": (START,),
    "Invocation._record": (END,),
    "errors.record_error": (END,),
    "span.end": (SPAN_END,),
    "histogram.record": (END,),
    "SummedCounter.add": (END,),
}
# ... and when a stream breaks after some chunks (the facts so far are recorded).
BROKEN_STREAM_SITES = {
    "ChatStreamAccumulator.facts": (SUMMARY,),
    "Invocation._record": (END,),
    "Invocation._record_chunks": (END,),
    "telemetry.response_attributes": (END,),
    "errors.record_error": (END,),
    "span.end": (SPAN_END,),
    "histogram.record": (END,),
    "SummedCounter.add": (END,),
    "Estimator.estimate": (ESTIMATE,),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault_name", list(FAILED_CALL_SITES))
async def test_a_failing_hook_on_a_failing_call_leaves_the_sdks_error_to_the_user(
    fault_name: str,
    mode: str,
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"x-mock-scenario": "http_error:500"}
    expected = await outcome(mode, clients, extra_headers=headers)
    assert expected[0] == "raised" and expected[1] is openai.InternalServerError
    instrumentor.instrument(**arm(fault_name, monkeypatch, telemetry))

    for _ in range(CALLS):
        assert await outcome(mode, clients, extra_headers=headers) == expected

    assert sorted(reported(caplog)) == sorted(FAILED_CALL_SITES[fault_name])
    if fault_name != "tracer.start_span":
        assert len(telemetry.spans()) == CALLS


@pytest.mark.parametrize("mode", STREAM_MODES)
@pytest.mark.parametrize("fault_name", list(BROKEN_STREAM_SITES))
async def test_a_failing_hook_on_a_broken_stream_leaves_the_sdks_error_to_the_user(
    fault_name: str,
    mode: str,
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"x-mock-scenario": "cut_after:3"}
    expected = await outcome(mode, clients, extra_headers=headers)
    assert expected[0] == "raised" and issubclass(expected[1], MID_STREAM_CONNECTION_ERRORS)
    instrumentor.instrument(**arm(fault_name, monkeypatch, telemetry))

    for _ in range(CALLS):
        assert await outcome(mode, clients, extra_headers=headers) == expected

    assert sorted(reported(caplog)) == sorted(BROKEN_STREAM_SITES[fault_name])
    assert len(telemetry.spans()) == CALLS


async def test_a_failing_accumulator_still_ends_the_stream_span_when_the_user_closes_it(
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrumentor.instrument(**arm("ChatStreamAccumulator.facts", monkeypatch, telemetry))
    stream = clients["sync"].chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-mock-chunks": "50"}
    )
    first = next(stream)
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    span = telemetry.span()
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "closed"
    assert reported(caplog) == [SUMMARY]


async def test_a_failing_chunk_gap_recorder_still_records_usage_and_warns_once(
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The per-chunk gaps, recorded at the stream's end, failing.
    headers = {"x-mock-chunks": "10"}
    expected = await run("sync_stream", clients, extra_headers=headers)
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        chunk_timing="per_chunk",
    )
    runtime = instrumentor._runtime
    assert runtime is not None
    monkeypatch.setattr(runtime.instruments, "time_per_output_chunk", BrokenInstrument())

    for _ in range(CALLS):
        assert await run("sync_stream", clients, extra_headers=headers) == expected
        assert await run("async_stream", clients, extra_headers=headers) == expected

    assert reported(caplog) == [GAP]
    spans = telemetry.spans()
    assert len(spans) == 2 * CALLS
    assert all((s.attributes or {})["gen_ai.usage.input_tokens"] > 0 for s in spans)
    assert sum(p.count for p in telemetry.points("gen_ai.client.token.usage")) == 4 * CALLS


@pytest.mark.parametrize("fault_name", ["wrappers.finish_result", "ChatStreamAccumulator.on_chunk"])
async def test_without_injection_a_failing_stream_hook_leaves_the_chunks_unchanged(
    fault_name: str,
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The control for the test below: without injection there is nothing to hide.
    expected = await run("sync_stream", clients)
    kwargs = arm(fault_name, monkeypatch, telemetry)
    instrumentor.instrument(**kwargs, inject_stream_usage=False)
    assert await run("sync_stream", clients) == expected
    assert await run("async_stream", clients) == expected
    assert len(telemetry.spans()) == 2


@pytest.mark.parametrize("fault_name", ["wrappers.finish_result", "ChatStreamAccumulator.on_chunk"])
async def test_a_failing_stream_hook_never_hands_the_user_a_choiceless_usage_chunk(
    fault_name: str,
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instrumentor.instrument(**arm(fault_name, monkeypatch, telemetry))
    stream = clients["sync"].chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = list(stream)
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


class UncreatableMeter:
    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")


class UncreatableMeterProvider:
    def get_meter(self, *args: Any, **kwargs: Any) -> UncreatableMeter:
        return UncreatableMeter()


async def test_a_meter_provider_that_cannot_create_histograms_still_gets_traces(
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = await run("sync_stream", clients)
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=UncreatableMeterProvider()
    )
    assert await run("sync_stream", clients) == expected
    assert await run("async", clients)
    spans = telemetry.spans()
    assert len(spans) == 2
    assert all((s.attributes or {})["gen_ai.usage.input_tokens"] > 0 for s in spans)
    assert reported(caplog) == ["creating the metric instruments"]


@pytest.mark.parametrize("pipeline", ["sampler", "on_start"])
async def test_a_tracer_pipeline_failing_at_span_start_still_gets_the_calls_exact_metrics(
    pipeline: str,
    clients: dict[str, Any],
    instrumentor: OpenAIUsageInstrumentor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The call goes on as without us (the usage chunk still hidden), with no span to
    # export, but its duration and billed usage are still counted.
    expected = {mode: await run(mode, clients) for mode in MODES}
    billed = expected["sync"]["usage"]
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=RaisingSampler() if pipeline == "sampler" else None)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    if pipeline == "on_start":
        tracer_provider.add_span_processor(BrokenOnStart())
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    for mode in MODES:
        assert await run(mode, clients) == expected[mode]

    assert reported(caplog) == [START]
    assert list(exporter.get_finished_spans()) == []
    data = reader.get_metrics_data()
    tokens = {
        (p.attributes["gen_ai.token.type"], p.attributes["openai_usage.usage.source"]): (
            p.count,
            p.sum,
        )
        for p in metric_points(data, "gen_ai.client.token.usage")
    }
    calls = len(MODES)
    assert tokens == {
        ("input", "response"): (calls, calls * billed["prompt_tokens"]),
        ("output", "response"): (calls, calls * billed["completion_tokens"]),
    }
    durations = metric_points(data, "gen_ai.client.operation.duration")
    assert [p.count for p in durations] == [calls]
    tracer_provider.shutdown()
    meter_provider.shutdown()
