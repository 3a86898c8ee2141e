"""Azure's error paths: credentials echoed by 401/403/404, the content-filter 400 on a
stream (never retried), and the `stream_options` refusal remembered per host and
api-version (async, per call, per `with_options`).

Through the real SDK: the bundled local server, or the SDK's own HTTP client over an
in-process mock transport for bodies the server does not give.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest
from opentelemetry.trace import StatusCode

from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

from .conftest import HTTP, MESSAGES, Telemetry, make_client, needs_responses, sse_reply

pytestmark = pytest.mark.timeout(60)

AZURE_ENDPOINT = "https://review-resource.openai.azure.com"
KEY = "0123456789abcdef0123456789abcdef"  # an Azure key: 32 hex digits, not `sk-` shaped
AD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJjb2duaXRpdmUifQ.c2lnbmF0dXJl"
ERRORS = {401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
          404: openai.NotFoundError}  # fmt: skip
USAGE_HEADERS = {"x-mock-usage": json.dumps({"prompt_tokens": 21, "completion_tokens": 5})}


def echoing(status: int, seen: list[Any]) -> Any:
    """An Azure resource refusing the call, its message echoing the credential sent."""

    def handler(request: Any) -> Any:
        seen.append(request)
        key = request.headers.get("api-key")
        credential = key if key else request.headers.get("authorization", "")
        message = {
            401: f"Access denied due to invalid subscription key {credential}",
            403: f"Principal does not have access to API/Operation. Sent: {credential}",
            404: f"The API deployment for this resource does not exist ({credential}).",
        }[status]
        return HTTP.Response(status, json={"error": {"code": str(status), "message": message}})

    return handler


def azure_client(kind: str, handler: Any, **auth: Any) -> Any:
    sync = kind == "azure"
    transport = HTTP.MockTransport(handler)
    http_client = (HTTP.Client if sync else HTTP.AsyncClient)(transport=transport)
    cls = openai.AzureOpenAI if sync else openai.AsyncAzureOpenAI
    return cls(
        azure_endpoint=AZURE_ENDPOINT,
        api_version="2024-10-21",
        max_retries=0,
        http_client=http_client,
        **auth,
    )


async def call(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    result = client.chat.completions.create(**kwargs)
    if isinstance(client, openai.AsyncAzureOpenAI):
        result = await result
        if kwargs.get("stream"):
            return [chunk async for chunk in result]
        return result
    return list(result) if kwargs.get("stream") else result


async def close(*clients: Any) -> None:
    for client in clients:
        closing = client.close()
        if isinstance(client, openai.AsyncAzureOpenAI):
            await closing


def everything(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> str:
    spans = [span.to_json() for span in telemetry.spans()]
    data = telemetry.reader.get_metrics_data()
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    # Ours and OpenTelemetry's: the SDK's own DEBUG log prints the `api-key` header itself
    # (openai 1.x), without us.
    records = [formatter.format(r) for r in caplog.records if r.name.startswith("opentelemetry")]
    return "\n".join([*spans, data.to_json() if data else "", *records])


# -- 1. echoed credentials ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("status", sorted(ERRORS))
@pytest.mark.parametrize("auth", ["api_key", "azure_ad_token_provider", "azure_ad_token"])
@pytest.mark.parametrize("kind", ["azure", "async_azure"])
async def test_azure_errors_echoing_the_credential_keep_it_out_of_telemetry(
    instrument: Any,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    auth: str,
    status: int,
    stream: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    instrument()
    secret = KEY if auth == "api_key" else AD_TOKEN
    credential = {
        "api_key": {"api_key": KEY},
        "azure_ad_token_provider": {"azure_ad_token_provider": lambda: AD_TOKEN},
        "azure_ad_token": {"azure_ad_token": AD_TOKEN},
    }[auth]
    seen: list[Any] = []
    client = azure_client(kind, echoing(status, seen), **credential)
    with pytest.raises(ERRORS[status]) as raised:
        await call(client, stream=stream)
    assert len(seen) == 1
    sent = seen[0].headers
    if auth == "api_key":
        assert sent["api-key"] == KEY
    else:
        assert sent["authorization"] == f"Bearer {AD_TOKEN}"
    assert secret in str(raised.value)  # the caller's exception is the SDK's, untouched
    assert raised.value.response.request.url == seen[0].url

    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == ERRORS[status].__name__
    [event] = [e for e in span.events if e.name == "exception"]
    assert "[REDACTED]" in str((event.attributes or {})["exception.message"])
    for attributes in (span.attributes or {}, *(e.attributes or {} for e in span.events)):
        for value in attributes.values():
            assert secret not in str(value)
    assert secret not in (span.status.description or "")
    assert secret not in everything(telemetry, caplog)
    assert secret[-12:] not in everything(telemetry, caplog)  # not even a piece of it
    await close(client)


# -- 2. content filter on a stream: no retry ----------------------------------------------

CONTENT_FILTER = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
        "content management policy. Please modify your prompt and retry.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": {"filtered": False, "severity": "safe"},
                "jailbreak": {"filtered": False, "detected": False},
                "self_harm": {"filtered": False, "severity": "safe"},
                "sexual": {"filtered": False, "severity": "safe"},
                "violence": {"filtered": True, "severity": "medium"},
            },
        },
    }
}


@pytest.mark.parametrize("kind", ["azure", "async_azure"])
async def test_content_filter_400_on_a_stream_is_not_retried(
    instrument: Any, telemetry: Telemetry, kind: str
) -> None:
    instrument()
    seen: list[dict[str, Any]] = []

    def handler(request: Any) -> Any:
        seen.append(json.loads(request.content))
        return HTTP.Response(400, json=CONTENT_FILTER)

    client = azure_client(kind, handler, api_key=KEY)
    with pytest.raises(openai.BadRequestError) as raised:
        await call(client, stream=True)
    assert raised.value.code == "content_filter"
    assert raised.value.body == CONTENT_FILTER["error"]
    assert len(seen) == 1  # exactly one request: ours was not blamed
    assert seen[0]["stream_options"] == {"include_usage": True}  # we had injected it
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "BadRequestError"

    # And the endpoint keeps its injection: a later stream still asks for usage.
    def ok(request: Any) -> Any:
        seen.append(json.loads(request.content))
        return HTTP.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n"
        )

    client2 = azure_client(kind, ok, api_key=KEY)
    await call(client2, stream=True)
    assert seen[-1]["stream_options"] == {"include_usage": True}
    await close(client, client2)


# -- 3. the rejection keyed by host + api-version -------------------------------------------


@pytest.mark.parametrize("kind", ["azure", "async_azure"])
async def test_azure_api_version_rejecting_stream_options_keeps_injection_for_newer_versions(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str
) -> None:
    # Azure takes `stream_options` from API version 2024-09-01-preview on: a client on an
    # older version is refused, and another client of the same resource is not.
    refused = {"x-mock-scenario": "reject_stream_options"}
    old = make_client(server, kind, api_version="2024-02-01", default_headers=refused)
    new = make_client(server, kind, api_version="2024-10-21")
    server.clear()
    first = await call(old, stream=True, extra_headers=USAGE_HEADERS)
    second = await call(old, stream=True, extra_headers=USAGE_HEADERS)
    third = await call(new, stream=True, extra_headers=USAGE_HEADERS)
    sent = [r.body.get("stream_options") for r in server.requests]
    # old: refused, retried without, then not tried again; new: injected all the same
    assert sent == [{"include_usage": True}, None, None, {"include_usage": True}]
    assert [r.query.get("api-version") for r in server.requests] == [
        "2024-02-01", "2024-02-01", "2024-02-01", "2024-10-21",
    ]  # fmt: skip
    spans = telemetry.spans()
    assert len(spans) == 3
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    attributes = spans[-1].attributes or {}
    assert attributes["openai_usage.usage.source"] == "response"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        21,
        5,
    )
    # The user never sees the usage chunk they did not ask for (Azure's first chunk, the
    # prompt filter results, has no choices either: it is not ours).
    assert all(chunk.usage is None for chunk in first + second + third)
    assert [c.choices[0].finish_reason for c in first if c.choices][-1] == "stop"
    await close(old, new)


# -- 4. a per-call `extra_query` api-version wins over the client's --------------------------


@pytest.mark.parametrize("kind", ["azure", "async_azure"])
async def test_per_call_api_version_overrides_the_clients_for_the_rejection_key(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str
) -> None:
    client = make_client(server, kind, api_version="2024-10-21")
    reject = {**USAGE_HEADERS, "x-mock-scenario": "reject_stream_options"}
    old = {"api-version": "2024-02-01"}
    server.clear()
    await call(client, stream=True, extra_query=old, extra_headers=reject)  # refused, retried
    await call(client, stream=True, extra_query=old, extra_headers=reject)  # not tried again
    await call(client, stream=True, extra_headers=USAGE_HEADERS)  # the client's own version
    sent = [(r.query.get("api-version"), "stream_options" in r.body) for r in server.requests]
    assert sent == [
        ("2024-02-01", True), ("2024-02-01", False), ("2024-02-01", False), ("2024-10-21", True),
    ]  # fmt: skip
    assert all(s.status.status_code is StatusCode.UNSET for s in telemetry.spans())

    # The other way round: the client's version refused, a per-call newer one still injected.
    refused = {"x-mock-scenario": "reject_stream_options"}
    older = make_client(server, kind, api_version="2023-12-01-preview", default_headers=refused)
    server.clear()
    await call(older, stream=True, extra_headers=USAGE_HEADERS)
    new = {"api-version": "2024-10-21"}
    await call(older, stream=True, extra_query=new, extra_headers={"x-mock-scenario": "ok"})
    sent = [(r.query.get("api-version"), "stream_options" in r.body) for r in server.requests]
    assert sent == [
        ("2023-12-01-preview", True), ("2023-12-01-preview", False), ("2024-10-21", True),
    ]  # fmt: skip
    await close(client, older)


async def test_an_async_token_provider_s_token_echoed_by_a_403_is_scrubbed(
    instrument: Any, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    instrument()

    async def provider() -> str:
        return AD_TOKEN

    seen: list[Any] = []
    client = azure_client("async_azure", echoing(403, seen), azure_ad_token_provider=provider)
    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await call(client, stream=stream)
        assert AD_TOKEN in str(raised.value)
    assert len(telemetry.spans()) == 2
    assert AD_TOKEN not in everything(telemetry, caplog)
    await client.close()


def test_with_options_api_version_is_its_own_rejection_key(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer
) -> None:
    client = make_client(server, "azure", api_version="2024-10-21")
    old = client.with_options(
        api_version="2024-02-01", default_headers={"x-mock-scenario": "reject_stream_options"}
    )
    server.clear()
    list(old.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    sent = [(r.query.get("api-version"), "stream_options" in r.body) for r in server.requests]
    assert sent == [("2024-02-01", True), ("2024-02-01", False), ("2024-10-21", True)]
    client.close()


# -- 4. a stream's error event echoing the token the SDK sent -----------------------------


def failing_response_stream(seen: list[Any]) -> Any:
    """A Responses stream that starts, then fails with an `error` event quoting the bearer
    token of the request it answers: one a token provider made for this request only."""

    def handler(request: Any) -> Any:
        seen.append(request)
        token = request.headers.get("authorization", "").partition(" ")[2]
        events = [
            {"type": "response.output_text.delta", "delta": "Two", "item_id": "msg_1",
             "output_index": 0, "content_index": 0, "sequence_number": 1},
            {"type": "error", "code": "server_error", "param": None, "sequence_number": 2,
             "message": f"Upstream refused the token {token}; please retry."},
        ]  # fmt: skip
        return sse_reply(events)

    return handler


@needs_responses
@pytest.mark.parametrize(("kind", "raw"), [("azure", False), ("async_azure", False),
                                           ("azure", True)])  # fmt: skip
async def test_a_stream_error_event_echoing_a_provider_token_keeps_it_out_of_telemetry(
    instrument: Any, telemetry: Telemetry, caplog: pytest.LogCaptureFixture, kind: str, raw: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    instrument()
    seen: list[Any] = []
    # Made per request, so no setting of the client holds it: only the request sent does.
    client = azure_client(
        kind, failing_response_stream(seen), azure_ad_token_provider=lambda: AD_TOKEN
    )
    request = {"model": "gpt-4o-mini", "input": "Hi", "stream": True}
    if raw:  # the body read through `with_raw_response`'s `parse()`
        stream = client.responses.with_raw_response.create(**request).parse()
    else:
        stream = client.responses.create(**request)
    events = [event async for event in await stream] if kind == "async_azure" else list(stream)
    assert seen[0].headers["authorization"] == f"Bearer {AD_TOKEN}"
    assert AD_TOKEN in str(events[-1].message)  # the caller's events are untouched

    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "server_error"
    assert "[REDACTED]" in (span.status.description or "")
    assert AD_TOKEN not in everything(telemetry, caplog)
    assert AD_TOKEN[-12:] not in everything(telemetry, caplog)
    await close(client)


@needs_responses
@pytest.mark.parametrize("kind", ["azure", "async_azure"])
async def test_a_failed_response_echoing_a_provider_token_keeps_it_out_of_telemetry(
    instrument: Any, telemetry: Telemetry, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # Not streamed: the parsed response holds no request to read the token from, so only
    # its shape (a JWT, as Entra ID tokens are) can tell it.
    caplog.set_level(logging.DEBUG)
    instrument()

    def handler(request: Any) -> Any:
        token = request.headers.get("authorization", "").partition(" ")[2]
        failed = {
            "id": "resp_1", "object": "response", "created_at": 1764000000, "status": "failed",
            "model": "gpt-4o-mini", "output": [], "usage": None,
            "error": {"code": "server_error", "message": f"Token {token} was refused."},
        }  # fmt: skip
        return HTTP.Response(200, json=failed)

    client = azure_client(kind, handler, azure_ad_token_provider=lambda: AD_TOKEN)
    response = client.responses.create(model="gpt-4o-mini", input="Hi")
    if kind == "async_azure":
        response = await response
    assert response.status == "failed"
    assert AD_TOKEN in response.error.message  # the caller's response is untouched

    span = telemetry.span()
    assert (span.attributes or {})["error.type"] == "server_error"
    assert span.status.description == "server_error: Token [REDACTED] was refused."
    assert AD_TOKEN[-12:] not in everything(telemetry, caplog)
    await close(client)
