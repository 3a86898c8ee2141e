"""A local, dependency-free, OpenAI-compatible HTTP server.

Why it exists: the instrumentation must be tested against the *real* ``openai``
SDK (its retries, its SSE decoder, its Azure URL rewriting), and the demo must
run with no API key and no network. A mock transport would bypass exactly the
code paths that break in production, so this module speaks real HTTP/1.1 on a
real socket and sends bodies and SSE streams shaped like api.openai.com's (same
field names, same order), plus the failures seen in the wild (cut streams, TCP
resets, error events, missing usage), chosen per request with headers. The
Responses API (``/v1/responses``) lives in ``localserver_responses``, which reads
the same headers and adds its own scenarios:

- ``x-mock-reply: <text>`` / ``x-mock-chunks: <N>`` (reply "w1 w2 ... wN"),
  ``x-mock-tool-call: <function name>``, ``x-mock-response-model: <model>``,
  ``x-mock-usage: <JSON of prompt/completion/total/cached/reasoning_tokens,
  audio_input/audio_output_tokens, cache_write_tokens>``,
  ``x-mock-chunk-delay-ms: <ms>``, ``x-mock-attempt-key: <key>`` (fail_first),
  ``x-mock-finish: length|content_filter`` (chat and completions: the reply, as it is,
  ends with that finish reason, as one cut by ``max_tokens`` or a filter does);
- ``x-mock-scenario``: ``ok`` (default), ``http_error:<status>``, ``fail_first:<k>``,
  ``cut_after:<k>``, ``reset_after:<k>``, ``sse_error_after:<k>``,
  ``malformed_after:<k>``, ``no_usage``, ``reject_stream_options``,
  ``error_body_200``, ``hang``, ``usage_nulls``, ``usage_partial``, ``slow_headers:<ms>``,
  ``echo_error`` (a 400 whose message quotes the first message's content, whole and cut).
  ``usage_partial`` (chat, completions, embeddings) sends a usage object holding only
  the top-level counts that ``x-mock-usage`` names (``{}`` without it): the others,
  and the details, are missing rather than null.

It is stdlib only, so the package's runtime dependencies stay untouched, and
asyncio-based (one event loop in a daemon thread), so 1,000 concurrent
streaming connections cost no threads.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.utils
import http
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["DEFAULT_REPLY", "LocalOpenAIServer", "RecordedRequest", "main"]

DEFAULT_REPLY = "Hello from the local OpenAI-compatible server."
SYSTEM_FINGERPRINT = "fp_local0001"
DATED_MODELS: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-4": "gpt-4-0613",
    "o3-mini": "o3-mini-2025-01-31",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
}


# Longest first, so that "gpt-4o-mini" is found before "gpt-4o" in a deployment's name.
_FAMILIES = sorted(DATED_MODELS, key=len, reverse=True)


def _deployed_model(name: str) -> str:
    """The model an Azure deployment serves, as Azure names it in responses: the dated
    model whose family the deployment's name holds ("my-gpt-4o-mini" serves
    gpt-4o-mini-2024-07-18), else gpt-4o-mini's; never the deployment's own name."""
    for family in _FAMILIES:
        if family in name:
            return DATED_MODELS[family]
    return DATED_MODELS["gpt-4o-mini"]


# The tool-call arguments, and the pieces a stream delivers them in.
TOOL_ARGUMENT_PIECES = ('{"', "location", '":', ' "', "Paris", '"}')
TOOL_ARGUMENTS = "".join(TOOL_ARGUMENT_PIECES)

_S = TypeVar("_S", bound="LocalOpenAIServer")
_MAX_HEAD = 64 * 1024
_MAX_BODY = 32 * 1024 * 1024
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_RNG = random.Random()
_ROUTE = re.compile(
    r"^(?:/v1|/openai/deployments/(?P<dep>[^/]+))/(?P<kind>chat/completions|completions|embeddings)/?$"
)
_WITH_ARG = {"http_error", "fail_first", "slow_headers", "cut_after", "reset_after"}
_WITH_ARG |= {"sse_error_after", "malformed_after"}  # the ones taking ":<int>"
_NO_ARG = {"ok", "no_usage", "reject_stream_options", "error_body_200", "hang", "usage_nulls"}
_NO_ARG |= {"incomplete", "failed"}  # Responses API only: see localserver_responses
_NO_ARG.add("usage_partial")  # not for the Responses API
_NO_ARG.add("echo_error")
_USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"}
_USAGE_KEYS.update(("reasoning_tokens", "audio_input_tokens", "audio_output_tokens"))
_USAGE_KEYS.add("cache_write_tokens")  # OpenAI-compatible hosts (OpenRouter) report these
_SSE_ERROR = "The server had an error while processing your request."
_SERVER_ERROR = _SSE_ERROR + " Sorry about that!"
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means"
    " you aren't using your HTTP library correctly. The OpenAI API expects a JSON"
    " payload, but what was sent was not valid JSON.)"
)
_TIERS = ("flex", "priority", "scale")  # echoed when asked for; anything else is "default"


def _fingerprint(call: _Call) -> dict[str, str]:
    tier = call.body.get("service_tier") if isinstance(call.body, dict) else None
    tier = tier if tier in _TIERS else "default"
    return {"service_tier": tier, "system_fingerprint": SYSTEM_FINGERPRINT}


_SAFE = {"filtered": False, "severity": "safe"}
_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_PROMPT_FILTERS = [{"prompt_index": 0, "content_filter_results": _FILTERS}]
# Status -> (error type, code, message) for the ``http_error:<status>`` scenario.
# The 401 message deliberately never echoes the key, unlike the real service.
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("authentication_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to sample from this model."),
    404: ("not_found_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, _SERVER_ERROR),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded."),
}


@dataclass
class RecordedRequest:
    """One request as the server saw it, so tests can assert on what the SDK sent.

    ``usage`` is the usage object the server reported, or would have reported had
    the stream asked for it or not been cut; None when it answered with an error.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON body, or None
    usage: dict[str, Any] | None = None


class _HTTPError(Exception):
    """A refusal, carried to the sender as an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers
        self.error = {"message": message, "type": type_, "param": param, "code": code}

    def body(self) -> dict[str, Any]:
        return {"error": self.error}


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    keep_alive: bool


@dataclass
class _Call:
    """Everything a response needs, decided before its first byte is sent."""

    kind: str  # "chat/completions", "completions" or "embeddings"
    azure: bool
    stream: bool
    include_usage: bool
    model: str
    n: int  # number of choices
    words: list[str] | None  # the reply's pieces, or None for x-mock-chunks
    count: int  # number of content pieces
    tool: str | None
    usage: dict[str, Any]
    body: dict[str, Any]
    id: str
    created: int
    finish_reason: str | None = None  # x-mock-finish; else "stop" (or "tool_calls")

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool else "stop")

    def pieces(self) -> Iterator[str]:
        """The content pieces, generated lazily for huge ``x-mock-chunks`` counts."""
        if self.words is not None:
            return iter(self.words)
        return _numbered_pieces(self.count)


def _new_id(prefix: str) -> str:
    return prefix + "".join(_RNG.choices(_ALNUM, k=24 if prefix == "call_" else 29))


def _words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _tokens(item: str | list[int]) -> int:
    """Words of a string input, or the length of a token-id list."""
    return _words(item) if isinstance(item, str) else len(item)


def _content_words(content: Any) -> int:
    """Words of a message content: a string, or the text parts of a list."""
    if isinstance(content, list):
        return sum(_words(p.get("text")) for p in content if isinstance(p, dict))
    return _words(content)


def _numbered_pieces(count: int) -> Iterator[str]:
    """Yield "w1", " w2", ... lazily: a 100,000-chunk stream never sits in memory."""
    for i in range(1, count + 1):
        yield f"w{i}" if i == 1 else f" w{i}"


def _small_int(text: str) -> int | None:
    """Parse a plain decimal of at most 9 digits (``isdigit`` accepts "²", ``int`` not)."""
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text.strip()) else None


def _int_header(headers: dict[str, str], name: str, high: int) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    number = _small_int(value)
    if number is None or number > high:
        message = f"Invalid {name} header: {value!r} (expected an integer 0..{high})."
        raise _HTTPError(400, message, param=name)
    return number


def _parse_scenario(headers: dict[str, str]) -> tuple[str, int]:
    value = headers.get("x-mock-scenario", "ok").strip()
    name, sep, arg = value.partition(":")
    if name in _NO_ARG and not sep:
        return name, 0
    number = _small_int(arg) if name in _WITH_ARG else None
    if number is not None and (name != "http_error" or 400 <= number <= 599):
        return name, number
    message = f"Unknown or invalid x-mock-scenario: {value!r}."
    raise _HTTPError(400, message, param="x-mock-scenario")


def _echo(body: Any) -> str:
    """A validation error quoting the input, as compatible servers' errors do: the first
    message's content, whole, and cut ("..." after 40 characters), as pydantic prints it."""
    messages = body.get("messages") if isinstance(body, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else {}
    content = first.get("content") if isinstance(first, dict) else None
    text = content if isinstance(content, str) else json.dumps(content)
    cut = text if len(text) <= 40 else text[:40] + "..."
    return f"Invalid value for 'messages[0].content': {text!r} (input_value={cut!r})."


def _status_error(status: int) -> _HTTPError:
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    default = (type_, None, f"Simulated HTTP {status} error.")
    type_, code, message = _STATUS_ERRORS.get(status, default)
    extra = (("retry-after-ms", "10"),) if status == 429 else ()
    return _HTTPError(status, message, type_, code=code, headers=extra)


def _build_usage(
    prompt: int, completion: int | None, headers: dict[str, str], details: bool
) -> dict[str, Any]:
    """Deterministic usage, overridable by ``x-mock-usage`` to pin any numbers."""
    over: Any = {}
    if "x-mock-usage" in headers:
        over = None
        with contextlib.suppress(ValueError):
            over = json.loads(headers["x-mock-usage"])
        counts = isinstance(over, dict) and all(v is None or type(v) is int for v in over.values())
        if not counts or not _USAGE_KEYS.issuperset(over):
            message = "Invalid x-mock-usage header: expected a JSON object of counts."
            raise _HTTPError(400, message, param="x-mock-usage")
    prompt = over.get("prompt_tokens", prompt)
    if completion is None:  # embeddings have no completion side
        return {"prompt_tokens": prompt, "total_tokens": over.get("total_tokens", prompt)}
    completion = over.get("completion_tokens", completion)
    total = over.get("total_tokens", (prompt or 0) + (completion or 0))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    if details or "cached_tokens" in over or "reasoning_tokens" in over:
        cached = over.get("cached_tokens", 0)
        audio_in = over.get("audio_input_tokens", 0)
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": audio_in}
        if "cache_write_tokens" in over:
            usage["prompt_tokens_details"]["cache_write_tokens"] = over["cache_write_tokens"]
        usage["completion_tokens_details"] = {
            "reasoning_tokens": over.get("reasoning_tokens", 0),
            "audio_tokens": over.get("audio_output_tokens", 0),
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _inputs(value: Any, param: str) -> list[str | list[int]]:
    """Normalise embeddings ``input`` / completions ``prompt``: str, [str], [int], [[int]]."""

    def is_tokens(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(type(t) is int for t in v)

    if isinstance(value, str) or is_tokens(value):
        return [value]
    if isinstance(value, list) and value and all(is_tokens(v) or isinstance(v, str) for v in value):
        return list(value)
    message = f"'$.{param}' is invalid. Please check the API reference."
    raise _HTTPError(400, message, param=param)


def _embedding(item: str | list[int], dimensions: int, as_base64: bool) -> Any:
    """A deterministic pseudo-embedding: same input, same vector, like a real model."""
    rng = random.Random(zlib.crc32(json.dumps(item).encode()))
    floats = (rng.uniform(-0.1, 0.1) for _ in range(dimensions))
    packed = struct.pack(f"<{dimensions}f", *floats)
    if as_base64:
        return base64.b64encode(packed).decode("ascii")
    return [round(v, 8) for v in struct.unpack(f"<{dimensions}f", packed)]


def _plan(
    kind: str, deployment: str | None, body: Any, headers: dict[str, str], scenario: str
) -> _Call:
    """Validate the request and decide the whole response (content, usage) up front."""
    if not isinstance(body, dict):
        raise _HTTPError(400, _BAD_JSON)
    model = body.get("model") or deployment  # Azure: the deployment names the model
    if not isinstance(model, str):
        raise _HTTPError(400, "Missing required parameter: 'model'.", param="model")
    model = headers.get("x-mock-response-model") or (
        _deployed_model(model) if deployment is not None else DATED_MODELS.get(model, model)
    )
    n = 1 if body.get("n") is None else body["n"]
    if type(n) is not int or not 1 <= n <= 128:
        raise _HTTPError(400, f"Invalid value for 'n': {n!r}.", param="n")
    stream = body.get("stream") is True and kind != "embeddings"
    options = body.get("stream_options")
    if scenario == "reject_stream_options" and options is not None:
        message = "Unrecognized request argument supplied: stream_options"
        raise _HTTPError(400, message)
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    include_usage = stream and wants_usage and scenario != "no_usage"
    words: list[str] | None = None
    count = _int_header(headers, "x-mock-chunks", 100_000)
    if count is None:  # words, each keeping its leading whitespace, like token deltas
        reply = headers.get("x-mock-reply", DEFAULT_REPLY)
        words = re.findall(r"\s*\S+(?:\s+\Z)?", reply)
        count = len(words)
    tool = headers.get("x-mock-tool-call") if kind == "chat/completions" else None
    finish = headers.get("x-mock-finish")
    if finish not in (None, "length", "content_filter"):
        raise _HTTPError(400, f"Unknown x-mock-finish: {finish!r}.")
    if kind == "chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            message = "Missing required parameter: 'messages'."
            raise _HTTPError(400, message, param="messages")
        prompt = 3 + sum(
            4 + _content_words(m.get("content")) for m in messages if isinstance(m, dict)
        )
        completion = (len(TOOL_ARGUMENT_PIECES) if tool else count) * n
        usage = _build_usage(prompt, completion, headers, True)
    elif kind == "completions":
        prompts = _inputs(body.get("prompt"), "prompt")
        n *= len(prompts)  # n choices per prompt, like the real endpoint
        prompt = sum(_tokens(p) for p in prompts)
        usage = _build_usage(prompt, count * n, headers, False)
    else:
        inputs = _inputs(body.get("input"), "input")
        dimensions = 8 if body.get("dimensions") is None else body["dimensions"]
        if type(dimensions) is not int or not 1 <= dimensions <= 4096:
            message = f"Invalid value for 'dimensions': {dimensions!r}."
            raise _HTTPError(400, message, param="dimensions")
        usage = _build_usage(sum(_tokens(i) for i in inputs), None, headers, False)
    if scenario == "usage_nulls":
        usage = {k: v for k, v in usage.items() if not k.endswith("_details")}
        usage["total_tokens" if kind == "embeddings" else "completion_tokens"] = None
    if scenario == "usage_partial":  # the counts x-mock-usage names, the rest missing
        named = json.loads(headers.get("x-mock-usage", "{}"))  # checked by _build_usage
        usage = {k: v for k, v in usage.items() if k in named}
    prefix = {"chat/completions": "chatcmpl-", "completions": "cmpl-"}.get(kind, "")
    azure = deployment is not None
    return _Call(kind, azure, stream, include_usage, model, n, words, count, tool,
                 usage, body, _new_id(prefix), int(time.time()), finish)  # fmt: skip


def _response_body(call: _Call) -> dict[str, Any]:
    """The non-stream JSON body, in the service's field order."""
    if isinstance(call, _responses.ResponsesCall):
        return _responses.body(call)
    if call.kind == "embeddings":
        dimensions = call.body.get("dimensions") or 8  # validated by _plan
        as_base64 = call.body.get("encoding_format") == "base64"
        items = enumerate(_inputs(call.body.get("input"), "input"))
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(x, dimensions, as_base64)}
            for i, x in items
        ]
        return {"object": "list", "data": data, "model": call.model, "usage": call.usage}
    text = None if call.tool else "".join(call.pieces())
    finish = call.finish
    choices: list[dict[str, Any]] = []
    for i in range(call.n):
        choice: dict[str, Any]
        if call.kind == "completions":
            choice = {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
        else:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if call.tool:
                function = {"name": call.tool, "arguments": TOOL_ARGUMENTS}
                tool_call = {"id": _new_id("call_"), "type": "function"}
                message["tool_calls"] = [{**tool_call, "function": function}]
            message.update(refusal=None, annotations=[])
            choice = {"index": i, "message": message, "logprobs": None}
            choice["finish_reason"] = finish
        if call.azure:
            choice["content_filter_results"] = _FILTERS
        choices.append(choice)
    chat = call.kind == "chat/completions"
    obj = "chat.completion" if chat else "text_completion"
    body = {"id": call.id, "object": obj, "created": call.created, "model": call.model}
    body.update(choices=choices, usage=call.usage, **(_fingerprint(call) if chat else {}))
    if call.azure:
        body["prompt_filter_results"] = _PROMPT_FILTERS
    return body


def _chunks(call: _Call) -> Iterator[dict[str, Any]]:
    """Yield every SSE event of a chat or legacy-completion stream, lazily.

    With n > 1 the choices are interleaved, one choice per chunk, as OpenAI does.
    """
    chat = call.kind == "chat/completions"
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": call.id, "object": obj, "created": call.created}
    tail: dict[str, Any] = {"usage": None} if call.include_usage else {}
    fingerprint = _fingerprint(call)

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        if chat:
            return {**head, "model": call.model, **fingerprint, "choices": choices, **tail}
        return {**head, "choices": choices, "model": call.model, **tail}

    def choice(i: int, payload: Any, finish: str | None = None) -> dict[str, Any]:
        first = {"index": i, "delta": payload} if chat else {"text": payload, "index": i}
        result = {**first, "logprobs": None, "finish_reason": finish}
        if call.azure:
            result["content_filter_results"] = {}
        return result

    if call.azure:  # Azure first sends an id-less, choice-less prompt-filter chunk
        empty = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
        yield {**empty, "prompt_filter_results": _PROMPT_FILTERS}
    for i in range(call.n if chat else 0):
        first: dict[str, Any] = {"role": "assistant", "content": ""}
        if call.tool:
            function = {"name": call.tool, "arguments": ""}
            tool_call = {"index": 0, "id": _new_id("call_"), "type": "function"}
            first = {"role": "assistant", "content": None}
            first["tool_calls"] = [{**tool_call, "function": function}]
        yield chunk([choice(i, {**first, "refusal": None})])
    if call.tool:
        for argument in TOOL_ARGUMENT_PIECES:
            tool_calls = [{"index": 0, "function": {"arguments": argument}}]
            for i in range(call.n):
                yield chunk([choice(i, {"tool_calls": tool_calls})])
    else:
        for piece in call.pieces():
            for i in range(call.n):
                yield chunk([choice(i, {"content": piece} if chat else piece)])
    for i in range(call.n):
        yield chunk([choice(i, {} if chat else "", call.finish)])
    if call.include_usage:
        yield {**chunk([]), "usage": call.usage}


def _dumps(obj: Any, *, azure: bool = False, indent: int | None = None) -> bytes:
    """Serialise like the services: OpenAI keeps field order, Azure sorts keys."""
    separators = (",", ":") if indent is None else None
    text = json.dumps(
        obj, ensure_ascii=False, indent=indent, separators=separators, sort_keys=azure
    )
    return text.encode()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Parse request line and headers; anything unexpected is a 400, never a crash."""
    lines = head.decode("utf-8", "replace").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise _HTTPError(400, "Malformed HTTP request line.")
    headers: dict[str, str] = {}
    for line in filter(None, lines[1:]):
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise _HTTPError(400, "Malformed HTTP header line.")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], parts[1], parts[2], headers


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> _Request | None:
    """Read one request; None when the peer closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _HTTPError(400, "Incomplete HTTP request.") from None
        return None
    except asyncio.LimitOverrunError:
        raise _HTTPError(431, "Request header fields too large.") from None
    method, target, version, headers = _parse_head(head)
    if "transfer-encoding" in headers:
        raise _HTTPError(400, "Chunked request bodies are not supported.")
    length = _small_int(headers.get("content-length", "0"))
    if length is None or length > _MAX_BODY:
        raise _HTTPError(400, "Invalid Content-Length header (at most 32 MiB).")
    try:
        url = urlsplit(target)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
    except ValueError:
        raise _HTTPError(400, "Malformed request target.") from None
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    raw_body = await reader.readexactly(length)  # raises if the peer leaves
    connection = headers.get("connection", "").lower()
    keep_alive = version == "HTTP/1.1" or "keep-alive" in connection
    keep_alive = keep_alive and "close" not in connection
    return _Request(method, url.path, query, headers, raw_body, keep_alive)


class _Conn:
    """One client connection: writes HTTP responses, flushing every write."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.head_sent = False
        # A zero high-water mark makes drain() wait until the kernel has the bytes:
        # each SSE event is really flushed, and an abort never drops "sent" data.
        writer.transport.set_write_buffer_limits(high=0)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, status: int, headers: list[tuple[str, str]], keep: bool) -> None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}", f"date: {email.utils.formatdate(usegmt=True)}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines += [f"x-request-id: req_{_RNG.getrandbits(128):032x}"]
        lines += ["openai-version: 2020-10-01", "openai-processing-ms: 12"]
        lines += [f"connection: {'keep-alive' if keep else 'close'}", "", ""]
        self.head_sent = True
        await self.send("\r\n".join(lines).encode())

    async def json(
        self, status: int, body: bytes, keep: bool, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        await self.head(status, headers + list(extra), keep)
        await self.send(body)

    async def error(self, err: _HTTPError, keep: bool) -> None:
        await self.json(err.status, _dumps(err.body(), indent=4) + b"\n", keep, err.headers)

    async def sse_head(self, keep: bool) -> None:
        headers = [("content-type", "text/event-stream; charset=utf-8")]
        headers += [("transfer-encoding", "chunked"), ("cache-control", "no-cache")]
        await self.head(200, headers, keep)

    async def event(self, data: bytes, name: str | None = None) -> None:
        """One SSE event as one HTTP chunk; ``b""`` ends the chunked body.

        ``name`` adds the ``event:`` line the Responses API sends before each ``data:``.
        """
        payload = b"data: " + data + b"\n\n" if data else b""
        if name and data:
            payload = b"event: " + name.encode() + b"\n" + payload
        await self.send(b"%x\r\n%s\r\n" % (len(payload), payload))

    def close(self, reset: bool) -> None:
        """Close abruptly; with ``reset``, as a TCP RST (SO_LINGER 0) like a crashed proxy."""
        sock = self.writer.get_extra_info("socket")
        if reset and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if reset:
            self.writer.transport.abort()
        else:
            self.writer.close()


class LocalOpenAIServer:
    """An OpenAI-compatible server on its own event loop thread (see module doc)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False

    @property
    def base_url(self) -> str:
        """The URL for ``OpenAI(base_url=...)``."""
        return f"{self.azure_endpoint}/v1"

    @property
    def azure_endpoint(self) -> str:
        """The URL for ``AzureOpenAI(azure_endpoint=...)``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def clear(self) -> None:
        """Forget recorded requests (and fail_first attempt counts) between tests."""
        with self._lock:
            self.requests.clear()
            self._attempts.clear()

    def start(self) -> LocalOpenAIServer:
        """Start the loop thread; return once listening, so ``port`` is the real one."""
        if self._thread is not None:
            raise RuntimeError("a LocalOpenAIServer can only be started once")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="local-openai-server", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Close every connection, hung ones too, and join the thread. Idempotent."""
        with self._lock:
            if self._thread is None or self._stopped:
                return
            self._stopped = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=10)

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
        finally:
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=_MAX_HEAD, backlog=4096
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping.wait()
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve requests on one connection until close; no exception escapes."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Conn(writer)
        cancelled = False
        try:
            keep = True
            while keep:
                conn.head_sent = False
                try:
                    request = await _read_request(reader, writer)
                except _HTTPError as err:  # no way to resync after a bad request
                    await conn.error(err, keep=False)
                    break
                if request is None:
                    break
                keep = await self._respond(request, reader, conn) and request.keep_alive
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to tell it
        except asyncio.CancelledError:  # stop(): swallowed, as 3.11's streams would log it
            cancelled = True
        except Exception:  # a bug must cost one connection, never the server
            if not conn.head_sent:
                with contextlib.suppress(Exception):
                    error = _HTTPError(500, _SERVER_ERROR, "server_error")
                    await conn.error(error, keep=False)
        finally:
            if task is not None:
                self._tasks.discard(task)
            if cancelled:  # stop(): drop unsent bytes, but close with a FIN, not a RST
                writer.transport.abort()
            else:
                writer.close()

    def _record(self, request: _Request, body: Any) -> RecordedRequest:
        record = RecordedRequest(request.method, request.path, request.query, request.headers, body)
        with self._lock:
            self.requests.append(record)
        return record

    def _check(self, request: _Request, body: Any, bad_json: bool) -> tuple[_Call, str, int]:
        """Route and validate; every refusal is raised as an ``_HTTPError``."""
        match = _ROUTE.match(request.path) or _responses.ROUTE.match(request.path)
        if match is None or request.method != "POST":
            raise _HTTPError(404, f"Invalid URL ({request.method} {request.path})")
        if bad_json:
            raise _HTTPError(400, _BAD_JSON)
        scenario, arg = _parse_scenario(request.headers)
        if scenario == "http_error":
            raise _status_error(arg)
        if scenario == "echo_error":
            raise _HTTPError(400, _echo(body), param="messages")
        if scenario == "fail_first":
            key = request.headers.get("x-mock-attempt-key", "")
            with self._lock:
                seen = self._attempts[key] = self._attempts.get(key, 0) + 1
            if seen <= arg:  # retry-after-ms keeps SDK retry tests fast
                retry = (("retry-after-ms", "10"),)
                raise _HTTPError(500, _SERVER_ERROR, "server_error", headers=retry)
        deployment = match.group("dep")
        deployment = unquote(deployment) if deployment else None
        kind = match.group("kind")
        if kind == "responses" and scenario == "usage_partial":
            message = "x-mock-scenario 'usage_partial' is not for the Responses API."
            raise _HTTPError(400, message, param="x-mock-scenario")
        if kind == "responses":
            call: _Call = _responses.plan(request.path, deployment, body, request.headers, scenario)
        elif scenario in _responses.ENDINGS:
            message = f"x-mock-scenario {scenario!r} is for the Responses API only."
            raise _HTTPError(400, message, param="x-mock-scenario")
        else:
            call = _plan(kind, deployment, body, request.headers, scenario)
        return call, scenario, arg

    async def _respond(self, request: _Request, reader: asyncio.StreamReader, conn: _Conn) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        body: Any = None
        bad_json = False
        if request.raw_body:
            try:
                body = json.loads(request.raw_body)
            except ValueError:
                bad_json = True
        record = self._record(request, body)
        keep = request.keep_alive
        try:
            call, scenario, arg = self._check(request, body, bad_json)
            delay = _int_header(request.headers, "x-mock-chunk-delay-ms", 60_000) or 0
        except _HTTPError as err:
            await conn.error(err, keep)
            return keep
        if scenario == "slow_headers":
            await asyncio.sleep(arg / 1000)
        if scenario == "error_body_200":
            error = _HTTPError(200, _SERVER_ERROR, "server_error").body()
            if not call.stream:
                await conn.json(200, _dumps(error, indent=2), keep)
                return keep
            await conn.sse_head(keep)
            await conn.event(_dumps(error))
            await conn.event(b"")
            return keep
        record.usage = call.usage
        if scenario == "hang":  # hold the request until the client (or stop()) quits
            while await reader.read(65536):
                pass
            return False
        if call.stream:
            return await self._stream(conn, call, scenario, arg, delay / 1000, keep)
        payload = _dumps(_response_body(call), azure=call.azure, indent=2)
        if scenario == "malformed_after":
            payload = b"{not json"
        if scenario in ("cut_after", "reset_after"):  # promise more than is sent
            length = ("content-length", str(len(payload)))
            await conn.head(200, [("content-type", "application/json"), length], keep)
            await conn.send(payload[: min(arg, len(payload) - 1)])
            conn.close(reset=scenario == "reset_after")
            return False
        await conn.json(200, payload, keep)
        return keep

    @staticmethod
    async def _stream(
        conn: _Conn, call: _Call, scenario: str, arg: int, delay: float, keep: bool
    ) -> bool:
        """Send the SSE stream, one flushed chunk per event, with ``*_after:k`` faults."""
        if isinstance(call, _responses.ResponsesCall):  # named events, no [DONE]
            return await _responses.stream(conn, call, scenario, arg, delay, keep)
        await conn.sse_head(keep)
        stop_at = arg if scenario.endswith("_after") else -1
        for sent, event in enumerate(_chunks(call)):
            if sent == stop_at:
                break
            if sent and delay:
                await asyncio.sleep(delay)
            await conn.event(_dumps(event, azure=call.azure))
        if scenario in ("cut_after", "reset_after"):  # no terminating zero-size chunk
            conn.close(reset=scenario == "reset_after")
            return False
        if scenario == "sse_error_after":
            error = _HTTPError(200, _SSE_ERROR, "server_error").body()
            await conn.event(_dumps(error))
            await conn.event(b"")
            return keep
        if scenario == "malformed_after":
            await conn.event(b"{not json")
        if delay:
            await asyncio.sleep(delay)
        await conn.event(b"[DONE]")
        await conn.event(b"")
        return keep


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM, so the demo (or curl) can talk to a keyless stand-in."""
    parser = argparse.ArgumentParser(
        description="Local OpenAI-compatible server (no API key needed)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    stop = threading.Event()
    # Installed explicitly: a shell's background job inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = LocalOpenAIServer(args.host, args.port).start()
    except OSError as exc:
        # Port 8000 is many a dev server's default (vLLM's among them): say what to do, in
        # one line, rather than a traceback through the server's thread.
        # asyncio words a bind error at length; a host that does not resolve has a
        # negative (getaddrinfo) errno, whose text only the exception holds.
        errno = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
        reason = os.strerror(errno) if errno else exc.strerror or str(exc)
        print(
            f"Cannot serve on {args.host}:{args.port}: {reason}. "
            "Choose another with --host / --port (--port 0 picks a free one).",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(f"Serving an OpenAI-compatible API at {server.base_url}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
    return 0


# Imported last: the Responses module builds on the helpers above (an import cycle).
import opentelemetry.instrumentation.openai_usage.localserver_responses as _responses  # noqa: E402

if __name__ == "__main__":
    # Run the package's copy of this module, not this ``__main__`` one: the Responses
    # module raises the package's _HTTPError, which this copy's handlers would miss.
    from opentelemetry.instrumentation.openai_usage import localserver

    raise SystemExit(localserver.main())
