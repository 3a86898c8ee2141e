"""Calls still open (streams, raw responses), and ending them when the process exits.

A stream the caller never finished is ended when it is collected; one still held at
interpreter exit is not collected in time, so an exit hook ends it (as abandoned), and
must run before the tracer and meter providers' own shutdown hooks, or its span and
metrics are lost. atexit runs hooks last-registered first, so ours is registered again
whenever a provider made after it comes into use.
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from typing import Any, Protocol

from opentelemetry import metrics, trace

from .encodings import finish_loading_for_exit
from .errors import internal_error
from .estimator import EXIT_WAIT_S, FINISHER


class Abandonable(Protocol):
    def abandon(self) -> None: ...


# Streams (and raw responses) not ended yet: at interpreter exit they are ended (as
# abandoned) by `end_open_streams`, registered with atexit after the application's
# tracer provider was made, so that it runs before that provider shuts down.
_OPEN: weakref.WeakSet[Abandonable] = weakref.WeakSet()


def track_open(item: Abandonable) -> None:
    """Hold `item` to be ended at exit, and make sure that runs before the providers'
    shutdown (see `keep_exit_hook_last`)."""
    keep_exit_hook_last()
    _OPEN.add(item)


# The global providers when `keep_exit_hook_last` last looked: while they stay, a stream
# has nothing more to check.
_GLOBALS_SEEN: list[object] = []
# Every provider made before `end_open_streams` was last registered with atexit: their
# shutdown, registered when they were made, runs after it.
_PRECEDED: weakref.WeakSet[Any] = weakref.WeakSet()


def keep_exit_hook_last(*providers: object) -> None:
    """(Re-)register `end_open_streams` with atexit when a provider in use (the global
    ones, and `providers`, those given to `instrument()`) is one it was not registered
    after: a provider made and set after that (`set_tracer_provider` after `instrument()`,
    say) registered its own shutdown later, which would run first and lose the spans of
    streams still open at exit. Only then, not per stream nor per `instrument()`: atexit
    never frees an unregistered slot, so every re-registration grows its table for the
    process's life, and makes each later one scan it (60 µs per stream after 100,000 of
    them)."""
    current: list[object] = [trace.get_tracer_provider(), metrics.get_meter_provider()]
    if not providers and current == _GLOBALS_SEEN:
        return
    _GLOBALS_SEEN[:] = current
    current.extend(p for p in providers if p is not None)
    if all(_preceded(p) for p in current):
        return
    atexit.unregister(end_open_streams)
    atexit.register(end_open_streams)
    for provider in current:
        with contextlib.suppress(TypeError):  # no weak reference to it: never known
            _PRECEDED.add(provider)


def _preceded(provider: object) -> bool:
    try:
        return provider in _PRECEDED
    except TypeError:  # unhashable: never known
        return False


def untrack(item: Abandonable) -> None:
    _OPEN.discard(item)


def any_open() -> bool:
    """Whether a stream (or raw response) of ours is still open."""
    return len(_OPEN) > 0


def _open_now() -> list[Abandonable]:
    """The streams (and raw responses) open now, taken at once.

    Other threads may open or end one meanwhile: daemon threads run on while the exit
    hooks do. `list(_OPEN)` walks the set in Python, between thread switches, and fails
    ("Set changed size during iteration") if another thread changed it meanwhile, which
    would leave every open stream unended. The set of references under it is copied in
    one step of C instead, which no other thread can interrupt."""
    references: set[weakref.ref[Abandonable]] = _OPEN.data.copy()  # type: ignore[attr-defined]
    return [item for item in (reference() for reference in references) if item is not None]


def end_open_streams() -> None:
    """At exit: finish what the background finisher holds, then end open streams in place."""
    try:
        FINISHER.drain(EXIT_WAIT_S)
        FINISHER.exiting = True  # from now on, nothing is handed to a thread
        for state in _open_now():
            state.abandon()
        finish_loading_for_exit(EXIT_WAIT_S)  # no thread of ours left in native code
    except Exception as exc:
        internal_error("ending open streams at exit", exc)
