"""How a `json_schema` response format is billed beyond its schema's keywords: the reply
primed with the format's name (chat, without tools), the schema's JSON with non-ASCII
characters escaped, and the Responses API's section headed with the format's name, each
asserted on real recorded calls and their billed prompt tokens (the published set in
benchmarks/data, read as tests/test_estimate_response_format_schema.py reads it).
"""

from __future__ import annotations

import json

from opentelemetry.instrumentation.openai_usage.estimate import Encoder, estimate_usage
from opentelemetry.instrumentation.openai_usage.schema_text import render_response_format
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally

from . import test_estimate
from .test_estimate_response_format_schema import (
    CREWAI,
    MIRASCOPE,
    prompt,
    recorded,
    schema_of,
)

encoders, o200k = test_estimate.encoders, test_estimate.o200k

REFUSAL = MIRASCOPE + "output/cassettes/test_refusal/openai_gpt_4o_{}/async.yaml#0"
WITH_TOOLS = (
    MIRASCOPE + "output/cassettes/test_structured_output_with_tools/"
    "openai_gpt_4o_completions/async.yaml#2"
)
GPT_4O = "gpt-4o-2024-08-06"


def tokens(enc: Encoder, text: str) -> int:
    return len(enc.encode_ordinary(text))


def renamed(request: dict[str, object], name: str) -> None:
    response_format = request.get("response_format") or request["text"]
    assert isinstance(response_format, dict)
    fmt = response_format.get("json_schema") or response_format.get("format")
    assert isinstance(fmt, dict)
    fmt["name"] = name


def test_a_chat_reply_under_a_json_schema_format_is_primed_with_the_formats_name(
    o200k: Encoder,
) -> None:
    # mirascope's refusal test, gpt-4o: a trivial schema under a 5-token name was billed 8
    # tokens more than the same shape under a 1-token one (elastic's Reason), until the
    # name was counted twice: in the section's heading and in the reply's priming.
    request, billed = recorded(REFUSAL.format("completions"))
    assert prompt(request, o200k, GPT_4O) == billed == 64
    renamed(request, "Handbook")
    heading = tokens(o200k, "## FentanylHandbook\n\n") - tokens(o200k, "## Handbook\n\n")
    once = tokens(o200k, "FentanylHandbook") - tokens(o200k, "Handbook")
    assert heading == 4 and once == 3  # "## Handbook" vs "## FentanylHandbook" merge apart
    assert prompt(request, o200k, GPT_4O) == 64 - heading - once


def test_with_tools_offered_the_reply_is_not_primed_with_the_formats_name(
    o200k: Encoder,
) -> None:
    # The model may answer with a call: the name is billed once, in the heading alone.
    request, billed = recorded(WITH_TOOLS)
    assert prompt(request, o200k, GPT_4O) == billed
    name = request["response_format"]["json_schema"]["name"]
    renamed(request, name + "Extended")
    heading = tokens(o200k, f"## {name}Extended\n\n") - tokens(o200k, f"## {name}\n\n")
    assert heading > 0
    assert prompt(request, o200k, GPT_4O) == billed + heading


def test_a_responses_text_format_is_headed_with_its_name_and_not_primed_with_it(
    o200k: Encoder,
) -> None:
    # The same refusal test through the Responses API: billed 54, the name once.
    request, billed = recorded(REFUSAL.format("responses"))
    assert prompt(request, o200k, GPT_4O, "responses") == billed == 54
    renamed(request, "Handbook")
    heading = tokens(o200k, "## FentanylHandbook\n\n") - tokens(o200k, "## Handbook\n\n")
    assert prompt(request, o200k, GPT_4O, "responses") == 54 - heading


def test_a_schemas_non_ascii_characters_are_billed_escaped(o200k: Encoder) -> None:
    # crewai's planner observation: its description's em dashes are billed as `\u2014`.
    request, billed = recorded(
        CREWAI + "agents/TestAgentExecutorPlanning"
        ".test_agent_kickoff_with_planning_stores_plan_in_state.yaml#2"
    )
    assert prompt(request, o200k, "gpt-4o-mini-2024-07-18") == billed == 788
    description = schema_of(request)["description"]
    assert description.count("\u2014") == 2
    text = render_response_format(request["response_format"]["json_schema"])
    assert "\\u2014" in text and "\u2014" not in text
    escaped = tokens(o200k, json.dumps(description))
    plain = tokens(o200k, json.dumps(description, ensure_ascii=False))
    assert escaped > plain
    schema_of(request)["description"] = description.replace("\u2014", "-")
    dashed = tokens(o200k, json.dumps(schema_of(request)["description"]))
    assert prompt(request, o200k, "gpt-4o-mini-2024-07-18") == 788 - escaped + dashed


def test_a_nullable_option_costs_no_more_than_its_json(o200k: Encoder) -> None:
    # crewai's guardrail result: its optional feedback is billed as its JSON, nothing more
    # (its 5-token name, counted twice, is what made it look dearer).
    request, billed = recorded(CREWAI + "test_task_guardrail_process_output.yaml#0")
    assert prompt(request, o200k, GPT_4O) == billed == 290
    section = render_response_format(request["response_format"]["json_schema"])
    schema_of(request)["properties"]["feedback"]["anyOf"] = [{"type": "string"}]
    shorter = tokens(o200k, section) - tokens(
        o200k, render_response_format(request["response_format"]["json_schema"])
    )
    assert shorter > 0
    assert prompt(request, o200k, GPT_4O) == 290 - shorter


def test_a_reasoning_models_format_section_costs_one_token_less_like_its_tools_section(
    o200k: Encoder,
) -> None:
    # langchain's gpt-5-nano Responses call: billed 40, the section its text alone; the
    # same request to gpt-4o-mini would pay schema_section's 1 beyond it.
    request, billed = recorded(
        "pypi:langchain-openai==1.8.1:tests/cassettes/"
        "test_schema_parsing_failures_responses_api.yaml.gz#2"
    )
    fmt = request["text"]["format"]
    section = tokens(o200k, render_response_format(fmt))

    def estimated(served: str, body: dict[str, object]) -> int:
        usage = estimate_usage("responses", body, CompletionTally(), served, o200k)
        assert usage.input_tokens is not None
        return usage.input_tokens

    plain = {key: value for key, value in request.items() if key != "text"}
    assert estimated("gpt-5-nano-2025-08-07", request) == billed == 40
    assert 40 - estimated("gpt-5-nano-2025-08-07", plain) == section
    with_format = estimated("gpt-4o-mini-2024-07-18", request)
    assert with_format - estimated("gpt-4o-mini-2024-07-18", plain) == section + 1
