"""Non-streamed chat completions: one CLIENT span and metrics with the billed usage."""

from __future__ import annotations

import enum
import inspect
import json
from typing import Any

import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry import trace
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import (
    MESSAGES,
    Telemetry,
    is_azure,
    make_client,
    openai_only,
    sdk_has_responses,
)

USAGE = {"prompt_tokens": 18, "completion_tokens": 2, "cached_tokens": 5, "reasoning_tokens": 1}
USAGE_HEADERS = {"x-mock-usage": json.dumps(USAGE)}

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
TOKEN_BUCKETS += (67108864,)
SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96)
SECONDS_BUCKETS += (81.92,)


def expected_common(client: Any, server: LocalOpenAIServer) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai" if is_azure(client) else "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }


def check_call(telemetry: Telemetry, client: Any, server: LocalOpenAIServer, result: Any) -> None:
    span = telemetry.span()
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    expected = {
        **expected_common(client, server),
        **openai_only(client, {"openai.api.type": "chat_completions"}),
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.seed": 42,
        "gen_ai.request.stop_sequences": ("END", "STOP"),
        "gen_ai.request.frequency_penalty": 0.1,
        "gen_ai.request.presence_penalty": 0.3,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": result.id,
        "gen_ai.response.finish_reasons": ("stop",),
        **openai_only(
            client,
            {
                "openai.response.system_fingerprint": "fp_local0001",
                "openai.response.service_tier": "default",
            },
        ),
        "gen_ai.usage.input_tokens": 18,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.usage.total_tokens": 20,
        "gen_ai.usage.cache_read.input_tokens": 5,
        "gen_ai.usage.reasoning.output_tokens": 1,
        "openai_usage.usage.source": "response",
        # gpt-4o-mini list price: 13 input, 5 cached input, 2 output tokens.
        "openai_usage.cost.usd": pytest.approx((13 * 0.15 + 5 * 0.075 + 2 * 0.60) / 1e6),
    }
    assert attributes == expected
    # Billed usage, as the SDK itself parsed it.
    assert result.usage.prompt_tokens == 18
    assert result.usage.completion_tokens == 2

    metric_attributes = {
        **expected_common(client, server),
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        **openai_only(client, {"openai.response.service_tier": "default"}),
    }
    tokens = {
        p.attributes["gen_ai.token.type"]: p for p in telemetry.points("gen_ai.client.token.usage")
    }
    assert set(tokens) == {"input", "output"}
    assert tokens["input"].sum == 18 and tokens["input"].count == 1
    assert tokens["output"].sum == 2 and tokens["output"].count == 1
    assert dict(tokens["input"].attributes) == {
        **metric_attributes,
        "gen_ai.token.type": "input",
        "openai_usage.usage.source": "response",
    }
    assert tuple(tokens["input"].explicit_bounds) == TOKEN_BUCKETS
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes) == metric_attributes
    assert duration.count == 1
    assert 0 < duration.sum < 5
    assert tuple(duration.explicit_bounds) == SECONDS_BUCKETS
    assert telemetry.metric("gen_ai.client.token.usage").unit == "{token}"
    assert telemetry.metric("gen_ai.client.operation.duration").unit == "s"
    # Not a stream: no chunk metrics.
    assert telemetry.points("gen_ai.client.operation.time_to_first_chunk") == []


REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": MESSAGES,
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 50,
    "seed": 42,
    "stop": ["END", "STOP"],
    "frequency_penalty": 0.1,
    "presence_penalty": 0.3,
    "extra_headers": USAGE_HEADERS,
}


def test_chat_call_records_billed_usage_and_request_parameters(
    instrumented: Any, telemetry: Telemetry, any_client: Any, server: LocalOpenAIServer
) -> None:
    result = any_client.chat.completions.create(**REQUEST)
    assert isinstance(result, openai.types.chat.ChatCompletion)
    check_call(telemetry, any_client, server, result)


async def test_async_chat_call_records_billed_usage_and_request_parameters(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any, server: LocalOpenAIServer
) -> None:
    result = await any_aclient.chat.completions.create(**REQUEST)
    assert isinstance(result, openai.types.chat.ChatCompletion)
    check_call(telemetry, any_aclient, server, result)


def test_sampling_parameters_passed_as_integers_are_recorded_as_doubles(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The conventions type these as doubles: `temperature=0` and `temperature=0.0` must
    # reach a typed backend (OTLP int_value vs double_value) as the same attribute type.
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        temperature=0,
        top_p=1,
        frequency_penalty=0,
        presence_penalty=1,
        seed=7,
    )
    chat = dict(telemetry.span().attributes or {})
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        assert type(chat[f"gen_ai.request.{name}"]) is float, name
    assert (chat["gen_ai.request.temperature"], chat["gen_ai.request.top_p"]) == (0.0, 1.0)
    assert type(chat["gen_ai.request.seed"]) is int
    if hasattr(client, "responses"):  # the Responses API reads its own parameters
        telemetry.exporter.clear()
        client.responses.create(model="gpt-4o-mini", input="hi", temperature=1, top_p=0)
        responses = dict(telemetry.span().attributes or {})
        assert responses["gen_ai.request.temperature"] == 1.0
        assert type(responses["gen_ai.request.temperature"]) is float
        assert type(responses["gen_ai.request.top_p"]) is float


def test_result_is_identical_to_uninstrumented_call(
    instrument: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    headers = {"x-mock-usage": json.dumps({"prompt_tokens": 7, "completion_tokens": 3})}
    plain = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
    )
    instrument()
    traced = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
    )
    assert type(traced) is type(plain)
    strip = {"id", "created"}
    assert {k: v for k, v in traced.to_dict().items() if k not in strip} == {
        k: v for k, v in plain.to_dict().items() if k not in strip
    }
    # The request on the wire is untouched for non-streamed calls.
    sent = [r.body for r in server.requests[-2:]]
    assert sent[0] == sent[1]


def test_span_is_child_of_the_callers_current_span(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as parent:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert trace.get_current_span() is parent
    chat, caller = telemetry.spans()
    assert caller.name == "caller"
    assert chat.parent is not None
    assert chat.parent.span_id == parent.get_span_context().span_id
    assert chat.context.trace_id == parent.get_span_context().trace_id


def sdk_has_parameter(name: str) -> bool:
    from openai.resources.chat.completions import Completions

    return name in inspect.signature(Completions.create).parameters


@pytest.mark.skipif(
    not sdk_has_parameter("max_completion_tokens"), reason="SDK predates max_completion_tokens"
)
def test_choice_count_and_max_completion_tokens_are_recorded(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    result = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, n=3, max_completion_tokens=64
    )
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.request.choice.count"] == 3
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert attributes["gen_ai.response.finish_reasons"] == ("stop", "stop", "stop")
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert attributes["gen_ai.usage.output_tokens"] % 3 == 0


@pytest.mark.skipif(not sdk_has_parameter("service_tier"), reason="SDK predates service_tier")
@pytest.mark.parametrize(
    ("tier", "recorded"), [("auto", None), ("flex", "flex"), ("default", "default")]
)
def test_the_requested_service_tier_is_recorded_unless_it_is_auto(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, tier: str, recorded: str | None
) -> None:
    """The conventions require `openai.request.service_tier` when the request names a tier
    other than `auto`, the API's default, which leaves the choice to the service."""
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, service_tier=tier)
    attributes = telemetry.span().attributes or {}
    assert attributes.get("openai.request.service_tier") == recorded
    assert attributes["openai.response.service_tier"] == (recorded or "default")  # as served


def test_parameters_given_through_extra_body_are_recorded_as_sent(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    # `extra_body` is how a parameter an SDK release lacks is passed, and the SDK merges it
    # in last: the server gets these values, not the call's, and so does the span.
    body = {
        "model": "gpt-4o",
        "n": 2,
        "max_completion_tokens": 64,
        "service_tier": "flex",
        "temperature": 0.5,
    }
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, extra_body=body
    )
    sent = server.requests[-1].body
    assert {key: sent[key] for key in body} == body
    span = telemetry.span()
    assert span.name == "chat gpt-4o"
    attributes = span.attributes or {}
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.request.choice.count"] == 2
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert attributes["openai.request.service_tier"] == "flex"
    assert attributes["gen_ai.request.temperature"] == 0.5
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["gen_ai.request.model"] == "gpt-4o"


def test_on_azure_a_model_in_extra_body_does_not_replace_the_deployment(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    # Azure routes the call by the call's `model`, put in the URL as the deployment: the
    # body's `model` changes nothing there, and the request model stays the deployment.
    azure = make_client(server, "azure")
    azure.chat.completions.create(
        model="my-deployment", messages=MESSAGES, extra_body={"model": "gpt-4o", "n": 2}
    )
    assert server.requests[-1].path.startswith("/openai/deployments/my-deployment/")
    span = telemetry.span()
    assert span.name == "chat my-deployment"
    attributes = span.attributes or {}
    assert attributes["gen_ai.request.model"] == "my-deployment"
    assert attributes["gen_ai.request.choice.count"] == 2
    if not sdk_has_responses():
        return
    # The Responses API is not routed by deployment on Azure: its body's model is served.
    telemetry.exporter.clear()
    azure.responses.create(model="my-deployment", input="Hi", extra_body={"model": "gpt-4o"})
    assert server.requests[-1].body["model"] == "gpt-4o"
    assert (telemetry.span().attributes or {})["gen_ai.request.model"] == "gpt-4o"


def test_default_usage_details_of_zero_are_recorded_as_zero(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attributes = telemetry.span().attributes or {}
    reported = server.requests[-1].usage
    assert reported is not None
    assert attributes["gen_ai.usage.input_tokens"] == reported["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == reported["completion_tokens"]
    assert attributes["gen_ai.usage.total_tokens"] == result.usage.total_tokens
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 0
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 0


def test_usage_with_null_fields_records_only_the_valid_counts(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-mock-scenario": "usage_nulls"}
    )
    span = telemetry.span()
    attributes = span.attributes or {}
    assert "gen_ai.usage.output_tokens" not in attributes
    assert isinstance(attributes["gen_ai.usage.input_tokens"], int)
    assert span.status.status_code is StatusCode.UNSET
    types = {
        p.attributes["gen_ai.token.type"] for p in telemetry.points("gen_ai.client.token.usage")
    }
    assert types == {"input"}


@pytest.mark.parametrize("host_kind", ["azure"])
def test_azure_deployment_calls_report_the_azure_provider(
    instrumented: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    host_kind: str,
) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        azure_deployment="my-deployment",
        api_key="azure-key-0123456789",
        api_version="2024-10-21",
        max_retries=0,
    )
    azure.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert server.requests[-1].path.startswith("/openai/deployments/my-deployment/")


class Model(str, enum.Enum):
    """How applications often name their models: a `str` mixin, whose members the SDK
    sends as the string they hold."""

    MINI = "gpt-4o-mini"


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_given_as_a_str_enum_member_is_named_by_the_string_it_holds(
    instrumented: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    stream: bool,
) -> None:
    server.clear()
    result = client.chat.completions.create(model=Model.MINI, messages=MESSAGES, stream=stream)
    if stream:
        list(result)
    assert server.requests[-1].body["model"] == "gpt-4o-mini"  # what the SDK sent
    span = telemetry.span()
    assert span.name == "chat gpt-4o-mini"
    model = (span.attributes or {})["gen_ai.request.model"]
    assert model == "gpt-4o-mini" and type(model) is str
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert type(point.attributes["gen_ai.request.model"]) is str


class Tier(str, enum.Enum):
    FLEX = "flex"


@pytest.mark.skipif(not sdk_has_parameter("service_tier"), reason="SDK predates service_tier")
def test_a_service_tier_given_as_a_str_enum_member_is_recorded_as_the_string_it_holds(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.clear()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, service_tier=Tier.FLEX)
    assert server.requests[-1].body["service_tier"] == "flex"  # what the SDK sent
    tier = (telemetry.span().attributes or {})["openai.request.service_tier"]
    assert tier == "flex" and type(tier) is str


@pytest.mark.parametrize("stream", [False, True])
def test_attribute_values_are_bounded_in_length(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool
) -> None:
    """A caller's or a server's strings cannot make a span (or its name) grow without end."""
    long_model = "m" * 5000
    result = client.chat.completions.create(
        model=long_model,
        messages=MESSAGES,
        stop=["s" * 3000] * 200,
        stream=stream,
        extra_headers={"x-mock-response-model": "r" * 4000},
    )
    if stream:
        list(result)
    span = telemetry.span()
    assert span.name == "chat " + "m" * 256
    attributes = span.attributes or {}
    assert attributes["gen_ai.request.model"] == "m" * 256
    assert attributes["gen_ai.response.model"] == "r" * 256
    stops = attributes["gen_ai.request.stop_sequences"]
    assert len(stops) == 128 and all(s == "s" * 256 for s in stops)
    for value in attributes.values():
        assert len(value) <= 256 if isinstance(value, str) else True
