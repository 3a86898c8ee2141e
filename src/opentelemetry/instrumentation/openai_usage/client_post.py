"""Requests sent with the client's own `post()`, past the resource methods we patch.

litellm (1.110) sends its OpenAI chat completions and embeddings as
`client.post("/chat/completions", body=..., options=..., stream=..., stream_cls=...)`,
with the raw-response header in `options`, instead of calling
`client.chat.completions.create(...)` (it skips the SDK's request transform). Such a
call never reaches a patched method, so without this it had no span, no usage and no
metrics. Here the client's `post()` (sync and async) is patched too: a request to one of
the paths our endpoints post to, made by code outside the SDK, is traced as that
endpoint's call, through the same wrapper: same span, usage, estimate, `include_usage`
injection and raw-response handling. A request the SDK's own code sends (its resource
methods, patched or not) passes through untouched: a patched method's call keeps exactly
one span, and the SDK's own method, taken before `instrument()`, stays untraced.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Annotated, Any, Union, get_args, get_origin

from .errors import internal_error
from .patches import ENDPOINTS, ClientPost, Endpoint
from .wrappers import Runtime, Wrapper, async_wrapper, sync_wrapper

# The path each endpoint's method posts to, as the SDK passes it to `post()`.
_PATHS = {
    ("openai.resources.chat.completions", "create"): "chat/completions",
    ("openai.resources.completions", "create"): "completions",
    ("openai.resources.embeddings", "create"): "embeddings",
    ("openai.resources.responses.responses", "create"): "responses",
}


def _by_path() -> dict[tuple[str, bool], Endpoint]:
    found: dict[tuple[str, bool], Endpoint] = {}
    for endpoint in ENDPOINTS:
        path = _PATHS.get((endpoint.module, endpoint.method.rsplit(".", 1)[1]))
        if path is not None:
            found[(path, endpoint.is_async)] = endpoint
    return found


_ENDPOINTS_BY_PATH = _by_path()

# `post()`'s request options, as the resource methods' keyword arguments name them: they
# tell a raw-response call (its header), the request as sent (`extra_body`), and credentials.
_OPTIONS = (("headers", "extra_headers"), ("params", "extra_query"), ("extra_json", "extra_body"))
_OPTION_NAMES = frozenset(name for _, name in _OPTIONS)


# How far up `_sent_by_the_sdk` looks for the SDK's own code.
_CALLERS_LOOKED_AT = 8


def _sent_by_the_sdk(frame: FrameType | None) -> bool:
    """Whether `post()` was called by the SDK's own code (a resource method), which a
    patched method traces, or not at all: an `openai` frame among the nearest callers.
    Not only the nearest: another tool's wrapper put over `post()` (and wrapt's own
    pure-Python frames) may sit between the SDK's method and us, and its frame alone would
    make every traced call a second span. A request sent past the SDK (litellm's) has no
    SDK frame above it."""
    for _ in range(_CALLERS_LOOKED_AT):
        if frame is None:
            return False
        name = frame.f_globals.get("__name__")
        if isinstance(name, str) and (name == "openai" or name.startswith("openai.")):
            return True
        frame = frame.f_back
    return False


class _Resource:
    """What our wrappers read of a resource: its client."""

    __slots__ = ("_client",)

    def __init__(self, client: Any) -> None:
        self._client = client


def _call_arguments(body: Mapping[str, Any], options: Any) -> dict[str, Any]:
    """The request as a resource method's keyword arguments: the body's fields, and the
    options that have a keyword of their own."""
    arguments = dict(body)
    if isinstance(options, Mapping):
        for option, name in _OPTIONS:
            value = options.get(option)
            if value is not None:
                arguments[name] = value
    return arguments


def _replies_as_the_method(kwargs: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether `post()` gives the caller what the endpoint's method would: a stream exactly
    when the body asks for one, of the SDK's chunk models, or else the SDK's response model.

    Only then is the request traced as that method's call. Asked for anything else (a
    `cast_to` or stream chunk type of `httpx.Response`, `dict`, `object`, `str`; a `stream`
    argument the body does not match), the caller reads the reply in a form our stream
    proxy does not follow: the usage chunk we would ask for reaches the caller (in its
    dicts, or in the raw SSE text), and the usage we would read from it is lost. Such a
    request is sent as it is, untraced."""
    stream = kwargs.get("stream", False)
    if bool(stream) != (body.get("stream") is True):
        return False
    kinds = [kwargs.get("cast_to")]  # `httpx.Response` there is the reply, streamed or not
    stream_cls = kwargs.get("stream_cls")
    if stream and stream_cls is not None:
        try:
            from openai._streaming import extract_stream_chunk_type

            kinds.append(extract_stream_chunk_type(stream_cls))
        except Exception:  # no chunk type: the SDK refuses the request itself
            return False
    from openai._models import BaseModel  # imported already: this is its `post()`

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


def _sender(
    wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[..., Any]:
    """`post()` called as a resource method would be: the body from its keyword arguments
    (with our `stream_options`, when added), everything else as the caller passed it."""

    def send(**arguments: Any) -> Any:
        post_kwargs = dict(kwargs)
        post_kwargs["body"] = {k: v for k, v in arguments.items() if k not in _OPTION_NAMES}
        return wrapped(*args, **post_kwargs)

    return send


def client_post_wrapper(runtime: Runtime, target: ClientPost) -> Wrapper:
    """For `SyncAPIClient.post` / `AsyncAPIClient.post`: a JSON request to an endpoint we
    trace, not sent by a traced call, is traced as that endpoint's call."""
    traced = {
        path: (async_wrapper if target.is_async else sync_wrapper)(runtime, endpoint)
        for (path, is_async), endpoint in _ENDPOINTS_BY_PATH.items()
        if is_async == target.is_async
    }

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not runtime.active or _sent_by_the_sdk(sys._getframe(1)):
            return wrapped(*args, **kwargs)
        try:
            path = args[0] if args else kwargs.get("path")
            endpoint_wrapper = traced.get(path.strip("/")) if isinstance(path, str) else None
            body = kwargs.get("body")
            if (
                endpoint_wrapper is None
                or not isinstance(body, Mapping)
                or kwargs.get("files") is not None
                or kwargs.get("content") is not None
                or not _replies_as_the_method(kwargs, body)
            ):
                endpoint_wrapper = None  # not a request we trace: sent as it is
            else:
                arguments = _call_arguments(body, kwargs.get("options"))
                send = _sender(wrapped, args, kwargs)
        except Exception as exc:  # ours: the request goes on untraced
            internal_error("reading a request sent with post()", exc)
            endpoint_wrapper = None
        if endpoint_wrapper is None:
            return wrapped(*args, **kwargs)
        return endpoint_wrapper(send, _Resource(instance), (), arguments)

    return wrapper
