"""Every setting's environment variable: a bad value warns once, by name, and the default holds.

A misspelt variable in a deployment must never crash the application or silently
change behaviour: one warning names the variable, the value and what is accepted.
"""

from __future__ import annotations

import logging
from typing import Any

import openai
import pytest

from opentelemetry.instrumentation.openai_usage import config
from opentelemetry.instrumentation.openai_usage.config import Settings, load_settings
from opentelemetry.instrumentation.openai_usage.usage import Usage

from .conftest import MESSAGES, Telemetry

# variable, bad value, a word of what the warning must name as accepted, the setting
# it feeds and that setting's value when the variable is absent.
BAD_VALUES = [
    (config.ENV_INJECT_STREAM_USAGE, "maybe", "true", "inject_stream_usage"),
    (config.ENV_CHUNK_TIMING, "sometimes", "per_stream", "chunk_timing"),
    (config.ENV_USAGE_ESTIMATE, "guess", "fallback", "usage_estimate"),
    (config.ENV_ENCODINGS, "my-deployment=gpt2_base", "o200k_base", "encodings"),
    (config.ENV_CAPTURE_MESSAGE_CONTENT, "some", "SPAN_ONLY", "capture_message_content"),
    (config.ENV_MAX_CONTENT_LENGTH, "-3", "whole number", "max_content_length"),
    # `"²".isdigit()` holds, but int() rejects it: it once made instrument() raise.
    (config.ENV_MAX_CONTENT_LENGTH, "²", "whole number", "max_content_length"),
    (config.ENV_DEFAULT_PRICES, "perhaps", "false", "prices"),
]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(("variable", "value", "accepted", "setting"), BAD_VALUES)
def test_a_bad_environment_value_warns_once_naming_it_and_keeps_the_default(
    caplog: pytest.LogCaptureFixture, variable: str, value: str, accepted: str, setting: str
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = load_settings({}, {variable: value})
    (warning,) = _warnings(caplog)
    message = warning.getMessage()
    assert variable in message
    assert value in message
    assert accepted in message
    default = getattr(Settings(), setting)
    if setting == "prices":  # a table object: the shipped one, still there
        assert settings.prices is not None and default is not None
        assert settings.prices.cost(("gpt-4o-mini", None), _usage(), None) == default.cost(
            ("gpt-4o-mini", None), _usage(), None
        )
    else:
        assert getattr(settings, setting) == default


def _usage() -> Usage:
    return Usage(input_tokens=1000, output_tokens=1000, total_tokens=2000)


def test_all_bad_values_at_once_still_trace_calls_with_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
) -> None:
    for variable, value, _, _ in BAD_VALUES:
        monkeypatch.setenv(variable, value)
    with caplog.at_level(logging.WARNING):
        instrument()
        chunks = list(
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        )
    assert chunks  # the app's call went on
    named = {v for v, *_ in BAD_VALUES if any(v in r.getMessage() for r in _warnings(caplog))}
    assert named == {v for v, *_ in BAD_VALUES}  # each variable named, none forgotten
    attributes = telemetry.span().attributes or {}
    assert attributes["openai_usage.stream.include_usage_injected"] is True  # the default
    assert attributes["openai_usage.usage.source"] == "response"
    assert "gen_ai.input.messages" not in attributes  # content stays off
    assert "openai_usage.cost.usd" in attributes  # the shipped prices


def test_arguments_take_the_values_the_variables_take() -> None:
    assert load_settings({"capture_message_content": "true"}, {}).capture_message_content == (
        config.CONTENT_SPAN_AND_EVENT
    )
    assert load_settings({"capture_message_content": " False "}, {}).capture_message_content == (
        config.CONTENT_NONE
    )
    assert load_settings({"chunk_timing": " off "}, {}).chunk_timing == "off"
    assert load_settings({"max_content_length": "¹²"}, {}).max_content_length == (
        config.DEFAULT_MAX_CONTENT_LENGTH
    )


def test_an_empty_encodings_argument_wins_over_the_variable() -> None:
    env = {config.ENV_ENCODINGS: "my-deployment=cl100k_base"}
    assert load_settings({}, env).encodings == (("my-deployment", "cl100k_base"),)
    assert load_settings({"encodings": {}}, env).encodings == ()


def test_a_bad_encodings_argument_warns_naming_the_variable_s_pairs_it_keeps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {config.ENV_ENCODINGS: "my-deployment=cl100k_base"}
    with caplog.at_level(logging.WARNING):
        settings = load_settings({"encodings": {"other": "gpt2_base"}}, env)
    assert settings.encodings == (("my-deployment", "cl100k_base"),)
    (warning,) = _warnings(caplog)
    assert warning.getMessage().endswith("using the default {'my-deployment': 'cl100k_base'}.")


def test_settings_that_cannot_be_read_leave_instrument_working_with_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Settings:
        raise RuntimeError("a bug of ours in reading settings")

    monkeypatch.setattr("opentelemetry.instrumentation.openai_usage.load_settings", broken)
    with caplog.at_level(logging.WARNING):
        instrument()
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert (telemetry.span().attributes or {})["openai_usage.usage.source"] == "response"
    assert any("reading the settings" in r.getMessage() for r in _warnings(caplog))


class BrokenMeterProvider:
    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("meter backend unavailable")


def test_a_provider_that_is_not_one_or_is_broken_warns_and_instrument_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    telemetry: Telemetry,
    client: openai.OpenAI,
) -> None:
    from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor, errors

    monkeypatch.setattr(errors, "_logged", set())
    instrumentor = OpenAIUsageInstrumentor()
    with caplog.at_level(logging.WARNING):
        # A broken meter provider: traces go on, to the provider given.
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=BrokenMeterProvider()
        )
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert len(telemetry.spans()) == 1
        finally:
            instrumentor.uninstrument()
        # Not a provider at all: the global one is used (the API's no-op one here).
        instrumentor.instrument(tracer_provider="oops", meter_provider=telemetry.meter_provider)
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert telemetry.points("gen_ai.client.token.usage")  # metrics still recorded
        finally:
            instrumentor.uninstrument()
    messages = [r.getMessage() for r in _warnings(caplog)]
    assert any("meter backend unavailable" in m for m in messages)
    assert any("tracer_provider" in m and "global" in m for m in messages)
