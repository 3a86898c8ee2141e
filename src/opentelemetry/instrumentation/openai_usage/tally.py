"""What counting needs from a call's output, collected chunk by chunk, bounded in memory.

Per chunk this only appends strings: no encoding, no joining beyond `Pieces`. Only
text is kept (never the chunks), and at most `MAX_CHARS` of it per call; text past
that is dropped and the estimate made from it becomes a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def get(obj: Any, name: str) -> Any:
    """A field of an SDK object or of a plain dict alike."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def items(value: Any) -> list[Any] | tuple[Any, ...]:
    """A list a server sent (`output`, `choices`, a message's `content`), or none.

    The SDK keeps a broken server's `"output": 1.5` or `"choices": true` as it came:
    iterating that would raise in our code and lose the call's other facts.
    """
    return value if isinstance(value, (list, tuple)) else ()


def not_given(value: Any) -> bool:
    """The SDK's "not given" values (`NOT_GIVEN`, `omit`: falsy singletons of classes so
    named), which its helpers pass on and callers may pass too: a field the SDK leaves out
    of the request, so no value at all."""
    return type(value).__name__ in ("NotGiven", "Omit")


# Where OpenAI-compatible servers put a model's reasoning text (DeepSeek and vLLM:
# `reasoning_content`; OpenRouter and others: `reasoning`). Billed as output, often on by
# default, whatever the request or model name says; not counted (its shape and tokens are
# the server's own), so an estimate of a reply that shows it is a lower bound.
REASONING_FIELDS = ("reasoning_content", "reasoning")
_REASONING_NAMES = frozenset(REASONING_FIELDS)


def shows_reasoning(delta: Any) -> bool:
    """Whether a message or delta carries reasoning text (in a field the SDK keeps as an
    extra).

    Read from the object's field maps, not with `getattr`: for a field its model does not
    declare, pydantic's `__getattr__` raises and catches an AttributeError (about 4 µs a
    name), and this is asked on two chunks of every stream. Declared fields (and pydantic
    v1's extras) are in `__dict__`, pydantic v2's extras in `__pydantic_extra__`."""
    if isinstance(delta, dict):
        maps: tuple[Any, ...] = (delta,)
    else:
        maps = (getattr(delta, "__dict__", None), getattr(delta, "__pydantic_extra__", None))
    for fields in maps:
        if isinstance(fields, dict):
            if type(fields) is dict and _REASONING_NAMES.isdisjoint(fields):
                continue  # nearly always: no such field, nothing to read (one test, in C)
            for name in REASONING_FIELDS:
                text = fields.get(name)
                if isinstance(text, str) and text:
                    return True
    return False


COMPACT_PIECES = 512  # every this many pieces of one text become one string
MAX_CHARS = 8 << 20  # per call; text beyond it is not kept and the estimate is a lower bound


class Pieces(list[str]):
    """Text pieces as received, kept short: a few joined blocks and a tail of pieces.

    Joining only the tail (not everything) keeps both memory (no millions of small str
    objects) and time (no quadratic re-joining) linear in the text size.
    """

    __slots__ = ("blocks",)

    def __init__(self, pieces: Iterable[str] = ()) -> None:
        super().__init__(pieces)
        self.blocks = 0

    def add(self, text: str) -> None:
        self.append(text)
        if len(self) - self.blocks >= COMPACT_PIECES:
            self[self.blocks :] = ["".join(self[self.blocks :])]
            self.blocks += 1


@dataclass
class ChoiceText:
    """What one choice produced, as received; joined only when counted."""

    content: Pieces = field(default_factory=Pieces)
    refusal: Pieces = field(default_factory=Pieces)
    tool_calls: dict[int, tuple[Pieces, Pieces]] = field(default_factory=dict)  # name, args
    function_call: tuple[Pieces, Pieces] | None = None  # legacy
    # Tool call ids, for captured content only (ids are not counted, and are short).
    tool_call_ids: dict[int, str] = field(default_factory=dict)
    # An audio reply's transcript, for captured content only (audio is billed as audio
    # tokens, not counted from its text): kept only when content is captured.
    audio_transcript: Pieces = field(default_factory=Pieces)


def _custom(call: Any) -> dict[str, Any] | None:
    """A custom tool call (free-form `input`) read like a function call."""
    return None if call is None else {"name": get(call, "name"), "arguments": get(call, "input")}


class CompletionTally:
    """Collects, chunk by chunk, only what counting needs, bounded in memory.

    Per chunk it appends strings and nothing else: no encoding, no joining beyond `Pieces`.
    """

    def __init__(self, max_chars: int = MAX_CHARS, keep_audio: bool = False) -> None:
        self.choices: dict[int, ChoiceText] = {}
        self.keep_audio = keep_audio  # an audio reply's transcript, for captured content
        self.chars = 0
        self.max_chars = max_chars
        self.truncated = False  # text was dropped at max_chars: the count is a lower bound
        self.reasoned = False  # the reply showed reasoning text, not counted: a lower bound
        self._first: Pieces | None = None

    def choice(self, index: int) -> ChoiceText:
        found = self.choices.get(index)
        if found is None:
            found = self.choices[index] = ChoiceText()
        return found

    def _add(self, pieces: Pieces, text: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        room = self.max_chars - self.chars
        if len(text) > room:
            self.truncated = True
            text = text[:room]
            if not text:
                return
        self.chars += len(text)
        pieces.add(text)

    def _add_call(self, call: tuple[Pieces, Pieces], function: Any) -> None:
        if function is not None:
            self._add(call[0], get(function, "name"))
            self._add(call[1], get(function, "arguments"))

    def add_chat_delta(self, index: int, delta: Any) -> None:
        """One stream chunk's `choices[i].delta` (SDK ChoiceDelta or dict)."""
        if delta is None:
            return
        choice = self.choice(index if isinstance(index, int) else 0)
        if not self.reasoned and shows_reasoning(delta):
            self.reasoned = True
        self._add(choice.content, get(delta, "content"))
        self._add(choice.refusal, get(delta, "refusal"))
        if self.keep_audio:
            self._add(choice.audio_transcript, get(get(delta, "audio"), "transcript"))
        for position, call in enumerate(items(get(delta, "tool_calls"))):
            slot = get(call, "index")
            slot = slot if isinstance(slot, int) else position
            pair = choice.tool_calls.get(slot)
            if pair is None:
                pair = choice.tool_calls[slot] = (Pieces(), Pieces())
                call_id = get(call, "id")
                if isinstance(call_id, str):
                    choice.tool_call_ids[slot] = call_id[:256]
            self._add_call(pair, get(call, "function"))
        function_call = get(delta, "function_call")
        if function_call is not None:
            if choice.function_call is None:
                choice.function_call = (Pieces(), Pieces())
            self._add_call(choice.function_call, function_call)

    def add_chat_message(self, index: int, message: Any) -> None:
        """A non-streamed choice's message: the same fields, once, tool calls in order."""
        if message is None:
            return
        calls = [
            {
                "index": i,
                "id": get(call, "id"),
                "function": get(call, "function") or _custom(get(call, "custom")),
            }
            for i, call in enumerate(items(get(message, "tool_calls")))
        ]
        if not self.reasoned and shows_reasoning(message):
            self.reasoned = True
        fields = ("content", "refusal", "function_call")
        delta = {name: get(message, name) for name in fields}
        self.add_chat_delta(index, {**delta, "tool_calls": calls})

    def add_first_content(self, text: Any) -> None:
        """Choice 0's content: what nearly every chunk carries, so kept short."""
        first = self._first
        if first is None:
            first = self._first = self.choice(0).content
        self._add(first, text)

    def add_text(self, index: Any, text: Any) -> None:
        """A legacy completion choice's text (or one streamed piece of it)."""
        self._add(self.choice(index if isinstance(index, int) else 0).content, text)


def tally_from_response(response: Any) -> CompletionTally:
    """The output of a non-streamed chat or legacy completion, as a stream would give it."""
    if get(response, "choices") is None and get(response, "output") is not None:
        return tally_from_output(response)
    tally = CompletionTally()
    for position, choice in enumerate(items(get(response, "choices"))):
        index = get(choice, "index")
        index = index if isinstance(index, int) else position
        message = get(choice, "message")
        if message is not None:
            tally.add_chat_message(index, message)
        else:
            tally.add_text(index, get(choice, "text"))
    return tally


def tally_from_output(response: Any) -> CompletionTally:
    """The output text and function calls of a `Response`, for an estimate."""
    tally = CompletionTally()
    for item in items(get(response, "output")):
        kind = get(item, "type")
        if kind == "message":
            for part in items(get(item, "content")):
                tally.add_text(0, get(part, "text") or get(part, "refusal"))
        elif kind == "function_call":
            index = len(tally.choice(0).tool_calls)
            function = {"name": get(item, "name"), "arguments": get(item, "arguments")}
            tally.add_chat_delta(0, {"tool_calls": [{"index": index, "function": function}]})
    return tally
