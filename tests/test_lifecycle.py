"""Instrumenting and uninstrumenting, settings, secrets, context and process exit."""

from __future__ import annotations

import atexit
import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import openai
import pytest
import wrapt
from openai.resources.chat.completions import AsyncCompletions, Completions
from openai.types.chat import ChatCompletion
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan

from opentelemetry import trace
from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.estimator import ENCODING_WAIT_S, FINISHER
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer
from opentelemetry.instrumentation.openai_usage.open_calls import end_open_streams

from .conftest import API_KEY, AZURE_KEY, HTTP, MESSAGES, Telemetry, make_client

pytestmark = pytest.mark.timeout(30)

USAGE_HEADERS = {"x-mock-usage": json.dumps({"prompt_tokens": 13, "completion_tokens": 4})}
PER_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
OUTCOME = "openai_usage.stream.outcome"
ENV_TIMING = "OTEL_INSTRUMENTATION_OPENAI_USAGE_CHUNK_TIMING"
ENV_INJECT = "OTEL_INSTRUMENTATION_OPENAI_USAGE_INJECT_STREAM_USAGE"
PACKAGE_LOGGER = "opentelemetry.instrumentation.openai_usage"
OTHER_SECRET = "sk-other-SECRET-value"
# What wrapt puts in place of a patched method (wrapt 2 no longer derives them from ObjectProxy).
WRAPT_WRAPPERS = (wrapt.FunctionWrapper, wrapt.BoundFunctionWrapper)


# -- helpers ---------------------------------------------------------------------------------


def chat(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("extra_headers", USAGE_HEADERS)
    return client.chat.completions.create(**kwargs)


async def achat(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("extra_headers", USAGE_HEADERS)
    return await client.chat.completions.create(**kwargs)


def strip(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data.pop("id", None)
    data.pop("created", None)
    return data


def comparable(chunks: list[Any]) -> list[dict[str, Any]]:
    return [strip(chunk.to_dict()) for chunk in chunks]


def chat_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [s for s in telemetry.spans() if s.name.startswith("chat")]


def span_text(span: ReadableSpan) -> str:
    parts = [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    for link in span.links:
        parts.append(repr(dict(link.attributes or {})))
    parts.append(repr(dict(span.resource.attributes)))
    return "\n".join(parts)


def all_metric_attributes(telemetry: Telemetry) -> list[dict[str, Any]]:
    data = telemetry.reader.get_metrics_data()
    found = []
    for resource_metrics in data.resource_metrics if data else []:
        found.append(dict(resource_metrics.resource.attributes))
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found.extend(dict(p.attributes or {}) for p in metric.data.data_points)
    return found


def our_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith(PACKAGE_LOGGER) and r.levelno >= logging.WARNING
    ]


# -- uninstrument ----------------------------------------------------------------------------


def test_uninstrument_restores_the_sdk_methods_and_no_client_produces_spans_afterwards(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    original = Completions.__dict__["create"]
    original_async = AsyncCompletions.__dict__["create"]
    created_before = make_client(server, "openai")
    instrumentor = instrument()
    assert isinstance(Completions.__dict__["create"], WRAPT_WRAPPERS)
    assert isinstance(AsyncCompletions.__dict__["create"], WRAPT_WRAPPERS)
    created_during = make_client(server, "openai")
    raw = created_during.chat.completions.with_raw_response  # binds `create` now
    chat(created_during)
    assert len(telemetry.spans()) == 1

    instrumentor.uninstrument()
    assert Completions.__dict__["create"] is original
    assert AsyncCompletions.__dict__["create"] is original_async
    assert not isinstance(Completions.create, WRAPT_WRAPPERS)

    chat(created_before)
    chat(created_during)
    list(chat(created_during, stream=True))
    assert "stream_options" not in server.requests[-1].body  # nothing injected any more
    assert raw.create(model="gpt-4o-mini", messages=MESSAGES).parse().choices
    list(raw.create(model="gpt-4o-mini", messages=MESSAGES, stream=True).parse())
    assert len(telemetry.spans()) == 1  # only the one from before uninstrument()
    created_before.close()
    created_during.close()


async def test_async_uninstrument_stops_spans_also_for_a_raw_response_bound_earlier(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = make_client(server, "async")
    instrumentor = instrument()
    raw = client.chat.completions.with_raw_response
    await achat(client)
    instrumentor.uninstrument()
    await achat(client)
    stream = await achat(client, stream=True)
    assert [c async for c in stream]
    assert (await raw.create(model="gpt-4o-mini", messages=MESSAGES)).parse().choices
    assert len(telemetry.spans()) == 1
    await client.close()


def test_a_raw_response_helper_bound_while_instrumented_traces_again_after_reinstrumenting(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The SDK caches `with_raw_response` per client, with the `create` it found then:
    # our first wrapper. Instrumenting again must bring that one back too, once.
    instrumentor = instrument()
    raw = client.chat.completions.with_raw_response
    assert raw.create(model="gpt-4o-mini", messages=MESSAGES).parse().choices
    instrumentor.uninstrument()
    assert raw.create(model="gpt-4o-mini", messages=MESSAGES).parse().choices
    assert len(telemetry.spans()) == 1
    instrument(usage_estimate="off")
    assert raw.create(model="gpt-4o-mini", messages=MESSAGES).parse().choices
    chat(client)
    assert len(telemetry.spans()) == 3  # one per call, not two for the cached helper's
    assert client.chat.completions.with_raw_response is raw


def test_uninstrument_while_a_stream_is_in_flight_lets_it_finish_and_end_its_span(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    expected = comparable(list(chat(client, stream=True)))
    instrumentor = instrument()
    stream = chat(client, stream=True)
    first = next(stream)
    instrumentor.uninstrument()
    rest = list(stream)

    assert comparable([first, *rest]) == expected  # still no injected usage chunk
    span = telemetry.span()
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["gen_ai.usage.input_tokens"] == 13
    assert attributes["gen_ai.usage.output_tokens"] == 4


async def test_async_uninstrument_while_a_stream_is_in_flight_lets_it_finish(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    expected = comparable([c async for c in await achat(aclient, stream=True)])
    instrumentor = instrument()
    stream = await achat(aclient, stream=True)
    first = await stream.__anext__()
    instrumentor.uninstrument()
    rest = [c async for c in stream]

    assert comparable([first, *rest]) == expected
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["gen_ai.usage.input_tokens"] == 13


async def test_instrument_uninstrument_a_hundred_times_stacks_no_wrappers(
    telemetry: Telemetry, client: openai.OpenAI, aclient: openai.AsyncOpenAI
) -> None:
    original = Completions.__dict__["create"]
    original_async = AsyncCompletions.__dict__["create"]
    providers = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
    }
    instrumentor = OpenAIUsageInstrumentor()
    try:
        for _ in range(100):
            instrumentor.instrument(**providers)
            instrumentor.uninstrument()
        assert Completions.__dict__["create"] is original
        instrumentor.instrument(**providers)
        instrumentor.instrument(**providers)  # a second call is refused, not stacked

        wrapper = Completions.__dict__["create"]
        assert wrapper.__wrapped__ is original
        assert not isinstance(wrapper.__wrapped__, WRAPT_WRAPPERS)
        assert AsyncCompletions.__dict__["create"].__wrapped__ is original_async
        chat(client)
        list(chat(client, stream=True))
        await achat(aclient)
        assert len(telemetry.spans()) == 3
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    assert Completions.__dict__["create"] is original


# -- with_raw_response -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_with_raw_response_keeps_working_instrumented(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, stream: bool
) -> None:
    def call(client: openai.OpenAI) -> tuple[Any, Any]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=stream, extra_headers=USAGE_HEADERS
        )
        parsed = raw.parse()
        if stream:
            assert isinstance(parsed, openai.Stream)
            return raw, comparable(list(parsed))
        return raw, strip(parsed.to_dict())

    plain_raw, plain = call(make_client(server, "openai"))
    instrument()
    # A new client: `with_raw_response` binds `create` when first used on a resource.
    traced_raw, traced = call(make_client(server, "openai"))

    assert traced == plain
    assert traced_raw.status_code == plain_raw.status_code == 200
    assert traced_raw.headers["content-type"] == plain_raw.headers["content-type"]
    assert traced_raw.headers["openai-version"] == plain_raw.headers["openai-version"]
    assert traced_raw.headers["x-request-id"].startswith("req_")
    (span,) = telemetry.spans()
    if not stream:  # the body was read: its usage is on the span
        assert (span.attributes or {})["openai_usage.usage.source"] == "response"


async def test_async_with_raw_response_keeps_working_instrumented(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    before = make_client(server, "async")
    raw = await before.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    plain = strip(raw.parse().to_dict())
    instrument()
    after = make_client(server, "async")
    raw = await after.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert raw.headers["content-type"] == "application/json"
    assert strip(raw.parse().to_dict()) == plain
    (span,) = telemetry.spans()
    assert (span.attributes or {})["gen_ai.usage.input_tokens"] == raw.parse().usage.prompt_tokens
    await before.close()
    await after.close()


# -- settings --------------------------------------------------------------------------------


def test_bad_chunk_timing_env_warns_once_naming_the_variable_and_uses_per_stream(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(ENV_TIMING, "maybe")
    caplog.set_level(logging.WARNING)
    instrument()
    (warning,) = our_warnings(caplog)
    message = warning.getMessage()
    assert ENV_TIMING in message and "maybe" in message
    for accepted in ("per_stream", "per_chunk", "off"):
        assert accepted in message

    list(chat(client, stream=True, extra_headers={"x-mock-chunks": "10"}))
    (gap,) = telemetry.points(PER_CHUNK)
    assert gap.count == 1  # the default: one point per stream
    assert len(our_warnings(caplog)) == 1


def test_bad_inject_env_warns_once_naming_the_variable_and_injects_by_default(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(ENV_INJECT, "maybe")
    caplog.set_level(logging.WARNING)
    instrument()
    (warning,) = our_warnings(caplog)
    message = warning.getMessage()
    assert ENV_INJECT in message and "maybe" in message
    for accepted in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        assert accepted in message

    list(chat(client, stream=True))
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.stream.include_usage_injected"] is True
    assert attributes["gen_ai.usage.input_tokens"] == 13
    assert len(our_warnings(caplog)) == 1


def test_chunk_timing_off_records_no_time_per_output_chunk(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(chunk_timing="off")
    list(chat(client, stream=True, extra_headers={"x-mock-chunks": "10"}))
    assert telemetry.points(PER_CHUNK) == []
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "completed"


def test_constructor_chunk_timing_wins_over_the_environment(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(ENV_TIMING, "off")
    caplog.set_level(logging.WARNING)
    instrument(chunk_timing="per_chunk")
    chunks = list(chat(client, stream=True, extra_headers={"x-mock-chunks": "10"}))
    (gap,) = telemetry.points(PER_CHUNK)
    assert gap.count == len(chunks) - 1  # one per chunk after the first (none for ours)
    assert our_warnings(caplog) == []


@pytest.mark.parametrize(("env", "given"), [("false", True), ("true", False)])
def test_constructor_inject_stream_usage_wins_over_the_environment(
    instrument: Any,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    given: bool,
) -> None:
    monkeypatch.setenv(ENV_INJECT, env)
    instrument(inject_stream_usage=given)
    list(chat(client, stream=True))
    assert ("stream_options" in server.requests[-1].body) is given


@pytest.mark.parametrize(
    ("given", "injected"), [("false", False), (" OFF ", False), (0, False), ("yes", True)]
)
def test_constructor_inject_stream_usage_takes_the_words_its_variable_takes(
    instrument: Any,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    caplog: pytest.LogCaptureFixture,
    given: Any,
    injected: bool,
) -> None:
    instrument(inject_stream_usage=given)
    list(chat(client, stream=True))
    assert ("stream_options" in server.requests[-1].body) is injected
    assert our_warnings(caplog) == []


# -- secrets and content ---------------------------------------------------------------------


def test_no_key_token_or_message_text_reaches_spans_metrics_or_logs(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger
    openai_client = make_client(server, "openai")
    azure_client = make_client(server, "azure")
    instrument()

    chat(openai_client)
    list(chat(openai_client, stream=True))
    with pytest.raises(openai.AuthenticationError):
        chat(openai_client, extra_headers={"x-mock-scenario": "http_error:401"})
    with pytest.raises(openai.AuthenticationError):
        list(chat(azure_client, stream=True, extra_headers={"x-mock-scenario": "http_error:401"}))
    chat(azure_client)
    list(chat(azure_client, stream=True))
    assert server.requests[-1].headers["api-key"] == AZURE_KEY
    chat(openai_client, extra_headers={"Authorization": f"Bearer {OTHER_SECRET}"})
    assert server.requests[-1].headers["authorization"] == f"Bearer {OTHER_SECRET}"
    openai_client.close()
    azure_client.close()

    spans = telemetry.spans()
    assert len(spans) == 7
    texts = [span_text(s) for s in spans]
    metric_text = repr(all_metric_attributes(telemetry))
    # The SDK's and its HTTP library's own debug logs exist without us (and old
    # openai releases print the Azure `api-key` header there): not ours to judge.
    sdk_loggers = ("openai", "httpx", "httpx2", "httpcore")
    ours = [r for r in caplog.records if r.name.split(".")[0] not in sdk_loggers]
    log_text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in ours)
    assert caplog.records  # the capture did see the SDK's debug logging
    for secret in (API_KEY, AZURE_KEY, OTHER_SECRET):
        for text in texts:
            assert secret not in text
        assert secret not in metric_text
        assert secret not in log_text
    content = MESSAGES[0]["content"]
    assert "What's 1+1?" in content
    for text in texts:
        assert "What's 1+1?" not in text
        assert "Answer in one word" not in text
    assert "What's 1+1?" not in metric_text


# -- context ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_the_chat_span_is_current_while_the_sdk_sends_the_request(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, stream: bool
) -> None:
    seen: list[Any] = []
    http_client = HTTP.Client(
        event_hooks={"request": [lambda request: seen.append(trace.get_current_span())]}
    )
    client = make_client(server, "openai", http_client=http_client)
    instrument()
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        result = chat(client, stream=stream)
        assert trace.get_current_span() is caller  # back to the caller's once it returns
        if stream:
            for _ in result:
                assert trace.get_current_span() is caller  # and between reads
        assert trace.get_current_span() is caller
    client.close()

    (span,) = chat_spans(telemetry)
    (at_request,) = seen
    assert at_request.get_span_context().span_id == span.context.span_id
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id


async def test_async_the_chat_span_is_current_while_the_sdk_sends_the_request(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    seen: list[Any] = []

    async def hook(request: HTTP.Request) -> None:
        seen.append(trace.get_current_span())

    client = make_client(
        server, "async", http_client=HTTP.AsyncClient(event_hooks={"request": [hook]})
    )
    instrument()
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        stream = await achat(client, stream=True)
        assert trace.get_current_span() is caller
        async for _ in stream:
            assert trace.get_current_span() is caller
    await client.close()

    (span,) = chat_spans(telemetry)
    (at_request,) = seen
    assert at_request.get_span_context().span_id == span.context.span_id


def test_the_callers_span_is_current_again_after_a_failed_call(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument()
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        with pytest.raises(openai.InternalServerError):
            chat(client, extra_headers={"x-mock-scenario": "http_error:500"})
        assert trace.get_current_span() is caller
    assert trace.get_current_span() is not caller


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_call_under_suppress_instrumentation_is_the_sdks_own_untraced_and_unchanged(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, stream: bool
) -> None:
    # `suppress_instrumentation()` is how OpenTelemetry code (an exporter, another
    # instrumentation's own calls) asks every instrumentation to stay out: as httpx's and
    # requests' do, the call must make no span, no metric point, and go out as written.
    client = make_client(server, "openai")
    instrument()
    server.clear()
    with suppress_instrumentation():
        result = chat(client, stream=stream)
        chunks = list(result) if stream else []
    client.close()

    assert type(result) is (openai.Stream if stream else ChatCompletion)
    assert [r.body.get("stream_options") for r in server.requests] == [None]
    if stream:
        assert [c.usage for c in chunks if not c.choices] == []  # no usage chunk: none asked
    assert telemetry.spans() == []
    assert telemetry.reader.get_metrics_data() is None


async def test_async_a_call_under_suppress_instrumentation_is_the_sdks_own_untraced(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = make_client(server, "async")
    instrument()
    server.clear()
    with suppress_instrumentation():
        stream = await achat(client, stream=True)
        async for _ in stream:
            pass
    traced = await achat(client)  # outside the block: traced again
    await client.close()

    assert type(stream) is openai.AsyncStream
    assert [r.body.get("stream_options") for r in server.requests] == [None, None]
    assert [s.name for s in telemetry.spans()] == ["chat gpt-4o-mini"]
    assert traced.usage is not None
    assert telemetry.span().attributes["gen_ai.usage.input_tokens"] == traced.usage.prompt_tokens


# -- process exit ----------------------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent(
    """
    import openai
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
    from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

    import sys

    if sys.argv[1:] == ["instrument"]:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        OpenAIUsageInstrumentor().instrument(tracer_provider=provider)
    server = LocalOpenAIServer().start()
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-exit", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-mock-chunks": "1000"},
    )
    next(stream)
    print("READ ONE CHUNK", flush=True)
    """
)


def test_process_exits_promptly_with_an_open_unread_stream_and_reports_it_abandoned() -> None:
    # Without us, as the baseline: on Python 3.13.0 the SDK's own stream cleanup
    # during interpreter finalization can crash; we must not change the outcome.
    plain = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=30
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, "instrument"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == plain.returncode, done.stderr
    if sys.version_info < (3, 13):
        assert done.returncode == 0, done.stderr
    assert elapsed < 30
    stdout = done.stdout
    assert "READ ONE CHUNK" in stdout
    assert '"openai_usage.stream.outcome": "abandoned"' in stdout
    # Ended in place at exit, with the estimate of what was read (the encoding may still
    # have been loading: it is waited for then, briefly, since nobody's call is held up).
    assert '"openai_usage.usage.source": "estimate"' in stdout
    assert stdout.count('"name": "chat gpt-4o-mini"') == 1


LATE_PROVIDER_SCRIPT = textwrap.dedent(
    """
    import sys
    import weakref

    import openai
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
    from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

    class Early:
        pass

    early = Early()  # a finalizer made before the provider, as many libraries make one
    weakref.finalize(early, lambda: None)
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument()  # before the application makes its provider
    server = LocalOpenAIServer().start()
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-exit", max_retries=0)
    request = dict(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-mock-chunks": "1000"},
    )
    if sys.argv[1] == "early":  # one already open when the provider is set (no span of it)
        before = client.chat.completions.create(**request)
        next(before)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    if sys.argv[1] == "given":  # given to `instrument()` again, not set as the global one
        instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)
    else:
        trace.set_tracer_provider(provider)
    if sys.argv[1] == "raw":  # a raw streamed response, never parsed
        held = client.chat.completions.with_raw_response.create(**request)
    else:
        held = client.chat.completions.create(**request)
        next(held)
    print("OPEN AT EXIT", flush=True)
    """
)


@pytest.mark.parametrize("kind", ["stream", "raw", "early", "given"])
def test_an_open_stream_at_exit_is_reported_when_the_provider_was_set_after_instrument(
    kind: str,
) -> None:
    # The provider's exit hook is registered after ours then; ours must still run first.
    done = subprocess.run(
        [sys.executable, "-c", LATE_PROVIDER_SCRIPT, kind],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # CPython 3.13.0 itself crashes in its exit-time collection, closing the SDK's
    # generator of a stream left open: a script of the SDK alone, with no OpenTelemetry
    # imported, does the same. By then the span is out, which is what is checked here.
    sdk_crash = sys.version_info[:3] == (3, 13, 0) and done.returncode == -signal.SIGSEGV
    assert done.returncode == 0 or sdk_crash, done.stderr
    assert "OPEN AT EXIT" in done.stdout
    assert done.stdout.count('"name": "chat gpt-4o-mini"') == 1, done.stderr
    assert '"openai_usage.stream.outcome": "abandoned"' in done.stdout
    assert "already shutdown" not in done.stderr


@pytest.mark.skipif(not hasattr(atexit, "_ncallbacks"), reason="CPython's atexit table")
def test_streams_one_after_another_leave_no_trace_in_the_exit_hooks(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # atexit never frees an unregistered slot: re-registering our exit hook per stream grew
    # its table for good (and each stream's re-registration scanned it, 60 µs per stream
    # after 100,000 of them). Only a change of providers re-registers it now.
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    slots = atexit._ncallbacks()  # type: ignore[attr-defined]
    for _ in range(20):
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        list(stream)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    list(raw.parse())
    assert atexit._ncallbacks() == slots  # type: ignore[attr-defined]
    assert len(telemetry.spans()) == 22


def test_streams_open_at_exit_all_end_while_another_thread_ends_one_meanwhile(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """Daemon threads run on while the exit hooks do: one may end (or open) a stream just as
    `end_open_streams` takes the list of open ones. Taken by walking the set, that list
    failed ("Set changed size during iteration") and no open stream was ended at all. Here
    the other thread ends its stream at the worst moment: while that walk would be half
    way (a trace hook in this thread stops it there until the other is done)."""
    kept = [chat(client, stream=True) for _ in range(3)]
    kept_ids = [next(stream).id for stream in kept]
    other = chat(client, stream=True)
    next(other)
    walking, closed = threading.Event(), threading.Event()

    def close_other() -> None:
        walking.wait(10)
        other.close()  # another thread's stream ends: it leaves the set of open ones
        closed.set()

    def stop_half_way(frame: Any, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.endswith("_weakrefset.py"):
            return None
        if event == "line" and "itemref" in frame.f_locals and not walking.is_set():
            walking.set()  # the walk has begun: let the other thread end its stream now
            closed.wait(10)
        return stop_half_way

    closer = threading.Thread(target=close_other)
    closer.start()
    previous_trace = sys.gettrace()
    sys.settrace(stop_half_way)
    try:
        end_open_streams()
    finally:
        sys.settrace(previous_trace)
        FINISHER.exiting = False  # `end_open_streams` is for exit: the tests go on
        walking.set()  # no walk stopped (the list was taken at once): the other ends now
        closer.join(10)
    spans = {(span.attributes or {})["gen_ai.response.id"]: span for span in telemetry.spans()}
    assert len(spans) == 4
    # Every stream still open is ended, the other one either way (closed, or taken first).
    assert [(spans[i].attributes or {})[OUTCOME] for i in kept_ids] == ["abandoned"] * 3


@pytest.mark.skipif(not hasattr(atexit, "_ncallbacks"), reason="CPython's atexit table")
def test_instrumenting_again_with_the_same_providers_leaves_no_trace_in_the_exit_hooks(
    telemetry: Telemetry,
) -> None:
    # A long process toggling instrumentation (a test suite, a feature flag) re-registered
    # our exit hook at every `instrument()`: one atexit slot more each time, for good.
    instrumentor = OpenAIUsageInstrumentor()
    providers = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
    }
    instrumentor.instrument(**providers)
    instrumentor.uninstrument()
    slots = atexit._ncallbacks()  # type: ignore[attr-defined]
    for _ in range(20):
        instrumentor.instrument(**providers)
        instrumentor.uninstrument()
    assert atexit._ncallbacks() == slots  # type: ignore[attr-defined]


def test_a_call_end_handed_over_by_a_background_job_runs_before_drain_returns() -> None:
    """A collected stream is ended by a job on the finisher thread; if its estimate must
    wait for an encoding, that end is run there and then, not queued behind `drain()`'s
    marker, so at exit (`end_open_streams` drains, then the process ends) it is not lost."""
    ran: list[Any] = []

    def call_end(wait_s: float) -> None:
        ran.append(("call end", wait_s))

    def collected_stream(_wait_s: float) -> None:
        FINISHER.submit(call_end)  # as Invocation.end does while an encoding loads
        ran.append("collected stream")

    FINISHER.collecting = True  # as inside a garbage collection
    try:
        FINISHER.submit_from_finalizer(collected_stream)
    finally:
        FINISHER.collecting = False
    assert FINISHER.drain(10)
    assert ran == [("call end", ENCODING_WAIT_S), "collected stream"]


LAZY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import openai
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
    from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer
    from opentelemetry.instrumentation.openai_usage.patches import ENDPOINTS, HELPER_CLOSES

    modules = {target.module for target in (*ENDPOINTS, *HELPER_CLOSES)}
    before = set(sys.modules)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    OpenAIUsageInstrumentor().instrument(tracer_provider=provider)
    print(json.dumps(sorted(m for m in modules if m in sys.modules and m not in before)))
    with LocalOpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        client.embeddings.create(model="text-embedding-3-small", input="hi")
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    print(json.dumps([span.name for span in exporter.get_finished_spans()]))
    """
)


def _in_a_fresh_process(script: str) -> tuple[list[str], list[str]]:
    """What a script printed (the SDK modules instrument() imported, then the spans)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    imported, spans = (json.loads(line) for line in done.stdout.splitlines())
    return imported, spans


def test_instrument_leaves_sdk_modules_unimported_and_patches_each_on_first_import() -> None:
    # A fresh process, as under `opentelemetry-instrument`: the SDK imports an API's module
    # when the client's attribute for it is first used. Importing them all at instrument()
    # cost every process's start (openai 3.x's beta.responses alone: ~500 modules).
    imported, spans = _in_a_fresh_process(LAZY_SCRIPT)
    assert imported == []
    assert spans == ["embeddings text-embedding-3-small", "text_completion gpt-3.5-turbo-instruct"]


UNIMPORTED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    OpenAIUsageInstrumentor().instrument(tracer_provider=provider)
    print(json.dumps(sorted(m for m in sys.modules if m == "openai" or m.startswith("openai."))))
    import openai
    from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer
    with LocalOpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    print(json.dumps([span.name for span in exporter.get_finished_spans()]))
    """
)


def test_instrument_before_the_app_imports_openai_imports_no_sdk_module() -> None:
    # As under `opentelemetry-instrument`, which instruments before the application's
    # imports: the look for another instrumentation's wrapper imported `openai` and its chat
    # resource (0.5 s of CPU on openai 3.x), also in a process that never uses the SDK.
    imported, spans = _in_a_fresh_process(UNIMPORTED_SCRIPT)
    assert imported == []
    assert spans == ["chat gpt-4o-mini"]


def test_the_exit_hook_lets_the_encoding_being_loaded_finish_and_starts_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that exits within a second of `instrument()` finalized while our loading
    thread was inside tiktoken's native code, which tiktoken 0.7 answers with an abort
    ("FATAL: exception not rethrown", exit code -6) as that thread takes the GIL back. The
    exit hook now lets the encoding being loaded finish, and starts no other."""
    from opentelemetry.instrumentation.openai_usage import encodings

    loading, release = threading.Event(), threading.Event()
    loaded: list[str] = []

    def slow_load(name: str, allow_download: bool = False) -> None:
        loaded.append(name)
        loading.set()
        release.wait(10)

    monkeypatch.setattr(encodings, "load_offline", slow_load)
    loader = encodings.EncodingLoader()
    loader.start(("first", "second"))
    assert loading.wait(10)
    threading.Timer(0.2, release.set).start()
    started = time.perf_counter()
    encodings.finish_loading_for_exit(10)
    assert release.is_set() and time.perf_counter() - started < 5
    assert loader._thread is None or not loader._thread.is_alive()
    assert loaded == ["first"]  # the second was never started
    assert not loader.pending("second")  # forgotten, not left waited for
