"""One Usage value from every shape of usage the OpenAI API reports.

Chat and legacy completions say `prompt_tokens`/`completion_tokens`, the
Responses API says `input_tokens`/`output_tokens`, embeddings only report
prompt tokens; SDK objects, plain dicts and half-filled objects from
OpenAI-compatible servers all occur. Anything that is not a non-negative
integer (up to `MAX_COUNT`) is treated as absent, so a broken server never yields a
wrong count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SOURCE_RESPONSE = "response"
SOURCE_ESTIMATE = "estimate"


@dataclass(frozen=True)
class Usage:
    """Token counts of one call, and where they came from."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    # Input written to a provider-managed cache (OpenAI-compatible hosts that report it).
    cache_write_input_tokens: int | None = None
    # What the server broke down by modality ("text", "audio", "image"), if anything.
    input_modalities: tuple[tuple[str, int], ...] = ()
    output_modalities: tuple[tuple[str, int], ...] = ()
    source: str = SOURCE_RESPONSE
    # An estimate that cannot see everything billed (a reasoning model's hidden
    # reasoning tokens): the true count is at least this.
    lower_bound: bool = False

    @property
    def is_empty(self) -> bool:
        return self.input_tokens is None and self.output_tokens is None


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


# More tokens than any call can bill (2**53 - 1, past which JSON numbers lose precision).
# A larger count is a broken server's, and would break exports: OTLP integers are 64-bit,
# and one counter point beyond them makes every later export of the metrics fail.
MAX_COUNT = 2**53 - 1


def _count(value: Any) -> int | None:
    # bool is an int subclass; True tokens is nonsense, not 1.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _first_count(obj: Any, *names: str) -> int | None:
    for name in names:
        value = _count(_field(obj, name))
        if value is not None:
            return value
    return None


_MODALITIES = (("text", "text_tokens"), ("audio", "audio_tokens"), ("image", "image_tokens"))


def _modalities(details: Any) -> tuple[tuple[str, int], ...]:
    """`{"audio_tokens": 12, "text_tokens": 30}` -> (("text", 30), ("audio", 12))."""
    found = []
    for modality, name in _MODALITIES:
        count = _count(_field(details, name))
        if count:
            found.append((modality, count))
    return tuple(found)


def usage_from(raw: Any) -> Usage | None:
    """Read a usage object of any known shape; None when it holds no counts."""
    if raw is None:
        return None
    input_tokens = _first_count(raw, "prompt_tokens", "input_tokens")
    output_tokens = _first_count(raw, "completion_tokens", "output_tokens")
    total = _count(_field(raw, "total_tokens"))
    if total is None and input_tokens is not None and output_tokens is not None:
        total = input_tokens + output_tokens
    input_details = _field(raw, "prompt_tokens_details") or _field(raw, "input_tokens_details")
    output_details = _field(raw, "completion_tokens_details") or _field(
        raw, "output_tokens_details"
    )
    cache_write = _count(_field(input_details, "cache_write_tokens"))
    if cache_write is None:  # Anthropic-style hosts report it at the top level
        cache_write = _count(_field(raw, "cache_creation_input_tokens"))
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total,
        cache_read_input_tokens=_count(_field(input_details, "cached_tokens")),
        reasoning_output_tokens=_count(_field(output_details, "reasoning_tokens")),
        cache_write_input_tokens=cache_write,
        input_modalities=_modalities(input_details),
        output_modalities=_modalities(output_details),
    )
    if usage.is_empty and total is None:
        return None
    return usage
