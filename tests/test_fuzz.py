"""Property-based tests (hypothesis): odd chunks and odd usage never hurt the caller.

(a) `usage.py` and the stream accumulators directly, with usage objects and chunks of any
shape: missing fields, zeros, negatives, huge numbers, wrong types, unicode, empty
choices, null deltas, tool-call deltas with odd indexes.

(b) The stream proxy with the real SDK over an in-process mock transport serving the
generated chunks as SSE: the chunks the caller sees equal (`model_dump()`) those an
uninstrumented call sees for the same bytes, or both raise the same exception type; the
span ends exactly once; token attributes are present only when valid; and what was
recorded can always be exported (OTLP encodes integers in 64 bits).

(c) The estimate, on requests of any shape inside the SDK's: it always counts the prompt.

Examples are derandomized (the same ones on every run and in CI) and few, so the file
runs in seconds on every SDK line.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import re
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.resources.chat.completions import Completions
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.utils import suppress_instrumentation

from opentelemetry.instrumentation.openai_usage import streams
from opentelemetry.instrumentation.openai_usage.accumulators import ChatStreamAccumulator
from opentelemetry.instrumentation.openai_usage.estimate import estimate_usage
from opentelemetry.instrumentation.openai_usage.pricing import Price
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally
from opentelemetry.instrumentation.openai_usage.telemetry import usage_attributes
from opentelemetry.instrumentation.openai_usage.usage import MAX_COUNT, Usage, usage_from

from .conftest import API_KEY, HTTP, MESSAGES, Telemetry

pytestmark = pytest.mark.timeout(120)

FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THROUGH_SDK = settings(FAST, max_examples=60)

TOKEN_ATTRIBUTES = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.total_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
)
USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "reasoning_output_tokens",
    "cache_write_input_tokens",
)

# -- strategies -------------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-5, max_value=50),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, MAX_COUNT, MAX_COUNT + 1, 2**63 - 1, 2**63, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.text(max_size=12),
    st.sampled_from(["", "12", "-1", "stop", "é漢字🙂", "\x00"]),
)
odd = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
counts = st.one_of(st.integers(min_value=0, max_value=10_000), odd)


def fields(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


details = fields(
    {},
    {
        "cached_tokens": counts,
        "reasoning_tokens": counts,
        "audio_tokens": counts,
        "text_tokens": counts,
        "image_tokens": counts,
        "cache_write_tokens": counts,
    },
)
usage_dicts = fields(
    {},
    {
        "prompt_tokens": counts,
        "completion_tokens": counts,
        "total_tokens": counts,
        "input_tokens": counts,
        "output_tokens": counts,
        "prompt_tokens_details": st.one_of(details, odd),
        "completion_tokens_details": st.one_of(details, odd),
        "input_tokens_details": st.one_of(details, odd),
        "output_tokens_details": st.one_of(details, odd),
        "cache_creation_input_tokens": counts,
    },
)
# Well-formed usage but for one count beyond what any call bills (or an int64 holds).
huge_usage = st.fixed_dictionaries(
    {
        "prompt_tokens": st.sampled_from([MAX_COUNT, MAX_COUNT + 1, 2**63, 2**70]),
        "completion_tokens": counts,
    }
)
texts = st.one_of(st.text(max_size=8), st.none(), st.sampled_from(["", " w", "é漢字🙂"]))
indexes = st.one_of(
    st.integers(min_value=-3, max_value=4), st.integers(min_value=-(2**64), max_value=2**64), odd
)
tool_calls = st.lists(
    fields(
        {},
        {
            "index": indexes,
            "id": st.one_of(texts, odd),
            "type": st.one_of(st.just("function"), odd),
            "function": st.one_of(
                fields({}, {"name": st.one_of(texts, odd), "arguments": st.one_of(texts, odd)}),
                odd,
            ),
        },
    ),
    max_size=3,
)
deltas = st.one_of(
    st.none(),
    fields(
        {},
        {
            "role": st.one_of(st.just("assistant"), odd),
            "content": st.one_of(texts, texts, odd),
            "refusal": st.one_of(texts, odd),
            "tool_calls": st.one_of(tool_calls, st.none(), odd),
            "function_call": st.one_of(
                st.none(), fields({}, {"name": texts, "arguments": texts}), odd
            ),
        },
    ),
    odd,
)
choices = st.lists(
    fields(
        {},
        {
            "index": indexes,
            "delta": deltas,
            "finish_reason": st.one_of(st.none(), st.sampled_from(["stop", "length"]), odd),
            "logprobs": st.none(),
        },
    ),
    max_size=3,
)
chunks = fields(
    {"object": st.just("chat.completion.chunk")},
    {
        "id": st.one_of(st.just("chatcmpl-fuzz"), texts, odd),
        "created": st.one_of(st.just(1_747_000_000), odd),
        "model": st.one_of(st.just("gpt-4o-mini-2024-07-18"), texts, odd),
        "choices": st.one_of(choices, choices, st.none(), odd),
        "usage": st.one_of(st.none(), usage_dicts, odd),
        "system_fingerprint": st.one_of(texts, odd),
        "service_tier": st.one_of(texts, odd),
    },
)


def as_object(value: Any) -> Any:
    """A JSON value as attribute-style objects, the way an SDK model reads."""
    if isinstance(value, dict):
        return SimpleNamespace(**{str(k): as_object(v) for k, v in value.items()})
    if isinstance(value, list):
        return [as_object(v) for v in value]
    return value


def valid(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2 * MAX_COUNT


def check_usage(usage: Usage | None) -> None:
    """Every count of a Usage is absent or a valid non-negative int; so are its attributes."""
    if usage is None:
        return
    for name in USAGE_FIELDS:
        value = getattr(usage, name)
        assert value is None or valid(value), (name, value)
    for modality, count in usage.input_modalities + usage.output_modalities:
        assert modality in ("text", "audio", "image") and valid(count) and count > 0
    attributes = usage_attributes(usage)
    for key in TOKEN_ATTRIBUTES:
        assert key not in attributes or valid(attributes[key]), (key, attributes.get(key))


def first_valid(raw: Any, *names: str) -> int | None:
    for name in names:
        value = raw.get(name) if isinstance(raw, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
            return value
    return None


# -- (a) directly -----------------------------------------------------------------------------


@FAST
@given(raw=st.one_of(usage_dicts, odd), as_objects=st.booleans())
def test_usage_of_any_shape_gives_only_valid_counts_and_the_valid_ones_given(
    raw: Any, as_objects: bool
) -> None:
    usage = usage_from(as_object(raw) if as_objects else raw)
    check_usage(usage)
    expected_input = first_valid(raw, "prompt_tokens", "input_tokens")
    expected_output = first_valid(raw, "completion_tokens", "output_tokens")
    if expected_input is None and expected_output is None:
        total = first_valid(raw, "total_tokens")
        assert usage is None if total is None else usage is not None and usage.total_tokens == total
        return
    assert usage is not None
    assert usage.input_tokens == expected_input
    assert usage.output_tokens == expected_output
    total = first_valid(raw, "total_tokens")
    if total is None and expected_input is not None and expected_output is not None:
        total = expected_input + expected_output
    assert usage.total_tokens == total
    assert usage.source == "response"


@FAST
@given(stream=st.lists(st.one_of(chunks, odd), max_size=6), estimating=st.booleans())
def test_the_chat_accumulator_takes_any_chunks_and_reports_only_valid_usage(
    stream: list[Any], estimating: bool
) -> None:
    accumulator = ChatStreamAccumulator(CompletionTally() if estimating else None)
    for chunk in stream:
        accumulator.on_chunk(as_object(chunk))
    facts = accumulator.facts()
    check_usage(facts.usage)
    assert all(isinstance(r, str) for r in facts.finish_reasons)
    last_usage = [c["usage"] for c in stream if isinstance(c, dict) and c.get("usage") is not None]
    if not last_usage:
        assert facts.usage is None
    assert facts.model is None or len(facts.model) <= 256


# The chunk nearly every chat stream is made of, the one the watcher's fast path takes.
common_chunks = st.fixed_dictionaries(
    {
        "id": st.just("chatcmpl-fuzz"),
        "object": st.just("chat.completion.chunk"),
        "created": st.just(1_747_000_000),
        "model": st.just("gpt-4o-mini-2024-07-18"),
        "choices": st.lists(
            fields(
                {"index": st.sampled_from([0, 0, 0, 1]), "delta": fields({"content": texts}, {})},
                {
                    "finish_reason": st.one_of(st.none(), st.just("stop")),
                    "logprobs": st.none(),
                },
            ),
            min_size=1,
            max_size=2,
        ),
    },
    optional={"usage": st.one_of(st.none(), usage_dicts)},
)


def sdk_chunk(raw: Any) -> Any:
    """A chunk as the SDK's stream makes it from the server's JSON (not validated)."""
    from openai._models import construct_type
    from openai.types.chat import ChatCompletionChunk

    return construct_type(type_=ChatCompletionChunk, value=raw)


def watched(raw_chunks: list[Any], fast: bool, injected: bool, estimating: bool) -> Any:
    """What `_watch` hands on and leaves behind, with or without its fast path."""
    ended: list[dict[str, Any]] = []
    invocation = SimpleNamespace(
        settings=SimpleNamespace(chunk_timing="per_stream"),
        request={},  # as the caller's arguments: one choice asked for
        ended=False,
        end=lambda facts, error, **kw: ended.append({"facts": facts, "error": error, **kw}),
    )
    accumulator = ChatStreamAccumulator(CompletionTally() if estimating else None)
    state = streams.StreamState(invocation, accumulator, injected)  # type: ignore[arg-type]
    assert state.fast
    state.fast = fast
    if injected:  # as the server answers a request with include_usage
        raw_chunks = [
            {"usage": None, **raw} if isinstance(raw, dict) else raw for raw in raw_chunks
        ]
    objects = [sdk_chunk(raw) for raw in raw_chunks]
    seen = list(streams._watch(iter(objects), state))
    (end,) = ended
    facts = end["facts"]
    tally = facts.tally
    return {
        "seen": [objects.index(chunk) for chunk in seen],
        "dumps": [chunk.model_dump(exclude_unset=True, warnings=False) for chunk in seen],
        "facts": (facts.response_id, facts.model, facts.finish_reasons, facts.usage),
        "tally": None if tally is None else repr(tally.choices),
        "chunks": end["chunk_count"],
        "timed": end["first_chunk_perf"] is not None,
    }


@FAST
@given(
    stream=st.lists(st.one_of(common_chunks, common_chunks, common_chunks, chunks), max_size=8),
    injected=st.booleans(),
    estimating=st.booleans(),
)
def test_the_watchers_fast_path_has_the_effect_of_the_careful_one(
    stream: list[Any], injected: bool, estimating: bool
) -> None:
    careful = watched(stream, fast=False, injected=injected, estimating=estimating)
    assert watched(stream, fast=True, injected=injected, estimating=estimating) == careful


counts = st.one_of(st.none(), st.integers(0, 2**53 - 1), st.sampled_from([0, 1, 1000]))
# The kinds most calls report as 0 or not at all, and a breakdown that most calls lack:
# the quick sum's case, often.
subsets = st.one_of(st.sampled_from([None, 0, 0, 0]), counts)
prices = st.one_of(
    st.none(),
    st.none(),
    st.floats(0, 100, allow_nan=False),
    st.integers(0, 100),
    st.sampled_from([0.0, 2.5, float("inf"), float("nan")]),
)
modalities = st.one_of(
    st.just([]),
    st.just([]),
    st.lists(st.tuples(st.sampled_from(["text", "audio", "image"]), st.integers(1, 99))),
)


@FAST
@given(
    tokens=st.tuples(counts, counts, subsets, subsets, subsets),
    given_prices=st.tuples(st.floats(0, 100, allow_nan=False), *[prices] * 6),
    inputs=modalities,
    outputs=modalities,
)
def test_a_prices_quick_sum_is_its_full_one(
    tokens: tuple[Any, ...], given_prices: tuple[Any, ...], inputs: Any, outputs: Any
) -> None:
    """`Price.cost` leaves out the kinds a usage does not report when every price is
    finite: the cost is the one its full sum gives, to the bit."""
    usage = Usage(
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cache_read_input_tokens=tokens[2],
        cache_write_input_tokens=tokens[3],
        reasoning_output_tokens=tokens[4],
        input_modalities=tuple(inputs),
        output_modalities=tuple(outputs),
    )
    price = Price(*given_prices)
    full = Price(*given_prices)
    object.__setattr__(full, "_finite", False)  # the full sum, always
    quick, expected = price.cost(usage), full.cost(usage)
    assert quick == expected or (quick != quick and expected != expected)  # NaN is NaN
    assert type(quick) is type(expected)


# -- (b) through the SDK's stream -------------------------------------------------------------

_WANTS_USAGE = re.compile(rb'"include_usage"\s*:\s*true')


def sse(stream: list[Any], usage_chunk: Any, wants_usage: bool) -> list[bytes]:
    """The generated chunks as SSE, answered as OpenAI would the request as sent: with
    `include_usage`, `"usage": null` on chunks that lack one and the usage chunk last."""
    events = []
    for chunk in stream:
        if isinstance(chunk, dict):
            if wants_usage and "usage" not in chunk:
                chunk = {**chunk, "usage": None}
            elif not wants_usage and not chunk.get("choices") and chunk.get("usage") is not None:
                # A usage-only chunk comes only when asked for. (A server that sends one
                # unasked: the caller misses it when we injected, see the README's Limits.)
                continue
        events.append(f"data: {json.dumps(chunk)}\n\n".encode())
    if wants_usage and usage_chunk is not None:
        last = {"id": "chatcmpl-fuzz", "object": "chat.completion.chunk", "choices": []}
        events.append(f"data: {json.dumps({**last, 'usage': usage_chunk})}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


class Served:
    """The example being served: the same bytes for the plain and the instrumented call."""

    stream: list[Any] = []  # noqa: RUF012
    usage_chunk: Any = None

    @classmethod
    def handler(cls, request: Any) -> Any:
        wants = _WANTS_USAGE.search(request.content) is not None
        events = sse(cls.stream, cls.usage_chunk, wants)
        return HTTP.Response(
            200, headers={"content-type": "text/event-stream"}, content=iter(events)
        )


def read(create: Any, **kwargs: Any) -> tuple[list[Any], type[BaseException] | None]:
    """The chunks the caller sees (`model_dump()`, or the type of the exception that raises
    for an odd chunk), and the type of the exception the stream raised, if any."""
    seen: list[Any] = []
    stream = create(**kwargs)
    try:
        for chunk in stream:
            try:
                seen.append(chunk.model_dump(warnings=False))
            except Exception as exc:  # the SDK's model, not the stream: read on
                seen.append(type(exc))
    except Exception as exc:
        return seen, type(exc)
    return seen, None


class EndedTwice(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "ended span" in record.getMessage():
            self.messages.append(record.getMessage())


def test_any_stream_reads_as_uninstrumented_and_ends_one_span_with_valid_usage(
    instrument: Any, telemetry: Telemetry
) -> None:
    plain_create = Completions.create  # the SDK's own, taken before instrumenting
    instrument()
    client = openai.OpenAI(
        base_url="http://mock.invalid/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(Served.handler)),
    )
    twice = EndedTwice()
    logging.getLogger("opentelemetry").addHandler(twice)
    examples = 0

    @THROUGH_SDK
    @given(
        stream=st.lists(st.one_of(chunks, chunks, chunks, odd), max_size=5),
        usage_chunk=st.one_of(usage_dicts, usage_dicts, huge_usage, odd),
        user_asks=st.booleans(),
    )
    def example(stream: list[Any], usage_chunk: Any, user_asks: bool) -> None:
        nonlocal examples
        examples += 1
        Served.stream, Served.usage_chunk = stream, usage_chunk
        kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
        if user_asks:
            kwargs["stream_options"] = {"include_usage": True}
        telemetry.exporter.clear()
        with suppress_instrumentation():  # else `post()` traces the SDK's own method too
            plain = read(lambda **kw: plain_create(client.chat.completions, **kw), **kwargs)
        traced = read(client.chat.completions.create, **kwargs)

        assert traced == plain
        spans = telemetry.spans()
        assert len(spans) == 1
        span = spans[0]
        assert span.end_time is not None
        attributes = dict(span.attributes or {})
        assert attributes["openai_usage.stream.outcome"] == (
            "error" if plain[1] is not None else "completed"
        )
        for key in TOKEN_ATTRIBUTES:
            assert key not in attributes or valid(attributes[key]), (key, attributes.get(key))
        if attributes.get("openai_usage.usage.source") == "response":
            sent = [c.get("usage") for c in stream if isinstance(c, dict)]
            sent.append(usage_chunk)
            assert any(usage_from(u) is not None for u in sent)
        encode_spans(spans)  # what we put on the span can be exported...
        data = telemetry.reader.get_metrics_data()
        if data is not None:
            encode_metrics(data)  # ... and so can every metric point so far

    try:
        example()
    finally:
        logging.getLogger("opentelemetry").removeHandler(twice)
        client.close()
    assert examples >= 60
    assert twice.messages == []  # no span was ended a second time


# ------------------------------------------------ (c) the estimate, on requests of any shape
# Inside the shapes the SDK takes (a list of messages, of tools), anything: schemas of odd
# keywords and values (a datetime the SDK sends in ISO form, values it cannot send at all,
# a `required` that is no list, keys that are ints or None), ids that are dicts, tool
# choices of odd shapes. The estimate runs at the end of such a call: it must always count
# the prompt (a lower bound when a part cannot be read), never lose it to an exception.


class _Words:
    """An encoder that counts words: the shapes are under test here, not tiktoken."""

    def encode_ordinary(self, text: str) -> list[int]:
        return [0] * len(text.split())


_SCHEMA_KEYS = ["type", "properties", "required", "enum", "anyOf", "oneOf", "items", "$ref"]
_SCHEMA_KEYS += ["$defs", "default", "title", "description"]
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=6),
    st.sampled_from(["object", "array", "string", "integer", "null", "#/$defs/A", "A"]),
    st.sampled_from([datetime.datetime(2026, 1, 1), decimal.Decimal("1.5"), b"x", frozenset({1})]),
)
_schemas = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(_SCHEMA_KEYS), inner, max_size=6),
        st.dictionaries(
            st.one_of(st.text(max_size=4), st.integers(), st.none()), inner, max_size=4
        ),
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=30,
)
_ids = st.one_of(st.text(max_size=3), st.none(), st.just({"a": 1}), st.just(["x"]))
_call = st.fixed_dictionaries(
    {
        "id": _ids,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": _leaves, "arguments": _leaves}),
    }
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", None])},
    optional={
        "content": _leaves,
        "tool_calls": st.one_of(st.lists(_call, max_size=2), _leaves),
        "tool_call_id": _ids,
        "name": _leaves,
    },
)
_function = st.fixed_dictionaries(
    {"name": st.text(max_size=4)}, optional={"description": _leaves, "parameters": _schemas}
)
_choice = st.one_of(
    _leaves,
    st.fixed_dictionaries(
        {"type": st.just("function")},
        optional={
            "name": _leaves,
            "function": st.one_of(_leaves, st.fixed_dictionaries({"name": _leaves})),
        },
    ),
)
_schema_format = st.fixed_dictionaries(
    {
        "type": st.just("json_schema"),
        "schema": st.dictionaries(st.sampled_from(_SCHEMA_KEYS), _schemas),
    },
    optional={"name": _leaves, "description": _leaves},
)


@settings(FAST, max_examples=400)
@given(
    messages=st.lists(_message, max_size=4),
    functions=st.lists(_function, max_size=2),
    choice=_choice,
    schema_format=_schema_format,
    responses=st.booleans(),
)
def test_the_estimate_counts_the_prompt_of_a_request_of_any_shape(
    messages: list[Any],
    functions: list[Any],
    choice: Any,
    schema_format: Any,
    responses: bool,
) -> None:
    if responses:
        tools = [{"type": "function", **function} for function in functions]
        request = {"input": messages, "text": {"format": schema_format}}
    else:
        tools = [{"type": "function", "function": function} for function in functions]
        response_format = {"type": "json_schema", "json_schema": schema_format}
        request = {"messages": messages, "response_format": response_format}
    request.update(model="gpt-4o", tools=tools, tool_choice=choice)
    operation = "responses" if responses else "chat"
    usage = estimate_usage(operation, request, CompletionTally(), "gpt-4o", _Words())
    assert usage.input_tokens is not None
