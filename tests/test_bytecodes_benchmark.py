"""`benchmarks/bytecodes.py` runs on this SDK line and attributes the added bytecodes."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from openai.resources.chat.completions import Completions

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bytecodes.py"


@pytest.mark.skipif(
    "max_completion_tokens" not in inspect.signature(Completions.create).parameters,
    reason="the benchmarks' request uses max_completion_tokens, newer than this SDK",
)
def test_bytecode_counts_name_ours_and_opentelemetry_for_both_cases() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| case")
    }
    assert set(rows) == {"non-streamed call", "stream 200 chunks"}
    for base, ours, otel, _elsewhere, added in rows.values():
        numbers = [int(v.replace(",", "")) for v in (base, ours, otel, added)]
        assert all(n > 0 for n in numbers), numbers
        assert numbers[3] >= numbers[1] + numbers[2] - 1000  # `added` sums its parts
