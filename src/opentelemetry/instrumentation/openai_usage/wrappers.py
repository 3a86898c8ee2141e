"""The call wrappers: start a span, make the call, hand the result on.

Order of events for one call: read the request (never content), start a
CLIENT span under the caller's current span, make it current only while the
SDK sends the request, then either end it with the parsed response, or give
the stream to a proxy that ends it later. Every step of ours is fenced: if it
fails, the user's call proceeds exactly as without us.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Tracer, get_current_span

from opentelemetry import context as otel_context

from . import telemetry as t
from .accumulators import ResponseFacts
from .capture import Capture
from .config import Settings
from .errors import (
    credentials_in,
    http_client_credentials,
    internal_error,
    sent_request,
    tool_credentials,
    url_credentials,
)
from .estimator import Estimator
from .invocation import Invocation
from .parse_errors import completion_of
from .patches import Endpoint
from .raw_responses import parsed_or_loose, wrap_raw_response
from .request import (
    as_sent,
    azure_deployment,
    endpoint_attributes,
    raw_response_mode,
    with_usage_requested,
)
from .streams import NoAccumulator, StreamState, wrap_stream

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
# Where a request goes, as far as accepting `stream_options` goes: see `_endpoint_key`.
EndpointKey = tuple[str, int, str, str]
# Refusing endpoints remembered at most: a process making clients for ever new hosts
# (one per tenant's resource) or `api-version`s must not grow without bound. The oldest
# forgotten costs one more refused request, then is remembered again.
_MAX_REJECTING_ENDPOINTS = 256


class Runtime:
    """What every wrapper shares; `active` turns them into pass-throughs.

    Uninstrumenting restores the SDK's methods, but a method bound earlier
    (for example by `with_raw_response`, which the SDK caches per client) still holds
    our wrapper: the flag makes that one a no-op too, and instrumenting again
    `configure`s the same runtime, so that wrapper traces again, with the new settings.
    """

    def __init__(
        self,
        tracer: Tracer,
        instruments: t.Instruments,
        settings: Settings,
        capture: Capture | None = None,
    ) -> None:
        self.configure(tracer, instruments, settings, capture)

    def configure(
        self,
        tracer: Tracer,
        instruments: t.Instruments,
        settings: Settings,
        capture: Capture | None = None,
    ) -> None:
        self.tracer = tracer
        self.capture = capture
        self.instruments = instruments
        self.settings = settings
        self.estimator = Estimator(settings)
        self.active = True
        # Endpoints (`_endpoint_key`: server, port, base path and Azure API version) that
        # refused the `stream_options` we added (a 400 or 422), and took the request without
        # it: never inject there again. Insertion-ordered, so the oldest goes first.
        self.rejects_stream_options: dict[EndpointKey, None] = {}


class Call:
    """One call in flight: its invocation and the arguments actually sent."""

    __slots__ = ("endpoint_key", "injected", "invocation", "kwargs", "stream", "user_kwargs")

    def __init__(
        self,
        invocation: Invocation,
        kwargs: dict[str, Any],
        user_kwargs: dict[str, Any],
        injected: bool,
        stream: bool,
        endpoint_key: EndpointKey,
    ) -> None:
        self.invocation = invocation
        self.kwargs = kwargs
        self.user_kwargs = user_kwargs
        self.injected = injected
        self.stream = stream
        self.endpoint_key = endpoint_key


def _api_version(client: Any, kwargs: dict[str, Any]) -> str:
    """The `api-version` the request is sent with: Azure accepts `stream_options` from
    2024-09-01-preview on, so one resource takes it from one client and refuses it from
    another on an older version. The call's `extra_query` wins over the client's default,
    as in the SDK."""
    for query in (kwargs.get("extra_query"), getattr(client, "_custom_query", None)):
        if isinstance(query, Mapping) and "api-version" in query:
            return str(query["api-version"])
    return ""


def _endpoint_key(client: Any, server: Mapping[str, Any], kwargs: dict[str, Any]) -> EndpointKey:
    """The server a refusal of `stream_options` is remembered for: its host, port and base
    path, and the Azure `api-version`. One host often fronts several servers (a gateway
    routing `/groq/...` and `/openai/...`, a model server and a proxy on two ports of
    localhost): the one refusing must not cost the others their billed usage."""
    port = server.get(t.SERVER_PORT)
    path = getattr(getattr(client, "base_url", None), "path", "")
    return (
        str(server.get(t.SERVER_ADDRESS, "")),
        port if isinstance(port, int) else 0,
        path if isinstance(path, str) else "",
        _api_version(client, kwargs),
    )


def _secrets(client: Any, kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The call's credentials, to scrub from any error text we record: the client's (and
    its organization and project ids), any credential header or query parameter
    (`Authorization`, `api-key`, a gateway's `key=`...) set on the client or for this
    request, the user info of its base URL, its HTTP client's headers and Basic `auth`,
    and those given to remote (MCP) tools (an error body may echo them bare, where no
    key-shaped pattern would catch them). What the SDK sent (a token an
    `azure_ad_token_provider` made for this request) is read from the error itself, in
    `record_error`."""
    names = ("api_key", "_azure_ad_token", "organization", "project", "webhook_secret")
    values = [getattr(client, name, None) for name in names]
    values.extend(url_credentials(getattr(client, "base_url", None)))
    values.extend(http_client_credentials(client))
    values.extend(tool_credentials(kwargs.get("tools")))
    for pairs in (
        getattr(client, "_custom_headers", None),
        kwargs.get("extra_headers"),
        getattr(client, "_custom_query", None),
        kwargs.get("extra_query"),
    ):
        if pairs:
            values.extend(credentials_in(pairs))
    return tuple(v for v in values if isinstance(v, str) and v)


def start_call(runtime: Runtime, endpoint: Endpoint, instance: Any, kwargs: dict[str, Any]) -> Call:
    client = getattr(instance, "_client", None)
    # With `extra_body`'s fields, as the server gets them.
    sent = as_sent(kwargs, client, routed_by_model=endpoint.api_type != "responses")
    # Bounded here: the caller's values. What is added below is bounded already (the
    # server's attributes, remembered so) or ours (the operation and API type names).
    attributes = t.bounded(endpoint.request_attributes(sent))
    server = endpoint_attributes(client)  # provider and server: bounded, and metric keys
    attributes.update(server)
    if t.REQUEST_MODEL not in attributes:
        deployment = azure_deployment(client)  # Azure: the deployment stands for the model
        if deployment:
            attributes.update(t.bounded({t.REQUEST_MODEL: deployment}))
    attributes[t.OPERATION] = endpoint.operation
    if endpoint.api_type:
        attributes[t.OPENAI_API_TYPE] = endpoint.api_type
    if server.get(t.PROVIDER) != t.PROVIDER_OPENAI:  # no `openai.*` on others' spans
        for name in t.OPENAI_ONLY:
            attributes.pop(name, None)
    model = attributes.get(t.REQUEST_MODEL)
    name = f"{endpoint.operation} {model}" if model else endpoint.operation
    start_ns = time.time_ns()
    start_perf = time.perf_counter()
    span = _start_span(runtime.tracer, name, attributes, start_ns)
    try:
        # Metric attributes, the low-cardinality subset of the span's: operation, request
        # model, provider and server (`t.ERROR_TYPE`, the response model and the served
        # tier come at the end: `Invocation.final_metric_attributes`).
        metric_attributes = server
        metric_attributes[t.OPERATION] = endpoint.operation
        if model:
            metric_attributes[t.REQUEST_MODEL] = model
        invocation = Invocation(
            span,
            runtime.instruments,
            runtime.settings,
            metric_attributes,
            lambda: _secrets(client, sent),
            start_ns,
            start_perf,
            runtime.estimator,
            endpoint.estimate_as or endpoint.operation,
            sent,
            runtime.capture,
            attributes,
        )
        if runtime.capture is not None:
            runtime.capture.started(span, invocation.operation, sent)
        stream = kwargs.get("stream") is True
        endpoint_key: EndpointKey = ("", 0, "", "")
        injected = False
        user_kwargs = kwargs
        if (
            stream
            and endpoint.injects_usage
            and runtime.settings.inject_stream_usage
            # A raw response's body is the caller's to read as sent: no usage chunk hidden.
            and raw_response_mode(kwargs) is None
        ):
            endpoint_key = _endpoint_key(client, attributes, kwargs)
            if endpoint_key not in runtime.rejects_stream_options:
                kwargs = dict(kwargs)
                injected = with_usage_requested(kwargs)
        return Call(invocation, kwargs, user_kwargs, injected, stream, endpoint_key)
    except BaseException:
        # A bug of ours past this point sends the call on untraced (`_safe_start`): the
        # span it began is ended, not left open, so the call still has one.
        with contextlib.suppress(Exception):
            span.end()
        raise


def _start_span(tracer: Tracer, name: str, attributes: dict[str, Any], start_ns: int) -> Span:
    """The call's CLIENT span. A tracer that raises (a sampler, or a span processor's
    `on_start`, of the user's pipeline) must not cost the call its metrics, which need no
    span: it gets a non-recording one then, carrying the caller's span context, so that
    what the SDK's HTTP client traces stays in the caller's trace."""
    try:
        return tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, start_time=start_ns
        )
    except Exception as exc:
        internal_error("starting a span", exc)
        return NonRecordingSpan(get_current_span().get_span_context())


# Parameters the SDK types as `Iterable[...]`, so a caller may pass a generator there.
_ITERABLE_PARAMETERS = frozenset({"messages", "tools", "functions", "input", "prompt"})
_PLAIN = (list, tuple, str, dict)


def replayable(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments, any one-shot iterator among them read into a list.

    The SDK reads such an iterator once, as it builds the request; we may send the
    request twice (again without the `stream_options` a server rejected), and the
    estimate and captured content read it after. The list sends the same body. An
    exception the iterator raises is the caller's own, and reaches them, as from the SDK.
    """
    copied = None
    for key in _ITERABLE_PARAMETERS.intersection(kwargs):
        value = kwargs[key]
        if type(value) not in _PLAIN and isinstance(value, Iterator):
            if copied is None:
                copied = dict(kwargs)
            copied[key] = list(value)
    return kwargs if copied is None else copied


def _replayable_or_ended(
    runtime: Runtime, endpoint: Endpoint, instance: Any, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """`replayable(kwargs)`; when the caller's iterator raises, the call failed with it, as
    it would in the SDK: it still gets its span, in error, and the exception goes on."""
    try:
        return replayable(kwargs)
    except BaseException as exc:
        call = _safe_start(runtime, endpoint, instance, kwargs)
        if call is not None:
            call.invocation.end(None, exc)
        raise


# How servers refuse a field they do not know: a 400 (OpenAI, Azure, vLLM), or a 422
# (Mistral's API, and FastAPI / axum servers whose request model forbids extra fields).
_REFUSAL_STATUSES = frozenset({400, 422})
# Characters of an error body looked at: refusals name the field near the start.
_REFUSAL_TEXT = 4096


def _rejected_injection(call: Call, exc: BaseException) -> bool:
    """A 400 or 422 that names `stream_options` after we added it: our fault, not the user's.

    Looked for in the error's body too: openai 3.x puts only a string `error.message` in
    the exception's text, so a pydantic error list (Mistral's `message.detail`), a
    FastAPI `detail` or a plain-text body names the field only there."""
    if not call.injected or getattr(exc, "status_code", None) not in _REFUSAL_STATUSES:
        return False
    if "stream_options" in str(getattr(exc, "message", "") or exc):
        return True
    body = getattr(exc, "body", None)
    return body is not None and "stream_options" in str(body)[:_REFUSAL_TEXT]


def finish_result(runtime: Runtime, endpoint: Endpoint, call: Call, result: Any) -> Any:
    """End the span for a parsed response, or return a proxy that will."""
    invocation = call.invocation
    mode = raw_response_mode(call.user_kwargs)
    if call.stream or mode is not None:  # its body may hold an error event (echoing a token)
        invocation.sent = sent_request(result)
    if mode == "stream" or (mode == "true" and call.stream):
        # The body is read later, by the caller: follow its `parse()` and `close()`.
        tally = runtime.estimator.new_tally()
        wrapped = wrap_raw_response(result, invocation, endpoint, tally, call.stream)
        if wrapped is not result:
            return wrapped
        invocation.end(None)
        return result
    if call.stream:
        accumulator = endpoint.accumulator(runtime.estimator.new_tally())
        state = StreamState(invocation, accumulator, call.injected)
        wrapped = wrap_stream(result, state, endpoint.is_async)
        if wrapped is not result:
            return wrapped
        invocation.end(None)  # not a stream after all (e.g. a raw response)
        return result
    if mode == "true" and hasattr(result, "parse"):
        parsed, error = parsed_or_loose(result)
        invocation.end(endpoint.facts(parsed), error)
        return result
    invocation.end(endpoint.facts(result))
    return result


def _safe_start(
    runtime: Runtime, endpoint: Endpoint, instance: Any, kwargs: dict[str, Any]
) -> Call | None:
    try:
        return start_call(runtime, endpoint, instance, kwargs)
    except Exception as exc:
        internal_error("starting a span", exc)
        return None


def _safe_finish(runtime: Runtime, endpoint: Endpoint, call: Call, result: Any) -> Any:
    try:
        return finish_result(runtime, endpoint, call, result)
    except Exception as exc:
        internal_error("reading a response", exc)
        call.invocation.end(None)
        if not call.injected:
            return result
    # We changed the request: the caller must still not see the usage chunk.
    try:
        return wrap_stream(result, StreamState(call.invocation, NoAccumulator(), True))
    except Exception as exc:
        internal_error("hiding the usage chunk", exc)
        return result


def _error_facts(endpoint: Endpoint, exc: BaseException) -> ResponseFacts | None:
    """What a call that raised after its reply arrived still tells: `parse()`'s
    `LengthFinishReasonError` and `ContentFilterFinishReasonError` hold the completion,
    usage and all, that the server billed."""
    try:  # any exception reaches here: a property of its own may raise
        completion = completion_of(exc)
        return None if completion is None else endpoint.facts(completion)
    except Exception as internal:
        internal_error("reading a failed call's completion", internal)
        return None


def _detach(token: object | None, previous: otel_context.Context) -> None:
    try:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        elif otel_context.get_current() is not previous:
            # An interrupt (Ctrl-C, a signal handler's exit) landed between attaching and
            # our receiving the token: put the caller's context back all the same.
            otel_context.attach(previous)
    except Exception as exc:
        internal_error("deactivating a span", exc)


def _retry_without_injection(call: Call, exc: BaseException) -> bool:
    """When the server refused the `stream_options` we added, send the user's request as is.

    Once that retry is taken, `_remember_rejection` keeps later calls to the same
    endpoint from being injected at all.
    """
    try:
        if not _rejected_injection(call, exc):
            return False
        call.kwargs = call.user_kwargs
        call.injected = False
        return True
    except Exception as internal:
        internal_error("checking a rejected request", internal)
        return False


def _remember_rejection(runtime: Runtime, call: Call) -> None:
    """Only once the request went through without our `stream_options`: a 400 that
    merely quotes the option (a bad one of the user's own) fails the retry too, and
    must not turn the injection off for the endpoint's other calls."""
    try:  # the retry's result is the caller's: nothing of ours may lose it
        rejecting = runtime.rejects_stream_options
        if call.endpoint_key not in rejecting and len(rejecting) >= _MAX_REJECTING_ENDPOINTS:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # another thread's
                del rejecting[next(iter(rejecting))]
        rejecting[call.endpoint_key] = None
    except Exception as internal:
        internal_error("remembering a rejected request", internal)


# Set while a method that calls another patched method (see `Endpoint.may_delegate`) runs:
# the inner call is part of its call, and of its span.
_DELEGATED: ContextVar[bool] = ContextVar("openai_usage_delegated", default=False)


def _send_delegating(
    runtime: Runtime, call: Call, wrapped: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    outer = _DELEGATED.set(True)
    try:
        return _send(runtime, call, wrapped, args)
    finally:
        _DELEGATED.reset(outer)


async def _asend_delegating(
    runtime: Runtime, call: Call, wrapped: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    outer = _DELEGATED.set(True)
    try:
        return await _asend(runtime, call, wrapped, args)
    finally:
        _DELEGATED.reset(outer)


# Set while a traced call's method runs: the request the SDK sends for it through the
# client's `request()` is the call's own, passed on untraced there (see `client_requests`).
SENDING: ContextVar[bool] = ContextVar("openai_usage_sending", default=False)


def sent_as(
    sending: bool, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """`wrapped(*args, **kwargs)` with `SENDING` set to `sending` meanwhile.

    True: a call whose start failed (a bug of ours, logged) is sent as without us, its
    request marked as a traced call's all the same, so that `request()` does not trace it
    anew. False: `request()` passes a traced call's own request on, and what is sent from
    within it (an httpx event hook's, a transport's, an auth flow's call) is judged on its
    own, not taken for the traced call's and left without a span.
    """
    token = None
    try:  # set inside: an interrupt just after setting still resets
        token = SENDING.set(sending)
        return wrapped(*args, **kwargs)
    finally:
        if token is not None:
            SENDING.reset(token)


async def asent_as(
    sending: bool, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The async twin of `sent_as`."""
    token = None
    try:
        token = SENDING.set(sending)
        return await wrapped(*args, **kwargs)
    finally:
        if token is not None:
            SENDING.reset(token)


def _attempts(call: Call, wrapped: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """The call sent; again without our `stream_options` if the server refused them
    (`call.injected` is then False)."""
    try:
        return wrapped(*args, **call.kwargs)
    except Exception as exc:
        if not _retry_without_injection(call, exc):
            raise
    # Outside the `except`: the retry's own error must not carry ours as context.
    return wrapped(*args, **call.kwargs)


async def _aattempts(call: Call, wrapped: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        return await wrapped(*args, **call.kwargs)
    except Exception as exc:
        if not _retry_without_injection(call, exc):
            raise
    return await wrapped(*args, **call.kwargs)


def _send(runtime: Runtime, call: Call, wrapped: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    injected = call.injected
    result = sent_as(True, _attempts, (call, wrapped, args), {})
    if injected and not call.injected:  # sent again without our `stream_options`
        _remember_rejection(runtime, call)
    return result


async def _asend(
    runtime: Runtime, call: Call, wrapped: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    injected = call.injected
    result = await asent_as(True, _aattempts, (call, wrapped, args), {})
    if injected and not call.injected:
        _remember_rejection(runtime, call)
    return result


def sync_wrapper(runtime: Runtime, endpoint: Endpoint, delegates: bool = False) -> Wrapper:
    """`delegates`: this release's method calls another patched method (`Endpoint.may_delegate`)."""
    send = _send_delegating if delegates else _send

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not runtime.active or _DELEGATED.get() or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        kwargs = _replayable_or_ended(runtime, endpoint, instance, kwargs)
        call = _safe_start(runtime, endpoint, instance, kwargs)
        if call is None:
            return sent_as(True, wrapped, args, kwargs)
        previous, token = otel_context.get_current(), None
        try:  # attached inside: an interrupt just after attaching still detaches
            token = call.invocation.activate()
            result = send(runtime, call, wrapped, args)
        except BaseException as exc:
            call.invocation.end(_error_facts(endpoint, exc), exc)
            raise
        finally:
            _detach(token, previous)
        try:
            return _safe_finish(runtime, endpoint, call, result)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: what ends the call
            call.invocation.end(None, exc)
            raise

    return wrapper


def async_wrapper(runtime: Runtime, endpoint: Endpoint, delegates: bool = False) -> Wrapper:
    """The async twin of `sync_wrapper`."""
    asend = _asend_delegating if delegates else _asend

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # A plain function returning a coroutine, so that a pass-through stays
        # exactly the SDK's coroutine when we are inactive (or suppressed: read here, in
        # the caller's context, as a `suppress_instrumentation()` block around the call).
        if not runtime.active or _DELEGATED.get() or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        return _traced(wrapped, instance, args, kwargs)

    async def _traced(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        kwargs = _replayable_or_ended(runtime, endpoint, instance, kwargs)
        call = _safe_start(runtime, endpoint, instance, kwargs)
        if call is None:
            return await asent_as(True, wrapped, args, kwargs)
        previous, token = otel_context.get_current(), None
        try:  # attached inside: an interrupt just after attaching still detaches
            token = call.invocation.activate()
            result = await asend(runtime, call, wrapped, args)
        except BaseException as exc:
            call.invocation.end(_error_facts(endpoint, exc), exc)
            raise
        finally:
            _detach(token, previous)
        try:
            return _safe_finish(runtime, endpoint, call, result)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: what ends the call
            call.invocation.end(None, exc)
            raise

    return wrapper
