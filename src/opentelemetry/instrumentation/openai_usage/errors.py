"""Two kinds of error: the user's call failing, and our own code failing.

The first is recorded on the span, with secrets scrubbed from its text (an
SDK error message can quote a masked key or a header). The second must never
reach the user: it is logged once per place it happened and the call goes on.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable, Sequence

from opentelemetry.trace import Span, Status, StatusCode

from . import telemetry as t

logger = logging.getLogger("opentelemetry.instrumentation.openai_usage")

_logged: set[str] = set()
_logged_lock = threading.Lock()

# Key-shaped strings: OpenAI keys (sk-..., sk-proj-...), bearer tokens, and
# the Azure `api-key` header when an error text echoes headers.
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{3,}|[Bb]earer\s+[A-Za-z0-9._\-~+/=*]+|api-key['\"]?\s*[:=]\s*['\"]?[^\s'\",}]+)"
)
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
    the request's content) any run of the request's content it quotes."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[REDACTED]")
    text = _SECRET_PATTERNS.sub("[REDACTED]", text)
    text = text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
    return _without_copies(text, texts) if texts else text


# A run of this many characters copied from the request's content is content; shorter
# content strings are scrubbed where they appear whole (from this length on).
_RUN = 12
_SHORT = 6
# Content characters compared per error: the beginning of a huge prompt is what servers
# quote, and the comparison runs on the caller's (failing) call.
_MAX_SCANNED = 1 << 18
_CONTENT = "[content]"


def _without_copies(text: str, texts: Sequence[str]) -> str:
    """`text` with every run of `_RUN`+ characters that also occurs in `texts` replaced.

    Servers' validation errors quote the offending input, whole or cut ("input_value=
    'My card number is ...'"): matching runs, not whole strings, catches both.
    """
    for short in texts:
        if _SHORT <= len(short) < _RUN:
            text = text.replace(short, _CONTENT)
    if len(text) < _RUN:
        return text
    at: dict[str, list[int]] = {}
    for i in range(len(text) - _RUN + 1):
        at.setdefault(text[i : i + _RUN], []).append(i)
    covered = bytearray(len(text))
    scanned = 0
    for piece in texts:
        piece = piece[: _MAX_SCANNED - scanned]
        scanned += len(piece)
        for i in range(len(piece) - _RUN + 1):
            for start in at.get(piece[i : i + _RUN], ()):
                covered[start : start + _RUN] = b"\x01" * _RUN
        if scanned >= _MAX_SCANNED:
            break
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


def error_type(exc: BaseException) -> str:
    """The exception's class name: low-cardinality, what the conventions ask for."""
    return type(exc).__qualname__


def record_error(
    span: Span, exc: BaseException, secrets: Iterable[str], texts: Sequence[str] = ()
) -> None:
    """Status ERROR, `error.type`, and an `exception` event with scrubbed text.

    `texts`: the request's content, when it is not captured: what a server's error
    quotes of it is scrubbed too, or it would reach telemetry through the error.
    """
    secrets = tuple(secrets)
    message = redact(str(exc), secrets, texts)
    span.set_status(Status(StatusCode.ERROR, f"{error_type(exc)}: {message}"))
    span.set_attribute(t.ERROR_TYPE, error_type(exc))
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception.message": message,
            "exception.stacktrace": redact(stack, secrets, texts),
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
