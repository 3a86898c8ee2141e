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

import sys
import time
import weakref
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

import wrapt

from . import telemetry as t
from .accumulators import TEXT_BATCH, ChatStreamAccumulator, ResponseFacts
from .errors import internal_error
from .estimator import FINISHER
from .invocation import Invocation
from .open_calls import track_open, untrack

OUTCOME_COMPLETED = "completed"
OUTCOME_CLOSED = "closed"
OUTCOME_ABANDONED = "abandoned"
OUTCOME_ERROR = "error"
# `error.type` of a stream read to its end without the final event it always ends with.
ERROR_UNTERMINATED = "unterminated_stream"


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


def hide_injected_usage(chunk: Any) -> bool:
    """The caller did not ask for usage, we did: hide what that added; False = drop.

    The usage-only chunk (no choices, usage set) is dropped; on every other chunk the
    `"usage": null` (or the usage, beside choices) the server added is forgotten, so
    `to_dict()` and `model_dump(exclude_unset=True)` show what they would without us.
    Kept apart from the accumulator, so that a failure there never shows the caller a
    chunk it did not ask for. (`see` and `common_chunk` inline the common pydantic-v2 case.)
    """
    try:
        if getattr(chunk, "usage", None) is not None:
            if not getattr(chunk, "choices", None):
                return False
            # Usage on a chunk with choices (some compatible servers send it so): the
            # chunk is the caller's, the usage ours (already read) and forgotten.
            chunk.usage = None
        fields_set = getattr(chunk, "__pydantic_fields_set__", None)
        if fields_set is None:
            fields_set = getattr(chunk, "__fields_set__", None)  # pydantic v1
        if isinstance(fields_set, set):
            fields_set.discard("usage")
    except Exception as exc:
        internal_error("hiding the usage chunk", exc)
    return True


class StreamState:
    """What a stream's watcher knows, kept current chunk by chunk.

    It holds no reference to the proxy, so the proxy can be collected and its
    finalizer can still end the span through this object, at the last read.
    """

    __slots__ = (
        "__weakref__",
        "accumulator",
        "by_choices",
        "closing",
        "count",
        "fast",
        "first_perf",
        "gaps",
        "injected",
        "invocation",
        "last_perf",
        "others",
        "others_perf",
    )

    def __init__(self, invocation: Invocation, accumulator: StreamAccumulator, injected: bool):
        self.invocation = invocation
        self.accumulator = accumulator
        self.injected = injected
        self.first_perf: float | None = None
        # Until a chunk arrives, the last "read" is the call that returned the stream.
        self.last_perf = time.perf_counter()
        self.count = 0  # output chunks: those timed
        # Chunks read that carry no choice (see `_no_choice`), and when the last one was.
        self.others = 0
        self.others_perf: float | None = None
        # Chat and legacy completion chunks: output comes in choices (Responses events
        # are all chunks, see the README's Limits).
        self.by_choices = isinstance(accumulator, ChatStreamAccumulator)
        # Set as the caller closes the stream: a read that fails in another thread (or
        # task) from then on fails because of that close, and the stream was closed.
        self.closing = False
        per_chunk = invocation.settings.chunk_timing == "per_chunk"
        # `per_chunk`: each gap between chunks, recorded at the end with the attributes the
        # stream's other points get (its served tier and any error are known only then).
        self.gaps: array[float] | None = array("d") if per_chunk else None
        # The watcher may take a chat chunk's common case itself (`common_chunk`).
        self.fast = type(accumulator) is ChatStreamAccumulator and not per_chunk

    def see(self, chunk: Any, now: float) -> bool:
        """Everything done per chunk; False for a chunk the caller must not see.

        This runs for every chunk of every stream, so it is kept to a clock
        value, two counters, the accumulator and (only when we injected) the
        usage scrub; each part fenced on its own.
        """
        try:
            self.accumulator.on_chunk(chunk)
        except Exception as exc:
            internal_error("reading a stream chunk", exc)
        if self.injected:
            try:
                if chunk.usage is None:
                    chunk.__pydantic_fields_set__.discard("usage")
                elif not chunk.choices:
                    return False  # ours to hide, and no output chunk: not timed or counted
                elif not hide_injected_usage(chunk):  # usage beside choices: hidden too
                    return False
            except Exception:  # not a pydantic-v2 chunk: the careful, slower way
                if not hide_injected_usage(chunk):
                    return False
        if self.by_choices and _no_choice(chunk):
            # The caller sees it, but it is no output chunk: not timed, as the usage chunk
            # we hide is not (a time to first chunk and gaps that changed with who asked
            # for usage, or with Azure's prompt-filter chunk, would not compare).
            self.others += 1
            self.others_perf = now
            return True
        if self.first_perf is None:
            self.first_perf = now
        elif self.gaps is not None:
            self.gaps.append(now - self.last_perf)
        self.last_perf = now
        self.count += 1
        return True

    def finish(
        self, outcome: str, error: BaseException | None = None, at_last_read: bool = False
    ) -> None:
        invocation = self.invocation
        if invocation.ended:
            return
        try:
            untrack(self)
            facts: ResponseFacts | None = self.accumulator.facts()
        except Exception as exc:
            internal_error("summarising a stream", exc)
            facts = None
        if outcome == OUTCOME_COMPLETED and facts is not None:
            if facts.error is None and facts.unterminated:
                # Read to its end, yet without the final event its protocol always sends
                # (the SDK's `get_final_response()` raises for it): the call was cut short.
                facts.error = (ERROR_UNTERMINATED, "the stream ended without its final event")
            if facts.error is not None:
                outcome = OUTCOME_ERROR  # the server's error event ended it, nothing raised
        # Also for a stream read to its end: one that a proxy or the server ended cleanly
        # with a choice unfinished (no finish reason, no usage) was cut short all the same.
        # Only an estimate in place of usage reads it: with usage reported, not looked for.
        try:
            read_to_end = outcome == OUTCOME_COMPLETED
            if (
                facts is not None
                and facts.usage is None
                and _unfinished(facts, invocation.request, read_to_end)
            ):
                facts.cut_short = True
        except Exception as exc:  # ours: the stream still ends, its span too
            internal_error("summarising a stream", exc)
        last_read = self.last_perf
        if self.others_perf is not None and self.others_perf > last_read:
            last_read = self.others_perf  # the user's usage chunk, read after the output
        invocation.end(
            facts,
            error,
            end_perf=last_read if at_last_read else None,
            first_chunk_perf=self.first_perf,
            last_chunk_perf=self.last_perf,
            chunk_count=self.count,
            chunks_read=self.count + self.others,
            chunk_gaps=self.gaps or (),
            extra_attributes={t.STREAM_OUTCOME: outcome, t.STREAM_USAGE_INJECTED: self.injected},
        )
        _drop_output(self.accumulator)

    def abandon(self) -> None:
        """Called when the proxy is collected (or at interpreter exit) unfinished."""
        try:
            self.finish(OUTCOME_ABANDONED, at_last_read=True)
        except Exception as exc:
            internal_error("ending an abandoned stream", exc)


def _no_choice(chunk: Any) -> bool:
    """A chat or legacy completion chunk without a choice, hence without output: Azure's
    prompt-filter chunk (sent before any output), the usage chunk the caller asked for,
    a server's keep-alive. A chunk of another shape (not the SDK's) is taken as output."""
    try:
        return not chunk.choices
    except Exception:
        return False


def _unfinished(facts: ResponseFacts, request: Any, read_to_end: bool = False) -> bool:
    """Whether a chat or legacy completion stream ended before its output did: a choice
    (of the `n` asked for) without its finish reason. The server goes on generating what
    was not read yet (much of it may already be in flight), and bills it; so it did, or
    may have, when the stream itself stopped short (a gateway's timeout ending the body
    cleanly), which the SDK reads as a stream's end. Read to its end, a stream is judged by
    the choices it sent: a server that ignores `n` (Ollama's) sends fewer, all finished."""
    finished = facts.finish_by_choice
    if finished is None:  # not known by choice: the Responses accumulator judges its own
        return False
    n = request.get("n") if isinstance(request, Mapping) and not read_to_end else None
    expected = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    seen = facts.tally.choices if facts.tally is not None else {}
    return len(finished) < expected or any(index not in finished for index in seen)


# What an accumulator keeps of a stream's output: its text (for an estimate or captured
# content) and, for the Responses API, the first and final responses.
_OUTPUT_SLOTS = ("tally", "text", "first", "final")


def _drop_output(accumulator: Any) -> None:
    """Let go of the stream's output once its facts are taken: the caller may hold the
    stream long after it ended, and the text (up to `tally.MAX_CHARS`) is not ours to keep
    ("dropped at the end of the call"). The facts handed to `end` keep what they need."""
    try:
        for name in _OUTPUT_SLOTS:
            if hasattr(accumulator, name):
                setattr(accumulator, name, None)
    except Exception as exc:
        internal_error("dropping a stream's output", exc)


def _collected(state: StreamState) -> None:
    """The proxy was freed unfinished: end its span, at the time of its last read.

    Freed by the caller's dropping it, that happens here and now (so the caller's
    `force_flush()` right after has it). Freed by the cycle collector, it does not:
    a collection can interrupt code holding locks that ending a span takes (exporters,
    metric aggregations, the HTTP pool), so the finisher thread ends it. A stream that
    already ended (nearly all: read to the end, closed) hands nothing over.
    """
    if not state.invocation.ended:  # a plain read: no lock is taken here
        FINISHER.submit_from_finalizer(lambda _wait_s: state.abandon())


def wrap_stream(stream: Any, state: StreamState, is_async: bool = False) -> Any:
    """The proxy for an SDK stream, or for what another wrapper under ours made of one (its
    own stream class, a generator: an iterator, as the SDK's stream is; what we injected
    must be hidden there too); the object itself otherwise (a list is read as often as its
    caller likes, which a stream's proxy would not allow). `is_async`: the call was (for a
    class that is both)."""
    import openai  # the SDK is loaded: it just returned this stream

    FINISHER.ensure_started()  # collected streams are ended on its thread
    if isinstance(stream, openai.AsyncStream):
        return AsyncStreamProxy(stream, state)
    if isinstance(stream, openai.Stream):
        return SyncStreamProxy(stream, state)
    kind = type(stream)
    iterator = hasattr(kind, "__next__") and hasattr(kind, "__iter__")
    if hasattr(kind, "__anext__") and hasattr(kind, "__aiter__") and (is_async or not iterator):
        return AsyncStreamProxy(stream, state)
    if iterator:
        return SyncStreamProxy(stream, state)
    return stream


def common_chunk(chunk: Any, accumulator: Any, injected: bool) -> bool:
    """A chat stream's common chunk, done: True if it was one (and is now seen).

    One choice, index 0, some content, no tool call, no finish reason, no usage: nearly
    every chunk of a chat stream. For such a chunk this has the same effect as
    `StreamState.see` minus the clock and counters (the watcher keeps those), with a
    fraction of the work; for any other it changes nothing and returns False, and `see`
    takes it. Only called once the stream's first facts are in (`see` reads them), and
    only with a `ChatStreamAccumulator`.
    """
    try:
        if chunk.usage is not None:
            return False
        (choice,) = chunk.choices  # ValueError unless exactly one
        delta = choice.delta
        content = delta.content
        # `index` as `on_chunk` reads it: a falsy one is choice 0's (one test fewer per chunk).
        if not content or choice.finish_reason is not None or choice.index:
            return False
        if delta.tool_calls is not None:
            return False
        if injected:
            chunk.__pydantic_fields_set__.discard("usage")
    except Exception:
        return False  # not an SDK chat chunk: `see` will look, the careful way
    text = accumulator.text
    if text is not None:
        text.append(content)
        if len(text) >= TEXT_BATCH:
            accumulator.hand_over_text()
    return True


def _read_elsewhere(exc: BaseException) -> bool:
    """The SDK's iterator was being read by another thread (or task) when we asked it."""
    if isinstance(exc, ValueError):
        return "already executing" in str(exc)  # a generator
    return isinstance(exc, RuntimeError) and "already running" in str(exc)  # an async one


def read_twice(exc: BaseException) -> bool:
    """An error the HTTP library (`StreamConsumed`, `StreamClosed`, `ResponseNotRead`:
    its `StreamError`s) or the SDK (`StreamAlreadyConsumed`) raises before reading
    anything, for a body read twice or the wrong way round: the caller's mistake, not a
    failure of the call, whose span goes on to end when the response is closed."""
    names = ("StreamError", "StreamAlreadyConsumed")
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _read_before(exc: BaseException, state: StreamState) -> bool:
    """A raw response's stream whose body the caller had read already (`iter_lines()`,
    then `parse()`): it fails before its first chunk, and the call did not."""
    return state.count + state.others == 0 and read_twice(exc)


def _read_failed(state: StreamState, exc: BaseException) -> None:
    """A read raised: the call's error, unless the caller was closing the stream from
    another thread meanwhile (the read failed for that: the stream was closed), which a
    slow close lets the reader see before `close()` itself ends the span."""
    if state.closing:
        state.finish(OUTCOME_CLOSED)
    else:
        state.finish(OUTCOME_ERROR, exc)


def _not_common(chunk: Any, accumulator: Any, injected: bool) -> bool:
    """`common_chunk`'s stand-in until the stream's first facts are in: every chunk to `see`."""
    return False


def _has_first_facts(accumulator: Any) -> bool:
    return getattr(accumulator, "response_id", None) is not None


def _watch(chunks: Iterator[Any], state: StreamState, owner: object = None) -> Iterator[Any]:
    """The chunks the caller sees: the SDK's, minus any we must hide.

    `iter()` of the proxy returns a new one of these over the SDK's one iterator (as the
    SDK's own `__iter__` walks its `_iterator`), so closing one leaves the stream open, as
    without us; `next()` reads one kept for it. `owner` keeps the proxy alive while an
    `iter()` of it is walked (the caller may hold only that); the one `next()` reads holds
    none, so that an abandoned proxy is freed, and its span ended at its last read, without
    waiting for the cycle collector.

    This is the package's hottest code: a chat stream's common chunk takes
    `common_chunk`, every other chunk (and all until the first facts are in) `see`.
    """
    clock = time.perf_counter
    see = state.see
    accumulator = state.accumulator
    fast = state.fast
    injected = state.injected
    common = _not_common  # `common_chunk` once warm: one test fewer per chunk than a flag
    thrown = False  # at our `yield`: set only then, by its handler (no flag set per chunk)
    try:
        for chunk in chunks:
            now = clock()
            try:
                if common(chunk, accumulator, injected):
                    state.last_perf = now
                    state.count += 1
                elif see(chunk, now):
                    if fast and state.first_perf is not None and _has_first_facts(accumulator):
                        common = common_chunk
                    else:
                        common = _not_common
                else:
                    continue
            except Exception as exc:  # a bug of ours: the chunk still goes to the caller
                internal_error("watching a stream", exc)
                if injected and not hide_injected_usage(chunk):
                    continue  # ours to hide all the same
            try:
                yield chunk
            except BaseException:
                thrown = True
                raise
    except GeneratorExit:  # this generator is being closed or collected, not the stream
        raise
    except BaseException as exc:
        # Thrown in at our `yield` (`throw()` into a relay), or another thread reading the
        # same stream: this iterator's end, as with the SDK's own, not the stream's.
        if not thrown and not _read_elsewhere(exc) and not _read_before(exc, state):
            _read_failed(state, exc)
        raise
    state.finish(OUTCOME_COMPLETED)
    del owner  # only now: freed unfinished, the proxy would end the span as abandoned


async def _awatch(
    chunks: AsyncIterator[Any], state: StreamState, owner: object = None
) -> AsyncIterator[Any]:
    """The async twin of `_watch`."""
    clock = time.perf_counter
    see = state.see
    accumulator = state.accumulator
    fast = state.fast
    injected = state.injected
    common = _not_common  # `common_chunk` once warm: one test fewer per chunk than a flag
    thrown = False  # at our `yield`: set only then, by its handler (no flag set per chunk)
    try:
        async for chunk in chunks:
            now = clock()
            try:
                if common(chunk, accumulator, injected):
                    state.last_perf = now
                    state.count += 1
                elif see(chunk, now):
                    if fast and state.first_perf is not None and _has_first_facts(accumulator):
                        common = common_chunk
                    else:
                        common = _not_common
                else:
                    continue
            except Exception as exc:  # a bug of ours: the chunk still goes to the caller
                internal_error("watching a stream", exc)
                if injected and not hide_injected_usage(chunk):
                    continue  # ours to hide all the same
            try:
                yield chunk
            except BaseException:
                thrown = True
                raise
    except GeneratorExit:
        raise
    except BaseException as exc:
        # Thrown in at our `yield` (`throw()` into a relay), or another thread reading the
        # same stream: this iterator's end, as with the SDK's own, not the stream's.
        if not thrown and not _read_elsewhere(exc) and not _read_before(exc, state):
            _read_failed(state, exc)
        raise
    state.finish(OUTCOME_COMPLETED)
    del owner  # only now: freed unfinished, the proxy would end the span as abandoned


def _is_sdk_stream(stream: Any) -> bool:
    import openai  # the SDK is loaded: it just returned this stream

    return issubclass(type(stream), (openai.Stream, openai.AsyncStream))


def _chunks_of(stream: Any, is_async: bool) -> Any:
    """The SDK's one iterator behind its stream: what its own `__next__` reads and each
    `iter()` / `aiter()` of it walks (every SDK release has it). Anything else, such as
    another instrumentation's proxy of the SDK's stream, is read through its own iteration
    (its `_iterator`, forwarded by such a proxy, would pass the other one by): the one the
    call's kind asks for, since a wrapper class may define both."""
    if _is_sdk_stream(stream):
        chunks = getattr(stream, "_iterator", None)
        if chunks is not None:
            return chunks
    return aiter(stream) if is_async else iter(stream)


class _ProxyBase(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
    _self_is_async = False

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state
        # The SDK's stream: its `_iterator` is looked up as a read begins (`_source`).
        # Anything else is asked for its iterator now, where a failure is ours to log.
        self._self_source = (
            None if _is_sdk_stream(wrapped) else _chunks_of(wrapped, self._self_is_async)
        )
        # Not at exit: a stream still open then is ended in place by `end_open_streams`
        # (a finalizer's exit hook would run first and hand it to a thread about to die).
        weakref.finalize(self, _collected, state).atexit = False
        track_open(state)

    def _source(self) -> Any:
        """What a read that begins now walks. For the SDK's stream, its `_iterator` as it is
        now, as the SDK's own `__iter__` and `__next__` read it: another instrumentation
        put over ours (Langfuse's `langfuse.openai`) gets our proxy back from `create`, and
        replaces the stream's `_iterator` with its own generator over it (its `close` it
        sets on our proxy). Taken when the proxy was made, that generator would be passed
        by: the other would see no chunk, and never end its record of the call."""
        source = self._self_source
        return _chunks_of(self.__wrapped__, self._self_is_async) if source is None else source

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


class SyncStreamProxy(_ProxyBase):
    """Proxy for `openai.Stream` (or for another wrapper's sync stream made of one)."""

    # wrapt's proxy defines every protocol, the SDK's `Stream` only iteration and `with`.
    # None is the data model's "not available": `isinstance(stream, Sized)` or
    # `AbstractAsyncContextManager` is False and `async with stream` a TypeError, as
    # without us. (`in` stays wrapt's: a Stream answers it by reading itself.)
    __aenter__ = __aexit__ = __len__ = __reversed__ = None  # type: ignore[assignment,unused-ignore]

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped, state)
        self._self_chunks: Iterator[Any] | None = None  # what `next()` reads, once needed

    def __iter__(self) -> Iterator[Any]:
        # As the SDK's own `__iter__`: a new generator each time, over one shared position
        # (which `next()` shares too), so that closing one (say, a closed `yield from`
        # relay) leaves the stream open, as it does without us.
        return _watch(self._source(), self._self_state, self)

    def __next__(self) -> Any:
        chunks = self._self_chunks
        if chunks is None:
            chunks = self._self_chunks = _watch(self._source(), self._self_state)
        try:
            return next(chunks)
        except ValueError as exc:
            # Another thread was reading the SDK's iterator (a `for` over this stream): the
            # SDK refused this read and its stream goes on, but our watcher ended with the
            # refusal. Forget it, so the next `next()` reads on, as the SDK's own would.
            # (A refusal of our watcher itself, busy in another thread, left it running.)
            if getattr(chunks, "gi_frame", None) is None and _read_elsewhere(exc):
                self._self_chunks = None
            raise

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        self._self_state.closing = True
        try:
            close = _close_put_over(self)
            if close is not None:
                close()
                return None
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_state.finish(OUTCOME_CLOSED)

    def close(self) -> None:
        self._self_state.closing = True
        try:
            self.__wrapped__.close()
        finally:
            self._self_state.finish(OUTCOME_CLOSED)


class AsyncStreamProxy(_ProxyBase):
    """Proxy for `openai.AsyncStream` (or for another wrapper's async stream made of one)."""

    # As above: an `AsyncStream` is neither `Iterable` nor a sync context manager, so a
    # caller that tells sync from async streams by `isinstance` picks the right way.
    __iter__ = __enter__ = __exit__ = __len__ = __reversed__ = __contains__ = None  # type: ignore[assignment,unused-ignore]
    _self_is_async = True

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped, state)
        self._self_chunks: AsyncIterator[Any] | None = None  # what `__anext__` reads
        self._self_aclose: Callable[[], Awaitable[None]] | None = None  # one set on us

    def __aiter__(self) -> AsyncIterator[Any]:
        # As the SDK's: a new async generator each time, over one shared position.
        return _awatch(self._source(), self._self_state, self)

    async def __anext__(self) -> Any:
        # A coroutine, as the SDK's (`inspect.iscoroutine(stream.__anext__())` holds).
        chunks = self._self_chunks
        if chunks is None:
            chunks = self._self_chunks = _awatch(self._source(), self._self_state)
        try:
            return await chunks.__anext__()
        except RuntimeError as exc:
            # Another task was reading (an `async for` over this stream): as in
            # `SyncStreamProxy.__next__`, the stream goes on, our ended watcher is forgotten.
            if getattr(chunks, "ag_frame", None) is None and _read_elsewhere(exc):
                self._self_chunks = None
            raise

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        self._self_state.closing = True
        try:
            close = _close_put_over(self)
            if close is not None:
                await close()
                return None
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_state.finish(OUTCOME_CLOSED)

    async def close(self) -> None:
        self._self_state.closing = True
        try:
            await self.__wrapped__.close()
        finally:
            self._self_state.finish(OUTCOME_CLOSED)

    @property
    def aclose(self) -> Callable[[], Awaitable[None]]:
        # Only newer SDKs' streams have `aclose`: on the others, reading it raises the
        # SDK's AttributeError, so `hasattr(stream, "aclose")` is False as without us.
        put_over = self._self_aclose
        if put_over is not None:
            return put_over
        aclose = self.__wrapped__.aclose
        state = self._self_state

        async def close() -> None:
            state.closing = True
            try:
                await aclose()
            finally:
                state.finish(OUTCOME_CLOSED)

        return close

    @aclose.setter
    def aclose(self, value: Callable[[], Awaitable[None]]) -> None:
        # Another instrumentation over ours sets its own on the stream it got from `create`
        # (`langfuse.openai` does): as on the SDK's stream, it is what `aclose` is then.
        # Without a setter, that assignment raised into the caller's call.
        self._self_aclose = value

    @aclose.deleter
    def aclose(self) -> None:
        self._self_aclose = None


def _close_put_over(proxy: _ProxyBase) -> Any:
    """A `close` that another instrumentation over ours set on the SDK stream it got from
    `create` (our proxy: wrapt keeps an attribute our class defines on the proxy itself),
    or None. `langfuse.openai` sets one that also ends its record; the SDK's `__exit__` and
    `__aexit__` are `self.close()`, which would call it without us, so ours do too."""
    if not _is_sdk_stream(proxy.__wrapped__):
        return None
    close = proxy.close
    return (
        None if getattr(close, "__func__", None) is getattr(type(proxy), "close", None) else close
    )


def _raised_by_helper(helper: Any, exc: BaseException | None) -> bool:
    """Whether `exc` came out of the helper's own reading of the stream (its `__stream__`,
    say the `LengthFinishReasonError` of a parsed stream cut by `max_tokens`): the call's
    error, though the HTTP stream we watch was fine. An error of the caller's own code in
    the helper's `with` block is not (nor is one of the stream, already recorded)."""
    traceback = exc.__traceback__ if exc is not None else None
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "__stream__" and frame.f_locals.get("self") is helper:
            return True
        traceback = traceback.tb_next
    return False


def _helpers_stream(helper: Any) -> _ProxyBase | None:
    """The proxy of ours a stream helper reads, if it reads one."""
    raw = getattr(helper, "_raw_stream", None)
    return raw if isinstance(raw, _ProxyBase) else None


def _closing_helpers_stream(helper: Any) -> None:
    """Mark the helper's stream as being closed, before the helper closes it (see
    `StreamState.closing`)."""
    try:
        raw = _helpers_stream(helper)
        if raw is not None:
            raw._self_state.closing = True
    except Exception as exc:
        internal_error("closing a stream helper", exc)


def _close_helpers_stream(helper: Any, in_flight: BaseException | None) -> None:
    """End the span of the proxy a stream helper holds, if it holds one of ours: closed, or
    with the error the helper raised while reading, if that is why it is being closed."""
    try:
        raw = _helpers_stream(helper)
        if raw is not None:
            if in_flight is not None and _raised_by_helper(helper, in_flight):
                raw._self_state.finish(OUTCOME_ERROR, in_flight)
            else:
                raw._self_state.finish(OUTCOME_CLOSED)
    except Exception as exc:
        internal_error("closing a stream helper", exc)


def helper_close_wrapper(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """For `ChatCompletionStream.close` and the like: theirs first, then our span. An
    exception being handled (the helper's `with` left by it) may be the call's error."""
    in_flight = sys.exc_info()[1]
    _closing_helpers_stream(instance)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _close_helpers_stream(instance, in_flight)


def async_helper_close_wrapper(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    in_flight = sys.exc_info()[1]

    async def close() -> Any:
        _closing_helpers_stream(instance)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            _close_helpers_stream(instance, in_flight)

    return close()
