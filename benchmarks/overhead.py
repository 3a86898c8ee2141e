#!/usr/bin/env python
"""CPU time the instrumentation adds to `chat.completions.create`, in one process.

    python benchmarks/overhead.py [--rounds N] [--batch K] [--check] [--json out.json]

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

Method
    Instrument once per configuration and keep two code paths: the instrumented
    one calls `client.chat.completions.create(...)` as users do (through wrapt's
    wrapper, our span, our stream proxy); the baseline calls the SDK's own function,
    `Completions.__dict__["create"].__wrapped__`, on the same client object. This is
    fairer than instrument()/uninstrument() around every batch: both paths run in the
    same warmed process on the same client and connection pool, nothing is re-created
    between batches (re-instrumenting would re-create instruments on the same meter,
    log duplicate-instrument warnings and churn caches inside the timed region's
    neighbourhood), and the baseline is the true unwrapped SDK (no wrapt pass-through).
    The baseline skips only the creation of a bound method (tens of ns).

    Rounds alternate: each round times a batch of K baseline calls and a batch of K
    instrumented calls, swapping which goes first every round to cancel drift. The
    figure per round is (instrumented - baseline) / K; the table shows the median over
    rounds and its interquartile range. The clock is `time.process_time_ns()` (CPU
    time of all threads of the process). `gc.collect()` runs between batches and the
    collector is disabled during timed batches (so a collection triggered by one side
    is not billed to the other); `--keep-gc` leaves it enabled instead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

import openai
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

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor

# --------------------------------------------------------------------------- payloads

CHUNKS = 200  # chunks the caller sees per stream: role chunk, 198 content chunks, finish chunk
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
_WORDS = (
    " Sunlight is made of many colours, and as it passes through the atmosphere the"
    " short blue wavelengths are scattered by the small molecules of nitrogen and"
    " oxygen much more strongly than the longer red ones. This is called Rayleigh"
    " scattering, and its strength grows with the inverse fourth power of the"
    " wavelength."
).split(" ")[1:]


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


class MockOpenAI:
    """Pre-built responses; answers each request as sent (both sides pay the same regexes)."""

    def __init__(self, http: ModuleType, chunks: int) -> None:
        self.http = http
        self.completion = completion_body()
        self.plain_events = stream_events(chunks, include_usage=False)
        self.usage_events = stream_events(chunks, include_usage=True)
        common = {
            "openai-organization": "bench-org",
            "openai-processing-ms": "321",
            "openai-version": "2020-10-01",
            "x-request-id": "req_0123456789abcdef0123456789abcdef",
        }
        self.json_headers = {**common, "content-type": "application/json"}
        self.sse_headers = {**common, "content-type": "text/event-stream; charset=utf-8"}

    def _events(self, request: Any) -> list[bytes] | None:
        body: bytes = request.content
        if not _IS_STREAM.search(body):
            return None
        return self.usage_events if _WANTS_USAGE.search(body) else self.plain_events

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
    exporter: DroppingExporter
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    @classmethod
    def create(cls, processor: str) -> Telemetry:
        exporter = DroppingExporter()
        tracer_provider = TracerProvider()
        if processor == "batch":
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        else:
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        return cls(exporter, tracer_provider, meter_provider)

    def last_span(self) -> ReadableSpan | None:
        self.tracer_provider.force_flush()
        return self.exporter.last

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


# --------------------------------------------------------------------------- cases

Call = Callable[[], int]  # one call; returns the number of chunks seen (1 for non-streamed)
ACall = Callable[[], Awaitable[int]]


@dataclass
class Case:
    key: str
    title: str
    settings: dict[str, Any]  # extra instrument() arguments
    batch: int
    chunks: int  # divisor for the per-chunk figure; 0 for non-streamed
    target_ms: float | None
    is_async: bool = False
    rounds_ns: list[tuple[float, float]] = field(default_factory=list)  # per-call (base, instr)

    @property
    def added(self) -> list[float]:
        return [instr - base for base, instr in self.rounds_ns]


@dataclass
class Paths:
    """The two code paths of one case, and how to time a batch of either."""

    baseline: Call | ACall
    instrumented: Call | ACall


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


def sync_paths(client: Any, stream: bool) -> Paths:
    completions = client.chat.completions
    raw = Completions.__dict__["create"].__wrapped__  # the SDK's own function
    if stream:
        stream_request = {**REQUEST, "stream": True}
        return Paths(
            baseline=lambda: _read(raw(completions, **stream_request)),
            instrumented=lambda: _read(completions.create(**stream_request)),
        )

    def baseline() -> int:
        raw(completions, **REQUEST)
        return 1

    def instrumented() -> int:
        completions.create(**REQUEST)
        return 1

    return Paths(baseline=baseline, instrumented=instrumented)


def async_paths(client: Any) -> Paths:
    completions = client.chat.completions
    raw = AsyncCompletions.__dict__["create"].__wrapped__
    stream_request = {**REQUEST, "stream": True}

    async def baseline() -> int:
        return await _aread(await raw(completions, **stream_request))

    async def instrumented() -> int:
        return await _aread(await completions.create(**stream_request))

    return Paths(baseline=baseline, instrumented=instrumented)


def _sync_batch(call: Call, k: int) -> int:
    clock = time.process_time_ns
    start = clock()
    for _ in range(k):
        call()
    return clock() - start


async def _async_batch(call: ACall, k: int) -> int:
    clock = time.process_time_ns
    start = clock()
    for _ in range(k):
        await call()
    return clock() - start


class Runner:
    def __init__(self, loop: asyncio.AbstractEventLoop, keep_gc: bool) -> None:
        self.loop = loop
        self.keep_gc = keep_gc

    def once(self, case: Case, call: Call | ACall) -> int:
        if case.is_async:
            return self.loop.run_until_complete(call())  # type: ignore[arg-type]
        return call()  # type: ignore[return-value]

    def batch(self, case: Case, call: Call | ACall, k: int) -> int:
        gc.collect()
        if not self.keep_gc:
            gc.disable()
        try:
            if case.is_async:
                return self.loop.run_until_complete(_async_batch(call, k))  # type: ignore[arg-type]
            return _sync_batch(call, k)  # type: ignore[arg-type]
        finally:
            gc.enable()


def run_case(
    case: Case,
    paths: Paths,
    runner: Runner,
    telemetry: Telemetry,
    rounds: int,
    warmup: int,
    progress: bool,
) -> None:
    # Warm up both paths (imports, pydantic validators, caches, connection pool).
    for _ in range(warmup):
        runner.once(case, paths.baseline)
        runner.once(case, paths.instrumented)
    check_case(case, paths, runner, telemetry)
    k = case.batch
    for r in range(rounds):
        if r % 2 == 0:
            base = runner.batch(case, paths.baseline, k)
            instr = runner.batch(case, paths.instrumented, k)
        else:
            instr = runner.batch(case, paths.instrumented, k)
            base = runner.batch(case, paths.baseline, k)
        case.rounds_ns.append((base / k, instr / k))
        if progress:
            print(f"\r  {case.title}: round {r + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)


def check_case(case: Case, paths: Paths, runner: Runner, telemetry: Telemetry) -> None:
    """Both paths do what the case claims: only one makes spans, the caller sees the same."""
    telemetry.last_span()
    before = telemetry.exporter.count
    base_chunks = runner.once(case, paths.baseline)
    telemetry.last_span()
    if telemetry.exporter.count != before:
        raise SystemExit(f"{case.title}: the baseline path produced a span")
    instr_chunks = runner.once(case, paths.instrumented)
    span = telemetry.last_span()
    if telemetry.exporter.count != before + 1 or span is None:
        raise SystemExit(f"{case.title}: the instrumented path did not produce one span")
    if base_chunks != instr_chunks or (case.chunks and instr_chunks != case.chunks):
        raise SystemExit(f"{case.title}: chunks seen {base_chunks} vs {instr_chunks}")
    attributes = span.attributes or {}
    injected = attributes.get("openai_usage.stream.include_usage_injected")
    has_usage = "gen_ai.usage.output_tokens" in attributes
    expect_injection = case.chunks > 0 and case.settings.get("inject_stream_usage", True)
    if case.chunks and bool(injected) != expect_injection:
        raise SystemExit(f"{case.title}: include_usage_injected={injected!r}")
    if has_usage != (case.chunks == 0 or expect_injection):
        raise SystemExit(f"{case.title}: usage on span = {has_usage}")


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


def summarise(case: Case) -> dict[str, Any]:
    base = statistics.median(b for b, _ in case.rounds_ns)
    instr = statistics.median(i for _, i in case.rounds_ns)
    q1, added, q3 = quartiles(case.added)
    result: dict[str, Any] = {
        "case": case.key,
        "title": case.title,
        "rounds": len(case.rounds_ns),
        "batch": case.batch,
        "baseline_ns": base,
        "instrumented_ns": instr,
        "added_ns": added,
        "added_q1_ns": q1,
        "added_q3_ns": q3,
        "added_pct": 100 * added / base if base else None,
        "target_ns": case.target_ms * 1e6 if case.target_ms is not None else None,
        "passed": None if case.target_ms is None else added <= case.target_ms * 1e6,
        "per_round_ns": [list(pair) for pair in case.rounds_ns],
    }
    if case.chunks:
        result["chunks"] = case.chunks
        result["added_per_chunk_ns"] = added / case.chunks
        result["added_per_chunk_q1_ns"] = q1 / case.chunks
        result["added_per_chunk_q3_ns"] = q3 / case.chunks
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | baseline per call | instrumented | added (median) | IQR | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for res in results:
        target = "—"
        if res["target_ns"] is not None:
            verdict = "PASS" if res["passed"] else "FAIL"
            target = f"≤ {res['target_ns'] / 1e6:g} ms {verdict}"
        lines.append(
            f"| {res['title']} | {_ms(res['baseline_ns'])} | {_ms(res['instrumented_ns'])} "
            f"| {_ms(res['added_ns'])} ({res['added_pct']:+.1f}%) "
            f"| {_ms(res['added_q1_ns'])} … {_ms(res['added_q3_ns'])} | {target} |"
        )
    for res in results:
        if res.get("chunks"):
            lines.append(
                f"| ↳ per chunk ({res['title']} / {res['chunks']}) | | "
                f"| {_us(res['added_per_chunk_ns'])} "
                f"| {_us(res['added_per_chunk_q1_ns'])} … {_us(res['added_per_chunk_q3_ns'])} | — |"
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=120, help="A/B rounds per case (120)")
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
    parser.add_argument("--keep-gc", action="store_true", help="leave gc enabled while timing")
    parser.add_argument("--no-async", action="store_true", help="skip the async stream case")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.batch < 1:
        parser.error("--rounds and --batch must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    http = http_module()
    mock = MockOpenAI(http, CHUNKS)
    client_options: dict[str, Any] = {
        "api_key": "sk-bench",
        "base_url": "http://bench.local/v1",
        "max_retries": 0,
    }
    client = openai.OpenAI(
        http_client=http.Client(transport=http.MockTransport(mock.sync_handler)),
        **client_options,
    )
    aclient = openai.AsyncOpenAI(
        http_client=http.AsyncClient(transport=http.MockTransport(mock.async_handler)),
        **client_options,
    )
    loop = asyncio.new_event_loop()
    runner = Runner(loop, args.keep_gc)
    stream_batch = max(1, args.batch // 10)
    warmup = 30

    default = {"inject_stream_usage": True}
    configs: list[tuple[dict[str, Any], list[tuple[Case, Paths]]]] = [
        (
            default,
            [
                (
                    Case("call", "non-streamed call", default, args.batch, 0, TARGET_CALL_MS),
                    sync_paths(client, stream=False),
                ),
                (
                    Case(
                        "stream",
                        f"stream {CHUNKS} chunks",
                        default,
                        stream_batch,
                        CHUNKS,
                        TARGET_STREAM_MS,
                    ),
                    sync_paths(client, stream=True),
                ),
            ],
        ),
        (
            {"inject_stream_usage": False},
            [
                (
                    Case(
                        "stream_no_inject",
                        f"stream {CHUNKS} chunks, injection off",
                        {"inject_stream_usage": False},
                        stream_batch,
                        CHUNKS,
                        None,
                    ),
                    sync_paths(client, stream=True),
                )
            ],
        ),
    ]
    if not args.no_async:
        configs[0][1].append(
            (
                Case(
                    "async_stream",
                    f"async stream {CHUNKS} chunks",
                    default,
                    stream_batch,
                    CHUNKS,
                    None,
                    is_async=True,
                ),
                async_paths(aclient),
            )
        )

    env = environment(http)
    processor = "BatchSpanProcessor" if args.span_processor == "batch" else "SimpleSpanProcessor"
    setup = (
        f"TracerProvider + {processor} -> no-op exporter (spans discarded); "
        "MeterProvider + InMemoryMetricReader (not collected while timing); "
        f"clock time.process_time_ns; gc {'enabled' if args.keep_gc else 'disabled'} "
        f"in timed batches, collected between them; {args.rounds} rounds x "
        f"{args.batch} calls / {stream_batch} streams per batch, alternating order"
    )
    if not args.quiet:
        print(f"setup: {setup}", file=sys.stderr)

    instrumentor = OpenAIUsageInstrumentor()
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for settings, cases in configs:
            telemetry = Telemetry.create(args.span_processor)
            instrumentor.instrument(
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
                **settings,
            )
            try:
                for case, paths in cases:
                    run_case(
                        case, paths, runner, telemetry, args.rounds, warmup, not args.quiet
                    )
                    results.append(summarise(case))
            finally:
                instrumentor.uninstrument()
                telemetry.shutdown()
    finally:
        client.close()
        loop.run_until_complete(aclient.close())
        loop.close()
    elapsed = time.perf_counter() - started

    order = ["call", "stream", "stream_no_inject", "async_stream"]
    results.sort(key=lambda res: order.index(res["case"]))
    print(table(results))
    print()
    print(
        "Versions: "
        + ", ".join(
            f"{name} {env[name]}"
            for name in ("python", "openai", "opentelemetry-sdk", "wrapt", "pydantic")
        )
        + f", transport {env['http_client']}.MockTransport"
    )
    print(f"Setup: {setup}. Wall time {elapsed:.0f} s.")
    missed = [res["title"] for res in results if res["passed"] is False]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {"environment": env, "setup": setup, "results": results, "missed": missed},
                fh,
                indent=2,
            )
    if missed:
        print(f"Missed targets: {', '.join(missed)}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
