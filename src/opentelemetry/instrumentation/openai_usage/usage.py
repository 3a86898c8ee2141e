"""One Usage value from every shape of usage the OpenAI API reports.

Chat and legacy completions say `prompt_tokens`/`completion_tokens`, the
Responses API says `input_tokens`/`output_tokens`, embeddings only report
prompt tokens; SDK objects, plain dicts and half-filled objects from
OpenAI-compatible servers all occur. Anything that is not a non-negative
integer (up to `MAX_COUNT`) is treated as absent, so a broken server never yields a
wrong count.
"""

from __future__ import annotations

from collections.abc import Callable
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


Fields = Callable[[str], Any]  # name -> the value, None when absent


def _no_fields(name: str) -> Any:
    return None


def _fields(obj: Any) -> Fields:
    """How to read the fields of a usage object: a dict, an SDK object, or anything else.

    SDK objects are pydantic models, and asking one for a field it lacks (each shape
    lacks most of the names we try) raises and catches inside pydantic, several µs a
    time. A pydantic v2 model's data are its fields and its extras, so those are read
    as the dicts they are; other objects go through `getattr`.
    """
    if obj is None:
        return _no_fields
    if isinstance(obj, dict):
        return obj.get
    fields = getattr(obj, "__dict__", None)
    extra = getattr(obj, "__pydantic_extra__", None)
    if isinstance(fields, dict) and isinstance(extra, dict):
        return {**extra, **fields}.get if extra else fields.get
    return lambda name: getattr(obj, name, None)


# More tokens than any call can bill (2**53 - 1, past which JSON numbers lose precision).
# A larger count is a broken server's, and would break exports: OTLP integers are 64-bit,
# and one counter point beyond them makes every later export of the metrics fail.
MAX_COUNT = 2**53 - 1


def _count(value: Any) -> int | None:
    if type(value) is int:  # nearly always: the SDK's own ints
        return value if 0 <= value <= MAX_COUNT else None
    if value is None:  # the next most common: a field not reported
        return None
    # bool is an int subclass; True tokens is nonsense, not 1.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


_MODALITIES = ("text", "audio", "image")  # each reported as `{modality}_tokens`


def _modalities(details: Fields) -> tuple[tuple[str, int], ...]:
    """`{"audio_tokens": 12, "text_tokens": 30}` -> (("text", 30), ("audio", 12))."""
    values = (details("text_tokens"), details("audio_tokens"), details("image_tokens"))
    if not any(values):  # nearly every call: all absent or 0, no count to check
        return ()
    found: tuple[tuple[str, int], ...] = ()
    for modality, value in zip(_MODALITIES, values, strict=True):
        if value:
            count = _count(value)
            if count:
                found += ((modality, count),)
    return found


def usage_from(raw: Any) -> Usage | None:
    """Read a usage object of any known shape; None when it holds no counts."""
    if raw is None:
        return None
    field = _fields(raw)
    # The three counts nearly every usage has are checked here as `_count` would (a plain
    # int in range is kept as it is); anything else is left to `_count`.
    input_tokens = field("prompt_tokens")
    if type(input_tokens) is not int or not 0 <= input_tokens <= MAX_COUNT:
        input_tokens = _count(input_tokens)
        if input_tokens is None:
            input_tokens = _count(field("input_tokens"))
    output_tokens = field("completion_tokens")
    if type(output_tokens) is not int or not 0 <= output_tokens <= MAX_COUNT:
        output_tokens = _count(output_tokens)
        if output_tokens is None:
            output_tokens = _count(field("output_tokens"))
    total = field("total_tokens")
    if type(total) is not int or not 0 <= total <= MAX_COUNT:
        total = _count(total)
    if total is None and input_tokens is not None and output_tokens is not None:
        total = input_tokens + output_tokens
    input_details = _fields(field("prompt_tokens_details") or field("input_tokens_details"))
    output_details = _fields(field("completion_tokens_details") or field("output_tokens_details"))
    cache_write = _count(input_details("cache_write_tokens"))
    if cache_write is None:  # Anthropic-style hosts report it at the top level
        cache_write = _count(field("cache_creation_input_tokens"))
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total,
        cache_read_input_tokens=_count(input_details("cached_tokens")),
        reasoning_output_tokens=_count(output_details("reasoning_tokens")),
        cache_write_input_tokens=cache_write,
        input_modalities=_modalities(input_details),
        output_modalities=_modalities(output_details),
    )
    if input_tokens is None and output_tokens is None and total is None:  # `is_empty`, no total
        return None
    return usage
