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
from collections.abc import Iterable

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


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[REDACTED]")
    text = _SECRET_PATTERNS.sub("[REDACTED]", text)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


def error_type(exc: BaseException) -> str:
    """The exception's class name: low-cardinality, what the conventions ask for."""
    return type(exc).__qualname__


def record_error(span: Span, exc: BaseException, secrets: Iterable[str]) -> None:
    """Status ERROR, `error.type`, and an `exception` event with scrubbed text."""
    secrets = tuple(secrets)
    message = redact(str(exc), secrets)
    span.set_status(Status(StatusCode.ERROR, f"{error_type(exc)}: {message}"))
    span.set_attribute(t.ERROR_TYPE, error_type(exc))
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception.message": message,
            "exception.stacktrace": redact(stack, secrets),
            "exception.escaped": True,
        },
    )
