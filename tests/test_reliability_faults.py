"""Faults around us: a telemetry backend that is down, slow or failing; forked workers.

Through the real SDK against the bundled local server, with the real OTLP/HTTP
exporters (`opentelemetry-exporter-otlp-proto-http`) behind a `BatchSpanProcessor` and
a `PeriodicExportingMetricReader`, pointed at loopback endpoints that misbehave. The
user's calls must return what they return with a healthy in-memory exporter, and take
no longer beyond a small bound (export runs on the SDK's own threads, never in a call).

Then gunicorn-style workers: instrument in a parent, `os.fork()`, and each child makes
its own calls with telemetry set up after the fork, as a `post_fork` hook would.
"""

from __future__ import annotations

import contextlib
import gc
import http.server
import json
import logging
import os
import signal
import socket
import statistics
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.encodings import EncodingLoader
from opentelemetry.instrumentation.openai_usage.estimator import FINISHER
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer
from opentelemetry.instrumentation.openai_usage.open_calls import end_open_streams

from .conftest import MESSAGES, comparable, make_client, metric_points

OUTPUT = "gen_ai.usage.output_tokens"
INPUT = "gen_ai.usage.input_tokens"
OUTCOME = "openai_usage.stream.outcome"
SOURCE = "openai_usage.usage.source"
PACKAGE_LOGGER = "opentelemetry.instrumentation.openai_usage"
SDK_LOGGERS = ("openai", "httpx", "httpx2", "httpcore")

EXPORT_TIMEOUT_S = 1.0  # each OTLP export gives up after this long, retries included
SLOW_ANSWER_S = 5.0  # the slow collector's delay per request: far beyond the timeout
CALLS = 40  # non-streamed calls per run, and as many streams
MAX_ADDED_MEDIAN_S = 0.050


def chunks_for(i: int) -> int:
    return 1 + i % 7


# -- misbehaving collectors ------------------------------------------------------------------


class Collector:
    """A loopback OTLP/HTTP endpoint that accepts and then answers slowly, or with 503."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.paths: list[str] = []
        self.stop = threading.Event()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                collector.paths.append(self.path)
                if collector.mode == "slow":
                    collector.stop.wait(SLOW_ANSWER_S)
                    status = 200
                else:
                    status = 503
                with contextlib.suppress(OSError):  # the exporter may have given up
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up on the slow answer: expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def endpoint(mode: str) -> Iterator[tuple[str, Collector | None]]:
    if mode == "closed":
        yield f"http://127.0.0.1:{closed_port()}", None
        return
    collector = Collector(mode)
    try:
        yield collector.base, collector
    finally:
        collector.close()


# -- exporters that count what they were given -------------------------------------------------


class CountingSpans(SpanExporter):
    """Counts the spans offered to the exporter it is mixed into, and each result."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offered = 0
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.offered += len(spans)
        result = super().export(spans)  # the exporter mixed in after this class
        self.results.append(result)
        return result


class CountingOTLPSpanExporter(CountingSpans, OTLPSpanExporter):
    pass


class HealthySpanExporter(CountingSpans, InMemorySpanExporter):
    pass


class CountingOTLPMetricExporter(OTLPMetricExporter):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results: list[MetricExportResult] = []

    def export(self, metrics_data: MetricsData, *args: Any, **kwargs: Any) -> MetricExportResult:
        result = super().export(metrics_data, *args, **kwargs)
        self.results.append(result)
        return result


class HealthyMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.results: list[MetricExportResult] = []

    def export(self, metrics_data: MetricsData, *args: Any, **kwargs: Any) -> MetricExportResult:
        self.results.append(MetricExportResult.SUCCESS)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


# -- one run of the application's calls --------------------------------------------------------


@dataclass
class Run:
    results: list[Any] = field(default_factory=list)
    call_s: list[float] = field(default_factory=list)
    stream_s: list[float] = field(default_factory=list)
    spans: list[ReadableSpan] = field(default_factory=list)
    span_exporter: Any = None
    metric_exporter: Any = None
    flush_s: float = 0.0
    tracer_shutdown_s: float = 0.0
    meter_shutdown_s: float = 0.0
    thread_errors: list[Any] = field(default_factory=list)


def run_app(server: LocalOpenAIServer, base: str | None) -> Run:
    """Instrument with a batch pipeline (OTLP to `base`, or healthy in-memory), call, shut down."""
    run = Run()
    seen = InMemorySpanExporter()  # every span produced, whatever happens to the export
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(seen))
    if base is None:
        run.span_exporter = HealthySpanExporter()
        run.metric_exporter = HealthyMetricExporter()
    else:
        run.span_exporter = CountingOTLPSpanExporter(
            endpoint=f"{base}/v1/traces", timeout=EXPORT_TIMEOUT_S
        )
        run.metric_exporter = CountingOTLPMetricExporter(
            endpoint=f"{base}/v1/metrics", timeout=EXPORT_TIMEOUT_S
        )
    tracer_provider.add_span_processor(
        BatchSpanProcessor(run.span_exporter, schedule_delay_millis=200)
    )
    reader = PeriodicExportingMetricReader(
        run.metric_exporter,
        export_interval_millis=300,
        export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    previous_hook = threading.excepthook
    threading.excepthook = run.thread_errors.append
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    client = make_client(server, "openai")
    try:
        for i in range(CALLS):
            headers = {"x-mock-chunks": str(chunks_for(i))}
            started = time.perf_counter()
            response = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
            )
            run.call_s.append(time.perf_counter() - started)
            run.results.append(comparable([response]))
            started = time.perf_counter()
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers
                )
            )
            run.stream_s.append(time.perf_counter() - started)
            run.results.append(comparable(chunks))
    finally:
        client.close()
        instrumentor.uninstrument()
        started = time.perf_counter()
        tracer_provider.force_flush()
        run.flush_s = time.perf_counter() - started
        started = time.perf_counter()
        tracer_provider.shutdown()
        run.tracer_shutdown_s = time.perf_counter() - started
        started = time.perf_counter()
        meter_provider.shutdown(timeout_millis=3 * EXPORT_TIMEOUT_S * 1000)
        run.meter_shutdown_s = time.perf_counter() - started
        threading.excepthook = previous_hook
    run.spans = list(seen.get_finished_spans())
    return run


def strip_ids(results: list[Any]) -> list[Any]:
    """The same replies, minus the ids only (`comparable` already drops created)."""
    return [[{k: v for k, v in c.items() if k != "id"} for c in r] for r in results]


def check_spans(run: Run) -> None:
    assert len(run.spans) == 2 * CALLS
    outputs = sorted((s.attributes or {})[OUTPUT] for s in run.spans)
    assert outputs == sorted(chunks_for(i) for i in range(CALLS) for _ in range(2))
    streamed = [s for s in run.spans if (s.attributes or {}).get(OUTCOME)]
    assert len(streamed) == CALLS
    assert {(s.attributes or {})[OUTCOME] for s in streamed} == {"completed"}


FIGURES: dict[str, dict[str, float]] = {}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["closed", "slow", "503"])
def test_a_dead_slow_or_failing_otlp_endpoint_leaves_calls_unchanged_and_adds_no_delay(
    server: LocalOpenAIServer,
    caplog: pytest.LogCaptureFixture,
    record_property: Callable[[str, object], None],
    mode: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    healthy = run_app(server, None)
    caplog.clear()
    with endpoint(mode) as (base, collector):
        faulty = run_app(server, base)
        paths = list(collector.paths) if collector is not None else []

    # The user's calls: the same replies, no exception anywhere.
    assert strip_ids(faulty.results) == strip_ids(healthy.results)
    assert faulty.thread_errors == [] and healthy.thread_errors == []
    # Every call still made its span, with its usage; all were handed to the exporter.
    check_spans(healthy)
    check_spans(faulty)
    assert healthy.span_exporter.offered == 2 * CALLS
    assert set(healthy.span_exporter.results) == {SpanExportResult.SUCCESS}
    assert faulty.span_exporter.offered == 2 * CALLS
    assert faulty.span_exporter.results
    assert set(faulty.span_exporter.results) == {SpanExportResult.FAILURE}
    assert faulty.metric_exporter.results
    assert set(faulty.metric_exporter.results) == {MetricExportResult.FAILURE}
    if collector is not None:  # the exports really reached the endpoint
        assert "/v1/traces" in paths and "/v1/metrics" in paths

    # Delay: export happens off the calls' thread, so the medians barely move, and no
    # single call ever waited as long as one export attempt.
    added_call = statistics.median(faulty.call_s) - statistics.median(healthy.call_s)
    added_stream = statistics.median(faulty.stream_s) - statistics.median(healthy.stream_s)
    figures = {
        "healthy_call_median_ms": statistics.median(healthy.call_s) * 1e3,
        "faulty_call_median_ms": statistics.median(faulty.call_s) * 1e3,
        "added_call_median_ms": added_call * 1e3,
        "healthy_stream_median_ms": statistics.median(healthy.stream_s) * 1e3,
        "faulty_stream_median_ms": statistics.median(faulty.stream_s) * 1e3,
        "added_stream_median_ms": added_stream * 1e3,
        "faulty_max_call_ms": max(faulty.call_s + faulty.stream_s) * 1e3,
        "flush_s": faulty.flush_s,
        "tracer_shutdown_s": faulty.tracer_shutdown_s,
        "meter_shutdown_s": faulty.meter_shutdown_s,
    }
    FIGURES[mode] = figures
    for name, value in figures.items():
        record_property(name, round(value, 3))
    print(f"\nOTLP endpoint {mode}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    assert added_call < MAX_ADDED_MEDIAN_S
    assert added_stream < MAX_ADDED_MEDIAN_S
    assert max(faulty.call_s + faulty.stream_s) < EXPORT_TIMEOUT_S

    # Flushing and shutting down wait for at most an export attempt or two, not forever.
    assert faulty.flush_s < 2 * EXPORT_TIMEOUT_S + 0.5
    assert faulty.tracer_shutdown_s < EXPORT_TIMEOUT_S + 0.5
    assert faulty.meter_shutdown_s < 2 * EXPORT_TIMEOUT_S + 0.5

    # Logs: nothing from us; the exporter's own lines are per export attempt, not per call.
    ours = [r for r in caplog.records if r.name.startswith(PACKAGE_LOGGER)]
    assert ours == []
    exporter_lines = [
        r
        for r in caplog.records
        if r.name.split(".")[0] not in SDK_LOGGERS and r.levelno >= logging.WARNING
    ]
    attempts = len(faulty.span_exporter.results) + len(faulty.metric_exporter.results)
    assert exporter_lines  # the failures were reported, by the exporter
    assert len(exporter_lines) <= 4 * attempts
    assert len(exporter_lines) < CALLS


# -- forked workers ----------------------------------------------------------------------------

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
WORKERS = 3
WORKER_CALLS = 4
WORKER_STREAMS = 4
ABANDONED_CHUNKS = 10
WORKER_DEADLINE_S = 60.0


def worker_chunks(worker: int, i: int) -> int:
    """Output tokens of call `i` of `worker`: different across all calls of all workers."""
    return 2 + worker * 20 + i


class ThreadNames(SpanProcessor):
    """Which thread ended each span."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def on_end(self, span: ReadableSpan) -> None:
        response_id = str((span.attributes or {}).get("gen_ai.response.id"))
        self.names[response_id] = threading.current_thread().name


def output_sum(reader: InMemoryMetricReader) -> int:
    """The sum of `gen_ai.client.token.usage` output points with reported usage."""
    total = 0
    for point in metric_points(reader.get_metrics_data(), "gen_ai.client.token.usage"):
        attributes = dict(point.attributes or {})
        if attributes.get("gen_ai.token.type") == "output" and (
            attributes.get(SOURCE) == "response"
        ):
            total += int(point.sum)
    return total


def worker_main(
    worker: int,
    out: Path,
    server: LocalOpenAIServer,
    tracer_provider: TracerProvider,
    reader: InMemoryMetricReader,
) -> None:
    """One forked worker: telemetry set up after the fork, its own client, its calls."""
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    thread_names = ThreadNames()
    tracer_provider.add_span_processor(thread_names)
    client = make_client(server, "openai")
    seen: dict[str, int] = {}  # response id -> output tokens the caller was told
    for i in range(WORKER_CALLS):
        headers = {"x-mock-chunks": str(worker_chunks(worker, i))}
        response = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
        )
        seen[response.id] = response.usage.completion_tokens if response.usage else -1
    for i in range(WORKER_STREAMS):
        n = worker_chunks(worker, WORKER_CALLS + i)
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-mock-chunks": str(n)},
            )
        )
        content = sum(1 for c in chunks for choice in c.choices if choice.delta.content)
        seen[chunks[0].id] = content
    # One stream read once and dropped: collected, it is ended on the finisher thread,
    # which did not survive the fork. Not drained here: the span must end on its own.
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-chunks": str(ABANDONED_CHUNKS)},
    )
    abandoned_id = next(stream).id
    # Kept in a reference cycle, so that only the collector frees it: the stream is then
    # ended on the worker's own finisher thread (one dropped plainly is ended in place).
    cycle: list[Any] = [stream]
    cycle.append(cycle)
    del stream, cycle
    gc.collect()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(exporter.get_finished_spans()) < len(seen) + 1:
        time.sleep(0.01)
    client.close()
    spans = [
        {
            "response_id": (s.attributes or {}).get("gen_ai.response.id"),
            "input": (s.attributes or {}).get(INPUT),
            "output": (s.attributes or {}).get(OUTPUT),
            "source": (s.attributes or {}).get(SOURCE),
            "outcome": (s.attributes or {}).get(OUTCOME),
            "ended": s.end_time is not None,
            "pid": os.getpid(),
        }
        for s in exporter.get_finished_spans()
    ]
    report = {
        "seen": seen,
        "abandoned_id": abandoned_id,
        "abandoned_ended_on": thread_names.names.get(abandoned_id),
        "spans": spans,
        "output_sum": output_sum(reader),
    }
    out.write_text(json.dumps(report))


def fork_and_run(target: Callable[[], None], out: Path) -> int:
    """Fork; the child runs `target`, writes any error next to `out` and `os._exit`s."""
    with warnings.catch_warnings():  # 3.12+: "multi-threaded, use of fork() may deadlock"
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            target()
            code = 0
        except BaseException:
            with contextlib.suppress(BaseException):
                out.with_suffix(".error").write_text(traceback.format_exc())
        finally:
            os._exit(code)
    return pid


def wait_all(pids: list[int], deadline_s: float) -> dict[int, int]:
    """Exit codes by pid; a child still running at the deadline is killed (and fails)."""
    deadline = time.monotonic() + deadline_s
    codes: dict[int, int] = {}
    while len(codes) < len(pids):
        for pid in pids:
            if pid in codes:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            for pid in pids:
                if pid not in codes:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    codes[pid] = -999
            break
        time.sleep(0.01)
    return codes


@needs_fork
@pytest.mark.timeout(90)
def test_forked_workers_each_record_their_own_calls_and_end_abandoned_streams(
    server: LocalOpenAIServer, tmp_path: Path
) -> None:
    tracer_provider = TracerProvider()  # processors are added in each worker, after the fork
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        # The parent works too before forking, so its finisher thread runs (and is lost
        # in each fork) and its metrics hold points the children inherit.
        client = make_client(server, "openai")
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-mock-chunks": "3"}
        )
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        next(stream)
        del stream
        gc.collect()
        assert FINISHER.drain(10)
        client.close()
        assert FINISHER._thread is not None and FINISHER._thread.is_alive()
        parent_sum = output_sum(reader)
        assert parent_sum == 3

        outs = [tmp_path / f"worker-{w}.json" for w in range(WORKERS)]
        started = time.monotonic()
        pids = []
        for w, out in enumerate(outs):

            def target(w: int = w, out: Path = out) -> None:
                worker_main(w, out, server, tracer_provider, reader)

            pids.append(fork_and_run(target, out))
        codes = wait_all(pids, WORKER_DEADLINE_S)
        elapsed = time.monotonic() - started
    finally:
        instrumentor.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()
    print(f"\n{WORKERS} forked workers finished in {elapsed:.2f} s")

    errors = {p.name: p.read_text() for p in tmp_path.glob("*.error")}
    assert list(codes.values()) == [0] * WORKERS, errors
    assert elapsed < WORKER_DEADLINE_S
    all_ids: set[str] = set()
    for w, out in enumerate(outs):
        report = json.loads(out.read_text())
        spans = report["spans"]
        seen = report["seen"]
        expected = {worker_chunks(w, i) for i in range(WORKER_CALLS + WORKER_STREAMS)}
        assert sorted(seen.values()) == sorted(expected)  # each caller got its own reply
        assert len(spans) == WORKER_CALLS + WORKER_STREAMS + 1  # exactly one span per call
        assert len({s["pid"] for s in spans}) == 1 and spans[0]["pid"] in pids
        by_id = {s["response_id"]: s for s in spans}
        assert len(by_id) == len(spans)
        for response_id, output in seen.items():
            span = by_id[response_id]
            assert span["output"] == output, (w, response_id)
            assert span["input"] == 13 and span["source"] == "response" and span["ended"]
        streamed = [s for s in spans if s["outcome"] is not None]
        assert sorted(s["outcome"] for s in streamed) == ["abandoned"] + ["completed"] * 4
        abandoned = by_id[report["abandoned_id"]]
        assert abandoned["outcome"] == "abandoned" and abandoned["ended"]
        assert abandoned["source"] == "estimate"  # cut before the usage chunk
        assert report["abandoned_ended_on"] == "openai-usage-finisher"
        # Each worker's metrics: what it inherited plus exactly its own calls.
        assert report["output_sum"] == parent_sum + sum(expected)
        all_ids |= set(by_id)
    assert len(all_ids) == WORKERS * (WORKER_CALLS + WORKER_STREAMS + 1)


@needs_fork
@pytest.mark.timeout(60)
def test_an_encoding_still_loading_at_fork_time_finishes_loading_in_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn `--preload`: `instrument()` in the master starts loading encodings in a
    thread, and workers are forked at once, while it loads. That thread is not in the
    child; the child's estimates must not wait for it forever."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))  # empty: a slow load
    loader = EncodingLoader()
    loader.start(["cl100k_base"])
    pending_at_fork = loader.pending("cl100k_base")
    out = tmp_path / "child.json"

    def child() -> None:
        started = time.monotonic()
        encoding = loader.wait("cl100k_base", 20)
        out.write_text(
            json.dumps(
                {
                    "loaded": encoding is not None,
                    "tokens": len(encoding.encode_ordinary("hello world")) if encoding else None,
                    "waited_s": time.monotonic() - started,
                }
            )
        )

    pid = fork_and_run(child, out)
    codes = wait_all([pid], 40)
    assert loader.wait("cl100k_base", 20) is not None  # the parent's own load completes too
    assert pending_at_fork  # the fork did happen mid-load
    assert codes == {pid: 0}, [p.read_text() for p in tmp_path.glob("*.error")]
    report = json.loads(out.read_text())
    assert report["loaded"] is True
    assert report["tokens"] == 2
    assert report["waited_s"] < 20


@needs_fork
@pytest.mark.timeout(60)
def test_a_forked_child_neither_hangs_on_a_lock_held_at_fork_nor_runs_the_parents_call_ends(
    server: LocalOpenAIServer, tmp_path: Path
) -> None:
    """A fork from a busy multi-threaded parent: at that instant another thread holds the
    finisher's lock (as every new stream briefly does) and the finisher has call ends
    queued. The child must not wait on that lock forever, and must not run the parent's
    call ends (their spans would be exported twice)."""
    tracer_provider = TracerProvider()
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider())
    ran_in = tmp_path / "ran-in"
    out = tmp_path / "child.json"
    release, held, let_go = threading.Event(), threading.Event(), threading.Event()

    def mark(_wait_s: float) -> None:
        with ran_in.open("a") as f:
            f.write(f"{os.getpid()}\n")

    def hold_the_lock() -> None:
        with FINISHER._lock:
            held.set()
            let_go.wait(10)

    def child() -> None:
        exporter = InMemorySpanExporter()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        client = make_client(server, "openai")
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        next(stream)
        del stream
        gc.collect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not exporter.get_finished_spans():
            time.sleep(0.01)
        client.close()
        outcomes = [(s.attributes or {}).get(OUTCOME) for s in exporter.get_finished_spans()]
        out.write_text(json.dumps({"outcomes": outcomes}))

    holder = threading.Thread(target=hold_the_lock)
    try:
        FINISHER.submit(lambda _wait_s: release.wait(10))  # the parent's finisher is busy...
        FINISHER.submit(mark)  # ... and this call end waits behind it
        holder.start()
        assert held.wait(10)
        pid = fork_and_run(child, out)
        let_go.set()
        release.set()
        holder.join()
        codes = wait_all([pid], 30)
        assert FINISHER.drain(10)
    finally:
        let_go.set()
        release.set()
        instrumentor.uninstrument()
        tracer_provider.shutdown()

    assert codes == {pid: 0}, [p.read_text() for p in tmp_path.glob("*.error")]
    assert json.loads(out.read_text()) == {"outcomes": ["abandoned"]}
    assert ran_in.read_text().split() == [str(os.getpid())]  # the parent's, run once, there


@needs_fork
@pytest.mark.timeout(60)
def test_a_stream_open_at_fork_time_is_ended_by_the_parent_only(
    server: LocalOpenAIServer, tmp_path: Path
) -> None:
    """The child inherits a copy of the parent's open stream (and its span). Whatever the
    child does with that copy (closes it, collects it, ends open streams at exit), the span
    is the parent's: ended in the child too, it would be exported twice. (The child does
    not read it: both processes share the socket, so what it read the parent would miss.)"""
    tracer_provider = TracerProvider()
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider())
    out = tmp_path / "child.json"
    client = make_client(server, "openai")
    try:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-chunks": "4"},
        )
        first = next(stream)

        def child() -> None:
            stream.close()  # the child's copy is closed, collected, and exit ends open streams
            gc.collect()
            end_open_streams()
            assert FINISHER.drain(10)
            out.write_text(json.dumps({"spans": len(exporter.get_finished_spans())}))

        pid = fork_and_run(child, out)
        codes = wait_all([pid], 30)
        assert codes == {pid: 0}, [p.read_text() for p in tmp_path.glob("*.error")]
        assert json.loads(out.read_text())["spans"] == 0  # nothing ended in the child
        assert exporter.get_finished_spans() == ()  # nor, meanwhile, in the parent
        rest = list(stream)  # the parent's own stream is untouched: it reads on and ends
    finally:
        client.close()
        instrumentor.uninstrument()
    (span,) = exporter.get_finished_spans()
    attributes = span.attributes or {}
    assert attributes[OUTCOME] == "completed"
    assert attributes[OUTPUT] == 4
    assert first.id == attributes["gen_ai.response.id"]
    assert len(rest) == 5  # after the role chunk: 4 content chunks and the finish chunk
    tracer_provider.shutdown()
