"""Settings: constructor arguments first, then environment variables, then defaults.

A bad environment value must never take an application down: it is reported in
one warning naming the variable and the accepted values, and the default is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ENV_PREFIX = "OTEL_INSTRUMENTATION_OPENAI_USAGE_"
ENV_INJECT_STREAM_USAGE = ENV_PREFIX + "INJECT_STREAM_USAGE"
ENV_CHUNK_TIMING = ENV_PREFIX + "CHUNK_TIMING"
ENV_USAGE_ESTIMATE = ENV_PREFIX + "USAGE_ESTIMATE"
ENV_ENCODINGS = ENV_PREFIX + "ENCODINGS"

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
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _warn_bad(name, raw, _TRUE + _FALSE, default)
    return default


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
    if isinstance(given, str) and given.lower() in choices:
        return given.lower()
    if given is not None:
        _warn_bad(key, repr(given), choices, value)
    return value


def _encoding_pairs(raw: Any, source: str) -> tuple[tuple[str, str], ...] | None:
    """`{"my-deployment": "o200k_base"}` or `"my-deployment=o200k_base,other=cl100k_base"`."""
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
            _warn_bad(source, repr(raw) if not isinstance(raw, str) else raw, accepted, {})
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

    inject = _env_bool(env, ENV_INJECT_STREAM_USAGE, defaults.inject_stream_usage)
    given = overrides.get("inject_stream_usage")
    if isinstance(given, bool):
        inject = given
    elif given is not None:
        _warn_bad("inject_stream_usage", repr(given), ("True", "False"), inject)

    timing = _choice(overrides, "chunk_timing", env, ENV_CHUNK_TIMING, _CHUNK_TIMINGS)
    estimate = _choice(overrides, "usage_estimate", env, ENV_USAGE_ESTIMATE, _ESTIMATES)

    encodings = defaults.encodings
    raw_env = env.get(ENV_ENCODINGS)
    if raw_env is not None and raw_env.strip():
        encodings = _encoding_pairs(raw_env, ENV_ENCODINGS) or encodings
    given = overrides.get("encodings")
    if given is not None:
        encodings = _encoding_pairs(given, "encodings") or encodings

    return Settings(
        inject_stream_usage=inject,
        chunk_timing=timing,
        usage_estimate=estimate,
        encodings=encodings,
    )
