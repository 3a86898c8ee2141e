"""10,000 abandoned streams: every span ends, nothing of ours stays behind.

Through the real SDK over an in-process mock transport (`httpx2.MockTransport`, or
`httpx.MockTransport` before openai 3), serving SSE bytes shaped like OpenAI's, so no
sockets are involved and 10,000 streams take seconds rather than minutes. Each
stream is read for one chunk and dropped, as a request handler that returns early
would; the garbage collector runs as in a long-lived application (automatically)
plus, every `COLLECT_EVERY` streams, an explicit `collect()`.
"""

from __future__ import annotations

import gc
import json
import re
import time
import weakref
from typing import Any

import openai
import pytest

from opentelemetry.instrumentation.openai_usage import open_calls
from opentelemetry.instrumentation.openai_usage.invocation import Invocation
from opentelemetry.instrumentation.openai_usage.streams import StreamState, SyncStreamProxy

from .conftest import API_KEY, HTTP, MESSAGES, Telemetry, collect

STREAMS = 10_000
COLLECT_EVERY = 1_000
OUTCOME = "openai_usage.stream.outcome"
HEAD = {
    "id": "chatcmpl-Memory0123456789",
    "object": "chat.completion.chunk",
    "created": 1_747_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_mem",
}
_WANTS_USAGE = re.compile(rb'"include_usage"\s*:\s*true')


def sse(include_usage: bool, words: int = 5) -> list[bytes]:
    """A chat stream as OpenAI sends it: role chunk, `words` content chunks, finish chunk."""
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": f" w{i}"}, None) for i in range(words)]
    deltas.append(({}, "stop"))
    events = []
    for delta, finish in deltas:
        chunk: dict[str, Any] = {
            **HEAD,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            chunk["usage"] = None
        events.append(f"data: {json.dumps(chunk)}\n\n".encode())
    if include_usage:
        usage = {"prompt_tokens": 14, "completion_tokens": words, "total_tokens": 14 + words}
        events.append(f"data: {json.dumps({**HEAD, 'choices': [], 'usage': usage})}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


PLAIN, WITH_USAGE = sse(False), sse(True)


def handler(request: Any) -> Any:
    events = WITH_USAGE if _WANTS_USAGE.search(request.content) else PLAIN
    headers = {"content-type": "text/event-stream"}
    return HTTP.Response(200, headers=headers, content=iter(events))


def live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


@pytest.mark.timeout(120)
def test_ten_thousand_abandoned_streams_all_end_abandoned_and_leave_nothing_alive(
    instrument: Any, telemetry: Telemetry
) -> None:
    instrument()  # default settings: injection on, estimates on
    client = openai.OpenAI(
        base_url="http://mock.invalid/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(handler)),
    )
    collect()
    before = {kind: live(kind) for kind in (SyncStreamProxy, StreamState, Invocation)}
    proxies: list[weakref.ref[Any]] = []
    firsts = set()
    started = time.perf_counter()
    try:
        for i in range(STREAMS):
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            assert isinstance(stream, SyncStreamProxy)
            firsts.add(next(stream).choices[0].delta.role)
            proxies.append(weakref.ref(stream))
            del stream
            if (i + 1) % COLLECT_EVERY == 0:
                collect()
        collect()
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    print(
        f"\n{STREAMS} abandoned streams over MockTransport: {elapsed:.1f} s"
        f" ({elapsed / STREAMS * 1e3:.2f} ms each, collection included)"
    )

    assert firsts == {"assistant"}  # each caller got the stream's real first chunk
    assert sum(1 for ref in proxies if ref() is not None) == 0
    assert len(open_calls._OPEN) == 0
    for kind, count in before.items():
        assert live(kind) == count, kind.__name__
    spans = telemetry.spans()
    assert len(spans) == STREAMS
    assert all(s.end_time is not None for s in spans)
    outcomes = [(s.attributes or {})[OUTCOME] for s in spans]
    assert outcomes.count("abandoned") == STREAMS
    # Abandoned after the role chunk, before the usage chunk: each got the estimate of
    # its prompt (the same for all), made on the finisher thread.
    inputs = {(s.attributes or {}).get("gen_ai.usage.input_tokens") for s in spans}
    sources = {(s.attributes or {}).get("openai_usage.usage.source") for s in spans}
    assert len(inputs) == 1 and isinstance(inputs.pop(), int)
    assert sources == {"estimate"}
    # Each span ended at its last read, moments after its start, not at collection time.
    assert max((s.end_time or 0) - (s.start_time or 0) for s in spans) < 1e9


def test_endpoints_refusing_stream_options_are_remembered_within_a_bound(
    instrument: Any, telemetry: Telemetry
) -> None:
    # A service making a client per tenant's resource: every host refuses `stream_options`
    # once and is remembered, but the memory of them must not grow with the hosts.
    def handler(request: Any) -> Any:
        if b"stream_options" in request.content:
            message = "Unrecognized request argument supplied: stream_options"
            return HTTP.Response(400, json={"error": {"message": message}})
        return HTTP.Response(
            200, content=b"".join(sse(False)), headers={"content-type": "text/event-stream"}
        )

    instrumentor = instrument()
    client = openai.OpenAI(
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(handler)),
    )
    for tenant in range(600):
        tenant_client = client.with_options(base_url=f"https://tenant-{tenant}.example/v1")
        stream = tenant_client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        assert len(list(stream)) == 7
    assert len(telemetry.spans()) == 600
    assert 0 < len(instrumentor._runtime.rejects_stream_options) <= 256


class _Messages(list):  # type: ignore[type-arg]
    """A message list a weak reference can follow."""


def _finished_stream(client: openai.OpenAI, kind: str, messages: Any) -> Any:
    kept: Any
    if kind == "stream":
        kept = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
        for _ in kept:
            pass
    elif kind == "raw stream":
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, stream=True
        )
        kept = raw.parse()
        for _ in kept:
            pass
    else:  # the `stream()` helper, whose stream a caller keeps for `get_final_completion()`
        with client.chat.completions.stream(model="gpt-4o", messages=messages) as kept:
            for _ in kept:
                pass
    return kept


@pytest.mark.parametrize("kind", ["stream", "raw stream", "stream helper"])
def test_a_finished_stream_kept_by_the_caller_does_not_keep_the_request_alive(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, kind: str
) -> None:
    if kind == "stream helper" and not hasattr(client.chat.completions, "stream"):
        pytest.skip("no chat.completions.stream() in this SDK")
    messages = _Messages(MESSAGES)
    request = weakref.ref(messages)
    kept = _finished_stream(client, kind, messages)
    del messages
    gc.collect()
    # The SDK's own finished stream holds no reference to the call's arguments: ours neither.
    assert request() is None
    assert kept is not None
    assert len(telemetry.spans()) == 1
