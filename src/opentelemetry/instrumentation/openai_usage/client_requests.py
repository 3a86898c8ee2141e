"""Requests that reach the client past the resource methods we patch.

litellm (1.110) sends its OpenAI chat completions and embeddings as
`client.post("/chat/completions", body=..., options=..., stream=..., stream_cls=...)`,
with the raw-response header in `options`, instead of calling
`client.chat.completions.create(...)` (it skips the SDK's request transform). And code that
kept an SDK method from before `instrument()` (instructor's `from_openai(client)`, a
resource's `with_raw_response`, a `functools.partial` of `create`) calls the SDK's own
method, not our wrapper, and its resource posts with the `post()` it bound when it was
made. Such calls never reach a patched method, so without this they had no span, no usage
and no metrics. Every request of the SDK passes the client's `request()`, looked up on the
class at each call: that is patched too (sync and async). A JSON request to one of the
paths our endpoints post to is traced there as that endpoint's call, through the same
wrapper: same span, usage, estimate, `include_usage` injection and raw-response handling.
The request a traced call's method sends passes through untouched (`SENDING` is set while
that method runs, whatever other wrappers sit between it and us, and cleared again while
that request is sent): a patched method's call keeps exactly one span.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from functools import partial
from typing import Annotated, Any, Union, get_args, get_origin

from .errors import internal_error
from .patches import ENDPOINTS, ClientRequest, Endpoint
from .wrappers import (
    SENDING,
    Runtime,
    Wrapper,
    asent_as,
    async_wrapper,
    sent_as,
    sync_wrapper,
)

# The path each endpoint's method posts to, as the SDK passes it to `post()`.
_PATHS = {
    ("openai.resources.chat.completions", "create"): "chat/completions",
    ("openai.resources.completions", "create"): "completions",
    ("openai.resources.embeddings", "create"): "embeddings",
    ("openai.resources.responses.responses", "create"): "responses",
    # openai 3.x's beta Responses API: the query string is part of the path it posts to.
    ("openai.resources.beta.responses.responses", "create"): "responses?beta=true",
}


def _by_path() -> dict[tuple[str, bool], Endpoint]:
    found: dict[tuple[str, bool], Endpoint] = {}
    for endpoint in ENDPOINTS:
        path = _PATHS.get((endpoint.module, endpoint.method.rsplit(".", 1)[1]))
        if path is not None:
            found[(path, endpoint.is_async)] = endpoint
    return found


_ENDPOINTS_BY_PATH = _by_path()

# The request's options, as the resource methods' keyword arguments name them: they tell
# a raw-response call (its header), the request as sent (`extra_body`), and credentials.
_OPTIONS = (("headers", "extra_headers"), ("params", "extra_query"), ("extra_json", "extra_body"))
_OPTION_NAMES = frozenset(name for _, name in _OPTIONS)


class _Resource:
    """What our wrappers read of a resource: its client."""

    __slots__ = ("_client",)

    def __init__(self, client: Any) -> None:
        self._client = client


def _call_arguments(body: Mapping[str, Any], options: Any) -> dict[str, Any]:
    """The request as a resource method's keyword arguments: the body's fields, and the
    options that have a keyword of their own (unset ones are `NotGiven`, not mappings)."""
    arguments = dict(body)
    for option, name in _OPTIONS:
        value = getattr(options, option, None)
        if isinstance(value, Mapping):
            arguments[name] = value
    return arguments


def _replies_as_the_method(
    cast_to: Any, kwargs: Mapping[str, Any], body: Mapping[str, Any]
) -> bool:
    """Whether the request gives the caller what the endpoint's method would: a stream
    exactly when the body asks for one, of the SDK's chunk models, or else the SDK's
    response model.

    Only then is the request traced as that method's call. Asked for anything else (a
    `cast_to` or stream chunk type of `httpx.Response`, `dict`, `object`, `str`; a `stream`
    argument the body does not match), the caller reads the reply in a form our stream
    proxy does not follow: the usage chunk we would ask for reaches the caller (in its
    dicts, or in the raw SSE text), and the usage we would read from it is lost. Such a
    request is sent as it is, untraced."""
    stream = kwargs.get("stream", False)
    if bool(stream) != (body.get("stream") is True):
        return False
    kinds = [cast_to]  # `httpx.Response` there is the reply, streamed or not
    stream_cls = kwargs.get("stream_cls")
    if stream and stream_cls is not None:
        try:
            from openai._streaming import extract_stream_chunk_type

            kinds.append(extract_stream_chunk_type(stream_cls))
        except Exception:  # no chunk type: the SDK refuses the request itself
            return False
    from openai._models import BaseModel  # imported already: this is its `request()`

    return all(_is_model(kind, BaseModel) for kind in kinds)


def _is_model(kind: Any, model: type) -> bool:
    """Whether `kind` is an SDK model class, or a union of them (Responses' stream events,
    `Annotated[Union[...], ...]`): what a resource method parses its reply into."""
    origin = get_origin(kind)
    if origin is Annotated:
        return _is_model(get_args(kind)[0], model)
    if origin is Union or origin is types.UnionType:
        return all(_is_model(member, model) for member in get_args(kind))
    cls = origin or kind  # `dict[str, Any]` is a `dict`, not a model
    return inspect.isclass(cls) and issubclass(cls, model)


def _request_parts(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
    """`request()`'s `cast_to` and `options` (`post()` passes both by position)."""
    cast_to = args[0] if args else kwargs.get("cast_to")
    options = args[1] if len(args) > 1 else kwargs.get("options")
    return cast_to, options


def _sender(
    wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: Any
) -> Callable[..., Any]:
    """`request()` called as a resource method would be: the body from its keyword
    arguments (with our `stream_options`, when added), in a copy of the request's options;
    everything else as the caller passed it."""

    def send(**arguments: Any) -> Any:
        from openai._compat import model_copy  # imported already: this is its `request()`

        sent = model_copy(options)
        sent.json_data = {k: v for k, v in arguments.items() if k not in _OPTION_NAMES}
        if len(args) > 1:
            return wrapped(args[0], sent, *args[2:], **kwargs)
        return wrapped(*args, **{**kwargs, "options": sent})

    return send


def client_request_wrapper(runtime: Runtime, target: ClientRequest) -> Wrapper:
    """For `SyncAPIClient.request` / `AsyncAPIClient.request`: a JSON request to an endpoint
    we trace, not sent by a traced call, is traced as that endpoint's call."""
    traced = {
        path: (async_wrapper if target.is_async else sync_wrapper)(runtime, endpoint)
        for (path, is_async), endpoint in _ENDPOINTS_BY_PATH.items()
        if is_async == target.is_async
    }
    passed = partial(asent_as if target.is_async else sent_as, False)

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not runtime.active:
            return wrapped(*args, **kwargs)
        if SENDING.get():  # a traced call's own request
            return passed(wrapped, args, kwargs)
        try:
            cast_to, options = _request_parts(args, kwargs)
            method, path = getattr(options, "method", None), getattr(options, "url", None)
            endpoint_wrapper = None
            if isinstance(method, str) and method.lower() == "post" and isinstance(path, str):
                endpoint_wrapper = traced.get(path.strip("/"))
            body = getattr(options, "json_data", None)
            if (
                endpoint_wrapper is None
                or not isinstance(body, Mapping)
                or getattr(options, "files", None) is not None
                or getattr(options, "content", None) is not None
                or not _replies_as_the_method(cast_to, kwargs, body)
            ):
                endpoint_wrapper = None  # not a request we trace: sent as it is
            else:
                arguments = _call_arguments(body, options)
                send = _sender(wrapped, args, kwargs, options)
        except Exception as exc:  # ours: the request goes on untraced
            internal_error("reading a request sent past the resource methods", exc)
            endpoint_wrapper = None
        if endpoint_wrapper is None:
            return wrapped(*args, **kwargs)
        return endpoint_wrapper(send, _Resource(instance), (), arguments)

    return wrapper
