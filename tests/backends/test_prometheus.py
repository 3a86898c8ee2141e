"""The metrics path proven against a real Prometheus, scraping our Prometheus reader.

The SDK's MeterProvider feeds `opentelemetry-exporter-prometheus`'s reader, served on
loopback by prometheus_client; Debian's `prometheus` scrapes it every second, and the
numbers are read back through Prometheus's own query API, so what is checked is what a
dashboard would show: the `gen_ai.client.token.usage` histogram, under the name the
exporter gives it (`gen_ai_client_token_usage`), summed per `gen_ai_token_type`.
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from ..conftest import API_KEY
from .conftest import MESSAGES, backend, free_port, http_get, service, wait_until

pytestmark = pytest.mark.timeout(180)

JOB = "openai-usage-tests"
STARTUP_TIMEOUT = 60.0
SCRAPED_TIMEOUT = 30.0  # scrapes come every second: this is thirty of them


@dataclass
class Prometheus:
    """A running Prometheus scraping `target`, and a way to ask it."""

    url: str
    target: str
    output: Callable[[], str]  # its log so far

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (/api/v1/query)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        status, body = http_get(url)
        assert status == 200, f"{promql}: HTTP {status} {body[:500]!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def by_token_type(self, series: str) -> dict[str, float]:
        """`series` of our job, summed per gen_ai_token_type."""
        result = self.query(f'sum by (gen_ai_token_type) ({series}{{job="{JOB}"}})')
        return {r["metric"]["gen_ai_token_type"]: float(r["value"][1]) for r in result}


@pytest.fixture
def meter_provider() -> Iterator[tuple[MeterProvider, int]]:
    """A MeterProvider whose Prometheus reader is served on a free loopback port."""
    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1")
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    try:
        yield provider, port
    finally:
        provider.shutdown()  # unregisters the reader's collector
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def prometheus(meter_provider: tuple[MeterProvider, int]) -> Iterator[Prometheus]:
    """Debian's prometheus, scraping the reader every second; always stopped."""
    executable = backend("OPENAI_USAGE_PROMETHEUS", "Prometheus")
    target = f"127.0.0.1:{meter_provider[1]}"
    with tempfile.TemporaryDirectory(prefix="prometheus-") as workdir:
        config = Path(workdir) / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {JOB}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        port = free_port()
        argv = [
            str(executable),
            f"--config.file={config}",
            f"--storage.tsdb.path={Path(workdir) / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with service("prometheus", argv, Path(workdir) / "prometheus.log") as running:
            url = f"http://127.0.0.1:{port}"
            running.wait_healthy(f"{url}/-/ready", STARTUP_TIMEOUT)
            yield Prometheus(url, target, running.output)


# (prompt_tokens, completion_tokens) pinned per call with the server's x-mock-usage.
USAGES = [(21, 5), (8, 13), (34, 2), (1, 40)]


def test_token_usage_sums_in_prometheus_equal_the_calls_tokens(
    prometheus: Prometheus, meter_provider: tuple[MeterProvider, int], server: LocalOpenAIServer
) -> None:
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=TracerProvider(), meter_provider=meter_provider[0])
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    try:
        for i, (prompt, completion) in enumerate(USAGES):
            usage = {"prompt_tokens": prompt, "completion_tokens": completion}
            headers = {"x-mock-usage": json.dumps(usage)}
            if i % 2 == 0:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
                )
            else:  # streamed, without include_usage: the instrumentation asks for it
                stream = client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers
                )
                assert all(chunk.usage is None for chunk in stream)
    finally:
        client.close()
        instrumentor.uninstrument()

    expected_sums = {"input": 64.0, "output": 60.0}
    assert expected_sums == {
        "input": float(sum(p for p, _ in USAGES)),
        "output": float(sum(c for _, c in USAGES)),
    }
    seen: list[dict[str, float]] = [{}]

    def scraped() -> dict[str, float] | None:
        seen[0] = prometheus.by_token_type("gen_ai_client_token_usage_sum")
        return seen[0] if seen[0] == expected_sums else None

    def describe() -> str:
        up = prometheus.query(f'up{{job="{JOB}"}}')
        return f"last seen {seen[0]}, up={up}; Prometheus said:\n{prometheus.output()}"

    wait_until("token sums scraped by Prometheus", scraped, SCRAPED_TIMEOUT, describe)
    # One observation per call and token type, all of them billed usage from the response.
    assert prometheus.by_token_type("gen_ai_client_token_usage_count") == {
        "input": 4.0,
        "output": 4.0,
    }
    sources = prometheus.query(
        f"sum by (openai_usage_usage_source, gen_ai_request_model) "
        f'(gen_ai_client_token_usage_count{{job="{JOB}"}})'
    )
    assert [(r["metric"], r["value"][1]) for r in sources] == [
        ({"openai_usage_usage_source": "response", "gen_ai_request_model": "gpt-4o-mini"}, "8")
    ]
