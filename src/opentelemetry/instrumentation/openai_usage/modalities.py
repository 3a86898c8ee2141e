"""Which modality a call's tokens were, for the conventions' per-modality counters.

OpenAI reports a modality breakdown only sometimes (`audio_tokens`, and `text_tokens`
/ `image_tokens` on a few models). What it does not break down is `text` when we can
be sure (the request held nothing but text; outputs of chat, Responses and legacy
completions are text unless reported as audio), and `unknown` otherwise, as the
conventions ask: never a guess that a dashboard would take for a fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tally import get

TEXT = "text"
UNKNOWN = "unknown"

_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})
_TEXT_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning"})


def _text_content(content: Any) -> bool:
    if content is None or isinstance(content, str):
        return True
    if isinstance(content, (list, tuple)):
        return all(get(part, "type") in _TEXT_PARTS for part in content)
    return False


def input_is_text(operation: str, request: Mapping[str, Any] | None) -> bool:
    """True when every input of the request is text, so all its tokens are text."""
    if request is None:
        return False
    if operation in ("text_completion", "embeddings"):
        return True
    if operation == "responses":
        raw = request.get("input")
        if isinstance(raw, str):
            return True
        if not isinstance(raw, (list, tuple)):
            return False
        return all(
            get(item, "type") in _TEXT_ITEMS | {None} and _text_content(get(item, "content"))
            for item in raw
        )
    messages = request.get("messages")
    if not isinstance(messages, (list, tuple)):
        return False
    for message in messages:
        # As `get` and `_text_content` would, the common case (a dict, a string) first.
        content = message.get("content") if type(message) is dict else get(message, "content")
        if type(content) is not str and not _text_content(content):
            return False
    return True


def split(
    total: int | None, reported: tuple[tuple[str, int], ...], rest: str
) -> list[tuple[str, int]]:
    """`total` by modality: what was reported, and the remainder as `rest`.

    A breakdown that says more than the total is not believed: then all of it is
    `unknown`. When the server named text itself, any remainder is `unknown`.
    """
    if total is None:
        return []
    named = sum(count for _, count in reported)
    if named > total:
        return [(UNKNOWN, total)]
    remainder = total - named
    if any(modality == TEXT for modality, _ in reported):
        rest = UNKNOWN
    parts = list(reported)
    if remainder or not parts:
        parts.append((rest, remainder))
    return parts
