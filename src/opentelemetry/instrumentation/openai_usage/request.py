"""What the request tells us before it is sent: span attributes and the endpoint.

Only parameters are read here, never message content, headers or keys, so
nothing secret can leave through this module by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from . import telemetry as t
from .tally import not_given

# Hosts whose provider name the conventions define; anything else speaking the
# OpenAI protocol is reported as `openai`.
_HOST_PROVIDERS = (
    (".openai.azure.com", t.PROVIDER_AZURE),
    (".cognitiveservices.azure.com", t.PROVIDER_AZURE),
    (".services.ai.azure.com", t.PROVIDER_AZURE),
    (".openai.azure.us", t.PROVIDER_AZURE),  # Azure Government
    (".cognitiveservices.azure.us", t.PROVIDER_AZURE),
    (".openai.azure.cn", t.PROVIDER_AZURE),  # Azure operated by 21Vianet
    (".cognitiveservices.azure.cn", t.PROVIDER_AZURE),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.perplexity.ai", "perplexity"),
    # Moonshot AI (Kimi), named by the conventions after the package's 0.66b2 values.
    ("api.moonshot.ai", "moonshot_ai"),
    ("api.moonshot.cn", "moonshot_ai"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    # Their OpenAI-compatible endpoints: Vertex AI's `.../endpoints/openapi` on
    # `{region}-aiplatform.googleapis.com`, Anthropic's `/v1/`, Cohere's `/compatibility/v1`.
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("api.anthropic.com", "anthropic"),
    ("api.cohere.ai", "cohere"),
    ("api.cohere.com", "cohere"),
    (".models.ai.azure.com", "azure.ai.inference"),  # Azure AI serverless model endpoints
)
# Hosts named by their first label, a region and the AWS partition's domain after it: Amazon
# Bedrock's OpenAI-compatible endpoints (`bedrock-runtime.{region}.amazonaws.com/openai/v1`,
# `.amazonaws.com.cn` in China, `bedrock-mantle.{region}.api.aws`).
_FIRST_LABEL_PROVIDERS = {
    "bedrock-runtime": "aws.bedrock",
    "bedrock-runtime-fips": "aws.bedrock",
    "bedrock-mantle": "aws.bedrock",
}
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _given(value: Any) -> bool:
    """True for a value the caller really passed (not None, NOT_GIVEN or omit)."""
    return value is not None and not not_given(value)


def _double(value: Any) -> float | None:
    """A sampling parameter as the conventions type it, a double, also when passed as `1`:
    one attribute must not reach a typed backend as an int on some spans, a double on others."""
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int too large for a double: the server rejects it anyway
            return None
    return None


def _int_value(value: Any) -> int | None:
    return value if _integer(value) else None


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# base URL object -> (it, the client's type and SDK provider, its attributes): a client's URL rarely
# changes, and reading it costs more than the lookup. Holding the URL keeps its id unique.
_endpoints: dict[int, tuple[Any, tuple[type, str | None], dict[str, Any]]] = {}
_MAX_ENDPOINTS = 256


def endpoint_attributes(client: Any) -> dict[str, Any]:
    """Provider, server.address and server.port from the client's base URL (a copy)."""
    url = getattr(client, "base_url", None)
    kind = (type(client), _sdk_provider(client))
    known = _endpoints.get(id(url))
    if known is not None and known[0] is url and known[1] == kind:
        return dict(known[2])
    attributes = t.bounded(_endpoint_attributes(client, url))
    if len(_endpoints) >= _MAX_ENDPOINTS:
        _endpoints.clear()
    _endpoints[id(url)] = (url, kind, attributes)
    return dict(attributes)


# openai 3.x's own providers (`OpenAI(provider=openai.providers.bedrock(...))`, and
# `BedrockOpenAI`, built on it), by the name the SDK gives them -> the conventions' name.
_SDK_PROVIDERS = {"bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai"}


def _sdk_provider(client: Any) -> str | None:
    """The provider the client was configured for, whatever its base URL (a proxy, a VPC
    endpoint): as an Azure client is Azure's on any host."""
    name = getattr(getattr(client, "_provider_runtime", None), "name", None)
    return _SDK_PROVIDERS.get(name) if isinstance(name, str) else None


def _endpoint_attributes(client: Any, url: Any) -> dict[str, Any]:
    """`base_url` is an `httpx.URL` (openai 1.x/2.x) or an `httpx2.URL` (3.x); both
    have `.host`, `.port` (None for the scheme's default) and `.scheme`."""
    attributes: dict[str, Any] = {}
    host = getattr(url, "host", None)
    provider = t.PROVIDER_OPENAI
    if isinstance(host, str) and host:
        attributes[t.SERVER_ADDRESS] = host
        port = getattr(url, "port", None)
        if not isinstance(port, int):
            port = _DEFAULT_PORTS.get(str(getattr(url, "scheme", "")))
        if port is not None:
            attributes[t.SERVER_PORT] = port
        provider = _host_provider(host)
    # The client's own provider wins over its host's: an Azure client is Azure's on any host.
    provider = t.PROVIDER_AZURE if _is_azure_client(client) else _sdk_provider(client) or provider
    attributes[t.PROVIDER] = provider
    return attributes


def _host_provider(host: str) -> str:
    """The provider the conventions name for a host, else `openai`. Matched case-blind and
    without a DNS root's trailing dot (`api.groq.com.` is `api.groq.com`), which the SDK's
    URL keeps as written."""
    host = host.rstrip(".").lower()
    for suffix, name in _HOST_PROVIDERS:
        if host.endswith(suffix):
            return name
    first, dot, rest = host.partition(".")
    if dot and "." in rest:
        return _FIRST_LABEL_PROVIDERS.get(first, t.PROVIDER_OPENAI)
    return t.PROVIDER_OPENAI


_azure_client_types: dict[type, bool] = {}


def _is_azure_client(client: Any) -> bool:
    client_type = type(client)
    known = _azure_client_types.get(client_type)
    if known is None:
        # By name: the class lives in different modules across SDK versions.
        known = any(cls.__name__ == "BaseAzureClient" for cls in client_type.__mro__)
        _azure_client_types[client_type] = known
    return known


def plain(text: str) -> str:
    """A `str` subclass (a `class Model(str, Enum)` member) as the plain string it holds,
    which is what the SDK sends: as is, the span would be named after the member
    (`chat Model.GPT_4O`, its `format()` since Python 3.11) and the attribute hold the
    caller's enum object rather than a string."""
    return text if type(text) is str else str.__str__(text)


# Parameters that stay the call's whatever `extra_body` says (see `as_sent`).
_KEPT = frozenset({"stream"})
_KEPT_ON_AZURE = _KEPT | {"model"}


def as_sent(
    kwargs: Mapping[str, Any], client: Any = None, routed_by_model: bool = True
) -> Mapping[str, Any]:
    """The call's parameters as the SDK sends them: `extra_body`'s top-level fields replace
    the call's own (the SDK merges it in last, leaving out a field set to `omit`).

    It is how a parameter an SDK release lacks is passed (`extra_body={"service_tier":
    "flex"}`, `{"max_completion_tokens": 64}` before openai 1.45), and what the server
    reads: the request's attributes, its estimate, its price and its captured content
    follow it. `stream` stays the call's: it decides what the SDK returns, a stream or not.
    So does `model` on an Azure client, which puts the call's in the URL as the deployment
    that serves it (`routed_by_model`: chat, legacy completions and embeddings; not the
    Responses API, whose body names the deployment): a `model` in the body changes nothing.
    """
    extra_body = kwargs.get("extra_body")
    if not isinstance(extra_body, Mapping) or not extra_body:
        return kwargs
    kept = _KEPT_ON_AZURE if routed_by_model and _is_azure_client(client) else _KEPT
    sent = dict(kwargs)
    for key, value in extra_body.items():
        if key in kept or not isinstance(key, str):
            continue
        if not_given(value):
            sent.pop(key, None)
        else:
            sent[key] = value
    return sent


def _model_and_stream(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """What every endpoint's request attributes start from."""
    attributes: dict[str, Any] = {}
    model = kwargs.get("model")
    if isinstance(model, str) and model:
        attributes[t.REQUEST_MODEL] = plain(model)
    if kwargs.get("stream") is True:
        attributes[t.REQUEST_STREAM] = True
    return attributes


# Chat and legacy completion parameters recorded as they are: name -> (attribute, check).
_CHAT_NUMBERS: dict[str, tuple[str, Callable[[Any], float | int | None]]] = {
    "temperature": (t.REQUEST_TEMPERATURE, _double),
    "top_p": (t.REQUEST_TOP_P, _double),
    "frequency_penalty": (t.REQUEST_FREQUENCY_PENALTY, _double),
    "presence_penalty": (t.REQUEST_PRESENCE_PENALTY, _double),
    "seed": (t.REQUEST_SEED, _int_value),
}
# The parameters read at all: a call names a few of them, so only those are looked at.
_CHAT_PARAMETERS = frozenset(_CHAT_NUMBERS) | {
    "max_completion_tokens",
    "max_tokens",
    "stop",
    "n",
    "service_tier",
    "response_format",
}


def requested_tier(tier: Any) -> str | None:
    """`openai.request.service_tier`, which the conventions ask for when the request names
    a tier other than `auto`: `auto` (the API's default, named or not) leaves the choice
    to the service, whose answer is `openai.response.service_tier`. Recorded, it would
    tell apart calls that asked for the same thing, some by naming the default. A tier
    given as a str-enum member is the string the SDK sends (`plain`), as a model is."""
    if isinstance(tier, str) and tier and tier != "auto":
        return plain(tier)
    return None


def chat_request_attributes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Request parameters of chat and legacy completions, as the conventions name them."""
    attributes = _model_and_stream(kwargs)
    passed = _CHAT_PARAMETERS.intersection(kwargs)
    if not passed:
        return attributes
    for key in passed.intersection(_CHAT_NUMBERS):
        name, convert = _CHAT_NUMBERS[key]
        value = convert(kwargs[key])
        if value is not None:
            attributes[name] = value
    for key in ("max_completion_tokens", "max_tokens"):
        value = kwargs.get(key) if key in passed else None
        if _integer(value):
            attributes[t.REQUEST_MAX_TOKENS] = value
            break
    if "stop" in passed:
        stop = kwargs["stop"]
        if isinstance(stop, str):
            attributes[t.REQUEST_STOP] = [stop]
        elif isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
            attributes[t.REQUEST_STOP] = list(stop)
    if "n" in passed:
        n = kwargs["n"]
        if _integer(n) and n != 1:
            attributes[t.REQUEST_CHOICE_COUNT] = n
    if "service_tier" in passed:
        tier = requested_tier(kwargs["service_tier"])
        if tier:
            attributes[t.OPENAI_REQUEST_SERVICE_TIER] = tier
    if "response_format" in passed:
        output_type = _output_type(kwargs["response_format"])
        if output_type:
            attributes[t.OUTPUT_TYPE] = output_type
    return attributes


def responses_request_attributes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Request parameters of `responses.create` / `parse` / `stream`."""
    attributes = _model_and_stream(kwargs)
    for key, name in (("temperature", t.REQUEST_TEMPERATURE), ("top_p", t.REQUEST_TOP_P)):
        value = _double(kwargs.get(key))
        if value is not None:
            attributes[name] = value
    max_tokens = kwargs.get("max_output_tokens")
    if _integer(max_tokens):
        attributes[t.REQUEST_MAX_TOKENS] = max_tokens
    tier = requested_tier(kwargs.get("service_tier"))
    if tier:
        attributes[t.OPENAI_REQUEST_SERVICE_TIER] = tier
    conversation = _conversation_id(kwargs.get("conversation"))
    if conversation:
        attributes[t.CONVERSATION_ID] = conversation
    text = kwargs.get("text")
    text_format = text.get("format") if isinstance(text, Mapping) else None
    output_type = _output_type(text_format if _given(text_format) else kwargs.get("text_format"))
    if output_type:
        attributes[t.OUTPUT_TYPE] = output_type
    return attributes


def _conversation_id(conversation: Any) -> str | None:
    """The id of the conversation a Responses request belongs to (`conversation="conv_..."`
    or `{"id": "conv_..."}`): the service keeps its items and adds this turn's, which is
    what `gen_ai.conversation.id` names, conditionally required when available. On spans
    only: one value per conversation is no metric attribute."""
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    if isinstance(conversation, str) and conversation:
        return plain(conversation)
    return None


def embeddings_request_attributes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Request parameters of `embeddings.create`, as the conventions name them."""
    attributes = _model_and_stream(kwargs)  # embeddings never stream
    encoding_format = kwargs.get("encoding_format")
    if isinstance(encoding_format, str) and encoding_format:
        attributes[t.REQUEST_ENCODING_FORMATS] = [encoding_format]
    dimensions = kwargs.get("dimensions")
    if _integer(dimensions):
        attributes[t.EMBEDDINGS_DIMENSION_COUNT] = dimensions
    return attributes


_DEPLOYMENT_PATH = re.compile(r"/openai/deployments/([^/]+)")


def azure_deployment(client: Any) -> str | None:
    """The deployment an Azure client was made for, which names the model on the wire.

    Newer SDKs keep it as `_azure_deployment`; older ones only in the base URL.
    """
    deployment = getattr(client, "_azure_deployment", None)
    if isinstance(deployment, str) and deployment:
        return deployment
    if not _is_azure_client(client):
        return None
    found = _DEPLOYMENT_PATH.search(str(getattr(getattr(client, "base_url", None), "path", "")))
    return found.group(1) if found else None


def _output_type(response_format: Any) -> str | None:
    if not _given(response_format):
        return None
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "text":
            return "text"
        if kind in ("json_object", "json_schema"):
            return "json"
        return None
    # `parse()` accepts a pydantic class: the model answers in JSON.
    return "json" if isinstance(response_format, type) else None


def raw_response_mode(kwargs: Mapping[str, Any]) -> str | None:
    """How the caller asked for the raw response, if it did.

    "true" for `with_raw_response` (the body is read), "stream" for
    `with_streaming_response` (the caller reads the body later, or never).
    """
    headers = kwargs.get("extra_headers")
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == "x-stainless-raw-response":
            return str(value).lower()
    return None


def with_usage_requested(kwargs: dict[str, Any]) -> bool:
    """Ask a chat stream for its usage chunk; return True when we added the request.

    The caller's other `stream_options` are kept. When the caller already asked
    for usage (with `True`, or any value but `False` and `None`: one for the server
    to judge, as it would without us), or set `stream_options` through `extra_body`
    (which wins on the wire), nothing is changed. Nor when `extra_body` turns streaming
    off (`{"stream": False}`, which also wins on the wire): OpenAI refuses `stream_options`
    on a request that does not stream, and that refusal, taken for the endpoint's, would
    turn the injection off for every later stream there.
    """
    extra_body = kwargs.get("extra_body")
    if isinstance(extra_body, Mapping) and (
        "stream_options" in extra_body or extra_body.get("stream", True) is not True
    ):
        return False
    options = kwargs.get("stream_options")
    if isinstance(options, Mapping):
        if options.get("include_usage") not in (None, False):
            return False
        kwargs["stream_options"] = {**options, "include_usage": True}
        return True
    if options is None or not _given(options):
        kwargs["stream_options"] = {"include_usage": True}
        return True
    return False
