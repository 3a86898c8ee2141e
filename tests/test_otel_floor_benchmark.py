"""`benchmarks/otel_floor.py` replays what a call recorded through the OpenTelemetry SDK alone."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from openai.resources.chat.completions import Completions

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "otel_floor.py"


@pytest.mark.skipif(
    "max_completion_tokens" not in inspect.signature(Completions.create).parameters,
    reason="the benchmarks' request uses max_completion_tokens, newer than this SDK",
)
def test_otel_floor_replays_each_calls_span_and_histogram_points() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--iterations", "20", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| case")
    }
    assert set(rows) == {"non-streamed call", "stream 200 chunks"}
    # A call: duration and the input and output token points; a stream adds time to first
    # chunk and time per output chunk. The span carries the conventions' attributes.
    assert rows["non-streamed call"][1] == "3"
    assert rows["stream 200 chunks"][1] == "5"
    for attributes, _points, *times in rows.values():
        assert int(attributes) >= 15
        assert all(t.endswith(" µs") and float(t.removesuffix(" µs")) > 0 for t in times), times
