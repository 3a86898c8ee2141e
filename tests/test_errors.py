"""Failed calls: the user gets the SDK's own exception, the span ends once, in ERROR.

Every scenario runs through the real SDK against the local server. Where the
exact exception matters, the instrumented run is compared with an
uninstrumented run of the same request, so the tests pin "as without us"
rather than a guess of what the SDK raises.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import uuid
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from opentelemetry import trace
from opentelemetry.instrumentation.openai_usage import invocation as invocation_module
from opentelemetry.instrumentation.openai_usage.accumulators import error_body
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import (
    API_KEY,
    AZURE_KEY,
    HTTP,
    MESSAGES,
    MID_STREAM_CONNECTION_ERRORS,
    Telemetry,
    collect,
    comparable,
    is_azure,
    make_client,
    served_by,
)

pytestmark = pytest.mark.timeout(30)

DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"

STATUS_ERRORS = [
    (400, openai.BadRequestError),
    (401, openai.AuthenticationError),
    (404, openai.NotFoundError),
    (429, openai.RateLimitError),
    (500, openai.InternalServerError),
]
STATUS_IDS = [str(status) for status, _ in STATUS_ERRORS]


# -- helpers ---------------------------------------------------------------------------------


def chat(client: Any, *, stream: bool = False, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    return client.chat.completions.create(stream=stream, **kwargs)


async def achat(client: Any, *, stream: bool = False, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    return await client.chat.completions.create(stream=stream, **kwargs)


def scenario(name: str, **more: str) -> dict[str, str]:
    return {"x-mock-scenario": name, **more}


def raised_by(call: Any) -> BaseException:
    """Run `call()` and return what it raised (failing the test when it raised nothing)."""
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


async def araised_by(call: Any) -> BaseException:
    try:
        await call()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


def read_stream(client: Any, headers: dict[str, str]) -> tuple[list[Any], BaseException | None]:
    """Open a stream and read it to its end or its error; the chunks and the error."""
    chunks: list[Any] = []
    try:
        for chunk in chat(client, stream=True, extra_headers=headers):
            chunks.append(chunk)
    except Exception as exc:
        return chunks, exc
    return chunks, None


async def aread_stream(
    client: Any, headers: dict[str, str]
) -> tuple[list[Any], BaseException | None]:
    chunks: list[Any] = []
    try:
        async for chunk in await achat(client, stream=True, extra_headers=headers):
            chunks.append(chunk)
    except Exception as exc:
        return chunks, exc
    return chunks, None


def assert_same_exception(traced: BaseException, plain: BaseException) -> None:
    assert type(traced) is type(plain)
    assert str(traced) == str(plain)
    assert type(traced.__cause__) is type(plain.__cause__)
    if isinstance(plain, openai.APIStatusError):
        assert isinstance(traced, openai.APIStatusError)
        assert traced.status_code == plain.status_code
        assert traced.body == plain.body
    elif isinstance(plain, openai.APIError):
        assert isinstance(traced, openai.APIError)
        assert traced.body == plain.body


def assert_error_span(
    telemetry: Telemetry, error_name: str, estimated: bool = False
) -> ReadableSpan:
    """One ended span in ERROR, its `error.type`, one exception event, and no billed usage:
    none at all, or (`estimated`, when chunks arrived before the error) an estimate."""
    span = telemetry.span()
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description and span.status.description.startswith(error_name)
    attributes = span.attributes or {}
    assert attributes["error.type"] == error_name
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 1
    assert (events[0].attributes or {})["exception.type"].endswith("." + error_name)
    (duration,) = telemetry.points(DURATION)
    assert duration.count == 1
    assert duration.attributes["error.type"] == error_name
    # A failed call is no point of the token histogram, which the conventions keep for
    # operations that succeeded; its tokens are in the usage counters, without `error.type`
    # (the duration's alone).
    assert telemetry.points(TOKEN_USAGE) == []
    if not estimated:
        assert "openai_usage.usage.source" not in attributes
        return span
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.usage.input_tokens"] > 0
    (counted,) = telemetry.points("gen_ai.client.inference.usage.input_tokens")
    assert counted.value == attributes["gen_ai.usage.input_tokens"]
    assert counted.attributes["openai_usage.usage.source"] == "estimate"
    assert "error.type" not in counted.attributes
    return span


def span_text(span: ReadableSpan) -> str:
    """Everything a span carries, as one string to search for leaked text."""
    parts = [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    parts.append(repr(dict(span.resource.attributes)))
    return "\n".join(parts)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RaisingTransport(HTTP.BaseTransport):
    """A transport that fails every request with the exception it was given."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def handle_request(self, request: HTTP.Request) -> HTTP.Response:
        raise self.exc


class AsyncRaisingTransport(HTTP.AsyncBaseTransport):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def handle_async_request(self, request: HTTP.Request) -> HTTP.Response:
        raise self.exc


# -- HTTP errors before any content ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(("status", "error_class"), STATUS_ERRORS, ids=STATUS_IDS)
def test_http_error_reaches_the_user_unchanged_and_ends_one_span_in_error(
    instrument: Any,
    telemetry: Telemetry,
    any_client: Any,
    server: LocalOpenAIServer,
    status: int,
    error_class: type[openai.APIStatusError],
    stream: bool,
) -> None:
    headers = scenario(f"http_error:{status}")
    plain = raised_by(lambda: chat(any_client, stream=stream, extra_headers=headers))
    instrument()
    server.clear()
    traced = raised_by(lambda: chat(any_client, stream=stream, extra_headers=headers))

    assert type(traced) is error_class
    assert_same_exception(traced, plain)
    assert isinstance(traced, openai.APIStatusError)
    assert traced.status_code == status
    assert traced.response.status_code == status
    assert traced.response.headers["x-request-id"].startswith("req_")
    assert isinstance(traced.body, dict) and traced.body["message"]
    assert len(server.requests) == 1  # not retried, not even a 400 on an injected stream
    span = assert_error_span(telemetry, error_class.__name__)
    attributes = span.attributes or {}
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert "gen_ai.response.model" not in attributes
    assert attributes["gen_ai.provider.name"] == (
        "azure.ai.openai" if is_azure(any_client) else "openai"
    )
    assert API_KEY not in span_text(span) and AZURE_KEY not in span_text(span)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(("status", "error_class"), STATUS_ERRORS, ids=STATUS_IDS)
async def test_async_http_error_reaches_the_user_unchanged_and_ends_one_span_in_error(
    instrument: Any,
    telemetry: Telemetry,
    any_aclient: Any,
    server: LocalOpenAIServer,
    status: int,
    error_class: type[openai.APIStatusError],
    stream: bool,
) -> None:
    headers = scenario(f"http_error:{status}")
    plain = await araised_by(lambda: achat(any_aclient, stream=stream, extra_headers=headers))
    instrument()
    server.clear()
    traced = await araised_by(lambda: achat(any_aclient, stream=stream, extra_headers=headers))

    assert type(traced) is error_class
    assert_same_exception(traced, plain)
    assert isinstance(traced, openai.APIStatusError)
    assert traced.status_code == status
    assert traced.response.status_code == status
    assert len(server.requests) == 1
    assert_error_span(telemetry, error_class.__name__)


def test_exception_event_and_status_never_contain_the_api_key_on_401(
    instrument: Any, telemetry: Telemetry, any_client: Any
) -> None:
    instrument()
    with pytest.raises(openai.AuthenticationError):
        chat(any_client, extra_headers=scenario("http_error:401"))
    span = assert_error_span(telemetry, "AuthenticationError")
    text = span_text(span)
    assert "Incorrect API key provided" in text  # the message is there, the key is not
    assert API_KEY not in text
    assert AZURE_KEY not in text
    for point in telemetry.points(DURATION):
        assert API_KEY not in repr(dict(point.attributes))
        assert AZURE_KEY not in repr(dict(point.attributes))


@pytest.mark.parametrize("form", ["headers", "bare"])
@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_an_error_text_echoing_the_key_is_redacted_on_the_span(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str, form: str
) -> None:
    # A proxy that echoes the request's credentials in its error: the text reaches
    # the span through the exception chain (the stack trace shows the cause).
    key = AZURE_KEY if kind == "azure" else API_KEY
    if form == "headers":
        echo = f"proxy refused: Authorization: Bearer {API_KEY}; api-key: {AZURE_KEY}"
    else:
        echo = f"proxy refused the credential {key} for this route"
    cause = HTTP.ConnectError(echo)
    http_client = HTTP.Client(transport=RaisingTransport(cause))
    client = make_client(server, kind, http_client=http_client)
    instrument()
    with pytest.raises(openai.APIConnectionError) as caught:
        chat(client)
    assert caught.value.__cause__ is cause
    span = assert_error_span(telemetry, "APIConnectionError")
    text = span_text(span)
    assert "proxy refused" in text  # the cause is recorded, its secrets are not
    assert API_KEY not in text
    assert AZURE_KEY not in text
    client.close()


# -- the exception object is the SDK's own -----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_user_catches_the_sdk_exception_whose_cause_is_the_transport_error_itself(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, stream: bool
) -> None:
    first = HTTP.ConnectError("connection refused by test transport")
    transport = RaisingTransport(first)
    client = make_client(server, "openai", http_client=HTTP.Client(transport=transport))
    plain = raised_by(lambda: chat(client, stream=stream))
    assert type(plain) is openai.APIConnectionError
    assert plain.__cause__ is first

    instrument()
    second = HTTP.ConnectError("connection refused by test transport")
    transport.exc = second
    traced = raised_by(lambda: chat(client, stream=stream))
    assert_same_exception(traced, plain)
    assert traced.__cause__ is second
    assert_error_span(telemetry, "APIConnectionError")
    client.close()


async def test_async_user_catches_the_sdk_exception_whose_cause_is_the_transport_error(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    first = HTTP.ConnectError("connection refused by test transport")
    transport = AsyncRaisingTransport(first)
    client = make_client(server, "async", http_client=HTTP.AsyncClient(transport=transport))
    plain = await araised_by(lambda: achat(client))
    assert type(plain) is openai.APIConnectionError
    assert plain.__cause__ is first

    instrument()
    second = HTTP.ConnectError("connection refused by test transport")
    transport.exc = second
    traced = await araised_by(lambda: achat(client))
    assert_same_exception(traced, plain)
    assert traced.__cause__ is second
    assert_error_span(telemetry, "APIConnectionError")
    await client.close()


# -- streams that break after they started -----------------------------------------------------


@pytest.mark.parametrize("fault", ["cut_after:3", "reset_after:3"])
def test_stream_broken_mid_way_raises_as_uninstrumented_and_ends_the_span_in_error(
    instrument: Any, telemetry: Telemetry, any_client: Any, fault: str
) -> None:
    plain_chunks, plain = read_stream(any_client, scenario(fault))
    assert plain is not None
    instrument()
    traced_chunks, traced = read_stream(any_client, scenario(fault))
    assert traced is not None

    assert_same_exception(traced, plain)
    assert comparable(traced_chunks) == comparable(plain_chunks)
    assert len(traced_chunks) == 3  # what came before the cut was delivered
    span = assert_error_span(telemetry, type(plain).__name__, estimated=True)
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "error"
    assert attributes["gen_ai.response.time_to_first_chunk"] > 0
    (first,) = telemetry.points(TIME_TO_FIRST_CHUNK)
    assert "error.type" not in first.attributes  # the duration's alone


@pytest.mark.parametrize("fault", ["cut_after:3", "reset_after:3"])
async def test_async_stream_broken_mid_way_raises_as_uninstrumented_and_ends_in_error(
    instrument: Any, telemetry: Telemetry, any_aclient: Any, fault: str
) -> None:
    plain_chunks, plain = await aread_stream(any_aclient, scenario(fault))
    assert plain is not None
    instrument()
    traced_chunks, traced = await aread_stream(any_aclient, scenario(fault))
    assert traced is not None

    assert_same_exception(traced, plain)
    assert comparable(traced_chunks) == comparable(plain_chunks)
    assert len(traced_chunks) == 3
    span = assert_error_span(telemetry, type(plain).__name__, estimated=True)
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "error"
    assert attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_a_broken_stream_closed_and_collected_afterwards_keeps_its_one_error_span(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument()
    stream = chat(client, stream=True, extra_headers=scenario("cut_after:3"))
    with pytest.raises(MID_STREAM_CONNECTION_ERRORS) as info:
        for _ in stream:
            pass
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
    del stream
    collect()
    span = assert_error_span(telemetry, type(info.value).__qualname__, estimated=True)
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "error"


def test_sse_error_event_mid_stream_raises_api_error_as_uninstrumented(
    instrument: Any, telemetry: Telemetry, any_client: Any
) -> None:
    plain_chunks, plain = read_stream(any_client, scenario("sse_error_after:2"))
    assert type(plain) is openai.APIError
    instrument()
    traced_chunks, traced = read_stream(any_client, scenario("sse_error_after:2"))
    assert traced is not None

    assert_same_exception(traced, plain)
    assert comparable(traced_chunks) == comparable(plain_chunks)
    assert len(traced_chunks) == 2
    span = assert_error_span(telemetry, "APIError", estimated=True)
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "error"


async def test_async_sse_error_event_mid_stream_raises_api_error_as_uninstrumented(
    instrument: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    plain_chunks, plain = await aread_stream(any_aclient, scenario("sse_error_after:2"))
    assert type(plain) is openai.APIError
    instrument()
    traced_chunks, traced = await aread_stream(any_aclient, scenario("sse_error_after:2"))
    assert traced is not None
    assert_same_exception(traced, plain)
    assert comparable(traced_chunks) == comparable(plain_chunks)
    assert_error_span(telemetry, "APIError", estimated=True)


def test_malformed_chunk_raises_the_sdks_own_decode_error_unchanged(
    instrument: Any, telemetry: Telemetry, any_client: Any
) -> None:
    plain_chunks, plain = read_stream(any_client, scenario("malformed_after:2"))
    assert isinstance(plain, ValueError)  # json.JSONDecodeError, from the SDK's decoder
    instrument()
    traced_chunks, traced = read_stream(any_client, scenario("malformed_after:2"))
    assert traced is not None

    assert_same_exception(traced, plain)
    assert comparable(traced_chunks) == comparable(plain_chunks)
    span = assert_error_span(telemetry, type(plain).__name__, estimated=True)
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "error"


async def test_async_malformed_chunk_raises_the_sdks_own_decode_error_unchanged(
    instrument: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    _, plain = await aread_stream(any_aclient, scenario("malformed_after:2"))
    assert isinstance(plain, ValueError)
    instrument()
    _, traced = await aread_stream(any_aclient, scenario("malformed_after:2"))
    assert traced is not None
    assert_same_exception(traced, plain)
    assert_error_span(telemetry, type(plain).__name__, estimated=True)


def test_malformed_non_stream_body_raises_as_uninstrumented(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    headers = scenario("malformed_after:2")
    plain = raised_by(lambda: chat(client, extra_headers=headers))
    instrument()
    traced = raised_by(lambda: chat(client, extra_headers=headers))
    assert_same_exception(traced, plain)
    assert_error_span(telemetry, type(plain).__name__)


def test_error_body_in_a_200_stream_raises_api_error_and_ends_the_span_in_error(
    instrument: Any, telemetry: Telemetry, any_client: Any
) -> None:
    plain_chunks, plain = read_stream(any_client, scenario("error_body_200"))
    assert type(plain) is openai.APIError
    instrument()
    traced_chunks, traced = read_stream(any_client, scenario("error_body_200"))
    assert traced is not None

    assert_same_exception(traced, plain)
    assert traced_chunks == plain_chunks == []
    span = assert_error_span(telemetry, "APIError")
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "error"
    assert "gen_ai.response.time_to_first_chunk" not in attributes  # no chunk ever came


async def test_async_error_body_in_a_200_stream_raises_api_error(
    instrument: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    _, plain = await aread_stream(any_aclient, scenario("error_body_200"))
    assert type(plain) is openai.APIError
    instrument()
    _, traced = await aread_stream(any_aclient, scenario("error_body_200"))
    assert traced is not None
    assert_same_exception(traced, plain)
    assert_error_span(telemetry, "APIError")


def test_error_body_in_a_200_non_stream_behaves_as_uninstrumented_and_ends_the_span(
    instrument: Any, telemetry: Telemetry, any_client: Any
) -> None:
    def outcome() -> Any:
        try:
            result = chat(any_client, extra_headers=scenario("error_body_200"))
        except Exception as exc:
            return ("raised", type(exc), str(exc))
        return ("returned", type(result), result.to_dict())

    plain = outcome()
    instrument()
    traced = outcome()
    assert traced == plain
    span = telemetry.span()
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    if plain[0] == "returned":
        # The SDK hands back the error body as a ChatCompletion, raising nothing: the call
        # failed all the same, with the server's error code as its type.
        attributes = span.attributes or {}
        assert attributes["error.type"] == "server_error"
        assert "gen_ai.usage.input_tokens" not in attributes
        assert telemetry.points(TOKEN_USAGE) == []
        (point,) = telemetry.points("gen_ai.client.operation.duration")
        assert point.attributes["error.type"] == "server_error"


# -- retries, timeouts, refused connections ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_sdk_retries_are_one_user_call_and_one_span_with_usage(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, stream: bool
) -> None:
    key = uuid.uuid4().hex
    headers = scenario("fail_first:2", **{"x-mock-attempt-key": key})
    headers["x-mock-usage"] = json.dumps({"prompt_tokens": 11, "completion_tokens": 3})
    client = make_client(server, "openai", max_retries=2)
    instrument()
    result = chat(client, stream=stream, extra_headers=headers)
    if stream:
        chunks = list(result)
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        assert result.usage.prompt_tokens == 11

    attempts = [r for r in server.requests if r.headers.get("x-mock-attempt-key") == key]
    assert len(attempts) == 3
    span = telemetry.span()
    assert span.status.status_code is StatusCode.UNSET
    attributes = span.attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert "error.type" not in attributes
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in telemetry.points(TOKEN_USAGE)}
    assert tokens == {"input": 11, "output": 3}
    (duration,) = telemetry.points(DURATION)
    assert duration.count == 1
    client.close()


async def test_async_sdk_retries_are_one_user_call_and_one_span(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    key = uuid.uuid4().hex
    headers = scenario("fail_first:2", **{"x-mock-attempt-key": key})
    client = make_client(server, "async", max_retries=2)
    instrument()
    result = await achat(client, extra_headers=headers)
    assert result.choices[0].finish_reason == "stop"
    attempts = [r for r in server.requests if r.headers.get("x-mock-attempt-key") == key]
    assert len(attempts) == 3
    span = telemetry.span()
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["gen_ai.usage.input_tokens"] > 0
    await client.close()


def test_read_timeout_raises_api_timeout_error_as_uninstrumented(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = make_client(server, "openai", timeout=0.5)
    headers = scenario("hang")
    plain = raised_by(lambda: chat(client, extra_headers=headers))
    assert type(plain) is openai.APITimeoutError
    instrument()
    traced = raised_by(lambda: chat(client, extra_headers=headers))
    assert_same_exception(traced, plain)
    assert_error_span(telemetry, "APITimeoutError")
    client.close()


@pytest.mark.parametrize("fault", ["hang", "slow_headers:900"])
def test_stream_whose_headers_never_come_times_out_with_one_error_span(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, fault: str
) -> None:
    client = make_client(server, "openai", timeout=0.5)
    instrument()
    with pytest.raises(openai.APITimeoutError):
        chat(client, stream=True, extra_headers=scenario(fault))
    span = assert_error_span(telemetry, "APITimeoutError")
    assert "openai_usage.stream.outcome" not in (span.attributes or {})
    client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_async_read_timeout_raises_api_timeout_error(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, stream: bool
) -> None:
    client = make_client(server, "async", timeout=0.5)
    instrument()
    with pytest.raises(openai.APITimeoutError):
        await achat(client, stream=stream, extra_headers=scenario("hang"))
    assert_error_span(telemetry, "APITimeoutError")
    await client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_a_task_cancelled_while_waiting_for_the_reply_ends_its_span_and_stays_cancelled(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI, stream: bool
) -> None:
    # `asyncio.wait_for`, `asyncio.timeout` and a closing web request all cancel the task.
    task = asyncio.ensure_future(achat(aclient, stream=stream, extra_headers=scenario("hang")))
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()  # the cancellation reached the caller as itself
    assert_error_span(telemetry, "CancelledError")
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_a_stream_whose_task_is_cancelled_mid_read_ends_its_span_with_an_estimate(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    received: list[Any] = []

    async def read() -> None:
        headers = {"x-mock-chunks": "40", "x-mock-chunk-delay-ms": "50"}
        async for chunk in await achat(aclient, stream=True, extra_headers=headers):
            received.append(chunk)

    task = asyncio.ensure_future(read())
    while len(received) < 4:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = assert_error_span(telemetry, "CancelledError", estimated=True)
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "error"
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text.split() == [f"w{i}" for i in range(1, len(text.split()) + 1)]
    # What arrived was generated and billed: each "wN" word is at least one token.
    assert attributes["gen_ai.usage.output_tokens"] >= len(text.split()) >= 3
    assert len(received) < 40  # it really stopped mid-way


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_connection_refused_raises_api_connection_error_and_ends_the_span_in_error(
    instrument: Any, telemetry: Telemetry, stream: bool
) -> None:
    port = closed_port()
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0, timeout=5
    )
    plain = raised_by(lambda: chat(client, stream=stream))
    assert type(plain) is openai.APIConnectionError
    instrument()
    traced = raised_by(lambda: chat(client, stream=stream))
    assert_same_exception(traced, plain)
    span = assert_error_span(telemetry, "APIConnectionError")
    attributes = span.attributes or {}
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == port
    client.close()


async def test_async_connection_refused_raises_api_connection_error(
    instrument: Any, telemetry: Telemetry
) -> None:
    port = closed_port()
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0, timeout=5
    )
    instrument()
    with pytest.raises(openai.APIConnectionError):
        await achat(client)
    assert_error_span(telemetry, "APIConnectionError")
    await client.close()


def test_an_error_body_is_found_on_pydantic_v1_objects_too() -> None:
    # Under pydantic v1 (which openai 1.x supports) extra fields are plain attributes.
    v1_like = SimpleNamespace(id=None, error={"code": "server_error", "message": "boom"})
    assert error_body(v1_like) == ("server_error", "boom")
    assert error_body(SimpleNamespace(id="x")) is None


def _interrupt_at(function: str, event: str) -> Any:
    """A trace function raising KeyboardInterrupt at one spot of ours: how an exception
    from a signal handler (Ctrl-C, a SIGTERM handler's `sys.exit`) enters a frame."""

    def tracer(frame: Any, ev: str, arg: Any) -> Any:
        code = frame.f_code
        if code.co_name == function and "openai_usage" in code.co_filename:
            if ev == event:
                sys.settrace(None)
                raise KeyboardInterrupt
            return tracer
        return tracer if ev == "call" else None

    return tracer


@pytest.mark.parametrize(("function", "event"), [("activate", "return"), ("_safe_finish", "call")])
def test_an_interrupt_around_the_sdk_call_ends_the_span_and_restores_the_callers_context(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, function: str, event: str
) -> None:
    before = trace.get_current_span()
    sys.settrace(_interrupt_at(function, event))
    try:
        with pytest.raises(KeyboardInterrupt):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    finally:
        sys.settrace(None)
    assert trace.get_current_span() is before  # our span is not left current
    span = telemetry.span()
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "KeyboardInterrupt"


class _Odd(BaseException):
    """An exception whose `completion` cannot even be read (a BaseException: the SDK lets
    it through from its transport, as it would a KeyboardInterrupt)."""

    @property
    def completion(self) -> Any:
        raise RuntimeError("not this one")


def test_an_exception_with_an_unreadable_completion_reaches_the_caller_unchanged(
    instrument: Any, telemetry: Telemetry
) -> None:
    odd = _Odd("the caller's own")

    def handler(request: Any) -> Any:
        raise odd

    instrument()
    client = served_by(handler)
    with pytest.raises(_Odd) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raised.value is odd
    assert (telemetry.span().attributes or {})["error.type"] == "_Odd"
    client.close()


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_text_with_half_an_emoji_is_recorded_as_valid_utf8(
    instrumented: Any, telemetry: Telemetry, stream: bool
) -> None:
    # A gateway cutting a quoted prompt mid-emoji escapes half of it in its JSON ("\ud83d"):
    # the SDK's message holds that half, which no exporter can encode as UTF-8 (OTLP's
    # encoder then fails the whole span, its status being unencodable).
    def handler(request: Any) -> Any:
        body = b'{"error": {"message": "Bad input: \\"Hi \\ud83d\\"", "type": "invalid"}}'
        return HTTP.Response(400, content=body, headers={"content-type": "application/json"})

    client = served_by(handler)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=stream)
    span = telemetry.span()
    texts = [span.status.description or ""]
    texts += [v for e in span.events for v in (e.attributes or {}).values() if isinstance(v, str)]
    for text in texts:
        text.encode("utf-8")  # what an exporter does: a lone surrogate raises here
    assert "Bad input" in texts[0]  # (older SDKs show the body's repr(), escaping the half)
    client.close()


def test_a_failed_call_in_an_unsampled_trace_scrubs_no_error_text_yet_counts_the_failure(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's trace was not sampled upstream, so the (parent-based) sampler drops the
    # call's span: scrubbing the error's text (the request's content searched, the
    # traceback formatted, about a millisecond) would be for a span that keeps nothing.
    scrubbed: list[BaseException] = []
    monkeypatch.setattr(
        invocation_module, "record_error", lambda _s, exc, *a, **k: scrubbed.append(exc)
    )
    instrument()
    unsampled = NonRecordingSpan(
        SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    )
    with trace.use_span(unsampled), pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-mock-scenario": "http_error:400"},
        )

    assert scrubbed == []
    assert telemetry.spans() == []
    (point,) = telemetry.points(DURATION)
    assert point.count == 1
    assert point.attributes["error.type"] == "BadRequestError"


@pytest.mark.parametrize("operation", ["chat", "completions"])
def test_an_error_string_in_a_200_body_ends_the_span_in_error(
    instrumented: Any, telemetry: Telemetry, operation: str
) -> None:
    """`{"error": "..."}` with a 200, as some gateways send it: the SDK returns it as a
    response, raising nothing; the span is in error (code `error`), as for an error object."""
    body = json.dumps({"error": "upstream model crashed"}).encode()
    client = served_by(lambda _: HTTP.Response(200, content=body))
    if operation == "chat":
        result: Any = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    else:
        result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    client.close()
    assert result.to_dict() == {"error": "upstream model crashed"}
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "error: upstream model crashed"
    assert (span.attributes or {})["error.type"] == "error"
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "error"
