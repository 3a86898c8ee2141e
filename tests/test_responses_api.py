"""The Responses API: `responses.create` (streamed or not), the `responses.stream()` helper
and `responses.parse`, sync and async, through the real SDK against the local server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from opentelemetry.instrumentation.openai_usage import errors

from .conftest import (
    HTTP,
    OPENAI_MAJOR,
    Telemetry,
    collect,
    completed_response,
    is_azure,
    needs_responses,
    served_by,
)

pytestmark = needs_responses

TOKEN_USAGE = "gen_ai.client.token.usage"
INPUT = "What's 1+1? Answer in one word."


def request(**kwargs: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "input": INPUT, **kwargs}


def check_span(telemetry: Telemetry, client: Any, response: Any, stream: bool) -> dict[str, Any]:
    """The span of one Responses call carries the billed usage of `response`."""
    span = telemetry.span()
    assert span.name == "chat gpt-4o-mini"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    # The `openai.*` attributes are OpenAI's flavour of the conventions, not Azure's.
    assert attributes.get("openai.api.type") == (None if is_azure(client) else "responses")
    assert attributes["gen_ai.provider.name"] == (
        "azure.ai.openai" if is_azure(client) else "openai"
    )
    assert attributes["gen_ai.response.id"] == response.id
    assert attributes["gen_ai.response.model"] == response.model
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    usage = response.usage
    assert attributes["gen_ai.usage.input_tokens"] == usage.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert attributes["gen_ai.usage.total_tokens"] == usage.total_tokens
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == (
        usage.input_tokens_details.cached_tokens
    )
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == (
        usage.output_tokens_details.reasoning_tokens
    )
    assert attributes["openai_usage.usage.source"] == "response"
    if stream:
        assert attributes["gen_ai.request.stream"] is True
        assert attributes["openai_usage.stream.outcome"] == "completed"
        assert "openai_usage.stream.include_usage_injected" in attributes
    points = {p.attributes["gen_ai.token.type"]: p.sum for p in telemetry.points(TOKEN_USAGE)}
    assert points == {"input": usage.input_tokens, "output": usage.output_tokens}
    return attributes


def test_response_records_billed_usage(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    response = any_client.responses.create(**request(max_output_tokens=50, temperature=0.2))
    attributes = check_span(telemetry, any_client, response, stream=False)
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert response.output_text


async def test_async_response_records_billed_usage(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    response = await any_aclient.responses.create(**request())
    check_span(telemetry, any_aclient, response, stream=False)


def test_response_stream_records_usage_from_response_completed(
    instrumented: Any, telemetry: Telemetry, any_client: Any
) -> None:
    stream = any_client.responses.create(**request(stream=True))
    assert isinstance(stream, openai.Stream)
    events = list(stream)
    assert events[-1].type == "response.completed"
    check_span(telemetry, any_client, events[-1].response, stream=True)


async def test_async_response_stream_records_usage_from_response_completed(
    instrumented: Any, telemetry: Telemetry, any_aclient: Any
) -> None:
    stream = await any_aclient.responses.create(**request(stream=True))
    assert isinstance(stream, openai.AsyncStream)
    events = [e async for e in stream]
    check_span(telemetry, any_aclient, events[-1].response, stream=True)


def test_responses_stream_helper_is_traced_once(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with client.responses.stream(**request()) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    check_span(telemetry, client, final, stream=True)


async def test_async_responses_stream_helper_is_traced_once(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    async with aclient.responses.stream(**request()) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    check_span(telemetry, aclient, final, stream=True)


class Answer(BaseModel):
    answer: str


def test_responses_parse_is_traced(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    response = client.responses.parse(**request(), text_format=Answer)
    assert isinstance(response.output_parsed, Answer)
    attributes = check_span(telemetry, client, response, stream=False)
    assert attributes["gen_ai.output.type"] == "json"


async def test_async_responses_parse_is_traced(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    response = await aclient.responses.parse(**request(), text_format=Answer)
    assert isinstance(response.output_parsed, Answer)
    check_span(telemetry, aclient, response, stream=False)


def test_response_stream_closed_early_is_estimated_as_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The server generated (and bills) the whole reply; the caller read part of it.
    stream = client.responses.create(
        **request(stream=True), extra_headers={"x-mock-reply": "one two three four five six"}
    )
    seen = []
    for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta" and len(seen) > 6:
            break
    stream.close()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.response.id"] == seen[0].response.id
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["openai_usage.usage.lower_bound"] is True


def _responses_stream_of(kinds: tuple[str, ...]) -> Any:
    """A client whose Responses stream sends one output item of each kind (a function
    call, or a message saying "Hello there"), then `response.completed`, without usage."""
    response = {"id": "resp_items", "object": "response", "created_at": 1, "output": []}
    response = {**response, "model": "gpt-4o-mini", "status": "in_progress"}
    events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": response})]
    for index, kind in enumerate(kinds):
        if kind == "function_call":
            item = {"type": kind, "id": f"fc_{index}", "call_id": f"call_{index}"}
            item = {**item, "name": "get_weather", "arguments": "", "status": "in_progress"}
            delta = {"type": "response.function_call_arguments.delta", "delta": '{"city":"Paris"}'}
            done = {**item, "arguments": '{"city":"Paris"}', "status": "completed"}
        else:
            item = {"type": kind, "id": f"msg_{index}", "role": "assistant", "content": []}
            item = {**item, "status": "in_progress"}
            delta = {"type": "response.output_text.delta", "delta": "Hello there"}
            done = {**item, "status": "completed"}
        events.append(("response.output_item.added", {"output_index": index, "item": item}))
        events.append((delta["type"], {"output_index": index, "item_id": item["id"], **delta}))
        events.append(("response.output_item.done", {"output_index": index, "item": done}))
    events.append(("response.completed", {"response": {**response, "status": "completed"}}))
    body = b"".join(
        f"event: {name}\ndata: {json.dumps({'type': name, 'sequence_number': i, **fields})}\n\n"
        .encode()
        for i, (name, fields) in enumerate(events)
    )  # fmt: skip
    headers = {"content-type": "text/event-stream"}
    return served_by(lambda _: HTTP.Response(200, headers=headers, content=body))


@pytest.mark.parametrize(
    ("kinds", "lower_bound"),
    [(("function_call", "function_call"), True), (("message",), None)],
    ids=["after-a-function-call", "after-the-message"],
)
def test_a_response_stream_left_after_a_finished_function_call_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, kinds: tuple[str, ...], lower_bound: bool | None
) -> None:
    """Left once its first output item was done, before the final event: after a function
    call, parallel calls (or the answer) may follow, generated and billed all the same, so
    the estimate is a lower bound; after a message, the turn's answer, it is exact."""
    client = _responses_stream_of(kinds)
    stream = client.responses.create(**request(stream=True))
    for event in stream:
        if event.type == "response.output_item.done":
            break  # the first call is ready: the caller goes to run it
    stream.close()
    client.close()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes.get("openai_usage.usage.lower_bound") is lower_bound


def test_an_estimate_of_a_response_continuing_a_stored_one_or_in_background_is_a_lower_bound(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The server bills the previous response's turns as input: the estimate cannot see them.
    # The `stream()` helper passes every parameter it was not given as the SDK's `omit`.
    # A background response goes on after its stream is left: its whole output is billed.
    reply = {"x-mock-reply": "one two three four five six"}
    for continued in ({"previous_response_id": "resp_previous"}, {"background": True}, None):
        if continued:
            stream = client.responses.create(
                **request(stream=True, **continued), extra_headers=reply
            )
        else:
            stream = client.responses.stream(**request(), extra_headers=reply).__enter__()
        for event in stream:
            if event.type == "response.output_item.done":
                break  # the whole output read, the final event not yet
        stream.close()
        (span,) = telemetry.spans()
        telemetry.exporter.clear()
        attributes = dict(span.attributes or {})
        assert attributes["openai_usage.usage.source"] == "estimate"
        assert attributes.get("openai_usage.usage.lower_bound") is (True if continued else None)


def test_abandoned_response_stream_ends_its_span(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    stream = client.responses.create(**request(stream=True))
    next(iter(stream))
    del stream
    collect()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "abandoned"


def test_response_stream_broken_mid_way_is_an_error_with_the_sdks_exception(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    headers = {"x-mock-scenario": "cut_after:3"}
    with pytest.raises(Exception) as info:  # the SDK's own, whatever its class
        for _ in client.responses.create(**request(stream=True), extra_headers=headers):
            pass
    span = telemetry.span()
    assert span.status.status_code.name == "ERROR"
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == type(info.value).__name__
    assert attributes["openai_usage.stream.outcome"] == "error"


def test_response_from_a_server_without_usage_is_estimated(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    events = list(
        client.responses.create(
            **request(stream=True), extra_headers={"x-mock-scenario": "no_usage"}
        )
    )
    assert events[-1].response.usage is None
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.usage.input_tokens"] > 0


def test_incomplete_response_reports_length_and_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    events = list(
        client.responses.create(
            **request(stream=True), extra_headers={"x-mock-scenario": "incomplete"}
        )
    )
    assert events[-1].type == "response.incomplete"
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert attributes["openai_usage.usage.source"] == "response"
    assert OPENAI_MAJOR >= 1


async def test_async_response_without_usage_is_estimated_from_its_output(
    instrumented: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI
) -> None:
    response = await aclient.responses.create(
        **request(), extra_headers={"x-mock-scenario": "no_usage", "x-mock-reply": "Two."}
    )
    assert response.usage is None
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "estimate"
    # "Two." is 2 tokens, plus one for the output item (the Responses rule in estimate.py).
    assert attributes["gen_ai.usage.output_tokens"] == 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_response_is_an_error_and_a_failed_stream_counts_what_it_sent(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI, stream: bool
) -> None:
    # `response.failed` raises nothing and carries no usage; its deltas were generated.
    headers = {"x-mock-scenario": "failed", "x-mock-reply": "one two three four five six"}
    result = client.responses.create(**request(stream=stream), extra_headers=headers)
    if stream:
        events = list(result)
        assert events[-1].type == "response.failed"
    else:
        assert result.status == "failed"
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code.name == "ERROR"
    assert attributes["error.type"] == "server_error"  # the response's error code
    assert attributes["gen_ai.response.finish_reasons"] == ("error",)
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "server_error"
    if stream:
        assert attributes["openai_usage.stream.outcome"] == "error"
        assert attributes["openai_usage.usage.source"] == "estimate"
        assert attributes["gen_ai.usage.output_tokens"] >= 6  # the six words it sent


def test_an_error_event_in_a_response_stream_ends_the_span_in_error(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The SDK hands the `error` event on and raises nothing; the call failed all the same.
    headers = {"x-mock-scenario": "sse_error_after:4"}
    events = list(client.responses.create(**request(stream=True), extra_headers=headers))
    last = events[-1]
    # openai 2+ models the event; 1.x hands it on as `{"data": {...}, "event": "error"}`.
    code = last.code if last.type == "error" else last.data["code"]
    assert "error" in (last.type, getattr(last, "event", None))
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code.name == "ERROR"
    assert attributes["error.type"] == code == "server_error"
    assert attributes["openai_usage.stream.outcome"] == "error"


def test_a_response_stream_refused_by_an_error_event_first_has_no_estimated_usage(
    instrumented: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # No response began (a rate limit, say): nothing was billed, as for an HTTP 429.
    headers = {"x-mock-scenario": "sse_error_after:0"}
    events = list(client.responses.create(**request(stream=True), extra_headers=headers))
    assert len(events) == 1
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code.name == "ERROR"
    assert attributes["openai_usage.stream.outcome"] == "error"
    assert "gen_ai.usage.input_tokens" not in attributes
    assert "openai_usage.cost.usd" not in attributes
    assert telemetry.points(TOKEN_USAGE) == []


def test_per_chunk_gaps_of_a_responses_stream_carry_the_calls_metric_attributes(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI
) -> None:
    # The tier that served the call is known at the end (`response.completed`): the gaps,
    # recorded then, are in the same series as the call's duration.
    instrument(chunk_timing="per_chunk")
    with client.responses.create(**request(stream=True)) as stream:
        events = list(stream)
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    (gaps,) = telemetry.points("gen_ai.client.operation.time_per_output_chunk")
    assert dict(gaps.attributes) == dict(duration.attributes)
    assert "openai.response.service_tier" in dict(duration.attributes)
    assert gaps.count == len(events) - 1


def _sse(events: list[tuple[str, dict[str, Any]]]) -> Any:
    """A handler streaming these Responses events (type, fields), numbered in order."""

    def sse(number: int, kind: str, fields: dict[str, Any]) -> bytes:
        data = json.dumps({"type": kind, "sequence_number": number, **fields})
        return f"event: {kind}\ndata: {data}\n\n".encode()

    body = b"".join(sse(number, *event) for number, event in enumerate(events))

    def handler(request: Any) -> Any:
        return HTTP.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return handler


def _streamed_call_then_bare_completion(final_output: list[Any] | None) -> Any:
    """A handler streaming a function call whose `response.completed` leaves out the output
    (`"output": []`, as some servers send, or no `output` at all): the SDK's helper
    rebuilds it from the stream's items, and so must we."""
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather"}
    done = {**call, "arguments": '{"city":"Paris"}', "status": "completed"}
    response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4o-mini"}
    response |= {"output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    final = {**response, "status": "completed", "usage": None}
    if final_output is None:
        del final["output"]
    events = [
        ("response.created", {"response": {**response, "status": "in_progress"}}),
        ("response.output_item.added", {"output_index": 0, "item": {**call, "arguments": ""}}),
        (
            "response.function_call_arguments.delta",
            {"output_index": 0, "item_id": "fc_1", "delta": '{"city":"Paris"}'},
        ),
        ("response.output_item.done", {"output_index": 0, "item": done}),
        ("response.completed", {"response": final}),
    ]
    return _sse(events)


@pytest.mark.parametrize("final_output", [[], None], ids=["empty", "left_out"])
def test_a_completed_event_without_the_streamed_output_keeps_its_function_call(
    instrument: Any, telemetry: Telemetry, final_output: list[Any] | None
) -> None:
    instrument(capture_message_content="span_only")
    client = served_by(_streamed_call_then_bare_completion(final_output))
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    events = list(client.responses.create(**request(stream=True, tools=tools)))
    assert events[-1].type == "response.completed"
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    (message,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert [part["type"] for part in message["parts"]] == ["tool_call"]
    assert message["parts"][0]["name"] == "get_weather"
    assert attributes["openai_usage.usage.source"] == "estimate"  # it reported no usage
    assert attributes["gen_ai.usage.output_tokens"] > 0


@pytest.mark.parametrize("helper", [False, True])
def test_a_response_stream_read_to_its_end_without_its_final_event_is_an_error(
    instrumented: Any, telemetry: Telemetry, helper: bool
) -> None:
    # Cut short cleanly (a proxy's timeout, say): the SDK raises nothing while reading, but
    # the response never finished (the helper's `get_final_response()` raises for it).
    response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4o-mini"}
    response |= {"status": "in_progress", "output": [], "tools": [], "tool_choice": "auto"}
    response |= {"parallel_tool_calls": True}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    at = {"output_index": 0, "item_id": "msg_1", "content_index": 0}
    client = served_by(
        _sse(
            [
                ("response.created", {"response": response}),
                ("response.output_item.added", {"output_index": 0, "item": message}),
                ("response.content_part.added", {**at, "part": part}),
                ("response.output_text.delta", {**at, "delta": "Two", "logprobs": []}),
            ]
        )
    )
    if helper:
        with client.responses.stream(**request()) as stream:
            events = list(stream)
            with pytest.raises(RuntimeError):
                stream.get_final_response()
    else:
        events = list(client.responses.create(**request(stream=True)))
    assert events[-1].type == "response.output_text.delta"
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code.name == "ERROR"
    assert attributes["error.type"] == "unterminated_stream"
    assert attributes["openai_usage.stream.outcome"] == "error"
    assert attributes["openai_usage.usage.source"] == "estimate"
    (point,) = telemetry.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "unterminated_stream"


def test_a_refusal_streamed_then_closed_early_is_counted_and_captured(
    instrument: Any, telemetry: Telemetry
) -> None:
    instrument(capture_message_content="span_only")
    refusal = "I'm sorry, but I can't help with that."
    response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4o-mini"}
    response |= {"status": "in_progress", "output": [], "tools": [], "tool_choice": "auto"}
    response |= {"parallel_tool_calls": True}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
    at = {"output_index": 0, "item_id": "msg_1", "content_index": 0}
    pieces = refusal.split(" ")
    deltas = [piece if i == 0 else " " + piece for i, piece in enumerate(pieces)]
    client = served_by(
        _sse(
            [
                ("response.created", {"response": response}),
                ("response.output_item.added", {"output_index": 0, "item": message}),
                ("response.content_part.added", {**at, "part": {"type": "refusal"}}),
                *[("response.refusal.delta", {**at, "delta": delta}) for delta in deltas],
                ("response.refusal.done", {**at, "refusal": refusal}),
            ]
        )
    )
    stream = client.responses.create(**request(stream=True))
    for event in stream:
        if event.type == "response.refusal.done":
            break
    stream.close()
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.usage.output_tokens"] >= 10  # the refusal's 11 tokens, or so
    (message_out,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert message_out["parts"] == [{"type": "refusal", "content": refusal}]


@pytest.mark.parametrize(("tier", "recorded"), [("auto", None), ("flex", "flex")])
def test_a_responses_request_names_its_service_tier_unless_it_is_auto(
    instrumented: Any, telemetry: Telemetry, client: Any, tier: str, recorded: str | None
) -> None:
    """As for chat: `auto`, the API's default, leaves the tier to the service."""
    import inspect

    if "service_tier" not in inspect.signature(client.responses.create).parameters:
        pytest.skip("this SDK's responses.create has no service_tier parameter")
    client.responses.create(**request(service_tier=tier))
    attributes = telemetry.span().attributes or {}
    assert attributes.get("openai.request.service_tier") == recorded


@pytest.mark.parametrize("conversation", ["conv_68f1c0ffee", {"id": "conv_68f1c0ffee"}])
@pytest.mark.parametrize("stream", [False, True])
def test_a_responses_call_in_a_conversation_records_its_id_on_the_span_only(
    instrumented: Any, telemetry: Telemetry, client: Any, conversation: Any, stream: bool
) -> None:
    """`gen_ai.conversation.id` is conditionally required when available: a Responses
    request names the conversation the service keeps. One value per conversation: never a
    metric attribute."""
    import inspect

    if "conversation" not in inspect.signature(client.responses.create).parameters:
        pytest.skip("this SDK's responses.create has no conversation parameter")
    result = client.responses.create(**request(conversation=conversation, stream=stream))
    if stream:
        list(result)
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.conversation.id"] == "conv_68f1c0ffee"
    for name in ("gen_ai.client.operation.duration", TOKEN_USAGE):
        points = telemetry.points(name)
        assert points and all("gen_ai.conversation.id" not in p.attributes for p in points)


def test_a_responses_call_outside_a_conversation_has_no_conversation_id(
    instrumented: Any, telemetry: Telemetry, client: Any
) -> None:
    client.responses.create(**request())
    assert "gen_ai.conversation.id" not in (telemetry.span().attributes or {})


ODD_USAGE = {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}


def _odd_response(output: Any) -> dict[str, Any]:
    """A completed `Response` whose `output` a broken server sent as it liked."""
    response = {"id": "resp_odd", "object": "response", "created_at": 1, "model": "gpt-4o-mini"}
    response |= {"status": "completed", "output": output, "parallel_tool_calls": True}
    return response | {"tool_choice": "auto", "tools": [], "usage": ODD_USAGE}


def _replying(response: dict[str, Any], stream: bool, final: str = "response.completed") -> Any:
    """A client whose server answers with `response`: as one JSON body, or as a stream of
    its `response.created` (in progress, nothing out yet) and `final` events."""
    if stream:
        created = {**response, "status": "in_progress", "output": [], "usage": None}
        created["error"] = None
        handler = _sse(
            [("response.created", {"response": created}), (final, {"response": response})]
        )
    else:
        body = json.dumps(response).encode()
        handler = lambda _: HTTP.Response(200, content=body)  # noqa: E731
    return served_by(handler)


@pytest.mark.parametrize(
    "output",
    [1.5, True, [{"type": {"odd": 1}, "id": "x"}], [{"type": ["odd"], "id": "x"}]],
    ids=["number", "bool", "type_dict", "type_list"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
# The test's own `to_dict()` of the odd reply: pydantic warns that it does not fit the model.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_a_response_with_an_odd_output_keeps_its_billed_usage_and_cost(
    instrumented: Any,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    output: Any,
    stream: bool,
) -> None:
    """`"output": 1.5`, or an output item whose `type` is an object: the SDK hands it on as
    it came, and the span keeps the billed usage, id, finish reason and cost, with no
    warning of ours."""
    monkeypatch.setattr(errors, "_logged", set())  # each of our warnings is logged once
    client = _replying(_odd_response(output), stream)
    with caplog.at_level(logging.WARNING, "opentelemetry.instrumentation.openai_usage"):
        result = client.responses.create(**request(stream=stream))
        if stream:
            result = [event.response for event in result][-1]
    client.close()
    assert result.to_dict()["output"] == output
    assert [r.getMessage() for r in caplog.records] == []
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.response.id"] == "resp_odd"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.input_tokens"] == 9
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["openai_usage.cost.usd"] > 0


def test_a_streamed_function_call_with_an_odd_output_index_is_still_counted(
    instrumented: Any,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An `output_index` sent as a list (no dict key): the call's arguments are counted for
    the estimate all the same, and nothing of ours warns."""
    monkeypatch.setattr(errors, "_logged", set())  # each of our warnings is logged once
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather"}
    response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4o-mini"}
    response |= {"output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    arguments = '{"city": "Paris", "unit": "celsius", "days": 3}'
    client = served_by(
        _sse(
            [
                ("response.created", {"response": {**response, "status": "in_progress"}}),
                ("response.output_item.added", {"output_index": [0], "item": call}),
                (
                    "response.function_call_arguments.delta",
                    {"output_index": [0], "item_id": "fc_1", "delta": arguments},
                ),
            ]
        )
    )
    with caplog.at_level(logging.WARNING, "opentelemetry.instrumentation.openai_usage"):
        events = list(client.responses.create(**request(stream=True)))
    client.close()
    assert [e.type for e in events][-1] == "response.function_call_arguments.delta"
    assert [r.getMessage() for r in caplog.records] == []
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "estimate"
    assert attributes["gen_ai.usage.output_tokens"] >= 10  # the arguments' 14 tokens, or so


@pytest.mark.parametrize("odd_type", [{"odd": 1}, ["odd"]], ids=["object", "list"])
def test_a_stream_event_whose_type_is_not_text_is_passed_on_without_a_warning(
    instrumented: Any,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    odd_type: Any,
) -> None:
    """An event whose `type` is an object (no hashable key): the caller gets it as the SDK
    made it, the stream's final usage is read, and nothing of ours warns."""
    monkeypatch.setattr(errors, "_logged", set())  # each of our warnings is logged once
    response = _odd_response([])
    created = {**response, "status": "in_progress", "usage": None}
    events = [("response.created", {"response": created}), (odd_type, {"delta": "x"})]
    client = served_by(_sse([*events, ("response.completed", {"response": response})]))
    with caplog.at_level(logging.WARNING, "opentelemetry.instrumentation.openai_usage"):
        received = list(client.responses.create(**request(stream=True)))
    client.close()
    assert [event.type for event in received] == [
        "response.created",
        odd_type,
        "response.completed",
    ]
    assert [r.getMessage() for r in caplog.records] == []
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == 9
    assert attributes["openai_usage.stream.outcome"] == "completed"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_an_error_string_in_a_response_is_the_spans_error_message(
    instrumented: Any, telemetry: Telemetry, stream: bool
) -> None:
    """`"error": "..."` (a string, not the API's object) on a failed response: the span's
    status carries that text, as it does for an error object's message."""
    failed = {**_odd_response([]), "status": "failed", "usage": None}
    failed["error"] = "upstream model crashed"
    client = _replying(failed, stream, final="response.failed")
    result = client.responses.create(**request(stream=stream))
    if stream:
        result = [event.response for event in result][-1]
    client.close()
    assert result.error == "upstream model crashed"
    span = telemetry.span()
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "failed: upstream model crashed"
    assert (span.attributes or {})["error.type"] == "failed"


@pytest.mark.parametrize("kind", ["custom_tool_call", "computer_call", "local_shell_call"])
def test_a_response_that_calls_a_tool_the_caller_runs_finishes_with_tool_calls(
    instrumented: Any, telemetry: Telemetry, kind: str
) -> None:
    # A custom tool, a computer or a shell is the caller's to run, as a function is: the
    # turn stops for it, which chat reports as `tool_calls` (its custom tools' too).
    item = {"id": "it_1", "type": kind, "call_id": "call_1", "status": "completed",
            "name": "sql", "input": "SELECT 1",
            "action": {"type": "exec", "command": ["ls"], "env": {}},
            "pending_safety_checks": []}  # fmt: skip
    body = completed_response(item)
    client = served_by(lambda request: HTTP.Response(200, json=body))
    client.responses.create(model="gpt-5", input="Go")
    attributes = telemetry.span().attributes or {}
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    client.close()
