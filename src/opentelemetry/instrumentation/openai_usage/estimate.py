"""Token counts estimated with tiktoken, for calls whose usage the server never sent.

Pure functions: no I/O, no tiktoken import (any object with `encode_ordinary` will do),
never raising on odd input. The per-family constants live in `RULES`; each was fitted on
real billed usage (benchmarks/estimate_accuracy.py shows the evidence and the accuracy).
What cannot be seen cannot be counted: image/audio/file parts, built-in tools, a
reasoning model's hidden reasoning and the input a Responses call takes from the server's
store (`previous_response_id`, `conversation`, a stored `prompt`) or the output a
`background` response goes on to generate after its stream is left; the estimate is then a
lower bound (`lower_bound`). So it is for any stream left before its output ended (the
estimator marks it: what was generated but not read was billed all the same).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .schema_text import render_functions, render_response_format
from .tally import CompletionTally, not_given
from .tally import get as _get
from .tally import items as _items
from .telemetry import PROVIDER_AZURE
from .usage import SOURCE_ESTIMATE, Usage

DEFAULT_ENCODING = "o200k_base"  # unknown models and Azure deployment names

# Normalised model name prefix -> encoding; first match wins, so longer prefixes first.
_ENCODING_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-4.5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-oss", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5", "cl100k_base"), ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"), ("text-embedding-ada-002", "cl100k_base"),
    ("davinci-002", "cl100k_base"), ("babbage-002", "cl100k_base"),
)  # fmt: skip
_O_SERIES = re.compile(r"o\d+(?:-|$)")  # o1, o1-mini, o3-pro, o4-mini-2025-04-16, ...
# A fine-tune's `ft:` or a router's provider (`openai/gpt-4o`): no part of the family name.
_FINE_TUNE_OR_ROUTER_PREFIX = re.compile(r"^(?:ft:|openai/|azure/|azure_ai/)")


@dataclass(frozen=True)
class ChatRules:
    """How one model family frames a chat prompt and a reply, in tokens beyond the text."""

    per_message: int = 3  # <|im_start|>, <|im_sep|>, <|im_end|> (the role is counted as text)
    per_name: int = 1  # a message `name`
    reply_priming: int = 3  # <|im_start|>assistant<|im_sep|>
    tools_in_system: int = -1  # the tools section after the system text: beyond the text
    tools_alone: int = 3  # ... as a system message of its own: beyond the section's text
    forced_call: int = 4  # `tool_choice` naming a function: " to=functions.<name>" + this
    tool_message: int = 1  # per role=tool message but a single call's result (see below)
    one_call: int = 7  # a single tool call: name + arguments + this
    history_call: int = 5  # ... in an earlier message: name + compact arguments + this
    parallel_calls: int = 10  # several calls: their multi_tool_use.parallel JSON + this
    parallel_results: int = 3  # ... their results: one message, a JSON list + this
    text_with_tools: int = 1  # a text (or refusal) answer while tools are offered
    text_with_tools_and_schema: int = 5  # ... and a json_schema response format
    refusal_with_schema: int = 1  # a refusal under a json_schema format, no tools offered
    schema_section: int = 1  # a json_schema response format's section: beyond its text
    schema_alone: int = 4  # ... as a system message of its own: its framing and role
    schema_reply: int = 1  # ... without tools: the reply primed with its name + this
    earlier_answer: int = 2  # an earlier answer under a json_schema format: + name + this
    responses_item: int = 1  # Responses API: per output item (message or function call)
    responses_tools: int | None = 3  # Responses API: tools namespace + this (None: as chat)
    one_line_objects: bool = True  # an object without property notes on one line
    azure_end_of_turn: int = 1  # Azure OpenAI: per chat choice that ended its turn


# ONE table of per-family constants. Evidence (recorded billed calls: the shared calibration
# set and the published one, benchmarks/README.md): the gpt-4o/4.1 family fits all of the
# defaults. gpt-4 (cl100k) plain prompts fit the cookbook; a single call of its costs 3 less
# than gpt-4o's (15 of 15 recorded, `tools` and legacy `functions` alike), while gpt-3.5's
# calls fit the defaults. gpt-5 prompts are one token shorter (reply priming 2), and so are
# its tool section and its response format's (schema_section: langchain's gpt-5-nano
# Responses call with a format, 2 records, exact so, 1 over otherwise); o-series assumed
# alike (lower bounds).
# text_with_tools: when tools are offered the model itself writes whom its reply is for
# (the separator after the role for text, " to=functions.x" for a call), so a text answer
# costs one token more than its text; the call constants already include theirs. Seen on
# every text answer given with tools offered (gpt-4o: chat with a strict tool, Responses
# with strict, non-strict and file_search tools); without tools text is counted exactly.
# With a json_schema response format as well, such an answer costs 5 more (24 of 26); a
# refusal under a json_schema format, without tools, costs one more (18 of 18).
# A json_schema response format is billed as a "# Response Formats" section: its name, its
# description as `// ` comment lines, and its schema as compact JSON, as sent, titles
# included, without what the output's grammar enforces (schema_text._unenforced: which
# properties are required, additionalProperties, an array's length, a number's bounds, and
# defaults, which never apply where all is required), non-ASCII characters escaped
# (`\u2014`, as Python's json.dumps writes by default: crewai's planner observation, 23
# records, 2 schemas, exact only so). A developer found the same for the Responses API
# (openai/openai-cookbook#2140: the schema without required and additionalProperties),
# and a leaked system prompt shows it, heading and name included, in a Responses call
# (ghost.ai.moda, "OpenAI Internals: Structured Outputs to System Prompts"). The section
# costs its text + schema_section wherever it is: after the system text, counted with it
# (its last token may merge with "\n\n", as the tools section's does), after the tools
# section in their message, or, + schema_alone (framing and role), as a system message of
# its own. In chat without tools the reply is primed as an answer in the format: its name
# + schema_reply, as each earlier answer names it (earlier_answer, below). That the name
# is billed twice is what the data show: a trivial schema under a 5-token name
# (mirascope's FentanylHandbook) cost 8 more than the same under a 1-token one (elastic's
# Reason), and over all schemas the error was the name's tokens less 2 until counted.
# With tools offered (the reply may be a call) and in the Responses API, once: the
# heading. Published prompts, distinct requests exact [before: titles dropped, all
# keywords kept, ASCII kept / the previous rule, "3 more per nullable anyOf", no name in
# the Responses heading]: chat, a message of its own, 16 of 16, 9 schemas, 6 sources [3 /
# 6]; after the system text 107 of 107, 20 formats, 4 sources [13 / 87]; after the tools
# section 36 of 36, 3 schemas, 2 sources [31 / 36]; Responses without tools 19 of 20, 8
# formats, 4 sources (the other is gpt-5-nano's) [0 / 17]. The nullable-anyOf surcharge
# was the guardrail result's 5-token name and the planner observation's escaped dashes.
# Left: Responses turns after a call and its result under a format with tools (1 to 3
# short, one schema, mirascope).
# earlier_answer: an earlier assistant answer (text) in a chat request with a json_schema
# format costs the format's name + 2 more (4 of 4 sibling pairs, 4 distinct schemas,
# mirascope and crewai; none under json_object or a tool, nor in the Responses API):
# `_earlier_answer`.
# tool_choice "none" is not in the data and is counted alike. A single call to a strict
# function costs nothing more than a plain one (82 of 82 recorded chat calls, 55 requests;
# all the Responses ones). A call the request forces (`tool_choice` naming the function) is billed
# its arguments alone: the model does not write the name or the framing (17 of 23).
# The tools section ("# Tools\n\n## functions\n\n" and the namespace, render_functions)
# follows the first system (or developer) message's text after "\n\n", so the text's last
# token may merge with it (".\n\n" is one token): tools_in_system. Counted apart, 91
# distinct published prompts (4 sources) fewer were exact, 2 more. Without one it is a
# system message of its own (tools_alone), also when a json_schema response format follows
# it there (schema_section). A strict function costs no more
# than a plain one (95 distinct prompts, 5 sources, exact that were 1 token short per strict
# function). A tool_choice naming a function primes the reply as its call, billed in the
# prompt: " to=functions.<name>" + forced_call (10 distinct prompts, 3 sources).
# history_call: an earlier single call is billed name + its arguments as compact JSON +
# history_call, and its result as a message from "functions.<name>" (no tool_message):
# 67 distinct published prompts (7 sources) more exact. Several calls keep the
# multi_tool_use.parallel form, and their results are ONE message more (per_message +
# parallel_results) whose text is the JSON list of the results' texts (`json.dumps`'
# default ", " separators, non-ASCII as is): then 26 of the 27 recorded chat requests
# with several calls in one earlier message (15 distinct but for call ids, 4 sources:
# crewai, mirascope, elastic, opentelemetry-python-contrib; gpt-4o-2024-08-06 and -11-20,
# gpt-4o-mini; 2 and 3 calls) cost exactly the calls' JSON + the list + 16, where the
# results as role=tool messages of their own were 5 over for three calls and 21 to 57
# under for long results (escaped newlines and quotes); 21 more exact. The 27th (crewai
# exa search, gpt-4o-mini, 58k tokens of results) is 535 under: exactly its non-ASCII
# written as \u escapes, which the three long crewai results with non-ASCII (gpt-4o) are
# not. How the 16 splits between the two messages cannot be seen (a call is always
# followed by its results); the calls keep the 10 their written form costs (`_completion`).
# The Responses API is rendered apart:
# a gpt-4o/4.1 tools section costs its namespace + responses_tools wherever the
# instructions are (60 distinct published requests more exact, 4 sources); its calls and
# their outputs are counted as `one_call` and role=tool results, each call a message of its
# own: several calls in a row are separate input items, not chat's one multi_tool_use.parallel
# message (12 distinct published prompts exact that were 12 tokens over, none lost; one
# mirascope test, gpt-4o, 2025-10 to 2026-01). A Responses tool_choice naming a function
# primes the reply as in chat (forced_call: 7 distinct published prompts exact, 5 tests, 2
# sources, gpt-4o and gpt-4o-mini; the 5 others forced are closer). Reasoning models (gpt-5
# and later) keep the chat layout there, and write every object one property a line.
# responses_item: a Responses API output item costs one token more than the same text or
# call in chat completions (every gpt-4o/4o-mini/4.1 response recorded).
# azure_end_of_turn: Azure OpenAI bills a gpt-4o/4.1 chat choice's end-of-turn token, where
# OpenAI does not: every recorded 2026 Azure answer that ended with `stop` or `tool_calls`
# (47 of 47; one cut by `length` is exact). Its gpt-35-turbo answers of 2024 do not.
RULES: dict[str, ChatRules] = {
    "o200k-chat": ChatRules(),
    "cl100k-chat": ChatRules(),
    "gpt-4": ChatRules(one_call=4),
    "reasoning": ChatRules(
        reply_priming=2,
        tools_in_system=-2,
        tools_alone=2,
        responses_tools=None,
        one_line_objects=False,
        schema_section=0,
    ),
}
# gpt-4 itself (gpt-4-0613, gpt-4-32k...), not gpt-4o, gpt-4.1 or gpt-4-turbo.
_GPT_4 = re.compile(r"gpt-4(?:-32k)?(?:-\d{4})?$")
# gpt-5 and the later generations (gpt-6-..., gpt-7.1): reasoning models. (Azure's
# gpt-35-turbo is gpt-3.5.)
_GPT_5_ON = re.compile(r"gpt-[5-9](?:[.-]|$)")


def _normalise(model: str) -> str:
    name = _FINE_TUNE_OR_ROUTER_PREFIX.sub("", model.strip().lower())
    name = name.split(":", 1)[0]  # ft:gpt-4o-mini:org::id -> gpt-4o-mini
    return name.rsplit("/", 1)[-1]  # openai/gpt-4o -> gpt-4o


def encoding_name_for(
    model: str | None, overrides: Mapping[str, str] | None = None, also: str | None = None
) -> str:
    """The tiktoken encoding of a model or Azure deployment; DEFAULT_ENCODING if unknown.

    `also`: another name for the same call (the requested model or deployment, when
    `model` is the one that served it). An override for either wins; then the family of
    the first one we can place.
    """
    names = [n for n in (model, also) if isinstance(n, str) and n]
    if overrides:
        for name in names:
            for key in (name, name.lower(), _normalise(name)):
                if key in overrides:
                    return overrides[key]
    for name in names:
        family = _family(_normalise(name))
        if family is not None:
            return family
    return DEFAULT_ENCODING


def _family(name: str) -> str | None:
    if _O_SERIES.match(name) or _GPT_5_ON.match(name):
        return "o200k_base"
    for prefix, encoding in _ENCODING_PREFIXES:
        if name.startswith(prefix):
            return encoding
    return None


def is_reasoning_model(model: str | None) -> bool:
    """o-series and gpt-5 models bill hidden reasoning tokens, so output is a lower bound."""
    if not isinstance(model, str):
        return False
    name = _normalise(model)
    if name.startswith("gpt-5-chat"):
        # gpt-5-chat-latest answers without reasoning; its successors (gpt-5.1-chat-latest,
        # "Instant") reason when a question needs it, and bill it, so they stay below.
        return False
    if _O_SERIES.match(name) or _GPT_5_ON.match(name):
        return True
    return name.startswith(("gpt-oss", "codex-mini"))


def asks_for_reasoning(request: Mapping[str, Any]) -> bool:
    """Whether the request turns reasoning on, whatever its model is called: chat's
    `reasoning_effort`, or a `reasoning` object (the Responses API's, and OpenAI-compatible
    routers' in chat, often sent in `extra_body`, whose fields the request as sent,
    `request.as_sent`, already has). A model that reasons bills its hidden reasoning as
    output, so an estimate can only undercount, even for a deployment or router name no
    family rule can place. Effort "none" (or `enabled: false`) asks for none.
    """
    effort = request.get("reasoning_effort")
    if isinstance(effort, str) and effort != "none":
        return True
    reasoning = request.get("reasoning")
    return (
        isinstance(reasoning, Mapping)
        and reasoning.get("enabled") is not False
        and reasoning.get("effort") != "none"
    )


def rules_for(model: str | None) -> ChatRules:
    if is_reasoning_model(model):
        return RULES["reasoning"]
    if isinstance(model, str) and _GPT_4.match(_normalise(model)):
        return RULES["gpt-4"]
    if encoding_name_for(model) == "cl100k_base":
        return RULES["cl100k-chat"]
    return RULES["o200k-chat"]


# ---------------------------------------------------------------- counting


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


class EncodingFailed(Exception):
    """The encoder failed on a text: this call gets no estimate."""


class _Counter:
    """Counts text with one encoding, and remembers whether something was uncountable."""

    def __init__(self, encoding: Encoder, rules: ChatRules) -> None:
        self.encoding, self.rules, self.partial = encoding, rules, False

    def text(self, value: Any) -> int:
        if not isinstance(value, str):
            return 0
        try:
            # encode_ordinary: "<|endoftext|>" in user text is text, never an error.
            return len(self.encoding.encode_ordinary(value))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            # tiktoken's native code panics on some texts (a run of about a million spaces
            # overflows its regex's stack), and pyo3 raises a panic as a BaseException,
            # which no `except Exception` of ours (or the caller's) would stop.
            message = f"{type(exc).__name__} on a text of {len(value)} characters"
            raise EncodingFailed(message) from None

    def content(self, content: Any) -> int:
        """A message content: a string, or parts whose text is counted as one string.

        Image, audio and file parts are billed but not visible as text: not counted, and
        the estimate becomes a lower bound.
        """
        if content is None or isinstance(content, str):
            return self.text(content)
        texts = []
        if not isinstance(content, (list, tuple)):  # parts the SDK read once (a generator)
            self.partial = True
        for part in content if isinstance(content, (list, tuple)) else ():
            kind = _get(part, "type")
            if kind in ("text", "input_text", "output_text", "refusal", None):
                text = _get(part, "refusal" if kind == "refusal" else "text")
                texts.append(text if isinstance(text, str) else "")
            else:
                self.partial = True
        return self.text("".join(texts))

    def calls(
        self, calls: list[tuple[str, str]], forced: str | None = None, written: bool = False
    ) -> int:
        """Tool calls as the model writes them: one call plainly, several as one JSON.

        A single call to the function the request `forced` is billed its arguments alone.
        `written`: calls the model writes in its answer (not an earlier turn's, in the
        prompt). It names a single call's recipient, `functions.<name>`, and the tokenizer
        joins that '.' with the name's first letters where it can (".get", "_weather": no
        token more than the name alone) and not always (".A", "sk", "_question": "Ask"
        alone is one token, so the call costs one more). Recorded single calls, not
        forced: 178 named so that the '.' joins (118 requests, 10 sources, 8 models) cost
        their name's tokens, the 11 others (11 requests, 2 sources, 5 models: gpt-3.5-turbo
        to gpt-4.1) one more. The calls of an earlier turn, in the prompt, are not known to
        be rendered so (`written=False`; with the '.' one prompt fewer is exact).
        """
        rules = self.rules
        if len(calls) == 1:
            name, arguments = calls[0]
            if forced is not None and name == forced:
                return self.text(arguments)
            recipient = self.text("." + name) if written and name else self.text(name)
            return recipient + self.text(arguments) + rules.one_call
        if not calls:
            return 0
        uses = ",".join(
            f'{{"recipient_name":"functions.{name}","parameters":{_compact(arguments)}}}'
            for name, arguments in calls
        )
        return self.text('{"tool_uses":[' + uses + "]}") + rules.parallel_calls


def _text(content: Any) -> str:
    """A message content's text: the string, or its text parts joined (chat's "text",
    the Responses API's "input_text")."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, (list, tuple)) else ()
    texts = (
        _get(part, "text") for part in parts if _get(part, "type") in ("text", "input_text", None)
    )
    return "".join(text for text in texts if isinstance(text, str))


def _result_text(content: Any, counter: _Counter) -> str:
    """A tool result's text; parts that are not text (an image) are billed unseen."""
    if content is not None and not isinstance(content, str):
        parts = content if isinstance(content, (list, tuple)) else [{"type": None}]
        texts = ("text", "input_text", None)  # what `_text` reads
        counter.partial |= not isinstance(content, (list, tuple)) or any(
            _get(part, "type") not in texts for part in parts
        )
    return _text(content)


def _json_list(texts: list[str]) -> str:
    """Several calls' results as the one JSON text the server bills for them."""
    return json.dumps(texts, ensure_ascii=False)


def _compact(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return arguments or "{}"


def _message_calls(message: Any, counter: _Counter) -> list[tuple[str, str]]:
    tool_calls = _get(message, "tool_calls") or ()
    if not isinstance(tool_calls, (list, tuple)):  # a one-shot iterator the SDK read first
        counter.partial = True
        tool_calls = ()
    calls = [_get(call, "function") for call in tool_calls]
    if _get(message, "function_call") is not None:
        calls.append(_get(message, "function_call"))
    return [(str(_get(f, "name") or ""), str(_get(f, "arguments") or "")) for f in calls if f]


def _functions(request: Mapping[str, Any], counter: _Counter) -> list[Mapping[str, Any]]:
    """Function definitions from `tools` (chat and Responses shapes) and legacy `functions`."""
    found: list[Mapping[str, Any]] = []
    for tool in list(request.get("tools") or ()) + list(request.get("functions") or ()):
        if not isinstance(tool, Mapping):
            continue
        is_function = tool.get("type", "function") == "function"
        function = tool.get("function", tool) if is_function else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            found.append(function)
        else:  # built-in tools (file_search, web_search, ...) add text we cannot see
            counter.partial = True
    return found


def _chat_prompt(
    request: Mapping[str, Any],
    counter: _Counter,
    json_schema: Mapping[str, Any] | None,
    responses: bool = False,
) -> int:
    """A chat request's prompt; `json_schema`: its response format's (`_json_schema`)."""
    rules, total, system = counter.rules, counter.rules.reply_priming, None
    # tool_call_id -> name, of calls made one at a time. Only string ids: a request may
    # hold anything, and a dict or list for an id would make the lookup itself raise.
    single_calls: dict[str, str] = {}
    # tool_call_id -> the results of the message of several calls that made it.
    parallel_calls: dict[str, list[str]] = {}
    parallel_results: list[list[str]] = []
    for message in request.get("messages") or ():
        role, call_id = _get(message, "role"), _get(message, "tool_call_id")
        if system is None and role in ("system", "developer"):
            system = _text(_get(message, "content"))
        if role == "tool" and isinstance(call_id, str) and call_id in parallel_calls:
            # One of several calls' results: billed in their one message (below).
            parallel_calls[call_id].append(_result_text(_get(message, "content"), counter))
            continue
        total += rules.per_message + counter.content(_get(message, "content"))
        if role == "tool" and isinstance(call_id, str) and call_id in single_calls:
            # The result of a single call is written as from its function.
            total += counter.text("functions." + single_calls[call_id])
        elif role == "tool":
            total += counter.text(role) + rules.tool_message
        else:
            total += counter.text(role)
            if isinstance(_get(message, "name"), str):
                total += counter.text(_get(message, "name")) + rules.per_name
        calls = _message_calls(message, counter)
        if len(calls) == 1 and not responses:
            total += counter.text(calls[0][0]) + counter.text(_compact(calls[0][1]))
            total += rules.history_call
            for call in _items(_get(message, "tool_calls")):
                if isinstance(_get(call, "id"), str):
                    single_calls[_get(call, "id")] = calls[0][0]
        else:
            total += counter.calls(calls)
            if len(calls) > 1 and not responses:
                parallel_results.append([])
                for call in _items(_get(message, "tool_calls")):
                    if isinstance(_get(call, "id"), str):
                        parallel_calls[_get(call, "id")] = parallel_results[-1]
        if json_schema is not None and role == "assistant" and not calls and not responses:
            total += _earlier_answer(message, json_schema, counter)
        if _get(message, "audio") is not None:  # an earlier audio reply, billed as audio input
            counter.partial = True
    for results in filter(None, parallel_results):
        total += rules.per_message + counter.text(_json_list(results)) + rules.parallel_results
    functions = _functions(request, counter)
    if functions:
        namespace = _rendered(render_functions, counter, functions, rules.one_line_objects)
        section = "# Tools\n\n## functions\n\n" + namespace
        if responses and rules.responses_tools is not None:
            total += counter.text(namespace) + rules.responses_tools
        elif system is None:
            total += counter.text(section) + rules.tools_alone
        else:  # the system text's last token may merge with the "\n\n" that follows it
            total += counter.text(system + "\n\n" + section) - counter.text(system)
            total += rules.tools_in_system
        forced = _forced(request)
        if forced is not None:  # the reply is primed as a call to it
            total += counter.text(" to=functions." + forced) + rules.forced_call
    if json_schema is not None:
        section = _rendered(render_response_format, counter, json_schema)
        if system is not None and not functions:  # the text's last token may merge with it
            total += counter.text(system + "\n\n" + section) - counter.text(system)
        else:  # after the tools section, in its message; or a message of its own
            total += counter.text(section)
            # Not in the Responses API: its inputs with a format and without a system
            # message paid for no message of their own (19 of 20 distinct exact so).
            if system is None and not functions and not responses:
                total += rules.schema_alone
        total += rules.schema_section
        if not functions and not responses:  # the reply is primed as an answer in the format
            name = _get(json_schema, "name")
            total += counter.text(name if isinstance(name, str) else "") + rules.schema_reply
    return total


def _rendered(render: Callable[..., str], counter: _Counter, *schema: Any) -> str:
    """A schema's prompt text (`schema_text`), or none if it cannot be written: nested
    about as deep as the SDK's own `json.dumps` could write it (about 490 levels), the
    renderer may reach the recursion limit where the SDK did not (the estimate may run
    deeper in the stack than the call's serialization did); a Python object that
    contains itself, keys no JSON has. The rest of the prompt is still counted, and the
    estimate is a lower bound, as for anything else it cannot see."""
    try:
        return render(*schema)
    except (RecursionError, TypeError, ValueError):
        counter.partial = True
        return ""


def _earlier_answer(message: Any, json_schema: Mapping[str, Any], counter: _Counter) -> int:
    """What an earlier assistant answer (text) costs beyond its text and framing when the
    request has a json_schema response format: the format's name + `earlier_answer`, as if
    the answer's header named the format it was written in, as the reply's priming does
    (`schema_reply`).

    Evidence: every recorded pair of sibling requests (same schema, model and test, one
    with an earlier answer and one without) disagreed by exactly the name's tokens + 2
    until this was counted: 4 distinct schemas (int, ScoreOutput, SimpleOutput,
    CalculationResult; gpt-4o, gpt-4o-mini, gpt-4.1-mini; mirascope and crewai, OpenAI and
    Azure). Under a json_object format an earlier JSON answer costs nothing more (7 of 7
    exact), and nor does one in the Responses API (mirascope's int pair agrees without it).
    """
    if not _text(_get(message, "content")):
        return 0
    name = _get(json_schema, "name")
    return counter.text(name if isinstance(name, str) else "") + counter.rules.earlier_answer


def _json_schema(request: Mapping[str, Any], counter: _Counter) -> Mapping[str, Any] | None:
    """The `json_schema` of a `response_format` of that type (name, description, schema),
    if the request has one."""
    response_format = _as_sent(request.get("response_format"), "response_format", counter)
    if _get(response_format, "type") != "json_schema":
        return None
    json_schema = _get(response_format, "json_schema")
    schema = _get(json_schema, "schema")
    if not isinstance(schema, Mapping):  # the SDK's model of it names the field `schema_`
        schema = _get(json_schema, "schema_")
    if not isinstance(schema, Mapping):  # billed, but not to be read
        counter.partial = True
        return None
    fields = {key: _get(json_schema, key) for key in ("name", "description")}
    return {**fields, "schema": schema}


def _forced(request: Mapping[str, Any]) -> str | None:
    """The function a request's `tool_choice` (or chat's legacy `function_call`) forces."""
    choice = request.get("tool_choice")  # a mapping, or the SDK's model of one (sent dumped)
    choice = dict(choice) if isinstance(choice, Mapping) else choice  # `_get` reads dicts
    if _get(choice, "type") == "function":
        # Chat nests the name in `function`; the Responses API gives it flat.
        function = _get(choice, "function")
        name = _get(function if function is not None else choice, "name")
        return name if isinstance(name, str) else None
    legacy = request.get("function_call")
    name = legacy.get("name") if isinstance(legacy, Mapping) else None
    return name if isinstance(name, str) else None


# `parse()` takes a pydantic model class where `create()` takes a JSON schema, and the SDK
# sends the class's strict schema: the SDK's own converters make the same one here.
_CONVERTERS = {
    "response_format": ("openai.lib._parsing._completions", "type_to_response_format_param"),
    "text_format": ("openai.lib._parsing._responses", "type_to_text_format_param"),
}


def _as_sent(value: Any, parameter: str, counter: _Counter) -> Any:
    """A `response_format` (or Responses `text_format`) as the SDK sends it."""
    if not isinstance(value, type):
        return value
    try:
        module, name = _CONVERTERS[parameter]
        return getattr(importlib.import_module(module), name)(value)
    except Exception:  # an SDK without the converter, or a class it cannot convert
        counter.partial = True
        return None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, (list, tuple)) else ()


def _plain_inputs(value: Any, counter: _Counter) -> int:
    """A legacy prompt or embeddings input: string, token ids, or a list (or tuple) of
    either. Another iterable (one the SDK read once, nested in a list) is not seen."""
    if isinstance(value, str):
        return counter.text(value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, int) for item in value):
            return len(value)  # one input given as token ids
        return sum(_plain_inputs(item, counter) for item in value)
    if value is not None and not not_given(value):
        counter.partial = True
    return 0


def _offers_tools(request: Mapping[str, Any]) -> bool:
    """Whether the request offers any tool (function, legacy function or built-in)."""
    tools = list(request.get("tools") or ()) + list(request.get("functions") or ())
    return any(isinstance(tool, Mapping) for tool in tools)


def _completion(
    tally: CompletionTally,
    request: Mapping[str, Any],
    counter: _Counter,
    responses: bool,
    schema: bool,
) -> int:
    """`schema`: a chat request with a json_schema response format."""
    rules = counter.rules
    if _offers_tools(request):
        text_extra = refusal_extra = (
            rules.text_with_tools_and_schema if schema else rules.text_with_tools
        )
    else:
        text_extra, refusal_extra = 0, rules.refusal_with_schema if schema else 0
    forced = _forced(request)
    total = 0
    for choice in tally.choices.values():
        content, refusal = "".join(choice.content), "".join(choice.refusal)
        total += counter.text(content) + counter.text(refusal)
        total += refusal_extra if refusal else text_extra if content else 0
        calls = [(k, choice.tool_calls[k]) for k in sorted(choice.tool_calls)]
        pairs = [("".join(name), "".join(args)) for _, (name, args) in calls]
        if choice.function_call is not None:
            pairs.append(("".join(choice.function_call[0]), "".join(choice.function_call[1])))
        total += counter.calls(pairs, forced, written=True)
        if responses:
            total += rules.responses_item * (bool(content or refusal) + len(pairs))
    return total


def _prompt_list(prompt: Any) -> list[Any]:
    """A legacy `prompt` as its list of prompts: one string or token-id list, or several."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)):
        if all(isinstance(item, int) for item in prompt):
            return [prompt]
        return list(prompt)
    return []


def _echoed_completion(
    tally: CompletionTally, request: Mapping[str, Any], counter: _Counter
) -> int:
    """A legacy completion asked with `echo`: each choice's text starts with its prompt,
    which the service bills as prompt tokens only (`echo` with `max_tokens=0`, the usual
    way to score a prompt, bills no output at all), so the echo is not counted as output.

    Choice `i` answers prompt `i // n`. A string prompt found at the start of the text is
    cut off; otherwise (token ids, or a text that does not start with it) its token count
    is taken off the choice's.
    """
    prompts = _prompt_list(request.get("prompt"))
    n = request.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    total = 0
    for index, choice in tally.choices.items():
        text = "".join(choice.content)
        prompt = prompts[index // n] if 0 <= index // n < len(prompts) else None
        if isinstance(prompt, str) and text.startswith(prompt):
            total += counter.text(text[len(prompt) :])
            continue
        if isinstance(prompt, str):
            echoed = counter.text(prompt)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            echoed = len(prompt)
        else:  # a prompt we cannot see (read once by the SDK), already marked partial
            echoed = 0
        total += max(0, counter.text(text) - echoed)
    return total


# Responses API parameters that make the server add input the request does not show: the
# earlier turns of `previous_response_id` or a `conversation`, a stored `prompt` template.
_STORED_INPUT = ("previous_response_id", "conversation", "prompt")


def responses_as_chat(request: Mapping[str, Any], counter: _Counter) -> dict[str, Any]:
    """A Responses API request as the chat request it is rendered like.

    Input the server adds from its own store (a previous response's turns, a
    conversation's items, a stored prompt) is billed but not in the request: the
    estimate is then a lower bound.
    """
    if any(isinstance(v, (str, Mapping)) and v for v in map(request.get, _STORED_INPUT)):
        counter.partial = True
    messages: list[dict[str, Any]] = []
    if isinstance(request.get("instructions"), str) and request["instructions"]:
        messages.append({"role": "system", "content": request["instructions"]})
    items = request.get("input")
    for item in [{"role": "user", "content": items}] if isinstance(items, str) else items or ():
        kind = _get(item, "type") or "message"
        if kind == "message":
            messages.append({"role": _get(item, "role"), "content": _get(item, "content")})
        elif kind == "function_call":
            # Each call is an item of its own, billed as a message of its own: several
            # calls in a row are not one multi_tool_use.parallel message as in chat.
            call = {"function": {"name": _get(item, "name"), "arguments": _get(item, "arguments")}}
            messages.append({"role": "assistant", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": _get(item, "output")})
        else:  # reasoning items, file search results, ...: not visible as text
            messages.append({"role": "user", "content": [{"type": kind}]})
    chat: dict[str, Any] = {"messages": messages, "tools": request.get("tools") or []}
    choice = request.get("tool_choice")
    if _get(choice, "type") == "function":  # Responses' {"type": "function", "name": ...}
        chat["tool_choice"] = {"type": "function", "function": {"name": _get(choice, "name")}}
    text_format = _get(request.get("text"), "format")
    if text_format is None:  # `responses.parse(text_format=<class>)`
        text_format = _as_sent(request.get("text_format"), "text_format", counter)
    if _get(text_format, "type") == "json_schema":  # chat's `response_format` for it
        # Its name heads the section as in chat (RULES comment; the reply is not primed
        # with it: `_chat_prompt` is told `responses`).
        schema = _get(text_format, "schema")
        if not isinstance(schema, Mapping):  # the SDK's model of it names the field `schema_`
            schema = _get(text_format, "schema_")
        name, description = _get(text_format, "name"), _get(text_format, "description")
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "description": description},
        }
    return chat


# Finish reasons that end a turn (an answer, or the calls the caller is to run).
_END_OF_TURN = frozenset({"stop", "tool_calls", "function_call"})


def _azure_end_of_turn(
    provider: str | None, model: str | None, finish_reasons: Sequence[str], rules: ChatRules
) -> int:
    if provider != PROVIDER_AZURE or encoding_name_for(model) != "o200k_base":
        return 0
    return rules.azure_end_of_turn * sum(1 for r in finish_reasons if r in _END_OF_TURN)


def estimate_usage(
    operation: str,
    request: Mapping[str, Any],
    tally: CompletionTally | None,
    model: str | None,
    encoding: Encoder,
    provider: str | None = None,
    finish_reasons: Sequence[str] = (),
) -> Usage:
    """Estimated usage of one call ("chat", "text_completion", "embeddings", "responses"),
    from its `request` as sent (`request.as_sent`: `extra_body`'s fields in place), made to
    `provider` (`gen_ai.provider.name`), whose choices ended with `finish_reasons`.

    The prompt is counted once whatever `n` is; the output of every choice is summed.
    Raises only `EncodingFailed`: what cannot be read is not counted, and the result is
    then marked `lower_bound`, as it is for reasoning models and truncated output.
    """
    counter = _Counter(encoding, rules_for(model))
    request = request if isinstance(request, Mapping) else {}
    try:
        json_schema = None  # the json_schema response format of a chat request
        if operation == "chat":
            json_schema = _json_schema(request, counter)  # read once (`parse()` gives a class)
            prompt = _chat_prompt(request, counter, json_schema)
            # Audio output is billed in audio tokens that no chunk's text shows.
            counter.partial |= "audio" in _strings(request.get("modalities"))
            # A predicted output's rejected tokens are billed as output, and never sent.
            counter.partial |= isinstance(request.get("prediction"), Mapping)
        elif operation == "text_completion":
            prompt = _plain_inputs(request.get("prompt"), counter)
            prompt += _plain_inputs(request.get("suffix"), counter)
            best_of, n = request.get("best_of"), request.get("n") or 1
            counter.partial |= isinstance(best_of, int) and best_of > n  # unseen candidates
        elif operation == "responses":
            chat = responses_as_chat(request, counter)
            prompt = _chat_prompt(chat, counter, _json_schema(chat, counter), responses=True)
            # A background response runs on when its stream is left: its whole output is
            # billed, of which the stream showed only a part.
            counter.partial |= request.get("background") is True
        elif operation == "embeddings":
            prompt = _plain_inputs(request.get("input"), counter)
            return Usage(prompt, None, prompt, source=SOURCE_ESTIMATE, lower_bound=counter.partial)
        else:  # an operation without rules yet (e.g. the Responses API)
            return Usage(source=SOURCE_ESTIMATE)
        responses = operation == "responses"
        if tally is None:
            output = 0
        elif operation == "text_completion" and request.get("echo") is True:
            output = _echoed_completion(tally, request, counter)
        else:
            output = _completion(tally, request, counter, responses, json_schema is not None)
            if operation == "chat":
                output += _azure_end_of_turn(provider, model, finish_reasons, counter.rules)
    except EncodingFailed:
        raise  # the estimator reports it
    except Exception:  # odd shapes: a guess is worse than nothing
        return Usage(source=SOURCE_ESTIMATE)
    lower = is_reasoning_model(model) or asks_for_reasoning(request) or counter.partial
    lower = lower or bool(tally and (tally.truncated or tally.reasoned))
    # What the content filter withheld was generated, and billed (an Azure answer of 2024
    # shown empty was billed 19 tokens).
    lower = lower or "content_filter" in finish_reasons
    return Usage(prompt, output, prompt + output, source=SOURCE_ESTIMATE, lower_bound=lower)
