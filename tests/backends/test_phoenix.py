"""OTLP export proven against a real trace store: Arize Phoenix, which runs offline.

Our spans travel the way they do in production: the real openai SDK talks to the bundled
server, the instrumentation records the call, the SDK's BatchSpanProcessor hands the span
to the OTLP exporter (HTTP or gRPC), and Phoenix parses and stores it. Reading the span
back over Phoenix's REST API shows what a backend really kept: our token attributes with
their exact values (Phoenix adds attributes of its own, so we check that ours are there).
The demo is run the same way, as a user runs it, with only OTEL_* variables set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from ..conftest import API_KEY
from .conftest import MESSAGES, ROOT, backend, free_ports, http_get, service, wait_until
from .phoenix import phoenix_environment

# Phoenix takes 12-22 s to start when the machine is idle; the whole module, a minute.
pytestmark = pytest.mark.timeout(300)

STARTUP_TIMEOUT = 90.0
STORED_TIMEOUT = 30.0  # from force_flush to the spans being readable over REST
PINNED_USAGE = {"prompt_tokens": 21, "completion_tokens": 5}
PINNED = {"x-mock-usage": json.dumps(PINNED_USAGE)}


@dataclass
class Phoenix:
    """A running `phoenix serve`, and how to reach it."""

    url: str  # web UI, REST API and OTLP/HTTP (/v1/traces)
    grpc_endpoint: str  # OTLP/gRPC
    output: Callable[[], str]  # the server's log so far

    def stored_spans(self, project: str) -> list[dict[str, Any]]:
        """Every span Phoenix holds for `project` ([] until the project exists)."""
        status, body = http_get(f"{self.url}/v1/projects/{project}/spans?limit=1000")
        if status == 404:
            return []
        assert status == 200, f"Phoenix REST: HTTP {status} {body[:500]!r}"
        spans: list[dict[str, Any]] = json.loads(body)["data"]
        return spans

    def wait_for_spans(self, project: str, count: int) -> dict[str, dict[str, Any]]:
        """The project's stored spans by span id, once there are `count` of them."""
        seen: list[dict[str, Any]] = []

        def probe() -> dict[str, dict[str, Any]] | None:
            seen[:] = self.stored_spans(project)
            assert len(seen) <= count, f"more spans than sent: {[s['name'] for s in seen]}"
            return {s["context"]["span_id"]: s for s in seen} if len(seen) == count else None

        def describe() -> str:
            return f"{len(seen)} of {count} spans stored; Phoenix said:\n{self.output()}"

        return wait_until(f"{count} spans in {project!r}", probe, STORED_TIMEOUT, describe)


@pytest.fixture(scope="module")
def phoenix() -> Iterator[Phoenix]:
    """`phoenix serve` on free loopback ports, in a temp working dir; always stopped."""
    executable = backend("OPENAI_USAGE_PHOENIX", "Arize Phoenix")
    with tempfile.TemporaryDirectory(prefix="phoenix-") as workdir:
        port, grpc_port = free_ports(2)
        env = phoenix_environment(workdir, port, grpc_port)
        log = Path(workdir) / "phoenix.log"
        with service("phoenix", [str(executable), "serve"], log, env) as running:
            url = f"http://127.0.0.1:{port}"
            took = running.wait_healthy(f"{url}/healthz", STARTUP_TIMEOUT)
            print(f"Phoenix ready in {took:.1f} s at {url} (gRPC on {grpc_port})")
            yield Phoenix(url, f"http://127.0.0.1:{grpc_port}", running.output)


def exporter_for(protocol: str, phoenix: Phoenix) -> SpanExporter:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=phoenix.grpc_endpoint, insecure=True, timeout=10)
    return HttpSpanExporter(endpoint=f"{phoenix.url}/v1/traces", timeout=10)


def export_two_calls(
    protocol: str, phoenix: Phoenix, server: LocalOpenAIServer, project: str
) -> tuple[ReadableSpan, ReadableSpan]:
    """A non-streamed call and a streamed one without include_usage, exported over
    `protocol` to `project`; returns the spans as the SDK finished them."""
    resource = Resource.create({"service.name": "openai-usage-tests"})
    resource = resource.merge(Resource({"openinference.project.name": project}))
    provider = TracerProvider(resource=resource)
    local = InMemorySpanExporter()  # to know which span ids to look for
    provider.add_span_processor(SimpleSpanProcessor(local))
    provider.add_span_processor(BatchSpanProcessor(exporter_for(protocol, phoenix)))
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    try:
        server.clear()
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=PINNED
        )
        assert reply.usage is not None and reply.usage.prompt_tokens == 21
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=PINNED
            )
        )
        # The caller asked for no usage chunk and saw none; the server was asked for one.
        assert all(chunk.usage is None for chunk in chunks)
        assert server.requests[-1].body["stream_options"] == {"include_usage": True}
        assert provider.force_flush(30_000), "the OTLP exporter did not flush in 30 s"
    finally:
        client.close()
        instrumentor.uninstrument()
        provider.shutdown()
    non_streamed, streamed = sorted(local.get_finished_spans(), key=lambda s: s.start_time or 0)
    return non_streamed, streamed


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def as_json(value: Any) -> Any:
    """An attribute value as Phoenix's REST API returns it (sequences become lists)."""
    return list(value) if isinstance(value, tuple) else value


def assert_our_attributes_arrived(stored: dict[str, Any], sent: ReadableSpan) -> None:
    """Every attribute we set is on the stored span with the same value."""
    ours = {key: as_json(value) for key, value in (sent.attributes or {}).items()}
    kept = {key: stored["attributes"].get(key) for key in ours}
    assert kept == ours
    assert stored["name"] == sent.name == "chat gpt-4o-mini"


def check_two_calls_reach_phoenix(
    protocol: str, phoenix: Phoenix, server: LocalOpenAIServer
) -> tuple[dict[str, Any], dict[str, Any]]:
    project = f"openai-usage-{protocol}-{uuid.uuid4().hex[:8]}"
    non_streamed, streamed = export_two_calls(protocol, phoenix, server, project)
    stored = phoenix.wait_for_spans(project, 2)
    assert set(stored) == {span_id(non_streamed), span_id(streamed)}
    for sent in (non_streamed, streamed):
        assert_our_attributes_arrived(stored[span_id(sent)], sent)
    return stored[span_id(non_streamed)]["attributes"], stored[span_id(streamed)]["attributes"]


def assert_pinned_tokens(attributes: dict[str, Any]) -> None:
    assert attributes["gen_ai.usage.input_tokens"] == 21
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["gen_ai.usage.total_tokens"] == 26
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"


def assert_streamed(attributes: dict[str, Any]) -> None:
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["openai_usage.stream.include_usage_injected"] is True


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_calls_reach_phoenix_over_otlp_with_their_exact_tokens(
    phoenix: Phoenix, server: LocalOpenAIServer, protocol: str
) -> None:
    non_streamed, streamed = check_two_calls_reach_phoenix(protocol, phoenix, server)
    assert_pinned_tokens(non_streamed)
    assert "gen_ai.request.stream" not in non_streamed
    assert_pinned_tokens(streamed)
    assert_streamed(streamed)


def run_demo(phoenix: Phoenix, project: str, **otel: str) -> str:
    """The demo as a user runs it, configured by OTEL_* variables only; its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    env.update(otel, OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={project}")
    done = subprocess.run(
        [sys.executable, "-m", "opentelemetry.instrumentation.openai_usage.demo", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


SOURCES = {"reported": "response", "estimated": "estimate"}  # the table's words for them


def demo_table(output: str) -> list[tuple[str, str, str, str]]:
    """(span name, input, output, usage source) per row of the demo's token table."""
    lines = output.split("Token usage per call (from the spans):\n", 1)[1].splitlines()
    rows = []
    for line in lines[2:]:  # after the header and its underline
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows.append((cells[1], cells[4], cells[5], SOURCES[cells[7].split()[0]]))
    return rows


def check_demo_reaches_phoenix(phoenix: Phoenix, protocol: str, **otel: str) -> None:
    """The demo's spans all arrive, each with the tokens and source its table shows."""
    project = f"openai-usage-demo-{protocol}-{uuid.uuid4().hex[:8]}"
    output = run_demo(phoenix, project, **otel)
    assert f"exporting over OTLP/{'gRPC' if protocol == 'grpc' else 'HTTP'} to " in output
    table = demo_table(output)
    assert len(table) == 8, output  # 7 calls, the last one two
    assert {row[3] for row in table} == {"response", "estimate"}
    stored = phoenix.wait_for_spans(project, len(table)).values()
    arrived = [
        (
            span["name"],
            str(span["attributes"]["gen_ai.usage.input_tokens"]),
            str(span["attributes"]["gen_ai.usage.output_tokens"]),
            span["attributes"]["openai_usage.usage.source"],
        )
        for span in stored
    ]
    assert sorted(arrived) == sorted(table)


def test_demo_exports_its_spans_to_phoenix_over_otlp_http(phoenix: Phoenix) -> None:
    check_demo_reaches_phoenix(phoenix, "http", OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.url)


def test_demo_exports_its_spans_to_phoenix_over_otlp_grpc(phoenix: Phoenix) -> None:
    check_demo_reaches_phoenix(
        phoenix,
        "grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.grpc_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
