"""Raw responses whose body is read later: `with_streaming_response`, and streamed
`with_raw_response`. The caller gets a transparent proxy of the SDK's response object.

Nothing is read ahead of the caller (reading the body for usage would change what its
`iter_lines()` or `.text` sees). The span ends with the facts of what the caller's own
`parse()` returned: at once for a parsed response, through the usual stream proxy for a
stream. Without `parse()`, a non-streamed call ends with the usage of the body the caller
read whole (`read()`, `text()`, `json()`), as that returns; a stream, or a body never
read, ends without usage when the response is closed (leaving the `with` block), or,
collected, at the time the call returned it.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import wrapt

from . import parse_errors
from . import telemetry as t
from .errors import internal_error
from .estimator import FINISHER
from .open_calls import track_open, untrack
from .streams import (
    OUTCOME_ABANDONED,
    OUTCOME_CLOSED,
    OUTCOME_ERROR,
    StreamState,
    read_twice,
    wrap_stream,
)

if TYPE_CHECKING:
    from .invocation import Invocation
    from .patches import Endpoint
    from .tally import CompletionTally


class RawState:
    """What a raw response's proxy knows, apart from the proxy: its finalizer and the exit
    hook (`open_calls.end_open_streams`) end the span through it.

    Once `parse()` handed a stream to a stream proxy, that proxy owns the span: the raw
    response may then be dropped (`create(...).parse()`) while the stream is read.
    """

    __slots__ = ("__weakref__", "closing", "handed_over", "invocation", "returned_perf", "stream")

    def __init__(self, invocation: Invocation, stream: bool) -> None:
        self.invocation = invocation
        self.stream = stream
        self.handed_over = False
        # Set as the caller closes it: a read failing meanwhile in another thread (or task)
        # fails because of that close (see `StreamState.closing`).
        self.closing = False
        self.returned_perf = time.perf_counter()  # the last thing we saw of it

    def open(self) -> bool:
        return not self.handed_over and not self.invocation.ended

    def outcome(self, outcome: str) -> dict[str, Any] | None:
        """A stream's end attributes when no stream proxy has it (never parsed: the caller
        read the bytes, or nothing), as a stream proxy records them; None for a response.
        Raw calls are sent as written: the usage chunk was never asked for."""
        if not self.stream:
            return None
        return {t.STREAM_OUTCOME: outcome, t.STREAM_USAGE_INJECTED: False}

    def abandon(self) -> None:
        """Never parsed nor closed: ended at the time the call returned it, as a stream
        collected unread ends at its last read."""
        try:
            if self.open():
                outcome = self.outcome(OUTCOME_ABANDONED)
                self.invocation.end(None, end_perf=self.returned_perf, extra_attributes=outcome)
        except Exception as exc:
            internal_error("ending an abandoned raw response", exc)


def _collected(raw: RawState) -> None:
    """Freed before the caller read or closed it: end the span, in place or, inside a
    garbage collection, on the finisher thread (see `streams._collected`)."""
    if raw.open():  # most were read, closed or handed over: nothing to hand over
        FINISHER.submit_from_finalizer(lambda _wait_s: raw.abandon())


class _RawProxyBase(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
    # The SDK's raw responses are no iterables, containers or context managers (their
    # `with` is the SDK's manager around them): wrapt's protocols marked not available,
    # as on the stream proxies.
    __iter__ = __enter__ = __exit__ = __aenter__ = __aexit__ = None  # type: ignore[assignment,unused-ignore]
    __len__ = __reversed__ = __contains__ = None  # type: ignore[assignment,unused-ignore]

    def __init__(
        self,
        wrapped: Any,
        invocation: Invocation,
        endpoint: Endpoint,
        tally: CompletionTally | None,
        stream: bool,
    ) -> None:
        super().__init__(wrapped)
        self._self_invocation = invocation
        self._self_endpoint = endpoint
        self._self_tally = tally
        self._self_stream = stream
        self._self_result: Any = None
        self._self_state: StreamState | None = None
        self._self_raw = raw = RawState(invocation, stream)
        FINISHER.ensure_started()
        # Not at exit: `end_open_streams` ends what is open then, before the providers
        # shut down (a finalizer's own exit hook may run after them).
        weakref.finalize(self, _collected, raw).atexit = False
        track_open(raw)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def _self_take(self, parsed: Any, custom: bool) -> Any:
        """What `parse()` hands the caller: the parsed object, or our proxy of its stream.

        `parse(to=...)` gives a type of the caller's choosing, left alone, but the body of
        a non-streamed call was read whole for it, and a stream of model chunks
        (`to=Stream[ChatCompletionChunk]`) is the call's stream, typed by the caller:
        traced as `parse()`'s is, unless another was handed out already.
        """
        if custom and not self._self_stream:
            self._self_end_from_body()
            return parsed
        if self._self_result is not None:
            if not custom or getattr(self._self_result, "__wrapped__", None) is parsed:
                return self._self_result  # the SDK's cache: the same stream again
            return parsed
        if custom and not _model_chunks(parsed):
            return parsed  # `Stream[dict]` and the like: no chunks we could read
        try:
            if self._self_stream:
                accumulator = self._self_endpoint.accumulator(self._self_tally)
                self._self_tally = None  # the stream's now, dropped when it ends
                self._self_state = StreamState(self._self_invocation, accumulator, False)
                self._self_result = wrap_stream(parsed, self._self_state)
                self._self_raw.handed_over = self._self_result is not parsed
            else:
                self._self_invocation.end(self._self_endpoint.facts(parsed))
                self._self_result = parsed
            untrack(self._self_raw)
            return self._self_result
        except Exception as exc:
            internal_error("reading a raw response", exc)
            return parsed

    def _self_parse_failed(self, exc: BaseException) -> None:
        """The caller's `parse()` failed: reading the body (the call failed), on a reply
        cut short (`LengthFinishReasonError`: the call failed, as `parse()` does without a
        raw response, with the billed usage), or validating a body that was read (a reply
        not fitting `response_format`: the caller's error; the span keeps the usage the
        server reported, as for `with_raw_response`). A stream's `parse()` reads nothing
        (it makes the SDK's stream object): what it raises is the caller's (a `to=` that
        is no stream class), the stream may still be parsed and read, and the span ends
        when it is closed."""
        if read_twice(exc) or self._self_stream:
            return
        cut_short = cut_short_completion(exc)
        try:
            body = cut_short if cut_short is not None else loose_body(self.__wrapped__)
        except Exception:
            self._self_failed(exc)
            return
        try:
            untrack(self._self_raw)
            error = exc if cut_short is not None else None
            self._self_invocation.end(self._self_endpoint.facts(body), error)
        except Exception as internal:
            internal_error("reading a raw response", internal)

    def _self_failed(self, exc: BaseException) -> None:
        if self._self_raw.closing:  # closed by the caller meanwhile: that is why it failed
            self._self_closed()
            return
        try:
            if read_twice(exc):
                return
            untrack(self._self_raw)
            outcome = self._self_raw.outcome(OUTCOME_ERROR)
            self._self_invocation.end(None, exc, extra_attributes=outcome)
        except Exception as internal:
            internal_error("recording a raw response's read error", internal)

    def _self_closed(self) -> None:
        try:
            untrack(self._self_raw)
            if self._self_state is not None:
                self._self_state.finish(OUTCOME_CLOSED)
            elif not self._self_stream:
                self._self_end_from_body()
            else:
                outcome = self._self_raw.outcome(OUTCOME_CLOSED)
                self._self_invocation.end(None, extra_attributes=outcome)
        except Exception as exc:
            internal_error("closing a raw response", exc)

    def _self_read_whole(self) -> None:
        """`read()`, `text()` or `json()` returned: a non-streamed call is over now, not
        when the caller leaves the block (its own work meanwhile is not the call's), as
        with `parse()`. A stream's body read whole ends the span at its close."""
        if not self._self_stream:
            self._self_end_from_body()

    def _self_end_from_body(self) -> None:
        """End a non-streamed call with the facts of the body the caller read whole
        (`parse(to=...)`, `read()`, `json()`, `text()`): the billed usage is in it, as in
        what `parse()` returns. Nothing is read here: a body never read, or read only
        through `iter_lines()` / `iter_bytes()` (which keep nothing), raises, and the
        span ends without usage."""
        try:
            if self._self_invocation.ended:
                return
            untrack(self._self_raw)
            try:
                body = loose_body(self.__wrapped__)
            except Exception:  # not read (or not JSON): nothing to tell
                self._self_invocation.end(None)
                return
            self._self_invocation.end(self._self_endpoint.facts(body))
        except Exception as exc:
            internal_error("reading a raw response", exc)
            self._self_invocation.end(None)


class RawResponseProxy(_RawProxyBase):
    """`APIResponse` / `LegacyAPIResponse`: `parse()` and `close()` are plain methods."""

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        parsed = self.__wrapped__.parse(*args, **kwargs)
        return self._self_take(parsed, bool(args or kwargs))

    @property
    def close(self) -> Callable[[], Any]:
        # `LegacyAPIResponse` (what `with_raw_response` returns) has no `close`: reading
        # it raises the SDK's AttributeError, so `hasattr(raw, "close")` is False as
        # without us, and a caller's duck-typed cleanup neither fails nor ends the span.
        close = self.__wrapped__.close
        closed = self._self_closed
        raw = self._self_raw

        def close_and_end() -> Any:
            raw.closing = True
            try:
                return close()
            finally:
                closed()

        return close_and_end


class AsyncRawResponseProxy(_RawProxyBase):
    """`AsyncAPIResponse`: `parse()` and `close()` are coroutines."""

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        parsed = await self.__wrapped__.parse(*args, **kwargs)
        return self._self_take(parsed, bool(args or kwargs))

    async def close(self) -> Any:
        self._self_raw.closing = True
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_closed()


class BodyProxy(RawResponseProxy):
    """`with_streaming_response`'s `APIResponse`, whose body the caller may read itself:
    an error while reading it ends the span with that error, as a stream's does."""

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        try:
            parsed = self.__wrapped__.parse(*args, **kwargs)
        except BaseException as exc:
            self._self_parse_failed(exc)
            raise
        return self._self_take(parsed, bool(args or kwargs))

    def read(self) -> Any:
        return self._self_reading(self.__wrapped__.read)

    def text(self) -> Any:
        return self._self_reading(self.__wrapped__.text)

    def json(self) -> Any:
        # Reading is the call's; decoding (an SSE body is no JSON) is the caller's. The
        # SDK's `json()` reads the same body again (kept by the HTTP library) and decodes.
        self._self_reading(self.__wrapped__.read)
        return self.__wrapped__.json()

    def iter_bytes(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_bytes(*args, **kwargs))

    def iter_text(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_text(*args, **kwargs))

    def iter_lines(self) -> Iterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_lines())

    def _self_reading(self, read: Callable[[], Any]) -> Any:
        try:
            body = read()
        except BaseException as exc:
            self._self_failed(exc)
            raise
        self._self_read_whole()
        return body

    def _self_iterating(self, pieces: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from pieces
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._self_failed(exc)
            raise


class AsyncBodyProxy(AsyncRawResponseProxy):
    """The async twin of `BodyProxy`, for `AsyncAPIResponse`."""

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        try:
            parsed = await self.__wrapped__.parse(*args, **kwargs)
        except BaseException as exc:
            self._self_parse_failed(exc)
            raise
        return self._self_take(parsed, bool(args or kwargs))

    async def read(self) -> Any:
        return await self._self_reading(self.__wrapped__.read())

    async def text(self) -> Any:
        return await self._self_reading(self.__wrapped__.text())

    async def json(self) -> Any:
        await self._self_reading(self.__wrapped__.read())  # as `BodyProxy.json`
        return await self.__wrapped__.json()

    def iter_bytes(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_bytes(*args, **kwargs))

    def iter_text(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_text(*args, **kwargs))

    def iter_lines(self) -> AsyncIterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_lines())

    async def _self_reading(self, read: Awaitable[Any]) -> Any:
        try:
            body = await read
        except BaseException as exc:
            self._self_failed(exc)
            raise
        self._self_read_whole()
        return body

    async def _self_iterating(self, pieces: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for piece in pieces:
                yield piece
        except GeneratorExit:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()  # as closing the SDK's own iterator would
            raise
        except BaseException as exc:
            self._self_failed(exc)
            raise


def _model_chunks(stream: Any) -> bool:
    """Whether a stream of the caller's type yields the SDK's model objects (the chunks
    our accumulators read), not dicts or another type of its own."""
    cast_to = getattr(stream, "_cast_to", None)  # by name: pydantic is the SDK's import
    return isinstance(cast_to, type) and any(c.__name__ == "BaseModel" for c in cast_to.__mro__)


def parsed_or_loose(result: Any) -> tuple[Any, BaseException | None]:
    """A non-streamed `with_raw_response`'s parsed response, for the span's facts, and
    the error that fails the call when `parse()` raises one after the reply.

    The body is already read and `parse()` caches what it returns, so the caller's own
    `parse()` later gets this very object. When the SDK's parse fails (a reply that does
    not validate against the caller's `response_format`), the caller's `parse()` raises
    that error itself: it is not ours to log (its text quotes the reply), and the usage
    the server reported is still read, from the JSON body, without validation. A body
    that is no JSON at all (empty, cut, a proxy's text) failed the call: the span records
    the error, as it does for `create()` and for `with_streaming_response`'s `parse()`.
    """
    try:
        return result.parse(), None
    except Exception as exc:
        cut_short = cut_short_completion(exc)
        if cut_short is not None:
            return cut_short, exc
        try:
            return loose_body(result), None
        except Exception:
            return None, exc


def cut_short_completion(exc: BaseException) -> Any:
    """The completion of `parse()`'s `LengthFinishReasonError` or
    `ContentFilterFinishReasonError` (None for any other error): the reply stopped
    before its `response_format` was complete, and the call failed with it, as
    `chat.completions.parse()` does without a raw response (`wrappers._error_facts`)."""
    try:
        return parse_errors.cut_short_completion(exc)
    except Exception as internal:  # a property of the exception's own may raise
        internal_error("reading a failed parse's completion", internal)
    return None


def loose_body(response: Any) -> Any:
    """A raw response's JSON body, read by attribute and not validated; raises when the
    body was not read (a streaming response's, before the caller read it) or is not JSON."""
    return _loose(response.http_response.json())


def _loose(value: Any) -> Any:
    """JSON read by attribute, as the facts readers read the SDK's objects. A list of
    plain values (an embedding's floats, token ids) is kept as it is: a batch of large
    vectors would otherwise cost tens of milliseconds, one call per number."""
    if isinstance(value, dict):
        return SimpleNamespace(**{str(k): _loose(v) for k, v in value.items()})
    if isinstance(value, list):
        if not any(isinstance(v, (dict, list)) for v in value[:1]):
            return value
        return [_loose(v) for v in value]
    return value


def wrap_raw_response(
    result: Any,
    invocation: Invocation,
    endpoint: Endpoint,
    tally: CompletionTally | None,
    stream: bool,
) -> Any:
    """The proxy for a raw response object, or the object itself if it is not one."""
    parse = getattr(result, "parse", None)
    if parse is None:
        return result
    # `LegacyAPIResponse.parse` is synchronous even for async clients.
    is_async = inspect.iscoroutinefunction(parse)
    if is_async and not inspect.iscoroutinefunction(getattr(result, "close", None)):
        return result
    # `APIResponse.text()` is a method, `LegacyAPIResponse.text` a property: only the
    # first has a body the caller reads through it (the other's is read already).
    body = callable(getattr(type(result), "text", None))
    if is_async:
        proxy: type[_RawProxyBase] = AsyncBodyProxy if body else AsyncRawResponseProxy
    else:
        proxy = BodyProxy if body else RawResponseProxy
    return proxy(result, invocation, endpoint, tally, stream)
