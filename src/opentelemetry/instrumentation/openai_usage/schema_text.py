"""How the server writes a request's JSON schemas into the prompt it bills.

A tool's parameters become TypeScript-like declarations in a `namespace functions` (a
property's title and description as comment lines above it, its default as a comment after
it, a `$ref` as its definition written in place); a `json_schema` response
format becomes a "# Response Formats" section holding the schema's compact JSON. Only the
text: the framing tokens around it, and which message it joins, are `estimate.py`'s rules
(`RULES`), with the evidence for both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .tally import get as _get


def _sent_as(value: Any) -> Any:
    """A value `json` cannot write, as the SDK sends it (`openai._utils._json`): a
    datetime in ISO form, a pydantic model dumped. Anything else the SDK cannot send at
    all; written as its `str`, so that rendering never fails on it."""
    if isinstance(value, datetime):
        return value.isoformat()
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_unset=True, mode="json", by_alias=True)
        except Exception:  # not pydantic's after all
            pass
    return str(value)


def _json(value: Any, ensure_ascii: bool = False, **options: Any) -> str:
    """`value` as JSON text, as the SDK would write it (`_sent_as`)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, default=_sent_as, **options)


def _required(schema: Mapping[str, Any]) -> frozenset[str]:
    """An object's required property names: a set, so that an object of thousands of
    properties, all required, is not quadratic to render; anything but a list (or tuple)
    of names (a draft-3 `"required": true`, a string) requires none."""
    names = schema.get("required")
    if not isinstance(names, (list, tuple)):
        return frozenset()
    return frozenset(name for name in names if isinstance(name, str))


class _Refs:
    """A function's `$defs` (or `definitions`), for its `$ref`s to be written in place.

    A `$ref` is billed as its definition's object written where it is used, at the margin
    as any nested object is, below the definition's title and description as the
    property's notes: the two published schemas whose `$ref` is a property (mirascope's
    Book.author, gpt-4o chat and Responses; openai-agents' Recipe, gpt-4o Responses) are
    exact so, 11 prompts, where a `type Author = {...};` declared for it was 1 and 2 over,
    and the object indented by 2 under its property 6 and 18 over. An array of such
    objects is not known: crewai's TaskEvaluation (`Entity[]`, 8 prompts) is 5 under so,
    and crewai's create_reasoning_plan (an array of objects without a `$ref`, 11 prompts)
    34 (22 indented).
    A reference already being written (a recursive schema) is written as its name, and so
    is any past the first `_EXPANSIONS` of a function: a definition used twice by another
    used twice, and so on, would otherwise be written 2**depth times.
    """

    _EXPANSIONS = 1000

    def __init__(self, parameters: Any) -> None:
        definitions = _get(parameters, "$defs")
        if not isinstance(definitions, Mapping):
            definitions = _get(parameters, "definitions")
        self.definitions = definitions if isinstance(definitions, Mapping) else {}
        self.open: set[str] = set()
        self.left = self._EXPANSIONS

    def name(self, schema: Mapping[str, Any]) -> str | None:
        """The definition a `{"$ref": "#/$defs/Name"}` names, if it has one to write."""
        reference = schema.get("$ref")
        if not isinstance(reference, str) or not reference.startswith("#/"):
            return None
        name = reference.rsplit("/", 1)[-1]
        if name not in self.definitions or name in self.open or self.left <= 0:
            return None
        return name


def _resolved(schema: Any, refs: _Refs) -> tuple[Any, str | None]:
    """A schema with its `$ref` replaced by the definition it names (the reference's own
    keys, a description say, over the definition's), and that name, now in `refs.open`
    until the caller has written the schema and discards it."""
    if not isinstance(schema, Mapping) or "$ref" not in schema:
        return schema, None
    name = refs.name(schema)
    if name is None:
        return schema, None
    refs.open.add(name)
    refs.left -= 1
    definition = refs.definitions[name]
    if not isinstance(definition, Mapping):
        return definition, name
    return {**definition, **{k: v for k, v in schema.items() if k != "$ref"}}, name


def _ts_type(schema: Any, refs: _Refs, one_line: bool) -> str:
    """A JSON schema as the TypeScript-like type OpenAI renders into the prompt."""
    schema, name = _resolved(schema, refs)
    try:
        return _ts_plain(schema, refs, one_line)
    finally:
        refs.open.discard(name or "")


def _ts_plain(schema: Any, refs: _Refs, one_line: bool) -> str:
    if not isinstance(schema, Mapping):
        return "any"
    reference = schema.get("$ref")
    if isinstance(reference, str):  # one not written in place (`_Refs`): its name
        name = reference.rsplit("/", 1)[-1]
        return name if reference.startswith("#/") and name else "any"
    if "enum" in schema and isinstance(schema["enum"], (list, tuple)):
        return " | ".join(_json(v) for v in schema["enum"]) or "any"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), (list, tuple)):
            options = (_ts_type(option, refs, one_line) for option in schema[key])
            return " | ".join(options) or "any"
    kind = schema.get("type")
    if isinstance(kind, (list, tuple)):
        # Each kind once: a subtree written twice a level (`["array", "array"]`) would be
        # written 2**depth times, minutes for a schema of a few hundred bytes.
        kinds = dict.fromkeys(k if isinstance(k, str) else None for k in kind)
        types = (_ts_plain({**schema, "type": k}, refs, one_line) for k in kinds)
        return " | ".join(types) or "any"
    if kind == "object" and schema.get("properties"):
        return _ts_object(schema, refs, one_line)
    if kind == "array":
        return _ts_type(schema.get("items"), refs, one_line) + "[]"
    if kind in ("string", "number", "boolean", "null", "object"):
        return str(kind)
    return "number" if kind == "integer" else "any"


def _notes(prop: Any) -> list[str]:
    """A property's title (pydantic gives every field one) and description: billed as
    comment lines above it, nested properties' too (published set: 36 more exact prompts)."""
    return [n for n in (_get(prop, "title"), _get(prop, "description")) if isinstance(n, str) and n]


def _ts_object(schema: Mapping[str, Any], refs: _Refs, one_line: bool) -> str:
    """An object type: its properties one a line, each below its notes' comment lines, at
    the margin however deep the object is (a nested object is not indented).

    `one_line` (ChatRules.one_line_objects): an object none of whose properties has a note
    is written on one line, `{a: number, b?: string}`. Published set: 19 more distinct chat
    prompts exact (7 sources; gpt-3.5, gpt-4o, gpt-4o-mini, gpt-4.1-nano), none fewer, where
    one property a line billed one token more per such function.
    """
    required = _required(schema)
    properties = schema.get("properties")
    members = []  # (notes, "name?: type", default comment) of each property
    for name, prop in properties.items() if isinstance(properties, Mapping) else ():
        # A `$ref`'s definition written in place brings its title and description along.
        prop, opened = _resolved(prop, refs)
        try:
            kind = _ts_type(prop, refs, one_line)
        finally:
            refs.open.discard(opened or "")
        member = f"{name}{'' if name in required else '?'}: {kind}"
        members.append((_notes(prop), member, _default(prop)))
    if one_line and not any(notes or default for notes, _, default in members):
        return "{" + ", ".join(member for _, member, _ in members) + "}"
    lines = ["{"]
    for notes, member, default in members:
        lines += ["// " + note for note in notes]
        lines.append(member + "," + default)
    return "\n".join(lines) + "\n}"


def _default(prop: Any) -> str:
    """A property's default, as a comment after it: ` // default: null` (crewai's optional
    fields: 4 more distinct published prompts exact, gpt-4o-mini and gpt-4.1-mini)."""
    if not isinstance(prop, Mapping) or "default" not in prop:
        return ""
    try:
        return " // default: " + _json(prop["default"])
    except (ValueError, RecursionError):  # a value that contains itself: not JSON at all
        return ""


def render_functions(functions: list[Mapping[str, Any]], one_line: bool = True) -> str:
    """The `namespace functions { ... }` text a tools definition becomes in the prompt.

    A multi-line description is a comment line per line, stripped of its indentation
    (docstrings): 28 more distinct published chat prompts exact (3 sources) than one `// `
    for it all, 5 more (2 sources) than keeping blank lines and indentation. A blank line
    inside it is a bare `//` line (its leading and trailing blank lines are dropped):
    mirascope's long markdown tool description (gpt-4o, chat and Responses, 8 prompts) is
    exact, 2 under without them; after a line ending in "." the `//` line costs nothing
    (".\n//\n//" is one token), so docstrings' "Args:" sections agree either way (10
    prompts, 2 sources, all exact both ways); a blank `// ` line was 72 over.
    The parameters schema's own `title` (openai-agents names it "<function>_args") is a
    comment line above the description, as a property's title is above its description:
    every one of the 26 published Responses prompts with such a title (2 sources, gpt-4o
    and gpt-4.1) was billed more than without it, 5 exact now, the others all closer.
    """
    lines = ["namespace functions {", ""]
    for function in functions:
        parameters, name = function.get("parameters"), function["name"]
        title = _get(parameters, "title")
        if isinstance(title, str) and title:  # as a property's title: a note above the rest
            lines.append("// " + title)
        description = function.get("description")
        if isinstance(description, str) and description.strip():
            lines += [("// " + line.strip()).rstrip() for line in description.strip().split("\n")]
        if isinstance(parameters, Mapping) and parameters.get("properties"):
            body = _ts_object(parameters, _Refs(parameters), one_line)
            lines.append(f"type {name} = (_: {body}) => any;")
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def render_response_format(json_schema: Any) -> str:
    """A json_schema response format as the prompt section the server bills: a "# Response
    Formats" heading with its name, its description, and its schema (`render_schema`)."""
    name, description = _get(json_schema, "name"), _get(json_schema, "description")
    text = f"# Response Formats\n\n## {name if isinstance(name, str) else ''}\n\n"
    if isinstance(description, str) and description:  # as a tool's: `// ` lines
        text += "".join(f"// {line.strip()}\n" for line in description.split("\n") if line.strip())
    return text + render_schema(_get(json_schema, "schema"))


def render_schema(schema: Any) -> str:
    """A response format's schema as the server shows it: compact JSON, as sent, without
    the keywords strict mode implies (`_unenforced`), non-ASCII characters escaped as
    Python's `json.dumps` does by default (`\\u2014`; estimate.py's RULES comment)."""
    return _json(_unenforced(schema), separators=(",", ":"), ensure_ascii=True)


# Keywords the server leaves out of the schema it shows the model. What the output's
# grammar enforces anyway: which properties must appear and that no others may, an array's
# length, a number's bounds; a `default`, which never applies where every property is
# required; and the dialect. Everything else stays as sent, titles included.
_LEFT_OUT = frozenset(
    {"required", "additionalProperties", "default", "minimum", "maximum", "minItems", "maxItems"}
    | {"$schema"}
)
# Keywords whose value maps names (of properties, of definitions) to schemas: the names
# there are not keywords, and a property named "required" is shown like any other.
_NAMED_SCHEMAS = frozenset({"properties", "$defs", "definitions", "patternProperties"})
# Keywords whose value is data, not a schema: shown as sent, whatever keys it has.
_DATA = frozenset({"const", "enum", "examples"})


def _unenforced(value: Any) -> Any:
    """A JSON schema as the server shows it to the model: without `_LEFT_OUT`."""
    if isinstance(value, Mapping):
        schema = {}
        for key, sub in value.items():
            if key in _LEFT_OUT:
                continue
            if key in _NAMED_SCHEMAS and isinstance(sub, Mapping):
                schema[key] = {name: _unenforced(s) for name, s in sub.items()}
            elif key in _DATA:
                schema[key] = sub
            else:
                schema[key] = _unenforced(sub)
        return schema
    if isinstance(value, (list, tuple)):
        return [_unenforced(v) for v in value]
    return value
