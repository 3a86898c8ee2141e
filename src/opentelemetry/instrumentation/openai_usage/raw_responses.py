"""Raw responses whose body is read later: `with_streaming_response`, and streamed
`with_raw_response`. The caller gets a transparent proxy of the SDK's response object.

Nothing is read ahead of the caller (reading the body for usage would change what its
`iter_lines()` or `.text` sees). The span ends with the facts of what the caller's own
`parse()` returned: at once for a parsed response, through the usual stream proxy for a
stream. If `parse()` is never called, the span ends, without usage, when the response is
closed (leaving the `with` block) or collected.
"""

from __future__ import annotations

import inspect
import weakref
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import wrapt

from .errors import internal_error
from .estimator import FINISHER
from .streams import StreamState, wrap_stream

if TYPE_CHECKING:
    from .invocation import Invocation
    from .patches import Endpoint
    from .tally import CompletionTally


def _collected(invocation: Invocation) -> None:
    """Collected before the caller read or closed it: end the span on the finisher thread
    (a collection may interrupt a lock that ending a span needs; see `streams._collected`)."""
    if not invocation.ended:  # most were read or closed: nothing to hand over
        FINISHER.submit_from_gc(lambda _wait_s: invocation.end(None))


class _RawProxyBase(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
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
        FINISHER.ensure_started()
        weakref.finalize(self, _collected, invocation)

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
                self._self_state = StreamState(self._self_invocation, accumulator, False)
                self._self_result = wrap_stream(parsed, self._self_state)
            else:
                self._self_invocation.end(self._self_endpoint.facts(parsed))
                self._self_result = parsed
            return self._self_result
        except Exception as exc:
            internal_error("reading a raw response", exc)
            return parsed

    def _self_closed(self) -> None:
        try:
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

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_closed()


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
            return _loose(result.http_response.json())
        except Exception:
            return None


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
    proxy = AsyncRawResponseProxy if inspect.iscoroutinefunction(parse) else RawResponseProxy
    if proxy is AsyncRawResponseProxy and not inspect.iscoroutinefunction(
        getattr(result, "close", None)
    ):
        return result
    return proxy(result, invocation, endpoint, tally, stream)
