"""The prompt tokens of requests that offer tools: how the server renders the tool
definitions, the calls in the history and their results, against real billed usage.

Expected numbers marked "billed" are the prompt tokens OpenAI reported for that exact
request (published VCR cassettes, benchmarks/data/published.jsonl.gz); the variants show
what each rule adds or takes away.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pydantic

from opentelemetry.instrumentation.openai_usage.estimate import Encoder, estimate_usage
from opentelemetry.instrumentation.openai_usage.tally import CompletionTally

from . import test_estimate

# test_estimate's fixtures (o200k_base loaded offline), as this module's too.
encoders, o200k = test_estimate.encoders, test_estimate.o200k


def prompt(request: dict[str, Any], enc: Encoder, model: str, operation: str = "chat") -> int:
    """The estimated prompt tokens of `request` (no output: the prompt alone)."""
    usage = estimate_usage(operation, {"model": model, **request}, CompletionTally(), model, enc)
    assert usage.input_tokens is not None
    return usage.input_tokens


def function(name: str, description: str, parameters: dict[str, Any], **more: Any) -> Any:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters, **more},
    }


def responses_function(
    name: str, description: str, parameters: dict[str, Any], strict: bool
) -> dict[str, Any]:
    """A function tool in the Responses API's flat shape."""
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": parameters,
        "strict": strict,
    }


def titled(*names: str, described: bool = False) -> dict[str, Any]:
    """A pydantic model's parameters: every field titled, all required."""
    properties: dict[str, Any] = {}
    for name in names:
        properties[name] = {"title": name.replace("_", " ").title(), "type": "string"}
        if described:
            properties[name]["description"] = f"The {name.replace('_', ' ')}"
    return {"properties": properties, "required": list(names), "type": "object"}


CREWAI_TASK = (
    "\nCurrent Task: {task}\n\nThis is the expected criteria for your final answer: {criteria}\n"
    "you MUST return the actual complete content as the final answer, not a summary.\n\n"
    "This is VERY important to you, your job depends on it!"
)
RESEARCHER = (
    "You are Researcher. You're an expert researcher, specialized in technology, software "
    "engineering, AI and startups. You work as a freelancer and is now working on doing "
    "research and analysis for a new customer.\nYour personal goal is: Make the best research "
    "and analysis on content about AI and AI agents"
)


def test_the_tools_section_is_billed_as_text_after_the_system_message(o200k: Encoder) -> None:
    # crewai 1.15.44, test_task_with_no_arguments (gpt-4.1-mini, 2026-01)
    task = "Look at the available data and give me a sense on the total number of sales."
    user = CREWAI_TASK.format(task=task, criteria="The total number of sales as an integer")
    messages = [{"role": "system", "content": RESEARCHER}, {"role": "user", "content": user}]
    tools = [
        function(
            "return_data",
            "Useful to get the sales related data",
            {"properties": {}, "type": "object"},
        )
    ]
    request = {"messages": messages, "tools": tools, "tool_choice": "auto"}
    assert prompt(request, o200k, "gpt-4.1-mini") == 167  # billed
    # A system text ending in "." merges with the "\n\n" before "# Tools": one token fewer.
    # (crewai's test_task_with_max_execution_time, the same but for a closing ".", was
    # billed exactly so.)
    messages[0] = {"role": "system", "content": RESEARCHER + "."}
    assert prompt(request, o200k, "gpt-4.1-mini") == 167 + 1 - 1


DELEGATE = (
    "Delegate a specific task to one of the following coworkers: Researcher\nThe input to "
    "this tool should be the coworker, the task you want them to do, and ALL necessary "
    "context to execute the task, they know nothing about the task, so share absolutely "
    "everything you know, don't reference things but instead explain them."
)
ASK = (
    "Ask a specific question to one of the following coworkers: Researcher\nThe input to "
    "this tool should be the coworker, the question you have for them, and ALL necessary "
    "context to ask the question properly, they know nothing about the question, so share "
    "absolutely everything you know, don't reference things but instead explain them."
)
MANAGER = (
    "You are Crew Manager. You are a seasoned manager with a knack for getting the best out "
    "of your team.\nYou are also known for your ability to delegate work to the right "
    "people, and to ask the right questions to get the best out of your team.\nEven though "
    "you don't perform tasks by yourself, you have a lot of experience in the field, which "
    "allows you to properly evaluate the work of your team members.\nYour personal goal is: "
    "Manage the team to complete the task in the best way possible."
)


def coworker_tools(delegate: str = DELEGATE, ask: str = ASK) -> list[Any]:
    def parameters(first: str, what: str, coworker: str) -> dict[str, Any]:
        fields = {
            first: {"description": f"The {first} to {what}", "title": first.title()},
            "context": {"description": f"The context for the {first}", "title": "Context"},
            "coworker": {"description": f"The role/name of the coworker to {coworker}"},
        }
        fields["coworker"]["title"] = "Coworker"
        for field in fields.values():
            field["type"] = "string"
        return {"properties": fields, "required": list(fields), "type": "object"}

    return [
        function(
            "Delegate_work_to_coworker", delegate, parameters("task", "delegate", "delegate to")
        ),
        function("Ask_question_to_coworker", ask, parameters("question", "ask", "ask")),
    ]


def test_each_line_of_a_multi_line_function_description_is_a_comment_line(
    o200k: Encoder,
) -> None:
    # crewai 1.15.44, test_agent_usage_metrics_are_captured_for_hierarchical_process (gpt-4o)
    task = CREWAI_TASK.format(task="Ask the researched to say hi!", criteria="Howdy!")
    messages = [{"role": "system", "content": MANAGER}, {"role": "user", "content": task}]
    request = {"messages": messages, "tools": coworker_tools(), "tool_choice": "auto"}
    assert prompt(request, o200k, "gpt-4o") == 433  # billed
    # Joined into one line, each description loses its second "// " (and the line break).
    request["tools"] = coworker_tools(DELEGATE.replace("\n", " "), ASK.replace("\n", " "))
    per_line = len(o200k.encode_ordinary("Researcher\n// The")) - len(
        o200k.encode_ordinary("Researcher The")
    )
    assert per_line > 0
    assert prompt(request, o200k, "gpt-4o") == 433 - 2 * per_line


def test_a_call_in_the_history_is_billed_with_compact_arguments_and_its_result_as_from_its_function(
    o200k: Encoder,
) -> None:
    # crewai 1.15.44, agents/test_agent_execution_with_tools, second request (gpt-4.1-mini)
    task = CREWAI_TASK.format(
        task="What is 3 times 4?", criteria="The result of the multiplication."
    )
    call = {
        "id": "call_GAly2Kh4lmjVTjNTIACicQCH",
        "type": "function",
        "function": {"name": "multiplier", "arguments": '{"first_number":3,"second_number":4}'},
    }
    messages = [
        {
            "role": "system",
            "content": "You are test role. test backstory\nYour personal goal is: test goal",
        },
        {"role": "user", "content": task},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "12"},
        {
            "role": "user",
            "content": "Analyze the tool result. If requirements are met, provide the Final "
            "Answer. Otherwise, call the next tool. Deliver only the answer without "
            "meta-commentary.",
        },
    ]
    multiplier = function(
        "multiplier",
        "Useful for when you need to multiply two numbers together.",
        titled("first_number", "second_number"),
    )
    request = {"messages": messages, "tools": [multiplier], "tool_choice": "auto"}
    assert prompt(request, o200k, "gpt-4.1-mini") == 198  # billed
    spaced = copy.deepcopy(request)
    spaced["messages"][2]["tool_calls"][0]["function"]["arguments"] = (
        '{"first_number": 3, "second_number": 4}'
    )
    assert prompt(spaced, o200k, "gpt-4.1-mini") == 198  # re-serialised compactly
    # The result is written as from "functions.multiplier": the name's tokens count.
    renamed = copy.deepcopy(request)
    renamed["messages"][2]["tool_calls"][0]["function"]["name"] = "multiplier_of_two_numbers"
    name_tokens = len(o200k.encode_ordinary("_of_two_numbers"))
    assert prompt(renamed, o200k, "gpt-4.1-mini") == 198 + 2 * name_tokens


def test_a_strict_function_costs_no_more_than_a_plain_one(o200k: Encoder) -> None:
    # crewai 1.15.44, agents/test_lite_agent_with_tools (gpt-4o-mini, 2026-02)
    system = (
        "You are Research Assistant. You are a helpful research assistant who can search for "
        "information about the population of Tokyo.\nYour personal goal is: Find information "
        "about the population of Tokyo"
    )
    task = (
        "\nCurrent Task: What is the population of Tokyo and how many people would that be "
        "per square kilometer if Tokyo's area is 2,194 square kilometers?"
    )
    parameters = {**titled("query"), "additionalProperties": False}
    search = function(
        "search_web", "Search the web for information about a topic.", parameters, strict=True
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": task}]
    request = {"messages": messages, "tools": [search], "tool_choice": "auto"}
    assert prompt(request, o200k, "gpt-4o-mini") == 116  # billed
    request["tools"] = [{**search, "function": {**search["function"], "strict": False}}]
    assert prompt(request, o200k, "gpt-4o-mini") == 116


def test_an_object_whose_properties_have_no_notes_is_written_on_one_line(
    o200k: Encoder,
) -> None:
    # opentelemetry-instrumentation-agno 0.62.4, test_agent_with_tools (gpt-4o-mini)
    numbers = {"a": {"type": "number"}, "b": {"type": "number"}}
    parameters = {"type": "object", "properties": numbers, "required": ["a", "b"]}
    add = function("add_numbers", "Add two numbers together.", parameters)
    request = {"messages": [{"role": "user", "content": "Add 5 and 7"}], "tools": [add]}
    assert prompt(request, o200k, "gpt-4o-mini") == 52  # billed: "{a: number, b: number}"
    # A note on a property puts each on its own line, below its comment lines.
    noted = {**numbers, "a": {"type": "number", "description": "x"}}
    request["tools"] = [
        function("add_numbers", "Add two numbers together.", {**parameters, "properties": noted})
    ]
    one_per_line = "(_: {\n// x\na: number,\nb: number,\n})"
    assert prompt(request, o200k, "gpt-4o-mini") == 52 + len(
        o200k.encode_ordinary(one_per_line)
    ) - len(o200k.encode_ordinary("(_: {a: number, b: number})"))


def test_without_a_system_message_tools_and_a_json_schema_format_share_one(
    o200k: Encoder,
) -> None:
    # mirascope 2.8.2, test_structured_output_with_tools (gpt-4o, 2026-01)
    fields = ("title", "author", "pages", "publication_year")
    schema = {**titled(*fields), "title": "BookSummary", "additionalProperties": False}
    schema["properties"]["pages"]["type"] = "integer"
    schema["properties"]["publication_year"]["type"] = "integer"
    book_format = {"name": "BookSummary", "schema": schema, "strict": True}
    lookup = function(
        "get_book_info",
        "Look up book information by ISBN.",
        {**titled("isbn"), "additionalProperties": False},
        strict=True,
    )
    ask = (
        "Please look up the book with ISBN 0-7653-1178-X and provide detailed info and a "
        "recommendation score"
    )
    request = {
        "messages": [{"role": "user", "content": ask}],
        "response_format": {"type": "json_schema", "json_schema": book_format},
        "tools": [lookup],
    }
    assert prompt(request, o200k, "gpt-4o") == 140  # billed
    section = len(o200k.encode_ordinary("# Tools\n\n## functions\n\n" + BOOK_NAMESPACE))
    # With the tools, the format costs 7 fewer tokens than as a message of its own (8 beyond
    # its text, 1 after the tools section), and the tools section 3 beyond its text.
    without_tools = {k: v for k, v in request.items() if k != "tools"}
    assert 140 - prompt(without_tools, o200k, "gpt-4o") == section + 3 - 7
    without_format = {k: v for k, v in request.items() if k != "response_format"}
    alone = prompt(without_format, o200k, "gpt-4o") - prompt(
        {"messages": request["messages"]}, o200k, "gpt-4o"
    )
    assert alone == section + 3  # a system message of its own: 3 more


BOOK_NAMESPACE = (
    "namespace functions {\n\n// Look up book information by ISBN.\n"
    "type get_book_info = (_: {\n// Isbn\nisbn: string,\n}) => any;\n\n"
    "} // namespace functions"
)


FORMATTED_OUTPUT = "__mirascope_formatted_output_tool__"
FORMATTED_OUTPUT_SYSTEM = (
    f"Always respond to the user's query using the {FORMATTED_OUTPUT} tool for structured output."
)


def test_a_forced_function_primes_the_reply_as_a_call_to_it(o200k: Encoder) -> None:
    # mirascope 2.8.2, test_structured_output_resume/tool (gpt-4o, 2026-02)
    tool = function(
        FORMATTED_OUTPUT,
        "Use this tool to extract data in int format for a final response.",
        {**titled("output"), "additionalProperties": False},
        strict=True,
    )
    tool["function"]["parameters"]["properties"]["output"]["type"] = "integer"
    request = {
        "messages": [
            {"role": "system", "content": FORMATTED_OUTPUT_SYSTEM},
            {"role": "user", "content": "Choose a lucky number between 1 and 10"},
        ],
        "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": FORMATTED_OUTPUT}},
        "tools": [tool],
    }
    assert prompt(request, o200k, "gpt-4o") == 109  # billed
    request["tool_choice"] = "required"  # any function: the reply is not primed
    primed = len(o200k.encode_ordinary(" to=functions." + FORMATTED_OUTPUT)) + 4
    assert prompt(request, o200k, "gpt-4o") == 109 - primed


def test_the_responses_api_bills_the_tools_namespace_and_three_tokens(o200k: Encoder) -> None:
    # mirascope 2.8.2, test_call_with_tool_error, Responses API (gpt-4o, 2026-01)
    tool = responses_function(
        "passphrase_test_tool",
        "A tool that must be called with a passphrase.",
        {**titled("passphrase"), "additionalProperties": False},
        strict=True,
    )
    ask = "Use the test tool to retrieve the secret phrase. The passphrase is 'portal"
    request = {"input": [{"content": ask, "role": "user"}], "tools": [tool]}
    assert prompt(request, o200k, "gpt-4o", "responses") == 65  # billed
    namespace = (
        "namespace functions {\n\n// A tool that must be called with a passphrase.\n"
        "type passphrase_test_tool = (_: {\n// Passphrase\npassphrase: string,\n}) => any;\n\n"
        "} // namespace functions"
    )
    without = prompt({"input": request["input"]}, o200k, "gpt-4o", "responses")
    assert 65 - without == len(o200k.encode_ordinary(namespace)) + 3


def test_a_default_is_a_trailing_comment_and_a_docstring_a_comment_line_per_stripped_line(
    o200k: Encoder,
) -> None:
    # mirascope 2.8.2, test_call_with_strict_tool_and_optional_properties (gpt-4o, 2026-01)
    docstring = (
        "Get the current weather in a given location.\n\nArgs:\n"
        "    location: The city and state, e.g. San Francisco, CA\n"
        "    unit: The temperature unit to use (fahrenheit or celsius)"
    )
    parameters = titled("location", "unit")
    parameters["properties"]["location"]["description"] = (
        "The city and state, e.g. San Francisco, CA"
    )
    parameters["properties"]["unit"]["description"] = (
        "The temperature unit to use (fahrenheit or celsius)"
    )
    parameters["properties"]["unit"]["default"] = "fahrenheit"
    parameters["additionalProperties"] = False
    weather = function("get_current_weather", docstring, parameters, strict=True)
    ask = [{"role": "user", "content": "What's the weather like in San Francisco?"}]
    request = {"messages": ask, "tools": [weather]}
    assert prompt(request, o200k, "gpt-4o") == 130  # billed
    # "unit: string, // default: \"fahrenheit\"": without the default, the comment is gone.
    del parameters["properties"]["unit"]["default"]
    comment = ' // default: "fahrenheit"'
    trailing = len(o200k.encode_ordinary("unit: string," + comment + "\n}")) - len(
        o200k.encode_ordinary("unit: string,\n}")
    )
    assert prompt(request, o200k, "gpt-4o") == 130 - trailing
    # The docstring's blank line and indentation are not billed: 4 comment lines, stripped.
    parameters["properties"]["unit"]["default"] = "fahrenheit"
    lines = [line.strip() for line in docstring.split("\n") if line.strip()]
    assert len(lines) == 4
    one_line = function("get_current_weather", " ".join(lines), parameters, strict=True)
    joined = len(o200k.encode_ordinary("// " + " ".join(lines))) - len(
        o200k.encode_ordinary("\n".join("// " + line for line in lines))
    )
    assert prompt({"messages": ask, "tools": [one_line]}, o200k, "gpt-4o") == 130 + joined


def test_a_reasoning_model_writes_an_object_one_property_a_line(o200k: Encoder) -> None:
    # langchain-openai 1.8.1, test_agent_loop, Responses API (gpt-5.4, 2026-03)
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Get the weather for a location.",
        "parameters": {
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
            "type": "object",
        },
    }
    ask = [{"content": "What is the weather in San Francisco, CA?", "role": "user"}]
    request = {"input": ask, "tools": [tool], "stream": False}
    assert prompt(request, o200k, "gpt-5.4", "responses") == 53  # billed
    # As gpt-4o writes it, "(_: {location: string})", it would be a token shorter.
    lines, one_line = "(_: {\nlocation: string,\n})", "(_: {location: string})"
    shorter = len(o200k.encode_ordinary(lines)) - len(o200k.encode_ordinary(one_line))
    assert shorter == 1


def test_a_responses_input_call_is_billed_as_written_and_its_output_as_a_tool_message(
    o200k: Encoder,
) -> None:
    # pydantic logfire, test_openai/test_responses_api, second request (gpt-4.1, 2025-10)
    call = {
        "arguments": '{"location":"Paris, France"}',
        "call_id": "call_uilZSE2qAuMA2NWct72DBwd6",
        "name": "get_weather",
        "type": "function_call",
        "id": "fc_039e74dd66b112920068dfe105cbf4819c8d5eb84dab55a8f9",
        "status": "completed",
    }
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "Rainy"}
    ask = {"role": "user", "content": "What is the weather like in Paris today?"}
    request = {"input": [ask, call, output]}
    assert prompt(request, o200k, "gpt-4.1", "responses") == 43  # billed
    # Not re-serialised as a chat history's call is: spaced arguments cost their spaces.
    spaced = {**call, "arguments": '{"location": "Paris, France"}'}
    assert prompt({"input": [ask, spaced, output]}, o200k, "gpt-4.1", "responses") == 44


def test_each_call_of_a_responses_input_is_a_message_of_its_own(o200k: Encoder) -> None:
    # mirascope 2.8.2, test_call_with_tools, Responses API, second request (gpt-4o, 2025-10)
    tool = responses_function(
        "secret_retrieval_tool",
        "A tool that requires a password to retrieve a secret.",
        {**titled("password"), "additionalProperties": False},
        strict=False,
    )
    calls, outputs = [], []
    for password, secret in (("mellon", "Welcome to Moria!"), ("radiance", "Life before Death")):
        call_id = f"call_{password}"
        arguments = json.dumps({"password": password}, separators=(",", ":"))
        calls.append(
            {
                "arguments": arguments,
                "call_id": call_id,
                "name": tool["name"],
                "type": "function_call",
            }
        )
        outputs.append({"call_id": call_id, "output": secret, "type": "function_call_output"})
    ask = "Please retrieve the secrets associated with each of these passwords: mellon,radiance"
    turns = [
        {"role": "developer", "content": "Use parallel tool calling."},
        {"content": ask, "role": "user"},
    ]
    request = {"input": turns + calls + outputs, "tools": [tool]}
    assert prompt(request, o200k, "gpt-4o", "responses") == 136  # billed
    # Two calls in a row cost what the same calls cost apart: not one multi_tool_use.parallel
    # message as a chat history's parallel calls are (that was 12 tokens more here).
    apart = {**request, "input": [*turns, calls[0], outputs[0], calls[1], outputs[1]]}
    assert prompt(apart, o200k, "gpt-4o", "responses") == 136


def test_a_responses_tool_choice_naming_a_function_primes_the_reply_as_in_chat(
    o200k: Encoder,
) -> None:
    # opentelemetry-python-contrib, openai-v2 test_responses_create_captures_tool_call_content
    # (gpt-4o-mini, 2026-04); mirascope's test_structured_output_resume agrees (gpt-4o).
    tool = {**test_estimate.WEATHER_TOOL["function"], "type": "function", "strict": True}
    request = {
        "input": "What's the weather in Seattle right now?",
        "tool_choice": {"type": "function", "name": "get_current_weather"},
        "tools": [tool],
    }
    assert prompt(request, o200k, "gpt-4o-mini", "responses") == 72  # billed
    primed = len(o200k.encode_ordinary(" to=functions.get_current_weather")) + 4
    for choice in ("auto", "required"):  # no function named: the reply is not primed
        unforced = {**request, "tool_choice": choice}
        assert prompt(unforced, o200k, "gpt-4o-mini", "responses") == 72 - primed


def test_a_functions_parameters_title_is_a_comment_line_above_its_description(
    o200k: Encoder,
) -> None:
    # opentelemetry-instrumentation-openai-agents 0.62.4, test_tool_call_and_result_attributes
    # (gpt-4o, 2025-10): openai-agents titles a function's parameters "<name>_args".
    parameters = {
        **titled("city_name"),
        "title": "get_city_info_args",
        "additionalProperties": False,
    }
    tool = responses_function(
        "get_city_info", "Get detailed information about a city.", parameters, strict=True
    )
    request = {
        "input": [{"content": "Tell me about London", "role": "user"}],
        "instructions": "You help users get information about cities using the get_city_info tool.",
        "tools": [tool],
    }
    assert prompt(request, o200k, "gpt-4o", "responses") == 72  # billed
    del parameters["title"]
    line = len(o200k.encode_ordinary("// get_city_info_args\n"))
    assert prompt(request, o200k, "gpt-4o", "responses") == 72 - line


# ------------------------------------------------ odd requests: never lose the estimate


def usage_of(request: dict[str, Any], enc: Encoder) -> Any:
    return estimate_usage("chat", {"model": "gpt-4o", **request}, CompletionTally(), "gpt-4o", enc)


def test_an_object_of_thousands_of_required_properties_costs_linear_time_to_render(
    o200k: Encoder,
) -> None:
    # Looking each property up in the `required` list was quadratic: 30,000 properties, all
    # required, took 3.5 s at the end of the call. Counted here by comparisons, not time.
    comparisons = 0

    class Name(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            nonlocal comparisons
            comparisons += 1
            return str.__eq__(self, other)

    names = [f"field_{i}" for i in range(2000)]
    parameters = {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": [Name(name) for name in names],
    }
    request = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [function("f", "", parameters)],
    }
    plain = copy.deepcopy(request)
    plain["tools"][0]["function"]["parameters"]["required"] = names
    count = prompt(request, o200k, "gpt-4o")
    assert comparisons <= 2 * len(names)  # a list's `in`: about 2,000,000
    assert count == prompt(plain, o200k, "gpt-4o")


def test_a_required_that_is_not_a_list_of_names_makes_no_property_required(
    o200k: Encoder,
) -> None:
    # A draft-3 `"required": true`, a bare string, with a property keyed by an int: the
    # lookup `1 in "a"` raised, and the whole estimate was lost.
    def request(required: Any) -> dict[str, Any]:
        parameters = {"type": "object", "properties": {1: {"type": "string"}}}
        if required is not None:
            parameters["required"] = required
        tool = function("f", "", parameters)
        return {"messages": [{"role": "user", "content": "Hi"}], "tools": [tool]}

    for required in (True, "a", 5, [{"a": 1}, ["b"]]):
        usage = usage_of(request(required), o200k)
        assert usage.input_tokens == prompt(request(None), o200k, "gpt-4o")


def test_enum_and_default_values_are_counted_as_the_sdk_sends_them(o200k: Encoder) -> None:
    # The SDK writes a datetime in ISO form (openai._utils._json); json.dumps raised on it
    # in an enum (the whole estimate lost) and dropped it as a default (undercounted).
    import datetime
    import decimal

    def request(value: Any, key: str) -> dict[str, Any]:
        prop = {"type": "string", key: [value] if key == "enum" else value}
        parameters = {"type": "object", "properties": {"when": prop}}
        return {
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [function("f", "", parameters)],
        }

    when = datetime.datetime(2026, 12, 7, 22, 30)
    for key in ("enum", "default"):
        assert usage_of(request(when, key), o200k).input_tokens == prompt(
            request(when.isoformat(), key), o200k, "gpt-4o"
        )
        # Values the SDK cannot send at all still leave an estimate.
        for odd in (decimal.Decimal("1.5"), {1, 2}, b"bytes"):
            assert usage_of(request(odd, key), o200k).input_tokens is not None


def test_the_calls_history_takes_ids_of_any_type(o200k: Encoder) -> None:
    # `single_calls` is a dict: a tool_call_id (or a call's id) that is a dict or a list
    # made its lookup raise, and the whole estimate was lost. Not a string: not an id.
    def request(call_id: Any, result_id: Any) -> dict[str, Any]:
        call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
        messages = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": result_id, "content": "done"},
        ]
        return {"messages": messages, "tools": [function("f", "", {})]}

    unmatched = prompt(request("call_1", "call_2"), o200k, "gpt-4o")
    for call_id, result_id in (({"a": 1}, ["x"]), ("call_1", {"id": "call_1"}), (["x"], "x")):
        assert usage_of(request(call_id, result_id), o200k).input_tokens == unmatched


def test_a_schema_too_deep_to_render_leaves_the_rest_counted_as_a_lower_bound(
    o200k: Encoder,
) -> None:
    # Deeper than the renderer's recursion (which the estimate, run deeper in the stack
    # than the SDK's json.dumps, can meet where the SDK did not), or a Python object that
    # contains itself: the section cannot be written, the messages still can. It was the
    # whole estimate lost.
    import sys

    deep: dict[str, Any] = {"type": "string"}
    for _ in range(sys.getrecursionlimit()):
        deep = {"type": "object", "properties": {"x": deep}}
    looped: dict[str, Any] = {"type": "object", "properties": {}}
    looped["properties"]["self"] = looped
    messages = [{"role": "user", "content": "Hi"}]
    alone = prompt({"messages": messages}, o200k, "gpt-4o")
    for parameters in (deep, looped):
        usage = usage_of({"messages": messages, "tools": [function("f", "", parameters)]}, o200k)
        assert usage.input_tokens is not None and usage.input_tokens >= alone
        assert usage.lower_bound


def test_a_type_listed_twice_is_rendered_once_so_nesting_does_not_double_the_work(
    o200k: Encoder,
) -> None:
    # `"type": ["array", "array"]` wrote its items twice, at every level: 2**depth times,
    # so a schema of a few hundred bytes took minutes at the end of the call.
    def nested(kind: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        for _ in range(16):
            schema = {"type": kind, "items": schema}
        parameters = {"type": "object", "properties": {"a": schema}}
        return {
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [function("f", "", parameters)],
        }

    assert prompt(nested(["array", "array"]), o200k, "gpt-4o") == prompt(
        nested(["array"]), o200k, "gpt-4o"
    )


class _ToolChoiceFunction(pydantic.BaseModel):
    """As the SDK's `openai.types.responses.ToolChoiceFunction` (openai 1.66 and later)."""

    type: str
    name: str


def test_a_forced_function_given_as_the_sdks_model_is_billed_as_the_dict(o200k: Encoder) -> None:
    # The SDK sends `ToolChoiceFunction(...)` dumped; the prompt was primed for it but the
    # call in the answer was billed as not forced (name and framing counted).
    def usage(choice: Any) -> Any:
        tally = CompletionTally()
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
        tally.add_chat_message(0, {"tool_calls": [call]})
        tool = responses_function("f", "", {"type": "object", "properties": {}}, strict=False)
        request = {"model": "gpt-4o", "input": "Hi", "tools": [tool], "tool_choice": choice}
        return estimate_usage("responses", request, tally, "gpt-4o", o200k)

    as_dict = usage({"type": "function", "name": "f"})
    as_model = usage(_ToolChoiceFunction(type="function", name="f"))
    assert (as_model.input_tokens, as_model.output_tokens) == (
        as_dict.input_tokens,
        as_dict.output_tokens,
    )
    assert as_dict.output_tokens < usage("auto").output_tokens


def test_a_developer_message_in_input_text_parts_opens_the_tools_section_as_its_string(
    o200k: Encoder,
) -> None:
    # The Responses API's parts are "input_text": read as no text at all, the section was
    # counted after an empty system text (the "." + "\n\n" merge lost) for the models that
    # keep the chat layout there.
    def request(content: Any) -> dict[str, Any]:
        tool = responses_function("f", "", {"type": "object", "properties": {}}, strict=False)
        instructions = {"role": "developer", "content": content}
        return {"input": [instructions, {"role": "user", "content": "Hi"}], "tools": [tool]}

    text = "Answer briefly."
    parts = [{"type": "input_text", "text": text}]
    assert prompt(request(parts), o200k, "gpt-5", "responses") == prompt(
        request(text), o200k, "gpt-5", "responses"
    )


def test_a_definition_that_is_no_dict_is_declared_as_any(o200k: Encoder) -> None:
    # An object with a `properties` attribute in `$defs` was rendered as a dict (`.get`
    # raised, the whole estimate lost).
    class Model:
        def __init__(self) -> None:
            self.properties = {"a": {"type": "string"}}

    def request(definition: Any) -> dict[str, Any]:
        parameters = {"type": "object", "properties": {"a": {}}, "$defs": {"A": definition}}
        return {
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [function("f", "", parameters)],
        }

    assert usage_of(request(Model()), o200k).input_tokens == prompt(request(5), o200k, "gpt-4o")


def test_a_schemas_tuples_are_the_json_arrays_the_sdk_sends(o200k: Encoder) -> None:
    # json.dumps writes a tuple as an array: an enum, anyOf or type list given as a tuple
    # was rendered as if it were not there.
    def request(sequence: Any) -> dict[str, Any]:
        properties = {
            "unit": {"type": "string", "enum": sequence(["celsius", "fahrenheit"])},
            "when": {"anyOf": sequence([{"type": "string"}, {"type": "integer"}])},
            "where": {"type": sequence(["string", "null"])},
        }
        parameters = {"type": "object", "properties": properties, "required": ("unit",)}
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": parameters},
        }
        return {
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [function("f", "", parameters)],
            "response_format": response_format,
        }

    assert prompt(request(tuple), o200k, "gpt-4o") == prompt(request(list), o200k, "gpt-4o")
