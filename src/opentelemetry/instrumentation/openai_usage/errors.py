"""Two kinds of error: the user's call failing, and our own code failing.

The first is recorded on the span, with secrets scrubbed from its text (an
SDK error message can quote a masked key or a header). The second must never
reach the user: it is logged once per place it happened and the call goes on.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from opentelemetry.trace import Span, Status, StatusCode

from . import telemetry as t

logger = logging.getLogger("opentelemetry.instrumentation.openai_usage")

_logged: set[str] = set()
_logged_lock = threading.Lock()

# Key-shaped strings: OpenAI keys (sk-..., sk-proj-...), bearer tokens, the Azure
# `api-key` header when an error text echoes headers, and JWTs (Microsoft Entra ID tokens,
# as an `azure_ad_token_provider` makes them per request): their header and payload are
# base64 of JSON objects, so both start "eyJ". A JWT echoed bare, with no request at hand
# to read it from (a non-streamed failed response), is caught by its shape alone.
# A credential the text itself shows as one (a header echoed as `Bearer <token>` or
# `api-key: <key>`), the value captured: wherever else the text quotes that value bare, it
# is scrubbed too. So is a token made for one request that the SDK's error no longer holds
# (openai 3.63).
_ECHOED_CREDENTIALS = (
    r"[Bb]earer\s+([A-Za-z0-9._\-~+/=*]+)|api-key['\"]?\s*[:=]\s*['\"]?([^\s'\",}]+)"
)
# OpenAI organization and project ids, which the service's errors name ("Rate limit
# reached for gpt-4o in organization org-..."): the key's own when the client set none.
_SECRET_PATTERNS = re.compile(
    rf"sk-[A-Za-z0-9_\-*]{{3,}}|{_ECHOED_CREDENTIALS}"
    r"|eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
    r"|\borg-[A-Za-z0-9]{16,}|\bproj_[A-Za-z0-9]{16,}"
)
_ECHOED = re.compile(_ECHOED_CREDENTIALS)
# HTTP Basic credentials echoed as a header's value (`Basic <base64 of user:password>`): an
# `http_client` given `auth=(user, password)`, or a `user:password@` base URL, sends them.
# Taken only where the token decodes to a `user:password` pair, so that the word "basic"
# in a message does not scrub the word after it.
_ECHOED_BASIC = re.compile(r"[Bb]asic\s+([A-Za-z0-9+/]{4,}={0,2})")
_MAX_TEXT = 4096


def internal_error(where: str, exc: BaseException) -> None:
    """Report a bug of ours once per site; never raise."""
    try:
        with _logged_lock:
            if where in _logged:
                return
            _logged.add(where)
        logger.warning(
            "openai-usage instrumentation failed in %s (%s: %s); the OpenAI call is "
            "unaffected. This is reported once.",
            where,
            type(exc).__name__,
            redact(str(exc), ()),
            exc_info=exc,
        )
    except Exception:  # logging itself failed: nothing sensible left to do
        pass


def redact(text: str, secrets: Iterable[str], texts: Sequence[str] = ()) -> str:
    """An error text without the call's secrets, key-shaped strings, and (given `texts`,
    the request's content) what it quotes of the request's content."""
    echoed = [value for match in _ECHOED.findall(text) for value in match]
    for token in _ECHOED_BASIC.findall(text):
        echoed.extend(basic_credentials(token))
    for secret in (*secrets, *echoed):
        # Stripped too: a key read from a file keeps its line break, which the HTTP library
        # refuses, quoting the header's value escaped (`b'<key>\n'`) in its error.
        for form in {secret, secret.strip()}:
            if form and len(form) >= 8:
                text = text.replace(form, "[REDACTED]")
    text = _SECRET_PATTERNS.sub("[REDACTED]", text)
    text = text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
    return encodable(without_content(text, texts) if texts else text)


# UTF-16 surrogates: what JSON escapes of half a character beyond the BMP (`"\ud83d"`, a
# gateway cutting a quoted prompt mid-emoji, a stream whose chunks split an emoji) decode to.
SURROGATES = re.compile(r"[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` encodable in UTF-8, as exporters encode it (OTLP's protobuf strings must be
    valid UTF-8: a span whose status cannot be encoded is not exported at all): halves
    of a pair joined, a lone half as U+FFFD."""
    if SURROGATES.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# Content is found in an error text by anchors: windows of this many characters taken at
# this stride from each content string, each match then widened as far as the two agree.
# So every copied run of 2 * _ANCHOR - 1 characters or more is found, at a cost of one
# lookup per _ANCHOR characters of content; shorter content strings (from _SHORT on) are
# looked for whole.
_ANCHOR = 16
_SHORT = 6
# Content characters looked at per error: servers quote the start of what they reject,
# and this runs on the caller's (failing) call.
_MAX_SCANNED = 1 << 16
_MAX_SHORT = 2000
_CONTENT = "[content]"


def _forms(text: str) -> set[str]:
    """The text as an error message may quote it: as is, escaped by `repr()` or JSON, and
    escaped once more (the SDK's "Error code: 400 - {body}" is the `repr()` of a dict)."""
    forms = {text, repr(text)[1:-1]}
    try:
        forms.add(json.dumps(text)[1:-1])
        forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
    except ValueError:  # a lone surrogate: no JSON form
        pass
    again = set()
    for form in forms:  # as repr() escapes it inside a string quoted either way
        again.add(repr(form)[1:-1])
        escaped = form.replace("\\", "\\\\")
        again.add(escaped.replace("'", "\\'"))
        again.add(escaped.replace('"', '\\"'))
    return forms | again


def without_content(text: str, texts: Sequence[str]) -> str:
    """`text` with what it copies of `texts` (whole, cut, or escaped) as `[content]`.

    Servers' validation errors quote the offending input, whole or cut, usually through
    `repr()` or JSON ("input_value='My card number is ...'"), so each content string is
    looked for in those forms too.
    """
    covered = bytearray(len(text))
    short = 0
    scanned = 0
    index: dict[str, list[int]] | None = None
    for content in texts:
        if scanned >= _MAX_SCANNED:
            break
        content = content[: _MAX_SCANNED - scanned]
        scanned += len(content)
        for form in _forms(content):
            if len(form) < _SHORT:
                continue
            if len(form) < 2 * _ANCHOR:  # short: only whole
                short += 1
                if short <= _MAX_SHORT:
                    _cover_whole(text, form, covered)
                continue
            if index is None:
                index = _windows(text)
            _cover_copies(text, form, index, covered)
    if not any(covered):
        return text
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(_CONTENT)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _cover_whole(text: str, form: str, covered: bytearray) -> None:
    start = text.find(form)
    while start >= 0:
        covered[start : start + len(form)] = b"\x01" * len(form)
        start = text.find(form, start + len(form))


def _windows(text: str) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for i in range(len(text) - _ANCHOR + 1):
        index.setdefault(text[i : i + _ANCHOR], []).append(i)
    return index


def _cover_copies(text: str, form: str, index: dict[str, list[int]], covered: bytearray) -> None:
    done = 0  # how far into `form` the runs found so far reach: later anchors there are in them
    for j in range(0, len(form) - _ANCHOR + 1, _ANCHOR):
        if j + _ANCHOR <= done:
            continue
        for i in index.get(form[j : j + _ANCHOR], ()):
            a, b = i, j
            while a > 0 and b > 0 and text[a - 1] == form[b - 1]:
                a, b = a - 1, b - 1
            e, f = i + _ANCHOR, j + _ANCHOR
            while e < len(text) and f < len(form) and text[e] == form[f]:
                e, f = e + 1, f + 1
            covered[a:e] = b"\x01" * (e - a)
            done = max(done, f)


# Header or query parameter names whose values are credentials: `Authorization`,
# `api-key`, and the other usual ones (`x-api-key`, `Ocp-Apim-Subscription-Key` of Azure API
# Management, a `key`/`token`/`sig` query parameter of a gateway...). Matched loosely:
# scrubbing a value that was no secret costs nothing.
_CREDENTIAL_NAMES = frozenset({"authorization", "code", "key", "sig", "signature", "token"})
_CREDENTIAL_PARTS = (
    "auth", "key", "token", "secret", "pass", "pwd", "jwt", "credential", "signature", "cookie",
    "session",
)  # fmt: skip


def is_credential(name: Any) -> bool:
    """Does a header's or query parameter's name say its value is a credential?"""
    lowered = str(name).lower()
    return lowered in _CREDENTIAL_NAMES or any(part in lowered for part in _CREDENTIAL_PARTS)


def credentials_in(pairs: Any) -> list[str]:
    """The credential values among some headers or query parameters (a mapping or
    `httpx` headers / query params), and a bearer's token."""
    values: list[str] = []
    try:
        items = pairs.multi_items() if hasattr(pairs, "multi_items") else pairs.items()
    except Exception:
        return values
    try:
        for name, value in items:
            if isinstance(value, str) and is_credential(name):
                values.append(value)
                scheme, _, token = value.partition(" ")
                if token and scheme.lower() == "bearer":
                    values.append(token.strip())
                elif token and scheme.lower() == "basic":
                    values.extend(basic_credentials(token.strip()))
                if "cookie" in str(name).lower():  # each cookie's value, as echoed alone
                    for cookie in value.split(";"):
                        values.append(cookie.partition("=")[2].strip())
    except Exception:  # an odd mapping: what was found so far
        pass
    return values


def basic_credentials(token: str) -> list[str]:
    """An HTTP Basic token and the password it encodes (an error may echo either bare), or
    nothing when the token is no base64 of a `user:password` pair."""
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except ValueError:  # not base64, or not text (UnicodeDecodeError is a ValueError)
        return []
    _, colon, password = decoded.partition(":")
    if not colon:
        return []
    return [token, password] if password else [token]


def http_client_credentials(client: Any) -> list[str]:
    """The credentials of the HTTP client the SDK sends through (`http_client=`): its
    default headers, and the header its `auth=(user, password)` adds to each request as it
    is sent, which openai 3.x keeps in no error it raises."""
    try:
        http = getattr(client, "_client", None)
        if http is None:
            return []
        values = credentials_in(getattr(http, "headers", None))
        header = getattr(getattr(http, "auth", None), "_auth_header", None)  # httpx's BasicAuth
        if isinstance(header, str):
            values.extend(credentials_in({"authorization": header}))
        return values
    except Exception:  # an odd HTTP client (a property of its own raising): nothing found
        return []


def url_credentials(url: Any) -> list[str]:
    """The credentials in a URL's user info (`https://user:secret@gateway/v1`): the password,
    and the `Basic` token the HTTP library sends for them in place of the key's bearer
    (a gateway's 401 echoing the `Authorization` header it got shows that token)."""
    try:
        username, password = getattr(url, "username", ""), getattr(url, "password", "")
        if not isinstance(username, str) or not isinstance(password, str):
            return []
        if not username and not password:
            return []
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return [value for value in (password, token, f"{username}:{password}") if value]
    except Exception:  # an odd URL object: nothing found
        return []


def tool_credentials(tools: Any) -> list[str]:
    """The credentials a request gives the remote tools it names: a Responses MCP tool's
    OAuth `authorization`, every header it has sent to its server (they exist to
    authenticate), and those of its `server_url`. A server's error about the tool (its
    server refused, a bad field) may quote the tool whole."""
    values: list[str] = []
    for tool in tools if isinstance(tools, (list, tuple)) else ():
        if not isinstance(tool, Mapping):
            continue
        values.extend(credentials_in(tool))
        headers = tool.get("headers")
        if isinstance(headers, Mapping):
            values.extend(value for value in headers.values() if isinstance(value, str))
            values.extend(credentials_in(headers))  # a bearer's token alone, too
        url = tool.get("server_url")
        if isinstance(url, str):
            try:
                parts = urlsplit(url)
                values.extend(credentials_in(dict(parse_qsl(parts.query))))
                values.extend(value for value in (parts.password, parts.username) if value)
            except ValueError:  # not a URL: nothing in it to find
                pass
    return values


def sent_request(holder: Any) -> Any:
    """The request the SDK really sent, as an error, a stream or a raw response holds it
    (`request`, `response.request`, `http_request`): None if it holds none."""
    try:
        request = getattr(holder, "request", None)
        if request is None:
            request = getattr(getattr(holder, "response", None), "request", None)
        if request is None:
            request = getattr(holder, "http_request", None)
        return request
    except Exception:  # a property of an odd object raising: no request to read
        return None


def sent_credentials(request: Any) -> list[str]:
    """The credentials of a request the SDK really sent: its headers and its URL's query
    parameters (among them a token an `azure_ad_token_provider` made for it alone)."""
    values = credentials_in(getattr(request, "headers", None))
    url = getattr(request, "url", None)
    values.extend(credentials_in(getattr(url, "params", None)))
    values.extend(url_credentials(url))
    return values


def error_type(exc: BaseException) -> str:
    """The exception's class name: low-cardinality, what the conventions ask for."""
    return type(exc).__qualname__


def _without_inputs(exc: BaseException) -> str | None:
    """A pydantic `ValidationError`'s text without the input values it quotes, or None
    for any other exception.

    `parse()` raises one when the reply does not fit `response_format` (and the SDK, with
    strict response validation, chains one to its own error): its text quotes the reply,
    which is content, as `input_value=...`. The locations, messages and types say what
    went wrong without it. (pydantic 1's text quotes no input: its `errors()` takes no
    arguments, and its text is kept.)
    """
    errors = getattr(exc, "errors", None)
    if not type(exc).__module__.startswith("pydantic") or not callable(errors):
        return None
    try:
        details = errors(include_url=False, include_input=False, include_context=False)
        count, title = len(details), getattr(exc, "title", "")
        lines = [f"{count} validation error{'' if count == 1 else 's'} for {title}"]
        for detail in details:
            lines.append(".".join(str(part) for part in detail.get("loc", ())))
            lines.append(f"  {detail.get('msg')} [type={detail.get('type')}]")
        return "\n".join(lines)
    except Exception:
        return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those the traceback prints with it (its cause or context)."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 16 and all(link is not seen for seen in chain):
        chain.append(link)
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return chain


def _error_text(
    exc: BaseException, secrets: Iterable[str], texts: Sequence[str], hide_content: bool
) -> tuple[str, str]:
    """The exception's text and that text as we record it: scrubbed of secrets and,
    unless content is captured, of what it quotes of the request or the reply."""
    raw = str(exc)
    text = (_without_inputs(exc) if hide_content else None) or raw
    return raw, redact(text, secrets, texts)


def record_error(
    span: Span,
    exc: BaseException,
    secrets: Iterable[str],
    texts: Sequence[str] = (),
    hide_content: bool = True,
) -> None:
    """Status ERROR, `error.type`, and an `exception` event with scrubbed text.

    `texts`: the request's content, when it is not captured: what a server's error
    quotes of it is scrubbed too, or it would reach telemetry through the error.
    `hide_content` (content is not captured on spans): a validation error's quote of the
    reply is left out as well.
    """
    secrets = (*secrets, *sent_credentials(sent_request(exc)))
    raw, message = _error_text(exc, secrets, texts, hide_content)
    span.set_status(Status(StatusCode.ERROR, f"{error_type(exc)}: {message}"))
    span.set_attribute(t.ERROR_TYPE, error_type(exc))
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    # Each message in it again (the exception's, and those of its cause or context),
    # scrubbed once: the rest is code and file names.
    if raw and message != raw:
        stack = stack.replace(raw, message)
    for link in _chain(exc)[1:]:
        link_raw, link_message = _error_text(link, secrets, texts, hide_content)
        if link_raw and link_message != link_raw:
            stack = stack.replace(link_raw, link_message)
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception.message": message,
            "exception.stacktrace": redact(stack, secrets),
            "exception.escaped": True,
        },
    )


def record_error_event(
    span: Span, code: str, message: str, secrets: Iterable[str], texts: Sequence[str] = ()
) -> None:
    """A failure the server reported as a stream event, with no exception: status ERROR
    and `error.type` = the server's error code, which the conventions allow."""
    description = redact(message, tuple(secrets), texts)
    span.set_status(Status(StatusCode.ERROR, f"{code}: {description}" if description else code))
    span.set_attribute(t.ERROR_TYPE, code)
