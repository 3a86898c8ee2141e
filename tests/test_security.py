"""Secrets and size: no key material anywhere we write, whatever the settings; bounded values.

Through the real SDK against the bundled local server (and, for an error body that
echoes the request's credentials, an in-process mock transport). Every span (its JSON:
name, attributes, events, status), every metric point (the reader's JSON), every log
record of ours or of OpenTelemetry's (caplog at DEBUG) and every content event is
scanned for the key material sent.
"""

from __future__ import annotations

import base64
import gc
import inspect
import itertools
import json
import logging
from typing import Any

import openai
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter

from opentelemetry.instrumentation.openai_usage.config import DEFAULT_MAX_CONTENT_LENGTH
from opentelemetry.instrumentation.openai_usage.content import request_texts
from opentelemetry.instrumentation.openai_usage.errors import redact, without_content
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer
from opentelemetry.instrumentation.openai_usage.telemetry import (
    MAX_ATTRIBUTE_ITEMS,
    MAX_ATTRIBUTE_LENGTH,
)

from .conftest import (
    API_KEY,
    AZURE_KEY,
    HTTP,
    Telemetry,
    collect,
    make_client,
    metrics_in,
    served_by,
    sse_reply,
)

pytestmark = pytest.mark.timeout(60)

# Per-request credentials, deliberately not shaped like an OpenAI key: only knowing them
# as credentials can keep them out of an error text that echoes them.
OTHER_TOKEN = "tok-SECRET-other-bearer-9876543210"
OTHER_AZURE_KEY = "azkey-SECRET-per-request-13579"
CUSTOM_SECRET = "custom-SECRET-header-value-2468"
SECRETS = (API_KEY, AZURE_KEY, OTHER_TOKEN, OTHER_AZURE_KEY, CUSTOM_SECRET)
# Every secret above contains it: a partly masked or cut secret is caught too.
MARKER = "SECRET"
PROMPT = "Please tell me about the weather in Paris"
MESSAGES = [{"role": "user", "content": PROMPT}]
CONTENT_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
)
SDK_LOGGERS = ("openai", "httpx", "httpx2", "httpcore")

CONTENT_MODES = ("no_content", "span_only", "event_only", "span_and_event")
COMBINATIONS = list(
    itertools.product(CONTENT_MODES, ("fallback", "compare"), ("per_stream", "per_chunk"))
)


def echo_handler(request: Any) -> Any:
    """A proxy that refuses the call and echoes the credentials it was sent, bare."""
    authorization = request.headers.get("authorization", "")
    token = authorization.removeprefix("Bearer ")
    api_key = request.headers.get("api-key", "")
    # (openai 1.26's Azure client sends its key as a bearer token as well.)
    message = f"Incorrect API key provided: {api_key or token}. You sent {authorization!r}."
    body = {"error": {"message": message, "type": "invalid_request_error", "code": "bad_key"}}
    return HTTP.Response(401, json=body, headers={"x-request-id": "req_echo"})


def echo_client(kind: str, server: LocalOpenAIServer) -> Any:
    http_client = HTTP.Client(transport=HTTP.MockTransport(echo_handler))
    return make_client(server, kind, http_client=http_client)


def calls(client: Any, azure: bool) -> int:
    """Every kind of call, with per-request credentials and a custom secret header; the
    number of spans they make."""
    per_request = (
        {"api-key": OTHER_AZURE_KEY} if azure else {"Authorization": f"Bearer {OTHER_TOKEN}"}
    )
    headers = {"x-custom-auth": CUSTOM_SECRET, **per_request}
    chat = client.chat.completions
    chat.create(model="gpt-4o-mini", messages=MESSAGES)
    chat.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers)
    list(chat.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers))
    no_usage = {**headers, "x-mock-scenario": "no_usage"}  # the estimate path
    list(chat.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=no_usage))
    tool = {"x-mock-tool-call": "get_weather"}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    list(
        chat.create(
            model="gpt-4o-mini", messages=MESSAGES, tools=tools, stream=True, extra_headers=tool
        )
    )
    stream = chat.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers)
    next(stream)
    del stream  # abandoned
    collect()
    client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT, extra_headers=headers)
    client.embeddings.create(model="text-embedding-3-small", input=PROMPT, extra_headers=headers)
    spans = 8
    if hasattr(client, "responses") and not azure:
        client.responses.create(model="gpt-4o-mini", input=PROMPT, extra_headers=headers)
        list(client.responses.create(model="gpt-4o-mini", input=PROMPT, stream=True))
        spans += 2
    for stream in (False, True):
        with pytest.raises(openai.AuthenticationError):
            result = chat.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=stream,
                extra_headers={**headers, "x-mock-scenario": "http_error:401"},
            )
            list(result)
    return spans + 2


def echoed_errors(client: Any, azure: bool) -> int:
    """401s whose body echoes the credentials sent: the client's, then per-request ones."""
    per_request = (
        {"api-key": OTHER_AZURE_KEY} if azure else {"Authorization": f"Bearer {OTHER_TOKEN}"}
    )
    expected = (AZURE_KEY, OTHER_AZURE_KEY) if azure else (API_KEY, OTHER_TOKEN)
    for headers, secret in zip(({}, per_request), expected, strict=True):
        for stream in (False, True):
            with pytest.raises(openai.AuthenticationError) as caught:
                chat = client.chat.completions
                chat.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=stream, extra_headers=headers
                )
            assert secret in str(caught.value)  # the user's exception is the SDK's, untouched
    return 4


def as_json(record: Any) -> str:
    """A finished log record as JSON (newer SDKs hand out readable records; older ones
    `LogData` wrapping the SDK's own record)."""
    readable = record if hasattr(record, "to_json") else record.log_record
    text: str = readable.to_json()
    return text


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every record but the SDK's and its HTTP library's (theirs exist without us; old
    openai releases print the Azure `api-key` header in their debug logs)."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    ours = [r for r in caplog.records if r.name.split(".")[0] not in SDK_LOGGERS]
    return "\n".join(formatter.format(r) for r in ours)


@pytest.mark.parametrize(("content", "estimate", "timing"), COMBINATIONS)
def test_no_key_or_credential_header_appears_in_any_span_event_metric_or_log(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    logs: InMemoryLogRecordExporter,
    logger_provider: LoggerProvider,
    caplog: pytest.LogCaptureFixture,
    content: str,
    estimate: str,
    timing: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger
    instrument(
        capture_message_content=content,
        usage_estimate=estimate,
        chunk_timing=timing,
        logger_provider=logger_provider,
    )
    expected = 0
    for kind in ("openai", "azure"):
        client = make_client(server, kind)
        expected += calls(client, kind == "azure")
        client.close()
        client = echo_client(kind, server)
        expected += echoed_errors(client, kind == "azure")
        client.close()
    gc.collect()
    assert server.requests  # what the server saw: the credentials were really sent
    assert any(r.headers.get("api-key") == OTHER_AZURE_KEY for r in server.requests)
    assert any(r.headers.get("authorization") == f"Bearer {OTHER_TOKEN}" for r in server.requests)

    spans = telemetry.spans()
    assert len(spans) == expected
    span_json = [span.to_json() for span in spans]
    data = telemetry.reader.get_metrics_data()
    metric_json = data.to_json() if data else ""
    events = logs.get_finished_logs()
    event_json = [as_json(record) for record in events]
    logged = log_text(caplog)

    for secret in SECRETS:
        for text in span_json:
            assert secret not in text
        assert secret not in metric_json
        assert secret not in logged
        for text in event_json:
            assert secret not in text
    everything = "\n".join([*span_json, metric_json, *event_json, logged])
    assert MARKER not in everything

    # Not vacuous: the scanned texts hold what they should.
    assert caplog.records
    assert "gen_ai.client.token.usage" in metric_json
    echoed = [t for t in span_json if "You sent" in t]  # the echoing proxy's 401s
    assert len(echoed) == 8 and all("[REDACTED]" in t for t in echoed)
    on_span = content in ("span_only", "span_and_event")
    in_event = content in ("event_only", "span_and_event")
    assert any(PROMPT in t for t in span_json) is on_span
    assert bool(events) is in_event
    if in_event:
        assert any(PROMPT in t for t in event_json)
    if content == "no_content":
        assert PROMPT not in everything
    if estimate == "compare":
        assert any("openai_usage.estimate.input_tokens" in t for t in span_json)


# An Entra ID token is a JWT: its header and its payload are base64 of JSON objects.
JWT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJQUk9WSURFRC1TRUNSRVQifQ.c2lnbmF0dXJl"
# A provider's token of no known shape: only the request that sent it, or a text that echoes
# it as a header, can tell it.
OPAQUE_TOKEN = "opaque-PROVIDED-SECRET-token"


@pytest.mark.parametrize("token", [JWT_TOKEN, OPAQUE_TOKEN], ids=["jwt", "opaque"])
def test_a_token_from_an_azure_ad_token_provider_is_scrubbed_from_error_texts(
    instrument: Any, telemetry: Telemetry, server: LocalOpenAIServer, token: str
) -> None:
    # The SDK asks the provider for each request and keeps the token nowhere on the client:
    # it is known from the request the SDK sent, where the error holds that request with its
    # headers, from its shape (a JWT), and from the text echoing it as a header.
    instrument()
    client = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        api_version="2024-10-21",
        azure_ad_token_provider=lambda: token,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(echo_handler)),
    )
    for stream in (False, True):
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=stream)
        assert token in str(raised.value)  # the caller's own exception is unchanged
    # (openai 3.63 keeps in its error a request without the headers it sent: there the opaque
    # token is told by the text itself, which echoes it once as `Bearer <token>`.)
    spans = telemetry.spans()
    assert len(spans) == 2
    for span in spans:
        assert token not in span.to_json() and MARKER not in span.to_json()
        assert "[REDACTED]" in (span.status.description or "")
    client.close()


def echo_everything_handler(request: Any) -> Any:
    """A gateway that refuses the call and echoes its URL and every header, bare."""
    headers = ", ".join(f"{name}={value}" for name, value in request.headers.items())
    message = f"Refused {request.url} with headers {headers}"
    body = {"error": {"message": message, "type": "invalid_request_error", "code": "refused"}}
    return HTTP.Response(400, json=body)


GATEWAY_SECRETS = {
    "query key": "qkey-SECRET-1122334455",
    "query sig": "qsig-SECRET-5544332211",
    "subscription key": "apim-SECRET-6677889900",
    "x-api-key": "xkey-SECRET-0099887766",
    "per-request token": "tok-SECRET-1357924680",
    "session cookie": "sess-SECRET-2468013579",
    "pass header": "pass-SECRET-1029384756",
    "query pwd": "pwd-SECRET-5647382910",
}


@pytest.mark.parametrize("stream", [False, True])
def test_gateway_credentials_in_query_parameters_and_key_headers_are_scrubbed(
    instrument: Any, telemetry: Telemetry, stream: bool
) -> None:
    # Azure API Management's `Ocp-Apim-Subscription-Key`, a gateway's `?key=` or `?sig=`:
    # the call's credentials as much as an `Authorization` header, echoed bare by an error.
    instrument()
    secret = GATEWAY_SECRETS
    client = served_by(
        echo_everything_handler,
        default_query={"key": secret["query key"], "pwd": secret["query pwd"]},
        default_headers={
            "Ocp-Apim-Subscription-Key": secret["subscription key"],
            "X-Gateway-Pass": secret["pass header"],
            "x-api-key": secret["x-api-key"],
            "Cookie": f"theme=dark; session={secret['session cookie']}",
        },
    )
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=stream,
            extra_query={"sig": secret["query sig"]},
            extra_headers={"x-custom-token": secret["per-request token"]},
        )
    for value in secret.values():
        assert value in str(raised.value)  # the caller's own exception is unchanged
    text = telemetry.span().to_json()
    assert "Refused" in text and "[REDACTED]" in text
    for value in secret.values():
        assert value not in text
    assert MARKER not in text
    client.close()


@pytest.mark.parametrize("stream", [False, True])
def test_credentials_in_the_base_urls_user_info_are_scrubbed_as_the_basic_token_sent(
    instrumented: Any, telemetry: Telemetry, stream: bool
) -> None:
    # `https://user:password@gateway/v1`: the HTTP library sends them as `Authorization:
    # Basic base64(user:password)` (in place of the key's bearer), which a gateway echoes.
    password = "pw-SECRET-in-the-url-8642"
    client = openai.OpenAI(
        base_url=f"http://gateway-user:{password}@served.invalid/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(echo_everything_handler)),
    )
    basic = base64.b64encode(f"gateway-user:{password}".encode()).decode()
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=stream)
    assert basic in str(raised.value)  # the caller's own exception is unchanged
    text = telemetry.span().to_json()
    assert "Refused" in text and "[REDACTED]" in text
    assert basic not in text and password not in text and MARKER not in text
    client.close()


@pytest.mark.parametrize("stream", [False, True])
def test_basic_credentials_of_the_http_clients_auth_are_scrubbed_as_echoed(
    instrumented: Any, telemetry: Telemetry, stream: bool
) -> None:
    # `http_client=Client(auth=(user, password))`: the HTTP library adds `Authorization:
    # Basic base64(user:password)` as it sends (openai 3.x's errors keep no such header). A
    # gateway echoes the header, its token bare, or the password it decoded.
    password = "pw-SECRET-of-the-http-auth-9753"

    def handler(request: Any) -> Any:
        header = request.headers["authorization"]
        token = header.split()[-1]
        message = f"Refused {header!r}: token {token} (user gateway-user, password {password})"
        return HTTP.Response(401, json={"error": {"message": message, "type": "auth"}})

    client = openai.OpenAI(
        base_url="http://served.invalid/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=HTTP.Client(
            auth=HTTP.BasicAuth("gateway-user", password), transport=HTTP.MockTransport(handler)
        ),
    )
    basic = base64.b64encode(f"gateway-user:{password}".encode()).decode()
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=stream)
    assert basic in str(raised.value) and password in str(raised.value)  # the caller's own
    text = telemetry.span().to_json()
    assert "Refused" in text and "gateway-user" in text
    assert basic not in text and password not in text
    client.close()


def test_the_word_basic_in_an_error_does_not_scrub_the_word_after_it() -> None:
    # Only a token that decodes to `user:password` is taken for Basic credentials.
    text = "Basic tier: basic requests are limited; see Basic Authentication."
    assert redact(text, ()) == text
    token = base64.b64encode(b"someone:pw-SECRET-42").decode()
    assert redact(f"got Basic {token}", ()) == "got Basic [REDACTED]"


@pytest.mark.skipif(not hasattr(openai.OpenAI, "responses"), reason="no Responses API")
@pytest.mark.parametrize("stream", [False, True])
def test_credentials_given_to_an_mcp_tool_are_scrubbed_from_an_error_quoting_the_tool(
    instrumented: Any, telemetry: Telemetry, stream: bool
) -> None:
    # A Responses MCP tool carries its server's credentials in the request body (an OAuth
    # `authorization`, `headers`, a key in `server_url`); an error about the tool quotes it.
    def handler(request: Any) -> Any:
        tool = json.loads(request.content)["tools"][0]
        message = f"Error retrieving tool list from MCP server: {tool}"
        return HTTP.Response(424, json={"error": {"message": message, "type": "mcp"}})

    tool = {
        "type": "mcp",
        "server_label": "crm",
        "server_url": "https://mcp.example.com/sse?apikey=url-SECRET-5566",
        "authorization": "oauth-SECRET-token-1122",
        "headers": {"X-Team-Pass": "team-SECRET-3344"},
        "require_approval": "never",
    }
    client = served_by(handler)
    with pytest.raises(openai.APIStatusError) as raised:
        client.responses.create(model="gpt-4o-mini", input=PROMPT, tools=[tool], stream=stream)
    assert "oauth-SECRET-token-1122" in str(raised.value)  # the caller's exception, unchanged
    text = telemetry.span().to_json()
    assert "server_label" in text and "[REDACTED]" in text
    assert MARKER not in text
    client.close()


@pytest.mark.parametrize("organization", [None, "org-AbCdEfGhIjKlMnOpQrStUvWx", "acme-team"])
def test_organization_and_project_ids_a_servers_error_names_are_scrubbed(
    instrumented: Any, telemetry: Telemetry, organization: str | None
) -> None:
    # The service's errors name the organization ("Rate limit reached for gpt-4o in
    # organization org-..."): the client's, or the key's own when the client set none.
    def handler(request: Any) -> Any:
        org = request.headers.get("openai-organization") or "org-TheKeysOwnOrganization1"
        project = request.headers.get("openai-project")
        message = f"Rate limit reached in organization {org} (project {project}) on tokens."
        body = {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}
        return HTTP.Response(429, json=body)

    project = "proj_ZyXwVuTsRqPoNmLkJiHgFeDc"
    client = served_by(handler, organization=organization, project=project)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert project in str(raised.value)  # the caller's own exception is unchanged
    text = telemetry.span().to_json()
    assert "Rate limit reached in organization [REDACTED] (project [REDACTED])" in text
    for secret in (organization or "org-TheKeysOwnOrganization1", project):
        assert secret not in text
    client.close()


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_a_key_read_with_its_line_break_is_scrubbed_from_the_http_librarys_refusal(
    instrumented: Any, telemetry: Telemetry, server: LocalOpenAIServer, kind: str
) -> None:
    # A key read from a file keeps its "\n": the HTTP library refuses the header, quoting
    # its value, key and all, in the error the SDK's `APIConnectionError` is raised from.
    key = "0123456789abcdef-SECRET-0123456789\n"  # no key shape: only knowing it scrubs it
    if kind == "azure":
        client: Any = openai.AzureOpenAI(
            azure_endpoint=server.azure_endpoint,
            api_key=key,
            api_version="2024-10-21",
            max_retries=0,
        )
    else:
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.APIConnectionError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert key.strip() in repr(raised.value.__cause__)  # the caller's own, unchanged
    assert MARKER not in telemetry.span().to_json()
    client.close()


# -- content a server's error quotes ------------------------------------------------------------

# Quoted by the server through repr(): the line breaks and the quote come back escaped.
CARD = "Diagnóstico de María:\nMy card number is 4111 1111 1111 1111, it's 'urgent'"


def quotes(error_text: str, text: str) -> bool:
    once = repr(text)[1:-1]
    twice = once.replace("\\", "\\\\").replace("'", "\\'")  # in a dict's repr()
    return once in error_text or twice in error_text


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("kind", ["openai", "async"])
async def test_prompt_quoted_by_a_servers_error_is_scrubbed_unless_content_is_captured(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    stream: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"x-mock-scenario": "echo_error"}
    messages = [{"role": "user", "content": CARD}]
    for capture in ("no_content", "event_only", "span_only"):
        instrument(capture_message_content=capture)
        telemetry.exporter.clear()
        client = make_client(server, kind)
        with pytest.raises(openai.BadRequestError) as raised:
            result = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=stream, extra_headers=headers
            )
            if kind == "async":
                await result
        # The server quotes it through repr(); older SDKs show the error body as a dict's
        # repr(), which escapes it once more.
        error_text = str(raised.value)
        assert quotes(error_text, CARD)  # the caller's exception is the SDK's, unchanged
        assert quotes(error_text, CARD[:40])  # and quotes it cut, too
        span = telemetry.span()
        text = span.to_json()
        assert span.attributes["error.type"] == "BadRequestError"
        if capture != "span_only":  # content in events only is no reason to put it on a span
            # Pieces no timestamp, port or request id can hold by chance ("4111" alone once
            # matched a span's start time).
            for piece in ("4111 1111", "card number", "Diagn", "urgent"):
                assert piece not in text, (capture, piece)
            assert "Invalid value for " in (span.status.description or "")  # the server's words
            assert "messages[0].content" in (span.status.description or "")
            assert "[content]" in text
        else:  # captured on the span anyway: the error keeps its full text
            assert quotes(span.status.description or "", CARD)
        if kind == "async":
            await client.close()
        else:
            client.close()
    assert "4111 1111" not in log_text(caplog)


@pytest.mark.skipif(
    "prediction" not in inspect.signature(openai.resources.chat.Completions.create).parameters,
    reason="`prediction` arrived in openai 1.55",
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_predicted_output_quoted_by_a_servers_error_is_scrubbed(
    instrumented: Any, telemetry: Telemetry, stream: bool
) -> None:
    # `prediction` holds content (the file being edited): a compatible server's validation
    # error quoting it (pydantic's `input_value=...`) must not put it on the span.
    def handler(request: Any) -> Any:
        prediction = json.loads(request.content)["prediction"]
        message = f"prediction: Input should be a valid dictionary [input_value={prediction!r}]"
        return HTTP.Response(400, json={"error": {"message": message, "type": "invalid"}})

    code = "def charge(card='4111 1111 1111 1111'):\n    return gateway.charge(card)"
    client = served_by(handler)
    for content in (code, [{"type": "text", "text": code}]):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=stream,
                prediction={"type": "content", "content": content},
            )
        assert "4111 1111" in str(raised.value)  # the caller's exception is unchanged
    for span in telemetry.spans():
        assert "input_value=" in (span.status.description or "")  # the server's words
        assert "4111 1111" not in span.to_json() and "gateway.charge" not in span.to_json()
    client.close()


def test_a_legacy_completions_suffix_quoted_by_a_servers_error_is_scrubbed(
    instrumented: Any, telemetry: Telemetry
) -> None:
    # A legacy completion's `suffix` is content (the text after the insertion point, the
    # rest of the file being edited, say): a server's error quoting it must not reach the span.
    def handler(request: Any) -> Any:
        suffix = json.loads(request.content)["suffix"]
        message = f"suffix is not supported for this model [input_value={suffix!r}]"
        return HTTP.Response(400, json={"error": {"message": message, "type": "invalid"}})

    suffix = "\n    return gateway.charge(card='4111 1111 1111 1111')"
    client = served_by(handler)
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="def f():", suffix=suffix)
    assert "4111 1111" in str(raised.value)  # the caller's exception is unchanged
    span = telemetry.span()
    assert "input_value=" in (span.status.description or "")  # the server's words
    assert "4111 1111" not in span.to_json() and "gateway.charge" not in span.to_json()
    client.close()


def test_error_scrubbing_takes_content_only_never_the_shape_of_the_request() -> None:
    request = {
        "messages": [
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello there"}]}
        ],
        "input": [{"role": "user", "type": "message", "content": "A question of mine"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    }
    texts = request_texts(request)
    assert sorted(texts) == ["A question of mine", "Hello there", "Weather for a city"]
    message = (
        "Invalid value: 'output_text' for role assistant: expected an object, but got a"
        " string instead (get_weather), input 'A question of mine'."
    )
    scrubbed = without_content(message, texts)
    assert scrubbed == (
        "Invalid value: 'output_text' for role assistant: expected an object, but got a"
        " string instead (get_weather), input '[content]'."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Token eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJjb2duaXRpdmUifQ.c2ln-_x refused",
         "Token [REDACTED] refused"),
        ("unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. ok", "unsigned [REDACTED] ok"),
        # Not JWTs: a word starting "eyJ", one segment, a payload that is no JSON object.
        ("eyJ is odd. eyJhbGc.notjwt and eyJhbGc.abc.def", None),
    ],
)  # fmt: skip
def test_a_jwt_echoed_bare_is_redacted_by_its_shape_and_other_text_is_kept(
    text: str, expected: str | None
) -> None:
    # An Entra ID token an `azure_ad_token_provider` made for one request is known to no
    # setting; an error that echoes it with no request at hand is caught by its shape.
    assert redact(text, ()) == (text if expected is None else expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Key opaque-token-123 refused; you sent 'Bearer opaque-token-123'",
         "Key [REDACTED] refused; you sent 'Bearer [REDACTED]'"),
        ("headers {'api-key': 'k3y-of-the-gateway'} and then k3y-of-the-gateway again",
         "headers {'[REDACTED]'} and then [REDACTED] again"),
        # A value never shown as a credential, or one too short to look for, stays.
        ("Key opaque-token-123 refused", None),
        ("Bearer short, short", "[REDACTED], short"),
    ],
)  # fmt: skip
def test_a_credential_the_text_echoes_as_a_header_is_redacted_wherever_it_is_quoted(
    text: str, expected: str | None
) -> None:
    # A token made for one request, which the SDK's error no longer holds (openai 3.63),
    # is still known to the text that echoes the header it came in.
    assert redact(text, ()) == (text if expected is None else expected)


def test_a_quote_of_the_start_of_a_huge_prompt_is_scrubbed() -> None:
    # Servers quote the start of what they reject: that part of a 1 MB prompt is looked at.
    prompt = "".join(f"line {i}: some words of the prompt\n" for i in range(30_000))
    message = f"Invalid value for 'messages[0].content': {prompt[:200]!r}..."
    scrubbed = without_content(message, [prompt])
    assert scrubbed == "Invalid value for 'messages[0].content': '[content]'..."


# -- bounded values ----------------------------------------------------------------------------

HUGE_MODEL = "m" * 10_000
STOPS = [f"stop-{i}-" + "s" * 300 for i in range(10_000)]
HUGE_MESSAGE = "word " * 200_000  # 1 MB


COMPACT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}


def check_bounded(attributes: dict[str, Any], where: str) -> None:
    for key, value in attributes.items():
        limit = DEFAULT_MAX_CONTENT_LENGTH if key in CONTENT_KEYS else MAX_ATTRIBUTE_LENGTH
        if isinstance(value, str):
            assert len(value) <= limit, (where, key, len(value))
        elif isinstance(value, (list, tuple)):
            assert len(value) <= MAX_ATTRIBUTE_ITEMS, (where, key, len(value))
            for item in value:
                assert not isinstance(item, str) or len(item) <= MAX_ATTRIBUTE_LENGTH, (where, key)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_huge_request_parameters_and_content_make_only_bounded_attributes(
    instrument: Any,
    telemetry: Telemetry,
    server: LocalOpenAIServer,
    logs: InMemoryLogRecordExporter,
    logger_provider: LoggerProvider,
    stream: bool,
) -> None:
    """A 10 kB model name, 10,000 stop sequences and a 1 MB message, capture on: every
    attribute of the span, its content event and its metric points stays within the limits
    (256 characters, 128 items; content values within `max_content_length`)."""
    instrument(
        capture_message_content="span_and_event",
        usage_estimate="compare",
        logger_provider=logger_provider,
    )
    client = make_client(server, "openai")
    result = client.chat.completions.create(
        model=HUGE_MODEL,
        messages=[{"role": "user", "content": HUGE_MESSAGE}],
        stop=STOPS,
        stream=stream,
        extra_headers={"x-mock-response-model": "r" * 20_000, "x-mock-chunks": "3"},
    )
    if stream:
        list(result)
    client.close()
    assert len(server.requests[-1].body["stop"]) == 10_000  # all of it was sent

    span = telemetry.span()
    assert span.name == "chat " + "m" * MAX_ATTRIBUTE_LENGTH
    attributes = dict(span.attributes or {})
    check_bounded(attributes, "span")
    assert attributes["gen_ai.request.model"] == "m" * MAX_ATTRIBUTE_LENGTH
    assert attributes["gen_ai.response.model"] == "r" * MAX_ATTRIBUTE_LENGTH
    stops = attributes["gen_ai.request.stop_sequences"]
    assert len(stops) == MAX_ATTRIBUTE_ITEMS
    assert list(stops) == [s[:MAX_ATTRIBUTE_LENGTH] for s in STOPS[:MAX_ATTRIBUTE_ITEMS]]
    captured = attributes["gen_ai.input.messages"]
    assert len(captured) == DEFAULT_MAX_CONTENT_LENGTH  # cut to the limit, and valid JSON
    assert json.loads(captured)[0]["parts"][0]["content"].startswith("word word")
    assert attributes["gen_ai.usage.input_tokens"] > 200_000  # the whole message was billed
    for event in span.events:
        check_bounded(dict(event.attributes or {}), "span event")
    # Two content values, 128 stop sequences and the rest: tens of kB, where the message
    # alone is 1 MB and the stop sequences 3 MB.
    assert len(span.to_json()) < 100_000

    records = logs.get_finished_logs()
    assert len(records) == 1
    event_attributes = dict(records[0].log_record.attributes or {})
    check_bounded(event_attributes, "content event")
    # Structured on the event, cut as on the span: its JSON is as long as the span's text.
    as_text = json.dumps(event_attributes["gen_ai.input.messages"], **COMPACT)
    assert as_text == captured

    points = 0
    for metric in metrics_in(telemetry.reader.get_metrics_data()):
        for point in metric.data.data_points:
            check_bounded(dict(point.attributes or {}), metric.name)
            points += 1
            model = dict(point.attributes or {})["gen_ai.request.model"]
            assert model == "m" * MAX_ATTRIBUTE_LENGTH
    assert points > 0


def test_a_huge_response_id_in_a_stream_is_cut_to_the_attribute_limit(
    instrumented: Any, telemetry: Telemetry
) -> None:
    """A server's 100 kB chunk id: the span's `gen_ai.response.id` is cut to 256 characters,
    as a non-streamed response's is; the caller's chunks keep it whole."""
    huge_id = "i" * 100_000
    chunks = [
        {"id": huge_id, "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        {"id": huge_id, "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
         "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    ]  # fmt: skip
    client = served_by(lambda request: sse_reply(chunks))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert [chunk.id for chunk in stream] == [huge_id]
    client.close()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.response.id"] == "i" * MAX_ATTRIBUTE_LENGTH
    check_bounded(attributes, "span")
