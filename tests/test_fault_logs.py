"""Faults of the network and the server leave the log as quiet as without us.

A refused connection, a stream cut or reset, a read timeout, a chunk that is not
JSON, an error body with HTTP 200, a usage chunk with null or missing counts,
retries by the SDK: these are the user's or the server's faults, never a bug of
ours, so none of them may make the instrumentation log a warning (above all,
`errors.internal_error` must not fire), and repeating one 50 times must not flood
the log (no record per chunk, per retry or per call). Every call goes through
the real SDK to the bundled local server; the log is captured at DEBUG from the
root logger, so a record from any logger is seen.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from opentelemetry.instrumentation import openai_usage
from opentelemetry.instrumentation.openai_usage import errors
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import (
    API_KEY,
    HTTP,
    MESSAGES,
    MID_STREAM_CONNECTION_ERRORS,
    Telemetry,
    collect,
    comparable,
    make_client,
)

pytestmark = pytest.mark.timeout(30)

OURS = "opentelemetry.instrumentation.openai_usage"
PACKAGE_DIR = str(Path(openai_usage.__file__).resolve().parent)
REPEAT = 50  # the same fault, call after call
PER_CALL = 2  # at most this many WARNING+ records, from any logger, per failing call
READ_TIMEOUT_S = 0.03  # the client's read timeout where the server never answers in time
TOKEN_USAGE = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"
PINNED = {"prompt_tokens": 11, "completion_tokens": 3}


# -- the faults ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One faulting call: the request, the client it needs, what the SDK does with it."""

    name: str
    stream: bool
    scenario: str | None  # x-mock-scenario; None for a refused connection
    raises: tuple[type[BaseException], ...]  # what the SDK raises; () when it returns
    delivered: int  # chunks (or the one result) the user holds before the error, or in all
    client: dict[str, Any] = field(default_factory=dict)  # make_client settings
    usage: dict[str, Any] | None = None  # x-mock-usage
    attempts: int = 1  # requests the SDK sends per user call
    stream_options: dict[str, Any] | None = None

    @property
    def refused(self) -> bool:
        return self.scenario is None

    def headers(self) -> dict[str, str]:
        """The headers of one call; fail_first gets an attempt key of its own."""
        headers: dict[str, str] = {}
        if self.scenario is not None:
            headers["x-mock-scenario"] = self.scenario
        if self.scenario is not None and self.scenario.startswith("fail_first"):
            headers["x-mock-attempt-key"] = f"{self.name}-{uuid.uuid4().hex}"
        if self.usage is not None:
            headers["x-mock-usage"] = json.dumps(self.usage)
        return headers


TIMEOUT = {"timeout": HTTP.Timeout(5, read=READ_TIMEOUT_S)}
RETRIES = {"max_retries": 2}
ASKED = {"include_usage": True}
CONNECTION = (openai.APIConnectionError,)
MID_STREAM = MID_STREAM_CONNECTION_ERRORS  # the 1.x SDK lets the HTTP library's error out
TIMED_OUT = (openai.APITimeoutError,)
NOT_JSON = (json.JSONDecodeError,)  # from the SDK's own decoding, unwrapped
API_ERROR = (openai.APIError,)
STREAM = 8  # chunks of the default reply: role, six words, finish (no usage chunk)
FAULTS = {
    f.name: f
    for f in [
        Fault("refused-create", False, None, CONNECTION, 0),
        Fault("refused-stream", True, None, CONNECTION, 0),
        Fault("http_500-create", False, "http_error:500", (openai.InternalServerError,), 0),
        Fault("http_429-stream", True, "http_error:429", (openai.RateLimitError,), 0),
        Fault("cut-create", False, "cut_after:40", CONNECTION, 0),
        Fault("cut-stream", True, "cut_after:3", MID_STREAM, 3),
        Fault("reset-create", False, "reset_after:40", CONNECTION, 0),
        Fault("reset-stream", True, "reset_after:3", MID_STREAM, 3),
        Fault("sse_error-stream", True, "sse_error_after:2", API_ERROR, 2),
        Fault("not_json-create", False, "malformed_after:2", NOT_JSON, 0),
        Fault("not_json-stream", True, "malformed_after:2", NOT_JSON, 2),
        Fault("error_body_200-create", False, "error_body_200", (), 1),  # returned as is
        Fault("error_body_200-stream", True, "error_body_200", API_ERROR, 0),
        Fault("read_timeout-create", False, "hang", TIMED_OUT, 0, TIMEOUT),
        Fault("read_timeout-stream", True, "hang", TIMED_OUT, 0, TIMEOUT),
        Fault("slow_headers-stream", True, "slow_headers:400", TIMED_OUT, 0, TIMEOUT),
        Fault("no_usage-stream", True, "no_usage", (), STREAM),
        Fault("usage_nulls-create", False, "usage_nulls", (), 1),
        Fault("usage_nulls-stream", True, "usage_nulls", (), STREAM),
        Fault(
            "usage_nulls-stream-asked", True, "usage_nulls", (), STREAM + 1, stream_options=ASKED
        ),
        Fault(
            "usage_partial-stream", True, "usage_partial", (), STREAM, usage={"prompt_tokens": 11}
        ),
        Fault("usage_missing-stream", True, "usage_partial", (), STREAM, usage={}),
        Fault("retried-create", False, "fail_first:2", (), 1, RETRIES, PINNED, attempts=3),
        Fault("retried-stream", True, "fail_first:2", (), STREAM, RETRIES, PINNED, attempts=3),
        Fault(
            "retries_exhausted-create",
            False,
            "fail_first:1000",
            (openai.InternalServerError,),
            0,
            RETRIES,
            attempts=3,
        ),
    ]
}
ASYNC_FAULTS = [
    "refused-create",
    "reset-stream",
    "not_json-stream",
    "error_body_200-stream",
    "read_timeout-stream",
    "retried-stream",
]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def fault_client(server: LocalOpenAIServer, fault: Fault, kind: str) -> Any:
    settings = dict(fault.client)
    if not fault.refused:
        return make_client(server, kind, **settings)
    settings.setdefault("max_retries", 0)
    settings.setdefault("timeout", 5)
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    factory = openai.AsyncOpenAI if kind == "async" else openai.OpenAI
    return factory(base_url=base_url, api_key=API_KEY, **settings)


# -- one call, as the user sees it -----------------------------------------------------------

Outcome = tuple[Any, ...]


def request(fault: Fault) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
    kwargs.update(stream=fault.stream, extra_headers=fault.headers())
    if fault.stream_options is not None:
        kwargs["stream_options"] = fault.stream_options
    return kwargs


def raised(exc: BaseException, chunks: list[Any]) -> Outcome:
    """What the user holds after a failed call: the exception, and any chunks before it."""
    cause = type(exc.__cause__)
    return ("raised", type(exc), str(exc), cause, comparable(chunks))


def call(client: Any, fault: Fault) -> Outcome:
    chunks: list[Any] = []
    try:
        result = client.chat.completions.create(**request(fault))
        if not fault.stream:
            return ("returned", comparable([result]))
        for chunk in result:
            chunks.append(chunk)
    except Exception as exc:
        return raised(exc, chunks)
    return ("returned", comparable(chunks))


async def acall(client: Any, fault: Fault) -> Outcome:
    chunks: list[Any] = []
    try:
        result = await client.chat.completions.create(**request(fault))
        if not fault.stream:
            return ("returned", comparable([result]))
        async for chunk in result:
            chunks.append(chunk)
    except Exception as exc:
        return raised(exc, chunks)
    return ("returned", comparable(chunks))


# -- the log ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    """Everything logged, from every logger and thread, at DEBUG and up.

    `internal_error` reports each place once per process: forgotten here, so that a
    place an earlier test already reported would still show up in this one.
    """
    monkeypatch.setattr(errors, "_logged", set())
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=OURS)
    yield caplog


def warnings_of(records: list[logging.LogRecord], prefix: str = "") -> list[str]:
    """The WARNING+ records of the loggers under `prefix` (all loggers by default)."""
    return [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in records
        if r.levelno >= logging.WARNING and r.name.startswith(prefix)
    ]


def ours_in(caught: list[warnings.WarningMessage]) -> list[str]:
    """Python warnings raised from our package's files."""
    return [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if str(Path(w.filename).resolve()).startswith(PACKAGE_DIR)
    ]


def retry_logs(records: list[logging.LogRecord]) -> int:
    """The SDK's own "Retrying request ..." records (INFO, from openai._base_client)."""
    return sum(
        1
        for r in records
        if r.name.startswith("openai") and r.getMessage().startswith("Retrying request")
    )


def assert_quiet(caplog: pytest.LogCaptureFixture, calls: int) -> None:
    """Nothing of ours at WARNING+, nothing from the OpenTelemetry SDK (where a misuse of
    ours, a second `end()` or a bad attribute value, would be warned about), no record
    of ours per call at any level, and at most PER_CALL warnings a call from anyone."""
    collect()  # estimates finished in the background log there, if anywhere
    records = caplog.records
    assert warnings_of(records, OURS) == []
    assert warnings_of(records, "opentelemetry") == []
    assert len([r for r in records if r.name.startswith(OURS)]) <= PER_CALL
    assert len(warnings_of(records)) <= PER_CALL * calls, warnings_of(records)


def assert_spans(
    telemetry: Telemetry, outcome: Outcome, calls: int, server_error: str | None = None
) -> list[ReadableSpan]:
    """One ended span per user call; in ERROR with the SDK's exception when it raised, or
    with `server_error` as its type when the server said it failed and nothing raised."""
    spans = telemetry.spans()
    assert len(spans) == calls
    for span in spans:
        assert span.end_time is not None
        attributes = span.attributes or {}
        if outcome[0] == "raised":
            assert span.status.status_code is StatusCode.ERROR
            assert attributes["error.type"] == outcome[1].__qualname__
            assert [e.name for e in span.events].count("exception") == 1
        elif server_error is not None:  # an error body in a 200: the SDK raises nothing
            assert span.status.status_code is StatusCode.ERROR
            assert attributes["error.type"] == server_error
            assert [e.name for e in span.events].count("exception") == 0
        else:
            assert span.status.status_code is StatusCode.UNSET
            assert "error.type" not in attributes
    assert sum(p.count for p in telemetry.points(DURATION)) == calls
    return spans


def _server_error(fault: Fault) -> str | None:
    return "server_error" if fault.scenario == "error_body_200" else None


def assert_the_sdks_outcome(fault: Fault, outcome: Outcome) -> None:
    """What the uninstrumented SDK does with this fault, as the table says."""
    if fault.raises:
        assert outcome[0] == "raised"
        assert issubclass(outcome[1], fault.raises), outcome[1]
    else:
        assert outcome[0] == "returned"
    assert len(outcome[-1]) == fault.delivered


def attempts_of(server: LocalOpenAIServer, fault: Fault) -> int:
    prefix = f"{fault.name}-"
    return sum(
        1 for r in server.requests if r.headers.get("x-mock-attempt-key", "").startswith(prefix)
    )


# -- the log, for each fault -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAULTS))
def test_repeated_server_faults_log_nothing_of_ours_and_no_flood(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    log: pytest.LogCaptureFixture,
    name: str,
) -> None:
    fault = FAULTS[name]
    client = fault_client(server, fault, "openai")
    plain = call(client, fault)  # the SDK's own behaviour, without us
    assert_the_sdks_outcome(fault, plain)
    plain_retries = retry_logs(log.records)
    instrument()
    server.clear()
    log.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = [call(client, fault) for _ in range(REPEAT)]
        collect()
    client.close()

    assert outcomes == [plain] * REPEAT  # exactly the SDK's behaviour, every time
    assert_quiet(log, REPEAT)
    assert ours_in(caught) == []
    assert len(caught) <= PER_CALL * REPEAT, [str(w.message) for w in caught]
    assert_spans(telemetry, plain, REPEAT, _server_error(fault))
    # Retries stay the SDK's: as many requests, and its own log of them, as without us.
    assert plain_retries == fault.attempts - 1
    assert retry_logs(log.records) == (fault.attempts - 1) * REPEAT
    if fault.attempts > 1:
        assert attempts_of(server, fault) == fault.attempts * REPEAT
    elif not fault.refused:
        assert len(server.requests) == REPEAT


@pytest.mark.parametrize("name", ASYNC_FAULTS)
async def test_async_repeated_server_faults_log_nothing_of_ours_and_no_flood(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    log: pytest.LogCaptureFixture,
    name: str,
) -> None:
    fault = FAULTS[name]
    client = fault_client(server, fault, "async")
    plain = await acall(client, fault)
    assert_the_sdks_outcome(fault, plain)
    instrument()
    server.clear()
    log.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = [await acall(client, fault) for _ in range(REPEAT)]
        collect()
    await client.close()

    assert outcomes == [plain] * REPEAT
    assert_quiet(log, REPEAT)
    assert ours_in(caught) == []
    assert len(caught) <= PER_CALL * REPEAT, [str(w.message) for w in caught]
    assert_spans(telemetry, plain, REPEAT, _server_error(fault))
    assert retry_logs(log.records) == (fault.attempts - 1) * REPEAT
    if fault.attempts > 1:
        assert attempts_of(server, fault) == fault.attempts * REPEAT


def test_the_log_capture_sees_a_bug_of_ours(log: pytest.LogCaptureFixture) -> None:
    # The checks above are only as good as the capture: a bug of ours is seen by it.
    errors.internal_error("a test of the capture", RuntimeError("boom"))
    errors.internal_error("a test of the capture", RuntimeError("boom"))
    found = warnings_of(log.records, OURS)
    assert len(found) == 1
    assert "failed in a test of the capture (RuntimeError: boom)" in found[0]


# -- usage chunks with null or missing counts ------------------------------------------------


@dataclass(frozen=True)
class BadUsage:
    """A usage chunk whose counts are null or missing; the counts worth recording."""

    scenario: str
    usage: dict[str, Any] | None
    input_tokens: int | None  # None: no valid count, the estimate is recorded instead
    output_tokens: int | None
    total_tokens: int | None


BAD_USAGE = {
    # completion_tokens null, details gone: prompt 13, total 13 + 6 (the server's own)
    "nulls": BadUsage("usage_nulls", None, 13, None, 19),
    "all_null": BadUsage(
        "ok", {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}, *[None] * 3
    ),
    "only_prompt": BadUsage("usage_partial", {"prompt_tokens": 11}, 11, None, None),
    "only_completion": BadUsage("usage_partial", {"completion_tokens": 4}, None, 4, None),
    "null_prompt_only": BadUsage("usage_partial", {"prompt_tokens": None}, *[None] * 3),
    "empty": BadUsage("usage_partial", {}, *[None] * 3),
}


def usage_headers(case: BadUsage) -> dict[str, str]:
    headers = {"x-mock-scenario": case.scenario}
    if case.usage is not None:
        headers["x-mock-usage"] = json.dumps(case.usage)
    return headers


def read(client: Any, headers: dict[str, str], options: dict[str, Any] | None) -> list[Any]:
    extra = {} if options is None else {"stream_options": options}
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers, **extra
    )
    return list(stream)


def token_sums(telemetry: Telemetry) -> dict[tuple[str, str], int]:
    """The token counters by (token type, usage source)."""
    sums: dict[tuple[str, str], int] = {}
    for point in telemetry.points(TOKEN_USAGE):
        key = (point.attributes["gen_ai.token.type"], point.attributes["openai_usage.usage.source"])
        sums[key] = sums.get(key, 0) + point.sum
    return sums


def estimated(instrument: Any, telemetry: Telemetry, client: Any) -> dict[str, Any]:
    """The estimate of the same call when the server reports no usage at all."""
    instrument()
    read(client, {"x-mock-scenario": "no_usage"}, None)
    collect()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "estimate"
    telemetry.exporter.clear()
    return attributes


@pytest.mark.parametrize("asked", [False, True], ids=["usage_injected", "usage_asked"])
@pytest.mark.parametrize("case_id", list(BAD_USAGE))
def test_stream_usage_with_null_or_missing_counts_records_only_valid_counts(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    log: pytest.LogCaptureFixture,
    case_id: str,
    asked: bool,
) -> None:
    case = BAD_USAGE[case_id]
    headers = usage_headers(case)
    options = {"include_usage": True} if asked else None
    plain = read(client, headers, options)
    estimate = estimated(instrument, telemetry, client)
    before = token_sums(telemetry)  # the estimate's: the counters are cumulative
    log.clear()
    traced = read(client, headers, options)
    collect()

    # The caller sees exactly the chunks an uninstrumented client sees: the usage
    # chunk (with its nulls and gaps) when asked for, none when we injected the ask.
    assert comparable(traced) == comparable(plain)
    assert len(traced) == STREAM + asked
    if asked:
        assert traced[-1].choices == [] and traced[-1].usage is not None
    span = telemetry.span()  # ended once: a second end would be a second export
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.UNSET
    attributes = span.attributes or {}
    assert attributes["openai_usage.stream.outcome"] == "completed"
    assert attributes["openai_usage.stream.include_usage_injected"] is (not asked)
    counts = {
        "gen_ai.usage.input_tokens": case.input_tokens,
        "gen_ai.usage.output_tokens": case.output_tokens,
        "gen_ai.usage.total_tokens": case.total_tokens,
    }
    after = token_sums(telemetry)
    points = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    if case.input_tokens is None and case.output_tokens is None:
        # No valid count at all: the estimate takes over, as with no usage chunk.
        assert attributes["openai_usage.usage.source"] == "estimate"
        for name in counts:
            assert attributes[name] == estimate[name]
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert points == {
            ("input", "estimate"): estimate["gen_ai.usage.input_tokens"],
            ("output", "estimate"): estimate["gen_ai.usage.output_tokens"],
        }
    else:
        assert attributes["openai_usage.usage.source"] == "response"
        for name, count in counts.items():
            assert attributes.get(name) == count, name
        expected = {"input": case.input_tokens, "output": case.output_tokens}
        assert points == {(k, "response"): v for k, v in expected.items() if v is not None}
    assert "gen_ai.usage.cache_read.input_tokens" not in attributes
    assert "gen_ai.usage.reasoning.output_tokens" not in attributes
    assert_quiet(log, 1)
    assert warnings_of(log.records) == []


# -- retries ---------------------------------------------------------------------------------


def retried(stream: bool) -> Fault:
    return FAULTS["retried-stream" if stream else "retried-create"]


def assert_one_span_with_the_final_usage(telemetry: Telemetry) -> None:
    span = telemetry.span()
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.UNSET
    attributes = span.attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes["gen_ai.usage.total_tokens"] == 14
    assert attributes["openai_usage.usage.source"] == "response"
    assert "error.type" not in attributes
    assert [e.name for e in span.events if e.name == "exception"] == []
    assert token_sums(telemetry) == {("input", "response"): 11, ("output", "response"): 3}
    assert sum(p.count for p in telemetry.points(DURATION)) == 1


def assert_retried_into_one_span(
    server: LocalOpenAIServer, fault: Any, telemetry: Telemetry, log: pytest.LogCaptureFixture
) -> None:
    """Two 500s, then the answer: three requests on the wire, one span with its usage."""
    assert attempts_of(server, fault) == 3  # the SDK's two retries, on the wire
    answered = [r.usage is not None for r in server.requests]
    assert answered == [False, False, True]
    assert_one_span_with_the_final_usage(telemetry)
    assert retry_logs(log.records) == 2  # the SDK's own log of its retries, untouched
    assert_quiet(log, 1)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_sdk_retries_give_one_span_with_the_final_usage_and_no_warning_of_ours(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    log: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    fault = retried(stream)
    client = fault_client(server, fault, "openai")
    plain = call(client, fault)
    instrument()
    server.clear()
    log.clear()
    traced = call(client, fault)
    client.close()

    assert traced == plain
    assert_retried_into_one_span(server, fault, telemetry, log)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_async_sdk_retries_give_one_span_with_the_final_usage_and_no_warning_of_ours(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    log: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    fault = retried(stream)
    client = fault_client(server, fault, "async")
    plain = await acall(client, fault)
    instrument()
    server.clear()
    log.clear()
    traced = await acall(client, fault)
    await client.close()

    assert traced == plain
    assert_retried_into_one_span(server, fault, telemetry, log)


def test_retries_exhausted_give_one_error_span_for_the_one_user_call(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    log: pytest.LogCaptureFixture,
) -> None:
    fault = FAULTS["retries_exhausted-create"]
    client = fault_client(server, fault, "openai")
    plain = call(client, fault)
    instrument()
    server.clear()
    log.clear()
    traced = call(client, fault)
    client.close()

    assert traced == plain
    assert traced[1] is openai.InternalServerError
    assert attempts_of(server, fault) == 3
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "InternalServerError"
    assert telemetry.points(TOKEN_USAGE) == []
    assert retry_logs(log.records) == 2
    assert_quiet(log, 1)
