"""Endpoints beyond chat `create`: embeddings, legacy completions, chat `parse`, Azure
deployments and the module-level client. Through the real SDK against the local server.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import logging
import time
import typing
from typing import Any

import openai
import pytest
import wrapt
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import (
    API_KEY,
    AZURE_API_VERSION,
    AZURE_KEY,
    HTTP,
    MESSAGES,
    OPENAI_MAJOR,
    Telemetry,
    collect,
    is_azure,
    make_client,
    needs_responses,
    served_by,
)

TOKEN_USAGE = "gen_ai.client.token.usage"
LOGGER = "opentelemetry.instrumentation.openai_usage"
# What wrapt puts in place of a patched method.
WRAPT_WRAPPERS = (wrapt.FunctionWrapper, wrapt.BoundFunctionWrapper)


def tokens_by_type(telemetry: Telemetry) -> dict[str, Any]:
    return {p.attributes["gen_ai.token.type"]: p for p in telemetry.points(TOKEN_USAGE)}


# -- embeddings ----------------------------------------------------------------------------


def check_embeddings_span(telemetry: Telemetry, client: Any, result: Any, dimensions: int) -> None:
    span = telemetry.span()
    assert span.name == "embeddings text-embedding-3-small"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.provider.name"] == (
        "azure.ai.openai" if is_azure(client) else "openai"
    )
    assert attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert "gen_ai.usage.output_tokens" not in attributes
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.embeddings.dimension.count"] == dimensions
    assert len(result.data[0].embedding) == dimensions
    points = tokens_by_type(telemetry)
    assert set(points) == {"input"}
    assert points["input"].sum == result.usage.prompt_tokens
    assert points["input"].attributes["gen_ai.operation.name"] == "embeddings"


def test_embeddings_record_input_tokens_and_dimensions(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    result = any_client.embeddings.create(
        model="text-embedding-3-small", input=["a b c", "d"], dimensions=16
    )
    check_embeddings_span(telemetry, any_client, result, 16)
    assert result.usage.prompt_tokens == 4


async def test_async_embeddings_record_input_tokens_and_dimensions(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    result = await any_aclient.embeddings.create(model="text-embedding-3-small", input="a b")
    check_embeddings_span(telemetry, any_aclient, result, 8)


def test_embeddings_encoding_format_is_recorded_and_base64_vectors_measured(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    result = client.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="base64", dimensions=12
    )
    assert isinstance(result.data[0].embedding, str)  # as the caller asked, undecoded
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.request.encoding_formats"] == ("base64",)
    assert attributes["gen_ai.embeddings.dimension.count"] == 12


# -- legacy completions --------------------------------------------------------------------


def test_legacy_completion_records_billed_usage(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    result = any_client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7
    )
    span = telemetry.span()
    assert span.name == "text_completion gpt-3.5-turbo-instruct"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "text_completion"
    assert attributes["gen_ai.request.max_tokens"] == 7
    assert attributes["gen_ai.response.id"] == result.id
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert attributes["openai_usage.usage.source"] == "response"
    assert "openai.api.type" not in attributes


async def test_async_legacy_completion_stream_gets_usage_and_hides_the_usage_chunk(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    stream = await any_aclient.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say this is a test", stream=True
    )
    assert isinstance(stream, openai.AsyncStream)
    chunks = [c async for c in stream]
    assert chunks and all(c.usage is None for c in chunks)  # the usage chunk stays hidden
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["openai_usage.stream.include_usage_injected"] is True
    assert attributes["gen_ai.usage.output_tokens"] > 0


# -- chat parse ----------------------------------------------------------------------------


class Answer(BaseModel):
    answer: str


JSON_REPLY = {"x-mock-reply": '{"answer": "2"}'}


needs_parse = pytest.mark.skipif(
    not hasattr(openai.resources.chat.completions.Completions, "parse"),
    reason="chat.completions.parse arrived in openai 1.92",
)


@needs_parse
def test_chat_parse_is_traced_with_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    result = client.chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Answer, extra_headers=JSON_REPLY
    )
    assert isinstance(result.choices[0].message.parsed, Answer)
    span = telemetry.span()
    assert span.name == "chat gpt-4o-mini"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.output.type"] == "json"
    assert attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert attributes["openai_usage.usage.source"] == "response"


@needs_parse
async def test_async_chat_parse_is_traced_with_usage(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    result = await aclient.chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Answer, extra_headers=JSON_REPLY
    )
    assert isinstance(result.choices[0].message.parsed, Answer)
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens


# A `parse(to=...)` type every SDK line and Python takes: openai 1.x unpacks a dict type's
# arguments (a bare `dict` fails), and on Python 3.10 `dict[str, Any]` passes for a class
# in the SDK's `isinstance(cast_to, type)` check, then fails its `issubclass`.
_BODY_AS_DICT = typing.Dict[str, Any]  # noqa: UP006


def _stopped(finish: str, output_tokens: int) -> Any:
    """A reply stopped by `max_tokens` or the content filter: billed in full, but `parse()`
    cannot use it."""

    def handler(request: Any) -> Any:
        body = {
            "id": "chatcmpl-stopped", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": '{"answer": "tw'}}],
            "usage": {"prompt_tokens": 40, "completion_tokens": output_tokens,
                      "total_tokens": 40 + output_tokens},
        }  # fmt: skip
        return HTTP.Response(200, json=body)

    return handler


_cut_off = _stopped("length", 100)


@needs_parse
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("finish", "error", "output_tokens"),
    [
        ("length", "LengthFinishReasonError", 100),
        # openai 1.x and 2.x raise this one without the completion (3.x puts it on the
        # exception): the span still has the usage the server billed.
        ("content_filter", "ContentFilterFinishReasonError", 7),
    ],
)
async def test_a_parse_the_sdk_fails_after_the_reply_keeps_the_billed_usage(
    instrumented: Any,
    telemetry: Telemetry,
    kind: str,
    finish: str,
    error: str,
    output_tokens: int,
) -> None:
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
    request["response_format"] = Answer
    options: dict[str, Any] = {"base_url": "http://stopped.invalid/v1", "api_key": API_KEY}
    options["max_retries"] = 0
    transport = HTTP.MockTransport(_stopped(finish, output_tokens))
    expected = getattr(openai, error)
    if kind == "sync":
        client: Any = openai.OpenAI(http_client=HTTP.Client(transport=transport), **options)
        with pytest.raises(expected) as raised:
            client.chat.completions.parse(**request)
    else:
        client = openai.AsyncOpenAI(http_client=HTTP.AsyncClient(transport=transport), **options)
        with pytest.raises(expected) as raised:
            await client.chat.completions.parse(**request)
    assert type(raised.value) is expected  # the SDK's own exception
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == error
    assert attributes["gen_ai.usage.input_tokens"] == 40
    assert attributes["gen_ai.usage.output_tokens"] == output_tokens
    assert attributes["gen_ai.response.finish_reasons"] == (finish,)
    assert attributes["openai_usage.usage.source"] == "response"
    # A failed call: its billed tokens are counted by the usage counters, not put in the
    # token histogram, which the conventions keep for operations that succeeded.
    assert telemetry.points("gen_ai.client.token.usage") == []
    counted = [
        p.value
        for kind in ("input", "output")
        for p in telemetry.points(f"gen_ai.client.inference.usage.{kind}_tokens")
    ]
    assert counted == [40, output_tokens]


@needs_parse
@pytest.mark.parametrize("helper", ["with_raw_response", "with_streaming_response"])
@pytest.mark.parametrize(
    ("finish", "error"),
    [("length", "LengthFinishReasonError"), ("content_filter", "ContentFilterFinishReasonError")],
)
def test_a_raw_parse_cut_short_ends_the_span_in_error_as_the_call_does(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    helper: str,
    finish: str,
    error: str,
) -> None:
    # The SDK's `parse()` raises after the reply, through a raw response as without one:
    # the span is in error with that error and keeps the billed usage, as for `parse()`.
    headers = {"x-mock-finish": finish, "x-mock-reply": '{"answer": 4'}
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "response_format": Number}
    raw = getattr(client.chat.completions, helper).parse(**request, extra_headers=headers)
    with pytest.raises(openai.OpenAIError) as raised:
        if helper == "with_streaming_response":
            with raw as response:
                try:
                    response.parse()
                finally:
                    body = response.http_response.json()
        else:
            body = raw.http_response.json()
            raw.parse()
    assert type(raised.value).__name__ == error
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == error
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.response.finish_reasons"] == (finish,)


needs_beta_parse = pytest.mark.skipif(
    not hasattr(openai.resources.beta, "chat"),
    reason="beta.chat.completions.parse is in openai 1.40 to 1.91 only",
)


@needs_beta_parse
def test_beta_chat_parse_of_older_sdks_is_traced_with_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    result = client.beta.chat.completions.parse(  # type: ignore[attr-defined,unused-ignore]
        model="gpt-4o-mini", messages=MESSAGES, response_format=Answer, extra_headers=JSON_REPLY
    )
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert attributes["openai_usage.usage.source"] == "response"


def test_a_beta_method_that_calls_create_is_told_apart() -> None:
    # openai 1.40 to 1.49's `beta.chat.completions.parse` calls `chat.completions.create`:
    # its wrapper passes that inner call through, or there would be two spans, and the
    # tokens counted twice.
    from opentelemetry.instrumentation.openai_usage import _posts

    class Resource:
        def posts(self) -> Any:
            return self._post("/chat/completions")  # type: ignore[attr-defined]

        def delegates(self) -> Any:
            return self._client.chat.completions.create()  # type: ignore[attr-defined]

    assert _posts(Resource.posts)
    assert not _posts(Resource.delegates)


def _beta_parse_delegates() -> bool:
    from opentelemetry.instrumentation.openai_usage import _posts

    beta = getattr(openai.resources, "beta", None)
    completions = getattr(getattr(beta, "chat", None), "completions", None)
    parse = getattr(getattr(completions, "Completions", None), "parse", None)
    return parse is not None and not _posts(parse)


@pytest.mark.skipif(
    not _beta_parse_delegates(), reason="only openai 1.40 to 1.49's beta parse calls create"
)
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_beta_parse_calling_create_fails_in_its_one_span(
    instrumented: Any, telemetry: Telemetry, kind: str
) -> None:
    # There `parse()` raises `LengthFinishReasonError` after `create` returned: the call's
    # one span is in error, with the usage billed, not the span of a `create` that went well.
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
    request["response_format"] = Answer
    options: dict[str, Any] = {"base_url": "http://cut.invalid/v1", "api_key": API_KEY}
    options["max_retries"] = 0
    if kind == "sync":
        client: Any = openai.OpenAI(
            http_client=HTTP.Client(transport=HTTP.MockTransport(_cut_off)), **options
        )
        with pytest.raises(openai.LengthFinishReasonError):
            client.beta.chat.completions.parse(**request)
    else:
        client = openai.AsyncOpenAI(
            http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(_cut_off)), **options
        )
        with pytest.raises(openai.LengthFinishReasonError):
            await client.beta.chat.completions.parse(**request)
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "LengthFinishReasonError"
    assert attributes["gen_ai.output.type"] == "json"
    assert attributes["gen_ai.usage.output_tokens"] == 100
    assert sorted(p.sum for p in telemetry.points("gen_ai.client.token.usage")) == [40, 100]


needs_beta_responses = pytest.mark.skipif(
    not hasattr(getattr(openai.resources, "beta", None), "responses"),
    reason="beta.responses arrived in openai 3",
)


@needs_beta_responses
@pytest.mark.parametrize("stream", [False, True])
def test_beta_responses_create_is_traced_with_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool
) -> None:
    result = client.beta.responses.create(  # type: ignore[attr-defined,unused-ignore]
        model="gpt-4o-mini", input="hi", stream=stream
    )
    if stream:
        events = list(result)
        usage = events[-1].response.usage
    else:
        usage = result.usage
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.usage.input_tokens"] == usage.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert attributes["openai_usage.usage.source"] == "response"


@needs_beta_responses
@pytest.mark.parametrize("stream", [False, True])
def test_beta_responses_create_kept_from_before_instrument_is_traced_with_usage(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool
) -> None:
    """openai 3.x's `beta.responses.create` posts to `/responses?beta=true`: kept from before
    `instrument()`, its request reaches the client's `request()` with that path."""
    kept = client.beta.responses.create  # type: ignore[attr-defined,unused-ignore]
    instrument()
    result = kept(model="gpt-4o-mini", input="hi", stream=stream)
    usage = list(result)[-1].response.usage if stream else result.usage
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert attributes["openai.api.type"] == "responses"
    assert attributes["gen_ai.usage.input_tokens"] == usage.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert attributes["openai_usage.usage.source"] == "response"


@needs_beta_responses
async def test_async_beta_responses_create_kept_from_before_instrument_is_traced(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    kept = aclient.beta.responses.create  # type: ignore[attr-defined,unused-ignore]
    instrument()
    result = await kept(model="gpt-4o-mini", input="hi")
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.output_tokens
    assert attributes["openai_usage.usage.source"] == "response"


# -- Azure deployments and the module-level client ------------------------------------------


def test_azure_deployment_client_reports_deployment_and_served_model(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        azure_deployment="my-gpt4o-deployment",
        api_key=AZURE_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )
    result = client.chat.completions.create(
        model="my-gpt4o-deployment",
        messages=MESSAGES,
        extra_headers={"x-mock-response-model": "gpt-4o-2024-11-20"},
    )
    assert server.requests[-1].path.startswith("/openai/deployments/my-gpt4o-deployment/")
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert attributes["gen_ai.request.model"] == "my-gpt4o-deployment"
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-11-20" == result.model
    client.close()


def test_azure_deployment_stands_for_the_model_when_none_is_given(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        azure_deployment="text-embedding-3-small",
        api_key=AZURE_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )
    # The model goes in the body only when given; the deployment is in the URL.
    client.embeddings.create(model="", input="a b")
    span = telemetry.span()
    assert (span.attributes or {})["gen_ai.request.model"] == "text-embedding-3-small"
    assert span.name == "embeddings text-embedding-3-small"
    client.close()


def test_a_long_azure_deployment_standing_for_the_model_is_bounded_as_a_model_is(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        azure_deployment="d" * 1000,
        api_key=AZURE_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )
    client.embeddings.create(model="", input="a b")
    span = telemetry.span()
    assert (span.attributes or {})["gen_ai.request.model"] == "d" * 256
    assert span.name == "embeddings " + "d" * 256
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["gen_ai.request.model"] == "d" * 256
    client.close()


def test_module_level_client_is_traced(
    instrumented: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openai, "api_key", API_KEY)
    monkeypatch.setattr(openai, "base_url", server.base_url + "/")
    monkeypatch.setattr(openai, "max_retries", 0)
    monkeypatch.setattr(openai, "_client", None)  # built lazily from the settings above
    result = openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stream = openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    list(stream)
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
    for span in spans:
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
        assert attributes["openai_usage.usage.source"] == "response"
        assert attributes["server.port"] == server.port
    assert OPENAI_MAJOR >= 1


# -- stream helpers: their close() bypasses the proxy, and still ends the span -------------

LONG = {"x-mock-reply": "one two three four five six seven eight"}


def chat_stream_helper(client: Any, where: str) -> Any:
    """`chat.completions.stream`, or `beta.chat.completions.stream` (openai 1.40 to 1.x):
    the same helper, over `create` of its own resource, skipped where the SDK lacks it."""
    owner = client.beta if where == "beta" else client
    helper = getattr(getattr(getattr(owner, "chat", None), "completions", None), "stream", None)
    if helper is None:
        prefix = "beta." if where == "beta" else ""
        pytest.skip(f"this openai release has no {prefix}chat.completions.stream()")
    return helper


@pytest.mark.parametrize("where", ["chat", "beta"])
def test_chat_stream_helper_read_to_the_end_records_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, where: str
) -> None:
    with chat_stream_helper(client, where)(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=LONG
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    # Injected usage is hidden from the helper too: it sees what it would see without us.
    assert final.usage is None
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.usage.output_tokens"] == 8  # the server's count
    assert attributes["openai_usage.stream.outcome"] == "completed"


@pytest.mark.parametrize("where", ["chat", "beta"])
def test_chat_stream_helper_left_early_ends_the_span_with_what_was_read(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, where: str
) -> None:
    with chat_stream_helper(client, where)(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=LONG
    ) as stream:
        for event in stream:
            if event.type == "content.delta" and event.delta:
                break
        assert telemetry.spans() == []  # still open inside the block
    # Left the block: the helper closed the HTTP response itself, and the span ended then.
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.usage.output_tokens"] >= 1


@pytest.mark.parametrize("where", ["chat", "beta"])
async def test_async_chat_stream_helper_left_early_ends_the_span(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI, where: str
) -> None:
    async with chat_stream_helper(aclient, where)(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=LONG
    ) as stream:
        async for event in stream:
            if event.type == "content.delta":
                break
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"


def test_a_stream_helper_left_after_uninstrument_still_ends_its_span_as_closed(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # Only the helper's `close()` tells that it ended (it closes the HTTP response, not the
    # stream we watch): uninstrumenting meanwhile must not leave its span to the collector.
    helper = chat_stream_helper(client, "chat")
    stream_class = importlib.import_module("openai.lib.streaming.chat").ChatCompletionStream
    with helper(model="gpt-4o-mini", messages=MESSAGES, extra_headers=LONG) as stream:
        for event in stream:
            if event.type == "content.delta" and event.delta:
                break
        instrumented.uninstrument()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["openai_usage.usage.source"] == "estimate"

    del stream, event
    collect()
    instrumented.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    assert isinstance(stream_class.__dict__["close"], WRAPT_WRAPPERS)
    instrumented.uninstrument()  # nothing open now: the SDK's own `close` again
    assert not isinstance(stream_class.__dict__["close"], WRAPT_WRAPPERS)


async def test_async_a_stream_helper_left_after_uninstrument_still_ends_its_span_as_closed(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    helper = chat_stream_helper(aclient, "chat")
    async with helper(model="gpt-4o-mini", messages=MESSAGES, extra_headers=LONG) as stream:
        async for event in stream:
            if event.type == "content.delta" and event.delta:
                break
        instrumented.uninstrument()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"


# A JSON reply cut short by the token limit, as `max_tokens` cuts one.
CUT_JSON = {"x-mock-reply": '{"answer": "one two', "x-mock-finish": "length"}


@pytest.mark.parametrize("where", ["chat", "beta"])
def test_a_parsed_stream_cut_by_the_token_limit_ends_its_span_with_the_helpers_error(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, where: str
) -> None:
    helper = chat_stream_helper(client, where)
    # The helper raises it while it is read, above the stream we watch: the call failed.
    with (
        pytest.raises(openai.LengthFinishReasonError) as raised,
        helper(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Answer, extra_headers=CUT_JSON
        ) as stream,
    ):
        for _ in stream:
            pass
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "LengthFinishReasonError"
    assert attributes["openai_usage.stream.outcome"] == "error"
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    # The helper raised at the last choice chunk, before the usage chunk was read.
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert [event.name for event in span.events] == ["exception"]
    assert raised.value.completion.choices[0].finish_reason == "length"  # the SDK's own


async def test_an_async_parsed_stream_cut_by_the_token_limit_ends_its_span_with_the_error(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    helper = chat_stream_helper(aclient, "chat")
    with pytest.raises(openai.LengthFinishReasonError):
        async with helper(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Answer, extra_headers=CUT_JSON
        ) as stream:
            async for _ in stream:
                pass
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "LengthFinishReasonError"


def test_an_error_of_the_callers_own_in_a_stream_helpers_block_is_not_the_calls(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with (
        pytest.raises(KeyError),
        chat_stream_helper(client, "chat")(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=LONG
        ) as stream,
    ):
        for _ in stream:
            raise KeyError("the caller's")
    span = telemetry.span()
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "closed"


@needs_responses
def test_responses_stream_helper_left_early_ends_the_span(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="hi", extra_headers=LONG) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["openai_usage.usage.source"] == "estimate"


@needs_responses
async def test_async_responses_stream_helper_left_early_ends_the_span(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    async with aclient.responses.stream(
        model="gpt-4o-mini", input="hi", extra_headers=LONG
    ) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                break
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"


# -- with_raw_response ---------------------------------------------------------------------


def test_with_raw_response_records_usage_and_parse_returns_the_same_object(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="a b")
    assert raw.headers["x-request-id"].startswith("req_")
    parsed = raw.parse()
    assert parsed is raw.parse()  # the SDK's cache: what we read is what the caller gets
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == parsed.usage.prompt_tokens
    assert attributes["openai_usage.usage.source"] == "response"


class Number(BaseModel):
    answer: int


@needs_parse
def test_a_raw_parse_whose_reply_fails_validation_still_records_usage_and_logs_nothing(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, caplog: Any
) -> None:
    # The reply does not fit `response_format`: the caller's own `parse()` raises the
    # SDK's error (which quotes the reply), so none of it is ours to log.
    reply = '{"answer": "forty-two, said the secret reply"}'
    with caplog.at_level(logging.DEBUG):
        raw = client.chat.completions.with_raw_response.parse(
            model="gpt-4o-mini",
            messages=MESSAGES,
            response_format=Number,
            extra_headers={"x-mock-reply": reply},
        )
        with pytest.raises(Exception) as raised:
            raw.parse()
    assert type(raised.value).__name__ == "ValidationError"
    # Nothing of ours (the SDK's own debug log shows the request's headers, as without us).
    ours = [r for r in caplog.records if r.name.startswith("opentelemetry.instrumentation")]
    assert not any("secret reply" in r.getMessage() for r in ours)
    assert not [r for r in ours if r.levelno >= logging.WARNING]
    attributes = dict(telemetry.span().attributes or {})
    assert (
        attributes["gen_ai.usage.input_tokens"]
        == raw.http_response.json()["usage"]["prompt_tokens"]
    )
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)


@needs_parse
@pytest.mark.parametrize("capture", ["no_content", "event_only", "span_only"])
def test_a_reply_a_parse_validation_error_quotes_is_not_recorded_unless_content_is_captured(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, capture: str
) -> None:
    # pydantic's error quotes the reply that failed `response_format` (`input_value=...`):
    # content, which must not reach the span while content is not captured on it.
    instrument(capture_message_content=capture)
    reply = '{"answer": "My card number is 4111 1111 1111 1111"}'
    with pytest.raises(Exception) as raised:
        client.chat.completions.parse(
            model="gpt-4o-mini",
            messages=MESSAGES,
            response_format=Number,
            extra_headers={"x-mock-reply": reply},
        )
    assert type(raised.value).__name__ == "ValidationError"
    assert "4111 1111" in str(raised.value)  # the caller's exception is the SDK's, unchanged
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    description = span.status.description or ""
    assert "1 validation error for Number" in description  # what went wrong, and where
    assert "answer" in description and "type=int_parsing" in description
    if capture == "span_only":  # captured on the span anyway: the error keeps its full text
        assert "4111 1111" in description
    else:
        assert "4111 1111" not in span.to_json()


def test_a_reply_quoted_by_the_cause_of_a_strict_validation_error_is_not_recorded(
    instrumented: Any, telemetry: Telemetry
) -> None:
    # With strict response validation the SDK raises its own error from pydantic's, whose
    # text (in the recorded stack trace) quotes the malformed reply.
    def handler(request: Any) -> Any:
        message = {"content": ["My card number is 4111 1111 1111 1111"]}  # no role
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m"}
        return HTTP.Response(200, json={**body, "choices": [choice]})

    client = openai.OpenAI(
        base_url="http://served.invalid/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(handler)),
        _strict_response_validation=True,
    )
    with pytest.raises(openai.APIResponseValidationError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "4111 1111" in str(raised.value.__cause__)
    text = telemetry.span().to_json()
    assert "ChatCompletion" in text and "type=missing" in text
    assert "4111 1111" not in text
    client.close()


# -- raw responses read later: with_streaming_response, streamed with_raw_response ------------


def test_with_streaming_response_parse_records_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        assert response.headers["x-request-id"].startswith("req_")
        parsed = response.parse()
        assert parsed is response.parse()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == parsed.usage.prompt_tokens
    assert attributes["openai_usage.usage.source"] == "response"


def test_with_streaming_response_read_raw_ends_the_span_on_leaving_the_block(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        lines = list(response.iter_lines())  # the caller reads the body itself
        assert lines
        assert telemetry.spans() == []
    span = telemetry.span()
    assert span.end_time is not None
    assert "gen_ai.usage.input_tokens" not in (span.attributes or {})  # never read by us


@pytest.mark.parametrize("read", ["parse_to_dict", "parse_to_model", "read", "text", "json"])
def test_a_streaming_response_body_the_caller_read_gives_the_span_its_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, read: str
) -> None:
    # `parse(to=...)`, `read()`, `json()`, `text()`: the body is read whole, by the caller;
    # its usage is the billed one, as `parse()` gives it. (`iter_lines()` keeps nothing.)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        if read == "parse_to_dict":
            response.parse(to=_BODY_AS_DICT)
        elif read == "parse_to_model":
            response.parse(to=openai.types.chat.ChatCompletion)
        else:
            getattr(response, read)()
        read_ns = time.time_ns()
        time.sleep(0.05)  # the caller's own work, once the body is read: not the call's
    body = response.http_response.json()
    span = telemetry.span()
    assert span.end_time is not None and span.end_time <= read_ns
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.response.id"] == body["id"]
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("read", ["read", "json", "parse_to_dict"])
def test_an_error_body_in_a_200_the_caller_read_itself_ends_the_span_in_error(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, read: str
) -> None:
    # As through `parse()`: a 200 whose body is `{"error": ...}` is a failed call.
    headers = {"x-mock-scenario": "error_body_200"}
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
    ) as response:
        if read == "parse_to_dict":
            response.parse(to=_BODY_AS_DICT)
        else:
            getattr(response, read)()
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "server_error"


@needs_parse
@pytest.mark.parametrize("helper", ["with_raw_response", "with_streaming_response"])
def test_a_raw_parse_of_an_error_body_in_a_200_ends_the_span_in_error(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, helper: str
) -> None:
    # `parse(response_format=...)` fails on the error body (the SDK's own error, the
    # caller's to see): the body, read as JSON, still says the call failed.
    headers = {"x-mock-scenario": "error_body_200"}
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "response_format": Number}
    raw = getattr(client.chat.completions, helper).parse(**request, extra_headers=headers)
    with pytest.raises(Exception) as raised:  # the SDK's own, whatever it is
        if helper == "with_streaming_response":
            with raw as response:
                response.parse()
        else:
            raw.parse()
    assert not isinstance(raised.value, openai.APIStatusError)  # the reply was a 200
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "server_error"


@pytest.mark.parametrize("body", [b"", b"upstream timed out"], ids=["empty", "text"])
@pytest.mark.parametrize("helper", ["create", "with_raw_response", "with_streaming_response"])
def test_a_200_body_that_is_no_json_ends_the_span_in_error_whichever_way_it_was_read(
    instrumented: Any, telemetry: Telemetry, helper: str, body: bytes
) -> None:
    """A 200 labelled JSON whose body is none (a proxy's text, an empty body): the caller
    gets the SDK's decoding error, from `create()` or from its own `parse()`, and the span
    is in error with that error's type, whichever way the call was made."""
    headers = {"content-type": "application/json"}
    client = served_by(lambda _: HTTP.Response(200, content=body, headers=headers))
    request = {"model": "gpt-4o-mini", "messages": MESSAGES}
    with pytest.raises(ValueError) as raised:  # JSONDecodeError, a ValueError
        if helper == "create":
            client.chat.completions.create(**request)
        elif helper == "with_raw_response":
            client.chat.completions.with_raw_response.create(**request).parse()
        else:
            with client.chat.completions.with_streaming_response.create(**request) as response:
                response.parse()
    client.close()
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == type(raised.value).__name__
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == type(raised.value).__name__


async def test_an_async_streaming_response_body_the_caller_read_gives_the_span_its_usage(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    async with aclient.embeddings.with_streaming_response.create(
        model="text-embedding-3-small", input="a b", encoding_format="float"
    ) as response:
        body = await response.parse(to=_BODY_AS_DICT)
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attributes["gen_ai.embeddings.dimension.count"] == len(body["data"][0]["embedding"])


@pytest.mark.parametrize("read", ["iter_lines", "read", "nothing", "close"])
def test_a_streamed_body_the_caller_reads_itself_ends_its_span_with_a_stream_outcome(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, read: str
) -> None:
    # A stream's span always says how it ended, also when the caller reads the bytes.
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as response:
        if read == "iter_lines":
            list(response.iter_lines())
        elif read == "read":
            response.read()
        elif read == "close":
            response.close()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["openai_usage.stream.include_usage_injected"] is False


@pytest.mark.parametrize(
    ("stream", "twice"),
    [(True, "iter_lines"), (True, "read"), (True, "parse"), (False, "parse"), (False, "read")],
)
def test_a_body_read_twice_is_the_callers_mistake_not_a_failed_call(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool, twice: str
) -> None:
    # The body came whole; reading it again after `iter_lines()` raises the HTTP
    # library's (or the SDK's) "already consumed" before anything is read: the call
    # did not fail, and its span says so when the block is left.
    create = client.chat.completions.with_streaming_response.create
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
    with pytest.raises(Exception) as raised, create(**request) as response:
        assert list(response.iter_lines())
        if twice == "iter_lines":
            list(response.iter_lines())
        elif twice == "parse" and stream:
            list(response.parse())
        else:
            getattr(response, twice)()
    assert "Consumed" in type(raised.value).__name__
    span = telemetry.span()
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in (span.attributes or {})
    if stream:
        assert (span.attributes or {})["openai_usage.stream.outcome"] == "closed"


def test_a_streamed_body_the_caller_cannot_decode_is_not_a_failed_call(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # `json()` of an SSE body, `parse(to=str)` of a stream: the caller's own mistakes,
    # raised after (or without) reading; the stream is then parsed and read as it should be.
    create = client.chat.completions.with_streaming_response.create
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with create(**request) as response:
        with pytest.raises(TypeError):
            response.parse(to=str)
        chunks = list(response.parse())
    with create(**request) as response, pytest.raises(ValueError):
        response.json()
    assert chunks
    parsed, decoded = telemetry.spans()
    assert parsed.status.status_code is StatusCode.UNSET
    assert (parsed.attributes or {})["openai_usage.stream.outcome"] == "completed"
    assert (parsed.attributes or {})["gen_ai.usage.output_tokens"] > 0
    assert decoded.status.status_code is StatusCode.UNSET
    assert "error.type" not in (decoded.attributes or {})


@pytest.mark.parametrize("read", ["iter_lines", "iter_bytes", "read", "text"])
def test_a_body_read_failing_mid_way_ends_the_span_in_error_with_the_callers_exception(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, read: str
) -> None:
    headers = {"x-mock-scenario": "reset_after:2", "x-mock-chunks": "50"}
    create = client.chat.completions.with_streaming_response.create
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with pytest.raises(Exception) as raised, create(**request, extra_headers=headers) as response:
        body = getattr(response, read)()
        if read.startswith("iter_"):
            list(body)
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == type(raised.value).__qualname__
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "error"
    assert [e.name for e in span.events] == ["exception"]


def test_a_streaming_response_parse_failing_to_read_ends_the_span_in_error(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # Not streamed: `parse()` reads the body itself, and the connection breaks under it.
    headers = {"x-mock-scenario": "reset_after:20"}
    create = client.chat.completions.with_streaming_response.create
    request = {"model": "gpt-4o-mini", "messages": MESSAGES}
    with pytest.raises(Exception) as raised, create(**request, extra_headers=headers) as response:
        response.parse()
    assert telemetry.span().status.status_code is StatusCode.ERROR
    assert (telemetry.span().attributes or {})["error.type"] == type(raised.value).__qualname__


@needs_parse
def test_a_streaming_response_parse_failing_validation_keeps_the_reported_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    reply = '{"answer": "not a number"}'
    with client.chat.completions.with_streaming_response.parse(
        model="gpt-4o-mini",
        messages=MESSAGES,
        response_format=Number,
        extra_headers={"x-mock-reply": reply},
    ) as response:
        with pytest.raises(Exception) as raised:
            response.parse()
        body = response.http_response.json()
    assert type(raised.value).__name__ == "ValidationError"
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attributes["openai_usage.usage.source"] == "response"


@pytest.mark.parametrize("read", ["iter_lines", "read"])
async def test_async_body_read_failing_mid_way_ends_the_span_in_error(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI, read: str
) -> None:
    headers = {"x-mock-scenario": "reset_after:2", "x-mock-chunks": "50"}
    with pytest.raises(Exception) as raised:
        async with aclient.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers
        ) as response:
            if read == "read":
                await response.read()
            else:
                [line async for line in response.iter_lines()]
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == type(raised.value).__qualname__


async def test_async_with_streaming_response_stream_parse_records_usage(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    async with aclient.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as response:
        stream = await response.parse()
        assert isinstance(stream, openai.AsyncStream)
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "completed"
    # Raw calls are sent as written (the caller may read the bytes): the usage is estimated.
    assert attributes["openai_usage.usage.source"] == "estimate"


def test_streamed_with_raw_response_parse_gives_a_traced_stream(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    stream = raw.parse()
    assert isinstance(stream, openai.Stream)
    assert stream is raw.parse()
    list(stream)
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["openai_usage.usage.source"] == "estimate"


@pytest.mark.parametrize("helper", ["with_raw_response", "with_streaming_response"])
def test_a_stream_parsed_to_a_stream_type_of_the_callers_is_traced_as_read(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, helper: str
) -> None:
    # `parse(to=Stream[ChatCompletionChunk])`: the same stream, typed by the caller.
    from openai.types.chat import ChatCompletionChunk

    create = getattr(client.chat.completions, helper).create
    response = create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    if helper == "with_streaming_response":
        response = response.__enter__()
    stream = response.parse(to=openai.Stream[ChatCompletionChunk])
    assert isinstance(stream, openai.Stream)
    assert stream is response.parse(to=openai.Stream[ChatCompletionChunk])
    chunks = list(stream)
    read_ns = time.time_ns()
    assert chunks
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert span.end_time is not None and span.end_time <= read_ns


def test_a_streamed_raw_response_has_a_close_only_if_the_sdks_has_one(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # `with_raw_response` gives a `LegacyAPIResponse`, which has no `close()`: a caller's
    # duck-typed cleanup must skip it, as without us, and leave the stream to be read.
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-mock-chunks": "5"}
    )
    assert hasattr(raw, "close") is hasattr(raw.__wrapped__, "close")
    assert len(list(raw.parse())) == 7
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["gen_ai.usage.output_tokens"] > 0
    # `with_streaming_response` gives an `APIResponse`, which has one: ours ends the span.
    streaming = client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ).__enter__()
    streaming.close()
    assert streaming.http_response.is_closed
    assert len(telemetry.spans()) == 2


def test_a_streamed_raw_response_dropped_after_parse_keeps_its_span_open_while_read(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # `create(...).parse()`: the raw response is gone at once, the stream is read later.
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-mock-chunks": "5"}
    ).parse()
    collect()
    assert telemetry.spans() == []  # still being read: not ended by the raw response
    chunks = list(stream)
    read_ns = time.time_ns()
    span = telemetry.span()
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "completed"
    assert (span.attributes or {})["gen_ai.usage.output_tokens"] > 0
    assert len(chunks) == 7 and span.end_time is not None and span.end_time <= read_ns


@pytest.mark.parametrize("helper", ["with_raw_response", "with_streaming_response"])
def test_a_raw_stream_collected_unread_ends_as_abandoned_when_it_was_returned(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, helper: str
) -> None:
    create = getattr(client.chat.completions, helper).create
    response = create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    if helper == "with_streaming_response":
        response = response.__enter__()  # entered, never left
    returned_ns = time.time_ns()
    time.sleep(0.3)
    del response
    collect()
    span = telemetry.span()
    assert (span.attributes or {})["openai_usage.stream.outcome"] == "abandoned"
    assert span.end_time is not None and span.end_time <= returned_ns


def test_a_raw_stream_the_caller_drops_is_ended_without_waiting_for_a_collection(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    gc.disable()
    try:
        client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )  # dropped at once
        spans = telemetry.spans()
    finally:
        gc.enable()
    assert len(spans) == 1
    assert (spans[0].attributes or {})["openai_usage.stream.outcome"] == "abandoned"


def test_streamed_raw_response_never_parsed_still_ends_its_span(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    raw.http_response.close()
    del raw
    collect()
    assert telemetry.span().end_time is not None


def test_a_failing_raw_response_hook_leaves_parse_working(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.instrumentation.openai_usage import raw_responses

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(raw_responses, "wrap_stream", boom)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as response:
        stream = response.parse()  # ours failed: the SDK's own stream, untouched
        assert type(stream) is openai.Stream
        assert list(stream)
    assert telemetry.span().end_time is not None  # ended when the response was closed


async def test_async_azure_deployment_client_reports_deployment_and_served_model(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        azure_deployment="my-gpt4o-deployment",
        api_key=AZURE_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )
    stream = await client.chat.completions.create(
        model="my-gpt4o-deployment",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-response-model": "gpt-4o-2024-11-20"},
    )
    [c async for c in stream]
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert attributes["gen_ai.request.model"] == "my-gpt4o-deployment"
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-11-20"
    assert attributes["openai_usage.usage.source"] == "response"
    await client.close()


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("my-resource.openai.azure.com", "azure.ai.openai"),
        ("my-resource.openai.azure.us", "azure.ai.openai"),
        ("my-resource.cognitiveservices.azure.cn", "azure.ai.openai"),
        ("llm.internal.example", "openai"),
        # The other providers the conventions name that serve the OpenAI protocol.
        ("api.anthropic.com", "anthropic"),
        ("api.cohere.ai", "cohere"),
        ("us-central1-aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("bedrock-runtime.us-west-2.amazonaws.com", "aws.bedrock"),
        ("bedrock-mantle.us-east-1.api.aws", "aws.bedrock"),
        ("bedrock-runtime.cn-north-1.amazonaws.com.cn", "aws.bedrock"),
        ("bedrock-runtime-fips.us-east-1.amazonaws.com", "aws.bedrock"),
        ("mistral-large-abc.eastus2.models.ai.azure.com", "azure.ai.inference"),
        ("api.moonshot.ai", "moonshot_ai"),
        ("api.moonshot.cn", "moonshot_ai"),
        # A fully qualified name (DNS root's trailing dot) is the same host.
        ("api.groq.com.", "groq"),
        ("my-resource.openai.azure.com.", "azure.ai.openai"),
    ],
)
def test_provider_comes_from_the_host_of_an_openai_compatible_server(
    instrumented: Any, telemetry: Telemetry, host: str, provider: str
) -> None:
    # No network: the SDK's real HTTP client, over a transport that answers 503.
    transport = HTTP.MockTransport(lambda request: HTTP.Response(503, json={"error": {}}))
    client = openai.OpenAI(
        base_url=f"https://{host}/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=transport),
    )
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="some-model", messages=MESSAGES)
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.provider.name"] == provider
    assert attributes["server.address"] == host
    assert attributes["server.port"] == 443


@pytest.mark.skipif(not hasattr(openai, "BedrockOpenAI"), reason="openai 2.x and 3.x only")
def test_a_client_made_for_bedrock_or_vertex_reports_that_provider_through_any_host(
    instrumented: Any, telemetry: Telemetry
) -> None:
    # As an Azure client is Azure's on any host: a Bedrock or Vertex client reached through a
    # proxy or a VPC endpoint still calls that provider.
    from openai import providers

    transport = HTTP.MockTransport(lambda request: HTTP.Response(503, json={"error": {}}))
    options: dict[str, Any] = {"max_retries": 0, "http_client": HTTP.Client(transport=transport)}
    bedrock: dict[str, Any] = {"api_key": API_KEY, "region": "eu-west-1"}
    bedrock["base_url"] = "https://vpce-01.bedrock-runtime.eu-west-1.vpce.amazonaws.com/openai/v1"
    if "endpoint" in inspect.signature(providers.bedrock).parameters:  # openai 3.x
        bedrock["endpoint"] = "runtime"
    clients = [
        openai.BedrockOpenAI(
            api_key=API_KEY, aws_region="us-east-1", base_url="https://llm-proxy.corp.example/v1",
            **options,
        ),
        openai.OpenAI(provider=providers.bedrock(**bedrock), **options),
    ]  # fmt: skip
    if hasattr(providers, "vertex"):  # openai 3.x
        vertex = providers.vertex(
            base_url="https://llm-proxy.corp.example/v1", token_provider=lambda: API_KEY
        )
        clients.append(openai.OpenAI(provider=vertex, **options))
    for client in clients:
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="some-model", input="Hi")
    found = [(s.attributes or {})["gen_ai.provider.name"] for s in telemetry.spans()]
    expected = ["aws.bedrock", "aws.bedrock", "gcp.vertex_ai"][: len(clients)]
    assert found == expected


def test_a_client_whose_base_url_is_changed_reports_the_new_server(
    instrumented: Any, telemetry: Telemetry
) -> None:
    # The server attributes are remembered per base URL: a new URL must not get the old ones.
    transport = HTTP.MockTransport(lambda request: HTTP.Response(503, json={"error": {}}))
    client = openai.OpenAI(
        base_url="https://api.groq.com/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=transport),
    )
    for base_url in (None, "http://llm.internal.example:8080/v1", None):
        if base_url is not None:
            client.base_url = base_url
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="some-model", messages=MESSAGES)
    keys = ("gen_ai.provider.name", "server.address", "server.port")
    found = [tuple((s.attributes or {})[k] for k in keys) for s in telemetry.spans()]
    assert found == [
        ("groq", "api.groq.com", 443),
        ("openai", "llm.internal.example", 8080),
        ("openai", "llm.internal.example", 8080),
    ]


# -- raw responses on every endpoint ---------------------------------------------------------

CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("chat.completions", {"model": "gpt-4o-mini", "messages": MESSAGES}),
    "text_completion": ("completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi"}),
    "embeddings": ("embeddings", {"model": "text-embedding-3-small", "input": "a b"}),
    "responses": ("responses", {"model": "gpt-4o-mini", "input": "Hi"}),
}


def resource(client: Any, path: str) -> Any:
    for name in path.split("."):
        client = getattr(client, name)
    return client


def input_tokens(parsed: Any) -> int:
    usage = parsed.usage
    return int(getattr(usage, "prompt_tokens", None) or usage.input_tokens)


@pytest.mark.parametrize("kind", list(CALLS))
def test_raw_and_streaming_responses_of_every_endpoint_record_usage(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str
) -> None:
    client = make_client(server, "openai")
    path, kwargs = CALLS[kind]
    if not hasattr(client, path.split(".")[0]):
        pytest.skip(f"no {path} in this SDK release")
    raw = resource(client, path).with_raw_response.create(**kwargs)
    first = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    if hasattr(raw, "request_id"):  # openai >= 1.4x
        assert raw.request_id == raw.headers["x-request-id"]
        assert getattr(first, "_request_id", raw.request_id) == raw.request_id
    with resource(client, path).with_streaming_response.create(**kwargs) as response:
        assert response.headers["x-request-id"].startswith("req_")
        second = response.parse()
    spans = telemetry.spans()
    assert len(spans) == 2
    for span, parsed in zip(spans, (first, second), strict=True):
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.usage.input_tokens"] == input_tokens(parsed)
        assert attributes["openai_usage.usage.source"] == "response"
    client.close()


async def test_async_legacy_completion_records_billed_usage(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    result = await any_aclient.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi")
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.operation.name"] == "text_completion"
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens


@pytest.mark.parametrize(
    ("host", "provider", "flavour"),
    [
        ("api.groq.com", "groq", False),
        ("my-resource.openai.azure.com", "azure.ai.openai", False),
        ("llm.internal.example", "openai", True),
    ],
)
def test_openai_attributes_are_recorded_only_for_the_openai_provider(
    instrumented: Any, telemetry: Telemetry, host: str, provider: str, flavour: bool
) -> None:
    # `gen_ai.provider.name` is the conventions' discriminator of a flavour, to be set
    # consistently with provider-specific attributes: `openai.*` is OpenAI's (openai.md),
    # not another OpenAI-compatible provider's, on the span or on the metric points.
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "some-model",
        "system_fingerprint": "fp_1",
        "service_tier": "on_demand",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    transport = HTTP.MockTransport(lambda request: HTTP.Response(200, json=reply))
    client = openai.OpenAI(
        base_url=f"https://{host}/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=transport),
    )
    client.chat.completions.create(
        model="some-model", messages=MESSAGES, extra_body={"service_tier": "flex"}
    )
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.provider.name"] == provider
    found = {k: v for k, v in attributes.items() if k.startswith("openai.")}
    expected = {
        "openai.api.type": "chat_completions",
        "openai.request.service_tier": "flex",
        "openai.response.system_fingerprint": "fp_1",
        "openai.response.service_tier": "on_demand",
    }
    assert found == (expected if flavour else {})
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        for point in telemetry.points(name):
            tier = dict(point.attributes).get("openai.response.service_tier")
            assert tier == ("on_demand" if flavour else None)


# -- requests sent with the client's own post(), past the resource methods -----------------


def litellm_options(raw: bool = True, **extra: Any) -> Any:
    """The request options litellm builds (`_request_without_sdk_transform`): the raw-response
    header, and `security` where `make_request_options` takes it (openai 3.x)."""
    from openai._base_client import make_request_options
    from openai._constants import RAW_RESPONSE_HEADER

    headers = {RAW_RESPONSE_HEADER: "true"} if raw else {}
    if "security" in inspect.signature(make_request_options).parameters:
        extra["security"] = {"bearer_auth": True}
    return make_request_options(extra_headers=headers, **extra)


def post_chat(client: Any, body: dict[str, Any], options: Any) -> Any:
    """`client.post` as litellm calls it for a chat completion."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    stream_class = openai.AsyncStream if isinstance(client, openai.AsyncOpenAI) else openai.Stream
    return client.post(
        "/chat/completions",
        body=body,
        cast_to=ChatCompletion,
        options=options,
        stream=bool(body.get("stream")),
        stream_cls=stream_class[ChatCompletionChunk],
    )


def test_a_chat_completion_sent_with_the_clients_post_gets_one_span_with_its_usage(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    """litellm 1.110.2 (`OpenAIChatCompletion.make_sync_openai_chat_completion_request`) sends
    chat completions with `client.post("/chat/completions", ...)` and the raw-response
    header, then reads `headers` and `parse()`s: never through `chat.completions.create`."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    raw = post_chat(any_client, body, litellm_options(timeout=30.0))
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    span = telemetry.span()
    assert span.name == "chat gpt-4o-mini"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.response.id"] == completion.id
    assert span.status.status_code == StatusCode.UNSET
    assert tokens_by_type(telemetry)["input"].sum == completion.usage.prompt_tokens


def test_a_stream_sent_with_the_clients_post_ends_its_span_with_the_usage_it_asked_for(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """litellm 1.110.2 streams the same way (`stream=True`, `stream_cls=Stream[...]`, its
    `stream_options` in the body), `parse()`s the raw response and reads the stream through
    its own `CustomStreamWrapper`."""
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = list(post_chat(client, body, litellm_options()).parse())
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["openai_usage.stream.include_usage_injected"] is False
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attributes["openai_usage.usage.source"] == "response"


def test_a_plain_stream_sent_with_the_clients_post_gets_usage_injected_and_hidden(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """Without the raw-response header `post()` returns the stream itself: we ask for its
    usage in the body we pass on, and the caller sees the chunks it would see without us."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    chunks = list(post_chat(client, body, litellm_options(raw=False)))
    assert [c.usage for c in chunks] == [None] * len(chunks)
    assert all(c.choices for c in chunks)
    assert body == {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.include_usage_injected"] is True
    assert attributes["openai_usage.usage.source"] == "response"
    reply = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert attributes["gen_ai.usage.output_tokens"] == len(reply.split())  # the server bills words


async def test_an_async_chat_completion_sent_with_the_clients_post_gets_one_span(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    """litellm 1.110.2's async twin (`make_openai_chat_completion_request`): `await
    client.post(...)` with `stream_cls=AsyncStream[...]`."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    raw = await post_chat(aclient, body, litellm_options())
    completion = raw.parse()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert attributes["openai_usage.usage.source"] == "response"


def test_embeddings_sent_with_the_clients_post_get_one_span_with_their_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """litellm 1.110.2 (`make_sync_openai_embedding_request`, no `encoding_format` given)
    posts to `/embeddings` the same way."""
    from openai.types import CreateEmbeddingResponse

    raw = client.post(
        "/embeddings",
        body={"model": "text-embedding-3-small", "input": ["Hello", "world"]},
        options=litellm_options(),
        cast_to=CreateEmbeddingResponse,
    )
    result = raw.parse()
    check_embeddings_span(telemetry, client, result, len(result.data[0].embedding))


def test_requests_of_the_resource_methods_still_get_one_span_each(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """The resource methods post through the same `post()`: still one span per call."""
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    client.embeddings.create(model="text-embedding-3-small", input="Hi")
    client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [s.name for s in telemetry.spans()] == [
        "chat gpt-4o-mini",
        "chat gpt-4o-mini",
        "embeddings text-embedding-3-small",
        "chat gpt-4o-mini",
    ]


@pytest.mark.parametrize("wrappers", [1, 12])
@pytest.mark.parametrize("method", ["post", "request"])
def test_other_wrappers_over_the_clients_requests_still_leave_one_span_per_call(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, wrappers: int, method: str
) -> None:
    """Tools that wrap the client's `post()` or `request()` after us put their frames
    between the SDK's method and our `request()` wrapper, as many as there are tools: a
    patched method's call must still get one span (not a second one from `request()`), and
    a request sent past the SDK still gets its span."""
    from openai._base_client import SyncAPIClient

    ours = SyncAPIClient.__dict__[method]

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return wrapped(*args, **kwargs)

    for _ in range(wrappers):
        wrapt.wrap_function_wrapper(SyncAPIClient, method, theirs)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        post_chat(client, {"model": "gpt-4o-mini", "messages": MESSAGES}, litellm_options())
    finally:
        setattr(SyncAPIClient, method, ours)
    assert [s.name for s in telemetry.spans()] == ["chat gpt-4o-mini", "chat gpt-4o-mini"]


def _passing(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    instance._passed = getattr(instance, "_passed", 0) + 1  # that it ran, once a request
    return wrapped(*args, **kwargs)


def test_requests_past_the_methods_are_traced_under_a_wrapper_put_on_openai_request_first(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    """OpenInference (and tools built on it) wrap `OpenAI.request` on the client's own class,
    over the base class's method as it was: put there before `instrument()`, that wrapper
    hid ours from every client, and litellm's `post()` and a method kept from before
    `instrument()` got no span. Ours goes over theirs; `uninstrument()` takes only ours off."""
    kept = client.chat.completions.create
    wrapt.wrap_function_wrapper(openai.OpenAI, "request", _passing)
    instrumentor = None
    try:
        instrumentor = instrument()
        kept(model="gpt-4o-mini", messages=MESSAGES)
        list(kept(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        assert server.requests[-1].body["stream_options"] == {"include_usage": True}
        post_chat(client, {"model": "gpt-4o-mini", "messages": MESSAGES}, litellm_options())
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert client._passed == 4  # type: ignore[attr-defined]
        instrumentor.uninstrument()
        instrumentor = None
        kept(model="gpt-4o-mini", messages=MESSAGES)  # theirs still, ours no more
        assert client._passed == 5  # type: ignore[attr-defined]
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        del openai.OpenAI.request
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini"] * 4
    assert [s.attributes["openai_usage.usage.source"] for s in spans] == ["response"] * 4


async def test_async_requests_past_the_methods_are_traced_under_a_wrapper_on_request_first(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    kept = aclient.chat.completions.create
    wrapt.wrap_function_wrapper(openai.AsyncOpenAI, "request", _passing)
    instrumentor = None
    try:
        instrumentor = instrument()
        await kept(model="gpt-4o-mini", messages=MESSAGES)
        stream = await kept(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        assert [c.usage async for c in stream if c.usage] == []
        await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        del openai.AsyncOpenAI.request
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini"] * 3
    assert [s.attributes["openai_usage.usage.source"] for s in spans] == ["response"] * 3


def test_clients_that_only_inherit_request_get_no_wrapper_of_their_own(
    instrumented: Any,
) -> None:
    assert "request" not in openai.OpenAI.__dict__
    assert "request" not in openai.AsyncOpenAI.__dict__


def test_a_wrapper_under_ours_that_sends_the_request_with_post_leaves_one_span(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """A tool wrapping `create` before us (so under ours) may send the request itself, with
    the client's `post()`, as a gateway or a cache does: it is still the traced call's own
    request, not a second call."""
    from openai.resources.chat.completions import Completions
    from openai.types.chat import ChatCompletion

    original = Completions.__dict__["create"]

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return instance._client.post("/chat/completions", body=kwargs, cast_to=ChatCompletion)

    wrapt.wrap_function_wrapper(Completions, "create", theirs)
    instrumentor = None
    try:
        instrumentor = instrument()
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        Completions.create = original  # type: ignore[method-assign]
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens


def test_a_request_past_the_methods_made_from_within_a_traced_calls_request_gets_its_span(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    """An httpx event hook (or a transport, an auth flow) runs inside the traced call's
    request: a request it sends past the SDK's methods, with litellm's `post()` or a method
    kept from before `instrument()`, is a call of its own, not the traced call's request."""
    other = make_client(server, "openai")
    kept = other.chat.completions.create
    sent: list[str] = []

    def hook(request: Any) -> None:
        if not sent:
            sent.append("inner")
            post_chat(other, {"model": "inner-post", "messages": MESSAGES}, litellm_options())
            kept(model="inner-kept", messages=MESSAGES)

    client = make_client(server, "openai", http_client=HTTP.Client(event_hooks={"request": [hook]}))
    instrument()
    client.chat.completions.create(model="outer", messages=MESSAGES)
    client.close()
    other.close()
    spans = {s.name: s for s in telemetry.spans()}
    assert sorted(spans) == ["chat inner-kept", "chat inner-post", "chat outer"]
    outer = spans["chat outer"].context.span_id
    assert [spans[f"chat inner-{k}"].parent.span_id for k in ("post", "kept")] == [outer] * 2


async def test_async_a_request_past_the_methods_made_from_within_a_traced_request_gets_a_span(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    other = make_client(server, "async")
    kept = other.chat.completions.create
    sent: list[str] = []

    async def hook(request: Any) -> None:
        if not sent:
            sent.append("inner")
            await kept(model="inner-kept", messages=MESSAGES)

    client = make_client(
        server, "async", http_client=HTTP.AsyncClient(event_hooks={"request": [hook]})
    )
    instrument()
    stream = await client.chat.completions.create(model="outer", messages=MESSAGES, stream=True)
    assert [c async for c in stream if c.usage] == []
    await client.close()
    await other.close()
    assert sorted(s.name for s in telemetry.spans()) == ["chat inner-kept", "chat outer"]


def test_the_sdks_method_kept_from_before_instrument_is_traced_with_its_usage(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """instructor's `from_openai(client)` keeps `client.chat.completions.create` as it is
    when called, and a resource's `with_raw_response` keeps it too: called after
    `instrument()`, that is the SDK's own method, past our wrapper. Its request, sent
    through the client's `post()`, is traced there, as the method's call."""
    kept = client.chat.completions.create
    kept_raw = client.chat.completions.with_raw_response.create
    instrument()
    completion = kept(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(kept(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    raw = kept_raw(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-request-id"].startswith("req_")
    raw.parse()
    assert [c.usage for c in chunks] == [None] * len(chunks)
    assert all(c.choices for c in chunks)
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini"] * 3
    plain, streamed, raw_call = (dict(s.attributes or {}) for s in spans)
    assert plain["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert plain["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert streamed["openai_usage.stream.include_usage_injected"] is True
    reply = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed["gen_ai.usage.output_tokens"] == len(reply.split())  # the server bills words
    assert [d["openai_usage.usage.source"] for d in (plain, streamed, raw_call)] == ["response"] * 3


async def test_async_the_sdks_method_kept_from_before_instrument_is_traced_with_its_usage(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    kept = aclient.chat.completions.create
    instrument()
    completion = await kept(model="gpt-4o-mini", messages=MESSAGES)
    chunks = [c async for c in await kept(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
    assert [c.usage for c in chunks] == [None] * len(chunks)
    plain, streamed = (dict(s.attributes or {}) for s in telemetry.spans())
    assert plain["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert streamed["openai_usage.stream.include_usage_injected"] is True
    assert streamed["openai_usage.usage.source"] == "response"


def test_the_sdks_method_kept_from_before_instrument_is_untraced_after_uninstrument(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    kept = client.chat.completions.create
    instrument().uninstrument()
    list(kept(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "stream_options" not in server.requests[-1].body
    assert telemetry.spans() == []


def test_a_failing_look_at_a_request_past_the_methods_sends_it_as_it_is_and_warns_once(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.instrumentation.openai_usage import client_requests, errors

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(errors, "_logged", set())
    monkeypatch.setattr(client_requests, "_replies_as_the_method", boom)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            chunks = list(post_chat(client, body, litellm_options(raw=False)))
            assert chunks and all(c.choices for c in chunks)
            assert server.requests[-1].body == body  # nothing of ours added
    assert telemetry.spans() == []
    (warning,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "reading a request sent past the resource methods" in warning


def start_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make our `start_call` raise the first time only; the list of its calls."""
    from opentelemetry.instrumentation.openai_usage import errors, wrappers

    start_call, tries = wrappers.start_call, []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("boom")
        return start_call(*args, **kwargs)

    monkeypatch.setattr(errors, "_logged", set())
    monkeypatch.setattr(wrappers, "start_call", fails_once)
    return tries


def test_a_call_whose_span_failed_to_start_is_not_traced_again_at_the_clients_request(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug of ours at a call's start leaves the call as without us: its request, passing
    the client's `request()`, is not a call to trace there either (a second try of ours
    could start a span the first one failed to end)."""
    tries = start_fails_once(monkeypatch)
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert chunks and all(c.choices for c in chunks)
    assert "stream_options" not in server.requests[-1].body
    assert telemetry.spans() == []
    assert len(tries) == 1


async def test_async_a_call_whose_span_failed_to_start_is_not_traced_again_at_request(
    instrumented: Any,
    telemetry: Telemetry,
    aclient: openai.AsyncOpenAI,
    server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tries = start_fails_once(monkeypatch)
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert [c async for c in stream]
    assert "stream_options" not in server.requests[-1].body
    assert telemetry.spans() == []
    assert len(tries) == 1


def _sse_events(reply: Any) -> list[Any]:
    """What a caller of `post()` read of a streamed reply: its chunks (as parsed), or the
    JSON of each SSE event of a raw `httpx.Response`."""
    import json

    if isinstance(reply, HTTP.Response):
        lines = reply.read().decode().splitlines()
        data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
        return [json.loads(d) for d in data if d != "[DONE]"]
    return list(reply)


def _chunks_as(kind: str) -> dict[str, Any]:
    """`post()`'s `cast_to` / `stream_cls` for a stream read as `kind`."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    table: dict[str, dict[str, Any]] = {
        "dict": {"cast_to": _BODY_AS_DICT},
        "object": {"cast_to": object},
        "httpx.Response": {"cast_to": HTTP.Response},
        "Stream[dict]": {"cast_to": ChatCompletion, "stream_cls": openai.Stream[_BODY_AS_DICT]},
        "httpx.Response+stream_cls": {
            "cast_to": HTTP.Response,
            "stream_cls": openai.Stream[ChatCompletionChunk],
        },
    }
    return table[kind]


@pytest.mark.parametrize(
    "kind", ["dict", "object", "httpx.Response", "Stream[dict]", "httpx.Response+stream_cls"]
)
def test_a_stream_sent_with_post_for_other_than_the_sdks_chunks_is_sent_as_it_is(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    kind: str,
) -> None:
    """Asked for dicts or the raw `httpx.Response`, the caller reads every SSE event: the
    usage chunk we would ask for would reach it (and our proxy, following SDK chunks, would
    read no usage from them). Such a request is not the method's call: sent untouched."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    events = _sse_events(
        client.post("/chat/completions", body=body, stream=True, **_chunks_as(kind))
    )
    assert server.requests[-1].body == body
    assert [e.get("usage") for e in events] == [None] * len(events)
    assert all(e["choices"] for e in events)
    assert telemetry.spans() == []


@pytest.mark.parametrize("stream", [True, False])
def test_a_post_whose_stream_argument_differs_from_its_body_is_sent_as_it_is(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool
) -> None:
    """`post(stream=...)` is what the SDK reads the reply as; the body's `stream` is what the
    server sends. Where they differ the caller gets neither the method's stream nor its
    response (the SSE text as a string, an empty stream): not a call to trace as one."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": not stream}
    reply = client.post(
        "/chat/completions",
        body=body,
        cast_to=ChatCompletion,
        stream=stream,
        stream_cls=openai.Stream[ChatCompletionChunk],
    )
    if stream:
        assert list(reply) == []
    else:
        assert isinstance(reply, str)
        assert '"include_usage"' not in reply and '"prompt_tokens"' not in reply
    assert telemetry.spans() == []
