"""Completion-side estimate rules, each shown on a real recorded call and its billed usage.

"billed" marks the completion tokens OpenAI (or Azure) reported for that exact request and
answer (published cassettes; benchmarks/estimate_accuracy.py replays all of them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from opentelemetry.instrumentation.openai_usage.estimate import Encoder, estimate_usage
from opentelemetry.instrumentation.openai_usage.estimator import LOADER
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally
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
    created: float | None = None,
    provider: str = PROVIDER_OPENAI,
    model: str = "gpt-4o-mini-2024-07-18",
) -> Usage:
    tally = CompletionTally()
    tally.add_chat_message(0, message)
    return estimate_usage("chat", request, tally, model, enc, provider, [finish], created)


def at(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, tzinfo=timezone.utc).timestamp()


def test_openai_billed_the_end_of_turn_token_from_december_2024_to_may_2025(
    o200k: Encoder,
) -> None:
    # crewai 1.15.44, tests/cassettes/test_llm_call_with_message_list.yaml
    question = {"role": "user", "content": "What is the capital of France?"}
    request = {"model": "gpt-4o-mini", "messages": [question]}
    answer = {"content": "The capital of France is Paris."}
    text = len(o200k.encode_ordinary(answer["content"]))
    assert text == 7
    created = 1737568016  # 2025-01-22
    assert answered(request, answer, o200k, created=created).output_tokens == 8  # billed
    # Before and after the window, and for a call whose time is not known (now): the text.
    for when in (at(2024, 12, 18), at(2025, 5, 20), None):
        assert answered(request, answer, o200k, created=when).output_tokens == text, when
    # Cut by max_tokens: no end of turn was written.
    assert answered(request, answer, o200k, "length", created).output_tokens == text
    # With stop sequences the window's answers were billed their text alone.
    stopped = {**request, "stop": ["\nObservation:"]}
    assert answered(stopped, answer, o200k, created=created).output_tokens == text
    # An empty list sets no stop sequence.
    assert answered({**request, "stop": []}, answer, o200k, created=created).output_tokens == 8


def test_openai_billed_the_end_of_turn_of_a_tool_call_answer_in_that_window(
    o200k: Encoder,
) -> None:
    # crewai 1.15.44, tests/cassettes/test_llm_call_with_tool_and_message_list.yaml
    parameters = {
        "type": "object",
        "properties": {"number": {"type": "integer", "description": "The number to square"}},
        "required": ["number"],
    }
    tool = {
        "type": "function",
        "function": {
            "name": "square_number",
            "description": "Returns the square of a number.",
            "parameters": parameters,
        },
    }
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "What is the square of 5?"}],
        "tools": [tool],
    }
    call = {"function": {"name": "square_number", "arguments": '{"number":5}'}}
    answer = {"content": None, "tool_calls": [call]}
    billed = answered(request, answer, o200k, "tool_calls", created=1737568919)  # 2025-01-22
    assert billed.output_tokens == 15  # billed
    later = answered(request, answer, o200k, "tool_calls", created=at(2026, 1, 22))
    assert later.output_tokens == 14


def test_azure_bills_the_end_of_turn_whenever_it_was_answered(o200k: Encoder) -> None:
    request = {"model": "my-deployment", "messages": [{"role": "user", "content": "Hi"}]}
    answer = {"content": "Two."}
    for when in (at(2024, 6, 1), at(2025, 2, 1), at(2026, 2, 1), None):
        usage = answered(request, answer, o200k, created=when, provider=PROVIDER_AZURE)
        assert usage.output_tokens == 3, when  # its text, 2 tokens, and the end of its turn
    # Stop sequences change nothing there (10 of 10 recorded Azure answers with them).
    stopped = {**request, "stop": ["\n"]}
    assert answered(stopped, answer, o200k, provider=PROVIDER_AZURE).output_tokens == 3


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
        usage = answered(request, answer, o200k, "tool_calls", at(2026, 1, 27), model=model)
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
        "chat", request, tally, model, o200k, PROVIDER_AZURE, ["content_filter"], 1714038380
    )
    assert filtered.output_tokens == 0 and filtered.lower_bound
    finished = estimate_usage("chat", request, tally, model, o200k, PROVIDER_AZURE, ["stop"])
    assert not finished.lower_bound
