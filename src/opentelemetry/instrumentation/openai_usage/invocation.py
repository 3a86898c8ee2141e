"""One OpenAI call's span and timing, ended exactly once.

A stream can end in many places (exhausted, closed, left in a `with`, broken,
garbage-collected) and some of them race; `end()` is the one door, and it is
idempotent under threads. Everything that goes onto the span or into a metric
at the end of a call happens here, once.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from . import telemetry as t
from .errors import error_type, internal_error, record_error

if TYPE_CHECKING:
    from .accumulators import ResponseFacts
    from .config import Settings


class Invocation:
    __slots__ = (
        "_ended",
        "_lock",
        "instruments",
        "metric_attributes",
        "secrets",
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
        secrets: tuple[str, ...],
        start_ns: int,
        start_perf: float,
    ) -> None:
        self.span = span
        self.instruments = instruments
        self.settings = settings
        self.metric_attributes = metric_attributes
        self.secrets = secrets
        self.start_ns = start_ns
        self.start_perf = start_perf
        self._ended = False
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self._ended

    def _claim(self) -> bool:
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
        extra_attributes: dict[str, Any] | None = None,
    ) -> None:
        """Record everything about the finished call and end the span, once.

        `end_perf` lets a stream end at its last read rather than now (an
        abandoned stream is collected long after anyone read from it).
        """
        if not self._claim():
            return
        if end_perf is None:
            end_perf = time.perf_counter()
        try:
            metric_attributes = self.final_metric_attributes(facts, error)
            self._record(facts, error, end_perf, extra_attributes, metric_attributes)
            if first_chunk_perf is not None:
                self._record_chunks(
                    first_chunk_perf, last_chunk_perf, chunk_count, metric_attributes
                )
        except Exception as exc:  # our bug: keep the user's call and the span alive
            internal_error("recording the end of a call", exc)
        finally:
            try:
                end_ns = self.start_ns + max(0, int((end_perf - self.start_perf) * 1e9))
                self.span.end(end_time=end_ns)
            except Exception as exc:
                internal_error("ending a span", exc)

    def _record(
        self,
        facts: ResponseFacts | None,
        error: BaseException | None,
        end_perf: float,
        extra_attributes: dict[str, Any] | None,
        metric_attributes: dict[str, Any],
    ) -> None:
        span = self.span
        if facts is not None:
            span.set_attributes(t.response_attributes(facts))
        if extra_attributes:
            span.set_attributes(extra_attributes)
        if error is not None:
            record_error(span, error, self.secrets)

        instruments = self.instruments
        instruments.duration.record(max(0.0, end_perf - self.start_perf), metric_attributes)
        if facts is not None and facts.usage is not None:
            t.record_token_usage(instruments, metric_attributes, facts.usage)

    def final_metric_attributes(
        self, facts: ResponseFacts | None, error: BaseException | None = None
    ) -> dict[str, Any]:
        """Metric attributes once the response model (and any error) is known."""
        attributes = self.metric_attributes
        if facts is not None and facts.model:
            attributes = {**attributes, t.RESPONSE_MODEL: facts.model}
        if error is not None:
            attributes = {**attributes, t.ERROR_TYPE: error_type(error)}
        return attributes

    def _record_chunks(
        self,
        first_chunk_perf: float,
        last_chunk_perf: float | None,
        chunk_count: int,
        attributes: dict[str, Any],
    ) -> None:
        """Streaming timings: time to first chunk, and (per stream) the mean gap."""
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
