"""Raw responses whose body is read later: `with_streaming_response`, and streamed
`with_raw_response`. The caller gets a transparent proxy of the SDK's response object.

Nothing is read ahead of the caller (reading the body for usage would change what its
`iter_lines()` or `.text` sees). The span ends with the facts of what the caller's own
`parse()` returned: at once for a parsed response, through the usual stream proxy for a
stream. If `parse()` is never called, the span ends, without usage, when the response is
closed (leaving the `with` block), or, collected, at the time the call returned it.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import wrapt

from . import telemetry as t
from .errors import internal_error
from .estimator import FINISHER
from .streams import OUTCOME_ABANDONED, OUTCOME_ERROR, StreamState, track_open, untrack, wrap_stream

if TYPE_CHECKING:
    from .invocation import Invocation
    from .patches import Endpoint
    from .tally import CompletionTally


class RawState:
    """What a raw response's proxy knows, apart from the proxy: its finalizer and the exit
    hook (`streams.end_open_streams`) end the span through it.

    Once `parse()` handed a stream to a stream proxy, that proxy owns the span: the raw
    response may then be dropped (`create(...).parse()`) while the stream is read.
    """

    __slots__ = ("__weakref__", "handed_over", "invocation", "returned_perf", "stream")

    def __init__(self, invocation: Invocation, stream: bool) -> None:
        self.invocation = invocation
        self.stream = stream
        self.handed_over = False
        self.returned_perf = time.perf_counter()  # the last thing we saw of it

    def open(self) -> bool:
        return not self.handed_over and not self.invocation.ended

    def abandon(self) -> None:
        """Never parsed nor closed: ended at the time the call returned it, as a stream
        collected unread ends at its last read."""
        try:
            if self.open():
                outcome = {t.STREAM_OUTCOME: OUTCOME_ABANDONED} if self.stream else None
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
        """What `parse()` hands the caller: the parsed object, or our proxy of its stream."""
        if custom:  # parse(to=...): a type of the caller's choosing; leave it alone
            return parsed
        if self._self_result is not None:
            return self._self_result
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
        """The caller's `parse()` failed: reading the body (the call failed), or validating
        a body that was read (a reply not fitting `response_format`: the caller's error;
        the span keeps the usage the server reported, as for `with_raw_response`)."""
        try:
            body = loose_body(self.__wrapped__)
        except Exception:
            self._self_failed(exc)
            return
        try:
            if not self._self_stream:
                untrack(self._self_raw)
                self._self_invocation.end(self._self_endpoint.facts(body))
        except Exception as internal:
            internal_error("reading a raw response", internal)

    def _self_failed(self, exc: BaseException) -> None:
        try:
            untrack(self._self_raw)
            outcome = {t.STREAM_OUTCOME: OUTCOME_ERROR} if self._self_stream else None
            self._self_invocation.end(None, exc, extra_attributes=outcome)
        except Exception as internal:
            internal_error("recording a raw response's read error", internal)

    def _self_closed(self) -> None:
        try:
            untrack(self._self_raw)
            if self._self_state is not None:
                self._self_state.finish("closed")
            else:
                self._self_invocation.end(None)
        except Exception as exc:
            internal_error("closing a raw response", exc)


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

        def close_and_end() -> Any:
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
        return self._self_reading(self.__wrapped__.json)

    def iter_bytes(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_bytes(*args, **kwargs))

    def iter_text(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_text(*args, **kwargs))

    def iter_lines(self) -> Iterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_lines())

    def _self_reading(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except BaseException as exc:
            self._self_failed(exc)
            raise

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
        return await self._self_reading(self.__wrapped__.json())

    def iter_bytes(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_bytes(*args, **kwargs))

    def iter_text(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_text(*args, **kwargs))

    def iter_lines(self) -> AsyncIterator[Any]:
        return self._self_iterating(self.__wrapped__.iter_lines())

    async def _self_reading(self, read: Awaitable[Any]) -> Any:
        try:
            return await read
        except BaseException as exc:
            self._self_failed(exc)
            raise

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


def parsed_or_loose(result: Any) -> Any:
    """A non-streamed `with_raw_response`'s parsed response, for the span's facts.

    The body is already read and `parse()` caches what it returns, so the caller's own
    `parse()` later gets this very object. When the SDK's parse fails (a reply that does
    not validate against the caller's `response_format`), the caller's `parse()` raises
    that error itself: it is not ours to log (its text quotes the reply), and the usage
    the server reported is still read, from the JSON body, without validation.
    """
    try:
        return result.parse()
    except Exception:
        try:
            return loose_body(result)
        except Exception:
            return None


def loose_body(response: Any) -> Any:
    """A raw response's JSON body, read by attribute and not validated; raises when the
    body was not read (a streaming response's, before the caller read it) or is not JSON."""
    return _loose(response.http_response.json())


def _loose(value: Any) -> Any:
    """JSON read by attribute, as the facts readers read the SDK's objects."""
    if isinstance(value, dict):
        return SimpleNamespace(**{str(k): _loose(v) for k, v in value.items()})
    if isinstance(value, list):
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
