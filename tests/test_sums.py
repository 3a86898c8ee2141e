"""The counters whose sums we keep ourselves (`sums.SummedCounter`), read at collection.

What a backend receives must be what a synchronous counter would have sent: the same
sums per attribute set, increments for a delta exporter, bounded series, nothing lost
under threads, and a forked worker that reports only its own calls.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor, sums
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import MESSAGES, make_client, metric_points

INPUT = "gen_ai.client.inference.usage.input_tokens"
COST = "openai_usage.client.cost"


def points(reader: InMemoryMetricReader, name: str, data: Any = None) -> list[Any]:
    """The points of one metric in `data`, or in a collection made now."""
    return metric_points(data or reader.get_metrics_data(), name)


def totals(reader: InMemoryMetricReader, name: str) -> dict[frozenset[Any], float]:
    return {frozenset(p.attributes.items()): p.value for p in points(reader, name)}


def counter() -> tuple[sums.SummedCounter, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    return sums.SummedCounter(meter, "test.count", "{token}", "test"), reader


def test_a_delta_exporter_gets_each_interval_s_increment_through_the_real_sdk(
    server: LocalOpenAIServer,
) -> None:
    reader = InMemoryMetricReader(
        preferred_temporality={ObservableCounter: AggregationTemporality.DELTA}
    )
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
    )
    try:
        client = make_client(server, "openai")
        usage = json.dumps({"prompt_tokens": 30, "completion_tokens": 5})
        ask = {
            "model": "gpt-4o-mini",
            "messages": MESSAGES,
            "extra_headers": {"x-mock-usage": usage},
        }
        for _ in range(2):
            client.chat.completions.create(**ask)
        first = points(reader, INPUT)
        client.chat.completions.create(**ask)
        data = reader.get_metrics_data()  # one collection: one interval for both metrics
        second, cost = points(reader, INPUT, data), points(reader, COST, data)
        quiet = points(reader, INPUT)  # an interval without calls
    finally:
        instrumentor.uninstrument()
    assert [p.value for p in first] == [60]
    assert [p.value for p in second] == [30]
    assert [p.value for p in quiet] == [0]
    assert dict(second[0].attributes)["gen_ai.token.modality"] == "text"
    assert len(cost) == 1 and cost[0].value == pytest.approx((30 * 0.15 + 5 * 0.6) * 1e-6)


def test_each_attribute_set_keeps_its_own_sum() -> None:
    count, reader = counter()
    count.add(3, {"a": "x", "b": 1})
    count.add(4, {"b": 1, "a": "x"})  # the same set, in another order
    count.add(5, {"a": "y", "b": 1})
    assert totals(reader, "test.count") == {
        frozenset({("a", "x"), ("b", 1)}): 7,
        frozenset({("a", "y"), ("b", 1)}): 5,
    }


def test_a_negative_amount_is_not_added() -> None:
    count, reader = counter()
    count.add(2, {"a": "x"})
    count.add(-5, {"a": "x"})
    count.add(-1, {"a": "new"})
    assert totals(reader, "test.count") == {frozenset({("a", "x")}): 2}


def test_a_non_finite_amount_is_not_added_and_does_not_poison_the_sum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count, reader = counter()
    count.add(2, {"a": "x"})
    count.add(float("nan"), {"a": "x"})
    count.add(float("inf"), {"a": "x"})
    count.add(3, {"a": "x"})
    assert totals(reader, "test.count") == {frozenset({("a", "x")}): 5}
    assert "non-finite" not in caplog.text


def test_past_the_cardinality_limit_new_sets_are_summed_as_overflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sums, "CARDINALITY_LIMIT", 3)
    count, reader = counter()
    for i in range(6):
        count.add(10 + i, {"model": f"m{i}"})
    count.add(1, {"model": "m0"})  # a set seen before the limit still has its own sum
    source = "openai_usage.usage.source"
    count.add(100, {"model": "m9", source: "response"})
    count.add(200, {"model": "m8", source: "estimate"})
    count.add(300, {"model": "m7", source: "response"})
    found = totals(reader, "test.count")
    overflow = ("otel.metric.overflow", True)
    assert found == {
        frozenset({("model", "m0")}): 11,
        frozenset({("model", "m1")}): 11,
        frozenset({("model", "m2")}): 12,
        frozenset({overflow}): 13 + 14 + 15,
        # Even past the limit, billed and estimated tokens are not summed together.
        frozenset({overflow, (source, "response")}): 400,
        frozenset({overflow, (source, "estimate")}): 200,
    }


def test_the_sdks_cardinality_limit_applies_after_a_view_drops_attributes() -> None:
    # As with a synchronous counter: 2100 sets that a View folds into one make one point,
    # not 2000 and an overflow (our own cap is far above the SDK's limit).
    reader = InMemoryMetricReader()
    view = View(instrument_name="test.count", attribute_keys={"kind"})
    provider = MeterProvider(metric_readers=[reader], views=[view])
    count = sums.SummedCounter(provider.get_meter("test"), "test.count", "1", "")
    for i in range(2100):
        count.add(1, {"kind": "input", "model": f"m{i}"})
    assert totals(reader, "test.count") == {frozenset({("kind", "input")}): 2100}
    provider.shutdown()


def test_adds_from_many_threads_are_all_counted() -> None:
    count, reader = counter()

    def work() -> None:
        for i in range(2000):
            count.add(1, {"kind": "input" if i % 2 else "output"})

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(totals(reader, "test.count").values()) == [8000, 8000]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
# Python 3.12+ warns on any fork of a process with threads (the suite's servers, and ours:
# see the README's limits); the child is what is checked here.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_reports_only_its_own_adds(tmp_path: Path) -> None:
    count, reader = counter()
    count.add(5, {"a": "x"})
    out = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            count.add(2, {"a": "x"})
            out.write_text(json.dumps([p.value for p in points(reader, "test.count")]))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(out.read_text()) == [2]
    assert [p.value for p in points(reader, "test.count")] == [5]


def test_instrumenting_again_with_the_same_meter_provider_keeps_counting(
    server: LocalOpenAIServer,
) -> None:
    # The SDK keeps one instrument per meter and name and ignores a second registration's
    # callbacks: the counters of a second instrument() must be the first one's.
    reader = InMemoryMetricReader()
    providers = {
        "tracer_provider": TracerProvider(),
        "meter_provider": MeterProvider(metric_readers=[reader]),
    }
    instrumentor = OpenAIUsageInstrumentor()
    client = make_client(server, "openai")
    usage = json.dumps({"prompt_tokens": 30, "completion_tokens": 5})
    ask = {"model": "gpt-4o-mini", "messages": MESSAGES, "extra_headers": {"x-mock-usage": usage}}
    for _ in range(3):
        instrumentor.instrument(**providers)
        try:
            client.chat.completions.create(**ask)
        finally:
            instrumentor.uninstrument()
    assert [p.value for p in points(reader, INPUT)] == [90]
    assert len(points(reader, COST)) == 1


def test_the_global_proxy_meter_s_counters_are_shared_across_instrument_calls() -> None:
    # Before an SDK provider is set, each `get_meter` is a new proxy meter; the counters
    # made on them must still be one per name, or all but the first go unreported.
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    proxy = _ProxyMeterProvider()
    first = sums.summed_counter(proxy.get_meter("x"), "test.proxy", "{token}", "test")
    second = sums.summed_counter(proxy.get_meter("x"), "test.proxy", "{token}", "test")
    assert first is second
    other = sums.summed_counter(NoOpMeterProvider().get_meter("x"), "test.proxy", "1", "t")
    assert other is not first
