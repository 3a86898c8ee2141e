"""Prompt-side estimate rules for a chat request's `response_format`, each shown on a real
recorded call and its billed usage.

"billed" marks the prompt tokens OpenAI reported for that exact request (published
cassettes; benchmarks/estimate_accuracy.py replays all of them).
"""

from __future__ import annotations

from typing import Any

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
BOOK_INFO_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_book_info",
        "description": "Look up book information by ISBN.",
        "parameters": {
            "properties": {"isbn": titled("Isbn", "string")},
            "required": ["isbn"],
            "additionalProperties": False,
            "type": "object",
        },
        "strict": False,
    },
}
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
    # Without tools the format is a system message of its own; beside them it is in theirs,
    # and its message framing (3 tokens) is not billed a second time.
    alone = prompt({**bare, "response_format": book_format}, o200k) - prompt(bare, o200k)
    beside_tools = prompt(both, o200k) - prompt(tools, o200k)
    assert beside_tools == alone - 3
