"""From what the server sent to ResponseFacts: one parsed response, or chunk by chunk.

An accumulator sees every chunk of a stream, so it does the least it can per
chunk (a few attribute reads) and leaves parsing usage to the end of the call.
It never keeps the chunks themselves: memory stays flat for any stream length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tally import CompletionTally, tally_from_response
from .usage import Usage, usage_from


@dataclass
class ResponseFacts:
    """What a finished call tells us, whichever way it arrived."""

    response_id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    system_fingerprint: str | None = None
    service_tier: str | None = None
    usage: Usage | None = None
    # What an estimate would count from the output: collected while streaming, or
    # read from the parsed response only if an estimate is made (`output_tally`).
    tally: CompletionTally | None = None
    response: Any = None

    def output_tally(self) -> CompletionTally | None:
        if self.tally is None and self.response is not None:
            self.tally = tally_from_response(self.response)
        return self.tally


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _finish_reasons(choices: Any) -> list[str]:
    if not isinstance(choices, list):
        return []
    reasons = []
    for choice in choices:
        reason = _str(getattr(choice, "finish_reason", None))
        if reason:
            reasons.append(reason)
    return reasons


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
    )


class ChatStreamAccumulator:
    """Chat completion chunks -> ResponseFacts (and, if estimating, the output text).

    `tally` is None when no estimate can be wanted (estimates off): then no text
    is kept at all.
    """

    __slots__ = (
        "finish_reasons",
        "model",
        "raw_usage",
        "response_id",
        "service_tier",
        "system_fingerprint",
        "tally",
    )

    def __init__(self, tally: CompletionTally | None = None) -> None:
        self.tally = tally
        self.response_id: str | None = None
        self.model: str | None = None
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None
        self.raw_usage: Any = None
        self.finish_reasons: dict[int, str] = {}

    def on_chunk(self, chunk: Any) -> None:
        try:
            # The common case, SDK chunk objects: plain attribute reads.
            choices = chunk.choices
            usage = chunk.usage
        except AttributeError:
            choices = getattr(chunk, "choices", None)
            usage = getattr(chunk, "usage", None)
        if self.response_id is None:
            self._first_facts(chunk)
        if choices:
            tally = self.tally
            for choice in choices:
                reason = getattr(choice, "finish_reason", None)
                if reason:
                    index = getattr(choice, "index", 0)
                    self.finish_reasons[index if isinstance(index, int) else 0] = str(reason)
                if tally is not None:
                    self._collect(tally, choice)
        if usage is not None:
            self.raw_usage = usage

    def _collect(self, tally: CompletionTally, choice: Any) -> None:
        # The common chunk (choice 0, some content, nothing else) takes the short path.
        try:
            delta = choice.delta
            # (`refusal` is missing from older SDKs' deltas, hence the getattr.)
            if (
                choice.index
                or delta.tool_calls
                or delta.function_call
                or getattr(delta, "refusal", None)
            ):
                tally.add_chat_delta(choice.index, delta)
            elif delta.content:
                tally.add_first_content(delta.content)
        except AttributeError:  # not an SDK chunk: the careful way
            tally.add_chat_delta(getattr(choice, "index", 0), getattr(choice, "delta", None))

    def _first_facts(self, chunk: Any) -> None:
        # Azure's prompt-filter chunk comes first with an empty id and model.
        response_id = getattr(chunk, "id", None)
        if isinstance(response_id, str) and response_id:
            self.response_id = response_id
            self.model = _str(getattr(chunk, "model", None))
            self.system_fingerprint = _str(getattr(chunk, "system_fingerprint", None))
            self.service_tier = _str(getattr(chunk, "service_tier", None))

    def facts(self) -> ResponseFacts:
        return ResponseFacts(
            response_id=self.response_id,
            model=self.model,
            finish_reasons=[self.finish_reasons[i] for i in sorted(self.finish_reasons)],
            system_fingerprint=self.system_fingerprint,
            service_tier=self.service_tier,
            usage=usage_from(self.raw_usage),
            tally=self.tally,
        )


class TextStreamAccumulator(ChatStreamAccumulator):
    """Legacy completion chunks: the same facts, the output as `choices[].text`."""

    __slots__ = ()

    def _collect(self, tally: CompletionTally, choice: Any) -> None:
        tally.add_text(getattr(choice, "index", 0), getattr(choice, "text", None))
