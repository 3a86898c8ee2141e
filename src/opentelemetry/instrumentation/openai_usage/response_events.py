"""The Responses API -> ResponseFacts: one `Response`, or its stream of events.

A Responses stream always ends with the whole response (`response.completed`,
`.incomplete` or `.failed`), usage included, so no injection is needed: the
accumulator keeps that final response, the first one (`response.created`, for the
id and model of a stream that ends early), and, for an estimate, the output text.
"""

from __future__ import annotations

from typing import Any

from .accumulators import ResponseFacts, _reason, _str
from .tally import CompletionTally, get, items
from .usage import usage_from

# A tuple, not a set: an event's `type` is compared, never hashed (a broken server's
# `"type": {}` is kept by the SDK, and is no key).
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


# Output items that hand the caller a call to run and answer, as a function call does: the
# turn stops there for the caller, which chat reports as `tool_calls` (for its custom
# tools too).
CALLER_TOOL_CALLS = frozenset(
    {
        "function_call",
        "custom_tool_call",
        "computer_call",
        "local_shell_call",
        "shell_call",
        "apply_patch_call",
    }
)


def finish_reasons(response: Any, called: bool = False) -> list[str]:
    """The chat vocabulary, so that dashboards group both APIs alike.

    completed -> "stop" ("tool_calls" when the output calls a tool the caller runs, a
    function or another (`CALLER_TOOL_CALLS`), or `called`: a stream sent such a call its
    last event left out), incomplete -> its reason
    ("length" for max_output_tokens), failed -> "error".
    """
    status = get(response, "status")
    if status == "completed":
        output = items(get(response, "output"))
        calls = called or any(_calls(get(item, "type")) for item in output)
        return ["tool_calls" if calls else "stop"]
    if status == "incomplete":
        reason = get(get(response, "incomplete_details"), "reason")
        return ["length" if reason == "max_output_tokens" else _reason(reason or "incomplete")]
    if status == "failed":
        return ["error"]
    return []


def _calls(kind: Any) -> bool:
    """Whether an output item's type is a call the caller runs (a server's odd `type`, a
    dict or a list, is none, and is not hashable)."""
    return isinstance(kind, str) and kind in CALLER_TOOL_CALLS


# Output items of built-in tools that are billed per call on top of the tokens (web
# search $10 and file search $2.50 per 1,000 calls, a code interpreter container $0.03,
# a generated image at image prices): their price is in no token count.
_PER_CALL_ITEMS = frozenset(
    {"web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call"}
)


def has_per_call_fees(response: Any) -> bool:
    """Whether a `Response` used a built-in tool billed per call: its tokens are then
    not its whole cost (a web search costs many times a short answer's tokens)."""
    # A server's odd `type` (a dict, a list) is no tool's, and is not hashable.
    return any(
        isinstance(kind := get(item, "type"), str) and kind in _PER_CALL_ITEMS
        for item in items(get(response, "output"))
    )


def facts_from_response(response: Any) -> ResponseFacts:
    """A `Response` (non-streamed, or the last event of a stream)."""
    return ResponseFacts(
        response_id=_str(get(response, "id")),
        model=_str(get(response, "model")),
        finish_reasons=finish_reasons(response),
        service_tier=_str(get(response, "service_tier")),
        usage=usage_from(get(response, "usage")),
        response=response,  # its output is read only if an estimate is made
        error=_failure(response),
    )


def _failure(response: Any) -> tuple[str, str] | None:
    """A `failed` response's error, or an error body the SDK parsed as a response,
    (code, message): the call failed, though nothing raised."""
    error = get(response, "error")
    if get(response, "status") != "failed" and error is None:
        return None
    # `{"error": "..."}`, as some gateways send it: the text is the message.
    message = error if isinstance(error, str) else get(error, "message")
    return (_str(get(error, "code")) or "failed", message if isinstance(message, str) else "")


class ResponsesStreamAccumulator:
    """Responses API events -> ResponseFacts. Per event: one attribute read and a compare."""

    __slots__ = (
        "answered",
        "called",
        "calls",
        "done",
        "error",
        "final",
        "first",
        "items",
        "model",
        "tally",
    )

    def __init__(self, tally: CompletionTally | None = None) -> None:
        self.tally = tally
        self.model: str | None = None
        self.first: Any = None
        self.final: Any = None
        self.calls: dict[int, int] = {}  # output_index -> tool call slot in the tally
        self.items = 0  # output items the stream added
        self.done = 0  # output items the stream finished
        self.answered = False  # the last of them a message: the turn's answer
        self.called = False  # one of them a call the caller runs (`CALLER_TOOL_CALLS`)
        self.error: tuple[str, str] | None = None  # an `error` event: (code, message)

    def on_chunk(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            if self.tally is not None:
                self.tally.add_first_content(getattr(event, "delta", None))
        elif kind in _FINAL_EVENTS:
            self.final = getattr(event, "response", None)
        elif kind == "response.created":
            self.first = getattr(event, "response", None)
            self.model = _str(get(self.first, "model"))
        elif kind == "response.output_item.added":
            self.items += 1
            item = getattr(event, "item", None)
            item_type = get(item, "type")
            if _calls(item_type):
                self.called = True
            if item_type == "function_call" and self.tally is not None:
                self._function_call(self.tally, kind, event, item)
        elif kind == "response.output_item.done":
            self.done += 1
            self.answered = get(getattr(event, "item", None), "type") == "message"
        elif kind == "response.function_call_arguments.delta" and self.tally is not None:
            self._function_call(self.tally, kind, event, None)
        elif kind == "response.refusal.delta" and self.tally is not None:
            # Output as well: counted, and captured, as a chat stream's refusal is.
            self.tally.add_chat_delta(0, {"refusal": getattr(event, "delta", None)})
        elif kind == "error" or (kind is None and getattr(event, "event", None) == "error"):
            # The SDK hands it on, it raises nothing. 2.x models the event; 1.x hands it on
            # as `{"data": {...}, "event": "error"}`, built into whichever event model
            # accepts it (`type` None), the error's fields in `data`.
            fields = event if kind == "error" else getattr(event, "data", None)
            code = _str(get(fields, "code")) or "error"
            message = get(fields, "message")
            self.error = (code, message if isinstance(message, str) else "")

    def _function_call(self, tally: CompletionTally, kind: str, event: Any, item: Any) -> None:
        """A function call streamed: its name when its item is added, then its arguments."""
        if kind == "response.output_item.added":
            function = {"name": get(item, "name")}
            call_id = get(item, "call_id")
        else:
            function = {"arguments": getattr(event, "delta", None)}
            call_id = None
        output_index = getattr(event, "output_index", 0)
        if not isinstance(output_index, int):  # a broken server's (a list is no dict key)
            output_index = 0
        slot = self.calls.setdefault(output_index, len(self.calls))
        call = {"index": slot, "id": call_id, "function": function}
        tally.add_chat_delta(0, {"tool_calls": [call]})

    def facts(self) -> ResponseFacts:
        final = self.final
        if final is not None:
            facts = facts_from_response(final)
            if self.items and not get(final, "output"):
                # The last event left out the output the stream sent (some servers send
                # `"output": []`, or none, which the SDK's helper rebuilds from the
                # stream): what was streamed is the output, for the finish reason, the
                # captured content and an estimate.
                facts.finish_reasons = finish_reasons(final, self.called)
                facts.response = None
                facts.tally = self.tally
            elif facts.usage is None:  # `response.failed` carries none: count what came
                facts.tally = self.tally
        else:  # ended early: what the first event said, and what was received
            first = self.first
            facts = ResponseFacts(
                response_id=_str(get(first, "id")),
                model=_str(get(first, "model")),
                service_tier=_str(get(first, "service_tier")),
                tally=self.tally,
            )
            facts.unterminated = True
            # Left before its output was (no item yet, or one unfinished): the server
            # generated, and bills, more than was read. So it may have after a finished
            # function call or reasoning item: parallel calls, or the answer, come next;
            # only a message ends the turn.
            facts.cut_short = self.done < self.items or not self.answered
            tally = self.tally
            facts.refused = (
                self.error is not None
                and first is None
                and not self.items
                and not (tally is not None and tally.chars)
            )
        if self.error is not None:
            facts.error = self.error
        return facts
