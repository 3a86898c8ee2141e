"""Tests of the local OpenAI-compatible server, driven through the real openai SDK.

The server is the ground truth the rest of the suite and the demo rely on, so
these tests check it the way the instrumentation will meet it: through
``OpenAI``/``AsyncOpenAI``/``AzureOpenAI`` over real sockets, plus raw HTTP
where the exact bytes on the wire (field order, chunking) are the point.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from opentelemetry.instrumentation.openai_usage.localserver import (
    DEFAULT_REPLY,
    LocalOpenAIServer,
)

from .conftest import MID_STREAM_CONNECTION_ERRORS

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the world"},
]
# 3 + (4 + 3) + (4 + 5) = 19 prompt tokens; the default reply has 6 words.
PROMPT_TOKENS = 19
REPLY_WORDS = 6
API_VERSION = "2024-10-21"


@pytest.fixture
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as srv:
        yield srv


@pytest.fixture
def client(server: LocalOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def azure(server: LocalOpenAIServer, **kwargs: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        api_key="azure-key",
        api_version=API_VERSION,
        max_retries=0,
        **kwargs,
    )


def raw(
    server: LocalOpenAIServer,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, http.client.HTTPResponse, bytes]:
    """POST with the stdlib client, to see the exact bytes the server sends."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, data, {"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, response, payload


def sse_data(payload: bytes) -> list[str]:
    return [e.removeprefix(b"data: ").decode() for e in payload.split(b"\n\n") if e]


def expected_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# --- chat, non-stream -------------------------------------------------------------------


def test_chat_non_stream(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.id.startswith("chatcmpl-")
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.system_fingerprint == "fp_local0001"
    assert result.service_tier == "default"
    assert result.choices[0].message.content == DEFAULT_REPLY
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.model_dump(exclude_none=True) == expected_usage(PROMPT_TOKENS, 6)
    [recorded] = server.requests
    assert recorded.method == "POST" and recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.body["messages"] == MESSAGES
    assert recorded.usage == expected_usage(PROMPT_TOKENS, REPLY_WORDS)


def test_chat_raw_body_field_order(server: LocalOpenAIServer) -> None:
    status, response, payload = raw(
        server, "/v1/chat/completions", {"model": "custom-model", "messages": MESSAGES}
    )
    assert status == 200
    assert response.getheader("content-type") == "application/json"
    assert response.getheader("x-request-id", "").startswith("req_")
    body = json.loads(payload)
    assert list(body) == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "service_tier",
        "system_fingerprint",
    ]
    assert body["model"] == "custom-model"  # unknown models are echoed
    assert body["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": DEFAULT_REPLY,
            "refusal": None,
            "annotations": [],
        },
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_chat_headers_control_reply_usage_and_model(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two"}]}],
        n=2,
        extra_headers={
            "x-mock-reply": "Bonjour tout le monde",
            "x-mock-response-model": "my-model",
        },
    )
    assert result.model == "my-model"
    assert [c.index for c in result.choices] == [0, 1]
    assert {c.message.content for c in result.choices} == {"Bonjour tout le monde"}
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3 + 4 + 2, 8)

    result = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_headers={"x-mock-usage": json.dumps({"prompt_tokens": 100, "cached_tokens": 40})},
    )
    assert result.usage is not None
    assert result.usage.prompt_tokens == 100
    assert result.usage.total_tokens == 100 + REPLY_WORDS
    # As JSON: openai < 1.40 has no typed `prompt_tokens_details`.
    assert result.usage.to_dict()["prompt_tokens_details"]["cached_tokens"] == 40


def test_chat_tool_call_non_stream(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-mock-tool-call": "get_weather"}
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}


# --- chat, stream -----------------------------------------------------------------------


def test_stream_with_include_usage(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == REPLY_WORDS
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}
    assert server.requests[0].usage == expected_usage(PROMPT_TOKENS, REPLY_WORDS)


def test_stream_wire_format(server: LocalOpenAIServer) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    status, response, payload = raw(
        server, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}}
    )
    assert status == 200
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.getheader("content-type", "").startswith("text/event-stream")
    events = sse_data(payload)
    assert events[-1] == "[DONE]"
    first = json.loads(events[0])
    assert list(first) == [
        "id",
        "object",
        "created",
        "model",
        "service_tier",
        "system_fingerprint",
        "choices",
        "usage",
    ]
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "Hello"}
    assert json.loads(events[2])["choices"][0]["delta"] == {"content": " from"}
    assert all(json.loads(e)["usage"] is None for e in events[:-2])
    assert json.loads(events[-2])["usage"]["total_tokens"] == PROMPT_TOKENS + REPLY_WORDS

    status, _, payload = raw(server, "/v1/chat/completions", body)
    events = sse_data(payload)
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"


def test_stream_without_include_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None and "usage" not in c.model_fields_set for c in chunks)


def test_stream_n2_interleaved(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    indexes = [c.choices[0].index for c in chunks if c.choices]
    assert indexes == [0, 1] * (len(indexes) // 2)
    for i in (0, 1):
        text = "".join(
            c.choices[0].delta.content or ""
            for c in chunks
            if c.choices and c.choices[0].index == i
        )
        assert text == DEFAULT_REPLY
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2 * REPLY_WORDS


def test_stream_tool_call(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-mock-tool-call": "get_weather"},
        )
    )
    first = chunks[0].choices[0].delta
    assert first.tool_calls is not None and first.tool_calls[0].function is not None
    assert first.tool_calls[0].function.name == "get_weather"
    assert first.tool_calls[0].id is not None and first.tool_calls[0].id.startswith("call_")
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"location": "Paris"}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None


def test_finish_header_ends_the_reply_with_that_finish_reason(client: openai.OpenAI) -> None:
    headers = {"x-mock-reply": "cut short", "x-mock-finish": "length"}
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "cut short"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            extra_headers={**headers, "x-mock-finish": "content_filter"},
        )
    )
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "content_filter"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-mock-finish": "stop!"}
        )
    assert "x-mock-finish" in info.value.message


def test_stream_many_chunks_and_delay(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "5000"},
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 5000 and pieces[:2] == ["w1", " w2"] and pieces[-1] == " w5000"
    started = time.monotonic()
    list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-chunks": "3", "x-mock-chunk-delay-ms": "50"},
        )
    )
    assert time.monotonic() - started >= 0.2  # 5 gaps between 6 events


# --- scenarios --------------------------------------------------------------------------

STATUS_ERRORS = [
    (400, openai.BadRequestError, "invalid_request_error"),
    (401, openai.AuthenticationError, "authentication_error"),
    (404, openai.NotFoundError, "not_found_error"),
    (429, openai.RateLimitError, "requests"),
    (500, openai.InternalServerError, "server_error"),
    (502, openai.InternalServerError, "server_error"),
    (503, openai.InternalServerError, "server_error"),
]


@pytest.mark.parametrize(("status", "exc_type", "error_type"), STATUS_ERRORS)
@pytest.mark.parametrize("stream", [False, True])
def test_http_error(
    server: LocalOpenAIServer,
    client: openai.OpenAI,
    status: int,
    exc_type: type[openai.APIStatusError],
    error_type: str,
    stream: bool,
) -> None:
    with pytest.raises(exc_type) as info:
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=stream,
            extra_headers={"x-mock-scenario": f"http_error:{status}"},
        )
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["type"] == error_type
    assert "sk-test" not in info.value.message
    if status == 429:
        assert info.value.response.headers["retry-after-ms"] == "10"
        assert info.value.code == "rate_limit_exceeded"
    assert server.requests[0].usage is None


def test_fail_first_then_retry_succeeds(server: LocalOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=2)
    result = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_headers={"x-mock-scenario": "fail_first:2", "x-mock-attempt-key": "k1"},
    )
    assert result.choices[0].message.content == DEFAULT_REPLY
    assert len(server.requests) == 3
    assert [r.usage is None for r in server.requests] == [True, True, False]
    with pytest.raises(openai.InternalServerError):  # another key starts its own count
        client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            extra_headers={"x-mock-scenario": "fail_first:1", "x-mock-attempt-key": "k2"},
        )


@pytest.mark.parametrize("scenario", ["cut_after:3", "reset_after:3"])
@pytest.mark.parametrize("stream", [False, True])
def test_cut_and_reset_raise_connection_error(
    server: LocalOpenAIServer, client: openai.OpenAI, scenario: str, stream: bool
) -> None:
    received = []
    with pytest.raises(MID_STREAM_CONNECTION_ERRORS if stream else openai.APIConnectionError):
        result = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=stream,
            stream_options={"include_usage": True} if stream else None,
            extra_headers={"x-mock-scenario": scenario},
        )
        if isinstance(result, openai.Stream):
            for chunk in result:
                received.append(chunk)
    assert len(received) == (3 if stream else 0)
    assert server.requests[0].usage == expected_usage(PROMPT_TOKENS, REPLY_WORDS)
    # The server survives and keeps serving.
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices


def test_sse_error_after(client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-scenario": "sse_error_after:2"},
        ):
            received.append(chunk)
    assert len(received) == 2
    assert info.value.message == "The server had an error while processing your request."


def test_malformed_after(client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's SSE decoder
        for chunk in client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-scenario": "malformed_after:2"},
        ):
            received.append(chunk)
    assert len(received) == 2


def test_no_usage_ignores_stream_options(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-mock-scenario": "no_usage"},
        )
    )
    assert all(c.choices and "usage" not in c.model_fields_set for c in chunks)
    assert server.requests[0].usage is not None  # what it would have reported


def test_reject_stream_options(client: openai.OpenAI) -> None:
    headers = {"x-mock-scenario": "reject_stream_options"}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
    assert "stream_options" in info.value.message
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers
    )
    assert len(list(stream)) == REPLY_WORDS + 2


def test_error_body_200(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    headers = {"x-mock-scenario": "error_body_200"}
    with pytest.raises(openai.APIError):
        list(
            client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers
            )
        )
    status, _, payload = raw(
        server, "/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES}, headers
    )
    assert status == 200 and json.loads(payload)["error"]["type"] == "server_error"
    assert all(r.usage is None for r in server.requests)


def test_hang_times_out_without_blocking_others(
    server: LocalOpenAIServer, client: openai.OpenAI
) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            timeout=0.5,
            extra_headers={"x-mock-scenario": "hang"},
        )
    assert time.monotonic() - started < 5
    # A hung connection left open does not stop stop() or other clients.
    hung = socket.create_connection((server.host, server.port))
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES}).encode()
    hung.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-mock-scenario: hang\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    hung.settimeout(5)
    assert hung.recv(1024) in (b"",)  # closed by stop()
    hung.close()


def test_usage_nulls(client: openai.OpenAI) -> None:
    headers = {"x-mock-scenario": "usage_nulls"}
    result = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers=headers
    )
    assert result.usage is not None
    assert result.usage.completion_tokens is None
    assert "prompt_tokens_details" not in result.usage.to_dict()
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens is None


@pytest.mark.parametrize(
    "named", [{}, {"prompt_tokens": 7}, {"completion_tokens": 4, "total_tokens": None}]
)
def test_usage_partial_sends_only_the_named_counts(
    server: LocalOpenAIServer, named: dict[str, Any]
) -> None:
    headers = {"x-mock-scenario": "usage_partial"}
    if named:
        headers["x-mock-usage"] = json.dumps(named)
    body: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES}
    status, _, payload = raw(server, "/v1/chat/completions", body, headers)
    assert status == 200
    assert json.loads(payload)["usage"] == named  # the others missing, not null
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    status, _, payload = raw(server, "/v1/chat/completions", stream, headers)
    assert status == 200
    events = sse_data(payload)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"] == named
    embeddings = {"model": "text-embedding-3-small", "input": "a b c"}
    status, _, payload = raw(server, "/v1/embeddings", embeddings, headers)
    assert status == 200
    assert json.loads(payload)["usage"] == {
        k: v for k, v in named.items() if k != "completion_tokens"
    }
    status, _, payload = raw(server, "/v1/responses", {"model": "gpt-4o", "input": "hi"}, headers)
    assert status == 400
    assert json.loads(payload)["error"]["param"] == "x-mock-scenario"


def test_slow_headers(client: openai.OpenAI) -> None:
    started = time.monotonic()
    client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-mock-scenario": "slow_headers:300"}
    )
    assert time.monotonic() - started >= 0.3


def test_unknown_scenario(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-mock-scenario": "explode"}
        )
    assert "explode" in info.value.message


# --- Azure ------------------------------------------------------------------------------


def test_azure_non_stream_and_stream(server: LocalOpenAIServer) -> None:
    client = azure(server)
    result = client.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert result.choices[0].message.content == DEFAULT_REPLY
    assert result.model_extra is not None and "prompt_filter_results" in result.model_extra
    assert result.choices[0].model_extra is not None
    assert "content_filter_results" in result.choices[0].model_extra
    recorded = server.requests[0]
    assert recorded.path == "/openai/deployments/my-deployment/chat/completions"
    assert recorded.query == {"api-version": API_VERSION}
    assert recorded.headers["api-key"] == "azure-key"

    chunks = list(
        client.chat.completions.create(
            model="my-deployment",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    filter_chunk = chunks[0]
    assert filter_chunk.choices == [] and filter_chunk.id == "" and filter_chunk.model == ""
    assert "usage" not in filter_chunk.model_fields_set
    assert filter_chunk.model_extra is not None
    assert "prompt_filter_results" in filter_chunk.model_extra
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == REPLY_WORDS


def test_azure_model_defaults_to_deployment(server: LocalOpenAIServer) -> None:
    status, _, payload = raw(
        server,
        f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
        {"messages": MESSAGES},
    )
    assert status == 200
    body = json.loads(payload)
    assert body["model"] == "gpt-4o-2024-08-06"
    assert list(body) == sorted(body)  # Azure sends keys sorted


@pytest.mark.asyncio
async def test_async_azure_stream(server: LocalOpenAIServer) -> None:
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        api_key="azure-key",
        api_version=API_VERSION,
        azure_deployment="dep",
        max_retries=0,
    )
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    assert server.requests[0].path == "/openai/deployments/dep/chat/completions"
    await client.close()


# --- embeddings and legacy completions ---------------------------------------------------


def test_embeddings(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["a b c", "d"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in result.data)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 4
    result = client.embeddings.create(
        model="text-embedding-3-small",
        input=[[1, 2, 3], [4]],
        dimensions=3,
        encoding_format="float",
    )
    assert [len(d.embedding) for d in result.data] == [3, 3]
    assert result.usage.prompt_tokens == 4
    assert client.embeddings.create(model="m", input=[5, 6]).usage.prompt_tokens == 2
    assert server.requests[0].usage == {"prompt_tokens": 4, "total_tokens": 4}

    status, _, payload = raw(
        server,
        "/v1/embeddings",
        {"model": "m", "input": "hi", "encoding_format": "base64", "dimensions": 4},
    )
    body = json.loads(payload)
    assert status == 200 and list(body) == ["object", "data", "model", "usage"]
    vector = struct.unpack("<4f", base64.b64decode(body["data"][0]["embedding"]))
    assert len(vector) == 4
    assert azure(server).embeddings.create(model="dep", input="x").usage.total_tokens == 1


def test_legacy_completions(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", n=2)
    assert result.object == "text_completion"
    assert [c.text for c in result.choices] == [DEFAULT_REPLY] * 2
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2, 12)
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == DEFAULT_REPLY
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 2 + REPLY_WORDS
    result = azure(server).completions.create(model="dep", prompt="x")
    assert result.choices[0].text == DEFAULT_REPLY


# --- HTTP robustness ----------------------------------------------------------------------


def test_unknown_path_and_bad_input(server: LocalOpenAIServer) -> None:
    status, _, payload = raw(server, "/v1/nothing", {})
    assert status == 404
    assert json.loads(payload) == {
        "error": {
            "message": "Invalid URL (POST /v1/nothing)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert raw(server, "/v1/chat/completions", b"{nope")[0] == 400
    assert raw(server, "/v1/chat/completions", {"model": "m"})[0] == 400  # no messages
    assert raw(server, "/v1/chat/completions", {}, method="GET")[0] == 404
    for garbage in (b"\x00\x01 nonsense\r\n\r\n", b"POST / HTTP/1.1\r\nbad header\r\n\r\n"):
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(garbage)
            reply = b""
            while data := sock.recv(65536):  # the server closes after a bad request
                reply += data
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert b'"invalid_request_error"' in reply
    assert raw(server, "/v1/chat/completions", {"model": "m", "messages": MESSAGES})[0] == 200


def test_keep_alive_and_connection_close(server: LocalOpenAIServer) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES})
    for _ in range(3):
        conn.request("POST", "/v1/chat/completions", body)
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("connection") == "keep-alive"
        response.read()
    conn.close()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body.encode())
        )
        data = b""
        while chunk := sock.recv(65536):  # ends only because the server closes
            data += chunk
    assert b"connection: close" in data and data.rstrip().endswith(b"}")


@pytest.mark.asyncio
async def test_200_concurrent_async_streams(server: LocalOpenAIServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)

    async def one(i: int) -> tuple[int, int]:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": " ".join(["word"] * i)}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-mock-chunks": str(i % 7), "x-mock-chunk-delay-ms": "5"},
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None
        return usage.prompt_tokens, usage.completion_tokens

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert results == [(3 + 4 + i, i % 7) for i in range(200)]
    assert len(server.requests) == 200
    await client.close()


@pytest.mark.asyncio
async def test_async_non_stream(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
        result = await c.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert result.model == "gpt-5-2025-08-07"
    assert result.usage is not None and result.usage.total_tokens == PROMPT_TOKENS + REPLY_WORDS


# --- lifecycle ------------------------------------------------------------------------------


def test_recording_clear_and_stop_idempotent() -> None:
    server = LocalOpenAIServer().start()
    assert server.port != 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.azure_endpoint == f"http://127.0.0.1:{server.port}"
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 1
    server.clear()
    assert server.requests == []
    server.stop()
    server.stop()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(RuntimeError):
        server.start()


def test_start_fails_on_busy_port(server: LocalOpenAIServer) -> None:
    with pytest.raises(OSError):
        LocalOpenAIServer(port=server.port).start()


def test_cli_on_a_busy_port_says_so_in_one_line_and_exits_1(server: LocalOpenAIServer) -> None:
    module = "opentelemetry.instrumentation.openai_usage.localserver"
    done = subprocess.run(
        [sys.executable, "-m", module, "--port", str(server.port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"Cannot serve on 127.0.0.1:{server.port}: {os.strerror(errno.EADDRINUSE)}. "
        "Choose another with --host / --port (--port 0 picks a free one).\n"
    )


def test_cli_serves_until_interrupted() -> None:
    module = "opentelemetry.instrumentation.openai_usage.localserver"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base_url = line.split()[-1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
        assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
