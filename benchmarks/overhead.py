#!/usr/bin/env python
"""CPU time the instrumentation adds to `chat.completions.create`, over several processes.

    python benchmarks/overhead.py [--processes N] [--rounds N] [--batch K] [--check]
                                  [--json out.json]

What is compared
    The real openai SDK against an in-process mock transport (`httpx2.MockTransport`,
    or `httpx.MockTransport` with openai < 3), so there is no network and no server
    process: the clock sees the SDK's own work (building the request, parsing the
    JSON / SSE, constructing pydantic models) plus ours. Responses are built once,
    as bytes, in OpenAI's exact shape. The handler answers the request *as sent*:
    when the body asks for `stream_options.include_usage` (our default injection),
    every chunk carries `"usage": null` and a final usage-only chunk follows, so the
    SDK's extra parsing caused by the injection counts as our cost, as it would in
    production.

Telemetry
    A real SDK `TracerProvider` with a `BatchSpanProcessor` (what production uses)
    feeding an exporter that discards spans, and a real `MeterProvider` with an
    `InMemoryMetricReader` that is never collected while timing: every span and
    every histogram point is really created and aggregated, only the export I/O
    is left out. The batch processor's worker thread is part of the process, so
    `process_time` counts its CPU too. `--span-processor simple` switches to a
    `SimpleSpanProcessor` (synchronous export in the caller's thread).

Method, in one process
    Instrument once per configuration and keep two code paths: the instrumented one
    calls `client.chat.completions.create(...)` as users do (through wrapt's wrapper,
    our span, our stream proxy); the baseline calls the SDK's own function (taken before
    instrumenting; checked to be the `__wrapped__` of our wrapper) through a twin
    resource on a shallow copy of the client (same connection pool) whose requests go
    through the SDK's own `request()` (which we patch too, for requests that reach it
    past the resource methods). This is fairer than
    instrument()/uninstrument() around every batch: both paths run in the same warmed
    process on the same client and connection pool, nothing is re-created between
    batches (re-instrumenting would re-create instruments on the same meter, log
    duplicate-instrument warnings and churn caches next to the timed region), and the
    baseline is the true unwrapped SDK, not a disabled wrapper. It skips only creating a
    bound method (tens of ns).

    Rounds alternate: each round times a batch of K baseline calls and a batch of K
    instrumented calls, swapping which goes first every round to cancel drift. The
    figure per round is (instrumented - baseline) / K. The clock is
    `time.process_time_ns()` (CPU time of all threads of the process). `gc.collect()`
    runs between batches and the collector is disabled during timed batches (so a
    collection triggered by one side is not billed to the other); `--keep-gc` leaves
    it enabled instead. Otherwise the objects alive after the warm-up are frozen
    (`gc.freeze()`), so those untimed collections stay cheap. `--warmup` calls per
    side come first (half as many for streams). Async streams run in one event
    loop; after each batch the loop runs, untimed, the aclose() tasks the SDK's
    unfinished SSE generators leave behind (same for both sides).

Several processes
    One process's median carries a bias of its own: memory layout, hash seed and
    code placement make the same A/B differ by several tenths of a millisecond per
    stream from one process to the next, however many rounds it runs (the reason
    pyperf runs worker processes). So by default (`--processes 5`) this script
    re-runs itself as N worker processes, one after another (never in parallel:
    they would compete for the cores), each with its own `PYTHONHASHSEED` (1..N),
    and splits `--rounds` between them (at least 10 each). The table shows the
    median and interquartile range of all rounds of all workers pooled, and the
    range of the per-worker medians, which shows how large the per-process bias
    is. `--processes 1` measures in this process, as before.

A/A control
    The `null` case times the same stream as `stream`, but its instrumented side
    calls `create` through our wrapper with the instrumentor's runtime made
    inactive (`active = False`, only around that side's batches): the wrapper
    passes straight through, which costs a couple of microseconds. Whatever its
    median shows beyond that is the method's residual bias; added figures within
    about that much of zero are noise.

Diagnosis
    `--ablate traces|metrics|both` hands instrument() the API's no-op providers, to
    split the added time into the SDK's span / metric work and our own; `--cases`
    runs a subset. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import MethodType, ModuleType
from typing import Any

import openai
from openai._base_client import AsyncAPIClient, SyncAPIClient
from openai.resources.chat.completions import AsyncCompletions, Completions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor

# --------------------------------------------------------------------------- payloads

CHUNKS = 200  # chunks the caller sees per stream: role chunk, 198 content chunks, finish chunk
# A short stream (role chunk, one content chunk, finish chunk): nearly all of what it adds
# is the per-stream part (span, metric points, the call's own code), so the difference
# from the 200-chunk stream is what the chunks themselves cost.
SHORT_CHUNKS = 3
TARGET_CALL_MS = 0.15  # added per non-streamed call
TARGET_STREAM_MS = 0.5  # added per 200-chunk stream, default settings

MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
FINGERPRINT = "fp_560af6e559"
CREATED = 1_747_000_000
PROMPT_TOKENS = 42
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Explain in a few sentences why the sky is blue."},
]
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "messages": MESSAGES,
    "temperature": 0.2,
    "max_completion_tokens": 512,
}
_TEXT = (
    "Sunlight is made of many colours, and as it passes through the atmosphere the"
    " short blue wavelengths are scattered by the small molecules of nitrogen and"
    " oxygen much more strongly than the longer red ones. This is called Rayleigh"
    " scattering, and its strength grows with the inverse fourth power of the"
    " wavelength."
)
_WORDS = _TEXT.split()


def _tokens(count: int) -> list[str]:
    return [" " + _WORDS[i % len(_WORDS)] for i in range(count)]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _usage(completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_body() -> bytes:
    """A non-streamed ChatCompletion as OpenAI sends it (pretty-printed, with usage)."""
    content = "".join(_tokens(80)).strip()
    body = {
        "id": "chatcmpl-BenchNonStream0123456789abcd",
        "object": "chat.completion",
        "created": CREATED,
        "model": RESPONSE_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(80),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    return json.dumps(body, indent=2).encode()


def stream_events(chunks: int, include_usage: bool) -> list[bytes]:
    """SSE events of a chat stream, one `data:` event per chunk, then `[DONE]`.

    `chunks` counts what the caller sees: the role chunk, chunks - 2 content
    chunks and the finish chunk. With `include_usage` each of them also has
    `"usage": null` and a usage-only chunk with `choices: []` comes last.
    """
    head = {
        "id": "chatcmpl-BenchStream0123456789abcdefgh",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": RESPONSE_MODEL,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None)
    ]
    deltas += [({"content": token}, None) for token in _tokens(chunks - 2)]
    deltas.append(({}, "stop"))
    events: list[bytes] = []
    for n, (delta, finish) in enumerate(deltas):
        chunk: dict[str, Any] = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            chunk["usage"] = None
        chunk["obfuscation"] = "abcdefghij"[: 1 + n % 10]
        events.append(f"data: {_dumps(chunk)}\n\n".encode())
    if include_usage:
        last = {**head, "choices": [], "usage": _usage(chunks - 2), "obfuscation": "xY"}
        events.append(f"data: {_dumps(last)}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


def http_module() -> ModuleType:
    """httpx2 for openai >= 3, httpx before."""
    major = int(openai.__version__.split(".")[0])
    return importlib.import_module("httpx2" if major >= 3 else "httpx")


_IS_STREAM = re.compile(rb'"stream"\s*:\s*true')
_WANTS_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
_SHORT = re.compile(rb'"max_completion_tokens"\s*:\s*%d\b' % SHORT_CHUNKS)


class MockOpenAI:
    """Pre-built responses; answers each request as sent (both sides pay the same regexes)."""

    def __init__(self, http: ModuleType, chunks: int) -> None:
        self.http = http
        self.completion = completion_body()
        self.plain_events = stream_events(chunks, include_usage=False)
        self.usage_events = stream_events(chunks, include_usage=True)
        self.short_events = {
            wants: stream_events(SHORT_CHUNKS, include_usage=wants) for wants in (False, True)
        }
        common = {
            "openai-organization": "bench-org",
            "openai-processing-ms": "321",
            "openai-version": "2020-10-01",
            "x-request-id": "req_0123456789abcdef0123456789abcdef",
        }
        self.json_headers = {**common, "content-type": "application/json"}
        self.sse_headers = {**common, "content-type": "text/event-stream; charset=utf-8"}

        self.last_wanted_usage = False  # what the last request asked: for the sanity checks

    def _events(self, request: Any) -> list[bytes] | None:
        body: bytes = request.content
        if not _IS_STREAM.search(body):
            return None
        self.last_wanted_usage = wants_usage = _WANTS_USAGE.search(body) is not None
        if _SHORT.search(body):
            return self.short_events[wants_usage]
        return self.usage_events if wants_usage else self.plain_events

    def sync_handler(self, request: Any) -> Any:
        events = self._events(request)
        if events is None:
            return self.http.Response(200, headers=self.json_headers, content=self.completion)
        # An iterator, so the SDK reads the stream event by event as off a socket.
        return self.http.Response(200, headers=self.sse_headers, content=iter(events))

    def async_handler(self, request: Any) -> Any:
        events = self._events(request)
        if events is None:
            return self.http.Response(200, headers=self.json_headers, content=self.completion)
        return self.http.Response(200, headers=self.sse_headers, content=_AsyncEvents(events))


class _AsyncEvents:
    """An async byte iterator over pre-built events (a class: an async generator left
    unfinished at `[DONE]` would need the loop to finalize it)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[bytes]) -> None:
        self._items = iter(items)

    def __aiter__(self) -> _AsyncEvents:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None


CLIENT_OPTIONS: dict[str, Any] = {
    "api_key": "sk-bench",
    "base_url": "http://bench.local/v1",
    "max_retries": 0,
}


def sync_client(http: ModuleType, mock: MockOpenAI) -> openai.OpenAI:
    """The real SDK's client, talking to `mock` through the in-process transport."""
    return openai.OpenAI(
        http_client=http.Client(transport=http.MockTransport(mock.sync_handler)),
        **CLIENT_OPTIONS,
    )


# --------------------------------------------------------------------------- telemetry


class DroppingExporter(SpanExporter):
    """Discards spans; keeps a count and the last one for the sanity checks."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        if spans:
            self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Telemetry:
    """The providers handed to instrument(); `ablate` swaps in the API's no-op ones."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    exporter: DroppingExporter | None

    @classmethod
    def create(cls, processor: str, ablate: str) -> Telemetry:
        tracer_provider: trace.TracerProvider
        meter_provider: metrics.MeterProvider
        exporter: DroppingExporter | None = None
        if ablate in ("traces", "both"):
            tracer_provider = trace.NoOpTracerProvider()
        else:
            exporter = DroppingExporter()
            sdk_tracer_provider = TracerProvider()
            span_processor = (
                BatchSpanProcessor(exporter)
                if processor == "batch"
                else SimpleSpanProcessor(exporter)
            )
            sdk_tracer_provider.add_span_processor(span_processor)
            tracer_provider = sdk_tracer_provider
        if ablate in ("metrics", "both"):
            meter_provider = metrics.NoOpMeterProvider()
        else:
            meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        return cls(tracer_provider, meter_provider, exporter)

    def flush(self) -> int:
        """Export what is queued; the number of spans exported so far."""
        if isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.force_flush()
        return self.exporter.count if self.exporter else 0

    def shutdown(self) -> None:
        if isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, MeterProvider):
            self.meter_provider.shutdown()


# --------------------------------------------------------------------------- cases

# The SDK's own functions, taken before anything is instrumented. (Not
# `Completions.create.__wrapped__` read before instrumenting: the SDK's
# `required_args` decorator sets `__wrapped__` too, to its undecorated inner function.)
SDK_CREATE = Completions.__dict__["create"]
SDK_ACREATE = AsyncCompletions.__dict__["create"]
# The clients' `request()`, which `instrument()` patches too (for requests that reach it
# past the resource methods); every request of the SDK passes it, so the baseline must
# use these.
SDK_REQUEST = SyncAPIClient.__dict__["request"]
SDK_AREQUEST = AsyncAPIClient.__dict__["request"]


def baseline_resource(resource: Any, request: Callable[..., Any]) -> Any:
    """A second resource object, on a shallow copy of the client (same connection pool),
    whose requests go through the SDK's own `request()`: the instrumented `request()`
    passes the SDK's own requests on, but not for free."""
    client = copy.copy(resource._client)
    client.request = MethodType(request, client)
    return type(resource)(client)


# Span attribute saying where the usage numbers come from ("response" or "estimate").
USAGE_SOURCE = "openai_usage.usage.source"

Timer = Callable[[int], int]  # runs k calls, returns CPU ns


@dataclass
class Case:
    key: str
    title: str
    batch: int
    chunks: int  # chunks the caller sees per call; 0 for non-streamed
    target_ms: float | None
    injects: bool  # whether the instrumented request asks for usage
    user_usage: bool = False  # both sides ask for usage themselves (same bytes on both)
    control: bool = False  # A/A: the instrumented side goes through an inactive wrapper
    rounds_ns: list[tuple[float, float]] = field(default_factory=list)  # per call (base, instr)

    @property
    def added(self) -> list[float]:
        return [instr - base for base, instr in self.rounds_ns]

    def meta(self) -> dict[str, Any]:
        """What the report needs besides the rounds (a worker sends it to the parent)."""
        return {
            "case": self.key,
            "title": self.title,
            "batch": self.batch,
            "chunks": self.chunks,
            "target_ns": self.target_ms * 1e6 if self.target_ms is not None else None,
            "control": self.control,
        }


@dataclass
class Paths:
    """The two code paths of one case: one call (returns chunks seen), and a timed batch."""

    baseline: Callable[[], int]
    instrumented: Callable[[], int]
    time_baseline: Timer
    time_instrumented: Timer


def _read(stream: Any) -> int:
    count = 0
    for _ in stream:
        count += 1
    return count


async def _aread(stream: Any) -> int:
    count = 0
    async for _ in stream:
        count += 1
    return count


def _sync_timer(call: Callable[[], int]) -> Timer:
    def timed(k: int) -> int:
        clock = time.process_time_ns
        start = clock()
        for _ in range(k):
            call()
        return clock() - start

    return timed


def sync_paths(client: Any, stream: bool, user_usage: bool = False, short: bool = False) -> Paths:
    """`client.chat.completions.create` as users call it, and the SDK's function directly."""
    completions = client.chat.completions
    request = {**REQUEST, "stream": True} if stream else REQUEST
    if short:  # the mock answers this limit with a short stream
        request = {**request, "max_completion_tokens": SHORT_CHUNKS}
    if user_usage:
        request = {**request, "stream_options": {"include_usage": True}}

    plain = baseline_resource(completions, SDK_REQUEST)

    def baseline() -> int:
        result = SDK_CREATE(plain, **request)
        return _read(result) if stream else 1

    def instrumented() -> int:
        result = completions.create(**request)
        return _read(result) if stream else 1

    return Paths(baseline, instrumented, _sync_timer(baseline), _sync_timer(instrumented))


def async_paths(client: Any, loop: asyncio.AbstractEventLoop) -> Paths:
    """Streams on an AsyncOpenAI client, all in one event loop."""
    completions = client.chat.completions
    request = {**REQUEST, "stream": True}

    plain = baseline_resource(completions, SDK_AREQUEST)

    async def baseline() -> int:
        return await _aread(await SDK_ACREATE(plain, **request))

    async def instrumented() -> int:
        return await _aread(await completions.create(**request))

    async def batch(call: Callable[[], Awaitable[int]], k: int) -> int:
        clock = time.process_time_ns
        start = clock()
        for _ in range(k):
            await call()
        return clock() - start

    def settle() -> None:
        # The SDK leaves its SSE async generator unfinished at `[DONE]`; the loop
        # schedules its aclose() as a task. Run those now, untimed, so that one
        # side's leftovers never land in the other side's batch.
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0))

    def once(call: Callable[[], Awaitable[int]]) -> Callable[[], int]:
        def run() -> int:
            count = loop.run_until_complete(call())
            settle()
            return count

        return run

    def timer(call: Callable[[], Awaitable[int]]) -> Timer:
        def run(k: int) -> int:
            elapsed = loop.run_until_complete(batch(call, k))
            settle()
            return elapsed

        return run

    return Paths(once(baseline), once(instrumented), timer(baseline), timer(instrumented))


def inactive_paths(paths: Paths, instrumentor: OpenAIUsageInstrumentor) -> Paths:
    """The A/A control: the instrumented side goes through our wrapper, made inactive.

    `create` is still wrapt's wrapper around the SDK's function, but with the
    runtime's `active` flag off our wrapper calls the SDK straight away (a couple
    of µs per call), so the true difference from the baseline is almost nil and
    what the case measures is the method's own bias. The flag is switched off
    only around this side's calls, outside the clock (timing starts inside the
    timer), and switched back on after, so no other case and no baseline batch
    ever sees an inactive runtime. The runtime is looked up at call time: it is
    created by instrument(), after the cases are built.
    """

    @contextlib.contextmanager
    def inactive() -> Iterator[None]:
        runtime = getattr(instrumentor, "_runtime", None)
        if runtime is None or getattr(runtime, "active", None) is not True:
            raise SystemExit("A/A control: no active `instrumentor._runtime.active` to switch off")
        runtime.active = False
        try:
            yield
        finally:
            runtime.active = True

    def instrumented() -> int:
        with inactive():
            return paths.instrumented()

    def time_instrumented(k: int) -> int:
        with inactive():
            return paths.time_instrumented(k)

    return Paths(paths.baseline, instrumented, paths.time_baseline, time_instrumented)


def timed_batch(timer: Timer, k: int, keep_gc: bool) -> int:
    gc.collect()
    if not keep_gc:
        gc.disable()
    try:
        return timer(k)
    finally:
        gc.enable()


def run_case(
    case: Case, paths: Paths, telemetry: Telemetry, mock: MockOpenAI, args: argparse.Namespace
) -> None:
    """Warm up, check, then time `args.rounds` alternating rounds into `case.rounds_ns`."""
    # Warm up both paths (imports, pydantic validators, caches, the connection pool).
    # A stream is 200 chunks of work, so half as many warm it up as well (its
    # per-call code still runs a dozen times before timing, enough for CPython to
    # specialise it), and the warm-up that every worker repeats costs less wall time.
    for _ in range(args.warmup // 2 if case.chunks else args.warmup):
        paths.baseline()
        paths.instrumented()
    check_case(case, paths, telemetry, mock)
    if not args.keep_gc:
        # Freeze what is alive now (modules, the SDK's and our caches, the providers):
        # the collections between batches then walk only what the last batch left,
        # instead of ~90k objects each time, which took about as long as a stream
        # and a third of the wall time. Nothing changes inside the timed batches,
        # where the collector is off; with --keep-gc it is not, so no freezing then.
        gc.collect()
        gc.freeze()
    try:
        time_rounds(case, paths, args)
    finally:
        if not args.keep_gc:
            gc.unfreeze()


def time_rounds(case: Case, paths: Paths, args: argparse.Namespace) -> None:
    """`args.rounds` rounds of one batch per side, into `case.rounds_ns` (per call)."""
    k = case.batch
    for r in range(args.rounds):
        # Alternate which side goes first, so drift and "after the other one" effects cancel.
        if r % 2 == 0:
            base = timed_batch(paths.time_baseline, k, args.keep_gc)
            instr = timed_batch(paths.time_instrumented, k, args.keep_gc)
        else:
            instr = timed_batch(paths.time_instrumented, k, args.keep_gc)
            base = timed_batch(paths.time_baseline, k, args.keep_gc)
        case.rounds_ns.append((base / k, instr / k))
        if not args.quiet:
            worker = f"worker {args.worker}, " if args.worker else ""
            print(
                f"\r  {worker}{case.title}: round {r + 1}/{args.rounds}",
                end="",
                file=sys.stderr,
                flush=True,
            )
    if not args.quiet:
        print(file=sys.stderr)


def check_case(case: Case, paths: Paths, telemetry: Telemetry, mock: MockOpenAI) -> None:
    """Both paths do what the case claims before anything is timed.

    Same chunks seen by the caller (the injected usage chunk is hidden), usage asked
    for only by the instrumented side and only when the case injects, one span per
    instrumented call and none from the baseline, with the usage on it. In the A/A
    control the inactive wrapper must change nothing: no injection and no span.
    """
    base_chunks = paths.baseline()
    base_usage = mock.last_wanted_usage
    instr_chunks = paths.instrumented()
    instr_usage = mock.last_wanted_usage
    expected = case.chunks + (1 if case.user_usage else 0)  # the user's own usage chunk
    if base_chunks != instr_chunks or (case.chunks and instr_chunks != expected):
        raise SystemExit(f"{case.title}: the caller saw {base_chunks} vs {instr_chunks} chunks")
    if case.user_usage:
        if not (base_usage and instr_usage):
            raise SystemExit(f"{case.title}: include_usage sent: {base_usage} / {instr_usage}")
    elif case.chunks and (base_usage or instr_usage is not case.injects):
        raise SystemExit(f"{case.title}: include_usage sent: {base_usage} / {instr_usage}")
    if telemetry.exporter is None:  # traces ablated: no spans to look at
        return
    before = telemetry.flush()
    paths.baseline()
    if telemetry.flush() != before:
        raise SystemExit(f"{case.title}: the baseline path produced a span")
    paths.instrumented()
    after = telemetry.flush()
    if case.control:
        if after != before:
            raise SystemExit(f"{case.title}: the inactive wrapper produced a span")
        return
    span = telemetry.exporter.last if after == before + 1 else None
    if span is None:
        raise SystemExit(f"{case.title}: the instrumented path did not produce one span")
    attributes = span.attributes or {}
    # The usage the server reported. Usage we estimated ourselves (when the server
    # sends none) is marked as such, and does not count here.
    has_usage = (
        "gen_ai.usage.output_tokens" in attributes
        and attributes.get(USAGE_SOURCE, "response") == "response"
    )
    if has_usage is not (case.chunks == 0 or case.injects or case.user_usage):
        raise SystemExit(f"{case.title}: usage on the span: {has_usage}")


# --------------------------------------------------------------------------- report


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms"


def _us(ns: float) -> str:
    return f"{ns / 1e3:.2f} µs"


def summarise(
    meta: Mapping[str, Any], per_process: Sequence[Sequence[Sequence[float]]]
) -> dict[str, Any]:
    """One case's result from the rounds of every process, pooled.

    `per_process` holds each process's (baseline, instrumented) per call, one pair a
    round. The headline figures are the median and quartiles of all rounds together;
    each process's own medians are kept too, since how far they spread shows the
    per-process bias that pooling averages out.
    """
    rounds = [(base, instr) for process in per_process for base, instr in process]
    base = statistics.median(b for b, _ in rounds)
    instr = statistics.median(i for _, i in rounds)
    q1, added, q3 = quartiles([i - b for b, i in rounds])
    processes = [
        {
            "rounds": len(process),
            "baseline_ns": statistics.median(b for b, _ in process),
            "instrumented_ns": statistics.median(i for _, i in process),
            "added_ns": statistics.median(i - b for b, i in process),
        }
        for process in per_process
    ]
    target_ns = meta["target_ns"]
    result: dict[str, Any] = {
        "case": meta["case"],
        "title": meta["title"],
        "control": meta["control"],
        "rounds": len(rounds),
        "batch": meta["batch"],
        "chunks": meta["chunks"],
        "baseline_ns": base,
        "instrumented_ns": instr,
        "added_ns": added,
        "added_q1_ns": q1,
        "added_q3_ns": q3,
        "added_pct": 100 * added / base if base else None,
        "added_process_min_ns": min(p["added_ns"] for p in processes),
        "added_process_max_ns": max(p["added_ns"] for p in processes),
        "target_ns": target_ns,
        "passed": None if target_ns is None else added <= target_ns,
        "per_process": processes,
        "per_round_ns": [list(pair) for pair in rounds],
    }
    if meta["chunks"] and not meta["control"] and meta["case"] != "stream_short":
        chunks = meta["chunks"]
        result["added_per_chunk_ns"] = added / chunks
        result["added_per_chunk_q1_ns"] = q1 / chunks
        result["added_per_chunk_q3_ns"] = q3 / chunks
    return result


def pool(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each case summarised over the rounds of all processes' reports, in CASE_KEYS order."""
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for report in reports:
        for res in report["results"]:
            by_case.setdefault(res["case"], []).append(res)
    results = [
        summarise(parts[0], [part["per_round_ns"] for part in parts]) for parts in by_case.values()
    ]
    results.sort(key=lambda res: CASE_KEYS.index(res["case"]))
    return results


def table(results: list[dict[str, Any]], ablated: bool = False, processes: int = 1) -> str:
    """The Markdown table; the per-process column only when there were several."""
    spread = processes > 1
    lines = [
        "| case | baseline per call | instrumented | added (median) | IQR |"
        + (f" {processes} process medians |" if spread else "")
        + " target |",
        "|---|---:|---:|---:|---:|" + ("---:|" if spread else "") + "---|",
    ]
    for res in results:
        target = "—"
        if res["target_ns"] is not None and ablated:
            target = f"≤ {res['target_ns'] / 1e6:g} ms (n/a: ablated)"
        elif res["target_ns"] is not None:
            verdict = "PASS" if res["passed"] else "FAIL"
            target = f"≤ {res['target_ns'] / 1e6:g} ms {verdict}"
        by_process = (
            f" {_ms(res['added_process_min_ns'])} … {_ms(res['added_process_max_ns'])} |"
            if spread
            else ""
        )
        lines.append(
            f"| {res['title']} | {_ms(res['baseline_ns'])} | {_ms(res['instrumented_ns'])} "
            f"| {_ms(res['added_ns'])} ({res['added_pct']:+.1f}%) "
            f"| {_ms(res['added_q1_ns'])} … {_ms(res['added_q3_ns'])} |{by_process} {target} |"
        )
    for res in results:
        if "added_per_chunk_ns" in res:
            chunks = res["chunks"]
            by_process = (
                f" {_us(res['added_process_min_ns'] / chunks)} … "
                f"{_us(res['added_process_max_ns'] / chunks)} |"
                if spread
                else ""
            )
            lines.append(
                f"| ↳ per chunk ({res['title']} / {chunks}) | | "
                f"| {_us(res['added_per_chunk_ns'])} "
                f"| {_us(res['added_per_chunk_q1_ns'])} … {_us(res['added_per_chunk_q3_ns'])} "
                f"|{by_process} — |"
            )
    by_key = {res["case"]: res for res in results}
    if "stream" in by_key and "stream_short" in by_key:
        # What a chunk costs beyond the per-stream part the short stream shows.
        extra = by_key["stream"]["chunks"] - by_key["stream_short"]["chunks"]
        each = (by_key["stream"]["added_ns"] - by_key["stream_short"]["added_ns"]) / extra
        lines.append(
            f"| ↳ per chunk beyond the per-stream part ((stream {CHUNKS} - stream"
            f" {SHORT_CHUNKS}) / {extra}, medians) | | | {_us(each)} | |"
            + (" |" if spread else "")
            + " — |"
        )
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def environment(http: ModuleType) -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "openai": openai.__version__,
        "http_client": f"{http.__name__} {_version(http.__name__)}",
        "opentelemetry-api": _version("opentelemetry-api"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "opentelemetry-instrumentation-openai-usage": _version(
            "opentelemetry-instrumentation-openai-usage"
        ),
        "wrapt": _version("wrapt"),
        "pydantic": _version("pydantic"),
    }


# --------------------------------------------------------------------------- main

MIN_WORKER_ROUNDS = 10  # fewer, and a worker's own median would say little


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CPU time added by opentelemetry-instrumentation-openai-usage per call."
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=5,
        help="worker processes, run one after another, each with its own PYTHONHASHSEED; "
        "the rounds are split between them (5; 1 = measure in this process)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=100,
        help=f"A/B rounds per case, in all processes together; at least {MIN_WORKER_ROUNDS} "
        "per worker (100)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=20,
        help="non-streamed calls per timed batch (20); streamed cases use K/10, at least 1",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--span-processor",
        choices=("batch", "simple"),
        default="batch",
        help="BatchSpanProcessor (default, as in production) or SimpleSpanProcessor",
    )
    parser.add_argument(
        "--ablate",
        choices=("none", "traces", "metrics", "both"),
        default="none",
        help="give instrument() the API's no-op tracer and/or meter provider, to see "
        "what the SDK's span / metric work costs (diagnosis only; targets not meaningful)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="untimed calls per side first, in each process (20); streamed cases use half",
    )
    parser.add_argument("--keep-gc", action="store_true", help="leave gc enabled while timing")
    parser.add_argument(
        "--cases",
        default=",".join(CASE_KEYS),
        help=f"comma-separated subset of {','.join(CASE_KEYS)} (all)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # Set by the parent on its workers ("i/N"): measure, write --json, print no table.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cases = [key.strip() for key in args.cases.split(",") if key.strip()]
    unknown = sorted(set(args.cases) - set(CASE_KEYS))
    if unknown or not args.cases:
        parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASE_KEYS)}")
    if args.rounds < 1 or args.batch < 1 or args.warmup < 0 or args.processes < 1:
        parser.error("--rounds, --batch and --processes must be at least 1, --warmup at least 0")
    if args.worker and (args.processes != 1 or not args.json):
        parser.error("--worker needs --processes 1 and --json")
    return args


def split_rounds(total: int, processes: int) -> list[int]:
    """The rounds each worker runs: `total` shared out, at least MIN_WORKER_ROUNDS each.

    Sharing (rather than `total` per worker) keeps the wall time about that of one
    process: the pooled median needs the rounds, not more of them per process.
    """
    if processes == 1:
        return [total]
    share, extra = divmod(total, processes)
    return [max(MIN_WORKER_ROUNDS, share + (i < extra)) for i in range(processes)]


def describe(args: argparse.Namespace, stream_batch: int) -> str:
    processor = "BatchSpanProcessor" if args.span_processor == "batch" else "SimpleSpanProcessor"
    traces = f"SDK TracerProvider + {processor} -> no-op exporter (spans dropped)"
    meters = "SDK MeterProvider + InMemoryMetricReader (not collected while timing)"
    if args.ablate in ("traces", "both"):
        traces = "API NoOpTracerProvider (ABLATED)"
    if args.ablate in ("metrics", "both"):
        meters = "API NoOpMeterProvider (ABLATED)"
    gc_mode = (
        "gc enabled, collected between batches"
        if args.keep_gc
        else "gc disabled in timed batches, collected between them (warm-up survivors frozen)"
    )
    counts = split_rounds(args.rounds, args.processes)
    if args.processes == 1:
        where = f"one process; {counts[0]} rounds"
    else:
        each = f"{counts[0]}" if len(set(counts)) == 1 else f"{min(counts)} to {max(counts)}"
        where = (
            f"{args.processes} worker processes one after another (PYTHONHASHSEED "
            f"1..{args.processes}), rounds pooled; {sum(counts)} rounds ({each} per process)"
        )
    return (
        f"{traces}; {meters}; clock time.process_time_ns (all threads); {gc_mode}; "
        f"{where} of {args.batch} calls / {stream_batch} streams "
        f"per side, order alternating; {args.warmup} warm-up calls / {args.warmup // 2} streams "
        "per side and process"
    )


CASE_KEYS = (
    "call",
    "stream",
    "stream_short",
    "stream_user_usage",
    "stream_no_inject",
    "async_stream",
    "null",
)


def build_cases(
    args: argparse.Namespace,
    client: Any,
    aclient: Any,
    loop: asyncio.AbstractEventLoop,
    instrumentor: OpenAIUsageInstrumentor,
) -> list[tuple[dict[str, Any], list[tuple[Case, Paths]]]]:
    """The selected cases, grouped by the instrument() settings they need."""
    k_stream = max(1, args.batch // 10)
    title = f"stream {CHUNKS} chunks"
    default: list[tuple[Case, Paths]] = []
    no_inject: list[tuple[Case, Paths]] = []
    if "call" in args.cases:
        default.append(
            (
                Case("call", "non-streamed call", args.batch, 0, TARGET_CALL_MS, False),
                sync_paths(client, stream=False),
            )
        )
    if "stream" in args.cases:
        default.append(
            (
                Case("stream", title, k_stream, CHUNKS, TARGET_STREAM_MS, True),
                sync_paths(client, stream=True),
            )
        )
    if "stream_short" in args.cases:
        default.append(
            (
                Case(
                    "stream_short",
                    f"stream {SHORT_CHUNKS} chunks",
                    k_stream,
                    SHORT_CHUNKS,
                    None,
                    True,
                ),
                sync_paths(client, stream=True, short=True),
            )
        )
    if "stream_user_usage" in args.cases:
        # The same bytes and chunks on both sides: what our own code costs, without
        # the SDK's parsing of the usage data that injection asks the server for.
        default.append(
            (
                Case(
                    "stream_user_usage",
                    f"{title}, caller asks include_usage (both sides)",
                    k_stream,
                    CHUNKS,
                    None,
                    False,
                    user_usage=True,
                ),
                sync_paths(client, stream=True, user_usage=True),
            )
        )
    if "async_stream" in args.cases:
        default.append(
            (
                Case("async_stream", f"async {title}", k_stream, CHUNKS, None, True),
                async_paths(aclient, loop),
            )
        )
    if "null" in args.cases:
        # The `stream` request again, through our wrapper made inactive: costs ~µs,
        # so its median is the bias of the method itself.
        default.append(
            (
                Case(
                    "null",
                    f"A/A control: {title}, wrapper inactive",
                    k_stream,
                    CHUNKS,
                    None,
                    False,
                    control=True,
                ),
                inactive_paths(sync_paths(client, stream=True), instrumentor),
            )
        )
    if "stream_no_inject" in args.cases:
        no_inject.append(
            (
                Case("stream_no_inject", f"{title}, injection off", k_stream, CHUNKS, None, False),
                sync_paths(client, stream=True),
            )
        )
    groups = [({}, default), ({"inject_stream_usage": False}, no_inject)]
    return [(settings, cases) for settings, cases in groups if cases]


def check_patched() -> None:
    """The instrumented path goes through our wrapper around the very function we time."""
    for cls, name, original in (
        (Completions, "create", SDK_CREATE),
        (AsyncCompletions, "create", SDK_ACREATE),
        (SyncAPIClient, "request", SDK_REQUEST),
        (AsyncAPIClient, "request", SDK_AREQUEST),
    ):
        patched = cls.__dict__[name]
        if patched is original or getattr(patched, "__wrapped__", None) is not original:
            raise SystemExit(f"{cls.__name__}.{name} is not wrapped around the SDK's function")


def measure_here(args: argparse.Namespace) -> dict[str, Any]:
    """Run every selected case in this process: its report (one entry of what `pool` takes)."""
    http = http_module()
    mock = MockOpenAI(http, CHUNKS)
    client = sync_client(http, mock)
    aclient = openai.AsyncOpenAI(
        http_client=http.AsyncClient(transport=http.MockTransport(mock.async_handler)),
        **CLIENT_OPTIONS,
    )
    loop = asyncio.new_event_loop()
    instrumentor = OpenAIUsageInstrumentor()
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for settings, cases in build_cases(args, client, aclient, loop, instrumentor):
            telemetry = Telemetry.create(args.span_processor, args.ablate)
            instrumentor.instrument(
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
                **settings,
            )
            try:
                check_patched()
                for case, paths in cases:
                    run_case(case, paths, telemetry, mock, args)
                    results.append(summarise(case.meta(), [case.rounds_ns]))
            finally:
                instrumentor.uninstrument()
                telemetry.shutdown()
    finally:
        client.close()
        loop.run_until_complete(aclient.close())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return {
        "hashseed": os.environ.get("PYTHONHASHSEED", "random"),
        "rounds": args.rounds,
        "elapsed_s": time.perf_counter() - started,
        "results": results,
    }


def worker_argv(args: argparse.Namespace, index: int, rounds: int, path: str) -> list[str]:
    """The command line of worker `index`: this script, the same options, its own rounds."""
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        f"{index}/{args.processes}",
        "--processes",
        "1",
        "--json",
        path,
        "--rounds",
        str(rounds),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--span-processor",
        args.span_processor,
        "--ablate",
        args.ablate,
        "--cases",
        ",".join(args.cases),
    ]
    if args.keep_gc:
        argv.append("--keep-gc")
    if args.quiet:
        argv.append("--quiet")
    return argv


def measure_in_workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the cases in `args.processes` fresh processes, one after another: their reports.

    Each worker gets its own PYTHONHASHSEED (1..N), so dict and set layouts, and
    with them much of what lands where in memory, differ from one to the next: the
    per-process bias becomes one more source of variation that pooling averages,
    instead of a constant offset. Sequential, because two workers at once on a
    2-core machine would compete with each other (and with the span processor's
    thread) for the cores.
    """
    reports: list[dict[str, Any]] = []
    counts = split_rounds(args.rounds, args.processes)
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        for index, rounds in enumerate(counts, start=1):
            path = os.path.join(tmp, f"worker-{index}.json")
            env = {**os.environ, "PYTHONHASHSEED": str(index)}
            if not args.quiet:
                print(
                    f"worker {index}/{args.processes}: PYTHONHASHSEED={index}, {rounds} rounds",
                    file=sys.stderr,
                )
            status = subprocess.run(worker_argv(args, index, rounds, path), env=env).returncode
            if status != 0:
                raise SystemExit(f"worker {index}/{args.processes} failed (exit status {status})")
            with open(path, encoding="utf-8") as fh:
                reports.append(json.load(fh))
    return reports


def write_json(path: str, report: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        write_json(args.json, measure_here(args))
        return 0

    setup = describe(args, max(1, args.batch // 10))
    if not args.quiet:
        print(f"setup: {setup}", file=sys.stderr)
    started = time.perf_counter()
    reports = [measure_here(args)] if args.processes == 1 else measure_in_workers(args)
    elapsed = time.perf_counter() - started
    results = pool(reports)

    env = environment(http_module())
    print(table(results, ablated=args.ablate != "none", processes=len(reports)))
    print()
    control = next((res for res in results if res["control"]), None)
    if control is not None:
        print(
            f"A/A control: the inactive wrapper really costs ~µs, so its {_ms(control['added_ns'])}"
            " is this run's residual bias; added times within about that of zero are noise."
        )
    print(
        "Versions: "
        + ", ".join(f"{name} {env[name]}" for name in ("python", "openai", "opentelemetry-sdk"))
        + f" (wrapt {env['wrapt']}, pydantic {env['pydantic']}, "
        + f"{env['http_client']} MockTransport)."
    )
    print(f"Setup: {setup}. Wall time {elapsed:.0f} s.")
    missed = [res["title"] for res in results if res["passed"] is False]
    if args.ablate != "none":
        print("Ablated run: for diagnosis only, the targets do not apply.")
        missed = []
    if args.json:
        processes = [
            {key: report[key] for key in ("hashseed", "rounds", "elapsed_s")} for report in reports
        ]
        write_json(
            args.json,
            {
                "environment": env,
                "setup": setup,
                "wall_time_s": elapsed,
                "processes": processes,
                "results": results,
                "missed": missed,
            },
        )
    if missed:
        print(f"Missed targets: {', '.join(missed)}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
