"""The benchmark scripts that print a table per case run on this SDK line and fill it."""

from __future__ import annotations

import inspect
import json
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


def _recorded_call(case_id: str, completion_tokens: int) -> str:
    """One recorded call in the calibration files' shape: the README's worked example."""
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What's 1+1? "
                                                     "Answer in one word."}]}  # fmt: skip
    body = {"id": "chatcmpl-x", "created": 1733011200, "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "Two."}}]}  # fmt: skip
    return json.dumps({
        "case_id": case_id, "endpoint": "chat.completions", "status": 200, "model": "gpt-4o-mini",
        "is_stream": False, "request_json": request, "response_body": json.dumps(body),
        "usage": {"prompt_tokens": 18, "completion_tokens": completion_tokens},
    })  # fmt: skip


def test_estimate_accuracy_reports_each_data_file_then_all_of_them(tmp_path: Path) -> None:
    exact, over = tmp_path / "exact.jsonl", tmp_path / "over.jsonl"
    exact.write_text(_recorded_call("exact#0", 2) + "\n")
    over.write_text(_recorded_call("over#0", 3) + "\n")  # billed one token more
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "estimate_accuracy.py"), "--misses",
         "--data", str(exact), "--data", str(over)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sections = done.stdout.split("\n=== ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        f"exact.jsonl: {exact} (1 records)",
        f"over.jsonl: {over} (1 records)",
        "combined: the built-in examples and the 2 files above",
    ]
    headline = "chat completions, non-reasoning models:    "
    completions = [line for s in sections for line in s.splitlines() if line.startswith(headline)]
    assert [line.removeprefix(headline) for line in completions] == [
        "1/1 exact (100%), MAE 0.00",
        "0/1 exact (0%), MAE 1.00",
        "1/2 exact (50%), MAE 0.50",
    ]
    assert "estimate 18/2, reported 18/3  over#0" in sections[1]
    assert "over#0" not in sections[0] + sections[2]  # each miss listed once, under its file
