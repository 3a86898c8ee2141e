"""How the server writes a request's JSON schemas into the prompt it bills.

A tool's parameters become TypeScript-like declarations in a `namespace functions` (a
property's title and description as comment lines above it, its default as a comment after
it, a `$ref` as the name of a type declared for its definition); a `json_schema` response
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


def _json(value: Any, **options: Any) -> str:
    """`value` as JSON text, as the SDK would write it (`_sent_as`)."""
    return json.dumps(value, ensure_ascii=False, default=_sent_as, **options)


def _required(schema: Mapping[str, Any]) -> frozenset[str]:
    """An object's required property names: a set, so that an object of thousands of
    properties, all required, is not quadratic to render; anything but a list (or tuple)
    of names (a draft-3 `"required": true`, a string) requires none."""
    names = schema.get("required")
    if not isinstance(names, (list, tuple)):
        return frozenset()
    return frozenset(name for name in names if isinstance(name, str))


def _ts_type(schema: Any, indent: int, one_line: bool) -> str:
    """A JSON schema as the TypeScript-like type OpenAI renders into the prompt."""
    if not isinstance(schema, Mapping):
        return "any"
    reference = schema.get("$ref")
    if isinstance(reference, str):  # "#/$defs/Author": the type declared for it (_definitions)
        name = reference.rsplit("/", 1)[-1]
        return name if reference.startswith("#/") and name else "any"
    if "enum" in schema and isinstance(schema["enum"], (list, tuple)):
        return " | ".join(_json(v) for v in schema["enum"]) or "any"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), (list, tuple)):
            options = (_ts_type(option, indent, one_line) for option in schema[key])
            return " | ".join(options) or "any"
    kind = schema.get("type")
    if isinstance(kind, (list, tuple)):
        # Each kind once: a subtree written twice a level (`["array", "array"]`) would be
        # written 2**depth times, minutes for a schema of a few hundred bytes.
        kinds = dict.fromkeys(k if isinstance(k, str) else None for k in kind)
        types = (_ts_type({**schema, "type": k}, indent, one_line) for k in kinds)
        return " | ".join(types) or "any"
    if kind == "object" and schema.get("properties"):
        return _ts_object(schema, indent, indent + 2, one_line)
    if kind == "array":
        return _ts_type(schema.get("items"), indent, one_line) + "[]"
    if kind in ("string", "number", "boolean", "null", "object"):
        return str(kind)
    return "number" if kind == "integer" else "any"


def _notes(prop: Any) -> list[str]:
    """A property's title (pydantic gives every field one) and description: billed as
    comment lines above it, nested properties' too (published set: 36 more exact prompts)."""
    return [n for n in (_get(prop, "title"), _get(prop, "description")) if isinstance(n, str) and n]


def _ts_object(schema: Mapping[str, Any], indent: int, inner: int, one_line: bool) -> str:
    """An object type: its properties at `inner` indentation, one a line, each below its
    notes' comment lines; its closing brace at `indent`.

    `one_line` (ChatRules.one_line_objects): an object none of whose properties has a note
    is written on one line, `{a: number, b?: string}`. Published set: 19 more distinct chat
    prompts exact (7 sources; gpt-3.5, gpt-4o, gpt-4o-mini, gpt-4.1-nano), none fewer, where
    one property a line billed one token more per such function.
    """
    required = _required(schema)
    properties = schema.get("properties")
    members = []  # (notes, "name?: type", default comment) of each property
    for name, prop in properties.items() if isinstance(properties, Mapping) else ():
        member = f"{name}{'' if name in required else '?'}: {_ts_type(prop, inner, one_line)}"
        members.append((_notes(prop), member, _default(prop)))
    if one_line and not any(notes or default for notes, _, default in members):
        return "{" + ", ".join(member for _, member, _ in members) + "}"
    lines = ["{"]
    for notes, member, default in members:
        lines += [" " * inner + "// " + note for note in notes]
        lines.append(" " * inner + member + "," + default)
    return "\n".join(lines) + "\n" + " " * indent + "}"


def _default(prop: Any) -> str:
    """A property's default, as a comment after it: ` // default: null` (crewai's optional
    fields: 4 more distinct published prompts exact, gpt-4o-mini and gpt-4.1-mini)."""
    if not isinstance(prop, Mapping) or "default" not in prop:
        return ""
    try:
        return " // default: " + _json(prop["default"])
    except (ValueError, RecursionError):  # a value that contains itself: not JSON at all
        return ""


def _definitions(parameters: Any, one_line: bool) -> list[str]:
    """The `$defs` of a function's parameters, each a type of its own, named as the `$ref`s
    that use it are written (`author: Author`), its description a comment line above it.

    Named, not written out where used: a strict schema may be recursive, which only a name
    can render. Published set: the 3 schemas with `$defs` (26 prompts, 3 sources, chat and
    Responses, gpt-4o and gpt-4o-mini) were billed 26 to 61 tokens more than with `any`
    for each `$ref`; declared so, every first request of a conversation is within 2
    tokens (none exact: the declaration's exact form is not known; `interface X {` would
    be a token shorter), written out in place 3 to 16 tokens over.
    """
    definitions = _get(parameters, "$defs")
    if not isinstance(definitions, Mapping):
        definitions = _get(parameters, "definitions")
    lines = []
    for name, definition in definitions.items() if isinstance(definitions, Mapping) else ():
        description = _get(definition, "description")
        if isinstance(description, str) and description:
            lines.append("// " + description)
        # Its properties at the margin, as parameters are (only a dict's: an object with a
        # `properties` attribute is no schema we can read).
        if isinstance(definition, Mapping) and definition.get("properties"):
            body = _ts_object(definition, 0, 0, one_line)
        else:
            body = _ts_type(definition, 0, one_line)
        lines.append(f"type {name} = {body};")
    return lines


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
        lines += _definitions(parameters, one_line)
        title = _get(parameters, "title")
        if isinstance(title, str) and title:  # as a property's title: a note above the rest
            lines.append("// " + title)
        description = function.get("description")
        if isinstance(description, str) and description.strip():
            lines += [("// " + line.strip()).rstrip() for line in description.strip().split("\n")]
        if isinstance(parameters, Mapping) and parameters.get("properties"):
            lines.append(f"type {name} = (_: {_ts_object(parameters, 0, 0, one_line)}) => any;")
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def render_response_format(json_schema: Any) -> str:
    """A json_schema response format as the prompt section the server bills: its name, its
    description, and the schema's compact JSON without its `title`s."""
    name, description = _get(json_schema, "name"), _get(json_schema, "description")
    text = f"# Response Formats\n\n## {name if isinstance(name, str) else ''}\n\n"
    if isinstance(description, str) and description:
        text += description + "\n\n"
    schema = _untitled(_get(json_schema, "schema"))
    return text + _json(schema, separators=(",", ":"))


def _untitled(value: Any) -> Any:
    """A JSON schema without its `title` annotations (a property named "title" stays)."""
    if isinstance(value, Mapping):
        return {
            k: _untitled(v) for k, v in value.items() if not (k == "title" and isinstance(v, str))
        }
    if isinstance(value, (list, tuple)):
        return [_untitled(v) for v in value]
    return value
