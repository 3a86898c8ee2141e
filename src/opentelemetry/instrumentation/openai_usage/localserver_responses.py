"""The Responses API (``POST /v1/responses``) of the local OpenAI-compatible server.

Why a module of its own: the Responses API shapes everything differently from
chat (a ``Response`` object with typed ``output`` items, ``input_tokens`` /
``output_tokens`` usage, and a stream of *named* SSE events with sequence numbers
and no ``[DONE]``), and ``localserver`` only routes here. Paths: ``/v1/responses``,
and for Azure ``/openai/responses`` (what ``AzureOpenAI`` calls, deployment or
not: the model travels in the body), ``/openai/v1/responses`` and
``/openai/deployments/<name>/responses``.

The headers are chat's: ``x-mock-reply``, ``x-mock-chunks``, ``x-mock-tool-call``
(a ``function_call`` output item replaces the message), ``x-mock-response-model``,
``x-mock-usage`` (chat's key names, or ``input_tokens`` / ``output_tokens``),
``x-mock-chunk-delay-ms``, ``x-mock-attempt-key``. Input tokens are counted as
chat counts messages: 3, plus 4 + words for ``instructions`` and for each input
item (a string ``input`` is one item). A ``text.format`` of type ``json_schema``
gets JSON text matching the schema, so ``responses.parse(text_format=...)`` works.

Stream events, in order: ``response.created``, ``response.in_progress``; for a
reasoning model (``o<digit>...``, ``gpt-5...``) ``response.output_item.added`` and
``.done`` of a ``reasoning`` item; then ``response.output_item.added``,
``response.content_part.added``, one ``response.output_text.delta`` per piece,
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done`` (for a tool call: ``response.output_item.added``,
``response.function_call_arguments.delta`` per piece, ``...arguments.done``,
``response.output_item.done``); last ``response.completed``.

Scenarios (``x-mock-scenario``): everything chat has; the ``*_after:<k>`` ones
count *every* event sent (``sequence_number`` < k), lifecycle events included.
``sse_error_after:<k>`` then sends an ``error`` event (the SDK yields it as a
``ResponseErrorEvent``, it does not raise); ``no_usage`` reports ``usage: null``;
``incomplete`` ends with ``response.incomplete`` (``max_output_tokens``, usage
kept); ``failed`` ends with ``response.failed`` right after the deltas (an
``error`` object, usage null). Without streaming, the same final ``Response``
is the body (HTTP 200, as the service returns a failed or incomplete response).
"""

from __future__ import annotations

import asyncio
import json
import re
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .localserver import (
    _BAD_JSON,
    _RNG,
    _SSE_ERROR,
    DATED_MODELS,
    DEFAULT_REPLY,
    TOOL_ARGUMENT_PIECES,
    TOOL_ARGUMENTS,
    _build_usage,
    _Call,
    _Conn,
    _content_words,
    _dumps,
    _HTTPError,
    _int_header,
    _new_id,
)

__all__ = ["ENDINGS", "ROUTE", "ResponsesCall", "body", "plan", "stream"]

ROUTE = re.compile(
    r"^(?:/v1|/openai(?:/v1)?|/openai/deployments/(?P<dep>[^/]+))/(?P<kind>responses)/?$"
)
_REASONING_MODEL = re.compile(r"^(?:o[0-9]|gpt-5)")
# Scenarios that only change how a response ends (see the module docstring).
ENDINGS = {"incomplete", "failed"}
_FAILURE = {"code": "server_error", "message": _SSE_ERROR}
_CHAT_USAGE_NAMES = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}
_OBFUSCATION = string.ascii_letters + string.digits
Event = tuple[str, dict[str, Any]]  # (type, fields other than type and sequence_number)


@dataclass
class ResponsesCall(_Call):
    """A chat ``_Call`` plus what only a Responses answer needs, fixed at plan time."""

    reasoning: bool = False  # a reasoning output item comes first
    ending: str = "completed"  # "completed", "incomplete" or "failed"
    obfuscate: bool = True  # deltas carry the service's "obfuscation" padding
    ids: dict[str, str] = field(default_factory=dict)  # output item ids, stable per call


def _item_id(prefix: str, response_id: str) -> str:
    """An id like the service's: random head, the response id's tail."""
    return f"{prefix}{_RNG.getrandbits(128):032x}{response_id[-16:]}"


def _pieces(headers: dict[str, str], default: str) -> tuple[list[str] | None, int]:
    """The reply's pieces as chat splits them, or None and a count for ``x-mock-chunks``."""
    count = _int_header(headers, "x-mock-chunks", 100_000)
    if count is not None:
        return None, count
    words = re.findall(r"\s*\S+(?:\s+\Z)?", headers.get("x-mock-reply", default))
    return words, len(words)


def _input_tokens(body: dict[str, Any]) -> int:
    """Chat's count: 3, plus 4 + words per item, ``instructions`` being one more item."""
    value = body.get("input")
    if isinstance(value, str) or value is None:
        items: list[Any] = [{"content": value}]
    elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
        items = value
    else:
        message = "Invalid type for 'input': expected a string or an array of input items."
        raise _HTTPError(400, message, param="input")
    if isinstance(body.get("instructions"), str):
        items = [{"content": body["instructions"]}, *items]
    return 3 + sum(4 + _content_words(i.get("content", i.get("output"))) for i in items)


def _chat_usage_header(headers: dict[str, str]) -> dict[str, str]:
    """The headers with ``x-mock-usage``'s Responses key names (``input_tokens``,
    ``output_tokens``) renamed to chat's, so chat's parser and checks apply as they are."""
    value = headers.get("x-mock-usage")
    try:
        over = json.loads(value) if value is not None else None
    except ValueError:
        return headers  # chat's parser refuses it
    if not isinstance(over, dict):
        return headers
    renamed = {_CHAT_USAGE_NAMES.get(k, k): v for k, v in over.items()}
    return {**headers, "x-mock-usage": json.dumps(renamed)}


def _usage(prompt: int, completion: int, headers: dict[str, str], scenario: str) -> dict[str, Any]:
    """Chat's usage (same counts, same ``x-mock-usage`` override) in the Responses shape."""
    headers = _chat_usage_header(headers)
    chat = _build_usage(prompt, completion, headers, True)
    usage: dict[str, Any] = {
        "input_tokens": chat["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": chat["prompt_tokens_details"]["cached_tokens"]},
        "output_tokens": chat["completion_tokens"],
        "output_tokens_details": {
            "reasoning_tokens": chat["completion_tokens_details"]["reasoning_tokens"]
        },
        "total_tokens": chat["total_tokens"],
    }
    if scenario == "usage_nulls":  # as chat: details gone, the output side unknown
        usage = {k: v for k, v in usage.items() if not k.endswith("_details")}
        usage["output_tokens"] = None
    return usage


def _resolve(root: Any, ref: str) -> Any:
    """Follow a local ``$ref`` ("#/$defs/Name"); anything else resolves to nothing."""
    node = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else [None]:
        if part is None or not isinstance(node, dict):
            return None
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node


def _sample(schema: Any, root: Any, depth: int = 0) -> Any:
    """A value valid against a JSON schema: strings "x", numbers 1, booleans true.

    Every property is filled (strict schemas require them all), so the SDK's
    ``responses.parse(text_format=Model)`` validates the reply into ``Model``.
    """
    if depth > 16 or not isinstance(schema, dict):
        return None
    if isinstance(schema.get("$ref"), str):
        return _sample(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _sample(schema[key][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or isinstance(schema.get("properties"), dict):
        properties = schema.get("properties") or {}
        return {name: _sample(sub, root, depth + 1) for name, sub in properties.items()}
    scalars = {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": []}
    return scalars.get(kind) if isinstance(kind, str) else None


def _default_reply(body: dict[str, Any]) -> str:
    """JSON for a ``json_schema`` / ``json_object`` text format, else the usual greeting."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema" and isinstance(fmt, dict):
        schema = fmt.get("schema")
        return json.dumps(_sample(schema, schema), ensure_ascii=False)
    return "{}" if kind == "json_object" else DEFAULT_REPLY


def _requested_model(deployment: str | None, body: Any, scenario: str) -> str:
    """Refuse what the service refuses (``model`` and ``input`` are required); return
    the model asked for (on Azure's deployment path, the deployment names it)."""
    if not isinstance(body, dict):
        raise _HTTPError(400, _BAD_JSON)
    requested = body.get("model") or deployment
    if not isinstance(requested, str):
        raise _HTTPError(400, "Missing required parameter: 'model'.", param="model")
    if body.get("input") is None:
        raise _HTTPError(400, "Missing required parameter: 'input'.", param="input")
    if scenario == "reject_stream_options" and body.get("stream_options") is not None:
        raise _HTTPError(400, "Unrecognized request argument supplied: stream_options")
    return requested


def plan(
    path: str, deployment: str | None, body: Any, headers: dict[str, str], scenario: str
) -> ResponsesCall:
    """Validate the request and decide the whole response up front (content, usage,
    ids), as chat's ``_plan`` does, so stream and body agree and faults can cut anywhere."""
    requested = _requested_model(deployment, body, scenario)
    model = headers.get("x-mock-response-model") or DATED_MODELS.get(requested, requested)
    tool = headers.get("x-mock-tool-call") or None
    words, count = _pieces(headers, _default_reply(body))
    completion = len(TOOL_ARGUMENT_PIECES) if tool else count
    usage = _usage(_input_tokens(body), completion, headers, scenario)
    options = body.get("stream_options")
    obfuscate = not (isinstance(options, dict) and options.get("include_obfuscation") is False)
    response_id = f"resp_{_RNG.getrandbits(200):050x}"
    ids = {p: _item_id(p, response_id) for p in ("rs_", "msg_", "fc_")}
    ids["call_"] = _new_id("call_")
    ending = scenario if scenario in ENDINGS else "completed"
    return ResponsesCall(
        "responses", path.startswith("/openai/"), body.get("stream") is True,
        scenario not in ("no_usage", "failed"), model, 1, words, count, tool, usage, body,
        response_id, int(time.time()), reasoning=bool(_REASONING_MODEL.match(requested)),
        ending=ending, obfuscate=obfuscate, ids=ids,
    )  # fmt: skip


def _echo(body: dict[str, Any], name: str, default: Any) -> Any:
    """A request field as the service echoes it: given, or the service's default."""
    value = body.get(name)
    return default if value is None else value


def _merged(body: dict[str, Any], name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """An object field (``text``, ``reasoning``): the request's keys over the defaults."""
    value = body.get(name)
    return {**defaults, **(value if isinstance(value, dict) else {})}


def _envelope(
    call: ResponsesCall, status: str, output: list[Any], usage: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``Response`` object in the service's field order, request fields echoed."""
    b = call.body
    effort = "medium" if call.reasoning else None
    tier = b.get("service_tier")
    details = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": call.id, "object": "response", "created_at": call.created, "status": status,
        "background": _echo(b, "background", False),
        "error": dict(_FAILURE) if status == "failed" else None,
        "incomplete_details": details,
        "instructions": b.get("instructions"),
        "max_output_tokens": b.get("max_output_tokens"),
        "max_tool_calls": b.get("max_tool_calls"),
        "model": call.model, "output": output,
        "parallel_tool_calls": _echo(b, "parallel_tool_calls", True),
        "previous_response_id": b.get("previous_response_id"),
        "prompt_cache_key": b.get("prompt_cache_key"),
        "reasoning": _merged(b, "reasoning", {"effort": effort, "summary": None}),
        "safety_identifier": b.get("safety_identifier"),
        "service_tier": "default" if tier in (None, "auto") else tier,
        "store": _echo(b, "store", True),
        "temperature": _echo(b, "temperature", 1.0),
        "text": _merged(b, "text", {"format": {"type": "text"}, "verbosity": "medium"}),
        "tool_choice": _echo(b, "tool_choice", "auto"),
        "tools": _echo(b, "tools", []),
        "top_logprobs": _echo(b, "top_logprobs", 0),
        "top_p": _echo(b, "top_p", 1.0),
        "truncation": _echo(b, "truncation", "disabled"),
        "usage": usage, "user": b.get("user"), "metadata": _echo(b, "metadata", {}),
    }  # fmt: skip


def _reasoning_item(call: ResponsesCall) -> dict[str, Any]:
    return {"id": call.ids["rs_"], "type": "reasoning", "summary": []}


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message(call: ResponsesCall, status: str, content: list[Any]) -> dict[str, Any]:
    item = {"id": call.ids["msg_"], "type": "message", "status": status}
    return {**item, "content": content, "role": "assistant"}


def _function_call(call: ResponsesCall, status: str, arguments: str) -> dict[str, Any]:
    item = {"id": call.ids["fc_"], "type": "function_call", "status": status}
    return {**item, "arguments": arguments, "call_id": call.ids["call_"], "name": call.tool}


def _output(call: ResponsesCall, status: str) -> list[dict[str, Any]]:
    """The finished output items: [reasoning], then the message or the function call."""
    items = [_reasoning_item(call)] if call.reasoning else []
    if call.tool:
        return [*items, _function_call(call, status, TOOL_ARGUMENTS)]
    return [*items, _message(call, status, [_part("".join(call.pieces()))])]


def _final(call: ResponsesCall) -> dict[str, Any]:
    """The last state of the response: the non-stream body and the stream's last event."""
    if call.ending == "failed":
        return _envelope(call, "failed", [], None)
    usage = call.usage if call.include_usage else None
    return _envelope(call, call.ending, _output(call, call.ending), usage)


def body(call: ResponsesCall) -> dict[str, Any]:
    """The non-stream JSON body: the final ``Response`` object."""
    return _final(call)


def _padding(call: ResponsesCall) -> dict[str, str]:
    """The random ``obfuscation`` field deltas carry (``stream_options`` can turn it off)."""
    if not call.obfuscate:
        return {}
    return {"obfuscation": "".join(_RNG.choices(_OBFUSCATION, k=_RNG.randint(2, 15)))}


def _message_events(call: ResponsesCall, index: int) -> Iterator[Event]:
    """Events of the message item; a failed response stops after its deltas."""
    ids = {"item_id": call.ids["msg_"], "output_index": index}
    yield "response.output_item.added", {"output_index": index,
                                         "item": _message(call, "in_progress", [])}  # fmt: skip
    yield "response.content_part.added", {**ids, "content_index": 0, "part": _part("")}
    for piece in call.pieces():
        delta = {"content_index": 0, "delta": piece, "logprobs": []}
        yield "response.output_text.delta", {**ids, **delta, **_padding(call)}
    if call.ending == "failed":
        return
    text = "".join(call.pieces())
    yield "response.output_text.done", {**ids, "content_index": 0, "text": text, "logprobs": []}
    yield "response.content_part.done", {**ids, "content_index": 0, "part": _part(text)}
    done = _message(call, call.ending, [_part(text)])
    yield "response.output_item.done", {"output_index": index, "item": done}


def _function_call_events(call: ResponsesCall, index: int) -> Iterator[Event]:
    """Events of the function call item; a failed response stops after its deltas."""
    ids = {"item_id": call.ids["fc_"], "output_index": index}
    added = _function_call(call, "in_progress", "")
    yield "response.output_item.added", {"output_index": index, "item": added}
    for piece in TOOL_ARGUMENT_PIECES:
        yield "response.function_call_arguments.delta", {**ids, "delta": piece, **_padding(call)}
    if call.ending == "failed":
        return
    yield "response.function_call_arguments.done", {**ids, "arguments": TOOL_ARGUMENTS}
    done = _function_call(call, call.ending, TOOL_ARGUMENTS)
    yield "response.output_item.done", {"output_index": index, "item": done}


def _events(call: ResponsesCall) -> Iterator[Event]:
    """Every event of the stream, lazily, in the service's order (module docstring)."""
    started = _envelope(call, "in_progress", [], None)
    yield "response.created", {"response": started}
    yield "response.in_progress", {"response": started}
    index = 0
    if call.reasoning:
        yield "response.output_item.added", {"output_index": 0, "item": _reasoning_item(call)}
        yield "response.output_item.done", {"output_index": 0, "item": _reasoning_item(call)}
        index = 1
    items = _function_call_events if call.tool else _message_events
    yield from items(call, index)
    final = _final(call)
    yield f"response.{final['status']}", {"response": final}


async def stream(
    conn: _Conn, call: ResponsesCall, scenario: str, arg: int, delay: float, keep: bool
) -> bool:
    """Send the named-event SSE stream, one flushed chunk per event, with the
    ``*_after:k`` faults (k counts every event); False when the connection must close."""
    await conn.sse_head(keep)
    stop_at = arg if scenario.endswith("_after") else -1
    sent = 0
    for name, fields in _events(call):
        if sent == stop_at:
            break
        if sent and delay:
            await asyncio.sleep(delay)
        event = {"type": name, "sequence_number": sent, **fields}
        await conn.event(_dumps(event, azure=call.azure), name)
        sent += 1
    if scenario in ("cut_after", "reset_after"):  # no terminating zero-size chunk
        conn.close(reset=scenario == "reset_after")
        return False
    if scenario == "sse_error_after":
        error = {"type": "error", "sequence_number": sent, **_FAILURE, "param": None}
        await conn.event(_dumps(error, azure=call.azure), "error")
    elif scenario == "malformed_after":
        await conn.event(b"{not json", "response.output_text.delta")
    elif delay:
        await asyncio.sleep(delay)
    await conn.event(b"")  # no [DONE]: the Responses API ends with the body
    return keep
