"""Other OpenAI instrumentations: two at once would count every token twice.

The official `opentelemetry-instrumentation-openai-v2` (and `-genai-openai`),
OpenLLMetry and OpenInference all instrument the same SDK methods; the first three
register under the `opentelemetry_instrumentor` entry point name `openai`, which
`opentelemetry-instrument` loads next to ours. We look for both signs when
instrumenting (one already wrapped the SDK; one is installed for auto-instrumentation)
and say so once, with how to turn one of them off. We never unpatch anyone.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata
from typing import Any

import wrapt

logger = logging.getLogger("opentelemetry.instrumentation.openai_usage")

GROUP = "opentelemetry_instrumentor"
OUR_NAME = "openai_usage"
# Entry point names other OpenAI instrumentations register under.
OTHER_NAMES = ("openai", "openai_v2", "openinference_openai")
# wrapt 2 made `ObjectProxy` a subclass; `FunctionWrapper` derives from the base.
_PROXY: type = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)
# Where the OpenAI instrumentations we know put their wrappers: the chat `create` (the
# official one, OpenLLMetry, Langfuse), or the client's `request`, under every endpoint's
# method (OpenInference: its span is a child of ours, and counts the same tokens). The
# SDK's `OpenAI` only inherits `request`: one in its own namespace is someone's wrapper.
_PROBES = (
    ("openai.resources.chat.completions", "Completions", "create"),
    ("openai", "OpenAI", "request"),
)


_OUR_PACKAGE = "opentelemetry.instrumentation.openai_usage"


def _origin(function: Any) -> str:
    """The module of a wrapt wrapper's wrapper function (or of the function itself)."""
    wrapper = getattr(function, "_self_wrapper", None) or function
    return getattr(wrapper, "__module__", None) or type(wrapper).__module__


def is_ours(function: Any) -> bool:
    """Whether `function` is one of our wrappers (a wrapt wrapper made by this package)."""
    return isinstance(function, _PROXY) and _origin(function).startswith(_OUR_PACKAGE)


def ours_within(function: Any) -> bool:
    """Whether one of our wrappers is in the chain of wrappers around a method: there, left
    under another's wrapper by `uninstrument()`, it is ours to use again, not to stack."""
    for _ in range(32):  # a chain of wrappers, never a cycle; bounded all the same
        if function is None:
            return False
        if is_ours(function):
            return True
        function = getattr(function, "__wrapped__", None)
    return False


def _wrapped_by() -> str | None:
    """The module of whatever already wraps `Completions.create` or `OpenAI.request`, if
    anything does.

    Only modules already imported are looked at: a wrapper put on a method imports its
    module, so one not imported has none, and importing it here would load the SDK (some
    500 modules, 0.5 s of CPU on openai 3.x) into a process that may never use it, as
    `instrument()` runs under `opentelemetry-instrument` before the application's imports.
    """
    for module_name, cls_name, method in _PROBES:
        cls = getattr(sys.modules.get(module_name), cls_name, None)
        if cls is None:
            continue
        current: Any = cls.__dict__.get(method)
        # The OpenAI instrumentations we know all patch with wrapt; the SDK's own
        # decorators leave a `__wrapped__` too, so that alone would mean nothing.
        if isinstance(current, _PROXY) and not is_ours(current):
            return _origin(current)
    return None


def _disabled() -> set[str]:
    """Entry point names `opentelemetry-instrument` skips (its own variable, as it reads it;
    `*` skips them all)."""
    value = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {name.strip() for name in value.split(",") if name.strip()}


def _registered() -> dict[str, str]:
    """Other installed distributions registering an OpenAI auto-instrumentation that
    `opentelemetry-instrument` would load (not one the user disabled there): how to name
    each, and its entry point name (what the user disables)."""
    found = {}
    disabled = _disabled()
    for entry_point in metadata.entry_points(group=GROUP):
        if entry_point.name in OTHER_NAMES and not disabled & {entry_point.name, "*"}:
            dist = getattr(entry_point, "dist", None)
            name = getattr(dist, "name", None) or entry_point.value
            found[f"{name} (entry point '{entry_point.name}')"] = entry_point.name
    return found


def _entry_point_of(module: str) -> str | None:
    """The entry point name that the instrumentation whose code `module` is registers for
    auto-instrumentation under, if it registers one: what disables it there. Not every
    one does (Langfuse's `langfuse.openai` patches the SDK when imported)."""
    for entry_point in metadata.entry_points(group=GROUP):
        package = entry_point.value.split(":")[0].strip()
        if entry_point.name != OUR_NAME and (module == package or module.startswith(package + ".")):
            return str(entry_point.name)
    return None


def warn_about_others() -> str | None:
    """Log one warning naming any other active or registered OpenAI instrumentation."""
    active = _wrapped_by()
    registered = _registered()
    if active:
        name = _entry_point_of(active)
        if name is None:  # not one opentelemetry-instrument loads: only code turns it off
            how = (
                "Keep one: stop using that one, or disable this one (with "
                f"opentelemetry-instrument, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={OUR_NAME}; "
                "in code, uninstrument())."
            )
        else:
            active = f"{active} (entry point '{name}')"
            how = (
                "Keep one: with opentelemetry-instrument, set "
                f"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={name} "
                f"(or ={OUR_NAME} to disable this one); in code, uninstrument() one of them."
            )
        message = (
            f"Another OpenAI instrumentation is active: the OpenAI SDK is already "
            f"instrumented by {active}. Both record every call and count its tokens twice. " + how
        )
    elif registered:
        names = ",".join(sorted(set(registered.values())))
        message = (
            "Another OpenAI instrumentation is installed for auto-instrumentation: "
            + ", ".join(sorted(registered))
            + ". Run under opentelemetry-instrument, both would record every call and count "
            f"its tokens twice: set OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={names} (or "
            f"={OUR_NAME} to disable this one)."
        )
    else:
        return None
    logger.warning(message)
    return message
