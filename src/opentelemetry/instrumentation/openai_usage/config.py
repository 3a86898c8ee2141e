"""Settings: constructor arguments first, then environment variables, then defaults.

A bad environment value must never take an application down: it is reported in
one warning naming the variable and the accepted values, and the default is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from .pricing import DEFAULT_PRICES, Price, PriceTable, prices_from

logger = logging.getLogger(__name__)

ENV_PREFIX = "OTEL_INSTRUMENTATION_OPENAI_USAGE_"
ENV_INJECT_STREAM_USAGE = ENV_PREFIX + "INJECT_STREAM_USAGE"
ENV_CHUNK_TIMING = ENV_PREFIX + "CHUNK_TIMING"
ENV_USAGE_ESTIMATE = ENV_PREFIX + "USAGE_ESTIMATE"
ENV_ENCODINGS = ENV_PREFIX + "ENCODINGS"
ENV_MAX_CONTENT_LENGTH = ENV_PREFIX + "MAX_CONTENT_LENGTH"
ENV_PRICES = ENV_PREFIX + "PRICES"
ENV_DEFAULT_PRICES = ENV_PREFIX + "DEFAULT_PRICES"
# Shared with the other GenAI instrumentations, as the conventions name it.
ENV_CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

CONTENT_NONE = "no_content"
CONTENT_SPAN = "span_only"
CONTENT_EVENT = "event_only"
CONTENT_SPAN_AND_EVENT = "span_and_event"
_CONTENT_MODES = (CONTENT_NONE, CONTENT_SPAN, CONTENT_EVENT, CONTENT_SPAN_AND_EVENT)
DEFAULT_MAX_CONTENT_LENGTH = 16384

CHUNK_TIMING_PER_STREAM = "per_stream"
CHUNK_TIMING_PER_CHUNK = "per_chunk"
CHUNK_TIMING_OFF = "off"
_CHUNK_TIMINGS = (CHUNK_TIMING_PER_STREAM, CHUNK_TIMING_PER_CHUNK, CHUNK_TIMING_OFF)

ESTIMATE_OFF = "off"
ESTIMATE_FALLBACK = "fallback"
ESTIMATE_COMPARE = "compare"
_ESTIMATES = (ESTIMATE_FALLBACK, ESTIMATE_COMPARE, ESTIMATE_OFF)
# The tiktoken encodings an override may name.
ENCODING_NAMES = ("o200k_base", "cl100k_base", "p50k_base", "r50k_base")

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
# What a boolean argument takes: a bool, or the words of its variable.
_BOOL_ARGUMENTS = ("True", "False", *_TRUE, *_FALSE)


@dataclass(frozen=True)
class Settings:
    """Everything a user can turn; one frozen value shared by all wrappers."""

    # Add `stream_options.include_usage` to chat streams that lack it, and hide
    # the extra usage chunk from the caller, so streams get billed usage.
    inject_stream_usage: bool = True
    # `gen_ai.client.operation.time_per_output_chunk`: one point per stream
    # (the stream's mean gap between chunks), one point per chunk as the
    # conventions describe it (costs a histogram record per chunk), or none.
    chunk_timing: str = CHUNK_TIMING_PER_STREAM
    # Token counts when the server reports none: estimate them with tiktoken
    # ("fallback"), always estimate and put both on the span ("compare"), or never.
    usage_estimate: str = ESTIMATE_FALLBACK
    # Model or Azure deployment name -> tiktoken encoding, for names we cannot place.
    encodings: tuple[tuple[str, str], ...] = ()
    # Message content (sensitive): nowhere, on the span, in a log event, or both.
    capture_message_content: str = CONTENT_NONE
    # Characters per captured content value (its JSON); longer texts are cut.
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH
    # Prices for the per-call cost; None: no cost is recorded.
    prices: PriceTable | None = field(
        default_factory=lambda: PriceTable({}, defaults=DEFAULT_PRICES)
    )

    @property
    def content_on_span(self) -> bool:
        return self.capture_message_content in (CONTENT_SPAN, CONTENT_SPAN_AND_EVENT)

    @property
    def content_in_event(self) -> bool:
        return self.capture_message_content in (CONTENT_EVENT, CONTENT_SPAN_AND_EVENT)

    @property
    def captures_content(self) -> bool:
        return self.capture_message_content != CONTENT_NONE


def _warn_bad(name: str, raw: str, accepted: tuple[str, ...], default: object) -> None:
    logger.warning(
        "Ignoring %s=%r: accepted values are %s; using the default %r.",
        name,
        raw,
        ", ".join(accepted),
        default,
    )


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = _bool_argument(raw)
    if value is None:
        _warn_bad(name, raw, _TRUE + _FALSE, default)
        return default
    return value


def _bool_argument(given: Any) -> bool | None:
    """A boolean constructor argument: True/False, or what its variable takes (`"false"`,
    `"off"`, `0`...), so that `inject_stream_usage=os.environ.get(...)` means what
    the variable would; None for anything else (a bad argument)."""
    if isinstance(given, bool):
        return given
    if isinstance(given, (str, int)):
        value = str(given).strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    return None


def _env_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in choices:
        return value
    _warn_bad(name, raw, choices, default)
    return default


def _choice(
    overrides: Mapping[str, Any],
    key: str,
    env: Mapping[str, str],
    name: str,
    choices: tuple[str, ...],
) -> str:
    """One of `choices`: the constructor argument, else the variable, else the default."""
    value = _env_choice(env, name, choices, getattr(Settings(), key))
    given = overrides.get(key)
    if isinstance(given, str) and given.strip().lower() in choices:
        return given.strip().lower()
    if given is not None:
        _warn_bad(key, repr(given), choices, value)
    return value


def _boolean(
    overrides: Mapping[str, Any], key: str, env: Mapping[str, str], name: str, default: bool
) -> bool:
    """A yes/no setting: the constructor argument, else the variable, else `default`."""
    value = _env_bool(env, name, default)
    given = overrides.get(key)
    parsed = _bool_argument(given)
    if parsed is not None:
        return parsed
    if given is not None:
        _warn_bad(key, repr(given), _BOOL_ARGUMENTS, value)
    return value


def _encoding_pairs(
    raw: Any, source: str, fallback: tuple[tuple[str, str], ...] = ()
) -> tuple[tuple[str, str], ...] | None:
    """`{"my-deployment": "o200k_base"}` or `"my-deployment=o200k_base,other=cl100k_base"`.

    None when a pair is bad; the warning names `fallback`, what is used instead (a bad
    argument leaves the variable's pairs in force, and the warning must say so)."""
    if isinstance(raw, str):
        items = [item.partition("=")[::2] for item in raw.split(",") if item.strip()]
    elif isinstance(raw, Mapping):
        items = list(raw.items())
    else:
        items = [("", "")]
    pairs = []
    for name, encoding in items:
        name = name.strip() if isinstance(name, str) else ""
        encoding = encoding.strip().lower() if isinstance(encoding, str) else ""
        if not name or encoding not in ENCODING_NAMES:
            accepted = tuple(f"<model or deployment>={e}" for e in ENCODING_NAMES)
            shown = repr(raw) if not isinstance(raw, str) else raw
            _warn_bad(source, shown, accepted, dict(fallback))
            return None
        pairs.append((name, encoding))
    return tuple(pairs)


def load_settings(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Merge constructor arguments over environment variables over defaults.

    Constructor arguments win because they are the more specific, deliberate choice.
    Invalid arguments are treated like invalid environment values: warned about, ignored.
    """
    env = os.environ if env is None else env
    defaults = Settings()
    overrides = dict(overrides or {})

    inject = _boolean(
        overrides,
        "inject_stream_usage",
        env,
        ENV_INJECT_STREAM_USAGE,
        defaults.inject_stream_usage,
    )
    timing = _choice(overrides, "chunk_timing", env, ENV_CHUNK_TIMING, _CHUNK_TIMINGS)
    estimate = _choice(overrides, "usage_estimate", env, ENV_USAGE_ESTIMATE, _ESTIMATES)

    encodings = defaults.encodings
    raw_env = env.get(ENV_ENCODINGS)
    if raw_env is not None and raw_env.strip():
        encodings = _encoding_pairs(raw_env, ENV_ENCODINGS) or encodings
    given = overrides.get("encodings")
    if given is not None:  # an argument wins, even an empty one (no overrides at all)
        pairs = _encoding_pairs(given, "encodings", encodings)
        encodings = pairs if pairs is not None else encodings

    return Settings(
        inject_stream_usage=inject,
        chunk_timing=timing,
        usage_estimate=estimate,
        encodings=encodings,
        capture_message_content=_content_mode(overrides, env),
        max_content_length=_max_content_length(overrides, env),
        prices=_prices(overrides, env),
    )


# The legacy boolean form of the shared variable: true meant "record content".
_CONTENT_ALIASES = {"true": CONTENT_SPAN_AND_EVENT, "false": CONTENT_NONE}


def _content_mode(overrides: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """`NO_CONTENT` | `SPAN_ONLY` | `EVENT_ONLY` | `SPAN_AND_EVENT`, or true/false."""
    accepted = tuple(m.upper() for m in _CONTENT_MODES) + tuple(_CONTENT_ALIASES)
    mode = CONTENT_NONE
    raw = env.get(ENV_CAPTURE_MESSAGE_CONTENT)
    if raw is not None and raw.strip():
        value = raw.strip().lower()
        value = _CONTENT_ALIASES.get(value, value)
        if value in _CONTENT_MODES:
            mode = value
        else:
            _warn_bad(ENV_CAPTURE_MESSAGE_CONTENT, raw, accepted, CONTENT_NONE.upper())
    given = overrides.get("capture_message_content")
    if isinstance(given, bool):
        return CONTENT_SPAN_AND_EVENT if given else CONTENT_NONE
    if isinstance(given, str):
        value = given.strip().lower()
        value = _CONTENT_ALIASES.get(value, value)  # "true" / "false", as the variable takes
        if value in _CONTENT_MODES:
            return value
    if given is not None:
        _warn_bad("capture_message_content", repr(given), accepted, mode.upper())
    return mode


def _positive_int(raw: Any) -> int | None:
    if isinstance(raw, str):
        raw = raw.strip()
        # ASCII digits only: `str.isdigit()` also holds for "²", which `int()` rejects.
        raw = int(raw) if raw.isascii() and raw.isdigit() else None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    return None


def _max_content_length(overrides: Mapping[str, Any], env: Mapping[str, str]) -> int:
    length = DEFAULT_MAX_CONTENT_LENGTH
    raw = env.get(ENV_MAX_CONTENT_LENGTH)
    if raw is not None and raw.strip():
        parsed = _positive_int(raw)
        if parsed is None:
            _warn_bad(ENV_MAX_CONTENT_LENGTH, raw, ("a whole number > 0",), length)
        else:
            length = parsed
    given = overrides.get("max_content_length")
    if given is not None:
        parsed = _positive_int(given)
        if parsed is None:
            _warn_bad("max_content_length", repr(given), ("a whole number > 0",), length)
        else:
            length = parsed
    return length


_PRICES_ACCEPTED = ("a mapping", "a JSON or TOML file path", "a callable", "False")


def _is_prices_argument(given: Any) -> bool:
    """Whether `prices=` is of a kind it takes (absent, False, a table, a file, a function);
    a bad entry inside a table or file is the table's to warn about, entry by entry."""
    return (
        given is None
        or given is False
        or callable(given)
        or isinstance(given, (str, PurePath, Mapping))
    )


def _is_off(value: Any) -> bool:
    """`off`, in any case and spacing: what turns cost off, as variable or argument."""
    return isinstance(value, str) and value.strip().lower() == "off"


def _prices(overrides: Mapping[str, Any], env: Mapping[str, str]) -> PriceTable | None:
    """The shipped table, extended by a file or mapping, or replaced; or off.

    `prices` (or the variable: a file path, or `off`) are the user's own, consulted
    before the shipped table for either of a call's model names (an Azure deployment's
    entry wins over the shipped price of the model it serves); a callable is asked
    first, per call. `default_prices=False`
    (or the variable `false`) drops the shipped table, so only the user's prices count.
    """
    use_defaults = _boolean(overrides, "default_prices", env, ENV_DEFAULT_PRICES, True)
    defaults = DEFAULT_PRICES if use_defaults else {}
    table: dict[str, Price] = {}
    function = None
    raw_env = env.get(ENV_PRICES)
    given = overrides.get("prices")
    if not _is_prices_argument(given):
        # Like every other bad argument: warned about, then the variable (or the
        # default) holds. Read as a table, it would also silence the variable: a
        # `PRICES=off` deployment would be priced again by a stray `prices=True`.
        _warn_bad(
            "prices", repr(given), _PRICES_ACCEPTED, (raw_env or "").strip() or "the shipped table"
        )
        given = None
    # `off` turns cost off as an argument too (the value the variable takes), not a
    # file named "off" that is not there.
    if given is False or _is_off(given) or (given is None and _is_off(raw_env)):
        return None
    if given is None and raw_env and raw_env.strip():
        table.update(prices_from(raw_env.strip(), ENV_PRICES))
    elif callable(given):
        function = given
    elif given is not None:
        table.update(prices_from(given, "prices"))
    return PriceTable(table, function, defaults)
