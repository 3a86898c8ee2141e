"""Message content in the GenAI conventions' JSON shapes, for users who opt in.

Content is sensitive (prompts, answers, tool arguments), so nothing here runs unless
the user turned capture on, and every value is cut to a documented size. The shapes
are those of `gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions` and `gen_ai.tool.definitions`: a message is a role and
a list of typed parts (`text`, `tool_call`, `tool_call_response`, `uri`, `blob`,
`file`, `reasoning`, or the provider's own type).

Pure functions over the caller's request and the SDK's response (or, for a stream,
what the tally collected), never raising on odd input.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from .errors import SURROGATES, encodable, is_credential
from .tally import ChoiceText, CompletionTally, Pieces, get, not_given

Part = dict[str, Any]
Message = dict[str, Any]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _given(value: Any) -> Any:
    """The value, or None for the SDK's `NOT_GIVEN` / `omit`: a field the SDK leaves out of
    the request, which the captured request must leave out too (not "NOT_GIVEN", nor an
    `<openai.Omit object at 0x...>`)."""
    return None if not_given(value) else value


def _arguments(raw: Any) -> Any:
    """Tool arguments as the object they encode, or the raw text when not JSON."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _inline(url: str, modality: str) -> Part | None:
    """`data:image/png;base64,...` -> a blob part; None for anything else."""
    if not (url.startswith("data:") and "," in url):
        return None
    header, data = url[5:].split(",", 1)
    return {
        "type": "blob",
        "modality": modality,
        "mime_type": header.split(";", 1)[0] or None,
        "content": data,
    }


def _data_url(url: str, modality: str) -> Part:
    """A data URL -> a blob part; any other URL -> a uri part."""
    blob = _inline(url, modality)
    if blob is not None:
        return blob
    return {"type": "uri", "modality": modality, "uri": without_credentials(url)}


_REDACTED = "[REDACTED]"


def _without_credential(pair: str) -> str:
    name, equals, value = pair.partition("=")
    if equals and value and is_credential(unquote_plus(name)):
        return f"{name}={_REDACTED}"
    return pair


def without_credentials(url: str) -> str:
    """The URL of an image or file as captured: the content is where it points, not the
    credentials it may carry, which would let whoever reads the trace fetch it. A
    presigned or shared-access URL's signature and token (`sig`, `X-Amz-Signature`,
    `X-Amz-Security-Token`, `X-Goog-Credential`...), any other query or fragment
    parameter named as a credential, and the user info are `[REDACTED]`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL we can read: its text is all there is to keep
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_REDACTED}@{netloc.rpartition('@')[2]}"
    query, fragment = (
        "&".join(_without_credential(pair) for pair in text.split("&"))
        for text in (parts.query, parts.fragment)
    )
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


# ----------------------------------------------------------------- chat input


# An audio format's IANA media type, where it is not `audio/<format>`: the conventions'
# `mime_type` is the IANA one, which for MP3 is `audio/mpeg` (there is no `audio/mp3`).
_AUDIO_MIME_TYPES = {"mp3": "audio/mpeg"}


def _chat_part(part: Any) -> Part:
    kind = get(part, "type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": "text", "content": _text(get(part, "text")) or ""}
    if kind == "refusal":
        return {"type": "refusal", "content": _text(get(part, "refusal")) or ""}
    if kind == "image_url":
        url = _text(get(get(part, "image_url"), "url")) or ""
        return _data_url(url, "image")
    if kind == "input_audio":
        audio = get(part, "input_audio")
        audio_format = _text(get(audio, "format"))
        mime_type = None
        if audio_format:
            mime_type = _AUDIO_MIME_TYPES.get(audio_format, f"audio/{audio_format}")
        return {
            "type": "blob",
            "modality": "audio",
            "mime_type": mime_type,
            "content": _text(get(audio, "data")) or "",
        }
    if kind == "file":
        return _file_part(get(part, "file"), "file")
    return {"type": str(kind)}


def _file_part(file: Any, modality: str) -> Part:
    """A file the caller sent: by id (a `file` part), inline (`file_data`, a `blob`) or by
    URL (`file_url`, a `uri`). The conventions' `file` part requires its `file_id`: a file
    sent inline has none, and its data is the content, as an inline image's is."""
    file_id = _text(get(file, "file_id"))
    if file_id is not None:
        return {"type": "file", "modality": modality, "file_id": file_id}
    data = _text(get(file, "file_data"))
    if data is not None:
        blob = _inline(data, modality)
        if blob is not None:
            return blob
        filename = _text(get(file, "filename"))
        mime_type = mimetypes.guess_type(filename)[0] if filename else None
        return {"type": "blob", "modality": modality, "mime_type": mime_type, "content": data}
    url = _text(get(file, "file_url")) or _text(get(file, "image_url"))
    if url is not None:
        return _data_url(url, modality)
    return {"type": "blob", "modality": modality, "mime_type": None, "content": ""}


def _content_parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, (list, tuple)):
        return [_chat_part(part) for part in content]
    return []


def _tool_call_part(call: Any) -> Part:
    function = get(call, "function") or get(call, "custom")
    arguments = _given(get(function, "arguments"))
    if arguments is None:
        arguments = _given(get(function, "input"))
    return {
        "type": "tool_call",
        "id": _text(get(call, "id")),
        "name": _text(get(function, "name")) or "",
        "arguments": _arguments(arguments),
    }


def _chat_message(message: Any) -> Message:
    role = _text(get(message, "role")) or "user"
    if role in ("tool", "function"):
        response = _given(get(message, "content"))
        if isinstance(response, (list, tuple)):
            response = "".join(_text(get(p, "text")) or "" for p in response)
        part = {"type": "tool_call_response", "id": _text(get(message, "tool_call_id"))}
        answer: Message = {"role": "tool", "parts": [{**part, "response": response}]}
        # A legacy function's result has no call id (the schema's `id` may be null): the
        # function's `name`, which it must give, is what pairs it with the call, and names
        # the participant whose message it is, as the schema's message `name` does.
        name = _text(get(message, "name")) if role == "function" else None
        if name:
            answer["name"] = name
        return answer
    parts = _content_parts(get(message, "content"))
    # An audio reply has no `content`: what it says is its transcript.
    transcript = _text(get(get(message, "audio"), "transcript"))
    if transcript:
        parts.append({"type": "text", "content": transcript})
    refusal = _text(get(message, "refusal"))
    if refusal:
        parts.append({"type": "refusal", "content": refusal})
    # `_sequence`: a one-shot iterable here is the SDK's to send, not ours to use up.
    parts.extend(_tool_call_part(call) for call in _sequence(get(message, "tool_calls")))
    function_call = get(message, "function_call")
    if function_call is not None:
        parts.append(_tool_call_part({"function": function_call}))
    result: Message = {"role": role, "parts": parts}
    name = _text(get(message, "name"))
    if name:
        result["name"] = name
    return result


def chat_input(request: Mapping[str, Any]) -> list[Message]:
    messages = request.get("messages")
    if not isinstance(messages, (list, tuple)):
        return []
    return [_chat_message(message) for message in messages]


def tool_definitions(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chat (`tools`, legacy `functions`) and Responses (`tools`) alike, flattened."""
    definitions = []
    for tool in list(_sequence(request.get("tools"))) + list(_sequence(request.get("functions"))):
        kind = _text(get(tool, "type")) or "function"
        # Chat nests a tool's definition under its type (`function`, `custom`); Responses
        # and legacy `functions` give it flat.
        function = next((d for d in (get(tool, "function"), get(tool, "custom")) if d), tool)
        definition: dict[str, Any] = {"type": kind, "name": _text(get(function, "name")) or kind}
        for key in ("description", "parameters"):
            value = _given(get(function, key))
            if value is not None:
                definition[key] = value
        definitions.append(definition)
    return definitions


def _sequence(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else ()


# ----------------------------------------------------------------- chat output


def _joined(pieces: Pieces) -> str:
    return "".join(pieces)


# OpenAI's finish reasons where the output-message schema's `FinishReason` names the same
# thing otherwise (`stop`, `length`, `content_filter`, `tool_call`, `error`): a consumer of
# captured messages reads one vocabulary whatever the provider. Others (`unknown` for a
# stream that ended before it said, a compatible server's own) are kept, as the schema
# allows any string. `gen_ai.response.finish_reasons` keeps the provider's values (the
# conventions define no vocabulary for it: its example is OpenAI's own `stop`).
_FINISH_REASONS = {"tool_calls": "tool_call", "function_call": "tool_call"}


def finish_reason(reason: str) -> str:
    """A choice's finish reason as an output message's `finish_reason`."""
    return _FINISH_REASONS.get(reason, reason)


def chat_output(response: Any) -> list[Message]:
    """A non-streamed chat or legacy completion: one message per choice."""
    messages = []
    for choice in _sequence(get(response, "choices")):
        message = get(choice, "message")
        if message is not None:
            out = _chat_message(message)
            out["role"] = "assistant"
        else:  # a legacy completion choice
            out = {"role": "assistant", "parts": _content_parts(get(choice, "text"))}
        out["finish_reason"] = finish_reason(_text(get(choice, "finish_reason")) or "unknown")
        messages.append(out)
    return messages


def _choice_message(choice: ChoiceText, reason: str) -> Message:
    parts: list[Part] = []
    if choice.content:
        parts.append({"type": "text", "content": _joined(choice.content)})
    if choice.audio_transcript:
        parts.append({"type": "text", "content": _joined(choice.audio_transcript)})
    if choice.refusal:
        parts.append({"type": "refusal", "content": _joined(choice.refusal)})
    for slot in sorted(choice.tool_calls):
        name, arguments = choice.tool_calls[slot]
        parts.append(
            {
                "type": "tool_call",
                "id": choice.tool_call_ids.get(slot),
                "name": _joined(name),
                "arguments": _arguments(_joined(arguments)),
            }
        )
    if choice.function_call is not None:
        name, arguments = choice.function_call
        # No id: a legacy function call has none, as its non-streamed message shows it.
        part = {"type": "tool_call", "id": None, "name": _joined(name)}
        parts.append({**part, "arguments": _arguments(_joined(arguments))})
    return {"role": "assistant", "parts": parts, "finish_reason": finish_reason(reason)}


def tally_output(tally: CompletionTally, finish_reasons: Mapping[int, str]) -> list[Message]:
    """A stream's output, assembled from its chunks: every choice, tool calls included.

    Finish reasons by choice index: a choice whose stream ended before its finish reason
    arrived says "unknown"; one that finished without any text still has its message.
    """
    indexes = sorted(set(tally.choices) | set(finish_reasons))
    return [
        _choice_message(tally.choices.get(i) or ChoiceText(), finish_reasons.get(i, "unknown"))
        for i in indexes
    ]


# ----------------------------------------------------------------- Responses API


def _response_item(item: Any) -> Message:
    kind = get(item, "type")
    # A custom tool's call (its `input` free text) is the caller's tool to run, as a
    # function's is, and as chat's `custom` tool calls are captured.
    if kind in ("function_call", "custom_tool_call"):
        call = {"id": get(item, "call_id"), "function": item}
        return {"role": "assistant", "parts": [_tool_call_part(call)]}
    if kind in ("function_call_output", "custom_tool_call_output"):
        part = {"type": "tool_call_response", "id": _text(get(item, "call_id"))}
        return {"role": "tool", "parts": [{**part, "response": _tool_output(get(item, "output"))}]}
    if kind == "reasoning":
        summary = "".join(_text(get(s, "text")) or "" for s in _sequence(get(item, "summary")))
        return {"role": "assistant", "parts": [{"type": "reasoning", "content": summary}]}
    if kind in (None, "message"):
        role = _text(get(item, "role")) or "user"
        return {"role": role, "parts": [_response_part(p) for p in _parts(get(item, "content"))]}
    if isinstance(kind, str) and kind in _SERVER_TOOLS:
        return {"role": "assistant", "parts": _server_tool_parts(kind, item)}
    if isinstance(kind, str) and kind in _CLIENT_TOOLS:
        name, arguments = _CLIENT_TOOLS[kind](item)
        call = {"type": "tool_call", "id": _text(get(item, "call_id")), "name": name}
        return {"role": "assistant", "parts": [{**call, "arguments": arguments}]}
    if isinstance(kind, str) and kind in _CLIENT_TOOL_OUTPUTS:
        part = {"type": "tool_call_response", "id": _text(get(item, "call_id"))}
        response = _CLIENT_TOOL_OUTPUTS[kind](item)
        return {"role": "tool", "parts": [{**part, "response": response}]}
    return {"role": "assistant", "parts": [{"type": str(kind)}]}


# Built-in tools: the Responses API's output items of the tools OpenAI runs itself (a
# `server_tool_call` part of the schemas, with the tool's `type`, and what it found as a
# `server_tool_call_response`), and of those it hands to the caller to run (a computer, a
# shell, a patch: a `tool_call`, as a function's call is, answered by the caller's output
# item). What each holds is read field by field, never copied whole: a URL keeps no
# credentials (`without_credentials`: a code interpreter's image, a page searched), a file
# search's results are named (file, score), never quoted (their text is the user's files),
# a generated image's data is left out (megabytes of base64 no cut would keep readable),
# and a shell's environment (`env`: where secrets are passed) is not read at all. Their
# contents sit under `arguments` and `response`, the keys whose strings are cut to size.


def _fields(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of an SDK object or dict that are set, as JSON values (a nested
    SDK object, a drag's path of points say, as its fields, not its `repr`)."""
    found = {}
    for name in names:
        field = _given(get(value, name))
        if isinstance(field, (list, tuple)):
            field = [_plain(v) for v in field]
        if field is not None:
            found[name] = _plain(field)
    return found


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def _url_fields(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """`_fields`, its `url` without credentials, its `sources` as their URLs."""
    found = _fields(value, names)
    url = _text(found.get("url"))
    if url is not None:
        found["url"] = without_credentials(url)
    if "sources" in found:
        urls = (_text(get(source, "url")) for source in _sequence(found["sources"]))
        found["sources"] = [without_credentials(u) for u in urls if u is not None]
    return found


def _web_search(item: Any) -> tuple[dict[str, Any], Any]:
    fields = ("type", "query", "queries", "url", "pattern", "sources")
    action = _url_fields(get(item, "action"), fields)
    return {"action": action}, None


def _file_search(item: Any) -> tuple[dict[str, Any], Any]:
    results = [
        _fields(result, ("file_id", "filename", "score"))
        for result in _sequence(get(item, "results"))
    ]
    return _fields(item, ("queries",)), ({"results": results} if results else None)


def _code_interpreter(item: Any) -> tuple[dict[str, Any], Any]:
    outputs = [
        _url_fields(output, ("type", "logs", "url")) for output in _sequence(get(item, "outputs"))
    ]
    return _fields(item, ("code", "container_id")), ({"outputs": outputs} if outputs else None)


def _image_generation(item: Any) -> tuple[dict[str, Any], Any]:
    return {}, _fields(item, ("revised_prompt",)) or None


def _mcp_call(item: Any) -> tuple[dict[str, Any], Any]:
    arguments = {"server_label": _given(get(item, "server_label"))}
    arguments["arguments"] = _arguments(_given(get(item, "arguments")))
    response = _fields(item, ("output",))
    error = _given(get(item, "error"))
    if error is not None:
        response["error"] = error if isinstance(error, str) else _fields(error, ("message",))
    return arguments, response or None


def _mcp_list_tools(item: Any) -> tuple[dict[str, Any], Any]:
    tools = [_text(get(tool, "name")) for tool in _sequence(get(item, "tools"))]
    return _fields(item, ("server_label",)), {"tools": [t for t in tools if t]}


# Output item type -> (the tool's type, how its call and its response are read).
_SERVER_TOOLS: dict[str, tuple[str, Callable[[Any], tuple[dict[str, Any], Any]]]] = {
    "web_search_call": ("web_search", _web_search),
    "file_search_call": ("file_search", _file_search),
    "code_interpreter_call": ("code_interpreter", _code_interpreter),
    "image_generation_call": ("image_generation", _image_generation),
    "mcp_call": ("mcp", _mcp_call),
    "mcp_list_tools": ("mcp_list_tools", _mcp_list_tools),
    "mcp_approval_request": ("mcp_approval_request", _mcp_call),
}


def _server_tool_parts(kind: str, item: Any) -> list[Part]:
    tool, read = _SERVER_TOOLS[kind]
    arguments, response = read(item)
    item_id = _text(get(item, "id"))
    status = _text(get(item, "status"))
    # An MCP tool is named by its server's tool; the others by the built-in tool's type.
    name = _text(get(item, "name")) if kind in ("mcp_call", "mcp_approval_request") else None
    details: dict[str, Any] = {"type": tool, "arguments": arguments}
    if status is not None:
        details["status"] = status
    parts: list[Part] = [
        {
            "type": "server_tool_call",
            "id": item_id,
            "name": name or tool,
            "server_tool_call": details,
        }
    ]
    if response is not None:
        answer = {"type": tool, "response": response}
        parts.append(
            {
                "type": "server_tool_call_response",
                "id": item_id,
                "server_tool_call_response": answer,
            }
        )
    return parts


_ACTION_FIELDS = (
    "type", "button", "x", "y", "keys", "text", "scroll_x", "scroll_y", "path", "ms",
)  # fmt: skip


def _computer_call(item: Any) -> tuple[str, Any]:
    return "computer_use", _fields(get(item, "action"), _ACTION_FIELDS)


def _shell_call(item: Any) -> tuple[str, Any]:
    # `env` is never read: it is where a caller passes the shell its secrets.
    action = _fields(get(item, "action"), ("type", "command", "commands", "working_directory"))
    return "shell", action


def _apply_patch_call(item: Any) -> tuple[str, Any]:
    return "apply_patch", _fields(get(item, "operation"), ("type", "path", "diff"))


# Output item type -> how the call the caller runs is read: (tool name, arguments).
_CLIENT_TOOLS: dict[str, Callable[[Any], tuple[str, Any]]] = {
    "computer_call": _computer_call,
    "local_shell_call": _shell_call,
    "shell_call": _shell_call,
    "apply_patch_call": _apply_patch_call,
}


def _computer_output(item: Any) -> Any:
    """A screenshot, by URL (without credentials) or inline (a blob), or by file id."""
    output = get(item, "output")
    url = _text(get(output, "image_url"))
    if url is not None:
        return [_data_url(url, "image")]
    file_id = _text(get(output, "file_id"))
    return [{"type": "file", "modality": "image", "file_id": file_id}] if file_id else None


def _shell_output(item: Any) -> Any:
    """A shell's output: its text, or each command's `stdout` and `stderr`."""
    output = _given(get(item, "output"))
    if isinstance(output, (list, tuple)):
        return [_fields(o, ("stdout", "stderr")) for o in output]
    return output if isinstance(output, str) else None


# The caller's answers to those calls, as input items.
_CLIENT_TOOL_OUTPUTS: dict[str, Callable[[Any], Any]] = {
    "computer_call_output": _computer_output,
    "local_shell_call_output": _shell_output,
    "shell_call_output": _shell_output,
    "apply_patch_call_output": _shell_output,
}


def _tool_output(output: Any) -> Any:
    """A tool's result: its text, or its content parts (text, images, files) read as a
    message's are, never as given: an image or file URL keeps no credentials."""
    if isinstance(output, (list, tuple)):
        return [_response_part(part) for part in output]
    return _given(output)


def _parts(content: Any) -> tuple[Any, ...]:
    if isinstance(content, str):
        return ({"type": "input_text", "text": content},)
    return _sequence(content)


def _response_part(part: Any) -> Part:
    kind = get(part, "type")
    if kind == "input_image":
        return _file_part(part, "image")
    if kind == "input_file":
        return _file_part(part, "file")
    return _chat_part(part)


def responses_input(request: Mapping[str, Any]) -> list[Message]:
    raw = request.get("input")
    if isinstance(raw, str):
        return [{"role": "user", "parts": [{"type": "text", "content": raw}]}]
    return [_response_item(item) for item in _sequence(raw)]


def responses_instructions(request: Mapping[str, Any]) -> list[Part]:
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        return [{"type": "text", "content": instructions}]
    return []


def responses_output(response: Any, finish_reasons: list[str]) -> list[Message]:
    """One assistant message holding every output item's parts."""
    parts: list[Part] = []
    for item in _sequence(get(response, "output")):
        parts.extend(_response_item(item)["parts"])
    reason = finish_reasons[0] if finish_reasons else "unknown"
    return [{"role": "assistant", "parts": parts, "finish_reason": finish_reason(reason)}]


def completion_input(request: Mapping[str, Any]) -> list[Message]:
    """A legacy completion's prompt (a string or a list of strings) as user text."""
    prompt = request.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else list(_sequence(prompt))
    parts = [{"type": "text", "content": p} for p in prompts if isinstance(p, str)]
    return [{"role": "user", "parts": parts}] if parts else []


# ----------------------------------------------------------------- for error texts

# Request parameters that hold content, and, within them, the keys whose values are
# content, and those whose values are the shape (a message's `role`, a part's or a JSON
# schema's `type`, names and ids): never content, even inside content. (`prediction`:
# a chat call's predicted output, the text of the file being edited, say; `suffix`: the
# text after a legacy completion's insertion point.)
_CONTENT_PARAMETERS = (
    "messages", "input", "prompt", "suffix", "instructions", "tools", "functions",
    "prediction",
)  # fmt: skip
_TEXT_PARAMETERS = frozenset({"input", "prompt", "suffix", "instructions"})
_TEXT_KEYS = frozenset(
    {"content", "text", "arguments", "input", "output", "refusal", "description"}
)
_SHAPE_KEYS = frozenset({"role", "type", "name", "id", "call_id", "tool_call_id", "status"})
_MAX_DEPTH = 24


def request_texts(request: Mapping[str, Any]) -> list[str]:
    """The request's content strings, for scrubbing from an error text a server may
    quote them in, when content is not captured. Runs only when a call failed."""
    found: list[str] = []

    def walk(value: Any, inside: bool, depth: int) -> None:
        if isinstance(value, str):
            if inside and value:
                found.append(value)
        elif depth < _MAX_DEPTH and isinstance(value, Mapping):
            for key, item in value.items():
                if key not in _SHAPE_KEYS:
                    walk(item, inside or key in _TEXT_KEYS, depth + 1)
        elif depth < _MAX_DEPTH and isinstance(value, (list, tuple)):
            for item in value:
                walk(item, inside, depth + 1)

    # A string (or list of strings) given as one of `_TEXT_PARAMETERS` is content; in a
    # list of messages or items, what their keys say.
    for name in _CONTENT_PARAMETERS:
        walk(request.get(name), name in _TEXT_PARAMETERS, 0)
    return found


# ----------------------------------------------------------------- size limit

_ELLIPSIS = "…"
# Where the conventions' shapes hold content (text, tool arguments and results, data,
# tool descriptions and schemas): only strings beneath these keys are ever cut. Roles,
# part types, ids, names and finish reasons are the shape, and "u…" for a role breaks it.
_CONTENT_KEYS = frozenset({"content", "arguments", "response", "uri", "description", "parameters"})


def _cut(value: Any, limit: int, content: bool = False) -> Any:
    if isinstance(value, str):
        return value if not content or len(value) <= limit else value[:limit] + _ELLIPSIS
    if isinstance(value, list):
        return [_cut(v, limit, content) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v, limit, content or k in _CONTENT_KEYS) for k, v in value.items()}
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# Content is not cut shorter than this while leaving out old messages can make room:
# 300 turns of "…" would say less than the latest 200 with a few words each.
_SHORTEST_CUT = 16


def _fit(value: Any, max_length: int, shortest: int) -> str | None:
    """The JSON with its long content strings cut to the longest common length that
    fits (not below `shortest`), if any does."""
    value = _cut(value, max_length)  # nothing longer can fit: bounds the work below
    low, high, best = shortest, max_length, None
    while low <= high:
        middle = (low + high) // 2
        candidate = _dumps(_cut(value, middle))
        if len(candidate) <= max_length:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def _encodable(value: Any) -> Any:
    """`value` with its strings encodable in UTF-8 (`errors.encodable`). An exporter
    encodes attributes as UTF-8 (OTLP's protobuf strings must be valid), and drops a
    value it cannot encode."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    return value


def bounded_json(value: Any, max_length: int) -> str:
    """JSON of at most `max_length` characters, valid, in the conventions' shape.

    Long content strings are cut first (each to the same, largest length that fits,
    marked with an ellipsis), never the JSON text nor the strings of its shape. When
    that would leave less than `_SHORTEST_CUT` characters of them (a long history),
    whole items of the list are left out, the first (oldest) ones first, as few as need be.
    Its text is valid UTF-8: surrogates are mended first (`_encodable`), never cut apart.
    """
    text = _dumps(value)
    if SURROGATES.search(text) is not None:
        value = _encodable(json.loads(text))  # JSON types only, as `_dumps` made them
        text = _dumps(value)
    if len(text) <= max_length:
        return text
    fitted = _fit(value, max_length, _SHORTEST_CUT)
    if fitted is not None:
        return fitted
    if not isinstance(value, list) or not value:
        return _fit(value, max_length, 0) or text[:max_length]  # not a list: no items to leave
    low, high, keep = 1, len(value) - 1, 0
    while low <= high:  # the most trailing items that fit with content cut that short
        middle = (low + high) // 2
        if len(_dumps(_cut(value[-middle:], _SHORTEST_CUT))) <= max_length:
            keep, low = middle, middle + 1
        else:
            high = middle - 1
    fitted = _fit(value[-max(keep, 1) :], max_length, _SHORTEST_CUT if keep else 0)
    if fitted is None:
        fitted = "[]" if max_length >= 2 else ""  # not even one item fits
    return fitted


def bounded_value(value: Any, max_length: int) -> Any:
    """`value` cut as `bounded_json` cuts it, as a value: its JSON fits in `max_length`.
    Parsed back from that JSON, not cut in place: only JSON types (no SDK objects, bytes)
    reach a log record's attributes, which would drop anything else. (The JSON text
    itself, where no cut of the content makes it fit: a shape that long.)"""
    text = bounded_json(value, max_length)
    try:
        return json.loads(text)
    except ValueError:
        return text
