"""Token counts when the server reports none: estimated with tiktoken, and marked so.

Through the real SDK against the local server. The expected counts are made
independently of our stream watching: from the chunks the caller itself received,
counted with tiktoken directly (plain text) or with the same rules on the caller's
own copy of the output (tools, n > 1).
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import threading
from typing import Any

import openai
import pytest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import BaseModel

from opentelemetry import trace
from opentelemetry.instrumentation.openai_usage import encodings, errors, estimator
from opentelemetry.instrumentation.openai_usage.encodings import EncodingLoader
from opentelemetry.instrumentation.openai_usage.estimate import estimate_usage
from opentelemetry.instrumentation.openai_usage.estimator import FINISHER, LOADER
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally

from .conftest import (
    HTTP,
    MESSAGES,
    MID_STREAM_CONNECTION_ERRORS,
    Telemetry,
    collect,
    make_client,
    needs_responses,
    sdk_has_responses,
    served_by,
    sse_reply,
)

TOKEN_USAGE = "gen_ai.client.token.usage"
SOURCE = "openai_usage.usage.source"
LOWER_BOUND = "openai_usage.usage.lower_bound"
NO_USAGE = {"x-mock-scenario": "no_usage"}
# The worked example of the OpenAI/Azure docs: gpt-4o-mini bills 18 prompt tokens for it.
EXAMPLE_PROMPT_TOKENS = 18


def encoding(name: str) -> Any:
    """An encoding as the tests' offline cache has it (filled by the session fixture):
    never at import time, when tiktoken would try to download it."""
    loaded = LOADER.wait(name, 60)
    assert loaded is not None, f"encoding {name} is not available offline"
    return loaded


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
        },
    }
]


def stream(client: Any, **kwargs: Any) -> Any:
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    return client.chat.completions.create(**{**request, **kwargs})


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tokens(text: str) -> int:
    return len(encoding("o200k_base").encode(text))


def estimated_usage(telemetry: Telemetry) -> dict[str, Any]:
    """The span's usage attributes, after checking that they and the metric are estimates."""
    attributes = dict(telemetry.span().attributes or {})
    assert attributes[SOURCE] == "estimate"
    points = telemetry.points(TOKEN_USAGE)
    if "error.type" in attributes:  # a failed call: its tokens go to the counters alone
        assert points == []
        points = [
            {"gen_ai.token.type": kind, SOURCE: p.attributes[SOURCE], "sum": p.value}
            for kind in ("input", "output")
            for p in telemetry.points(f"gen_ai.client.inference.usage.{kind}_tokens")
        ]
        assert {p[SOURCE] for p in points} == {"estimate"}
        by_kind = {p["gen_ai.token.type"]: p["sum"] for p in points}
        assert by_kind == {
            "input": attributes["gen_ai.usage.input_tokens"],
            "output": attributes["gen_ai.usage.output_tokens"],
        }
        return attributes
    assert sorted(p.attributes["gen_ai.token.type"] for p in points) == ["input", "output"]
    assert {p.attributes[SOURCE] for p in points} == {"estimate"}
    by_type = {p.attributes["gen_ai.token.type"]: p.sum for p in points}
    assert by_type == {
        "input": attributes["gen_ai.usage.input_tokens"],
        "output": attributes["gen_ai.usage.output_tokens"],
    }
    assert attributes["gen_ai.usage.total_tokens"] == by_type["input"] + by_type["output"]
    return attributes


# -- streams without usage ---------------------------------------------------------------


def test_stream_from_a_server_that_ignores_include_usage_is_estimated(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    chunks = list(stream(client, extra_headers=NO_USAGE))
    # We asked for usage; the server ignored it.
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(chunks))
    assert LOWER_BOUND not in attributes


def test_stream_with_injection_off_is_estimated(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(inject_stream_usage=False)
    chunks = list(stream(client, extra_headers={"x-mock-reply": "Two. And a longer tail."}))
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS
    assert attributes["gen_ai.usage.output_tokens"] == tokens("Two. And a longer tail.")
    assert text_of(chunks) == "Two. And a longer tail."


@pytest.mark.parametrize("finish", ["stop", "length"])
def test_an_azure_answer_that_ended_its_turn_is_estimated_with_its_end_of_turn_token(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, finish: str
) -> None:
    """Azure OpenAI bills a gpt-4o-family answer's end-of-turn token (every recorded 2026
    answer of it that ended with `stop` or `tool_calls`); one cut off by `length` has none."""
    azure = make_client(server, "azure")
    headers = {**NO_USAGE, "x-mock-reply": "Two. And a longer tail."}
    if finish == "length":
        headers["x-mock-finish"] = "length"
    chunks = list(stream(azure, extra_headers=headers))
    assert chunks[-1].choices[0].finish_reason == finish
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.provider.name"] == "azure.ai.openai"
    end_of_turn = 1 if finish == "stop" else 0
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(chunks)) + end_of_turn
    azure.close()


async def test_async_stream_without_usage_is_estimated(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    received = [c async for c in await stream(aclient, extra_headers=NO_USAGE)]
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(received))


def test_reported_usage_wins_and_no_estimate_is_made_in_fallback_mode(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    list(stream(client, extra_headers={"x-mock-chunks": "7"}))
    attributes = dict(telemetry.span().attributes or {})
    assert attributes[SOURCE] == "response"
    assert attributes["gen_ai.usage.output_tokens"] == 7  # the server's number, not ours
    assert not [k for k in attributes if k.startswith("openai_usage.estimate.")]
    assert {p.attributes[SOURCE] for p in telemetry.points(TOKEN_USAGE)} == {"response"}


# -- streams that end early: the tokens were generated and billed all the same ------------

LONG_REPLY = "one two three four five six seven eight nine ten"


def test_stream_closed_early_still_records_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    s = stream(client, extra_headers={"x-mock-reply": LONG_REPLY})
    received = [next(s) for _ in range(4)]  # role chunk + 3 words
    s.close()
    attributes = estimated_usage(telemetry)
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(received))
    assert tokens(text_of(received)) == 3


def test_stream_left_with_break_inside_with_still_records_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    received = []
    with stream(client, extra_headers={"x-mock-reply": LONG_REPLY}) as s:
        for chunk in s:
            received.append(chunk)
            if len(received) == 6:
                break
    attributes = estimated_usage(telemetry)
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(received)) == 5


async def test_async_stream_closed_early_still_records_usage(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    s = await stream(aclient, extra_headers={"x-mock-reply": LONG_REPLY})
    received = [await s.__anext__() for _ in range(3)]
    await s.close()
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(received)) == 2


def test_abandoned_stream_is_estimated_from_what_was_read(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    s = stream(client, extra_headers={"x-mock-reply": LONG_REPLY})
    received = [next(s) for _ in range(5)]
    del s
    collect()
    attributes = estimated_usage(telemetry)
    assert attributes["openai_usage.stream.outcome"] == "abandoned"
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(received)) == 4


def test_stream_cut_by_the_network_is_estimated_and_still_an_error(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    received = []
    headers = {"x-mock-reply": LONG_REPLY, "x-mock-scenario": "cut_after:4"}
    with pytest.raises(MID_STREAM_CONNECTION_ERRORS):  # the SDK's own, as in test_errors
        for chunk in stream(client, extra_headers=headers):
            received.append(chunk)
    attributes = estimated_usage(telemetry)
    assert attributes["openai_usage.stream.outcome"] == "error"
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(received)) == 3


def test_a_stream_left_before_its_reply_ended_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    # The server sent (and bills) all ten words; the caller read three of them.
    s = stream(client, extra_headers={"x-mock-reply": LONG_REPLY})
    received = [next(s) for _ in range(4)]  # role chunk + 3 words
    s.close()
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(received)) == 3
    assert server.requests[-1].usage["completion_tokens"] == 10
    assert attributes[LOWER_BOUND] is True


@pytest.mark.parametrize("finished", [2, 1], ids=["both-replies-ended", "one-reply-ended"])
def test_a_stream_left_before_one_of_its_choices_finished_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, finished: int
) -> None:
    # Left once `finished` of its two replies ended, before the end of the stream: exact
    # when both had, a lower bound when the other was still being generated (and billed).
    received = []
    s = stream(client, n=2, extra_headers={**NO_USAGE, "x-mock-reply": "one two"})
    for chunk in s:
        received.append(chunk)
        if sum(1 for c in received for choice in c.choices if choice.finish_reason) == finished:
            break
    s.close()
    attributes = estimated_usage(telemetry)
    assert attributes["openai_usage.stream.outcome"] == "closed"
    if finished == 2:
        assert attributes["gen_ai.usage.output_tokens"] == 2 * tokens("one two")
        assert LOWER_BOUND not in attributes
    else:
        assert attributes[LOWER_BOUND] is True


@pytest.mark.parametrize(
    ("finish", "n"),
    [(None, 1), ("stop", 1), ("stop", 2)],
    ids=["cut", "finished", "finished-n-ignored"],
)
def test_a_stream_that_ends_before_its_reply_did_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, finish: str | None, n: int
) -> None:
    """Read to its end, a stream whose reply has no finish reason (a gateway's timeout
    ending the body cleanly, `[DONE]` and all) was cut short, as one the caller left: the
    server generated, and bills, more than came. With its finish reason, it is exact, even
    when `n=2` was asked of a server that ignores it (one choice sent, and finished)."""
    head = {"id": "chatcmpl-cut", "created": 1, "model": "gpt-4o-mini"}
    chunk = {**head, "object": "chat.completion.chunk"}
    chunks = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": word}}]}
        for word in ("one", " two", " three")
    ]
    if finish is not None:
        chunks.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    client = served_by(lambda _: sse_reply(chunks))
    received = list(stream(client, n=n))
    client.close()
    assert text_of(received) == "one two three"
    attributes = estimated_usage(telemetry)
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["gen_ai.usage.output_tokens"] == tokens("one two three") == 3
    assert attributes.get(LOWER_BOUND) is (None if finish else True)


# -- shapes: n > 1, tools, legacy completions ---------------------------------------------


def test_several_choices_count_the_prompt_once_and_every_choice(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    chunks = list(stream(client, n=3, extra_headers={**NO_USAGE, "x-mock-reply": LONG_REPLY}))
    per_choice: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            per_choice[choice.index] = per_choice.get(choice.index, "") + (
                choice.delta.content or ""
            )
    assert sorted(per_choice) == [0, 1, 2]
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS
    assert attributes["gen_ai.usage.output_tokens"] == 3 * tokens(LONG_REPLY)


def test_tool_definitions_and_streamed_tool_calls_are_counted(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    headers = {**NO_USAGE, "x-mock-tool-call": "get_weather"}
    chunks = list(stream(client, tools=TOOLS, extra_headers=headers))
    # The caller's own copy of the output, and the same rules, give the same numbers.
    mine = CompletionTally()
    for chunk in chunks:
        for choice in chunk.choices:
            mine.add_chat_delta(choice.index, choice.delta)
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "tools": TOOLS}
    expected = estimate_usage("chat", request, mine, "gpt-4o-mini", encoding("o200k_base"))
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.input_tokens"] == expected.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == expected.output_tokens
    # The definition is in the prompt, the call (name and arguments) in the output.
    assert expected.input_tokens is not None and expected.input_tokens > 30
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert expected.output_tokens == tokens("get_weather") + tokens(arguments) + 7


def test_legacy_completions_stream_is_traced_and_estimated(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(inject_stream_usage=False)
    prompt = "Say two words:"
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt=prompt,
            stream=True,
            extra_headers={"x-mock-reply": "hello world"},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "hello world"
    span = telemetry.span()
    assert span.name == "text_completion gpt-3.5-turbo-instruct"
    attributes = estimated_usage(telemetry)
    cl100k = encoding("cl100k_base")
    assert attributes["gen_ai.usage.input_tokens"] == len(cl100k.encode(prompt))
    assert attributes["gen_ai.usage.output_tokens"] == len(cl100k.encode(text))


def echoing_server(reply: str) -> Any:
    """A legacy completions endpoint that honours `echo` as the service does: each choice's
    text starts with its prompt (streamed: as the first piece), and reports no usage."""

    def handler(request: Any) -> Any:
        body = json.loads(request.content)
        prompt = body["prompt"]
        prompts = [prompt] if isinstance(prompt, str) or isinstance(prompt[0], int) else prompt
        # Token ids come back as their text: what they decode to with cl100k_base.
        texts = [p if isinstance(p, str) else encoding("cl100k_base").decode(p) for p in prompts]
        head = {"id": "cmpl-echo", "object": "text_completion", "created": 0}
        head["model"] = "gpt-3.5-turbo-instruct"
        if not body.get("stream"):
            choices = [
                {"text": text + reply, "index": i, "logprobs": None, "finish_reason": "stop"}
                for i, text in enumerate(texts)
            ]
            return HTTP.Response(200, json={**head, "choices": choices})
        chunks = []
        for i, text in enumerate(texts):
            for piece, finish in ((text, None), (reply, None), ("", "stop")):
                choice = {"text": piece, "index": i, "logprobs": None, "finish_reason": finish}
                chunks.append({**head, "choices": [choice]})
        return sse_reply(chunks)

    return handler


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "prompt",
    ["Say two words:", ["Say two words:", "Now say them again:"], "token ids"],
)
def test_an_echoed_prompt_is_not_counted_as_output(
    instrumented: Any, telemetry: Telemetry, stream: bool, prompt: Any
) -> None:
    # `echo=True` repeats the prompt before the completion; the service bills it as
    # prompt tokens only (`max_tokens=0` with `echo` bills no output at all).
    reply = " hello world"
    cl100k = encoding("cl100k_base")
    if prompt == "token ids":
        prompt = cl100k.encode("Say two words:")
    client = served_by(echoing_server(reply))
    result: Any = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=prompt, echo=True, stream=stream
    )
    texts = [c.choices[0].text for c in result] if stream else [c.text for c in result.choices]
    assert "Say two words:" in "".join(texts)  # the echo is what the caller gets
    prompts = [prompt] if isinstance(prompt, str) or isinstance(prompt[0], int) else prompt
    counts = [len(p) if isinstance(p, list) else len(cl100k.encode(p)) for p in prompts]
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.input_tokens"] == sum(counts)
    assert attributes["gen_ai.usage.output_tokens"] == len(prompts) * len(cl100k.encode(reply))
    assert LOWER_BOUND not in attributes


@pytest.mark.parametrize("sentinel", ["NOT_GIVEN", "omit"])
def test_a_suffix_passed_as_the_sdks_not_given_leaves_the_estimate_exact(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, sentinel: str
) -> None:
    # Code forwarding optional arguments passes `NOT_GIVEN` (or `omit`, from openai 2):
    # no suffix at all, not one we could not read, so no reason to mark a lower bound.
    if not hasattr(openai, sentinel):
        pytest.skip(f"openai {openai.__version__} has no {sentinel}")
    instrument(inject_stream_usage=False)
    suffix = getattr(openai, sentinel)
    list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say two words:", suffix=suffix, stream=True
        )
    )
    assert LOWER_BOUND not in estimated_usage(telemetry)


def test_legacy_completions_stream_gets_billed_usage_by_injection(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say two words:", stream=True
        )
    )
    assert all(c.choices for c in chunks)  # the usage chunk stays hidden
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    attributes = dict(telemetry.span().attributes or {})
    assert attributes[SOURCE] == "response"
    assert attributes["gen_ai.operation.name"] == "text_completion"


def test_reasoning_model_estimate_is_marked_as_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    list(stream(client, model="o3-mini", extra_headers=NO_USAGE))
    attributes = estimated_usage(telemetry)
    assert attributes[LOWER_BOUND] is True


@pytest.mark.parametrize(
    ("asked", "lower_bound"),
    [
        ({"extra_body": {"reasoning_effort": "high"}}, True),
        ({"extra_body": {"reasoning": {"effort": "low"}}}, True),  # OpenRouter's shape
        ({"extra_body": {"reasoning_effort": "none"}}, False),
        ({"extra_body": {"reasoning": {"enabled": False}}}, False),
        ({}, False),
    ],
)
def test_an_estimate_of_a_call_asking_for_reasoning_is_a_lower_bound_whatever_its_model_name(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    asked: dict[str, Any],
    lower_bound: bool,
) -> None:
    # A deployment or router name no family rule places: the request says it reasons.
    headers = {**NO_USAGE, "x-mock-response-model": "my-deployment"}
    list(stream(client, model="my-deployment", extra_headers=headers, **asked))
    attributes = estimated_usage(telemetry)
    assert attributes.get(LOWER_BOUND, False) is lower_bound


@pytest.mark.parametrize("modalities", [["text"], ["text", "audio"]])
def test_an_estimate_of_a_call_asking_for_audio_output_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, modalities: list[str]
) -> None:
    if "modalities" not in inspect.signature(client.chat.completions.create).parameters:
        pytest.skip("this openai release has no `modalities` parameter")
    list(stream(client, modalities=modalities, extra_headers=NO_USAGE))
    attributes = estimated_usage(telemetry)
    # Audio tokens are billed, and no chunk's text shows them.
    assert attributes.get(LOWER_BOUND, False) is ("audio" in modalities)


@pytest.mark.parametrize("predicted", [False, True])
def test_an_estimate_of_a_call_with_a_predicted_output_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, predicted: bool
) -> None:
    if "prediction" not in inspect.signature(client.chat.completions.create).parameters:
        pytest.skip("this openai release has no `prediction` parameter")
    prediction = {"type": "content", "content": "Two. Or perhaps three, or four."}
    asked = {"prediction": prediction} if predicted else {}
    list(stream(client, extra_headers=NO_USAGE, **asked))
    attributes = estimated_usage(telemetry)
    # The prediction's rejected tokens are billed as output, and no chunk shows them.
    assert attributes.get(LOWER_BOUND, False) is predicted


@pytest.mark.parametrize("referenced", [False, True])
def test_an_estimate_of_a_prompt_referring_to_an_earlier_audio_reply_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, referenced: bool
) -> None:
    earlier = {"role": "assistant", "audio": {"id": "audio_abc123"}}
    if not referenced:
        earlier = {"role": "assistant", "content": None}
    messages = [*MESSAGES, earlier, {"role": "user", "content": "Again?"}]
    list(stream(client, messages=messages, extra_headers=NO_USAGE))
    attributes = estimated_usage(telemetry)
    # The earlier reply's audio is billed as (audio) input, and the request shows its id only.
    assert attributes.get(LOWER_BOUND, False) is referenced


def reasoning_server(field: str | None) -> Any:
    """A compatible server (DeepSeek, vLLM: `reasoning_content`; OpenRouter: `reasoning`)
    that shows its model's reasoning in `field` (None: shows none), and reports no usage."""
    head = {"id": "gen-1", "created": 0, "model": "deepseek-reasoner"}
    thought = {field: "The capital of France is Paris."} if field else {}

    def handler(request: Any) -> Any:
        if not json.loads(request.content).get("stream"):
            message = {"role": "assistant", "content": "Paris.", **thought}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return HTTP.Response(
                200, json={**head, "object": "chat.completion", "choices": [choice]}
            )
        deltas = [{"role": "assistant", "content": "", **thought}, {"content": "Paris."}, {}]
        chunks = [
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": None if delta else "stop"}
                ],
            }
            for delta in deltas
        ]
        return sse_reply(chunks)

    return handler


@pytest.mark.parametrize("streamed", [True, False])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", None])
def test_an_estimate_of_a_reply_showing_reasoning_text_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, field: str | None, streamed: bool
) -> None:
    client = served_by(reasoning_server(field))
    request = {"model": "deepseek-reasoner", "messages": MESSAGES}
    if streamed:
        list(client.chat.completions.create(**request, stream=True))
    else:
        client.chat.completions.create(**request)
    attributes = estimated_usage(telemetry)
    # The reasoning is billed as output and not counted: only the answer is.
    assert attributes["gen_ai.usage.output_tokens"] == tokens("Paris.")
    assert attributes.get(LOWER_BOUND, False) is (field is not None)


# -- modes ---------------------------------------------------------------------------------


def test_compare_mode_records_reported_usage_the_estimate_and_the_difference(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(usage_estimate="compare")
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attributes = dict(telemetry.span().attributes or {})
    assert attributes[SOURCE] == "response"
    assert attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    estimate_in = EXAMPLE_PROMPT_TOKENS
    estimate_out = tokens(result.choices[0].message.content or "")
    assert attributes["openai_usage.estimate.input_tokens"] == estimate_in
    assert attributes["openai_usage.estimate.output_tokens"] == estimate_out
    assert attributes["openai_usage.estimate.input_tokens_difference"] == (
        estimate_in - result.usage.prompt_tokens
    )
    assert attributes["openai_usage.estimate.output_tokens_difference"] == (
        estimate_out - result.usage.completion_tokens
    )
    # The metric carries billed tokens only: never the two numbers summed together.
    assert {p.attributes[SOURCE] for p in telemetry.points(TOKEN_USAGE)} == {"response"}


def test_compare_mode_counts_no_estimate_for_a_sampled_out_span_but_still_fills_in_usage(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's trace was not sampled upstream: the (parent-based) sampler drops the
    # call's span, where alone "compare" puts its estimate. A stream without usage still
    # needs one, for its metrics.
    counted: list[str] = []
    real = estimator.Estimator.estimate

    def estimate(self: Any, operation: str, *args: Any) -> Any:
        counted.append(operation)
        return real(self, operation, *args)

    monkeypatch.setattr(estimator.Estimator, "estimate", estimate)
    instrument(usage_estimate="compare")
    unsampled = NonRecordingSpan(
        SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    )
    with trace.use_span(unsampled):
        result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        list(stream(client, extra_headers=NO_USAGE))

    assert telemetry.spans() == []
    assert counted == ["chat"]  # the stream's, not the reported call's
    points = {
        (p.attributes[SOURCE], p.attributes["gen_ai.token.type"]): p.sum
        for p in telemetry.points(TOKEN_USAGE)
    }
    assert points[("response", "input")] == result.usage.prompt_tokens
    assert points[("estimate", "input")] == EXAMPLE_PROMPT_TOKENS


class NativePanic(BaseException):
    """What pyo3 raises when tiktoken's Rust code panics: not an `Exception`."""


class PanickingEncoding:
    def encode_ordinary(self, text: str) -> list[int]:
        raise NativePanic("stack overflow")


@pytest.mark.parametrize("native", [False, True], ids=["fake_panic", "tiktoken"])
def test_an_encoder_panic_costs_the_estimate_never_the_call_nor_its_span(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    native: bool,
) -> None:
    from opentelemetry.instrumentation.openai_usage import errors

    monkeypatch.setattr(errors, "_logged", set())
    instrument(usage_estimate="compare")
    messages = MESSAGES
    if native:  # a run of about a million spaces overflows the stack of tiktoken's regex
        messages = [{"role": "user", "content": "Summarise:" + " " * 1_200_000 + "end"}]
    else:
        monkeypatch.setattr(estimator.LOADER, "get", lambda name: PanickingEncoding())
    with caplog.at_level(logging.WARNING):
        result = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert result.usage is not None  # the call went on, its response untouched
        chunks = list(stream(client, messages=messages, extra_headers=NO_USAGE))
    assert chunks
    first, second = telemetry.spans()
    assert (first.attributes or {})[SOURCE] == "response"  # billed usage, no comparison
    assert "openai_usage.estimate.input_tokens" not in (first.attributes or {})
    assert SOURCE not in (second.attributes or {})  # no usage reported, none estimated
    failures = [r.getMessage() for r in caplog.records if "tiktoken" in r.getMessage()]
    if native and not failures:
        pytest.skip("this tiktoken release does not panic on that text")
    assert len(failures) == 1  # reported once


PARTS = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]


@pytest.mark.parametrize(
    ("api", "as_list", "as_tuple"),
    [
        ("chat", [{"role": "user", "content": PARTS}], [{"role": "user", "content": tuple(PARTS)}]),
        ("completions", ["Say this", "is a test"], ("Say this", "is a test")),
        ("completions", [1, 2, 3], (1, 2, 3)),
        ("embeddings", ["a b", "c d"], ("a b", "c d")),
        ("embeddings", [[1, 2, 3], [4, 5]], [(1, 2, 3), (4, 5)]),
    ],
)
def test_tuples_are_counted_as_the_lists_the_sdk_sends_for_them(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    api: str,
    as_list: Any,
    as_tuple: Any,
) -> None:
    instrument(usage_estimate="compare")
    for value in (as_list, as_tuple):
        if api == "chat":
            client.chat.completions.create(model="gpt-4o-mini", messages=value)
        elif api == "completions":
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt=value)
        else:
            client.embeddings.create(model="text-embedding-3-small", input=value)
    listed, tupled = (dict(span.attributes or {}) for span in telemetry.spans())
    assert listed["openai_usage.estimate.input_tokens"] > 0
    assert (
        tupled["openai_usage.estimate.input_tokens"] == listed["openai_usage.estimate.input_tokens"]
    )


class Answer(BaseModel):
    answer: str


def test_a_parse_schema_given_as_a_class_counts_as_the_schema_the_sdk_sends(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    if not hasattr(client.chat.completions, "parse"):
        pytest.skip("this openai release has no chat.completions.parse()")
    from openai.lib._parsing._completions import type_to_response_format_param

    instrument(usage_estimate="compare")
    reply = {"x-mock-reply": '{"answer": "2"}'}
    sent = type_to_response_format_param(Answer)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, response_format=sent, extra_headers=reply
    )
    client.chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Answer, extra_headers=reply
    )
    as_dict, as_class = (dict(span.attributes or {}) for span in telemetry.spans())
    schema = as_dict["openai_usage.estimate.input_tokens"]
    assert schema > EXAMPLE_PROMPT_TOKENS  # the schema is counted
    assert as_class["openai_usage.estimate.input_tokens"] == schema


@needs_responses
def test_a_responses_text_format_schema_is_counted_given_as_a_class_or_as_json(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    if not hasattr(client.responses, "parse"):
        pytest.skip("this openai release has no responses.parse()")
    from openai.lib._parsing._responses import type_to_text_format_param

    instrument(usage_estimate="compare")
    reply = {"x-mock-reply": '{"answer": "2"}'}
    request: dict[str, Any] = {"model": "gpt-4o-mini", "input": "What's 1+1?"}
    client.responses.create(**request, extra_headers=reply)
    client.responses.create(
        **request, text={"format": type_to_text_format_param(Answer)}, extra_headers=reply
    )
    client.responses.parse(**request, text_format=Answer, extra_headers=reply)
    plain, as_json, as_class = (
        dict(span.attributes or {})["openai_usage.estimate.input_tokens"]
        for span in telemetry.spans()
    )
    assert as_json > plain + 10  # the schema, as for chat
    assert as_class == as_json


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize("given", ["content parts", "tool calls"])
def test_what_a_message_holds_in_a_generator_is_not_seen_and_the_estimate_says_so(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, given: str
) -> None:
    instrument()
    # The SDK reads a nested generator once, building the request: we cannot count it after.
    if given == "content parts":
        messages: list[dict[str, Any]] = [{"role": "user", "content": (p for p in PARTS)}]
    else:
        messages = [
            *MESSAGES,
            {"role": "assistant", "tool_calls": (c for c in [CALL])},
            {"role": "tool", "tool_call_id": "call_1", "content": "2"},
        ]
    list(stream(client, messages=messages, extra_headers=NO_USAGE))
    attributes = dict(telemetry.span().attributes or {})
    assert attributes[SOURCE] == "estimate"
    assert attributes[LOWER_BOUND] is True


def test_off_mode_records_no_estimate(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_USAGE_ESTIMATE", "off")
    instrument()
    list(stream(client, extra_headers=NO_USAGE))
    attributes = dict(telemetry.span().attributes or {})
    assert "gen_ai.usage.input_tokens" not in attributes
    assert SOURCE not in attributes
    assert telemetry.points(TOKEN_USAGE) == []


def test_bad_estimate_setting_warns_once_and_uses_fallback(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_USAGE_ESTIMATE", "maybe")
    with caplog.at_level(logging.WARNING):
        instrument()
    warnings = [r.getMessage() for r in caplog.records if "USAGE_ESTIMATE" in r.getMessage()]
    assert len(warnings) == 1 and "fallback" in warnings[0] and "compare" in warnings[0]
    list(stream(client, extra_headers=NO_USAGE))
    assert estimated_usage(telemetry)[SOURCE] == "estimate"


@pytest.mark.parametrize("served", ["my-deployment", "custom-llm-v2"])
def test_encoding_override_for_a_deployment_name_is_used(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, served: str
) -> None:
    # Also when the server answers with a model name we cannot place.
    instrument(encodings={"my-deployment": "cl100k_base"})
    reply = "Bonjour, comment allez-vous aujourd hui?"  # 8 tokens in o200k, 10 in cl100k
    headers = {**NO_USAGE, "x-mock-reply": reply, "x-mock-response-model": served}
    list(stream(client, model="my-deployment", extra_headers=headers))
    cl100k = encoding("cl100k_base")
    assert len(cl100k.encode(reply)) != tokens(reply)
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.output_tokens"] == len(cl100k.encode(reply))


# -- encodings: never downloaded, never waited for ----------------------------------------


def test_no_encoding_available_records_no_estimate_and_warns_once(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Any,
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache
    monkeypatch.setattr(encodings, "bundled_bytes", lambda name: None)  # no [offline] extra
    monkeypatch.setattr(estimator, "LOADER", EncodingLoader())
    with caplog.at_level(logging.WARNING):
        instrument()
        assert estimator.LOADER.wait("o200k_base", 30) is None
        list(stream(client, extra_headers=NO_USAGE))
        list(stream(client, extra_headers=NO_USAGE))
    spans = telemetry.spans()
    assert len(spans) == 2
    for span in spans:
        assert "gen_ai.usage.input_tokens" not in (span.attributes or {})
    warnings = [r.getMessage() for r in caplog.records if "not available offline" in r.getMessage()]
    assert len(warnings) == 1
    assert "[offline]" in warnings[0] and "TIKTOKEN_CACHE_DIR" in warnings[0]


def test_call_ending_while_the_encoding_loads_is_finished_later_without_blocking(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_load = encodings.load_offline

    def slow_load(name: str, allow_download: bool = False) -> Any:
        release.wait(30)
        return real_load(name, allow_download)

    monkeypatch.setattr(encodings, "load_offline", slow_load)
    monkeypatch.setattr(estimator, "LOADER", EncodingLoader())
    instrument()
    chunks = list(stream(client, extra_headers=NO_USAGE))  # returns: nobody waits for tiktoken
    assert chunks
    assert telemetry.spans() == []  # its end is parked until the encoding is there
    release.set()
    assert FINISHER.drain(30)
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS
    span = telemetry.span()
    assert span.end_time is not None and span.start_time is not None
    # It still ends at the stream's own end, not when the estimate was made.
    assert span.end_time - span.start_time < 10 * 1_000_000_000


def test_an_interrupt_while_the_estimate_is_counted_still_ends_the_span_once(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    """Ctrl-C (or a signal handler's `sys.exit()`) may land while a long output's estimate
    is counted, at the end of the stream. The call was already claimed as ending: the span
    was never ended, by that end or any later one (closing, collection, exit), and lost.
    It ends now, with what the stream told (no estimate), and the interrupt goes on. A
    trace hook stands in for the signal, landing in the estimate."""
    received: list[Any] = []

    def interrupt_in_the_estimate(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is estimate_usage.__code__:
            raise KeyboardInterrupt
        return None

    chunks = stream(client, extra_headers={**NO_USAGE, "x-mock-chunks": "5"})
    previous_trace = sys.gettrace()
    sys.settrace(interrupt_in_the_estimate)
    try:
        for chunk in chunks:
            received.append(chunk)
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    finally:
        sys.settrace(previous_trace)
    assert interrupted  # it reached the caller, as from the stream's own code
    assert len(received) == 7  # role, 5 words, finish: all of it, before the interrupt
    chunks.close()
    collect()
    span = telemetry.span()  # ended once: closing and collecting it ended nothing more
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "gen_ai.usage.input_tokens" not in attributes  # the estimate was interrupted
    assert span.status.status_code == trace.StatusCode.UNSET
    durations = telemetry.points("gen_ai.client.operation.duration")
    assert [point.count for point in durations] == [1]


def test_encodings_whose_loading_thread_could_not_start_are_not_waited_for(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = threading.Thread.start

    def start_fails_once(thread: threading.Thread) -> None:
        if thread.name == "openai-usage-encodings":
            monkeypatch.setattr(threading.Thread, "start", real_start)
            raise RuntimeError("can't start new thread")  # a thread limit, for a moment
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_fails_once)
    monkeypatch.setattr(estimator, "LOADER", EncodingLoader())
    monkeypatch.setattr(estimator, "ENCODING_WAIT_S", 5.0)
    instrument()  # the loading thread cannot start
    # The call's end starts the loading again (rather than waiting for the load that never
    # started), and is estimated once it is done.
    list(stream(client, extra_headers=NO_USAGE))
    assert FINISHER.drain(30)
    assert estimated_usage(telemetry)["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS


def test_long_stream_estimate_counts_every_piece_in_order(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # Several thousand chunks: the text is handed over in batches and still counted whole.
    chunks = list(stream(client, extra_headers={**NO_USAGE, "x-mock-chunks": "2500"}))
    assert len(chunks) > 2500
    attributes = estimated_usage(telemetry)
    assert attributes["gen_ai.usage.output_tokens"] == tokens(text_of(chunks))


def test_bad_encodings_setting_warns_once_naming_the_variable(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_ENCODINGS", "my-deployment=maybe")
    with caplog.at_level(logging.WARNING):
        instrument()
    warnings = [r.getMessage() for r in caplog.records if "_ENCODINGS" in r.getMessage()]
    assert len(warnings) == 1 and "o200k_base" in warnings[0]
    list(stream(client, extra_headers=NO_USAGE))  # the default encodings still estimate
    assert estimated_usage(telemetry)["gen_ai.usage.input_tokens"] == EXAMPLE_PROMPT_TOKENS


def _without_usage(field: str, value: Any) -> Any:
    """A non-streamed reply without usage whose list `field` is `value` (a broken server's
    `"choices": 1.5` the SDK hands on as it came)."""
    body = {"id": "odd-1", "object": "odd", "created": 1, "model": "gpt-4o-mini", field: value}
    if field == "output":  # a Responses API `Response`
        body |= {"created_at": 1, "status": "completed", "parallel_tool_calls": True}
        body |= {"tool_choice": "auto", "tools": []}
    content = json.dumps(body).encode()
    return served_by(lambda _: HTTP.Response(200, content=content))


@pytest.mark.parametrize("value", [1.5, True, "text"], ids=["number", "bool", "string"])
@pytest.mark.parametrize("operation", ["chat", "completions", "responses"])
def test_a_reply_whose_choices_are_not_a_list_is_still_estimated(
    instrumented: Any,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
    value: Any,
) -> None:
    """No usage and `choices` (or a Response's `output`) that is no list: the call is
    estimated as one whose only choice (or output item) is empty, and nothing of ours
    warns (iterating the number used to lose the whole estimate)."""
    if operation == "responses" and not sdk_has_responses():
        pytest.skip("the Responses API arrived in openai 1.66")
    monkeypatch.setattr(errors, "_logged", set())  # each of our warnings is logged once
    field = "output" if operation == "responses" else "choices"
    estimates = []
    with caplog.at_level(logging.WARNING, "opentelemetry.instrumentation.openai_usage"):
        for reply in ([{}], value):
            client = _without_usage(field, reply)
            if operation == "chat":
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            elif operation == "completions":
                client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
            else:
                client.responses.create(model="gpt-4o-mini", input="Say hi")
            client.close()
            estimates.append(dict(telemetry.spans()[-1].attributes or {}))
    assert [r.getMessage() for r in caplog.records] == []
    empty, odd = estimates
    assert odd[SOURCE] == empty[SOURCE] == "estimate"
    assert odd["gen_ai.usage.input_tokens"] == empty["gen_ai.usage.input_tokens"] > 0
    assert odd["gen_ai.usage.output_tokens"] == empty["gen_ai.usage.output_tokens"] == 0


def _reply_with_tool_calls(tool_calls: Any, stream: bool) -> Any:
    """A reply without usage: "Hello there", its message (or delta) carrying `tool_calls`
    (left out when None)."""
    message: dict[str, Any] = {"role": "assistant", "content": "Hello there"}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    head = {"id": "chatcmpl-odd", "created": 1, "model": "gpt-4o-mini"}
    if stream:
        chunks = [
            {**head, "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": message}]},
            {**head, "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]  # fmt: skip
        return served_by(lambda _: sse_reply(chunks))
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    body = json.dumps({**head, "object": "chat.completion", "choices": [choice]}).encode()
    return served_by(lambda _: HTTP.Response(200, content=body))


@pytest.mark.parametrize("tool_calls", [5, True, 1.5], ids=["int", "bool", "float"])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_tool_calls_that_are_not_a_list_leave_the_estimate_of_the_text(
    instrumented: Any,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
    tool_calls: Any,
) -> None:
    """A broken server's `"tool_calls": 5` beside the text: the text is estimated as it is
    without it, and nothing of ours warns (iterating the number failed)."""
    monkeypatch.setattr(errors, "_logged", set())  # each of our warnings is logged once
    outputs = []
    with caplog.at_level(logging.WARNING, "opentelemetry.instrumentation.openai_usage"):
        for calls in (None, tool_calls):
            client = _reply_with_tool_calls(calls, stream)
            result = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=stream
            )
            if stream:
                list(result)
            client.close()
            attributes = dict(telemetry.spans()[-1].attributes or {})
            assert attributes[SOURCE] == "estimate"
            outputs.append(attributes["gen_ai.usage.output_tokens"])
    assert [r.getMessage() for r in caplog.records] == []
    assert outputs[1] == outputs[0] == len(encoding("o200k_base").encode("Hello there"))
