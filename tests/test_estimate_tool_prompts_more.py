"""More prompt tokens of requests with tools: how the server bills the results of several
calls made in one earlier message, against real billed usage.

Expected numbers marked "billed" are the prompt tokens OpenAI reported for that exact
request (published VCR cassettes, benchmarks/data/published.jsonl.gz); the variants show
what each rule adds or takes away.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.openai_usage.estimate import Encoder, estimate_usage
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally

from . import test_estimate
from .test_estimate_tool_prompts import (
    FORMATTED_OUTPUT,
    FORMATTED_OUTPUT_SYSTEM,
    function,
    prompt,
    titled,
    usage_of,
)

# test_estimate's fixtures (o200k_base loaded offline), as this module's too.
encoders, o200k = test_estimate.encoders, test_estimate.o200k

PUBLISHED = Path(__file__).parent.parent / "benchmarks" / "data" / "published.jsonl.gz"


@functools.cache
def _recorded(case_id: str) -> tuple[str, int]:
    """A published record too long to write out here: its request (JSON text) and the
    prompt tokens it was billed."""
    with gzip.open(PUBLISHED, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["case_id"] == case_id:
                return json.dumps(record["request_json"]), record["usage"]["prompt_tokens"]
    raise LookupError(case_id)


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _secrets_request() -> dict[str, Any]:
    """mirascope 2.8.2, e2e/output test_call_with_tools, gpt-4o, second request: two
    calls in one assistant message, then their two results."""
    calls = [
        _call("call_v6LacIrChvs6ITVpIZqy5tFc", "secret_retrieval_tool", '{"password": "mellon"}'),
        _call("call_onyWzk4mLTGKzW9cthmf4Llq", "secret_retrieval_tool", '{"password": "radiance"}'),
    ]
    messages = [
        {"role": "system", "content": "Use parallel tool calling."},
        {
            "role": "user",
            "content": "Please retrieve the secrets associated with each of these passwords: "
            "mellon,radiance",
        },
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "content": "Welcome to Moria!", "tool_call_id": calls[0]["id"]},
        {"role": "tool", "content": "Life before Death", "tool_call_id": calls[1]["id"]},
    ]
    secret = function(
        "secret_retrieval_tool",
        "A tool that requires a password to retrieve a secret.",
        {
            "properties": {"password": {"title": "Password", "type": "string"}},
            "required": ["password"],
            "additionalProperties": False,
            "type": "object",
        },
        strict=False,
    )
    return {"messages": messages, "tools": [secret]}


def test_the_results_of_several_calls_are_billed_as_one_json_list(o200k: Encoder) -> None:
    request = _secrets_request()
    assert prompt(request, o200k, "gpt-4o") == 149  # billed
    # One message for both results: its text the JSON list of theirs.
    as_list = len(o200k.encode_ordinary(json.dumps(["Welcome to Moria!", "Life before Death"])))
    as_messages = sum(
        3 + len(o200k.encode_ordinary("tool")) + 1 + len(o200k.encode_ordinary(text))
        for text in ("Welcome to Moria!", "Life before Death")
    )
    assert 149 - (3 + as_list + 3) + as_messages == 150  # as role=tool messages: 1 over
    # A result's newlines and quotes are written escaped, as JSON writes them.
    quoted = copy.deepcopy(request)
    quoted["messages"][3]["content"] = 'Welcome\nto "Moria"!'
    escaped = len(o200k.encode_ordinary(json.dumps(['Welcome\nto "Moria"!', "Life before Death"])))
    plain = len(o200k.encode_ordinary('Welcome\nto "Moria"!')) - len(
        o200k.encode_ordinary("Welcome to Moria!")
    )
    assert escaped - as_list > plain  # the escapes cost more than the text's own tokens
    assert prompt(quoted, o200k, "gpt-4o") == 149 - as_list + escaped


def test_three_calls_cost_their_json_and_one_list_of_results(o200k: Encoder) -> None:
    # crewai 1.15.44, TestOpenAINativeToolCalling parallel agent kickoff, second request
    # (gpt-4o-mini): three calls in one message, each result a role=tool message with a
    # `name`, which the server does not bill.
    names = [f"parallel_local_search_{n}" for n in ("one", "two", "three")]
    queries = [f"latest {who} model release notes" for who in ("OpenAI", "Anthropic", "Gemini")]
    calls = [_call(f"call_{i}", names[i], json.dumps({"query": queries[i]})) for i in range(3)]
    results = [
        {
            "role": "tool",
            "tool_call_id": f"call_{i}",
            "name": names[i],
            "content": f"[{('one', 'two', 'three')[i]}] {queries[i]}",
        }
        for i in range(3)
    ]
    task = (
        "\nCurrent Task: This is a tool-calling compliance test. In your next assistant turn, "
        "emit exactly 3 tool calls in the same response (parallel tool calls), in this order: "
        "1) parallel_local_search_one(query='latest OpenAI model release notes'), "
        "2) parallel_local_search_two(query='latest Anthropic model release notes'), "
        "3) parallel_local_search_three(query='latest Gemini model release notes'). Do not "
        "call any other tools and do not answer before those 3 tool calls are emitted. After "
        "the tool results return, provide a one paragraph summary."
    )
    messages = [
        {
            "role": "system",
            "content": "You are Parallel Tool Agent. You follow tool instructions precisely.\n"
            "Your personal goal is: Use both tools exactly as instructed",
        },
        {"role": "user", "content": task},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *results,
    ]
    parameters = {
        "properties": {
            "query": {"description": "Search query", "title": "Query", "type": "string"}
        },
        "required": ["query"],
        "type": "object",
        "additionalProperties": False,
    }
    tools = [
        function(name, f"Local search tool #{i} for concurrency testing.", parameters, strict=True)
        for i, name in enumerate(names, 1)
    ]
    request = {"messages": messages, "tools": tools, "tool_choice": "auto"}
    assert prompt(request, o200k, "gpt-4o-mini") == 377  # billed
    # A result left out leaves the list one item shorter, not a whole message fewer.
    fewer = copy.deepcopy(request)
    del fewer["messages"][-1]
    dropped = len(o200k.encode_ordinary(json.dumps([r["content"] for r in results]))) - len(
        o200k.encode_ordinary(json.dumps([r["content"] for r in results[:2]]))
    )
    assert prompt(fewer, o200k, "gpt-4o-mini") == 377 - dropped


def test_a_result_of_several_calls_with_an_image_part_makes_a_lower_bound(
    o200k: Encoder,
) -> None:
    request = _secrets_request()
    text_parts = copy.deepcopy(request)
    text_parts["messages"][3]["content"] = [{"type": "text", "text": "Welcome to Moria!"}]
    assert prompt(text_parts, o200k, "gpt-4o") == 149  # text parts: their text
    image = copy.deepcopy(request)
    image["messages"][3]["content"] = [
        {"type": "text", "text": "Welcome to Moria!"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    usage = estimate_usage("chat", {"model": "gpt-4o", **image}, CompletionTally(), "gpt-4o", o200k)
    assert usage.input_tokens == 149 and usage.lower_bound
    assert not estimate_usage(
        "chat", {"model": "gpt-4o", **text_parts}, CompletionTally(), "gpt-4o", o200k
    ).lower_bound


def test_a_blank_line_inside_a_function_description_is_a_bare_comment_line(
    o200k: Encoder,
) -> None:
    # mirascope 2.8.2, e2e/input test_caching_tool, gpt-4o: a tool described in about
    # 3,600 tokens of markdown, its sections apart by blank lines.
    text, billed = _recorded(
        "pypi:mirascope==2.8.2:tests/e2e/input/cassettes/test_caching_tool/"
        "openai_gpt_4o_completions.yaml#0"
    )
    request = json.loads(text)
    assert billed == 3698
    assert prompt(request, o200k, "gpt-4o") == billed
    description = request["tools"][0]["function"]["description"]
    assert description.startswith("\n") and "\n\n---\n\n" in description
    # Without its blank lines it is 2 tokens short: most of them follow a line that ends
    # in "." (or ":"), where ".\n//\n//" is one token, so they cost nothing.
    packed = copy.deepcopy(request)
    packed["tools"][0]["function"]["description"] = "\n".join(
        line for line in description.split("\n") if line.strip()
    )
    assert prompt(packed, o200k, "gpt-4o") == billed - 2
    # Its leading and trailing blank lines are no comment lines.
    trimmed = copy.deepcopy(request)
    trimmed["tools"][0]["function"]["description"] = description.strip()
    assert prompt(trimmed, o200k, "gpt-4o") == billed


def test_a_blank_line_costs_a_token_where_it_does_not_join_the_line_before(
    o200k: Encoder,
) -> None:
    def described(description: str) -> int:
        tool = function("f", description, {})
        return prompt(
            {"messages": [{"role": "user", "content": "Hi"}], "tools": [tool]}, o200k, "gpt-4o"
        )

    assert described("Looks up.\n\nArgs: none") == described("Looks up.\nArgs: none")
    assert described("Looks up!\n\n---\n\nArgs: none") > described("Looks up!\n---\nArgs: none")
    assert described("   ") == described("")  # no description at all


def _book_request() -> dict[str, Any]:
    """mirascope 2.8.2, test_structured_output/tool, gpt-4o (2025-10): a Book whose
    author is a `$ref` to the Author definition."""
    author = {
        "description": "The author of a book.",
        **titled("first_name", "last_name"),
        "title": "Author",
        "additionalProperties": False,
    }
    parameters = {
        **titled("title", "author", "rating"),
        "additionalProperties": False,
        "$defs": {"Author": author},
    }
    parameters["properties"]["author"] = {"$ref": "#/$defs/Author"}
    parameters["properties"]["rating"] = {
        "description": "For testing purposes, the rating should be 7",
        "title": "Rating",
        "type": "integer",
    }
    description = (
        "Use this tool to extract data in Book format for a final response.\n"
        "A book with a rating. The title should be in all caps!"
    )
    return {
        "messages": [
            {"role": "system", "content": FORMATTED_OUTPUT_SYSTEM},
            {
                "role": "user",
                "content": "Please recommend the most popular book by Patrick Rothfuss",
            },
        ],
        "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": FORMATTED_OUTPUT}},
        "tools": [function(FORMATTED_OUTPUT, description, parameters, strict=True)],
    }


def test_a_ref_is_its_definition_written_in_place_at_the_margin(o200k: Encoder) -> None:
    request = _book_request()
    assert prompt(request, o200k, "gpt-4o") == 172  # billed
    # The same object given in place (no $defs) is the same prompt: the definition's
    # title and description are the property's notes, its properties at the margin.
    parameters = request["tools"][0]["function"]["parameters"]
    inline = copy.deepcopy(request)
    inline_parameters = inline["tools"][0]["function"]["parameters"]
    inline_parameters["properties"]["author"] = dict(parameters["$defs"]["Author"])
    del inline_parameters["$defs"]
    assert prompt(inline, o200k, "gpt-4o") == 172
    # Without the definition's notes the prompt is 9 tokens shorter: the "// Author" and
    # "// The author of a book." lines (the first "//" joins the "," before it).
    bare = copy.deepcopy(request)
    definition = bare["tools"][0]["function"]["parameters"]["$defs"]["Author"]
    del definition["title"], definition["description"]
    assert prompt(bare, o200k, "gpt-4o") == 172 - 9


def test_a_recursive_ref_is_written_as_its_name_inside_its_own_definition(
    o200k: Encoder,
) -> None:
    node = {
        "type": "object",
        "properties": {"value": {"type": "string"}, "next": {"$ref": "#/$defs/Node"}},
    }
    parameters = {
        "type": "object",
        "properties": {"head": {"$ref": "#/$defs/Node"}},
        "$defs": {"Node": node},
    }
    request = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [function("walk", "", parameters)],
    }
    usage = usage_of(request, o200k)
    # Written once, the inner reference by name: as a Node whose `next` is a named type.
    named = copy.deepcopy(request)
    named_parameters = named["tools"][0]["function"]["parameters"]
    named_parameters["properties"]["head"] = {
        "type": "object",
        "properties": {"value": {"type": "string"}, "next": {"$ref": "#/$defs/Node"}},
    }
    del named_parameters["$defs"]
    assert usage.input_tokens == prompt(named, o200k, "gpt-4o")
    assert not usage.lower_bound


def test_refs_that_double_at_every_level_stop_being_written_out(o200k: Encoder) -> None:
    # Each definition uses the next twice: written out in full, 2**14 copies of the last,
    # a prompt of 117,449 tokens (and 2**30 at depth 30, never finished).
    definitions: dict[str, Any] = {"D14": {"type": "string"}}
    for level in range(13, -1, -1):
        ref = {"$ref": f"#/$defs/D{level + 1}"}
        definitions[f"D{level}"] = {"type": "object", "properties": {"a": ref, "b": ref}}
    parameters = {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/D0"}},
        "$defs": definitions,
    }
    request = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [function("f", "", parameters)],
    }
    usage = usage_of(request, o200k)
    assert usage.input_tokens is not None and usage.input_tokens < 5_000
