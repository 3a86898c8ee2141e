"""Streamed chat completions: transparent proxy, exact usage, span ended once on every path."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import gc
import inspect
import json
import threading
import time
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import StatusCode

from opentelemetry import trace
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import (
    HTTP,
    MESSAGES,
    MID_STREAM_CONNECTION_ERRORS,
    Telemetry,
    collect,
    comparable,
    is_azure,
    make_client,
    served_by,
    sse_reply,
)

USAGE_HEADERS = {"x-mock-usage": json.dumps({"prompt_tokens": 21, "completion_tokens": 5})}


def stream_call(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("extra_headers", USAGE_HEADERS)
    return client.chat.completions.create(stream=True, **kwargs)


# -- read to the end ---------------------------------------------------------------------


def test_stream_without_include_usage_gets_usage_and_user_sees_identical_chunks(
    instrument: Any, telemetry: Telemetry, any_client: Any, server: LocalOpenAIServer
) -> None:
    plain = comparable(list(stream_call(any_client)))
    assert server.requests[-1].body.get("stream_options") is None
    instrument()
    stream = stream_call(any_client)
    assert isinstance(stream, openai.Stream)
    traced = comparable(list(stream))

    assert traced == plain  # no usage chunk, no `usage: null` keys
    assert all(chunk.get("usage") is None for chunk in traced)
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    span = telemetry.span()
    attributes = span.attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 21
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["gen_ai.usage.total_tokens"] == 26
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.response.id"].startswith("chatcmpl-")
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["openai_usage.stream.include_usage_injected"] is True
    assert attributes["gen_ai.provider.name"] == (
        "azure.ai.openai" if is_azure(any_client) else "openai"
    )
    assert 0 < attributes["gen_ai.response.time_to_first_chunk"] < 5
    assert span.status.status_code is StatusCode.UNSET
    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum
        for p in telemetry.points("gen_ai.client.token.usage")
    }
    assert tokens == {"input": 21, "output": 5}


def test_stream_with_include_usage_keeps_the_usage_chunk_for_the_user(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    chunks = list(stream_call(client, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 21
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 21
    assert attributes["openai_usage.stream.include_usage_injected"] is False


def test_injection_keeps_the_users_other_stream_options(
    instrumented: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    list(stream_call(client, stream_options={"include_obfuscation": False}))
    assert server.requests[-1].body["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }


def test_an_explicit_include_usage_false_is_injected_and_the_chunk_still_hidden(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    # `False` asks for no usage chunk, and the caller gets none; the call bills the same.
    chunks = list(stream_call(client, stream_options={"include_usage": False}))
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["openai_usage.stream.include_usage_injected"] is True


@pytest.mark.parametrize("value", [1, "true"])
def test_an_include_usage_of_another_truthy_value_is_sent_as_written_for_the_server_to_judge(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    value: Any,
) -> None:
    # Not ours to read as yes or no: the server answers it as it would without us.
    list(stream_call(client, stream_options={"include_usage": value}))
    assert server.requests[-1].body["stream_options"] == {"include_usage": value}
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.stream.include_usage_injected"] is False


@pytest.mark.parametrize("how", ["constructor", "environment"])
def test_injection_can_be_turned_off(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "constructor":
        instrument(inject_stream_usage=False)
    else:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_INJECT_STREAM_USAGE", "false")
        instrument()
    list(stream_call(client))
    assert "stream_options" not in server.requests[-1].body
    attributes = telemetry.span().attributes or {}
    # No usage came: the tokens are counted by us, and say so.
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["openai_usage.stream.include_usage_injected"] is False
    assert attributes["openai_usage.stream.outcome"] == "completed"


def test_endpoint_rejecting_stream_options_is_retried_once_without_them(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.clear()
    headers = {"x-mock-scenario": "reject_stream_options"}
    chunks = list(stream_call(client, extra_headers=headers))
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    bodies = [r.body for r in server.requests]
    assert [("stream_options" in b) for b in bodies] == [True, False]
    # The host is remembered: the next stream is sent as the user wrote it.
    list(stream_call(client, extra_headers=headers))
    assert "stream_options" not in server.requests[-1].body
    spans = telemetry.spans()
    assert len(spans) == 2
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)


def test_a_400_for_the_users_own_stream_options_does_not_turn_injection_off(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    # The user's own `stream_options` is refused with or without ours: the retry fails the
    # same way, the caller gets the server's 400, and the host keeps its injection.
    headers = {**USAGE_HEADERS, "x-mock-scenario": "reject_stream_options"}
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        stream_call(client, extra_headers=headers, stream_options={"include_obfuscation": False})
    server.clear()
    list(stream_call(client))
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    assert (telemetry.spans()[-1].attributes or {})["openai_usage.usage.source"] == "response"


def test_no_stream_options_are_added_where_extra_body_turns_streaming_off(
    instrumented: Any, telemetry: Telemetry
) -> None:
    # `extra_body` wins on the wire: `{"stream": False}` sends a request that does not
    # stream, on which OpenAI refuses `stream_options`. Ours would be refused, and the
    # refusal remembered for the endpoint: its later streams would lose their billed usage.
    sent: list[dict[str, Any]] = []

    def handler(request: Any) -> Any:
        body = json.loads(request.content)
        sent.append(body)
        if "stream_options" in body and body.get("stream") is not True:
            message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            error = {"message": message, "type": "invalid_request_error", "param": "stream_options"}
            return HTTP.Response(400, json={"error": error})
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        if body.get("stream") is not True:
            return HTTP.Response(200, json={"id": "chatcmpl-1", "object": "chat.completion"})
        chunk = {
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Hi."}, "finish_reason": "stop"}],
        }  # fmt: skip
        if body.get("stream_options", {}).get("include_usage"):
            return sse_reply([chunk, {**chunk, "choices": [], "usage": usage}])
        return sse_reply([chunk])

    client = served_by(handler)
    off = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_body={"stream": False}
    )
    assert list(off) == []  # what the SDK makes of a reply that does not stream
    assert len(sent) == 1
    assert "stream_options" not in sent[0]
    assert (telemetry.span().attributes or {})[
        "openai_usage.stream.include_usage_injected"
    ] is False
    telemetry.exporter.clear()
    list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert sent[-1]["stream_options"] == {"include_usage": True}
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.usage.input_tokens"] == 7


def test_messages_given_as_a_generator_survive_the_retry_without_stream_options(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    # The SDK takes any iterable of messages: read once for the first request, a generator
    # would leave the retry with none (a 400 the caller would never get without us).
    server.clear()
    headers = {"x-mock-scenario": "reject_stream_options"}
    chunks = list(stream_call(client, messages=(m for m in MESSAGES), extra_headers=headers))
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    assert [r.body["messages"] for r in server.requests] == [MESSAGES, MESSAGES]
    assert telemetry.span().status.status_code is StatusCode.UNSET


def test_a_generator_of_messages_that_raises_fails_the_call_with_its_span(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    def messages() -> Any:
        yield MESSAGES[0]
        raise ValueError("the caller's generator broke")

    with pytest.raises(ValueError, match="generator broke"):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages())
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ValueError"


def test_a_prompt_given_as_a_generator_is_still_estimated(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    headers = {"x-mock-scenario": "no_usage"}
    list(stream_call(client, extra_headers=headers))
    counted = (telemetry.spans()[0].attributes or {})["gen_ai.usage.input_tokens"]
    list(stream_call(client, messages=iter(MESSAGES), extra_headers=headers))
    attributes = telemetry.spans()[1].attributes or {}
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.usage.input_tokens"] == counted


def test_manual_next_and_response_attribute_behave_as_the_sdk(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    stream = stream_call(client)
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    first = next(stream)
    assert first.choices[0].delta.role == "assistant"
    rest = list(stream)
    with pytest.raises(StopIteration):
        next(stream)
    assert rest[-1].choices[0].finish_reason == "stop"
    assert len(telemetry.spans()) == 1


class _Signal(Exception):
    """Thrown by a consumer into its relay: the relay's business, not the stream's."""


def _relay_closed_after_one(stream: Any, throw: bool = False) -> list[Any]:
    """What a caller reads from a stream after a `yield from` relay over it was closed (or
    had an exception thrown into it)."""

    def relay() -> Any:
        yield from stream

    first = relay()
    next(first)
    if throw:
        with pytest.raises(_Signal):
            first.throw(_Signal())
    else:
        first.close()  # closes `iter(stream)`, not the stream
    return [c.choices[0].delta.content for c in stream]


def test_closing_an_iterator_of_the_stream_leaves_the_stream_open_as_the_sdk_does(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    headers = {"x-mock-chunks": "3"}
    plain = _relay_closed_after_one(stream_call(client, extra_headers=headers))
    instrument()
    stream = stream_call(client, extra_headers=headers)
    assert iter(stream) is not iter(stream)  # a new iterator each time, as the SDK's
    assert _relay_closed_after_one(stream) == plain == ["w1", " w2", " w3", None]
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "completed"


async def _async_relay_closed_after_one(stream: Any) -> list[Any]:
    first = stream.__aiter__()
    await first.__anext__()
    await first.aclose()  # closes that iterator, not the stream
    return [c.choices[0].delta.content async for c in stream]


async def test_closing_an_async_iterator_of_the_stream_leaves_the_stream_open(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    headers = {"x-mock-chunks": "3"}
    plain = await _async_relay_closed_after_one(await astream_call(aclient, extra_headers=headers))
    instrument()
    stream = await astream_call(aclient, extra_headers=headers)
    assert await _async_relay_closed_after_one(stream) == plain == ["w1", " w2", " w3", None]
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "completed"


def test_an_exception_thrown_into_an_iterator_of_the_stream_leaves_the_stream_going(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    headers = {"x-mock-chunks": "3"}
    plain = _relay_closed_after_one(stream_call(client, extra_headers=headers), throw=True)
    instrument()
    stream = stream_call(client, extra_headers=headers)
    assert _relay_closed_after_one(stream, throw=True) == plain == ["w1", " w2", " w3", None]
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["openai_usage.usage.source"] == "response"


async def test_an_exception_thrown_into_an_async_iterator_leaves_the_stream_going(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    async def read(stream: Any) -> list[Any]:
        first = stream.__aiter__()
        await first.__anext__()
        with pytest.raises(_Signal):
            await first.athrow(_Signal())
        return [c.choices[0].delta.content async for c in stream]

    headers = {"x-mock-chunks": "3"}
    plain = await read(await astream_call(aclient, extra_headers=headers))
    instrument()
    assert await read(await astream_call(aclient, extra_headers=headers)) == plain
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "completed"


async def test_async_stream_aclose_and_anext_are_what_the_sdk_offers(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    plain = await astream_call(aclient)
    sdk_has_aclose = hasattr(plain, "aclose")  # not in older SDK releases
    await plain.close()
    instrument()
    stream = await astream_call(aclient)
    assert hasattr(stream, "aclose") is sdk_has_aclose
    step = stream.__anext__()
    assert inspect.iscoroutine(step)  # as the SDK's own `__anext__`
    await step
    if sdk_has_aclose:
        await stream.aclose()
    else:
        with pytest.raises(AttributeError):
            stream.aclose  # noqa: B018
        await stream.close()
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "closed"


# The protocols a dispatcher may test: wrapt's proxy defines them all, the SDK's objects not.
PROTOCOLS = (
    collections.abc.Iterable,
    collections.abc.Iterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncIterator,
    collections.abc.Sized,
    collections.abc.Container,
    collections.abc.Collection,
    collections.abc.Reversible,
    contextlib.AbstractContextManager,
    contextlib.AbstractAsyncContextManager,
)


def protocols(obj: Any) -> dict[str, bool]:
    return {abc.__name__: isinstance(obj, abc) for abc in PROTOCOLS}


async def test_streams_and_raw_responses_follow_the_same_protocols_as_the_sdks(
    instrumented: Any, client: openai.OpenAI, aclient: openai.AsyncOpenAI
) -> None:
    sync_stream = stream_call(client)
    async_stream = await astream_call(aclient)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    async with aclient.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as async_body:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ) as body:
            for proxy in (sync_stream, async_stream, raw, body, async_body):
                expected = protocols(proxy.__wrapped__)
                if proxy is sync_stream:  # `in` reads a Stream: wrapt's `__contains__` does
                    expected["Container"] = True
                assert protocols(proxy) == expected, type(proxy.__wrapped__).__name__
    # A sync/async dispatcher takes the async way for an async stream, as without us.
    assert not isinstance(async_stream, collections.abc.Iterable)
    assert [chunk async for chunk in async_stream]
    with pytest.raises(TypeError), async_stream:  # type: ignore[attr-defined]
        pass
    with pytest.raises(TypeError):
        async with sync_stream:
            pass
    sync_stream.close()
    assert list(raw.parse())


def test_stream_with_several_choices_records_each_finish_reason(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    list(stream_call(client, n=2, extra_headers={}))
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.response.finish_reasons"] == ("stop", "stop")
    assert attributes["gen_ai.request.choice.count"] == 2


def test_azure_prompt_filter_chunk_reaches_the_user_and_ids_come_from_content_chunks(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        api_key="azure-key-0123456789",
        api_version="2024-10-21",
        max_retries=0,
    )
    plain = comparable(list(stream_call(azure)))
    instrument()
    traced = comparable(list(stream_call(azure)))
    assert traced == plain
    assert traced[0]["choices"] == [] and "prompt_filter_results" in traced[0]
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.response.id"].startswith("chatcmpl-")
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attributes["gen_ai.usage.input_tokens"] == 21


def _next_refused_while_a_thread_reads(stream: Any) -> tuple[str, list[Any]]:
    """A thread reads two chunks with `for`; meanwhile `next()` here is refused (the SDK's
    iterator is busy in that thread); then `next()` reads the rest."""
    first = threading.Event()

    def read_two() -> None:
        for n, _ in enumerate(stream):
            first.set()
            if n == 1:
                break

    reader = threading.Thread(target=read_two)
    reader.start()
    first.wait(5)
    time.sleep(0.1)  # the reader now waits for its second chunk, inside the SDK
    with pytest.raises(ValueError) as refused:
        next(stream)
    reader.join()
    return str(refused.value), [c.choices[0].delta.content for c in iter(stream.__next__, None)]


def test_next_refused_while_another_thread_reads_leaves_the_stream_going(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    headers = {"x-mock-chunks": "3", "x-mock-chunk-delay-ms": "600"}
    plain = _next_refused_while_a_thread_reads(stream_call(client, extra_headers=headers))
    instrument()
    traced = _next_refused_while_a_thread_reads(stream_call(client, extra_headers=headers))
    assert traced == plain
    assert plain[1][-2:] == [" w3", None]  # read on to the end, without us as with us
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "completed"


# -- ended early ---------------------------------------------------------------------------


def test_stream_closed_early_ends_the_span_at_close(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    stream = stream_call(any_client, extra_headers={"x-mock-chunks": "50"})
    next(stream)
    next(stream)
    assert telemetry.spans() == []
    stream.close()
    span = telemetry.span()
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert span.status.status_code is StatusCode.UNSET
    # Closing twice, or collecting the stream, never produces a second span.
    stream.close()
    del stream
    collect()
    assert len(telemetry.spans()) == 1


def test_break_inside_with_block_ends_the_span_when_the_block_is_left(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    with stream_call(any_client, extra_headers={"x-mock-chunks": "50"}) as stream:
        assert isinstance(stream, openai.Stream)
        for _ in stream:
            break
        assert telemetry.spans() == []
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "closed"


def test_abandoned_stream_ends_at_its_last_read_when_collected(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    stream = stream_call(any_client, extra_headers={"x-mock-chunks": "50"})
    next(stream)
    last_read_ns = time.time_ns()
    time.sleep(0.3)
    del stream
    collect()
    span = telemetry.span()
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "abandoned"
    assert span.end_time is not None
    assert span.end_time <= last_read_ns + 50_000_000  # not the collection time, 0.3 s later


def test_a_stream_the_caller_drops_unfinished_is_ended_by_the_time_its_provider_flushes(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    # A handler that reads one chunk and returns, then a `force_flush()` or `shutdown()`
    # (a Lambda handler's end, a CLI's `finally`): no collection, no waiting in between.
    def first_chunk_only() -> Any:
        stream = stream_call(any_client, extra_headers={"x-mock-chunks": "50"})
        return next(stream)

    gc.disable()  # the drop alone must do it, not a collection
    try:
        first_chunk_only()
        last_read_ns = time.time_ns()
        spans = telemetry.spans()
    finally:
        gc.enable()
    assert len(spans) == 1
    assert (spans[0].attributes or {})["openai_usage.stream.outcome"] == "abandoned"
    assert spans[0].end_time is not None and spans[0].end_time <= last_read_ns


def test_a_loop_holding_only_the_iterator_keeps_the_stream_alive_through_collections(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The proxy itself is unreferenced once the loop has its iterator.
    for _ in stream_call(client, extra_headers={"x-mock-chunks": "5", **USAGE_HEADERS}):
        collect()
        assert telemetry.spans() == []
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["gen_ai.usage.input_tokens"] == 21


async def test_async_loop_holding_only_the_iterator_keeps_the_stream_alive(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    async for _ in await astream_call(aclient, extra_headers={"x-mock-chunks": "5"}):
        collect()
        assert telemetry.spans() == []
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "completed"


def test_the_span_is_never_current_between_reads(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        stream = stream_call(client)
        assert trace.get_current_span() is caller
        for _ in stream:
            assert trace.get_current_span() is caller
    chat = next(s for s in telemetry.spans() if s.name.startswith("chat"))
    assert chat.parent is not None and chat.parent.span_id == caller.get_span_context().span_id


def test_chunk_timing_metrics_record_one_point_per_stream_by_default(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    list(stream_call(client, extra_headers={"x-mock-chunks": "20"}))
    (first,) = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    (gap,) = telemetry.points("gen_ai.client.operation.time_per_output_chunk")
    assert first.count == 1 and gap.count == 1
    assert gap.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.sum >= first.sum


def test_per_chunk_timing_records_one_point_per_chunk_after_the_first(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(chunk_timing="per_chunk")
    chunks = list(stream_call(client, extra_headers={"x-mock-chunks": "20"}))
    (gap,) = telemetry.points("gen_ai.client.operation.time_per_output_chunk")
    # The usage chunk we asked for and hid is no output chunk: it is not timed.
    assert gap.count == len(chunks) - 1


@pytest.mark.parametrize("usage_asked_by", ["us", "the caller"])
def test_the_usage_chunk_is_no_output_chunk_whoever_asked_for_it(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, usage_asked_by: str
) -> None:
    instrument(chunk_timing="per_chunk")
    options = {"stream_options": {"include_usage": True}} if usage_asked_by != "us" else {}
    chunks = list(stream_call(client, extra_headers={"x-mock-chunks": "5"}, **options))
    # Role, 5 pieces, finish (and the caller's usage chunk, which carries no choice).
    assert len(chunks) == (8 if options else 7)
    (gaps,) = telemetry.points("gen_ai.client.operation.time_per_output_chunk")
    assert gaps.count == 6  # one per output chunk after the first, the same either way


def test_azure_prompt_filter_chunk_is_not_the_first_chunk(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    instrument(chunk_timing="per_chunk")
    client = make_client(server, "azure")
    # The server sends the prompt-filter chunk at once, every other chunk 100 ms later.
    headers = {"x-mock-chunks": "2", "x-mock-chunk-delay-ms": "100"}
    chunks = list(stream_call(client, extra_headers=headers))
    assert chunks[0].choices == [] and len(chunks) == 5  # filter, role, 2 pieces, finish
    (first,) = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1 and first.sum >= 0.1  # the role chunk's, with the first output
    assert (telemetry.span().attributes or {})["gen_ai.response.time_to_first_chunk"] == first.sum
    (gaps,) = telemetry.points("gen_ai.client.operation.time_per_output_chunk")
    assert gaps.count == 3


def test_azure_stream_cut_after_its_prompt_filter_chunk_has_no_first_chunk_but_an_estimate(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = make_client(server, "azure")
    with pytest.raises(MID_STREAM_CONNECTION_ERRORS):
        list(stream_call(client, extra_headers={"x-mock-scenario": "cut_after:1"}))
    attributes = telemetry.span().attributes or {}
    assert "gen_ai.response.time_to_first_chunk" not in attributes
    assert telemetry.points("gen_ai.client.operation.time_to_first_chunk") == []
    # The prompt was read and passed the filter: its tokens are estimated, as before.
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.usage.output_tokens"] == 0
    input_tokens = attributes["gen_ai.usage.input_tokens"]
    assert isinstance(input_tokens, int) and input_tokens > 0


def test_per_chunk_gaps_of_a_stream_that_breaks_carry_the_attributes_of_its_duration_but_error(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The conventions give `error.type` to `gen_ai.client.operation.duration` alone.
    instrument(chunk_timing="per_chunk")
    headers = {"x-mock-chunks": "20", "x-mock-scenario": "sse_error_after:8"}
    with pytest.raises(openai.APIError):
        list(stream_call(client, extra_headers=headers))
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    (gaps,) = telemetry.points("gen_ai.client.operation.time_per_output_chunk")
    (first,) = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert dict(duration.attributes)["error.type"] == "APIError"
    expected = {k: v for k, v in duration.attributes.items() if k != "error.type"}
    assert dict(gaps.attributes) == dict(first.attributes) == expected
    assert gaps.count == 7  # 8 chunks read before the error event


class _SlowClose(HTTP.HTTPTransport):  # type: ignore[misc,name-defined,unused-ignore]
    """Closing a response takes a while once its socket is shut (a TLS goodbye, a pool
    lock): a reader in another thread sees its read fail before `close()` returns."""

    def handle_request(self, request: Any) -> Any:
        response = super().handle_request(request)
        inner = response.stream

        class Body(HTTP.SyncByteStream):  # type: ignore[misc,name-defined,unused-ignore]
            def __iter__(self) -> Any:
                return iter(inner)

            def close(self) -> None:
                inner.close()
                time.sleep(0.3)

        response.stream = Body()
        return response


@pytest.mark.parametrize("how", ["create", "stream_helper", "streaming_response"])
def test_a_stream_closed_while_another_thread_reads_it_ends_closed_not_in_error(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, how: str
) -> None:
    client = openai.OpenAI(
        base_url=server.base_url,
        api_key="sk-test",
        max_retries=0,
        http_client=HTTP.Client(transport=_SlowClose()),
    )
    headers = {"x-mock-chunks": "50", "x-mock-chunk-delay-ms": "40"}
    if how == "stream_helper":
        make = getattr(client.chat.completions, "stream", None)
        if make is None:
            pytest.skip("this openai release has no chat.completions.stream()")
        stream: Any = make(model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers)
        stream = stream.__enter__()
    elif how == "streaming_response":  # the caller reads the raw body itself
        stream = client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers
        ).__enter__()
    else:
        stream = stream_call(client, extra_headers=headers)
    failed: list[BaseException] = []

    def read() -> None:
        try:
            for _ in stream.iter_lines() if how == "streaming_response" else stream:
                pass
        except Exception as exc:
            failed.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    stream.close()  # the reader's next read fails, before this returns
    reader.join()
    client.close()
    assert failed  # the reader saw the close as the SDK reports it (its own error)
    span = telemetry.span()
    if how != "streaming_response":  # (a raw body is no stream of ours: no outcome)
        assert (span.attributes or {})["openai_usage.stream.outcome"] == "closed"
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in (span.attributes or {})


# -- async ---------------------------------------------------------------------------------


async def astream_call(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("extra_headers", USAGE_HEADERS)
    return await client.chat.completions.create(stream=True, **kwargs)


async def test_async_stream_without_include_usage_gets_usage_and_identical_chunks(
    instrument: Any, telemetry: Telemetry, any_aclient: Any, server: LocalOpenAIServer
) -> None:
    plain = comparable([c async for c in await astream_call(any_aclient)])
    instrument()
    stream = await astream_call(any_aclient)
    assert isinstance(stream, openai.AsyncStream)
    traced = comparable([c async for c in stream])
    assert traced == plain
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 21
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["openai_usage.stream.outcome"] == "completed"


async def test_async_stream_closed_early_ends_the_span(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    stream = await astream_call(any_aclient, extra_headers={"x-mock-chunks": "50"})
    await stream.__anext__()
    await stream.close()
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "closed"


async def test_async_break_inside_async_with_ends_the_span(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    async with await astream_call(any_aclient, extra_headers={"x-mock-chunks": "50"}) as stream:
        assert isinstance(stream, openai.AsyncStream)
        async for _ in stream:
            break
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "closed"


async def test_async_abandoned_stream_ends_at_its_last_read_when_collected(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    stream = await astream_call(any_aclient, extra_headers={"x-mock-chunks": "50"})
    await stream.__anext__()
    last_read_ns = time.time_ns()
    await asyncio.sleep(0.3)
    del stream
    collect()
    span = telemetry.span()
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "abandoned"
    assert span.end_time is not None and span.end_time <= last_read_ns + 50_000_000


async def test_async_stream_left_by_break_and_dropped_ends_once_the_loop_closes_its_iterator(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    # `async for` left by `break` drops an unfinished async generator: asyncio closes it
    # (ours, and the SDK's inside it) at the loop's next turns; then the span ends, at the
    # last read, as the README says.
    async def read_one() -> int:
        stream = await astream_call(aclient, extra_headers={"x-mock-chunks": "50"})
        async for _ in stream:
            break
        return time.time_ns()

    last_read_ns = await read_one()
    for _ in range(10):
        if telemetry.spans():
            break
        await asyncio.sleep(0)
    span = telemetry.span()
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "abandoned"
    assert span.end_time is not None and span.end_time <= last_read_ns


async def _anext_refused_while_a_task_reads(stream: Any) -> tuple[str, list[Any]]:
    """As `_next_refused_while_a_thread_reads`, with tasks: an `async for` in one task, a
    refused `__anext__` in this one, which then reads the rest."""
    first = asyncio.Event()

    async def read_two() -> None:
        n = 0
        async for _ in stream:
            first.set()
            n += 1
            if n == 2:
                break

    reader = asyncio.ensure_future(read_two())
    await first.wait()
    await asyncio.sleep(0.1)  # the reader now waits for its second chunk, inside the SDK
    with pytest.raises(RuntimeError) as refused:
        await stream.__anext__()
    await reader
    rest = []
    with contextlib.suppress(StopAsyncIteration):
        while True:
            rest.append((await stream.__anext__()).choices[0].delta.content)
    return str(refused.value), rest


async def test_anext_refused_while_another_task_reads_leaves_the_stream_going(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    headers = {"x-mock-chunks": "3", "x-mock-chunk-delay-ms": "600"}
    plain = await _anext_refused_while_a_task_reads(
        await astream_call(aclient, extra_headers=headers)
    )
    instrument()
    stream = await astream_call(aclient, extra_headers=headers)
    traced = await _anext_refused_while_a_task_reads(stream)
    assert traced == plain
    assert plain[1][-2:] == [" w3", None]  # read on to the end, without us as with us
    assert (telemetry.span().attributes or {})["openai_usage.stream.outcome"] == "completed"


class _SlowAsyncClose(HTTP.AsyncHTTPTransport):  # type: ignore[misc,name-defined,unused-ignore]
    """`_SlowClose` for async clients: the reading task runs while `close()` awaits."""

    async def handle_async_request(self, request: Any) -> Any:
        response = await super().handle_async_request(request)
        inner = response.stream

        class Body(HTTP.AsyncByteStream):  # type: ignore[misc,name-defined,unused-ignore]
            def __aiter__(self) -> Any:
                return inner.__aiter__()

            async def aclose(self) -> None:
                await inner.aclose()
                await asyncio.sleep(0.3)

        response.stream = Body()
        return response


async def test_an_async_stream_closed_while_another_task_reads_it_ends_closed_not_in_error(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = openai.AsyncOpenAI(
        base_url=server.base_url,
        api_key="sk-test",
        max_retries=0,
        http_client=HTTP.AsyncClient(transport=_SlowAsyncClose()),
    )
    headers = {"x-mock-chunks": "50", "x-mock-chunk-delay-ms": "40"}
    stream = await astream_call(client, extra_headers=headers)

    async def read() -> None:
        async for _ in stream:
            pass

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0.2)
    await stream.close()  # the reading task's next read fails while this awaits
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for a closed stream
        await reader
    await client.close()
    span = telemetry.span()
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "closed"
    assert span.status.status_code is StatusCode.UNSET


async def test_async_span_is_never_current_between_reads(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        stream = await astream_call(aclient)
        assert trace.get_current_span() is caller
        async for _ in stream:
            assert trace.get_current_span() is caller
    assert len(telemetry.spans()) == 2


def _usage_beside_choices(request: Any) -> Any:
    """A compatible server that, asked for usage, puts it on the last chunk with choices
    (no usage-only chunk), and sends nothing of it otherwise."""
    asked = b'"include_usage":true' in request.content.replace(b" ", b"")
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    base = {"id": "chatcmpl-beside", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini"}  # fmt: skip
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}]},
    ]
    if asked:
        chunks[-1]["usage"] = usage
    return sse_reply(chunks)


def test_injected_usage_sent_beside_choices_is_read_and_hidden_from_the_caller(
    instrument: Any, telemetry: Telemetry
) -> None:
    from openai.resources.chat.completions import Completions

    plain_create = Completions.create
    instrument()
    client = served_by(_usage_beside_choices)
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with suppress_instrumentation():  # else `post()` traces the SDK's own method too
        plain = [c.to_dict() for c in plain_create(client.chat.completions, **request)]
    traced = list(client.chat.completions.create(**request))
    assert [c.to_dict() for c in traced] == plain
    assert traced[-1].usage is None
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 9
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["openai_usage.usage.source"] == "response"
    client.close()


def test_a_rejection_is_remembered_for_that_server_only_not_every_port_of_its_host(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    # Two servers on one host (a local gateway on one port, a model server on another):
    # the one refusing `stream_options` must not cost the other its billed usage.
    with LocalOpenAIServer() as other:
        other_client = openai.OpenAI(base_url=other.base_url, api_key="local", max_retries=0)
        refused = {**USAGE_HEADERS, "x-mock-scenario": "reject_stream_options"}
        list(stream_call(other_client, extra_headers=refused))
        assert [("stream_options" in r.body) for r in other.requests] == [True, False]
        other_client.close()
    server.clear()
    list(stream_call(client))
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    assert (telemetry.spans()[-1].attributes or {})["openai_usage.usage.source"] == "response"


# How servers refuse an unknown `stream_options`: Mistral's API (a 422, its message a
# pydantic error list), a FastAPI server (`detail`), an axum one (TGI: plain text). openai
# 3.x puts only a string `error.message` in the exception's text: the rest is in its body.
REFUSALS = {
    "mistral_422": (
        422,
        {
            "object": "error",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
            "message": {
                "detail": [
                    {
                        "type": "extra_forbidden",
                        "msg": "Extra inputs are not permitted",
                        "loc": ["body", "stream_options", "include_usage"],
                    }
                ]
            },
        },
    ),
    "fastapi_400": (400, {"detail": "Unrecognized request argument supplied: stream_options"}),
    "axum_422": (422, "Failed to deserialize the JSON body: unknown field `stream_options`"),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refusal_naming_stream_options_in_any_shape_is_retried_without_them(
    instrumented: Any, telemetry: Telemetry, refusal: str
) -> None:
    # Without the retry, every stream to such a server fails with our `stream_options`.
    status, reply = REFUSALS[refusal]
    bodies: list[dict[str, Any]] = []

    def handler(request: Any) -> Any:
        body = json.loads(request.content)
        bodies.append(body)
        if "stream_options" in body:
            if isinstance(reply, str):
                return HTTP.Response(status, text=reply)
            return HTTP.Response(status, json=reply)
        chunk = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1,
                 "model": "mistral-small-latest"}  # fmt: skip
        delta = {"index": 0, "delta": {"role": "assistant", "content": "Hi"}}
        usage = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
        last = {"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}
        return sse_reply(
            [{**chunk, "choices": [delta]}, {**chunk, "choices": [last], "usage": usage}]
        )

    client = served_by(handler)
    for _ in range(2):
        chunks = list(stream_call(client, model="mistral-small-latest", extra_headers={}))
        assert chunks[-1].choices[0].finish_reason == "stop"
    assert [("stream_options" in b) for b in bodies] == [True, False, False]
    spans = telemetry.spans()
    assert len(spans) == 2
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert (spans[-1].attributes or {})["gen_ai.usage.input_tokens"] == 7


def _chunks_with_content(pieces: list[Any]) -> list[dict[str, Any]]:
    """A chat stream (no usage) whose content deltas are `pieces`, then `stop`."""
    base = {"id": "chatcmpl-odd", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini"}  # fmt: skip
    deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
    chunks = [{**base, "choices": [{"index": 0, "delta": d}]} for d in deltas]
    return [*chunks, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]


@pytest.mark.parametrize("odd", [5, 1.5, True, ["x"]], ids=["int", "float", "bool", "list"])
def test_a_content_delta_that_is_not_text_leaves_the_estimate_and_captured_output_whole(
    instrument: Any,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    odd: Any,
) -> None:
    """A broken server's `"content": 5` amid text (the SDK hands it on as it came): the
    stream is estimated and captured as if that chunk held no text, and nothing of ours
    warns (joining it with the text used to drop the whole estimate)."""
    from opentelemetry.instrumentation.openai_usage import errors

    monkeypatch.setattr(errors, "_logged", set())  # each of our warnings is logged once
    instrument(capture_message_content="span_only")
    seen = []
    with caplog.at_level("WARNING", "opentelemetry.instrumentation.openai_usage"):
        for pieces in (["Hello", " there"], ["Hello", odd, " there"]):
            client = served_by(lambda _, p=pieces: sse_reply(_chunks_with_content(p)))
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            contents = [c.choices[0].delta.content for c in stream]
            client.close()
            assert contents == ["", *pieces, None]
            seen.append(dict(telemetry.spans()[-1].attributes or {}))
    assert [r.getMessage() for r in caplog.records] == []
    plain, odd_one = seen
    assert odd_one["openai_usage.usage.source"] == "estimate"
    assert odd_one["gen_ai.usage.output_tokens"] == plain["gen_ai.usage.output_tokens"] == 2
    (message,) = json.loads(str(odd_one["gen_ai.output.messages"]))
    assert message["parts"] == [{"type": "text", "content": "Hello there"}]
