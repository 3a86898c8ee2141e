"""The table of what we patch: SDK method -> operation -> how to read its result.

Adding an endpoint means adding a row here (and an accumulator if it streams
something new); the wrappers need no change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .accumulators import (
    ChatStreamAccumulator,
    ResponseFacts,
    TextStreamAccumulator,
    facts_from_completion,
    facts_from_embeddings,
)
from .request import (
    chat_request_attributes,
    embeddings_request_attributes,
    responses_request_attributes,
)
from .response_events import ResponsesStreamAccumulator, facts_from_response
from .streams import NoAccumulator, StreamAccumulator
from .tally import CompletionTally


@dataclass(frozen=True)
class Endpoint:
    module: str
    method: str  # "Class.method", as wrapt.wrap_function_wrapper takes it
    is_async: bool
    operation: str  # gen_ai.operation.name
    api_type: str | None  # openai.api.type
    request_attributes: Callable[[Mapping[str, Any]], dict[str, Any]]
    facts: Callable[[Any], ResponseFacts]
    # Given somewhere to keep the output text for an estimate (None: keep none).
    accumulator: Callable[[CompletionTally | None], StreamAccumulator]
    # Whether a stream request may get `stream_options.include_usage` added.
    injects_usage: bool
    # The counting rules an estimate uses, when not the operation's own.
    estimate_as: str = ""
    # Whether the method may, in some SDK releases, call another patched method instead of
    # sending its request itself (`self._post`). Where it does, its span is still the
    # call's only one: the inner call, made while it runs, is passed through untraced.
    may_delegate: bool = False


# The chat resource moved from `resources/chat/completions.py` (openai < 1.55)
# to a package; the package re-exports the classes, so one path serves both.
_CHAT_MODULE = "openai.resources.chat.completions"

_SYNC_AND_ASYNC = (("Completions", False), ("AsyncCompletions", True))

ENDPOINTS: tuple[Endpoint, ...] = (
    tuple(
        Endpoint(
            module=module,
            method=f"{cls}.{method}",
            is_async=is_async,
            operation="chat",
            api_type="chat_completions",
            request_attributes=chat_request_attributes,
            facts=facts_from_completion,
            accumulator=ChatStreamAccumulator,
            injects_usage=method == "create",
            may_delegate="beta" in module,
        )
        # `parse` posts by itself (it does not call `create`) and never streams. Before
        # openai 1.92 it was `beta.chat.completions.parse`, which posts by itself from
        # 1.50 on; in 1.40 to 1.49 it calls `create`, then parses what that returned: its
        # span must be parse's own, or an error of that parsing (`LengthFinishReasonError`)
        # would come after the span of `create` ended fine.
        for module, method in (
            (_CHAT_MODULE, "create"),
            (_CHAT_MODULE, "parse"),
            ("openai.resources.beta.chat.completions", "parse"),
        )
        for cls, is_async in _SYNC_AND_ASYNC
    )
    + tuple(
        Endpoint(  # legacy completions: same parameters and usage, output as `text`
            module="openai.resources.completions",
            method=f"{cls}.create",
            is_async=is_async,
            operation="text_completion",
            api_type=None,
            request_attributes=chat_request_attributes,
            facts=facts_from_completion,
            accumulator=TextStreamAccumulator,
            injects_usage=True,
        )
        for cls, is_async in _SYNC_AND_ASYNC
    )
    + tuple(
        Endpoint(
            module="openai.resources.embeddings",
            method=f"{cls}.create",
            is_async=is_async,
            operation="embeddings",
            api_type=None,
            request_attributes=embeddings_request_attributes,
            facts=facts_from_embeddings,
            accumulator=lambda tally: NoAccumulator(),  # never streams
            injects_usage=False,
        )
        for cls, is_async in (("Embeddings", False), ("AsyncEmbeddings", True))
    )
) + tuple(
    Endpoint(  # `stream()` calls `create`; `parse` posts by itself
        module=module,
        method=f"{cls}.{method}",
        is_async=is_async,
        operation="chat",
        api_type="responses",
        request_attributes=responses_request_attributes,
        facts=facts_from_response,
        accumulator=ResponsesStreamAccumulator,
        injects_usage=False,  # a Responses stream always ends with its usage
        estimate_as="responses",
    )
    # openai 3.x's `beta.responses.create` is a class of its own, posting by itself.
    for module, method in (
        ("openai.resources.responses.responses", "create"),
        ("openai.resources.responses.responses", "parse"),
        ("openai.resources.beta.responses.responses", "create"),
    )
    for cls, is_async in (("Responses", False), ("AsyncResponses", True))
)


@dataclass(frozen=True)
class PatchedMethod:
    """A method patched not to trace a call of its own, but for what it does to the
    calls we trace."""

    module: str
    method: str
    is_async: bool


class HelperClose(PatchedMethod):
    """A stream helper's `close()`, which closes the HTTP response itself.

    `chat.completions.stream()` and `responses.stream()` wrap the stream that
    `create` returned (our proxy) but close the HTTP response directly, past the
    proxy: so their `close()` is patched too, to end the span when they close.
    """


class ClientRequest(PatchedMethod):
    """The client's `request()`, which every request of the SDK passes: the way in for
    requests that reach it past the resource methods (see `client_requests`)."""


HELPER_CLOSES: tuple[HelperClose, ...] = (
    HelperClose("openai.lib.streaming.chat._completions", "ChatCompletionStream.close", False),
    HelperClose("openai.lib.streaming.chat._completions", "AsyncChatCompletionStream.close", True),
    HelperClose("openai.lib.streaming.responses._responses", "ResponseStream.close", False),
    HelperClose("openai.lib.streaming.responses._responses", "AsyncResponseStream.close", True),
)

# The clients' classes inherit `request()` from the base classes, patched first. Other
# instrumentations (OpenInference, traceAI...) wrap it on `OpenAI` / `AsyncOpenAI`
# themselves, over the base class's method as it was then: put there before
# `instrument()`, such a wrapper hides ours from every client, so ours goes over it.
# Where the class still only inherits it, the lookup finds ours and nothing is added.
CLIENT_REQUESTS: tuple[ClientRequest, ...] = (
    ClientRequest("openai._base_client", "SyncAPIClient.request", False),
    ClientRequest("openai._base_client", "AsyncAPIClient.request", True),
    ClientRequest("openai._client", "OpenAI.request", False),
    ClientRequest("openai._client", "AsyncOpenAI.request", True),
)
