"""Detailed usage as metrics: the conventions' per-modality counters, marked like the rest.

Through the real SDK against the local server, whose `x-mock-usage` header pins the
counts it bills, sync and async, streamed and not.
"""

from __future__ import annotations

import json
import types
from collections import defaultdict
from typing import Any

import openai
import pytest

from opentelemetry.instrumentation.openai_usage import modalities
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import (
    MESSAGES,
    MID_STREAM_CONNECTION_ERRORS,
    Telemetry,
    make_client,
    metrics_in,
    needs_responses,
)

PREFIX = "gen_ai.client.inference.usage."
INPUT = PREFIX + "input_tokens"
OUTPUT = PREFIX + "output_tokens"
CACHE_READ = PREFIX + "cache_read.input_tokens"
CACHE_WRITE = PREFIX + "cache_write.input_tokens"
REASONING = PREFIX + "reasoning.output_tokens"
MODALITY = "gen_ai.token.modality"
SOURCE = "openai_usage.usage.source"
# The span attributes of the tokens a provider reported by modality.
BY_MODALITY = {
    f"gen_ai.usage.{modality}.{side}_tokens"
    for modality in ("text", "audio", "image", "video")
    for side in ("input", "output")
}
KINDS = ("openai", "async")
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 40,
    "cached_tokens": 100,
    "reasoning_tokens": 25,
    "cache_write_tokens": 7,
}
# Attributes a metric point may carry: each takes few values, so series stay few.
BOUNDED = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "openai.response.service_tier",
    "server.address",
    "server.port",
    "error.type",
    "gen_ai.token.type",
    MODALITY,
    SOURCE,
}


def sums(telemetry: Telemetry, name: str) -> dict[str, int]:
    """Counter totals by modality."""
    totals: dict[str, int] = defaultdict(int)
    for point in telemetry.points(name):
        totals[point.attributes[MODALITY]] += point.value
    return dict(totals)


async def chat(server: LocalOpenAIServer, kind: str, stream: bool, **kwargs: Any) -> None:
    client = make_client(server, kind)
    request = {"model": "o3-mini", "messages": MESSAGES, "stream": stream, **kwargs}
    result = client.chat.completions.create(**request)
    if kind == "async":
        result = await result
        if stream:
            [c async for c in result]
    elif stream:
        list(result)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_counters_carry_each_billed_kind_of_token(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str, stream: bool
) -> None:
    await chat(server, kind, stream, extra_headers={"x-mock-usage": json.dumps(USAGE)})
    assert sums(telemetry, INPUT) == {"text": 120}
    assert sums(telemetry, OUTPUT) == {"text": 40}
    assert sums(telemetry, CACHE_READ) == {"text": 100}
    assert sums(telemetry, CACHE_WRITE) == {"text": 7}
    assert sums(telemetry, REASONING) == {"text": 25}
    span = telemetry.span().attributes or {}
    assert span["gen_ai.usage.cache_creation.input_tokens"] == 7
    for name in (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE, REASONING):
        for point in telemetry.points(name):
            assert point.attributes[SOURCE] == "response"
            assert point.attributes["gen_ai.request.model"] == "o3-mini"
            assert point.attributes["gen_ai.response.model"] == "o3-mini-2025-01-31"


@pytest.mark.parametrize("kind", KINDS)
async def test_audio_tokens_are_counted_apart_from_text(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str
) -> None:
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 30,
        "audio_input_tokens": 20,
        "audio_output_tokens": 12,
        "cached_tokens": 10,
    }
    await chat(server, kind, False, extra_headers={"x-mock-usage": json.dumps(usage)})
    assert sums(telemetry, INPUT) == {"audio": 20, "text": 30}
    assert sums(telemetry, OUTPUT) == {"audio": 12, "text": 18}
    assert sums(telemetry, CACHE_READ) == {"unknown": 10}  # mixed input: not known to be text


@pytest.mark.parametrize("stream", [False, True])
def test_the_span_carries_the_tokens_the_provider_reported_by_modality(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool
) -> None:
    """`gen_ai.usage.audio.input_tokens` and the like: only what was reported (here audio;
    the text part was not reported as such, so there is no `gen_ai.usage.text.*`)."""
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 30,
        "audio_input_tokens": 20,
        "audio_output_tokens": 12,
    }
    result = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=stream,
        extra_headers={"x-mock-usage": json.dumps(usage)},
    )
    if stream:
        list(result)
    attributes = telemetry.span().attributes or {}
    by_modality = {k: v for k, v in attributes.items() if k in BY_MODALITY}
    assert by_modality == {
        "gen_ai.usage.audio.input_tokens": 20,
        "gen_ai.usage.audio.output_tokens": 12,
    }


def test_no_modality_attribute_when_none_was_reported_or_the_breakdown_exceeds_the_total(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    for usage in (
        {"prompt_tokens": 50, "completion_tokens": 30, "cached_tokens": 0},  # audio 0: none
        {"prompt_tokens": 5, "completion_tokens": 3, "audio_input_tokens": 9},  # not believed
    ):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-mock-usage": json.dumps(usage)},
        )
    spans = telemetry.spans()
    assert len(spans) == 2
    for span in spans:
        assert BY_MODALITY.isdisjoint(span.attributes or {})


def test_zero_cached_and_reasoning_tokens_add_no_point(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    usage = {"prompt_tokens": 50, "completion_tokens": 30, "cached_tokens": 0}
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-mock-usage": json.dumps(usage)}
    )
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 0  # the span says so
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 0
    assert telemetry.points(CACHE_READ) == []
    assert telemetry.points(REASONING) == []
    assert sums(telemetry, INPUT) == {"text": 50}


def test_input_with_an_image_is_of_unknown_modality(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}]
    )
    prompt = (telemetry.span().attributes or {})["gen_ai.usage.input_tokens"]
    assert sums(telemetry, INPUT) == {"unknown": prompt}
    assert set(sums(telemetry, OUTPUT)) == {"text"}


def test_a_failed_call_adds_zero_under_unknown(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-mock-scenario": "http_error:500"},
        )
    for name in (INPUT, OUTPUT):
        (point,) = telemetry.points(name)
        assert point.value == 0
        assert point.attributes[MODALITY] == "unknown"
        # The conventions give `error.type` to the duration alone.
        assert "error.type" not in point.attributes
        # No count, so nothing to say where one came from (as the README says).
        assert "openai_usage.usage.source" not in point.attributes
    assert telemetry.points(CACHE_READ) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_estimated_usage_is_counted_and_marked_as_an_estimate(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str
) -> None:
    await chat(server, kind, True, extra_headers={"x-mock-scenario": "no_usage"})
    span = telemetry.span().attributes or {}
    assert span[SOURCE] == "estimate"
    assert sums(telemetry, INPUT) == {"text": span["gen_ai.usage.input_tokens"]}
    assert sums(telemetry, OUTPUT) == {"text": span["gen_ai.usage.output_tokens"]}
    for name in (INPUT, OUTPUT):
        assert {p.attributes[SOURCE] for p in telemetry.points(name)} == {"estimate"}


@needs_responses
def test_responses_api_and_embeddings_feed_the_same_counters(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    client.responses.create(model="gpt-4.1", input="Hello")
    client.embeddings.create(model="text-embedding-3-small", input=["a b c", "d e"])
    by_operation: dict[str, int] = defaultdict(int)
    for point in telemetry.points(INPUT):
        by_operation[point.attributes["gen_ai.operation.name"]] += point.value
        assert point.attributes[MODALITY] == "text"
    spans = {s.attributes["gen_ai.operation.name"]: s.attributes for s in telemetry.spans()}  # type: ignore[index]
    assert by_operation == {
        op: attributes["gen_ai.usage.input_tokens"] for op, attributes in spans.items()
    }


def test_metric_points_carry_only_bounded_attributes(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """Ids, content, costs and counts stay on spans: metrics get only low-cardinality keys."""
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, seed=7, temperature=0.5, user="someone"
    )
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    names = set()
    for metric in metrics_in(data):
        names.add(metric.name)
        for point in metric.data.data_points:
            assert set(point.attributes) <= BOUNDED, (metric.name, point.attributes)
    assert {INPUT, OUTPUT, "gen_ai.client.token.usage", "openai_usage.client.cost"} <= names


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("chunk_timing", ["per_stream", "per_chunk"])
def test_metric_points_carry_the_service_tier_that_served_the_call(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool, chunk_timing: str
) -> None:
    # A `flex` call is billed and timed apart from a `default` one: the points say which.
    instrument(chunk_timing=chunk_timing)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body={"service_tier": "flex"}, stream=stream
    )
    if stream:
        list(reply)
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    tiers = {
        metric.name: {point.attributes.get("openai.response.service_tier") for point in points}
        for metric in metrics_in(data)
        if (points := list(metric.data.data_points))
    }
    assert tiers["gen_ai.client.token.usage"] == {"flex"}
    assert tiers["gen_ai.client.operation.duration"] == {"flex"}
    if stream:
        assert tiers["gen_ai.client.operation.time_per_output_chunk"] == {"flex"}


@pytest.mark.parametrize(
    ("total", "reported", "rest", "expected"),
    [
        (10, (), "text", [("text", 10)]),
        (10, (("audio", 4),), "text", [("audio", 4), ("text", 6)]),
        (10, (("text", 6), ("audio", 3)), "text", [("text", 6), ("audio", 3), ("unknown", 1)]),
        (10, (("audio", 40),), "text", [("unknown", 10)]),  # a breakdown past the total
        (10, (("audio", 10),), "text", [("audio", 10)]),
        (None, (), "text", []),
    ],
)
def test_split_by_modality(
    total: int | None,
    reported: tuple[tuple[str, int], ...],
    rest: str,
    expected: list[tuple[str, int]],
) -> None:
    assert modalities.split(total, reported, rest) == expected


def duration_exemplar_span_ids(telemetry: Telemetry) -> set[int]:
    return {
        exemplar.span_id
        for point in telemetry.points("gen_ai.client.operation.duration")
        for exemplar in point.exemplars
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_a_calls_histogram_exemplar_links_to_its_own_span_not_the_callers(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, stream: bool
) -> None:
    # A stream made in one trace (a request's) and read in another (a worker's): the
    # duration's exemplar is the call's span, as is a non-streamed call's, not the span
    # current where the call ended.
    tracer = telemetry.tracer_provider.get_tracer("app")
    client = make_client(server, "async")
    with tracer.start_as_current_span("request"):
        result = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=stream
        )
    with tracer.start_as_current_span("worker"):
        if stream:
            [c async for c in result]
    await client.close()
    (call,) = (s for s in telemetry.spans() if s.name.startswith("chat"))
    assert call.context is not None
    assert duration_exemplar_span_ids(telemetry) == {call.context.span_id}


def test_a_failed_calls_tokens_are_counted_but_not_in_the_token_histogram(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # A stream broken mid-way: its estimate goes to the usage counters, which count every
    # call, failed ones included; `gen_ai.client.token.usage` is for operations that
    # succeeded, and `error.type` is an attribute of the duration alone.
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-scenario": "cut_after:3"},
    )
    with pytest.raises(MID_STREAM_CONNECTION_ERRORS):
        list(stream)
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert telemetry.points("gen_ai.client.token.usage") == []
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == attributes["error.type"]
    for name, count in (
        (INPUT, attributes["gen_ai.usage.input_tokens"]),
        (OUTPUT, attributes["gen_ai.usage.output_tokens"]),
    ):
        (point,) = telemetry.points(name)
        assert point.value == count
        assert point.attributes["openai_usage.usage.source"] == "estimate"
        assert "error.type" not in point.attributes
    for name in (
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
    ):
        (point,) = telemetry.points(name)
        assert "error.type" not in point.attributes


class _Message(dict):  # type: ignore[type-arg]
    """A dict subclass, as some frameworks pass their messages."""


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}], True),
        ([{"role": "user"}], True),  # no content: nothing but text was sent
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], True),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], False),
        ([{"role": "user", "content": "hi"}, {"role": "user", "content": 5}], False),
        ([_Message(role="user", content="hi")], True),
        ([_Message(role="user", content=[{"type": "input_audio"}])], False),
        ([types.SimpleNamespace(role="user", content="hi")], True),
        ([types.SimpleNamespace(role="user", content=[types.SimpleNamespace(type="text")])], True),
        ([types.SimpleNamespace(role="user", content=({"type": "file"},))], False),
        ([], True),
        ("hi", False),  # not a list of messages: unknown
    ],
)
def test_a_chat_requests_input_is_text_only_when_every_message_holds_only_text(
    messages: Any, text: bool
) -> None:
    assert modalities.input_is_text("chat", {"messages": messages}) is text
