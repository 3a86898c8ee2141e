"""The benchmark scripts that print a table per case run on this SDK line and fill it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from openai.resources.chat.completions import Completions

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CASES = {"non-streamed call", "stream 200 chunks"}

pytestmark = pytest.mark.skipif(
    "max_completion_tokens" not in inspect.signature(Completions.create).parameters,
    reason="the benchmarks' request uses max_completion_tokens, newer than this SDK",
)


def table(script: str, *args: str) -> dict[str, list[str]]:
    """Run a benchmark script; its table's rows, by case, without the case column."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| case")
    }


def test_bytecode_counts_name_ours_and_opentelemetry_for_both_cases() -> None:
    rows = table("bytecodes.py")
    assert set(rows) == CASES
    for base, ours, otel, _elsewhere, added in rows.values():
        numbers = [int(v.replace(",", "")) for v in (base, ours, otel, added)]
        assert all(n > 0 for n in numbers), numbers
        assert numbers[3] >= numbers[1] + numbers[2] - 1000  # `added` sums its parts


def test_otel_floor_replays_each_calls_span_and_histogram_points() -> None:
    rows = table("otel_floor.py", "--iterations", "20", "--repeats", "1")
    assert set(rows) == CASES
    # A call: duration and the input and output token points; a stream adds time to first
    # chunk and time per output chunk. The span carries the conventions' attributes.
    assert rows["non-streamed call"][1] == "3"
    assert rows["stream 200 chunks"][1] == "5"
    for attributes, _points, *times in rows.values():
        assert int(attributes) >= 15
        assert all(t.endswith(" µs") and float(t.removesuffix(" µs")) > 0 for t in times), times
