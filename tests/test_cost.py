"""Cost in US dollars per call, from billed token kinds and a price table.

Through the real SDK against the local server (its `x-mock-usage` header pins the
billed counts; it answers with dated model names, as OpenAI does).
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer
from opentelemetry.instrumentation.openai_usage.pricing import DEFAULT_PRICES, Price

from .conftest import (
    HTTP,
    MESSAGES,
    Telemetry,
    make_client,
    needs_responses,
    served_by,
    sse_reply,
)

COST = "openai_usage.cost.usd"
COST_METRIC = "openai_usage.client.cost"
SOURCE = "openai_usage.usage.source"
KINDS = ("openai", "async")
USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "cached_tokens": 400}
USAGE_HEADER = {"x-mock-usage": json.dumps(USAGE)}
# gpt-4o-mini: 600 input at 0.15, 400 cached at 0.075, 500 output at 0.60 (per 1M).
GPT_4O_MINI_COST = (600 * 0.15 + 400 * 0.075 + 500 * 0.60) / 1e6


def cost_of(telemetry: Telemetry) -> Any:
    return (telemetry.span().attributes or {}).get(COST)


def cost_of_all(telemetry: Telemetry) -> list[Any]:
    return [(span.attributes or {}).get(COST) for span in telemetry.spans()]


def cost_of_span(span: Any) -> Any:
    return (span.attributes or {}).get(COST)


def metric_total(telemetry: Telemetry) -> float:
    return sum(point.value for point in telemetry.points(COST_METRIC))


async def chat(server: LocalOpenAIServer, kind: str, stream: bool, **kwargs: Any) -> None:
    client = make_client(server, kind)
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream, **kwargs}
    result = client.chat.completions.create(**request)
    if kind == "async":
        result = await result
        if stream:
            [c async for c in result]
    elif stream:
        list(result)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_cost_of_a_known_model_from_the_shipped_table(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str, stream: bool
) -> None:
    await chat(server, kind, stream, extra_headers=USAGE_HEADER)
    assert cost_of(telemetry) == pytest.approx(GPT_4O_MINI_COST)
    assert metric_total(telemetry) == pytest.approx(GPT_4O_MINI_COST)
    (point,) = telemetry.points(COST_METRIC)
    assert point.attributes[SOURCE] == "response"
    assert point.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"


@pytest.mark.parametrize(
    ("served", "price"),
    [
        ("gpt-4o-2024-08-06", (2.5, 1.25, 10.0)),
        ("gpt-4o-2024-11-20", (2.5, 1.25, 10.0)),
        ("gpt-4o-2024-05-13", (5.0, 5.0, 15.0)),  # its own price, no cached discount
    ],
)
def test_a_dated_snapshot_is_priced_as_billed(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    served: str,
    price: tuple[float, float, float],
) -> None:
    client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_headers={**USAGE_HEADER, "x-mock-response-model": served},
    )
    input_price, cached_price, output_price = price
    expected = (600 * input_price + 400 * cached_price + 500 * output_price) / 1e6
    assert cost_of(telemetry) == pytest.approx(expected)


@pytest.mark.parametrize("given", ["table", "function"])
def test_an_azure_deployment_s_own_price_wins_over_the_shipped_price_of_what_it_serves(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, given: str
) -> None:
    own = {"input": 2.75, "output": 11.0}  # not gpt-4o-mini's list price
    if given == "table":
        instrument(prices={"my-azure-deployment": own})
    else:
        instrument(prices=lambda model, tier: own if model == "my-azure-deployment" else None)
    client = make_client(server, "azure", azure_deployment="my-azure-deployment")
    response = client.chat.completions.create(
        model="my-azure-deployment", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert response.model == "gpt-4o-mini-2024-07-18"  # in the shipped table
    assert cost_of(telemetry) == pytest.approx((1000 * 2.75 + 500 * 11.0) / 1e6)


def test_reasoning_tokens_are_priced_at_their_own_price_when_given(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(prices={"o3-mini": {"input": 1.0, "output": 4.0, "reasoning_output": 2.0}})
    usage = {"prompt_tokens": 100, "completion_tokens": 300, "reasoning_tokens": 200}
    client.chat.completions.create(
        model="o3-mini", messages=MESSAGES, extra_headers={"x-mock-usage": json.dumps(usage)}
    )
    assert cost_of(telemetry) == pytest.approx((100 * 1.0 + 100 * 4.0 + 200 * 2.0) / 1e6)


AUDIO_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "audio_input_tokens": 400,
    "audio_output_tokens": 300,
}


def test_audio_tokens_are_priced_only_at_an_audio_price(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    text_only = {"input": 2.5, "output": 10.0}
    with_audio = {**text_only, "audio_input": 40.0, "audio_output": 80.0}
    instrument(prices={"gpt-4o-audio-preview": text_only, "my-audio-model": with_audio})
    for model in ("gpt-4o-audio-preview", "my-audio-model"):
        client.chat.completions.create(
            model=model, messages=MESSAGES, extra_headers={"x-mock-usage": json.dumps(AUDIO_USAGE)}
        )
    costs = {
        (s.attributes or {}).get("gen_ai.request.model"): cost_of_span(s) for s in telemetry.spans()
    }
    # Audio at the text price would be a cost 10 times too low that looks complete.
    assert costs["gpt-4o-audio-preview"] is None
    expected = (600 * 2.5 + 400 * 40.0 + 200 * 10.0 + 300 * 80.0) / 1e6
    assert costs["my-audio-model"] == pytest.approx(expected)
    assert metric_total(telemetry) == pytest.approx(expected)


def test_a_model_with_no_known_price_gets_no_cost_not_zero(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    client.chat.completions.create(model="my-finetune", messages=MESSAGES)
    assert COST not in (telemetry.span().attributes or {})
    assert telemetry.points(COST_METRIC) == []


def test_a_price_without_output_gives_no_cost_to_a_call_with_output_tokens(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An entry fit for an embedding model, given to a chat model by mistake: pricing its
    # 500 output tokens at 0 would record a cost that looks complete and is a third of it.
    instrument(prices={"my-model": {"input": 1.0}, "my-embedder": {"input": 0.5}})
    for _ in range(2):
        client.chat.completions.create(
            model="my-model", messages=MESSAGES, extra_headers=USAGE_HEADER
        )
    assert cost_of_all(telemetry) == [None, None]
    assert telemetry.points(COST_METRIC) == []
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith(".pricing")]
    assert len(warnings) == 1 and "'my-model'" in warnings[0] and "output" in warnings[0]
    telemetry.exporter.clear()
    client.embeddings.create(model="my-embedder", input="hello")  # no output tokens billed
    assert isinstance(cost_of(telemetry), float) and cost_of(telemetry) > 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "headers",
    [
        {"x-mock-scenario": "usage_nulls"},  # "completion_tokens": null
        {"x-mock-scenario": "usage_partial", "x-mock-usage": '{"prompt_tokens": 13}'},
        {"x-mock-scenario": "usage_partial", "x-mock-usage": '{"completion_tokens": 4}'},
    ],
    ids=["output-null", "output-missing", "input-missing"],
)
def test_usage_missing_a_priced_count_gets_no_cost_not_a_partial_one(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    headers: dict[str, str],
    stream: bool,
) -> None:
    result = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=stream, extra_headers=headers
    )
    if stream:
        list(result)
    attributes = telemetry.span().attributes or {}
    # The count that was reported is recorded as billed; no cost is made from half of it.
    assert attributes[SOURCE] == "response"
    assert COST not in attributes
    assert telemetry.points(COST_METRIC) == []


def test_a_price_file_in_json_extends_the_shipped_table(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-finetune": {"input": 3, "output": 12}}))
    instrument(prices=str(path))
    client.chat.completions.create(
        model="my-finetune", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) == pytest.approx((1000 * 3 + 500 * 12) / 1e6)
    telemetry.exporter.clear()
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) == pytest.approx(GPT_4O_MINI_COST)  # the shipped entries stay


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TOML needs Python 3.11's tomllib")
def test_a_price_file_in_toml_from_the_environment(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('["gpt-4o-mini"]\ninput = 1.0\ncached_input = 0.5\noutput = 2.0\n')
    monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_PRICES", str(path))
    instrument()
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) == pytest.approx((600 * 1.0 + 400 * 0.5 + 500 * 2.0) / 1e6)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="Python 3.11+ reads TOML")
def test_a_toml_price_file_on_python_3_10_says_what_it_needs(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('["my-model"]\ninput = 1.0\noutput = 2.0\n')
    with caplog.at_level(logging.WARNING):
        instrument(prices=str(path))
    client.chat.completions.create(model="my-model", messages=MESSAGES, extra_headers=USAGE_HEADER)
    assert cost_of(telemetry) is None
    assert [r.getMessage() for r in caplog.records if "price file" in r.getMessage()] == [
        f"Could not read the price file {path}: TOML needs Python 3.11+ (tomllib); write it as "
        "JSON. Its prices are not used."
    ]


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_a_price_file_saved_with_a_byte_order_mark_is_read(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, tmp_path: Path, suffix: str
) -> None:
    if suffix == ".toml" and sys.version_info < (3, 11):
        pytest.skip("tomllib arrived in Python 3.11")
    path = tmp_path / f"prices{suffix}"
    text = (
        '{"my-model": {"input": 1.0, "output": 2.0}}'
        if suffix == ".json"
        else '["my-model"]\ninput = 1.0\noutput = 2.0\n'
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Windows editors save UTF-8
    instrument(prices=str(path))
    client.chat.completions.create(model="my-model", messages=MESSAGES, extra_headers=USAGE_HEADER)
    assert cost_of(telemetry) == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


def test_default_prices_off_replaces_the_table(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(default_prices=False, prices={"my-finetune": {"input": 1, "output": 1}})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert COST not in (telemetry.span().attributes or {})


@pytest.mark.parametrize("given", ["false", "off", 0])
def test_default_prices_takes_the_words_its_variable_takes(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
    given: Any,
) -> None:
    instrument(default_prices=given)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) is None  # no shipped table: gpt-4o-mini has no price
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_price_function_is_asked_first_and_may_defer_to_the_table(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    asked: list[tuple[str, str | None]] = []

    def price(model: str, tier: str | None) -> Price | None:
        asked.append((model, tier))
        return Price(input=10, output=10) if model.startswith("my-") else None

    instrument(prices=price)
    client.chat.completions.create(model="my-model", messages=MESSAGES, extra_headers=USAGE_HEADER)
    assert cost_of(telemetry) == pytest.approx(1500 * 10 / 1e6)
    assert asked[0] == ("my-model", "default")
    telemetry.exporter.clear()
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) == pytest.approx(GPT_4O_MINI_COST)


def test_a_failing_price_function_costs_nothing_but_the_cost(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(model: str, tier: str | None) -> Price:
        raise RuntimeError("price service down")

    instrument(prices=broken)
    response = client.chat.completions.create(model="my-model", messages=MESSAGES)
    assert response.choices[0].message.content
    assert COST not in (telemetry.span().attributes or {})
    assert "price service down" in caplog.text


def test_a_price_under_a_key_that_is_no_model_name_is_ignored_with_a_warning(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = {"input": 1.0, "output": 1.0}
    instrument(prices={("gpt-4o-mini",): entry, "": entry, None: entry, "my-model": entry})
    client.chat.completions.create(model="my-model", messages=MESSAGES, extra_headers=USAGE_HEADER)
    assert cost_of(telemetry) == pytest.approx(1500 / 1e6)  # the good entry is kept
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key in ("('gpt-4o-mini',)", "''", "None"):
        assert any(f"{key} is not a model name" in m for m in messages), messages


@pytest.mark.parametrize("returns", ["raises", "garbage", "a bad Price"])
def test_a_broken_price_function_warns_once_not_on_every_call(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
    returns: str,
) -> None:
    def broken(model: str, tier: str | None) -> Any:
        if returns == "raises":
            raise RuntimeError("price service down")
        return 42 if returns == "garbage" else Price(input=-1.0)

    instrument(prices=broken)
    for _ in range(3):
        client.chat.completions.create(model="my-model", messages=MESSAGES)
    assert all(COST not in (span.attributes or {}) for span in telemetry.spans())
    warnings = [r for r in caplog.records if r.name.endswith(".pricing")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


@pytest.mark.parametrize("how", ["argument", "argument off", "environment"])
def test_cost_can_be_turned_off(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    if how == "argument":
        instrument(prices=False)
    elif how == "argument off":  # the value the variable takes
        instrument(prices=" OFF ")
    else:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_PRICES", "off")
        instrument()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert COST not in (telemetry.span().attributes or {})
    assert telemetry.points(COST_METRIC) == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("bad", [True, 1.5, ["gpt-4o-mini"]], ids=["true", "number", "list"])
def test_a_bad_prices_argument_warns_and_the_variable_still_turns_cost_off(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    bad: Any,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_PRICES", "off")
    with caplog.at_level(logging.WARNING):
        instrument(prices=bad)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert COST not in (telemetry.span().attributes or {})
    assert telemetry.points(COST_METRIC) == []
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"Ignoring prices={repr(bad)!r}: accepted values are a mapping")
    assert warning.endswith("using the default 'off'.")


def test_a_bad_prices_argument_leaves_the_price_file_of_the_variable_in_use(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-4o-mini": {"input": 1.0, "output": 2.0}}')
    monkeypatch.setenv("OTEL_INSTRUMENTATION_OPENAI_USAGE_PRICES", str(path))
    instrument(prices=True)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


def test_a_bad_price_file_warns_and_keeps_the_shipped_prices(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-4o-mini": {"input": "cheap"}}')
    missing = tmp_path / "nowhere.json"
    instrument(prices=str(path))
    instrument(prices=str(missing))
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) == pytest.approx(GPT_4O_MINI_COST)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'input'='cheap'" in m for m in messages)
    assert any("nowhere.json" in m for m in messages)


@pytest.mark.parametrize(
    "bad",
    [
        '{"gpt-4o-mini": {"input": Infinity, "output": 1}}',
        '{"gpt-4o-mini": {"input": NaN, "output": 1}}',
        '{"gpt-4o-mini": {"input": 1e400, "output": 1}}',
        '{"gpt-4o-mini": {"input": 1' + "0" * 400 + ', "output": 1}}',
    ],
    ids=["infinity", "nan", "overflowing float", "overflowing integer"],
)
def test_a_non_finite_price_in_a_file_is_ignored_with_a_warning(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    bad: str,
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(bad)
    instrument(prices=str(path), usage_estimate="off")  # the other settings are kept
    for _ in range(2):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
        )
    assert cost_of_all(telemetry) == [pytest.approx(GPT_4O_MINI_COST)] * 2
    assert metric_total(telemetry) == pytest.approx(2 * GPT_4O_MINI_COST)
    assert "Ignoring a price in prices [gpt-4o-mini]" in caplog.text
    assert "reading the settings" not in caplog.text


@pytest.mark.parametrize(
    "bad",
    [
        Price(input=float("nan"), output=1.0),
        Price(input=-1.0, output=1.0),
        Price(input=1.0, output=1.0, cached_input=float("inf")),
        Price(input="0.15", output=0.6),  # type: ignore[arg-type]
    ],
    ids=["nan", "negative", "infinite cached", "string"],
)
@pytest.mark.parametrize("given", ["function", "mapping"])
def test_a_bad_price_object_gives_no_cost_and_spares_the_rest_of_the_call(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
    bad: Price,
    given: str,
) -> None:
    instrument(prices=(lambda model, tier: bad) if given == "function" else {"my-model": bad})
    for _ in range(2):
        list(
            client.chat.completions.create(
                model="my-model", messages=MESSAGES, stream=True, extra_headers=USAGE_HEADER
            )
        )
    for span in telemetry.spans():
        attributes = span.attributes or {}
        assert COST not in attributes
        assert "gen_ai.response.time_to_first_chunk" in attributes  # recorded after the cost
    assert telemetry.points(COST_METRIC) == []
    assert len(telemetry.points("gen_ai.client.operation.time_to_first_chunk")) == 1
    assert "Ignoring a price in" in caplog.text
    assert "recording the end of a call" not in caplog.text


def test_an_infinite_cost_is_not_recorded(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument(prices={"gpt-4o-mini": {"input": 1e307, "output": 1e307}})
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=USAGE_HEADER
    )
    assert COST not in (telemetry.span().attributes or {})
    assert telemetry.points(COST_METRIC) == []


def test_an_estimated_usage_gives_a_cost_marked_as_an_estimate(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-scenario": "no_usage"},
        )
    )
    span = telemetry.span().attributes or {}
    assert span[SOURCE] == "estimate"
    price = DEFAULT_PRICES["gpt-4o-mini"]
    expected = (
        span["gen_ai.usage.input_tokens"] * price.input
        + span["gen_ai.usage.output_tokens"] * price.output
    ) / 1e6
    assert span[COST] == pytest.approx(expected)
    (point,) = telemetry.points(COST_METRIC)
    assert point.attributes[SOURCE] == "estimate"


def test_another_service_tier_needs_its_own_price(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    instrument()
    flex = {"service_tier": "flex"}  # as a body field: older SDKs lack the parameter
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body=flex)
    assert COST not in (telemetry.span().attributes or {})  # flex is not the table's price
    instrument(prices={"gpt-4o-mini@flex": {"input": 0.075, "output": 0.3}})
    telemetry.exporter.clear()
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body=flex, extra_headers=USAGE_HEADER
    )
    assert cost_of(telemetry) == pytest.approx((1000 * 0.075 + 500 * 0.3) / 1e6)


class Deployment(str, enum.Enum):
    MINE = "My-Model"


def test_a_model_given_as_a_str_enum_member_is_priced_by_the_string_it_holds(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The response names another model, so the price is the requested one's, under a
    # tier's key: built from the enum member itself it read "Deployment.MINE@flex" (its
    # format() since Python 3.11), and the entry the caller wrote was never found.
    instrument(prices={"My-Model@flex": {"input": 1.0, "output": 2.0}})
    client.chat.completions.create(
        model=Deployment.MINE,
        messages=MESSAGES,
        extra_body={"service_tier": "flex"},
        extra_headers={**USAGE_HEADER, "x-mock-response-model": "unpriced-model"},
    )
    assert cost_of(telemetry) == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


def test_a_stream_asking_a_tier_through_extra_body_is_priced_at_that_tier(
    instrument: Any, telemetry: Telemetry
) -> None:
    # A stream whose chunks never say the tier that served it (no usage either: estimated)
    # is priced at the tier it asked for, here as a body field (older SDKs lack it).
    chunk = {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": {"content": "Hello there."}, "finish_reason": "stop"}],
    }  # fmt: skip
    instrument(prices={"gpt-4o-mini@flex": {"input": 0.075, "output": 0.3}})
    client = served_by(lambda request: sse_reply([chunk]))
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"service_tier": "flex"}
    )
    list(stream)
    span = telemetry.span().attributes or {}
    assert span[SOURCE] == "estimate"
    expected = span["gen_ai.usage.input_tokens"] * 0.075 + span["gen_ai.usage.output_tokens"] * 0.3
    assert cost_of(telemetry) == pytest.approx(expected / 1e6)


def test_groqs_on_demand_tier_is_its_standard_price(instrument: Any, telemetry: Telemetry) -> None:
    # `on_demand` is Groq's default tier, its list price: a plain entry prices it.
    def handler(request: Any) -> Any:
        body = {
            "id": "chatcmpl-groq", "object": "chat.completion", "created": 1,
            "model": "llama-3.3-70b-versatile", "service_tier": "on_demand",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "Hello."}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
        }  # fmt: skip
        return HTTP.Response(200, json=body)

    instrument(prices={"llama-3.3-70b-versatile": {"input": 0.59, "output": 0.79}})
    client = served_by(handler)
    client.chat.completions.create(model="llama-3.3-70b-versatile", messages=MESSAGES)
    assert (telemetry.span().attributes or {})["openai.response.service_tier"] == "on_demand"
    assert cost_of(telemetry) == pytest.approx((1000 * 0.59 + 500 * 0.79) / 1e6)
    client.close()


@needs_responses
def test_responses_and_embeddings_are_priced_too(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    client.responses.create(model="gpt-4.1", input="Hello", extra_headers=USAGE_HEADER)
    client.embeddings.create(model="text-embedding-3-small", input="a b c")
    costs = {s.attributes["gen_ai.operation.name"]: s.attributes[COST] for s in telemetry.spans()}  # type: ignore[index]
    assert costs["chat"] == pytest.approx((600 * 2.0 + 400 * 0.5 + 500 * 8.0) / 1e6)
    tokens = next(s for s in telemetry.spans() if s.name.startswith("embeddings"))
    input_tokens = (tokens.attributes or {})["gen_ai.usage.input_tokens"]
    assert costs["embeddings"] == pytest.approx(input_tokens * 0.02 / 1e6)


def _response_with(*items: dict[str, Any]) -> Any:
    """A handler answering a Responses call with these output items and billed usage."""
    message = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}],
    }
    body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-4o-mini-2024-07-18",
        "output": [*items, message],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 1000,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 500,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 1500,
        },
    }
    return lambda request: HTTP.Response(200, json=body)


@needs_responses
@pytest.mark.parametrize(
    "item",
    [
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"]},
    ],
    ids=["web search", "file search"],
)
def test_a_response_using_a_built_in_tool_billed_per_call_gets_no_token_only_cost(
    instrumented: Any, telemetry: Telemetry, item: dict[str, Any]
) -> None:
    client = served_by(_response_with(item))
    client.responses.create(model="gpt-4o-mini", input="Weather in Paris?")
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 1000  # the billed tokens stay
    assert COST not in attributes  # $0.0004 of tokens, beside a $0.01 search
    assert telemetry.points(COST_METRIC) == []


@needs_responses
def test_a_response_with_only_function_calls_is_priced(
    instrumented: Any, telemetry: Telemetry
) -> None:
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "weather",
        "arguments": "{}",
        "status": "completed",
    }
    served_by(_response_with(call)).responses.create(model="gpt-4o-mini", input="Weather?")
    assert cost_of(telemetry) == pytest.approx((1000 * 0.15 + 500 * 0.6) / 1e6)
