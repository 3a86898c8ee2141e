"""Python bytecodes executed per call: ours, OpenTelemetry's and the SDK's, exactly.

    python benchmarks/bytecodes.py [--top N]

`overhead.py` measures what users pay, CPU time, but on a shared 2-core VM its medians
move by tens of microseconds a call and by about a millisecond a stream between runs,
which hides any change smaller than that. This script counts instead: the bytecodes
the interpreter executes for one call, with `sys.settrace` opcode events (`sys.monitoring`
instruction events where those are missing, as on Python 3.12.0-3.12.1), attributed
by the file they run in. The count is the same on every run, so a change to our code
shows as what it is. It is a proxy, not a time: C functions (dict building, the SDK's
parsing in pydantic-core) cost time without bytecodes, and code that runs once between
long stretches of other code runs slower per bytecode than in a tight loop.

Cases and setup are `overhead.py`'s (same payloads, same in-process transport, real
OpenTelemetry SDK providers), each call made once untraced first so caches are filled.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from types import CodeType, FrameType
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import overhead

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor

OURS = f"{os.sep}openai_usage{os.sep}"
OTEL = f"{os.sep}opentelemetry{os.sep}"


def _owner(filename: str) -> str:
    if OURS in filename:
        return "ours"
    if OTEL in filename:
        return "opentelemetry"
    return "sdk and the rest"


def count(call: Callable[[], Any]) -> tuple[Counter[str], Counter[str]]:
    """Bytecodes executed by one `call()`: by owner, and by our functions."""
    owners: Counter[str] = Counter()
    functions: Counter[str] = Counter()

    def seen(code: CodeType) -> None:
        owner = _owner(code.co_filename)
        owners[owner] += 1
        if owner == "ours":
            functions[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1

    if _OPCODE_EVENTS:
        _count_traced(call, seen)
    else:
        _count_monitored(call, seen)
    return owners, functions


def _count_traced(call: Callable[[], Any], seen: Callable[[CodeType], None]) -> None:
    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            seen(frame.f_code)
        return trace

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)


def _count_monitored(call: Callable[[], Any], seen: Callable[[CodeType], None]) -> None:
    """`sys.monitoring`'s instruction events (3.12+), for the Pythons whose `settrace`
    sends no opcode events (3.12.0 and 3.12.1). They fire in every thread: only the
    caller's counts, as with `settrace`."""
    monitoring = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
    caller = threading.get_ident()

    def instruction(code: CodeType, offset: int) -> None:
        if threading.get_ident() == caller:
            seen(code)

    tool = monitoring.PROFILER_ID
    monitoring.use_tool_id(tool, "bytecodes.py")
    monitoring.register_callback(tool, monitoring.events.INSTRUCTION, instruction)
    monitoring.set_events(tool, monitoring.events.INSTRUCTION)
    try:
        call()
    finally:
        monitoring.set_events(tool, 0)
        monitoring.register_callback(tool, monitoring.events.INSTRUCTION, None)
        monitoring.free_tool_id(tool)


def _sends_opcode_events() -> bool:
    codes: list[CodeType] = []
    _count_traced(lambda: None, codes.append)
    return bool(codes)


_OPCODE_EVENTS = _sends_opcode_events() or not hasattr(sys, "monitoring")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=0, help="also list our N busiest functions")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    http = overhead.http_module()
    client = overhead.sync_client(http, overhead.MockOpenAI(http, overhead.CHUNKS))
    telemetry = overhead.Telemetry.create("batch", "none")
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    rows = []
    try:
        for title, stream in (
            ("non-streamed call", False),
            (f"stream {overhead.CHUNKS} chunks", True),
        ):
            paths = overhead.sync_paths(client, stream=stream)
            for _ in range(3):  # caches filled, encodings loaded, lazy imports done
                paths.baseline()
                paths.instrumented()
            base, _ = count(paths.baseline)
            instrumented, functions = count(paths.instrumented)
            added_sdk = instrumented["sdk and the rest"] - base["sdk and the rest"]
            rows.append((title, sum(base.values()), instrumented, added_sdk, functions))
    finally:
        instrumentor.uninstrument()
        telemetry.shutdown()
        client.close()

    print(
        "| case | SDK alone | added: ours | added: OpenTelemetry SDK"
        " | added: elsewhere | added in all |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for title, base_total, instrumented, added_sdk, _ in rows:
        added = instrumented["ours"] + instrumented["opentelemetry"] + added_sdk
        print(
            f"| {title} | {base_total:,} | {instrumented['ours']:,} |"
            f" {instrumented['opentelemetry']:,} | {added_sdk:,} | {added:,} |"
        )
    if args.top:
        for title, _, _, _, functions in rows:
            print(f"\nOur busiest functions, {title}:")
            for name, n in functions.most_common(args.top):
                print(f"{n:8,}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
