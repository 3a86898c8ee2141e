"""OpenTelemetry instrumentation for the OpenAI Python SDK, built around token usage.

Every chat, Responses, legacy completion and embeddings call, sync or async,
streamed or not, becomes one CLIENT span plus GenAI metrics carrying the usage
the server billed. For streams we ask the server for its usage chunk (and hide
it from the caller when the caller did not ask), so streams get exact usage with
no code change; when no usage comes at all, a tiktoken estimate, marked as one.

Usage::

    from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor

    OpenAIUsageInstrumentor().instrument()

or with no code change: ``opentelemetry-instrument python app.py``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Collection
from functools import partial
from typing import Any, ClassVar

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import NoOpMeter, get_meter
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import get_tracer

from .capture import Capture
from .client_requests import client_request_wrapper
from .config import Settings, load_settings
from .errors import internal_error
from .open_calls import any_open, keep_exit_hook_last
from .others import is_ours, ours_within, warn_about_others
from .package import _instruments
from .patches import CLIENT_REQUESTS, ENDPOINTS, HELPER_CLOSES, ClientRequest, Endpoint, HelperClose
from .streams import async_helper_close_wrapper, helper_close_wrapper
from .telemetry import Instruments
from .version import __version__
from .wrappers import Runtime, async_wrapper, sync_wrapper

__all__ = ["OpenAIUsageInstrumentor", "Settings", "__version__"]

# The conventions' version whose names we record: the newest schema of the first
# `opentelemetry-semantic-conventions` release that defines every one of them (0.63b0:
# `gen_ai.provider.name` is 1.37, the chunk-timing metrics and cache/reasoning usage later).
_SCHEMA_URL = Schemas.V1_41_1.value


class OpenAIUsageInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments the OpenAI SDK.

    Keyword arguments of `instrument()` (each also settable by environment
    variable, see the README's Configuration table): `tracer_provider`, `meter_provider`,
    `logger_provider` (content events), `inject_stream_usage`, `chunk_timing`,
    `usage_estimate`, `encodings`, `capture_message_content`, `max_content_length`,
    `prices`, `default_prices`.
    """

    _runtime: Runtime | None = None
    # The one runtime of this process, kept after uninstrumenting: see `Runtime`.
    _kept: Runtime | None = None
    _patched: list[Endpoint | HelperClose | ClientRequest]
    # SDK modules not imported yet when instrumenting, module -> what to patch there once
    # imported (see `_patch`); and the modules whose import hook is registered (once each:
    # wrapt fires a module's hooks once, on its first import).
    _pending: dict[str, list[tuple[Endpoint | HelperClose | ClientRequest, Callable[[bool], Any]]]]
    _hooked: ClassVar[set[str]] = set()

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        try:
            settings = load_settings(kwargs)
        except Exception as exc:  # a setting we failed to read must not cost the traces
            internal_error("reading the settings", exc)
            settings = Settings()
        try:
            tracer = get_tracer(
                __name__,
                __version__,
                tracer_provider=kwargs.get("tracer_provider"),
                schema_url=_SCHEMA_URL,
            )
        except Exception as exc:  # not a provider, or a broken one: the global one then
            internal_error("getting a tracer from tracer_provider (the global one is used)", exc)
            tracer = get_tracer(__name__, __version__, schema_url=_SCHEMA_URL)
        try:
            meter = get_meter(
                __name__,
                __version__,
                meter_provider=kwargs.get("meter_provider"),
                schema_url=_SCHEMA_URL,
            )
            instruments = Instruments(meter)
        except Exception as exc:  # a broken meter provider must not cost the traces
            internal_error("creating the metric instruments", exc)
            instruments = Instruments(NoOpMeter(__name__))
        capture = _capture(settings, kwargs)
        runtime = OpenAIUsageInstrumentor._kept
        if runtime is None:
            runtime = Runtime(tracer, instruments, settings, capture)
            OpenAIUsageInstrumentor._kept = runtime
        else:
            runtime.configure(tracer, instruments, settings, capture)
        self._runtime = runtime
        try:
            runtime.estimator.start()  # encodings load in the background, never on a call
            # (Re-)registered, so that at exit it runs before the shutdown of any provider
            # made before this call: open streams still get their spans out.
            keep_exit_hook_last(
                *(
                    kwargs.get(name)
                    for name in ("tracer_provider", "meter_provider", "logger_provider")
                )
            )
        except Exception as exc:
            internal_error("starting up", exc)
        try:
            warn_about_others()  # before patching, so that our own wrapper is not mistaken
        except Exception as exc:
            internal_error("looking for other OpenAI instrumentations", exc)
        self._patched = []
        self._pending = {}
        for endpoint in ENDPOINTS:
            factory = async_wrapper if endpoint.is_async else sync_wrapper
            self._patch(endpoint, partial(factory, runtime, endpoint))
        for helper in HELPER_CLOSES:
            closer = async_helper_close_wrapper if helper.is_async else helper_close_wrapper
            self._patch(helper, partial(_as_is, closer))
        for request in CLIENT_REQUESTS:  # requests sent past the resource methods (litellm's)
            self._patch(request, partial(_as_is, client_request_wrapper(runtime, request)))

    def _patch(
        self, target: Endpoint | HelperClose | ClientRequest, wrapper_for: Callable[[bool], Any]
    ) -> None:
        """Wrap one SDK method; an API or method this SDK release lacks is skipped quietly.

        `wrapper_for(delegates)`: the wrapper, told whether this release's method calls
        another patched method rather than sending its request itself."""
        if target.module not in sys.modules:
            # Patched when the app first imports it (the SDK imports an API's module when
            # the client's attribute for it is first used), not imported here: openai 3.x's
            # `beta.responses` alone is some 500 modules, 0.4 s of CPU added to the start of
            # every process, for an API most apps never call. An SDK without the module
            # never imports it: nothing to patch, as below.
            self._pending.setdefault(target.module, []).append((target, wrapper_for))
            if target.module not in OpenAIUsageInstrumentor._hooked:
                try:
                    wrapt.register_post_import_hook(self._imported, target.module)
                    OpenAIUsageInstrumentor._hooked.add(target.module)
                except Exception as exc:
                    internal_error(f"waiting for {target.module} to be imported", exc)
            return
        try:
            cls_name, method = target.method.rsplit(".", 1)
            try:
                module = importlib.import_module(target.module)
            except ModuleNotFoundError:
                return  # e.g. the Responses API before openai 1.66
            function = getattr(getattr(module, cls_name, None), method, None)
            if function is None:
                return  # e.g. chat `parse` before 1.92
            # Calling a method we patch: its span is the call's only one (see `Endpoint`).
            delegates = getattr(target, "may_delegate", False) and not _posts(function)
            if not ours_within(function):  # else ours is there, under another's: active again
                wrapt.wrap_function_wrapper(target.module, target.method, wrapper_for(delegates))
            self._patched.append(target)
        except Exception as exc:
            internal_error(f"patching {target.module}.{target.method}", exc)

    def _imported(self, module: Any) -> None:
        """A pending SDK module was imported: patch what waits for it, if still instrumented
        (after `uninstrument()` nothing waits)."""
        try:
            name = module.__name__
            OpenAIUsageInstrumentor._hooked.discard(name)
            for target, wrapper_for in getattr(self, "_pending", {}).pop(name, []):
                self._patch(target, wrapper_for)
        except Exception as exc:
            internal_error("patching a module imported after instrument()", exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._pending = {}
        if self._runtime is not None:
            self._runtime.active = False
            self._runtime = None
        # A stream helper (`chat.completions.stream()`...) opened before may still be open:
        # only its `close()` (its `with` block left) tells that it ended, so with any stream
        # of ours open, those wrappers stay (a pass-through for helpers not reading one of
        # ours); `instrument()` takes them up again rather than adding others.
        keep_closers = any_open()
        for endpoint in getattr(self, "_patched", []):
            if keep_closers and isinstance(endpoint, HelperClose):
                continue
            cls_name, method = endpoint.method.rsplit(".", 1)
            try:
                cls = getattr(importlib.import_module(endpoint.module), cls_name)
                # Only ours: with another's wrapper put over ours, unwrapping would take
                # theirs off. Ours then stays under it, a pass-through while the runtime is
                # inactive, and `instrument()` makes it trace again rather than add another.
                if is_ours(cls.__dict__.get(method)):
                    unwrap(cls, method)
            except Exception as exc:
                internal_error(f"unpatching {endpoint.module}.{endpoint.method}", exc)
        self._patched = []


def _as_is(wrapper: Any, delegates: bool) -> Any:
    """A wrapper that is the same whatever the method it wraps calls."""
    return wrapper


def _posts(function: Any) -> bool:
    """Whether an SDK method sends its request itself (reads `self._post`)."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    return code is not None and "_post" in code.co_names


def _capture(settings: Settings, kwargs: dict[str, Any]) -> Capture | None:
    """Content capture, only when the user opted in; events go to `logger_provider`."""
    if not settings.captures_content:
        return None
    logger = None
    if settings.content_in_event:
        try:
            from opentelemetry._logs import get_logger

            # The conventions' version, as for the tracer and meter: the event follows them.
            logger = get_logger(
                __name__,
                __version__,
                logger_provider=kwargs.get("logger_provider"),
                schema_url=_SCHEMA_URL,
            )
        except Exception as exc:
            internal_error("creating the event logger", exc)
    return Capture(settings, logger)
