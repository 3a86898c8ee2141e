"""Opt-in content capture: where captured content goes, span attributes or a log event.

Exists only when the user turned capture on (`Invocation.capture` is None otherwise,
so a call with capture off pays nothing here and nothing is collected for it). The
request side is read when the call starts; the output when it ends, from the parsed
response or, for a stream, from what was assembled chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from . import content
from . import telemetry as t
from .errors import internal_error

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .accumulators import ResponseFacts
    from .config import Settings


def input_content(operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute name -> JSON-able value, for what the caller sent."""
    found: dict[str, Any] = {}
    if operation == "chat":
        found[t.INPUT_MESSAGES] = content.chat_input(request)
    elif operation == "responses":
        found[t.INPUT_MESSAGES] = content.responses_input(request)
        found[t.SYSTEM_INSTRUCTIONS] = content.responses_instructions(request)
    elif operation == "text_completion":
        found[t.INPUT_MESSAGES] = content.completion_input(request)
    if operation in ("chat", "responses"):
        found[t.TOOL_DEFINITIONS] = content.tool_definitions(request)
    return {name: value for name, value in found.items() if value}


def output_content(operation: str, facts: ResponseFacts | None) -> list[dict[str, Any]]:
    if facts is None or operation == "embeddings":
        return []
    response = facts.response
    if response is not None:
        if operation == "responses":
            return content.responses_output(response, facts.finish_reasons)
        return content.chat_output(response)
    if facts.tally is not None:
        by_choice = facts.finish_by_choice
        if by_choice is None:  # a stream whose facts give no index: in index order
            by_choice = dict(enumerate(facts.finish_reasons))
        return content.tally_output(facts.tally, by_choice)
    return []


class Capture:
    """The user's capture settings and the logger that events go to."""

    def __init__(self, settings: Settings, logger: Any) -> None:
        self.on_span = settings.content_on_span
        self.in_event = settings.content_in_event and logger is not None
        self.max_length = settings.max_content_length
        self.logger = logger

    def _bounded(self, values: Mapping[str, Any]) -> dict[str, str]:
        """For spans: JSON text (span attributes hold no maps), cut to the cap."""
        return {name: content.bounded_json(v, self.max_length) for name, v in values.items()}

    def _structured(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """For the event: the same content, as the structured values the conventions
        require on events (log records hold maps and lists), cut as on spans."""
        return {
            name: content.bounded_value(value, self.max_length) for name, value in values.items()
        }

    def started(self, span: Span, operation: str, request: Mapping[str, Any]) -> None:
        # Not for a span the sampler dropped: it would keep nothing of the JSON.
        if self.on_span and span.is_recording():
            try:
                span.set_attributes(self._bounded(input_content(operation, request)))
            except Exception as exc:
                internal_error("capturing input content", exc)

    def ended(
        self,
        span: Span,
        operation: str,
        request: Mapping[str, Any] | None,
        facts: ResponseFacts | None,
        attributes: Mapping[str, Any],
    ) -> None:
        """Output on the span; and, for events, one event with the whole exchange."""
        try:
            on_span = self.on_span and span.is_recording()  # as in `started`
            if not on_span and not self.in_event:
                return
            output = output_content(operation, facts)
            if on_span and output:
                span.set_attributes(self._bounded({t.OUTPUT_MESSAGES: output}))
            if self.in_event:  # events go out whether the span was sampled or not
                captured = input_content(operation, request or {})
                if output:
                    captured[t.OUTPUT_MESSAGES] = output
                self._emit(span, {**attributes, **self._structured(captured)})
        except Exception as exc:
            internal_error("capturing output content", exc)

    def _emit(self, span: Span, attributes: dict[str, Any]) -> None:
        """One event, at DEBUG (severity number 5) as the conventions ask of this one: it is
        a detail of the call, which a log pipeline keeping only INFO and above may drop."""
        from opentelemetry._logs import LogRecord, SeverityNumber

        context = trace.set_span_in_context(span)
        try:
            record = LogRecord(
                event_name=t.OPERATION_DETAILS_EVENT,
                context=context,
                attributes=attributes,
                severity_number=SeverityNumber.DEBUG,
                severity_text="DEBUG",
            )
        except TypeError:  # opentelemetry-api before 1.35: no event_name, no context
            span_context = span.get_span_context()
            record = LogRecord(  # type: ignore[call-overload,unused-ignore]
                trace_id=span_context.trace_id,
                span_id=span_context.span_id,
                trace_flags=span_context.trace_flags,
                attributes={**attributes, "event.name": t.OPERATION_DETAILS_EVENT},
                severity_number=SeverityNumber.DEBUG,
                severity_text="DEBUG",
            )
        self.logger.emit(record)
