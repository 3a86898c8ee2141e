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

CHUNK_TIMING_PER_STREAM = "per_stream"
CHUNK_TIMING_PER_CHUNK = "per_chunk"
CHUNK_TIMING_OFF = "off"
_CHUNK_TIMINGS = (CHUNK_TIMING_PER_STREAM, CHUNK_TIMING_PER_CHUNK, CHUNK_TIMING_OFF)

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

    timing = _env_choice(env, ENV_CHUNK_TIMING, _CHUNK_TIMINGS, defaults.chunk_timing)
    given = overrides.get("chunk_timing")
    if isinstance(given, str) and given.lower() in _CHUNK_TIMINGS:
        timing = given.lower()
    elif given is not None:
        _warn_bad("chunk_timing", repr(given), _CHUNK_TIMINGS, timing)

    return Settings(inject_stream_usage=inject, chunk_timing=timing)
