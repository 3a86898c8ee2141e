"""Tests of the local server's Responses API, driven through the real openai SDK.

The instrumentation will meet ``client.responses`` (create, stream, parse) only
through this server in the suite and the demo, so the shapes are checked as the
SDK parses them (``Response``, typed stream events, the ``responses.stream()``
helper), plus raw HTTP where the bytes on the wire are the point.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from typing import Any

import openai
import pydantic
import pytest

from opentelemetry.instrumentation.openai_usage.localserver import (
    DEFAULT_REPLY,
    LocalOpenAIServer,
)

from .conftest import (
    AZURE_API_VERSION,
    MID_STREAM_CONNECTION_ERRORS,
    is_azure,
    make_client,
    sdk_has_responses,
)

if not sdk_has_responses():  # openai < 1.66 has no Responses API
    pytest.skip("this openai release has no Responses API", allow_module_level=True)

pytestmark = pytest.mark.timeout(30)

INSTRUCTIONS = "You are terse."
INPUT = "Say hello to the world"
# As chat counts [system, user]: 3 + (4 + 3) + (4 + 5); the default reply has 6 words.
INPUT_TOKENS = 19
REPLY_WORDS = 6
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * REPLY_WORDS,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
TOOL_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    *["response.function_call_arguments.delta"] * 6,
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]
USAGE = {
    "input_tokens": INPUT_TOKENS,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": REPLY_WORDS,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": INPUT_TOKENS + REPLY_WORDS,
}


class Person(pydantic.BaseModel):
    name: str
    age: int
    score: float
    member: bool
    tags: list[str]


class Team(pydantic.BaseModel):
    lead: Person
    deputy: Person | None
    size: int


@pytest.fixture(autouse=True)
def fresh(server: LocalOpenAIServer) -> None:
    """The session server, with this test's requests only."""
    server.clear()


def create(client: Any, **kwargs: Any) -> Any:
    """``responses.create`` with this file's defaults (same prompt as the chat tests)."""
    kwargs.setdefault("model", "gpt-4o")
    kwargs.setdefault("input", INPUT)
    kwargs.setdefault("instructions", INSTRUCTIONS)
    return client.responses.create(**kwargs)


# Leaves `input` out of the body, past the SDK's own check for it (openai 1.66 to 1.x).
NO_INPUT: Any = openai.NOT_GIVEN


def scenario(name: str) -> dict[str, str]:
    return {"x-mock-scenario": name}


def raw(
    server: LocalOpenAIServer, body: Any, headers: dict[str, str] | None = None, path: str = ""
) -> tuple[int, bytes]:
    """POST with the stdlib client, to see the exact bytes the server sends."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path or "/v1/responses", data, headers or {})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, payload


def sse(payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event; each must carry both lines."""
    events = []
    for block in filter(None, payload.decode().split("\n\n")):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


# --- non-stream -----------------------------------------------------------------------------


def test_non_stream_response(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    response = create(client)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "gpt-4o-2024-08-06"
    assert abs(response.created_at - time.time()) < 60
    assert response.output_text == DEFAULT_REPLY
    [message] = response.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert (message.role, message.status) == ("assistant", "completed")
    [part] = message.content
    assert part.type == "output_text" and part.annotations == []
    assert response.usage is not None and response.usage.model_dump(exclude_none=True) == USAGE
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.error is None and response.incomplete_details is None
    assert response.instructions == INSTRUCTIONS
    [recorded] = server.requests
    assert recorded.method == "POST" and recorded.path == "/v1/responses"
    assert recorded.body["input"] == INPUT
    assert recorded.usage == USAGE


def test_request_fields_are_echoed(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "name": "f", "parameters": {}, "strict": False}]
    response = create(
        client,
        temperature=0.2,
        top_p=0.5,
        max_output_tokens=50,
        extra_body={"service_tier": "flex"},  # not a parameter of openai 1.66's create
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        previous_response_id="resp_previous",
        store=False,
        truncation="auto",
        metadata={"k": "v"},
    )
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.2, 0.5, 50)
    assert (response.service_tier, response.tool_choice) == ("flex", "required")
    assert response.parallel_tool_calls is False and response.store is False
    assert response.previous_response_id == "resp_previous"
    assert response.truncation == "auto" and response.metadata == {"k": "v"}
    assert [t.to_dict() for t in response.tools] == tools
    default = create(client)
    assert (default.temperature, default.top_p, default.service_tier) == (1.0, 1.0, "default")
    assert (default.tool_choice, default.tools, default.truncation) == ("auto", [], "disabled")
    assert default.parallel_tool_calls is True and default.metadata == {}
    assert default.text is not None and default.text.to_dict()["format"] == {"type": "text"}


def test_raw_field_order(server: LocalOpenAIServer) -> None:
    status, payload = raw(server, {"model": "custom-model", "input": "hi"})
    assert status == 200
    body = json.loads(payload)
    assert list(body)[:5] == ["id", "object", "created_at", "status", "background"]
    assert list(body)[-3:] == ["usage", "user", "metadata"]
    assert body["model"] == "custom-model"  # unknown models are echoed
    [message] = body["output"]
    assert message == {
        "id": message["id"],
        "type": "message",
        "status": "completed",
        "content": [
            {"type": "output_text", "annotations": [], "logprobs": [], "text": DEFAULT_REPLY}
        ],
        "role": "assistant",
    }
    assert list(body["usage"]) == list(USAGE)


@pytest.mark.parametrize("model", ["gpt-5", "o3-mini", "o1"])
def test_reasoning_models_add_a_reasoning_item(client: openai.OpenAI, model: str) -> None:
    response = create(client, model=model)
    assert [o.type for o in response.output] == ["reasoning", "message"]
    assert response.output[0].id.startswith("rs_") and response.output[0].summary == []
    assert response.reasoning is not None and response.reasoning.effort == "medium"
    assert response.output_text == DEFAULT_REPLY
    assert [o.type for o in create(client, model="gpt-4.1").output] == ["message"]


def test_headers_control_reply_model_and_usage(client: openai.OpenAI) -> None:
    headers = {"x-mock-reply": "Bonjour tout le monde", "x-mock-response-model": "my-model"}
    response = create(client, extra_headers=headers)
    assert response.model == "my-model" and response.output_text == "Bonjour tout le monde"
    assert response.usage is not None and response.usage.output_tokens == 4
    usage = {"prompt_tokens": 100, "cached_tokens": 40, "reasoning_tokens": 7}
    response = create(client, extra_headers={"x-mock-usage": json.dumps(usage)})
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.total_tokens) == (100, 100 + REPLY_WORDS)
    assert response.usage.input_tokens_details.cached_tokens == 40
    assert response.usage.output_tokens_details.reasoning_tokens == 7
    usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 9}  # Responses names
    response = create(client, extra_headers={"x-mock-usage": json.dumps(usage)})
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 2)
    assert response.usage.total_tokens == 9
    response = create(client, extra_headers={"x-mock-chunks": "4"})
    assert response.output_text == "w1 w2 w3 w4"
    for bad in ("nope", '{"input_tokens": "x"}', '{"words": 1}'):
        with pytest.raises(openai.BadRequestError):
            create(client, extra_headers={"x-mock-usage": bad})


def test_input_items_are_counted_like_chat_messages(client: openai.OpenAI) -> None:
    items: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "one two"}]},
        {"type": "function_call_output", "call_id": "call_1", "output": "three"},
        {"role": "assistant", "content": "four five six"},
    ]
    response = client.responses.create(model="gpt-4o", input=items)
    assert response.usage is not None
    assert response.usage.input_tokens == 3 + (4 + 2) + (4 + 1) + (4 + 3)


def test_tool_call_non_stream(client: openai.OpenAI) -> None:
    response = create(client, extra_headers={"x-mock-tool-call": "get_weather"})
    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id is not None and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"location": "Paris"}
    assert response.output_text == ""
    assert response.usage is not None and response.usage.output_tokens == 6


@pytest.mark.parametrize(
    "body",
    [{"input": "hi"}, {"model": "gpt-4o"}, {"model": "gpt-4o", "input": 3}, b"{nope", [1]],
)
def test_validation(server: LocalOpenAIServer, body: Any) -> None:
    status, payload = raw(server, body)
    assert status == 400
    assert json.loads(payload)["error"]["type"] == "invalid_request_error"


def test_missing_input_through_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-4o", input=NO_INPUT)
    assert "'input'" in info.value.message


# --- structured output ----------------------------------------------------------------------


def test_parse_with_text_format(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    response = client.responses.parse(model="gpt-4o", input="Who leads?", text_format=Team)
    assert response.output_parsed == Team(
        lead=Person(name="x", age=1, score=1.0, member=True, tags=[]),
        deputy=Person(name="x", age=1, score=1.0, member=True, tags=[]),
        size=1,
    )
    assert server.requests[0].body["text"]["format"]["type"] == "json_schema"
    assert response.text is not None
    assert response.text.to_dict()["format"]["type"] == "json_schema"  # echoed
    assert response.usage is not None
    assert response.usage.output_tokens == len(response.output_text.split())


def test_stream_helper_with_text_format(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o", input="Who?", text_format=Person) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Person(name="x", age=1, score=1.0, member=True, tags=[])


def test_json_object_format(client: openai.OpenAI) -> None:
    response = create(client, text={"format": {"type": "json_object"}})
    assert json.loads(response.output_text) == {}


# --- stream ---------------------------------------------------------------------------------


def test_stream_events(server: LocalOpenAIServer, any_client: Any) -> None:
    events = list(create(any_client, stream=True))
    assert [e.type for e in events] == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(TEXT_EVENTS)))
    created, in_progress = events[0].response, events[1].response
    assert created.status == in_progress.status == "in_progress"
    assert created.usage is None and created.output == []
    item_id = events[2].item.id
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert {(e.item_id, e.output_index, e.content_index) for e in deltas} == {(item_id, 0, 0)}
    assert "".join(e.delta for e in deltas) == DEFAULT_REPLY
    assert events[-4].text == DEFAULT_REPLY and events[-3].part.text == DEFAULT_REPLY
    assert events[-2].item.status == "completed"
    final = events[-1].response
    assert final.id == created.id and final.status == "completed"
    assert final.output_text == DEFAULT_REPLY
    assert final.usage is not None and final.usage.model_dump(exclude_none=True) == USAGE
    expected = "/openai/responses" if is_azure(any_client) else "/v1/responses"
    assert server.requests[0].path == expected


async def test_async_stream_and_non_stream(server: LocalOpenAIServer, any_aclient: Any) -> None:
    response = await create(any_aclient)
    assert response.output_text == DEFAULT_REPLY
    stream = await create(any_aclient, stream=True)
    assert [e.type async for e in stream] == TEXT_EVENTS
    async with any_aclient.responses.stream(model="gpt-4o", input=INPUT) as helper:
        final = await helper.get_final_response()
    assert final.output_text == DEFAULT_REPLY
    assert len(server.requests) == 3


def test_stream_wire_format(server: LocalOpenAIServer) -> None:
    status, payload = raw(server, {"model": "gpt-4o", "input": "hi", "stream": True})
    assert status == 200 and b"[DONE]" not in payload
    events = sse(payload)
    assert [name for name, _ in events] == [data["type"] for _, data in events]
    assert [list(data)[:2] for _, data in events] == [["type", "sequence_number"]] * len(events)
    delta = events[4][1]
    assert list(delta) == [
        "type",
        "sequence_number",
        "item_id",
        "output_index",
        "content_index",
        "delta",
        "logprobs",
        "obfuscation",
    ]
    body = {"model": "gpt-4o", "input": "hi", "stream": True}
    body["stream_options"] = {"include_obfuscation": False}
    _, payload = raw(server, body)
    assert "obfuscation" not in sse(payload)[4][1]


def test_stream_helper_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="o3-mini", input=INPUT) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
    ]
    assert types[4:] == TEXT_EVENTS[2:]
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output_text == DEFAULT_REPLY
    assert final.usage is not None and final.usage.output_tokens == REPLY_WORDS


def test_stream_reasoning_item_comes_first(client: openai.OpenAI) -> None:
    events = list(create(client, model="gpt-5", stream=True))
    assert [e.item.type for e in events if e.type.startswith("response.output_item.")] == [
        "reasoning",
        "reasoning",
        "message",
        "message",
    ]
    assert {e.output_index for e in events if e.type == "response.output_text.delta"} == {1}


def test_stream_tool_call(client: openai.OpenAI) -> None:
    headers = {"x-mock-tool-call": "get_weather"}
    events = list(create(client, stream=True, extra_headers=headers))
    assert [e.type for e in events] == TOOL_EVENTS
    assert events[2].item.name == "get_weather" and events[2].item.arguments == ""
    arguments = "".join(e.delta for e in events if e.type.endswith("arguments.delta"))
    assert json.loads(arguments) == {"location": "Paris"} and events[-3].arguments == arguments
    assert events[-1].response.output[0].call_id == events[2].item.call_id
    with client.responses.stream(model="gpt-4o", input="hi", extra_headers=headers) as stream:
        [call] = stream.get_final_response().output
    assert call.type == "function_call" and call.arguments == arguments


def test_many_chunks_and_delay(client: openai.OpenAI) -> None:
    events = list(create(client, stream=True, extra_headers={"x-mock-chunks": "3000"}))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 3000 and deltas[:2] == ["w1", " w2"]
    assert events[-1].response.usage.output_tokens == 3000
    started = time.monotonic()
    headers = {"x-mock-chunks": "1", "x-mock-chunk-delay-ms": "50"}
    assert len(list(create(client, stream=True, extra_headers=headers))) == 9
    assert time.monotonic() - started >= 0.4  # 8 gaps between 9 events


# --- scenarios ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "exc_type"), [(429, openai.RateLimitError), (500, openai.InternalServerError)]
)
def test_http_error(
    server: LocalOpenAIServer,
    client: openai.OpenAI,
    stream: bool,
    status: int,
    exc_type: type[openai.APIStatusError],
) -> None:
    with pytest.raises(exc_type) as info:
        create(client, stream=stream, extra_headers=scenario(f"http_error:{status}"))
    assert info.value.status_code == status
    assert server.requests[0].usage is None


def test_fail_first_then_retry_succeeds(server: LocalOpenAIServer) -> None:
    client = make_client(server, "openai", max_retries=2)
    headers = {**scenario("fail_first:2"), "x-mock-attempt-key": "responses-1"}
    assert create(client, extra_headers=headers).output_text == DEFAULT_REPLY
    assert [r.usage is None for r in server.requests] == [True, True, False]
    client.close()


@pytest.mark.parametrize("name", ["cut_after", "reset_after"])
def test_cut_and_reset_count_every_event(
    server: LocalOpenAIServer, client: openai.OpenAI, name: str
) -> None:
    received = []
    with pytest.raises(MID_STREAM_CONNECTION_ERRORS):
        for event in create(client, stream=True, extra_headers=scenario(f"{name}:5")):
            received.append(event.type)
    assert received == TEXT_EVENTS[:5]
    assert server.requests[0].usage == USAGE  # what the cut stream would have reported
    with pytest.raises(openai.APIConnectionError):
        create(client, extra_headers=scenario(f"{name}:40"))
    assert create(client).output_text == DEFAULT_REPLY  # the server keeps serving


def test_sse_error_after(client: openai.OpenAI) -> None:
    events = list(create(client, stream=True, extra_headers=scenario("sse_error_after:6")))
    error = events[-1]  # the SDK yields the error event, it does not raise
    if error.type is None:  # openai 1.66 to 1.x: untyped, as {"event": "error", "data": ...}
        assert getattr(error, "event", None) == "error"
        fields = error.to_dict()["data"]
    else:
        assert isinstance(error, openai.types.responses.ResponseErrorEvent)
        fields = error.to_dict()
    assert [e.type for e in events[:-1]] == TEXT_EVENTS[:6]
    assert (fields["type"], fields["code"], fields["sequence_number"]) == (
        "error",
        "server_error",
        6,
    )
    assert fields["message"] == "The server had an error while processing your request."
    with client.responses.stream(
        model="gpt-4o", input="hi", extra_headers=scenario("sse_error_after:6")
    ) as stream:
        last = [e for e in stream][-1]
        assert "error" in (last.type, getattr(last, "event", None))
        with pytest.raises(RuntimeError):  # no response.completed
            stream.get_final_response()


def test_malformed_after(client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's SSE decoder
        for event in create(client, stream=True, extra_headers=scenario("malformed_after:5")):
            received.append(event.type)
    assert received == TEXT_EVENTS[:5]
    with pytest.raises(ValueError):  # a non-stream body that is not JSON
        create(client, extra_headers=scenario("malformed_after:0"))


def test_no_usage(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    events = list(create(client, stream=True, extra_headers=scenario("no_usage")))
    assert [e.type for e in events] == TEXT_EVENTS
    assert events[-1].response.usage is None
    assert create(client, extra_headers=scenario("no_usage")).usage is None
    assert server.requests[0].usage == USAGE  # what it would have reported


def test_incomplete(client: openai.OpenAI) -> None:
    events = list(create(client, stream=True, extra_headers=scenario("incomplete")))
    assert [e.type for e in events] == [*TEXT_EVENTS[:-1], "response.incomplete"]
    assert events[-2].item.status == "incomplete"
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.usage is not None and final.usage.output_tokens == REPLY_WORDS
    response = create(client, extra_headers=scenario("incomplete"))
    assert response.status == "incomplete" and response.usage is not None
    assert response.output_text == DEFAULT_REPLY


def test_failed(server: LocalOpenAIServer, client: openai.OpenAI) -> None:
    events = list(create(client, stream=True, extra_headers=scenario("failed")))
    assert [e.type for e in events] == [*TEXT_EVENTS[:-4], "response.failed"]
    final = events[-1].response
    assert final.status == "failed" and final.usage is None
    assert final.error is not None and final.error.code == "server_error"
    response = create(client, extra_headers=scenario("failed"))
    assert response.status == "failed" and response.usage is None and response.output == []
    assert server.requests[0].usage == USAGE
    with client.responses.stream(
        model="gpt-4o", input="hi", extra_headers=scenario("failed")
    ) as stream:
        assert [e.type for e in stream][-1] == "response.failed"


def test_endings_are_for_the_responses_api_only(client: openai.OpenAI) -> None:
    for name in ("incomplete", "failed"):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers=scenario(name),
            )


def test_usage_nulls(client: openai.OpenAI) -> None:
    response = create(client, extra_headers=scenario("usage_nulls"))
    assert response.usage is not None and response.usage.output_tokens is None
    assert "input_tokens_details" not in response.usage.to_dict()
    events = list(create(client, stream=True, extra_headers=scenario("usage_nulls")))
    assert events[-1].response.usage.output_tokens is None


def test_error_body_200_and_reject_stream_options(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIError):
        list(create(client, stream=True, extra_headers=scenario("error_body_200")))
    headers = scenario("reject_stream_options")
    with pytest.raises(openai.BadRequestError):
        options = {"stream_options": {"include_obfuscation": False}}  # not in 1.66's create
        create(client, stream=True, extra_body=options, extra_headers=headers)
    assert len(list(create(client, stream=True, extra_headers=headers))) == len(TEXT_EVENTS)


def test_hang_and_slow_headers(client: openai.OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        create(client, stream=True, timeout=0.5, extra_headers=scenario("hang"))
    assert time.monotonic() - started < 5
    started = time.monotonic()
    assert create(client, extra_headers=scenario("slow_headers:300")).status == "completed"
    assert time.monotonic() - started >= 0.3


# --- Azure ----------------------------------------------------------------------------------


def test_azure_paths(server: LocalOpenAIServer) -> None:
    deployment = make_client(server, "azure", azure_deployment="my-deployment")
    assert create(deployment, model="gpt-5").output_text == DEFAULT_REPLY
    recorded = server.requests[-1]
    assert recorded.path == "/openai/responses"  # not under /deployments: model in the body
    assert recorded.query == {"api-version": AZURE_API_VERSION}
    deployment.close()
    v1 = openai.OpenAI(base_url=f"{server.azure_endpoint}/openai/v1/", api_key="k", max_retries=0)
    assert create(v1).output_text == DEFAULT_REPLY
    assert server.requests[-1].path == "/openai/v1/responses"
    v1.close()
    status, payload = raw(server, {"input": "x"}, path="/openai/deployments/gpt-4o/responses")
    body = json.loads(payload)
    assert status == 200 and body["model"] == "gpt-4o-2024-08-06"  # the deployment's model
    assert list(body) == sorted(body)  # Azure sends keys sorted


def test_cli_serves_responses() -> None:
    """``python -m ...localserver`` runs the package's module, so Responses errors map."""
    module = "opentelemetry.instrumentation.openai_usage.localserver"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().split()[-1]
        client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
        assert create(client).output_text == DEFAULT_REPLY
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="gpt-4o", input=NO_INPUT)
        client.close()
    finally:
        proc.kill()
        proc.wait()
