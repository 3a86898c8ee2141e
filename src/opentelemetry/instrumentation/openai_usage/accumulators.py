"""From what the server sent to ResponseFacts: one parsed response, or chunk by chunk.

An accumulator sees every chunk of a stream, so it does the least it can per
chunk (a few attribute reads) and leaves parsing usage to the end of the call.
It never keeps the chunks themselves: memory stays flat for any stream length.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from .errors import internal_error
from .tally import CompletionTally, shows_reasoning, tally_from_response
from .telemetry import MAX_ATTRIBUTE_LENGTH
from .usage import Usage, usage_from


@dataclass
class ResponseFacts:
    """What a finished call tells us, whichever way it arrived."""

    response_id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    # A stream's finish reasons by choice index (choices may finish in any order, and
    # some never do before it ends); None when not known by index.
    finish_by_choice: dict[int, str] | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    usage: Usage | None = None
    # Embeddings: the length of the vectors returned.
    dimension_count: int | None = None
    # What an estimate would count from the output: collected while streaming, or
    # read from the parsed response only if an estimate is made (`output_tally`).
    tally: CompletionTally | None = None
    response: Any = None
    # A server's `error` event in a stream that raised nothing (the Responses API's):
    # (code, message). The call failed all the same.
    error: tuple[str, str] | None = None
    # The server refused the call before any response began (a Responses stream whose
    # `error` event came first, as a rate limit can): nothing was generated or billed,
    # so there is nothing to estimate, as for the same refusal given as an HTTP error.
    refused: bool = False
    # A stream that always ends with a final event (the Responses API's) came to its end
    # without one: if it was read to the end, the server (or a proxy) cut it short.
    unterminated: bool = False
    # A stream left (closed, abandoned, broken), or ended by the server or a proxy, before
    # its output ended (a choice without its finish reason; a Responses stream without its
    # final event, an output item not done or the last one done no message): the server
    # generated, and billed, more than was read, so an estimate of it can only undercount
    # (only an estimate reads it: for a chat or completions stream it is looked for only
    # when no usage came).
    cut_short: bool = False

    def output_tally(self) -> CompletionTally | None:
        if self.tally is None and self.response is not None:
            self.tally = tally_from_response(self.response)
        return self.tally


def _str(value: Any) -> str | None:
    """A non-empty string the server sent, cut to the attribute limit: the response model
    also goes into metric points and content events, unlike the span's bounded copy."""
    return value[:MAX_ATTRIBUTE_LENGTH] if isinstance(value, str) and value else None


def _reason(value: Any) -> str:
    """A finish reason as text, cut like `_str` (a server may send anything there)."""
    return str(value)[:MAX_ATTRIBUTE_LENGTH]


def _finish_reasons(choices: Any) -> list[str]:
    if not isinstance(choices, list):
        return []
    reasons = []
    for choice in choices:
        reason = _str(getattr(choice, "finish_reason", None))
        if reason:
            reasons.append(reason)
    return reasons


def error_body(response: Any) -> tuple[str, str] | None:
    """(code, message) of an error body the SDK parsed as a response (an HTTP 200 whose
    body is `{"error": ...}`: the SDK raises nothing). Read from pydantic's extras, which
    costs nothing when, as nearly always, there is none."""
    extra = getattr(response, "__pydantic_extra__", None)
    # Under pydantic v1 (openai 1.x supports it) extra fields are plain attributes.
    error = extra.get("error") if isinstance(extra, dict) else getattr(response, "error", None)
    if error is None:  # nearly always: none of the shapes below
        return None
    if isinstance(error, SimpleNamespace):  # a body read as JSON (`raw_responses.loose_body`)
        error = vars(error)
    if isinstance(error, str) and error:
        # `{"error": "Internal error"}`, as some gateways and compatible servers send it
        # (the Responses API's reading, `_failure`, fails any error too).
        return "error", error
    if not isinstance(error, dict):
        return None
    code = _str(error.get("code")) or _str(error.get("type")) or "error"
    message = error.get("message")
    return code, message if isinstance(message, str) else ""


def facts_from_completion(response: Any) -> ResponseFacts:
    """A non-streamed `ChatCompletion` or legacy `Completion`."""
    return ResponseFacts(
        response_id=_str(getattr(response, "id", None)),
        model=_str(getattr(response, "model", None)),
        finish_reasons=_finish_reasons(getattr(response, "choices", None)),
        system_fingerprint=_str(getattr(response, "system_fingerprint", None)),
        service_tier=_str(getattr(response, "service_tier", None)),
        usage=usage_from(getattr(response, "usage", None)),
        response=response,
        error=error_body(response),
    )


def _joined(pieces: list[str]) -> str:
    """Choice 0's content pieces as one text. A broken server's content that is no text
    (`"content": 5`, which the SDK keeps as it came) is left out: looked for here, once per
    batch when a join fails, rather than checked on every chunk."""
    try:
        return "".join(pieces)
    except TypeError:
        return "".join(piece for piece in pieces if isinstance(piece, str))


# Choice 0's content pieces are kept in a plain list and handed to the tally in
# batches this long: one `list.append` per chunk, not a chain of calls. Short, so that
# what is held beyond the tally's cap stays small even for a server's huge pieces.
TEXT_BATCH = 64


def facts_from_embeddings(response: Any) -> ResponseFacts:
    """A `CreateEmbeddingResponse`: model, usage (input only) and the vectors' length."""
    return ResponseFacts(
        model=_str(getattr(response, "model", None)),
        usage=usage_from(getattr(response, "usage", None)),
        dimension_count=_dimension_count(getattr(response, "data", None)),
        response=response,
        error=error_body(response),
    )


def _dimension_count(data: Any) -> int | None:
    if not isinstance(data, list) or not data:
        return None
    vector = getattr(data[0], "embedding", None)
    if isinstance(vector, list):
        return len(vector)
    if isinstance(vector, str):  # encoding_format="base64": float32 values
        try:
            return len(base64.b64decode(vector, validate=True)) // 4
        except ValueError:
            return None
    return None


class ChatStreamAccumulator:
    """Chat completion chunks -> ResponseFacts (and, if estimating, the output text).

    `tally` is None when no estimate can be wanted (estimates off): then no text
    is kept at all. `on_chunk` runs for every chunk of every stream, so its common
    case (an SDK chunk, choice 0, some content) is plain attribute reads and one
    append; anything else takes `_collect`, the careful way.
    """

    __slots__ = (
        "finish_reasons",
        "model",
        "raw_usage",
        "response_id",
        "service_tier",
        "system_fingerprint",
        "tally",
        "text",
    )

    def __init__(self, tally: CompletionTally | None = None) -> None:
        self.tally = tally
        self.text: list[str] | None = None if tally is None else []
        self.response_id: str | None = None
        self.model: str | None = None
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None
        self.raw_usage: Any = None
        self.finish_reasons: dict[int, str] = {}

    def on_chunk(self, chunk: Any) -> None:
        try:
            choices = chunk.choices
            usage = chunk.usage
        except AttributeError:
            choices = getattr(chunk, "choices", None)
            usage = getattr(chunk, "usage", None)
        if self.response_id is None:
            self._first_facts(chunk)
        if choices and isinstance(choices, list):  # the SDK keeps a server's `true` as is
            text = self.text
            for choice in choices:
                try:
                    if choice.finish_reason:
                        self._finished(choice)
                    if text is None:
                        continue
                    delta = choice.delta
                    content = delta.content
                    if content and not choice.index and not delta.tool_calls:
                        text.append(content)
                        if len(text) >= TEXT_BATCH:
                            self.hand_over_text()
                    elif (
                        choice.index
                        or delta.tool_calls
                        or delta.function_call
                        or getattr(delta, "refusal", None)  # not in older SDKs
                        or (not content and self._reasoning(delta))
                        or (not content and self._audio(delta))
                    ):
                        self._collect(choice)
                except AttributeError:  # not an SDK chat chunk
                    self._odd_choice(choice)
        if usage is not None:
            self.raw_usage = usage

    def _reasoning(self, delta: Any) -> bool:
        """A delta with reasoning text the tally has not noted yet (then `_collect` does)."""
        tally = self.tally
        return tally is not None and not tally.reasoned and shows_reasoning(delta)

    def _audio(self, delta: Any) -> bool:
        """A delta of an audio reply, whose transcript captured content keeps."""
        tally = self.tally
        return tally is not None and tally.keep_audio and getattr(delta, "audio", None) is not None

    def _finished(self, choice: Any) -> None:
        index = choice.index
        self.finish_reasons[index if isinstance(index, int) else 0] = _reason(choice.finish_reason)

    def hand_over_text(self) -> None:
        if self.tally is None or not self.text:
            return
        try:
            self.tally.add_first_content(_joined(self.text))
            self.text.clear()
            if self.tally.truncated:  # at the cap: nothing more is counted, none is kept
                self.text = None
        except Exception as exc:  # the estimate is lost, never the rest of the facts
            internal_error("collecting output text", exc)
            self.text, self.tally = None, None

    def _collect(self, choice: Any) -> None:
        """A chunk off the common path: other choices, tool calls, refusals."""
        if self.tally is not None:
            self.hand_over_text()  # keep choice 0's text in order
            self.tally.add_chat_delta(getattr(choice, "index", 0), getattr(choice, "delta", None))

    def _odd_choice(self, choice: Any) -> None:
        """A choice without the SDK chat shape (a legacy completion, a dict): no shortcuts."""
        index = getattr(choice, "index", 0)
        index = index if isinstance(index, int) else 0
        reason = getattr(choice, "finish_reason", None)
        if reason and index not in self.finish_reasons:
            self.finish_reasons[index] = _reason(reason)
        self._collect(choice)

    def _first_facts(self, chunk: Any) -> None:
        # Azure's prompt-filter chunk comes first with an empty id and model.
        # Cut like every string a server sends (`_str`): a stream's id goes onto the span
        # as a non-streamed response's does, and must stay as bounded.
        response_id = _str(getattr(chunk, "id", None))
        if response_id is not None:
            self.response_id = response_id
            self.model = _str(getattr(chunk, "model", None))
            self.system_fingerprint = _str(getattr(chunk, "system_fingerprint", None))
            self.service_tier = _str(getattr(chunk, "service_tier", None))

    def facts(self) -> ResponseFacts:
        self.hand_over_text()
        return ResponseFacts(
            response_id=self.response_id,
            model=self.model,
            finish_reasons=[self.finish_reasons[i] for i in sorted(self.finish_reasons)],
            finish_by_choice=dict(self.finish_reasons),
            system_fingerprint=self.system_fingerprint,
            service_tier=self.service_tier,
            usage=usage_from(self.raw_usage),
            tally=self.tally,
        )


class TextStreamAccumulator(ChatStreamAccumulator):
    """Legacy completion chunks: the same facts, the output as `choices[].text`."""

    __slots__ = ()

    def _collect(self, choice: Any) -> None:
        if self.tally is not None:
            self.tally.add_text(getattr(choice, "index", 0), getattr(choice, "text", None))
