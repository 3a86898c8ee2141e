"""Message content: off by default, opt-in on spans and/or in one log event, size-limited.

Through the real SDK against the local server, sync and async, streamed and not. The
expected content is what the caller itself sent and received.
"""

from __future__ import annotations

import gc
import json
import re
import types
from typing import Any

import openai
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from opentelemetry import trace
from opentelemetry.instrumentation.openai_usage import capture as capture_module
from opentelemetry.instrumentation.openai_usage.config import Settings
from opentelemetry.instrumentation.openai_usage.content import bounded_json, bounded_value
from opentelemetry.instrumentation.openai_usage.estimator import Estimator
from opentelemetry.instrumentation.openai_usage.localserver import (
    DEFAULT_REPLY,
    TOOL_ARGUMENTS,
    LocalOpenAIServer,
)

from .conftest import (
    API_KEY,
    HTTP,
    Telemetry,
    completed_response,
    make_client,
    needs_responses,
    sdk_has_responses,
    served_by,
    sse_reply,
)

INPUT = "gen_ai.input.messages"
OUTPUT = "gen_ai.output.messages"
# A legacy `function_call` to get_weather(city="Paris"), captured: it has no call id.
FUNCTION_CALL_PART = {
    "type": "tool_call",
    "id": None,
    "name": "get_weather",
    "arguments": {"city": "Paris"},
}
SYSTEM = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"
CONTENT_KEYS = (INPUT, OUTPUT, SYSTEM, TOOL_DEFINITIONS)
EVENT = "gen_ai.client.inference.operation.details"
KINDS = ("openai", "async")
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": [{"type": "text", "text": "What's 1+1?"}]},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def capture(instrument: Any, logger_provider: LoggerProvider) -> Any:
    """Instrument with a logger provider whose events land in `logs`."""

    def _instrument(**settings: Any) -> Any:
        return instrument(logger_provider=logger_provider, **settings)

    return _instrument


async def call(server: LocalOpenAIServer, kind: str, api: str, **kwargs: Any) -> Any:
    """One call through the real SDK; a stream is read to its end (list of chunks)."""
    client = make_client(server, kind)
    resource = client.chat.completions if api == "chat" else getattr(client, api)
    result = resource.create(**kwargs)
    if kind == "async":
        result = await result
        return [c async for c in result] if kwargs.get("stream") else result
    return list(result) if kwargs.get("stream") else result


def captured(telemetry: Telemetry) -> dict[str, Any]:
    attributes = telemetry.span().attributes or {}
    return {key: json.loads(attributes[key]) for key in CONTENT_KEYS if key in attributes}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_content_is_not_recorded_by_default(
    capture: Any,
    telemetry: Telemetry,
    logs: InMemoryLogRecordExporter,
    server: LocalOpenAIServer,
    kind: str,
    stream: bool,
) -> None:
    capture()
    await call(server, kind, "chat", model="gpt-4o-mini", messages=MESSAGES, stream=stream)
    attributes = telemetry.span().attributes or {}
    assert not set(CONTENT_KEYS) & set(attributes)
    assert "Answer briefly" not in json.dumps(dict(attributes))
    assert logs.get_finished_logs() == ()


def test_no_output_text_is_held_when_capture_and_estimates_are_off() -> None:
    """Content is never buffered when capture is off: streams keep no text at all."""
    assert Estimator(Settings(usage_estimate="off")).new_tally() is None
    captured_only = Estimator(Settings(usage_estimate="off", capture_message_content="span_only"))
    tally = captured_only.new_tally()
    assert tally is not None and tally.max_chars == Settings().max_content_length


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_span_only_records_chat_input_output_and_tools_in_convention_shapes(
    capture: Any,
    telemetry: Telemetry,
    logs: InMemoryLogRecordExporter,
    server: LocalOpenAIServer,
    kind: str,
    stream: bool,
) -> None:
    capture(capture_message_content="span_only")
    await call(
        server, kind, "chat", model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS, stream=stream
    )
    content = captured(telemetry)
    assert content[INPUT] == [
        {"role": "system", "parts": [{"type": "text", "content": "Answer briefly."}]},
        {"role": "user", "parts": [{"type": "text", "content": "What's 1+1?"}]},
    ]
    assert content[OUTPUT] == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": DEFAULT_REPLY}],
            "finish_reason": "stop",
        }
    ]
    assert content[TOOL_DEFINITIONS] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": TOOLS[0]["function"]["parameters"],
        }
    ]
    assert logs.get_finished_logs() == ()  # span only


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_output_holds_every_choice_and_its_tool_calls(
    capture: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str, stream: bool
) -> None:
    capture(capture_message_content="SPAN_ONLY")
    received = await call(
        server,
        kind,
        "chat",
        model="gpt-4o-mini",
        messages=MESSAGES,
        n=2,
        stream=stream,
        extra_headers={"x-mock-tool-call": "get_weather"},
    )
    if stream:
        ids = {
            c.choices[0].index: c.choices[0].delta.tool_calls[0].id
            for c in received
            if c.choices and c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].id
        }
    else:
        ids = {c.index: c.message.tool_calls[0].id for c in received.choices}
    output = captured(telemetry)[OUTPUT]
    assert output == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": ids[i],
                    "name": "get_weather",
                    "arguments": json.loads(TOOL_ARGUMENTS),
                }
            ],
            "finish_reason": "tool_call",
        }
        for i in (0, 1)
    ]


def test_a_conversation_with_tool_results_is_captured_as_parts(
    capture: Any, telemetry: Telemetry, client: Any
) -> None:
    capture(capture_message_content="span_only")
    messages = [
        {"role": "user", "content": "Weather in Paris?", "name": "alice"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    text = {"type": "text", "content": "Weather in Paris?"}
    call = {"type": "tool_call", "id": "call_1", "name": "get_weather"}
    result = {"type": "tool_call_response", "id": "call_1", "response": "sunny"}
    assert captured(telemetry)[INPUT] == [
        {"role": "user", "parts": [text], "name": "alice"},
        {"role": "assistant", "parts": [{**call, "arguments": {"city": "Paris"}}]},
        {"role": "tool", "parts": [result]},
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "And this?"},
                {"type": "uri", "modality": "image", "uri": "https://example.com/a.png"},
            ],
        },
    ]


def test_a_legacy_function_result_is_captured_with_the_function_name_that_pairs_it(
    capture: Any, telemetry: Telemetry, client: Any
) -> None:
    # A `function` message has no call id (null in the schema's tool_call_response): its
    # `name`, the function's, is what pairs it with the function call before it.
    capture(capture_message_content="span_only")
    call = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "function_call": call},
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert captured(telemetry)[INPUT][1:] == [
        {
            "role": "assistant",
            "parts": [FUNCTION_CALL_PART],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": None, "response": "sunny"}],
            "name": "get_weather",
        },
    ]


def test_capture_never_uses_up_an_iterable_the_sdk_still_has_to_send(
    capture: Any, telemetry: Telemetry, client: Any, server: LocalOpenAIServer
) -> None:
    # The SDK accepts any iterable of tool calls; capture runs before the SDK sends it.
    capture(capture_message_content="span_only")
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": iter([tool_call])},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert server.requests[-1].body["messages"][1]["tool_calls"] == [tool_call]
    assert captured(telemetry)[INPUT][1] == {"role": "assistant", "parts": []}


@needs_responses
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_responses_api_captures_input_instructions_and_output(
    capture: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str, stream: bool
) -> None:
    capture(capture_message_content="span_only")
    await call(
        server,
        kind,
        "responses",
        model="gpt-4.1",
        input="Say hello.",
        instructions="You are terse.",
        stream=stream,
    )
    content = captured(telemetry)
    assert content[INPUT] == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hello."}]}
    ]
    assert content[SYSTEM] == [{"type": "text", "content": "You are terse."}]
    assert content[OUTPUT] == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": DEFAULT_REPLY}],
            "finish_reason": "stop",
        }
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_legacy_completion_prompt_and_text_are_captured(
    capture: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str, stream: bool
) -> None:
    capture(capture_message_content="span_only")
    await call(
        server, kind, "completions", model="gpt-3.5-turbo-instruct", prompt="Once", stream=stream
    )
    content = captured(telemetry)
    assert content[INPUT] == [{"role": "user", "parts": [{"type": "text", "content": "Once"}]}]
    assert content[OUTPUT][0]["parts"] == [{"type": "text", "content": DEFAULT_REPLY}]


def test_a_stream_closed_early_captures_what_was_received(
    capture: Any, telemetry: Telemetry, client: Any
) -> None:
    capture(capture_message_content="span_only")
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-mock-chunks": "50"}
    )
    received = ""
    for chunk in stream:
        if chunk.choices:
            received += chunk.choices[0].delta.content or ""
        if received.count("w") >= 3:
            break
    stream.close()
    (message,) = captured(telemetry)[OUTPUT]
    assert message["parts"] == [{"type": "text", "content": received}]
    assert message["finish_reason"] == "unknown"  # the stream ended before its reason came


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_event_only_emits_one_event_with_the_exchange_in_the_span_context(
    capture: Any,
    telemetry: Telemetry,
    logs: InMemoryLogRecordExporter,
    server: LocalOpenAIServer,
    kind: str,
    stream: bool,
) -> None:
    capture(capture_message_content="event_only")
    await call(server, kind, "chat", model="gpt-4o-mini", messages=MESSAGES, stream=stream)
    span = telemetry.span()
    assert not set(CONTENT_KEYS) & set(span.attributes or {})
    (record,) = [item.log_record for item in logs.get_finished_logs()]
    assert record.event_name == EVENT
    assert record.trace_id == span.context.trace_id
    assert record.span_id == span.context.span_id
    attributes = dict(record.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    # On an event, content is structured, as the conventions require (on spans: JSON text).
    assert attributes[INPUT][1]["parts"][0] == {"type": "text", "content": "What's 1+1?"}
    assert attributes[OUTPUT][0]["parts"][0] == {"type": "text", "content": DEFAULT_REPLY}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_the_event_carries_the_spans_request_response_and_usage_attributes(
    capture: Any,
    telemetry: Telemetry,
    logs: InMemoryLogRecordExporter,
    server: LocalOpenAIServer,
    kind: str,
    stream: bool,
) -> None:
    """The conventions define the event with the inference span's attributes, the
    conditionally required ones (seed, choice count, stream, output type) included."""
    capture(capture_message_content="event_only")
    await call(
        server,
        kind,
        "chat",
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=stream,
        seed=4,
        n=2,
        temperature=0.5,
        max_tokens=20,
        response_format={"type": "json_object"},
    )
    span_attributes = dict(telemetry.span().attributes or {})
    (record,) = [item.log_record for item in logs.get_finished_logs()]
    attributes = dict(record.attributes or {})
    expected = {
        "gen_ai.request.seed": 4,
        "gen_ai.request.choice.count": 2,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 20,
        "gen_ai.output.type": "json",
        "gen_ai.usage.input_tokens": span_attributes["gen_ai.usage.input_tokens"],
        "gen_ai.usage.output_tokens": span_attributes["gen_ai.usage.output_tokens"],
        "gen_ai.response.id": span_attributes["gen_ai.response.id"],
        "gen_ai.response.finish_reasons": ("stop", "stop"),
    }
    if stream:
        expected["gen_ai.request.stream"] = True
        expected["gen_ai.response.time_to_first_chunk"] = span_attributes[
            "gen_ai.response.time_to_first_chunk"
        ]
    assert {key: attributes.get(key) for key in expected} == expected
    # Every GenAI, server and error attribute of the span is on the event, with its value.
    conventions = {
        key: value
        for key, value in span_attributes.items()
        if key.startswith(("gen_ai.", "server.", "error.", "openai."))
    }
    assert {key: attributes.get(key) for key in conventions} == conventions


def test_the_event_has_the_debug_severity_the_conventions_ask_for(
    capture: Any, logs: InMemoryLogRecordExporter, client: Any
) -> None:
    from opentelemetry._logs import SeverityNumber

    capture(capture_message_content="event_only")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (record,) = [item.log_record for item in logs.get_finished_logs()]
    assert (record.severity_number, record.severity_text) == (SeverityNumber.DEBUG, "DEBUG")
    assert record.severity_number.value == 5


def test_the_event_names_the_conventions_version_as_the_span_does(
    capture: Any, telemetry: Telemetry, logs: InMemoryLogRecordExporter, client: Any
) -> None:
    capture(capture_message_content="event_only")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span_scope = telemetry.span().instrumentation_scope
    (item,) = logs.get_finished_logs()
    assert span_scope is not None
    assert span_scope.schema_url == "https://opentelemetry.io/schemas/1.41.1"
    assert item.instrumentation_scope.schema_url == span_scope.schema_url
    assert item.instrumentation_scope.name == span_scope.name


def test_span_and_event_records_both(
    capture: Any, telemetry: Telemetry, logs: InMemoryLogRecordExporter, client: Any
) -> None:
    capture(capture_message_content=True)  # the boolean form means both
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert INPUT in captured(telemetry)
    assert len(logs.get_finished_logs()) == 1


# The caller's trace was not sampled upstream: the default sampler (parent-based) drops
# the call's span too, as in most of a sampled service's calls.
UNSAMPLED_CALLER = NonRecordingSpan(
    SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
)


@pytest.mark.parametrize(("setting", "events"), [("SPAN_ONLY", 0), ("SPAN_AND_EVENT", 1)])
def test_content_of_a_sampled_out_call_is_read_only_for_its_event(
    capture: Any,
    telemetry: Telemetry,
    logs: InMemoryLogRecordExporter,
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    events: int,
) -> None:
    # A span the sampler dropped keeps nothing: turning its content into JSON (the whole
    # conversation, on every call) would be work for nothing. The event still has it.
    read: list[str] = []
    for name in ("input_content", "output_content"):
        real = getattr(capture_module, name)
        monkeypatch.setattr(
            capture_module, name, lambda *a, _n=name, _r=real: read.append(_n) or _r(*a)
        )
    capture(capture_message_content=setting)
    with trace.use_span(UNSAMPLED_CALLER):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert telemetry.spans() == []
    assert read == ["output_content", "input_content"][: 2 * events]
    records = [item.log_record for item in logs.get_finished_logs()]
    assert len(records) == events
    for record in records:
        attributes = dict(record.attributes or {})
        assert attributes[INPUT][1]["parts"][0] == {"type": "text", "content": "What's 1+1?"}
        assert attributes[OUTPUT][0]["parts"][0] == {"type": "text", "content": DEFAULT_REPLY}
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.count == 1


@pytest.mark.parametrize(
    ("value", "on_span"),
    [("SPAN_ONLY", True), ("span_and_event", True), ("true", True), ("NO_CONTENT", False)],
)
def test_the_shared_environment_variable_turns_capture_on(
    capture: Any,
    telemetry: Telemetry,
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    on_span: bool,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    capture()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert (INPUT in captured(telemetry)) is on_span


def test_a_bad_capture_value_warns_once_and_records_nothing(
    capture: Any,
    telemetry: Telemetry,
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "maybe")
    capture()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert captured(telemetry) == {}
    warnings = [r for r in caplog.records if "CAPTURE_MESSAGE_CONTENT" in r.getMessage()]
    assert len(warnings) == 1 and "SPAN_ONLY" in warnings[0].getMessage()


@pytest.mark.parametrize("stream", [False, True])
def test_captured_content_is_cut_to_the_limit_and_stays_valid_json(
    capture: Any, telemetry: Telemetry, client: Any, stream: bool
) -> None:
    capture(capture_message_content="span_only", max_content_length=300)
    long_text = "x" * 5000
    result = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": long_text}],
        stream=stream,
        extra_headers={"x-mock-chunks": "2000"},
    )
    if stream:
        list(result)
    attributes = telemetry.span().attributes or {}
    for key in (INPUT, OUTPUT):
        value = attributes[key]
        assert isinstance(value, str) and len(value) <= 300
        text = json.loads(value)[0]["parts"][0]["content"]
        assert text.endswith("…") and len(text) > 100  # cut, and still most of the room


def test_secrets_never_appear_in_captured_content(
    capture: Any, telemetry: Telemetry, logs: InMemoryLogRecordExporter, client: Any
) -> None:
    capture(capture_message_content="span_and_event")
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        extra_headers={"Authorization": f"Bearer {API_KEY}", "api-key": API_KEY},
    )
    everything = json.dumps(dict(telemetry.span().attributes or {}))
    everything += json.dumps(
        [dict(r.log_record.attributes or {}) for r in logs.get_finished_logs()]
    )
    assert "What's 1+1?" in everything
    assert API_KEY not in everything and "Bearer" not in everything


def test_bounded_json_leaves_out_the_oldest_items_when_the_structure_alone_is_too_long() -> None:
    many = [
        {"role": "user", "parts": [{"type": "text", "content": f"turn {i}: " + "words " * 9}]}
        for i in range(1000)
    ]
    text = bounded_json(many, 500)
    assert len(text) <= 500
    kept = json.loads(text)  # valid JSON, never the JSON text cut
    assert 1 <= len(kept) < 1000
    assert kept[-1]["parts"][0]["content"].startswith("turn 999")  # the latest turns stay
    assert all(m["role"] == "user" and m["parts"][0]["type"] == "text" for m in kept)
    # Rather than cut every message to a stub, fewer messages keep a few words each.
    assert all(len(m["parts"][0]["content"]) > 16 for m in kept)
    assert bounded_json(many, 10) == "[]"  # not one message fits


def test_bounded_json_cuts_content_never_the_strings_of_the_shape() -> None:
    # 150 turns at the default limit: the content is cut, never a role or a type.
    history = [
        {"role": role, "parts": [{"type": "text", "content": "a reply of some length " * 10}]}
        for _ in range(75)
        for role in ("user", "assistant")
    ]
    text = bounded_json(history, 16384)
    assert len(text) <= 16384
    kept = json.loads(text)
    assert len(kept) == 150
    assert {m["role"] for m in kept} == {"user", "assistant"}
    assert {p["type"] for m in kept for p in m["parts"]} == {"text"}
    assert all(m["parts"][0]["content"].endswith("…") for m in kept)
    small = {"a": "b"}
    assert bounded_json(small, 500) == '{"a":"b"}'
    cut = json.loads(bounded_json({"content": "é" * 1000, "role": "r" * 50}, 100))
    assert cut["role"] == "r" * 50 and cut["content"].endswith("…")


def test_bounded_value_is_what_bounded_json_says_as_a_structure() -> None:
    history = [{"role": "user", "parts": [{"type": "text", "content": "x" * 1000}]}]
    value = bounded_value(history, 200)
    assert json.dumps(value, ensure_ascii=False, separators=(",", ":")) == bounded_json(
        history, 200
    )
    assert value[0]["parts"][0]["content"].endswith("…")
    # A shape longer than the cap, cut as text by `bounded_json`: that text, as is.
    shape = {"role": "r" * 300}
    assert bounded_value(shape, 100) == bounded_json(shape, 100) == '{"role":"' + "r" * 91


def _two_choices(script: list[list[dict[str, Any]]]) -> Any:
    """A handler answering n=2 streams with the given choices, one list per chunk."""

    def handler(request: Any) -> Any:
        base = {"id": "chatcmpl-n2", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini"}  # fmt: skip
        return sse_reply([{**base, "choices": choices} for choices in script])

    return handler


def _choice(index: int, content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"index": index, "delta": delta, "finish_reason": finish}


@pytest.mark.parametrize(
    ("script", "read", "expected"),
    [
        (  # choice 1 finished first, the stream was closed before choice 0 did
            [[_choice(0, "Zero ")], [_choice(1, "One")], [_choice(1, None, "stop")],
             [_choice(0, "more")], [_choice(0, None, "length")]],
            3,
            [("Zero ", "unknown"), ("One", "stop")],
        ),
        (  # choice 0 said nothing and finished; choice 1 said "Hi"
            [[_choice(0, "")], [_choice(1, "Hi")], [_choice(0, None, "length")],
             [_choice(1, None, "stop")]],
            None,
            [("", "length"), ("Hi", "stop")],
        ),
    ],
)  # fmt: skip
def test_captured_stream_output_pairs_each_choice_with_its_own_finish_reason(
    capture: Any,
    telemetry: Telemetry,
    script: list[list[dict[str, Any]]],
    read: int | None,
    expected: list[tuple[str, str]],
) -> None:
    capture(capture_message_content="SPAN_ONLY")
    client = served_by(_two_choices(script))
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, n=2, stream=True
    )
    for position, _ in enumerate(stream, 1):
        if position == read:
            break
    stream.close()
    messages = json.loads((telemetry.span().attributes or {})[OUTPUT])
    got = [
        (
            "".join(p.get("content", "") for p in m["parts"] if p["type"] == "text"),
            m["finish_reason"],
        )
        for m in messages
    ]
    assert got == expected
    client.close()


def test_an_emoji_split_across_stream_chunks_is_captured_as_valid_utf8(
    capture: Any, telemetry: Telemetry, logs: InMemoryLogRecordExporter
) -> None:
    # A chunk's JSON may escape a character beyond the BMP as two UTF-16 halves, each chunk
    # holding one ("\ud83d", then "\ude00"), and a lone half may come too: joined as the
    # SDK hands them over, they are no UTF-8, and an OTLP exporter drops such an attribute.
    capture(capture_message_content="SPAN_AND_EVENT")
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    pieces = ["Hi ", "\ud83d", "\ude00", " and a lone half: ", "\udc00"]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        for text in pieces
    ]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    client = served_by(lambda request: sse_reply(chunks))
    received = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "".join(pieces)
    text = (telemetry.span().attributes or {})[OUTPUT]
    text.encode("utf-8")  # what an exporter does; surrogates would raise here
    expected = "Hi \U0001f600 and a lone half: \ufffd"
    assert json.loads(text)[0]["parts"] == [{"type": "text", "content": expected}]
    (record,) = logs.get_finished_logs()
    readable = record if hasattr(record, "attributes") else record.log_record
    event_output = (readable.attributes or {})[OUTPUT]
    assert list(event_output[0]["parts"]) == [{"type": "text", "content": expected}]
    client.close()


_NOT_WALKED = (type, int, float, bytes, types.ModuleType, types.FunctionType, types.FrameType)


def _reachable_texts(root: Any, *skip: Any) -> list[str]:
    """The strings reachable from `root` through our objects (not through `skip`, the SDK's
    own stream and its iterator, nor any other object of the SDK's: the caller's to hold)."""
    found, seen, todo = [], {id(item) for item in skip}, [root]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        module = vars(type(item)).get("__module__")  # (a proxy's `__module__` is the SDK's)
        sdk = isinstance(module, str) and module.startswith(("openai", "httpx", "pydantic"))
        if isinstance(item, str):
            found.append(item)
        elif (item is root or not sdk) and not isinstance(item, _NOT_WALKED):
            todo.extend(gc.get_referents(item))
    return found


@pytest.mark.parametrize("how", ["read", "closed", "raw", "responses"])
def test_a_finished_stream_the_caller_keeps_holds_no_output_text_of_ours(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, how: str
) -> None:
    # Capture off: the text kept for an estimate is dropped when the call ends, not when
    # the caller lets go of the stream (which may be much later, or never).
    if how == "responses" and not sdk_has_responses():
        pytest.skip("no Responses API in this SDK")
    client = make_client(server, "openai")
    reply = {"x-mock-chunks": "300"}  # "w1 w2 ... w300"
    request: dict[str, Any] = {"model": "gpt-4o-mini", "stream": True, "extra_headers": reply}
    if how == "responses":
        stream = client.responses.create(input="Hi", **request)
    elif how == "raw":
        raw = client.chat.completions.with_raw_response.create(messages=MESSAGES, **request)
        stream = raw.parse()
    else:
        stream = client.chat.completions.create(messages=MESSAGES, **request)
    if how == "closed":
        for _ in range(20):
            next(stream)
        stream.close()
    else:
        for _ in stream:
            pass
    assert telemetry.span().end_time is not None
    sdk_stream = stream.__wrapped__
    texts = _reachable_texts(stream, sdk_stream, getattr(sdk_stream, "_iterator", None))
    assert not [text for text in texts if re.search(r"\bw1[0-9]\b", text)]  # words 10 to 19
    client.close()


def test_an_image_urls_credentials_are_not_captured_only_where_it_points(
    capture: Any, telemetry: Telemetry, logs: InMemoryLogRecordExporter, server: LocalOpenAIServer
) -> None:
    # A presigned (S3) or shared-access (Azure Blob) URL carries a credential that lets
    # whoever holds the URL fetch the image: the trace gets where it points, not the key.
    capture(capture_message_content="SPAN_AND_EVENT")
    s3 = (
        "https://bucket.s3.amazonaws.com/scan.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA-SECRET-1&X-Amz-Signature=SECRET2&X-Amz-Security-Token=SECRET3"
    )
    sas = "https://gateway:SECRET4@acct.blob.core.windows.net/c/id.png?sv=2024-05-04&sig=SECRET5"
    images = [{"type": "image_url", "image_url": {"url": url}} for url in (s3, sas)]
    client = make_client(server, "openai")
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": images}]
    )
    uris = [part["uri"] for part in captured(telemetry)[INPUT][0]["parts"]]
    assert uris == [
        "https://bucket.s3.amazonaws.com/scan.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=[REDACTED]&X-Amz-Signature=[REDACTED]&X-Amz-Security-Token=[REDACTED]",
        "https://[REDACTED]@acct.blob.core.windows.net/c/id.png?sv=2024-05-04&sig=[REDACTED]",
    ]
    assert "SECRET" not in telemetry.span().to_json()
    (record,) = logs.get_finished_logs()
    readable = record if hasattr(record, "to_json") else record.log_record
    assert "SECRET" not in readable.to_json()
    client.close()


@pytest.mark.skipif(
    not hasattr(openai, "omit"), reason="older SDKs fail to send a NOT_GIVEN inside a message"
)
def test_fields_given_as_not_given_or_omit_are_left_out_as_the_sdk_leaves_them_out(
    capture: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    # The SDK sends no field whose value is `NOT_GIVEN` or `omit`: the captured request
    # has none either, rather than "NOT_GIVEN" or an object's repr().
    sentinels = [openai.NOT_GIVEN, openai.omit]
    capture(capture_message_content="SPAN_ONLY")
    client = make_client(server, "openai")
    for sentinel in sentinels:
        telemetry.exporter.clear()
        function = {"name": "get_weather", "description": sentinel, "parameters": sentinel}
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[*MESSAGES, {"role": "tool", "tool_call_id": "c1", "content": sentinel}],
            tools=[{"type": "function", "function": function}],
        )
        content = captured(telemetry)
        assert content[TOOL_DEFINITIONS] == [{"type": "function", "name": "get_weather"}]
        tool = {"type": "tool_call_response", "id": "c1", "response": None}
        assert content[INPUT][-1] == {"role": "tool", "parts": [tool]}
        for value in (telemetry.span().attributes or {}).values():
            assert "NOT_GIVEN" not in str(value) and "Omit" not in str(value)
    client.close()


def test_a_file_sent_inline_is_captured_as_a_blob_not_a_file_part_without_its_id(
    capture: Any, telemetry: Telemetry, client: Any
) -> None:
    # The conventions' `file` part requires a `file_id`; a file sent inline has none,
    # its data is the content (as an inline image's): a `blob`, with its MIME type.
    capture(capture_message_content="SPAN_ONLY")
    files = [
        {"file_id": "file-abc"},
        {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "a.pdf"},
        {"file_data": "JVBERi0y", "filename": "b.pdf"},
    ]
    content = [{"type": "file", "file": file} for file in files]
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}]
    )
    assert captured(telemetry)[INPUT][0]["parts"] == [
        {"type": "file", "modality": "file", "file_id": "file-abc"},
        {"type": "blob", "modality": "file", "mime_type": "application/pdf", "content": "JVBERi0x"},
        {"type": "blob", "modality": "file", "mime_type": "application/pdf", "content": "JVBERi0y"},
    ]


@needs_responses
def test_responses_files_and_images_are_captured_by_id_inline_or_by_url(
    capture: Any, telemetry: Telemetry, client: Any
) -> None:
    # By id: a `file` part; inline: a `blob`; by URL: a `uri`, without its credentials.
    capture(capture_message_content="SPAN_ONLY")
    signed = "https://acct.blob.core.windows.net/c/doc.pdf?sv=2024-05-04&sig=SECRET"
    content = [
        {"type": "input_file", "file_id": "file-1"},
        {"type": "input_file", "file_url": signed},
        {
            "type": "input_file",
            "file_data": "data:application/pdf;base64,JVBE",
            "filename": "x.pdf",
        },
        {"type": "input_image", "file_id": "file-2", "detail": "auto"},
    ]
    client.responses.create(model="gpt-4.1", input=[{"role": "user", "content": content}])
    assert captured(telemetry)[INPUT][0]["parts"] == [
        {"type": "file", "modality": "file", "file_id": "file-1"},
        {
            "type": "uri",
            "modality": "file",
            "uri": "https://acct.blob.core.windows.net/c/doc.pdf?sv=2024-05-04&sig=[REDACTED]",
        },
        {"type": "blob", "modality": "file", "mime_type": "application/pdf", "content": "JVBE"},
        {"type": "file", "modality": "image", "file_id": "file-2"},
    ]


@needs_responses
def test_responses_custom_tool_calls_and_their_outputs_are_tool_call_parts(
    capture: Any, telemetry: Telemetry
) -> None:
    # A custom tool (free-text `input`) is the caller's to run, as a function is: its call
    # is a `tool_call` with its name, id and input, its result a `tool_call_response`.
    capture(capture_message_content="SPAN_ONLY")
    call = {"id": "ctc_1", "type": "custom_tool_call", "call_id": "call_2", "name": "sql",
            "input": "SELECT 1"}  # fmt: skip
    body = completed_response(call)
    client = served_by(lambda request: HTTP.Response(200, json=body))
    result = {"type": "custom_tool_call_output", "call_id": "call_1", "output": "1 row"}
    client.responses.create(model="gpt-5", input=[{**call, "call_id": "call_1"}, result])
    part = {"type": "tool_call", "name": "sql", "arguments": "SELECT 1"}
    content = captured(telemetry)
    assert content[INPUT] == [
        {"role": "assistant", "parts": [{**part, "id": "call_1"}]},
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "1 row"}],
        },
    ]
    assert content[OUTPUT][0]["parts"] == [{**part, "id": "call_2"}]
    client.close()


def test_a_chat_custom_tool_is_defined_by_its_own_name_and_description(
    capture: Any, telemetry: Telemetry, client: Any
) -> None:
    # Chat nests a custom tool's definition under `custom`, as a function's under `function`.
    capture(capture_message_content="SPAN_ONLY")
    custom = {"name": "sql", "description": "Runs SQL.", "format": {"type": "text"}}
    client.chat.completions.create(
        model="gpt-5",
        messages=[{"role": "user", "content": "Count rows."}],
        tools=[{"type": "custom", "custom": custom}, *TOOLS],
    )
    function = TOOLS[0]["function"]
    assert captured(telemetry)[TOOL_DEFINITIONS] == [
        {"type": "custom", "name": "sql", "description": "Runs SQL."},
        {"type": "function", **function},
    ]


def test_input_audio_is_a_blob_with_the_iana_media_type_of_its_format(
    capture: Any, telemetry: Telemetry, client: Any
) -> None:
    # The conventions' `mime_type` is the IANA media type: MP3 is `audio/mpeg`.
    capture(capture_message_content="SPAN_ONLY")
    content = [
        {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}}
        for data, audio_format in (("SUQz", "mp3"), ("UklG", "wav"))
    ]
    client.chat.completions.create(
        model="gpt-4o-audio-preview", messages=[{"role": "user", "content": content}]
    )
    blob = {"type": "blob", "modality": "audio"}
    assert captured(telemetry)[INPUT][0]["parts"] == [
        {**blob, "mime_type": "audio/mpeg", "content": "SUQz"},
        {**blob, "mime_type": "audio/wav", "content": "UklG"},
    ]


def _audio_reply(stream: bool) -> Any:
    """A chat reply spoken (`modalities=["text", "audio"]`): no `content`, its words in
    the audio's transcript, streamed in pieces as the service streams it."""
    base = {"id": "chatcmpl-au", "created": 1, "model": "gpt-4o-audio-preview"}
    if not stream:
        audio = {"id": "audio_1", "data": "UklGRgAA", "expires_at": 1, "transcript": "Hi there"}
        message = {"role": "assistant", "content": None, "audio": audio}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body = {**base, "object": "chat.completion", "choices": [choice]}
        return lambda request: HTTP.Response(200, json=body)
    deltas = [
        {"role": "assistant", "audio": {"id": "audio_1", "transcript": "Hi "}},
        {"audio": {"data": "UklGRgAA", "transcript": "there"}},
        {"audio": {"data": "AAAA"}},
    ]
    chunks = [
        {**base, "object": "chat.completion.chunk",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        for delta, finish in [*((d, None) for d in deltas), ({}, "stop")]
    ]  # fmt: skip
    return lambda request: sse_reply(chunks)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("estimate", ["on", "off"])
def test_an_audio_reply_is_captured_as_the_text_of_its_transcript(
    capture: Any, telemetry: Telemetry, stream: bool, estimate: str
) -> None:
    capture(capture_message_content="SPAN_ONLY", usage_estimate=estimate)
    client = served_by(_audio_reply(stream))
    reply = client.chat.completions.create(
        model="gpt-4o-audio-preview",
        messages=[{"role": "user", "content": "Say hi."}],
        # As `extra_body`: older SDKs have no `modalities` parameter.
        extra_body={"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        stream=stream,
    )
    if stream:
        list(reply)
    assert captured(telemetry)[OUTPUT] == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hi there"}],
            "finish_reason": "stop",
        }
    ]
    client.close()


def test_an_audio_replys_transcript_is_not_kept_when_content_is_not_captured() -> None:
    # Kept for captured content only: an estimate does not count it (audio is billed as
    # audio tokens), and nothing of the content is held that nothing records.
    tally = Estimator(Settings()).new_tally()
    assert tally is not None
    tally.add_chat_delta(0, {"audio": {"transcript": "Hi there"}})
    assert list(tally.choice(0).audio_transcript) == []


@needs_responses
def test_a_tool_results_image_and_file_urls_are_captured_without_their_credentials(
    capture: Any, telemetry: Telemetry, logs: InMemoryLogRecordExporter, client: Any
) -> None:
    # A function's output given as content parts holds URLs as a message does: their
    # signature or user info would let whoever reads the trace fetch the file.
    capture(capture_message_content="SPAN_AND_EVENT")
    output = [
        {"type": "input_text", "text": "The chart:"},
        {
            "type": "input_image",
            "image_url": "https://acct.blob.core.windows.net/c/a.png?sig=SECRET1",
        },
        {"type": "input_file", "file_url": "https://user:SECRET2@files.example/report.pdf"},
    ]
    call = {"type": "function_call", "call_id": "call_1", "name": "chart", "arguments": "{}"}
    result = {"type": "function_call_output", "call_id": "call_1", "output": output}
    client.responses.create(model="gpt-4.1", input=[call, result])
    assert captured(telemetry)[INPUT][1]["parts"] == [
        {
            "type": "tool_call_response",
            "id": "call_1",
            "response": [
                {"type": "text", "content": "The chart:"},
                {
                    "type": "uri",
                    "modality": "image",
                    "uri": "https://acct.blob.core.windows.net/c/a.png?sig=[REDACTED]",
                },
                {
                    "type": "uri",
                    "modality": "file",
                    "uri": "https://[REDACTED]@files.example/report.pdf",
                },
            ],
        }
    ]
    assert "SECRET" not in telemetry.span().to_json()
    (record,) = logs.get_finished_logs()
    readable = record if hasattr(record, "to_json") else record.log_record
    assert "SECRET" not in readable.to_json()


@pytest.mark.parametrize("stream", [False, True])
def test_captured_finish_reasons_use_the_output_message_schemas_values(
    capture: Any, telemetry: Telemetry, stream: bool
) -> None:
    # The output-message schema's `FinishReason` says `tool_call` where OpenAI says
    # `tool_calls`, or `function_call` for a legacy function call; the span attribute
    # `gen_ai.response.finish_reasons` (no vocabulary of the conventions') keeps OpenAI's.
    capture(capture_message_content="SPAN_ONLY")
    call = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    message = {"role": "assistant", "content": None, "function_call": call}
    head = {"id": "chatcmpl-1", "created": 1, "model": "gpt-4o-mini"}
    if stream:
        chunk = {**head, "object": "chat.completion.chunk"}
        chunks = [
            {**chunk, "choices": [{"index": 0, "delta": message, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "function_call"}]},
        ]
        client = served_by(lambda request: sse_reply(chunks))
    else:
        choice = {"index": 0, "message": message, "finish_reason": "function_call"}
        body = {**head, "object": "chat.completion", "choices": [choice]}
        client = served_by(lambda request: HTTP.Response(200, json=body))
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=stream)
    if stream:
        list(result)
    assert captured(telemetry)[OUTPUT] == [
        {
            "role": "assistant",
            "parts": [FUNCTION_CALL_PART],
            "finish_reason": "tool_call",
        }
    ]
    assert telemetry.span().attributes["gen_ai.response.finish_reasons"] == ("function_call",)
    client.close()


@needs_responses
def test_a_responses_function_call_is_captured_with_the_tool_call_finish_reason(
    capture: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    capture(capture_message_content="SPAN_ONLY")
    client = make_client(server, "openai")
    response = client.responses.create(
        model="gpt-4o-mini", input="Weather?", extra_headers={"x-mock-tool-call": "get_weather"}
    )
    (output,) = captured(telemetry)[OUTPUT]
    assert output["finish_reason"] == "tool_call"
    assert [part["type"] for part in output["parts"]] == ["tool_call"]
    assert output["parts"][0]["id"] == response.output[0].call_id
    assert telemetry.span().attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    client.close()


@needs_responses
def test_responses_built_in_tool_calls_are_captured_as_server_tool_calls_without_leaks(
    capture: Any, telemetry: Telemetry
) -> None:
    # OpenAI's own tools are `server_tool_call` parts (and what they found a
    # `server_tool_call_response`), those the caller runs `tool_call` parts. Read field by
    # field: no URL's signature, no searched file's text, no generated image's data, no
    # shell's environment reaches the span.
    capture(capture_message_content="SPAN_ONLY")
    signed = "https://files.example/out.png?sv=2024&sig=SIGNATURE123"
    output = [
        {"id": "ws_1", "type": "web_search_call", "status": "completed",
         "action": {"type": "search", "query": "weather Paris",
                    "sources": [{"type": "url", "url": signed}]}},
        {"id": "fs_1", "type": "file_search_call", "status": "completed",
         "queries": ["budget"],
         "results": [{"file_id": "file-1", "filename": "q3.pdf", "score": 0.9,
                      "text": "CONFIDENTIAL FILE TEXT"}]},
        {"id": "ci_1", "type": "code_interpreter_call", "status": "completed",
         "code": "print(1)", "container_id": "cntr_1",
         "outputs": [{"type": "logs", "logs": "1"}, {"type": "image", "url": signed}]},
        {"id": "ig_1", "type": "image_generation_call", "status": "completed",
         "result": "QkFTRTY0SU1BR0U="},
        {"id": "mcp_1", "type": "mcp_call", "name": "roll", "server_label": "dice",
         "arguments": '{"sides": 6}', "output": "4"},
        {"id": "lsc_1", "type": "local_shell_call", "call_id": "call_9", "status": "completed",
         "action": {"type": "exec", "command": ["ls"], "env": {"TOKEN": "ENV-SECRET"}}},
    ]  # fmt: skip
    body = {
        "id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-5",
        "status": "completed", "output": output, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [],
    }  # fmt: skip
    client = served_by(lambda request: HTTP.Response(200, json=body))
    client.responses.create(model="gpt-5", input="Go")
    clean = "https://files.example/out.png?sv=2024&sig=[REDACTED]"

    def server(item_id: str, name: str, tool: str, arguments: Any) -> dict[str, Any]:
        details = {"type": tool, "arguments": arguments, "status": "completed"}
        return {
            "type": "server_tool_call",
            "id": item_id,
            "name": name,
            "server_tool_call": details,
        }

    def found(item_id: str, tool: str, response: Any) -> dict[str, Any]:
        answer = {"type": tool, "response": response}
        return {
            "type": "server_tool_call_response",
            "id": item_id,
            "server_tool_call_response": answer,
        }

    mcp = server("mcp_1", "roll", "mcp", {"server_label": "dice", "arguments": {"sides": 6}})
    del mcp["server_tool_call"]["status"]  # an MCP call says none
    assert captured(telemetry)[OUTPUT][0]["parts"] == [
        server("ws_1", "web_search", "web_search",
               {"action": {"type": "search", "query": "weather Paris", "sources": [clean]}}),
        server("fs_1", "file_search", "file_search", {"queries": ["budget"]}),
        found("fs_1", "file_search",
              {"results": [{"file_id": "file-1", "filename": "q3.pdf", "score": 0.9}]}),
        server("ci_1", "code_interpreter", "code_interpreter",
               {"code": "print(1)", "container_id": "cntr_1"}),
        found("ci_1", "code_interpreter",
              {"outputs": [{"type": "logs", "logs": "1"}, {"type": "image", "url": clean}]}),
        server("ig_1", "image_generation", "image_generation", {}),
        mcp,
        found("mcp_1", "mcp", {"output": "4"}),
        {"type": "tool_call", "id": "call_9", "name": "shell",
         "arguments": {"type": "exec", "command": ["ls"]}},
    ]  # fmt: skip
    text = json.dumps(dict(telemetry.span().attributes or {}))
    for leak in ("SIGNATURE123", "CONFIDENTIAL FILE TEXT", "QkFTRTY0SU1BR0U=", "ENV-SECRET"):
        assert leak not in text
    client.close()


@needs_responses
def test_the_callers_answers_to_built_in_tool_calls_are_tool_call_responses(
    capture: Any, telemetry: Telemetry
) -> None:
    # A computer's screenshot and a shell's output, sent back as input items: results of
    # the caller's tool calls, read as such (a screenshot's URL without its signature).
    capture(capture_message_content="SPAN_ONLY")
    body = completed_response()
    client = served_by(lambda request: HTTP.Response(200, json=body))
    shot = {
        "type": "computer_screenshot",
        "image_url": "https://s.example/a.png?X-Amz-Signature=S1",
    }
    items = [
        {"type": "computer_call_output", "call_id": "call_1", "output": shot},
        {"type": "local_shell_call_output", "id": "lsco_1", "call_id": "call_2", "output": "a.txt"},
    ]
    client.responses.create(model="gpt-5", input=items)
    uri = "https://s.example/a.png?X-Amz-Signature=[REDACTED]"
    image = {"type": "uri", "modality": "image", "uri": uri}
    assert captured(telemetry)[INPUT] == [
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": [image]}],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_2", "response": "a.txt"}],
        },
    ]
    client.close()


@needs_responses
def test_a_computer_calls_action_is_captured_as_its_fields_not_the_sdks_repr(
    capture: Any, telemetry: Telemetry
) -> None:
    capture(capture_message_content="SPAN_ONLY")
    action = {"type": "drag", "path": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}
    item = {"id": "cu_1", "type": "computer_call", "call_id": "call_1", "status": "completed",
            "pending_safety_checks": [], "action": action}  # fmt: skip
    body = completed_response(item)
    client = served_by(lambda request: HTTP.Response(200, json=body))
    client.responses.create(model="gpt-5", input="Go")
    call = {"type": "tool_call", "id": "call_1", "name": "computer_use", "arguments": action}
    assert captured(telemetry)[OUTPUT] == [
        {"role": "assistant", "parts": [call], "finish_reason": "tool_call"}
    ]
    client.close()
