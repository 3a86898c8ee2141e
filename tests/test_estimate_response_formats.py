"""Prompt-side estimate rules for a chat request's `response_format`, each shown on a real
recorded call and its billed usage.

"billed" marks the prompt tokens OpenAI reported for that exact request (published
cassettes; benchmarks/estimate_accuracy.py replays all of them).
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from opentelemetry.instrumentation.openai_usage.estimate import Encoder, estimate_usage
from opentelemetry.instrumentation.openai_usage.estimator import LOADER


@pytest.fixture
def o200k() -> Encoder:
    loaded = LOADER.wait("o200k_base", 60)  # the session's offline cache has it
    assert loaded is not None
    return loaded


def prompt(request: dict[str, Any], enc: Encoder) -> int:
    usage = estimate_usage("chat", {"model": "gpt-4o", **request}, None, "gpt-4o-2024-08-06", enc)
    assert usage.input_tokens is not None
    return usage.input_tokens


def titled(name: str, kind: str) -> dict[str, str]:
    return {"title": name, "type": kind}


BOOK_SUMMARY: dict[str, Any] = {
    "properties": {
        "title": titled("Title", "string"),
        "author": titled("Author", "string"),
        "pages": titled("Pages", "integer"),
        "publication_year": titled("Publication Year", "integer"),
    },
    "required": ["title", "author", "pages", "publication_year"],
    "title": "BookSummary",
    "type": "object",
    "additionalProperties": False,
}


def one_field_tool(name: str, description: str, field: str, kind: str, strict: bool) -> Any:
    """A function tool taking one required, titled field (pydantic's shape)."""
    parameters = {
        "properties": {field: titled(field.capitalize(), kind)},
        "required": [field],
        "additionalProperties": False,
        "type": "object",
    }
    function = {"name": name, "description": description, "parameters": parameters}
    return {"type": "function", "function": {**function, "strict": strict}}


BOOK_INFO_TOOL = one_field_tool(
    "get_book_info", "Look up book information by ISBN.", "isbn", "string", strict=False
)
ISBN_QUESTION = {
    "role": "user",
    "content": "Please look up the book with ISBN 0-7653-1178-X and provide detailed info "
    "and a recommendation score",
}


def test_a_json_schema_format_beside_tools_shares_the_system_message_they_open(
    o200k: Encoder,
) -> None:
    # mirascope 2.8.2, tests/e2e/output/cassettes/test_structured_output_with_tools/
    # openai_gpt_4o_completions/sync.yaml#0: no system message, a tool and a format.
    book_format = {
        "type": "json_schema",
        "json_schema": {"name": "BookSummary", "schema": BOOK_SUMMARY, "strict": True},
    }
    bare: dict[str, Any] = {"messages": [ISBN_QUESTION]}
    tools = {**bare, "tools": [BOOK_INFO_TOOL]}
    both = {**tools, "response_format": book_format}
    assert prompt(both, o200k) == 140  # billed
    # Without tools the format is a system message of its own, 8 tokens beyond its text;
    # after the tools section, in their message, 1.
    alone = prompt({**bare, "response_format": book_format}, o200k) - prompt(bare, o200k)
    beside_tools = prompt(both, o200k) - prompt(tools, o200k)
    assert beside_tools == alone - 7


# mirascope 2.8.2, tests/e2e/input/cassettes/test_structured_output_resume/: one question
# answered under a format, then resumed with that answer and a second question.
LUCKY = {"role": "user", "content": "Choose a lucky number between 1 and 10"}
AGAIN = {"role": "user", "content": "Ok, now choose a different lucky number"}
ANSWER = {"role": "assistant", "content": '{"output":7}'}
INT_OUTPUT: dict[str, Any] = {
    "description": "Wrapper for primitive type int",
    "properties": {"output": titled("Output", "integer")},
    "required": ["output"],
    "title": "intOutput",
    "type": "object",
    "additionalProperties": False,
}


def int_format(name: str) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": INT_OUTPUT, "strict": True},
    }


def test_an_earlier_answer_under_a_json_schema_format_is_billed_with_the_formats_name(
    o200k: Encoder,
) -> None:
    asked = {"messages": [LUCKY], "response_format": int_format("int")}
    resumed = {"messages": [LUCKY, ANSWER, AGAIN], "response_format": int_format("int")}
    # openai_gpt_4o_completions.yaml #0 and #1: billed 62 and 86 prompt tokens. The
    # format's section itself is not counted exactly (1 too many in both), but the
    # earlier answer and the second question cost what was billed for them.
    assert prompt(resumed, o200k) - prompt(asked, o200k) == 86 - 62
    # The answer's extra cost follows the format's name ("int": one token).
    renamed = {**resumed, "response_format": int_format("lucky_number_output")}
    asked_renamed = {**asked, "response_format": int_format("lucky_number_output")}
    extra = len(o200k.encode_ordinary("lucky_number_output")) - 1
    assert prompt(renamed, o200k) - prompt(asked_renamed, o200k) == 86 - 62 + extra


def test_an_earlier_json_answer_costs_nothing_more_without_a_json_schema_format(
    o200k: Encoder,
) -> None:
    # The same test's tool twin (tool/openai_gpt_4o_completions.yaml): the output forced
    # through a strict tool, and the same earlier answer: billed 109 and 130.
    system = {
        "role": "system",
        "content": "Always respond to the user's query using the "
        "__mirascope_formatted_output_tool__ tool for structured output.",
    }
    name = "__mirascope_formatted_output_tool__"
    description = "Use this tool to extract data in int format for a final response."
    tool = one_field_tool(name, description, "output", "integer", strict=True)
    forced = {
        "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": name}},
        "tools": [tool],
    }
    assert prompt({"messages": [system, LUCKY], **forced}, o200k) == 109  # billed
    assert prompt({"messages": [system, LUCKY, ANSWER, AGAIN], **forced}, o200k) == 130  # billed


def test_a_response_format_schema_is_written_as_the_sdk_sends_it(o200k: Encoder) -> None:
    # A datetime default is sent in ISO form (openai._utils._json); json.dumps raised on it
    # and the whole estimate was lost. One that contains itself cannot be written at all:
    # the rest is counted, as a lower bound.
    import datetime

    def request(default: Any) -> dict[str, Any]:
        schema = {"type": "object", "properties": {"when": {"type": "string", "default": default}}}
        response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        return {"messages": [{"role": "user", "content": "Hi"}], "response_format": response_format}

    when = datetime.datetime(2026, 12, 7, 22, 30)
    assert prompt(request(when), o200k) == prompt(request(when.isoformat()), o200k)
    looped: dict[str, Any] = {"type": "object", "properties": {}}
    looped["properties"]["self"] = looped
    looped_request = request(None)
    looped_request["response_format"]["json_schema"]["schema"] = looped
    usage = estimate_usage("chat", looped_request, None, "gpt-4o", o200k)
    assert usage.input_tokens is not None and usage.lower_bound


class _JSONSchemaModel(pydantic.BaseModel):
    """As the SDK's `ResponseFormatJSONSchema.JSONSchema`: `schema` is its field `schema_`."""

    name: str
    schema_: dict[str, Any] = pydantic.Field(alias="schema")
    strict: bool | None = None


class _FormatModel(pydantic.BaseModel):
    type: str
    json_schema: _JSONSchemaModel


def test_a_format_given_as_the_sdks_model_is_counted_as_its_dict(o200k: Encoder) -> None:
    as_dict = int_format("int")
    fields = as_dict["json_schema"]
    model = _FormatModel(type="json_schema", json_schema=_JSONSchemaModel(**fields))
    request = {"messages": [LUCKY]}
    counted = prompt({**request, "response_format": as_dict}, o200k)
    assert counted > prompt(request, o200k)
    assert prompt({**request, "response_format": model}, o200k) == counted


def test_a_json_schema_format_whose_schema_cannot_be_read_makes_a_lower_bound(
    o200k: Encoder,
) -> None:
    unreadable = {"type": "json_schema", "json_schema": {"name": "int", "schema": "{}"}}
    request = {"model": "gpt-4o", "messages": [LUCKY], "response_format": unreadable}
    usage = estimate_usage("chat", request, None, "gpt-4o-2024-08-06", o200k)
    assert usage.lower_bound
    assert not estimate_usage(
        "chat", {**request, "response_format": None}, None, "gpt-4o", o200k
    ).lower_bound


class _TextFormatModel(pydantic.BaseModel):
    """As the SDK's `ResponseFormatTextJSONSchemaConfig`: `schema` is its field `schema_`."""

    type: str
    name: str
    schema_: dict[str, Any] = pydantic.Field(alias="schema")


def test_a_responses_text_format_given_as_the_sdks_model_is_counted_as_its_dict(
    o200k: Encoder,
) -> None:
    as_dict = {"type": "json_schema", "name": "int", "schema": INT_OUTPUT}
    model = _TextFormatModel(**as_dict)
    request = {"model": "gpt-4o", "input": "Choose a lucky number between 1 and 10"}

    def counted(text: Any) -> Any:
        usage = estimate_usage("responses", {**request, "text": text}, None, "gpt-4o", o200k)
        return usage.input_tokens, usage.lower_bound

    assert counted({"format": as_dict})[0] > counted(None)[0]
    assert counted({"format": model}) == counted({"format": as_dict})
