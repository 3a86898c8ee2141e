"""Transparent proxies around the SDK's Stream / AsyncStream.

The caller keeps the SDK's object in every way that matters: `isinstance`,
attributes such as `.response`, iteration, `with`, `close()`. The proxy only
watches chunks go by and ends the span at the first of: the stream's end, an
error while reading, `close()`, leaving a `with` block, or the proxy being
garbage-collected (then at the time of the last read, marked `abandoned`).

The span is never made current here: between reads, the caller's context is
the caller's own.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Protocol

import wrapt

from . import telemetry as t
from .accumulators import ResponseFacts
from .errors import internal_error
from .invocation import Invocation

OUTCOME_COMPLETED = "completed"
OUTCOME_CLOSED = "closed"
OUTCOME_ABANDONED = "abandoned"
OUTCOME_ERROR = "error"


class StreamAccumulator(Protocol):
    model: str | None

    def on_chunk(self, chunk: Any) -> None: ...

    def facts(self) -> ResponseFacts: ...


class NoAccumulator:
    """Observes nothing: for a stream we can no longer describe, only hide from."""

    model: str | None = None

    def on_chunk(self, chunk: Any) -> None:
        pass

    def facts(self) -> ResponseFacts:
        return ResponseFacts()


def _forget_usage_field(chunk: Any) -> None:
    """Make an injected `"usage": null` invisible, as if the server never sent it.

    With `include_usage` the server adds `"usage": null` to every chunk; without
    it the key is absent. The attribute reads None either way, but `to_dict()`
    and `model_dump(exclude_unset=True)` would show the difference.
    """
    fields_set = getattr(chunk, "__pydantic_fields_set__", None)
    if fields_set is None:
        fields_set = getattr(chunk, "__fields_set__", None)  # pydantic v1
    if isinstance(fields_set, set):
        fields_set.discard("usage")


def visible_after_injection(chunk: Any) -> bool:
    """The caller did not ask for usage, we did: hide what that added.

    The usage-only chunk (no choices, usage set) is dropped; on every other
    chunk the `usage: null` key is forgotten. Kept apart from the accumulator
    so that a failure there can never show the caller a chunk it did not ask for.
    """
    try:
        if getattr(chunk, "usage", None) is not None:
            return bool(getattr(chunk, "choices", None))
        _forget_usage_field(chunk)
    except Exception as exc:
        internal_error("hiding the usage chunk", exc)
    return True


class StreamState:
    """What a proxy knows about its stream.

    It holds no reference to the proxy, so the proxy can be collected and its
    finalizer can still end the span through this object.
    """

    __slots__ = (
        "__weakref__",
        "accumulator",
        "count",
        "first_perf",
        "injected",
        "invocation",
        "last_perf",
        "per_chunk_attributes",
    )

    def __init__(self, invocation: Invocation, accumulator: StreamAccumulator, injected: bool):
        self.invocation = invocation
        self.accumulator = accumulator
        self.injected = injected
        self.first_perf: float | None = None
        # Until a chunk arrives, the last "read" is the call that returned the stream.
        self.last_perf = time.perf_counter()
        self.count = 0
        per_chunk = invocation.settings.chunk_timing == "per_chunk"
        self.per_chunk_attributes: dict[str, Any] | None = {} if per_chunk else None

    def on_chunk(self, chunk: Any) -> bool:
        """Per-chunk work, kept to a clock read and a few attribute reads.

        Returns False for a chunk the caller must not see.
        """
        now = time.perf_counter()
        if self.first_perf is None:
            self.first_perf = now
        elif self.per_chunk_attributes is not None:
            self._record_gap(now - self.last_perf)
        self.last_perf = now
        self.count += 1
        try:
            self.accumulator.on_chunk(chunk)
        except Exception as exc:
            internal_error("reading a stream chunk", exc)
        return visible_after_injection(chunk) if self.injected else True

    def _record_gap(self, gap: float) -> None:
        try:
            attributes = self.per_chunk_attributes
            if not attributes:
                attributes = dict(self.invocation.metric_attributes)
                if self.accumulator.model:
                    attributes[t.RESPONSE_MODEL] = self.accumulator.model
                self.per_chunk_attributes = attributes
            self.invocation.instruments.time_per_output_chunk.record(gap, attributes)
        except Exception as exc:
            internal_error("recording a chunk gap", exc)

    def finish(
        self, outcome: str, error: BaseException | None = None, at_last_read: bool = False
    ) -> None:
        invocation = self.invocation
        if invocation.ended:
            return
        try:
            facts: ResponseFacts | None = self.accumulator.facts()
        except Exception as exc:
            internal_error("summarising a stream", exc)
            facts = None
        invocation.end(
            facts,
            error,
            end_perf=self.last_perf if at_last_read else None,
            first_chunk_perf=self.first_perf,
            last_chunk_perf=self.last_perf,
            chunk_count=self.count,
            extra_attributes={t.STREAM_OUTCOME: outcome, t.STREAM_USAGE_INJECTED: self.injected},
        )

    def abandon(self) -> None:
        """Called when the proxy is collected (or at interpreter exit) unfinished."""
        try:
            self.finish(OUTCOME_ABANDONED, at_last_read=True)
        except Exception as exc:
            internal_error("ending an abandoned stream", exc)


def wrap_stream(stream: Any, state: StreamState) -> Any:
    """The proxy for an SDK stream, or the stream itself if it is neither kind."""
    import openai  # the SDK is loaded: it just returned this stream

    if isinstance(stream, openai.AsyncStream):
        return AsyncStreamProxy(stream, state)
    if isinstance(stream, openai.Stream):
        return SyncStreamProxy(stream, state)
    return stream


class _ProxyBase(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state
        weakref.finalize(self, state.abandon)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


class SyncStreamProxy(_ProxyBase):
    """Proxy for `openai.Stream`."""

    def __iter__(self) -> SyncStreamProxy:
        return self

    def __next__(self) -> Any:
        state = self._self_state
        wrapped_next = self.__wrapped__.__next__
        while True:
            try:
                chunk = wrapped_next()
            except StopIteration:
                state.finish(OUTCOME_COMPLETED)
                raise
            except BaseException as exc:
                state.finish(OUTCOME_ERROR, exc)
                raise
            if state.on_chunk(chunk):
                return chunk

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_state.finish(OUTCOME_CLOSED)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_state.finish(OUTCOME_CLOSED)


class AsyncStreamProxy(_ProxyBase):
    """Proxy for `openai.AsyncStream`."""

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        state = self._self_state
        wrapped_next = self.__wrapped__.__anext__
        while True:
            try:
                chunk = await wrapped_next()
            except StopAsyncIteration:
                state.finish(OUTCOME_COMPLETED)
                raise
            except BaseException as exc:
                state.finish(OUTCOME_ERROR, exc)
                raise
            if state.on_chunk(chunk):
                return chunk

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_state.finish(OUTCOME_CLOSED)

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_state.finish(OUTCOME_CLOSED)

    async def aclose(self) -> None:
        # `aclose` exists only on newer SDKs: without it, fail as the SDK would,
        # before anything is closed or ended.
        aclose = self.__wrapped__.aclose
        try:
            await aclose()
        finally:
            self._self_state.finish(OUTCOME_CLOSED)
