"""How a `json_schema` response format's schema is billed in the prompt: as sent, titles
included, without the keywords the output's grammar enforces, each rule asserted on real
recorded calls and their billed prompt tokens.

The recorded calls are read from the published set in this repository
(benchmarks/data/published.jsonl.gz, replayed whole by benchmarks/estimate_accuracy.py):
each test names the cassette a request came from and asserts what OpenAI billed for it.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from opentelemetry.instrumentation.openai_usage.estimate import Encoder, estimate_usage
from opentelemetry.instrumentation.openai_usage.schema_text import render_response_format
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally

from . import test_estimate

encoders, o200k = test_estimate.encoders, test_estimate.o200k

PUBLISHED = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "published.jsonl.gz"


@functools.cache
def _published() -> dict[str, dict[str, Any]]:
    with gzip.open(PUBLISHED, "rt", encoding="utf-8") as lines:
        records = (json.loads(line) for line in lines if line.strip())
        return {record["case_id"]: record for record in records}


def recorded(case_id: str) -> tuple[dict[str, Any], int]:
    """A recorded request (a copy, to vary) and the prompt tokens billed for it."""
    record = _published()[case_id]
    usage = record["usage"]
    billed = usage.get("prompt_tokens", usage.get("input_tokens"))
    return copy.deepcopy(record["request_json"]), billed


def prompt(request: dict[str, Any], enc: Encoder, served: str, operation: str = "chat") -> int:
    usage = estimate_usage(operation, request, CompletionTally(), served, enc)
    assert usage.input_tokens is not None and not usage.lower_bound
    return usage.input_tokens


def schema_of(request: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = request["response_format"]["json_schema"]["schema"]
    return schema


CREWAI = "pypi:crewai==1.15.44:tests/cassettes/"
MIRASCOPE = "pypi:mirascope==2.8.2:tests/e2e/"
OPENLLMETRY = "pypi:opentelemetry-instrumentation-openai==0.62.4:tests/"


def test_the_schema_is_shown_with_its_titles_and_without_what_the_grammar_enforces() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Order",
        "properties": {
            "required": {"title": "Required", "type": "boolean", "default": False},
            "items": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "minItems": 1},
            "total": {"type": "number", "minimum": 0, "maximum": 100.0},
            "kind": {"const": {"required": True}, "enum": [{"default": 1}]},
        },
        "required": ["required", "items", "total", "kind"],
        "additionalProperties": False,
        "type": "object",
    }
    text = render_response_format({"name": "Order", "description": "An order.", "schema": schema})
    # A property named "required" stays, and so do keys inside a const or an enum value.
    assert text == (
        "# Response Formats\n\n## Order\n\n// An order.\n"
        '{"title":"Order","properties":{"required":{"title":"Required","type":"boolean"},'
        '"items":{"type":"array","items":{"type":"string"}},"total":{"type":"number"},'
        '"kind":{"const":{"required":true},"enum":[{"default":1}]}},"type":"object"}'
    )
    # A multi-line description: a comment line each.
    described = {"description": "Line one.\n\n  Line two.", "schema": {"type": "object"}}
    assert render_response_format(described) == (
        '# Response Formats\n\n## \n\n// Line one.\n// Line two.\n{"type":"object"}'
    )


@pytest.mark.parametrize(
    "case_id",
    [
        # No system message: a system message of its own.
        OPENLLMETRY + "traces/cassettes/test_chat_parse/"
        "test_async_parsed_refused_completion.yaml#0",
        "pypi:opentelemetry-instrumentation-langchain==0.62.4:tests/cassettes/"
        "test_structured_output/test_structured_output.yaml#0",
        "pypi:traceloop-sdk==0.62.4:tests/cassettes/test_prompt_management/"
        "test_prompt_management_with_response_format.yaml#0",
        CREWAI + "llms/openai/test_openai_response_format_with_pydantic_model.yaml#0",
        # After the system text, with which it may merge.
        CREWAI + "utilities/test_convert_with_instructions.yaml#0",
        CREWAI + "agents/TestResponseFormatWithKickoff"
        ".test_kickoff_response_format_without_planning.yaml#0",
        CREWAI + "agents/TestAgentA2AKickoffAsync.test_agent_kickoff_async_with_calculator.yaml#0",
        CREWAI + "rag/embeddings/test_crew_memory_with_google_vertex_embedder.yaml#13",
        CREWAI + "rag/embeddings/test_crew_memory_with_google_vertex_project_id.yaml#6",
        # After the tools section.
        MIRASCOPE + "output/cassettes/test_structured_output_with_tools/"
        "openai_gpt_4o_completions/async.yaml#2",
        CREWAI + "llms/openai/test_openai_agent_kickoff_structured_output_with_tools.yaml#0",
    ],
)
def test_recorded_chat_prompts_with_a_json_schema_format_are_estimated_as_billed(
    o200k: Encoder, case_id: str
) -> None:
    request, billed = recorded(case_id)
    served = _published()[case_id]["response_model"]
    assert prompt(request, o200k, served) == billed


def test_a_formats_description_is_a_comment_line(o200k: Encoder) -> None:
    # gpt-4.1-nano, a format with a description (and a schema not strict)
    request, billed = recorded(
        OPENLLMETRY + "traces/cassettes/test_chat_response_format/"
        "test_async_chat_response_format.yaml#0"
    )
    assert billed == 83 and prompt(request, o200k, "gpt-4.1-nano-2025-04-14") == 83
    description = request["response_format"]["json_schema"].pop("description")
    without = prompt(request, o200k, "gpt-4.1-nano-2025-04-14")
    assert 83 - without == len(o200k.encode_ordinary(f"// {description}\n"))


def test_array_length_and_number_bounds_and_defaults_are_not_billed(o200k: Encoder) -> None:
    # crewai's A2A agent (maxItems) and memory analysis (a number's default and bounds)
    a2a, billed = recorded(
        CREWAI + "agents/TestAgentA2AKickoffAsync.test_agent_kickoff_async_with_calculator.yaml#0"
    )
    assert prompt(a2a, o200k, "gpt-4.1-mini-2025-04-14") == billed == 266
    del schema_of(a2a)["properties"]["a2a_ids"]["maxItems"]
    assert prompt(a2a, o200k, "gpt-4.1-mini-2025-04-14") == 266
    memory, billed = recorded(
        CREWAI + "rag/embeddings/test_crew_memory_with_google_vertex_embedder.yaml#13"
    )
    assert prompt(memory, o200k, "gpt-4o-mini-2024-07-18") == billed == 530
    importance = schema_of(memory)["properties"]["importance"]
    assert {"default", "minimum", "maximum"} <= importance.keys()
    for keyword in ("default", "minimum", "maximum"):
        del importance[keyword]
    assert prompt(memory, o200k, "gpt-4o-mini-2024-07-18") == 530


@pytest.mark.parametrize(
    "case_id",
    [
        "pypi:langchain-openai==1.8.1:tests/cassettes/test_parsed_pydantic_schema.yaml.gz#1",
        OPENLLMETRY + "traces/cassettes/test_responses/test_responses_parse_async.yaml#0",
        MIRASCOPE + "input/cassettes/test_structured_output_resume/openai_gpt_4o_responses.yaml#0",
        MIRASCOPE + "input/cassettes/test_structured_output_with_formatting_instructions/"
        "openai_gpt_4o_responses.yaml#0",
        MIRASCOPE + "output/cassettes/test_structured_output_with_tools/"
        "openai_gpt_4o_responses/async.yaml#2",
    ],
)
def test_recorded_responses_inputs_with_a_json_schema_format_are_estimated_as_billed(
    o200k: Encoder, case_id: str
) -> None:
    request, billed = recorded(case_id)
    served = _published()[case_id]["response_model"]
    assert prompt(request, o200k, served, "responses") == billed


def test_a_responses_text_formats_description_is_billed(o200k: Encoder) -> None:
    request, billed = recorded(
        MIRASCOPE + "output/cassettes/test_structured_output/openai_gpt_4o_responses/async.yaml#0"
    )
    estimate = prompt(request, o200k, "gpt-4o-2024-08-06", "responses")
    description = request["text"]["format"].pop("description")
    without = prompt(request, o200k, "gpt-4o-2024-08-06", "responses")
    assert estimate - without == len(o200k.encode_ordinary(f"// {description}\n"))
    assert estimate == billed == 166
