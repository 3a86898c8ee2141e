"""Completion-side estimate rules, each shown on a real recorded call and its billed usage.

"billed" marks the completion tokens OpenAI (or Azure) reported for that exact request and
answer (published cassettes; benchmarks/estimate_accuracy.py replays all of them).
"""

from __future__ import annotations

from typing import Any

import pytest

from opentelemetry.instrumentation.openai_usage.estimate import Encoder, estimate_usage
from opentelemetry.instrumentation.openai_usage.estimator import LOADER
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally, tally_from_output
from opentelemetry.instrumentation.openai_usage.telemetry import PROVIDER_AZURE, PROVIDER_OPENAI
from opentelemetry.instrumentation.openai_usage.usage import Usage


@pytest.fixture
def o200k() -> Encoder:
    loaded = LOADER.wait("o200k_base", 60)  # the session's offline cache has it
    assert loaded is not None
    return loaded


def answered(
    request: dict[str, Any],
    message: dict[str, Any],
    enc: Encoder,
    finish: str = "stop",
    model: str = "gpt-4o-mini-2024-07-18",
) -> Usage:
    tally = CompletionTally()
    tally.add_chat_message(0, message)
    return estimate_usage("chat", request, tally, model, enc, PROVIDER_OPENAI, [finish])


def test_a_written_calls_name_is_counted_after_the_dot_of_its_recipient(o200k: Encoder) -> None:
    # crewai 1.15.44, tests/cassettes/hooks/TestNativeToolCallingHooksIntegration.
    # test_before_hook_blocks_tool_execution_in_crew.yaml (gpt-4.1-mini, 2026-01)
    parameters = {
        "properties": {"action": {"title": "Action", "type": "string"}},
        "required": ["action"],
        "type": "object",
    }
    tool = {
        "type": "function",
        "function": {
            "name": "dangerous_operation",
            "description": "Perform a dangerous operation that should be blocked.",
            "parameters": parameters,
        },
    }
    task = "Use the dangerous_operation tool with action 'delete_all'."
    request = {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "user", "content": task}],
        "tool_choice": "auto",
        "tools": [tool],
    }

    def billed_for(name: str) -> int:
        call = {"function": {"name": name, "arguments": '{"action":"delete_all"}'}}
        answer = {"content": None, "tool_calls": [call]}
        model = "gpt-4.1-mini-2025-04-14"
        usage = answered(request, answer, o200k, "tool_calls", model=model)
        return usage.output_tokens or 0

    def tokens(text: str) -> int:
        return len(o200k.encode_ordinary(text))

    # "danger", "ous" alone; ".d", "anger", "ous" after `functions`: the call costs one
    # more than its name alone would.
    assert tokens(".dangerous_operation") == tokens("dangerous_operation") + 1
    assert billed_for("dangerous_operation") == 17  # billed
    # A name whose first letters join the '.' (".get") costs no more than the name.
    assert tokens(".get_weather") == tokens("get_weather")
    arguments = tokens('{"action":"delete_all"}')
    assert billed_for("get_weather") == tokens("get_weather") + arguments + 7


def test_an_answer_the_content_filter_withheld_is_a_lower_bound(o200k: Encoder) -> None:
    # opentelemetry-instrumentation-openai 0.62.4, test_azure/test_chat_content_filtering:
    # an Azure gpt-35-turbo answer shown empty, billed 19 completion tokens.
    question = {"role": "user", "content": "Tell me a joke about opentelemetry"}
    request = {"model": "openllmetry-testing", "messages": [question]}
    tally = CompletionTally()
    model = "gpt-35-turbo"
    filtered = estimate_usage(
        "chat", request, tally, model, o200k, PROVIDER_AZURE, ["content_filter"]
    )
    assert filtered.output_tokens == 0 and filtered.lower_bound
    finished = estimate_usage("chat", request, tally, model, o200k, PROVIDER_AZURE, ["stop"])
    assert not finished.lower_bound


def test_a_responses_call_the_request_forces_is_billed_its_arguments_alone(
    o200k: Encoder,
) -> None:
    # mirascope 2.8.2, tests/e2e/input/cassettes/test_structured_output_resume/tool/
    # openai_gpt_4o_responses.yaml#0: Responses' flat tool_choice {"type", "name"}.
    name = "__mirascope_formatted_output_tool__"
    parameters = {
        "properties": {"output": {"title": "Output", "type": "integer"}},
        "required": ["output"],
        "additionalProperties": False,
        "type": "object",
    }
    tool = {"type": "function", "name": name, "parameters": parameters, "strict": True}
    request = {
        "model": "gpt-4o",
        "input": [{"role": "user", "content": "Choose a lucky number between 1 and 10"}],
        "tools": [tool],
    }
    call = {"type": "function_call", "name": name, "arguments": '{"output":7}', "call_id": "c"}
    tally = tally_from_output({"output": [call]})

    def output(request: dict[str, Any]) -> int | None:
        usage = estimate_usage("responses", request, tally, "gpt-4o-2024-08-06", o200k)
        return usage.output_tokens

    forced = {**request, "tool_choice": {"type": "function", "name": name}}
    assert output(forced) == 6  # billed: the arguments (5 tokens) and the item's token
    # Not forced, the model writes the name and the call's framing too.
    assert output(request) == 6 + len(o200k.encode_ordinary(name)) + 7
