"""One OpenAI call's span and timing, ended exactly once.

A stream can end in many places (exhausted, closed, left in a `with`, broken,
garbage-collected) and some of them race; `end()` is the one door, and it is
idempotent under threads. Everything that goes onto the span or into a metric
at the end of a call happens here, once.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, set_span_in_context

from opentelemetry import context as otel_context

from . import content
from . import telemetry as t
from .errors import (
    error_type,
    internal_error,
    record_error,
    record_error_event,
    sent_credentials,
)
from .estimator import FINISHER, Estimator
from .modalities import TEXT, UNKNOWN, input_is_text
from .request import plain, requested_tier
from .response_events import has_per_call_fees

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .accumulators import ResponseFacts
    from .capture import Capture
    from .config import Settings
    from .estimate import Encoder
    from .usage import Usage


class _Process:
    """This process's id, refreshed in a forked child: two `os.getpid()` system calls per
    call would cost more than reading it."""

    pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_Process.forked)


def _no_secrets() -> tuple[str, ...]:
    return ()


class Invocation:
    __slots__ = (
        "_ended",
        "_lock",
        "_recorded",
        "capture",
        "estimator",
        "instruments",
        "metric_attributes",
        "operation",
        "pid",
        "request",
        "request_attributes",
        "secrets",
        "sent",
        "settings",
        "span",
        "start_ns",
        "start_perf",
    )

    def __init__(
        self,
        span: Span,
        instruments: t.Instruments,
        settings: Settings,
        metric_attributes: dict[str, Any],
        secrets: Callable[[], tuple[str, ...]],
        start_ns: int,
        start_perf: float,
        estimator: Estimator,
        operation: str,
        request: Mapping[str, Any] | None,
        capture: Capture | None,
        request_attributes: Mapping[str, Any] | None,
    ) -> None:
        self.span = span
        self.capture = capture  # None unless the user opted in to content capture
        # The attributes the span started with (the request's), for the content event,
        # which carries the span's attributes as the conventions define it.
        self.request_attributes = request_attributes
        self.estimator = estimator
        self.operation = operation
        # The caller's arguments, held (never recorded) until the end, for an estimate.
        self.request = request
        self.instruments = instruments
        self.settings = settings
        self.metric_attributes = metric_attributes
        self.secrets = secrets  # asked only when an error is recorded: most calls never do
        # The request the SDK sent, once a stream or raw response shows it: an error event
        # read from its body may echo a credential made for that request alone.
        self.sent: Any = None
        self.start_ns = start_ns
        self.start_perf = start_perf
        self._ended = False
        self._recorded = False
        self._lock = threading.Lock()
        self.pid = _Process.pid

    @property
    def ended(self) -> bool:
        return self._ended

    def _claim(self) -> bool:
        if _Process.pid != self.pid:
            # A forked child's copy of a call in flight at the fork: the span is the
            # parent's to end (ended here too, it would be exported twice). Checked before
            # the lock, which a parent thread may have held at the fork.
            return False
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    def end(
        self,
        facts: ResponseFacts | None,
        error: BaseException | None = None,
        *,
        end_perf: float | None = None,
        first_chunk_perf: float | None = None,
        last_chunk_perf: float | None = None,
        chunk_count: int = 0,
        chunk_gaps: Sequence[float] = (),
        extra_attributes: dict[str, Any] | None = None,
        chunks_read: int | None = None,
    ) -> None:
        """Record everything about the finished call and end the span, once.

        `end_perf` lets a stream end at its last read rather than now (an
        abandoned stream is collected long after anyone read from it).
        `chunk_count` is a stream's output chunks (those timed), `chunks_read` every chunk
        the caller saw (an estimate is wanted once anything came), when they differ.
        """
        if not self._claim():
            return
        if end_perf is None:
            end_perf = time.perf_counter()
        timing = (end_perf, first_chunk_perf, last_chunk_perf, chunk_count, chunk_gaps)
        try:
            read = chunk_count if chunks_read is None else chunks_read
            name = self._estimate_encoding(facts, read)
            if name is not None and facts is not None:
                if self.estimator.is_loading(name):
                    # The first calls after instrument(): let a background thread wait.
                    wanted = facts
                    FINISHER.submit(
                        lambda wait_s: self._finish_later(
                            name, wanted, error, timing, extra_attributes, wait_s
                        )
                    )
                    return
                facts = self._with_estimate(facts, self.estimator.loader.get(name))
        except Exception as exc:
            internal_error("estimating usage", exc)
        except BaseException:
            # An interrupt (Ctrl-C, a signal handler's `sys.exit()`) landing while the
            # estimate is counted, which can take a while for a long output: the call is
            # claimed, so nothing else would ever end its span. It ends now, with what
            # the call reported, and the interrupt goes on to the caller.
            self._finish(facts, error, *timing, extra_attributes)
            raise
        self._finish(facts, error, *timing, extra_attributes)

    def _estimate_encoding(self, facts: ResponseFacts | None, chunk_count: int) -> str | None:
        """The encoding an estimate of this call needs, or None when none is wanted."""
        estimator = self.estimator
        if facts is None or not estimator.wanted(facts, chunk_count):
            return None
        if facts.usage is not None and not self.span.is_recording():
            # "compare" puts an estimate beside reported usage on the span alone (metrics
            # keep the billed numbers): for a span the sampler dropped, it would be counted
            # for nothing, or even wait for its encoding on the finisher thread.
            return None
        return estimator.encoding_name(facts, self._request_model())

    def _request_model(self) -> str | None:
        model = self.request.get("model") if self.request is not None else None
        return plain(model) if isinstance(model, str) else None  # a str-enum: what was sent

    def _with_estimate(self, facts: ResponseFacts, encoding: Encoder | None) -> ResponseFacts:
        """The facts with the estimate in place of missing usage, or beside it ("compare")."""
        if encoding is None:
            return facts
        estimate = self.estimator.estimate(
            self.operation,
            self.request or {},
            facts,
            self._request_model(),
            encoding,
            self.metric_attributes.get(t.PROVIDER),
        )
        if estimate is None or estimate.is_empty:
            return facts
        if facts.usage is None:
            return dataclasses.replace(facts, usage=estimate)
        self.span.set_attributes(t.comparison_attributes(facts.usage, estimate))
        return facts

    def _finish_later(
        self,
        name: str,
        facts: ResponseFacts,
        error: BaseException | None,
        timing: tuple[float, float | None, float | None, int, Sequence[float]],
        extra_attributes: dict[str, Any] | None,
        wait_s: float,
    ) -> None:
        """In the background thread: wait for the encoding, then end as `end` would have."""
        try:
            encoding = self.estimator.loader.wait(name, wait_s)
            facts = self._with_estimate(facts, encoding)
        except Exception as exc:
            internal_error("estimating usage", exc)
        self._finish(facts, error, *timing, extra_attributes)

    def _finish(
        self,
        facts: ResponseFacts | None,
        error: BaseException | None,
        end_perf: float,
        first_chunk_perf: float | None,
        last_chunk_perf: float | None,
        chunk_count: int,
        chunk_gaps: Sequence[float],
        extra_attributes: dict[str, Any] | None,
    ) -> None:
        if not self._record_once():
            return
        token = self.activate()
        try:
            metric_attributes = self.final_metric_attributes(facts, error)
            self._record(facts, error, end_perf, extra_attributes, metric_attributes)
            if first_chunk_perf is not None:
                self._record_chunks(
                    first_chunk_perf,
                    last_chunk_perf,
                    chunk_count,
                    chunk_gaps,
                    t.without_error(metric_attributes),
                )
            if self.capture is not None:
                event_attributes = metric_attributes
                if self.capture.in_event:
                    event_attributes = self._event_attributes(
                        facts, metric_attributes, first_chunk_perf
                    )
                self.capture.ended(self.span, self.operation, self.request, facts, event_attributes)
        except Exception as exc:  # our bug: keep the user's call and the span alive
            internal_error("recording the end of a call", exc)
        finally:
            if token is not None:
                try:
                    otel_context.detach(token)  # type: ignore[arg-type]
                except Exception as exc:
                    internal_error("deactivating a span", exc)
            try:
                end_ns = self.start_ns + max(0, int((end_perf - self.start_perf) * 1e9))
                self.span.end(end_time=end_ns)
            except Exception as exc:
                internal_error("ending a span", exc)
            self._release()

    def _record_once(self) -> bool:
        """Whether this is the one recording of the call: after an interrupt in `end`, the
        call's end may be run there and by the background job it had just handed it to."""
        with self._lock:
            if self._recorded:
                return False
            self._recorded = True
            return True

    def _release(self) -> None:
        """Let go of the caller's request once the call is recorded: a finished stream
        (or raw response) the caller keeps holds this invocation, and through it the
        call's arguments (messages, images, tools), the request the SDK sent and, in the
        `secrets` closure, the client, which the SDK's own finished objects no longer
        reference. Nothing reads them after the end."""
        self.request = None
        self.sent = None
        self.secrets = _no_secrets

    def activate(self) -> object | None:
        """Make the call's span current: while the SDK's method runs (`wrappers`), and
        while its measurements are made, whoever ends it: the metrics SDK takes a
        histogram's exemplar from the current span, which is otherwise the caller's (a
        non-streamed call ends after its span stopped being current), that of whatever
        reads a stream to its end (a task in another trace, even), or none. The token to
        detach, or None (then the call goes on)."""
        try:
            return otel_context.attach(set_span_in_context(self.span))
        except Exception as exc:
            internal_error("activating a span", exc)
            return None

    def _uncaptured_texts(self) -> list[str]:
        """The request's content, to scrub from error texts, unless the user captures it on
        spans (content in events only is no reason for it to reach a span)."""
        if (self.capture is not None and self.capture.on_span) or self.request is None:
            return []
        try:
            return content.request_texts(self.request)
        except Exception as exc:
            internal_error("reading the request's content", exc)
            return []

    def _record(
        self,
        facts: ResponseFacts | None,
        error: BaseException | None,
        end_perf: float,
        extra_attributes: dict[str, Any] | None,
        metric_attributes: dict[str, Any],
    ) -> None:
        span = self.span
        # A span the sampler dropped (most of a sampled trace's calls) keeps nothing: its
        # attributes are not worth building, nor an error text worth scrubbing (the
        # request's content searched, the traceback formatted: a millisecond a failed call).
        # The metrics below take what they need from the facts, recording or not.
        if span.is_recording():
            if facts is not None:
                span.set_attributes(t.response_attributes(facts, self._openai_flavour()))
            if extra_attributes:
                span.set_attributes(extra_attributes)
            if error is not None:
                on_span = self.capture is not None and self.capture.on_span
                texts = self._uncaptured_texts()
                record_error(span, error, self.secrets(), texts, hide_content=not on_span)
            elif facts is not None and facts.error is not None:
                code, message = facts.error
                secrets = (*self.secrets(), *sent_credentials(self.sent))
                record_error_event(span, code, message, secrets, self._uncaptured_texts())

        instruments = self.instruments
        instruments.duration.record(max(0.0, end_perf - self.start_perf), metric_attributes)
        # `error.type` is an attribute of the duration alone: the conventions define none on
        # the token and chunk metrics. A failed call's tokens (billed, or estimated for a
        # stream broken mid-way) go to the usage counters, which count every call, failed
        # ones included; not to the `gen_ai.client.token.usage` histogram, which the
        # conventions keep for operations that succeeded.
        failed = t.ERROR_TYPE in metric_attributes
        usage_attributes = t.without_error(metric_attributes)
        usage = facts.usage if facts is not None else None
        if usage is not None and not failed:
            t.record_token_usage(instruments, usage_attributes, usage)
        input_rest = TEXT if input_is_text(self.operation, self.request) else UNKNOWN
        t.record_detailed_usage(instruments, usage_attributes, usage, input_rest)
        if usage is not None and facts is not None:
            self._record_cost(facts, usage, usage_attributes)

    def _event_attributes(
        self,
        facts: ResponseFacts | None,
        metric_attributes: Mapping[str, Any],
        first_chunk_perf: float | None,
    ) -> dict[str, Any]:
        """What `gen_ai.client.inference.operation.details` carries besides the content: the
        conventions define it with the inference span's attributes, conditionally required
        ones included (`gen_ai.request.seed`, `.choice.count`, `.stream`, `gen_ai.output.type`),
        so that the event stands on its own where traces are not kept: the request's
        parameters, the response's id, model, finish reasons and usage, `error.type`, and a
        stream's time to first chunk, as the span has them."""
        attributes = dict(self.request_attributes or {})
        if facts is not None:
            attributes.update(t.response_attributes(facts, self._openai_flavour()))
        attributes.update(metric_attributes)  # error.type, and the server and models again
        if first_chunk_perf is not None:
            to_first = max(0.0, first_chunk_perf - self.start_perf)
            attributes[t.RESPONSE_TIME_TO_FIRST_CHUNK] = to_first
        return attributes

    def _openai_flavour(self) -> bool:
        """Whether the call's provider is OpenAI itself, whose flavour of the conventions
        the `openai.*` attributes are (`t.OPENAI_ONLY`); the tier still prices the call."""
        return self.metric_attributes.get(t.PROVIDER) == t.PROVIDER_OPENAI

    def _record_cost(
        self, facts: ResponseFacts, usage: Usage, metric_attributes: dict[str, Any]
    ) -> None:
        """The list-price cost of what was billed (or estimated: the source says which);
        none for a response whose built-in tools are billed per call besides its tokens."""
        prices = self.settings.prices
        if prices is None:
            return
        if self.operation == "responses" and has_per_call_fees(facts.response):
            return  # the tokens' cost alone would pass for the call's whole cost
        tier = facts.service_tier
        if tier is None and self.request is not None:  # a stream cut before it said
            tier = requested_tier(self.request.get("service_tier"))
        cost = prices.cost((facts.model, self._request_model()), usage, tier)
        if cost is not None:
            self.span.set_attribute(t.COST, cost)
            t.record_cost(self.instruments, metric_attributes, cost, usage)

    def final_metric_attributes(
        self, facts: ResponseFacts | None, error: BaseException | None = None
    ) -> dict[str, Any]:
        """Metric attributes once the response model, the service tier that served the
        call (as the conventions recommend: a `flex` or `priority` call is billed and
        timed apart) and any error are known."""
        attributes = self.metric_attributes
        if facts is not None:
            tier = facts.service_tier if self._openai_flavour() else None
            response = t.response_metric_attributes(facts.model, tier)
            if response:
                attributes = {**attributes, **response}
        if error is not None:
            attributes = {**attributes, t.ERROR_TYPE: error_type(error)}
        elif facts is not None and facts.error is not None:
            attributes = {**attributes, t.ERROR_TYPE: facts.error[0]}
        return attributes

    def _record_chunks(
        self,
        first_chunk_perf: float,
        last_chunk_perf: float | None,
        chunk_count: int,
        chunk_gaps: Sequence[float],
        attributes: dict[str, Any],
    ) -> None:
        """Streaming timings: time to first chunk, and the mean gap (per stream) or each gap
        (`per_chunk`, gathered while the stream was read)."""
        to_first = max(0.0, first_chunk_perf - self.start_perf)
        self.span.set_attribute(t.RESPONSE_TIME_TO_FIRST_CHUNK, to_first)
        self.instruments.time_to_first_chunk.record(to_first, attributes)
        if (
            self.settings.chunk_timing == "per_stream"
            and chunk_count > 1
            and last_chunk_perf is not None
        ):
            mean_gap = (last_chunk_perf - first_chunk_perf) / (chunk_count - 1)
            self.instruments.time_per_output_chunk.record(max(0.0, mean_gap), attributes)
        if chunk_gaps:
            try:
                record = self.instruments.time_per_output_chunk.record
                for gap in chunk_gaps:
                    record(max(0.0, gap), attributes)
            except Exception as exc:  # the stream's other points are in already
                internal_error("recording a chunk gap", exc)
