"""When a call gets an estimate, with which encoding, and never waiting for one.

The counting rules live in `estimate.py`, the collecting in `tally.py`, the loading
in `encodings.py`; this module decides. An estimate is made once, at the end of a
call, and only when it is wanted: the server reported no usage ("fallback"), or
always ("compare"). If the encoding it needs is still loading (the first calls after
`instrument()`), the end of that call is handed to one background thread that waits
for it: the caller never waits, and the span still ends at its own end time.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import ESTIMATE_COMPARE, ESTIMATE_OFF, Settings
from .encodings import DEFAULT_NAMES, EncodingLoader
from .errors import internal_error
from .estimate import Encoder, EncodingFailed, encoding_name_for, estimate_usage
from .tally import CompletionTally

if TYPE_CHECKING:
    from .accumulators import ResponseFacts
    from .usage import Usage

# One loader per process: encodings are large and the same for every instrumentor.
LOADER = EncodingLoader()
# How long a deferred call end waits for its encoding before giving up on the estimate;
# at interpreter exit (or where no thread can be started) it waits in place, briefly.
ENCODING_WAIT_S = 60.0
EXIT_WAIT_S = 5.0


class Estimator:
    """The estimate settings of one instrumentor, and the encodings they need."""

    def __init__(self, settings: Settings, loader: EncodingLoader | None = None) -> None:
        self.mode = settings.usage_estimate
        # Captured content needs the output text even when no estimate is wanted.
        self.keep_text_for_capture = settings.captures_content
        self.content_chars = settings.max_content_length
        self.overrides = dict(settings.encodings)
        self.loader = LOADER if loader is None else loader

    @property
    def enabled(self) -> bool:
        return self.mode != ESTIMATE_OFF

    def start(self) -> None:
        """Begin loading, in the background, every encoding a call may need."""
        if self.enabled:
            self.loader.start(dict.fromkeys(DEFAULT_NAMES + tuple(self.overrides.values())))

    def new_tally(self) -> CompletionTally | None:
        """Somewhere for a stream to keep its output text, if an estimate or capture may
        want it; with both off, none: no content is held at all."""
        keep_audio = self.keep_text_for_capture
        if self.enabled:
            return CompletionTally(keep_audio=keep_audio)
        if self.keep_text_for_capture:
            return CompletionTally(max_chars=self.content_chars, keep_audio=keep_audio)
        return None

    def wanted(self, facts: ResponseFacts | None, chunk_count: int) -> bool:
        """Is there anything to estimate? A response, or a stream that sent something."""
        if not self.enabled or facts is None:
            return False
        if facts.usage is not None and self.mode != ESTIMATE_COMPARE:
            return False  # reported usage wins; the common case, decided first
        if facts.response is None or facts.tally is not None:
            # A stream: only if it sent anything we could see, and did not refuse the call.
            return chunk_count > 0 and not facts.refused
        # Not an error body the SDK parsed into an empty response.
        return _has_output(facts.response)

    def encoding_name(self, facts: ResponseFacts, request_model: str | None) -> str:
        # The served model names the family even when the request named a deployment;
        # an `encodings` entry for the deployment counts even when the served name is odd.
        return encoding_name_for(facts.model, self.overrides, also=request_model)

    def is_loading(self, name: str) -> bool:
        return self.loader.get(name) is None and self.loader.pending(name)

    def estimate(
        self,
        operation: str,
        request: Any,
        facts: ResponseFacts,
        request_model: str | None,
        encoding: Encoder,
        provider: str | None = None,
    ) -> Usage | None:
        """The estimated usage, or None when the encoding failed to count it. `encoding`:
        the one `encoding_name` named, loaded (the caller waits for it, or not at all)."""
        model = facts.model or request_model
        finish = facts.finish_by_choice
        reasons = list(finish.values()) if finish is not None else facts.finish_reasons
        try:
            usage = estimate_usage(
                operation, request, facts.output_tally(), model, encoding, provider, reasons
            )
        except EncodingFailed as exc:
            internal_error("counting tokens with tiktoken (no estimate for that call)", exc)
            return None
        if facts.cut_short and not usage.is_empty:
            # Left before its output ended: what was read is less than what was billed.
            usage = dataclasses.replace(usage, lower_bound=True)
        return usage


def _has_output(response: Any) -> bool:
    outputs = ("choices", "data", "output")  # chat and completions, embeddings, Responses
    return any(getattr(response, name, None) for name in outputs)


class _Finisher:
    """One daemon thread that runs call ends which cannot run where they were asked for.

    Two kinds: call ends that wait for an encoding (the first calls after `instrument()`),
    and streams collected unfinished. The latter is asked for from a garbage-collection
    callback, which may run inside any lock the interrupted code holds (an exporter's, a
    metric aggregation's, the HTTP pool's): ending a span right there could wait on that
    very lock forever. So a collected stream is only queued (`SimpleQueue.put` is safe
    in a `weakref` callback; it takes no lock a callback could interrupt) and ended here.

    A job gets the number of seconds it may wait. At interpreter exit (streams
    abandoned then are ended by `end_open_streams`) a daemon thread may be cut off or
    cannot be started at all, so jobs then run in place, briefly.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[float], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.exiting = False
        # Between a garbage collection's start and stop (`gc.callbacks`): finalizers run
        # then may have interrupted any code, holding any lock.
        self.collecting = False
        self._watching_gc = False

    def after_fork_in_child(self) -> None:
        """A forked child starts afresh: its first stream starts a thread of its own.

        The parent's queued call ends are the parent's (run here too, their spans would be
        exported twice), and a lock held by a parent thread at the fork would never be
        released in the child, hanging its first stream.
        """
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = None

    def submit(self, job: Callable[[float], None]) -> None:
        if threading.current_thread() is self._thread:
            # A job of ours ending a call that waits for an encoding: wait here, in the
            # background already. Queued, it would run after whatever `drain()` waits
            # for, and at exit not at all.
            _run_job(job, EXIT_WAIT_S if self.exiting else ENCODING_WAIT_S)
            return
        if self.exiting or not self._started():
            _run_job(job, EXIT_WAIT_S)
            return
        self._queue.put(job)

    def submit_from_finalizer(self, job: Callable[[float], None]) -> None:
        """From a finalizer (a stream proxy freed unfinished): in place, unless inside a
        garbage collection; there, queue only: no lock, no thread start.

        A proxy freed because the caller dropped it (a function returned, `del`) is
        ended right there, like a `close()`, so a `force_flush()` or `shutdown()` of the
        caller's provider right after exports it. Only one freed by the cycle collector
        is handed to the thread. If no thread runs yet (a forked child before its first
        call), the job waits for the next `ensure_started()` or for `drain()` at exit.
        """
        if self.exiting or not self.collecting:
            _run_job(job, EXIT_WAIT_S)  # the exit hook, or an ordinary drop: safe in place
            return
        self._queue.put(job)

    def ensure_started(self) -> None:
        """Called on ordinary code paths (instrument, each stream) so the thread runs."""
        if not self._watching_gc:
            self._watching_gc = True
            gc.callbacks.append(self._gc_phase)
        self._started()

    def _gc_phase(self, phase: str, info: dict[str, int]) -> None:
        self.collecting = phase == "start"

    def _started(self) -> bool:
        with self._lock:
            thread = self._thread
            if thread is None or not thread.is_alive():  # never started, or lost in a fork
                thread = threading.Thread(
                    target=self._run, name="openai-usage-finisher", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # "can't create new thread at interpreter shutdown"
                    return False
                self._thread = thread
        return True

    def _run(self) -> None:
        while True:
            _run_job(self._queue.get(), ENCODING_WAIT_S)

    def drain(self, timeout: float) -> bool:
        """Wait until every call end submitted so far has run (tests, demo, exit).

        One thread takes jobs in order, so a marker put now runs after all of them.
        """
        if not self._started():  # no thread can run them (interpreter exit): run in place
            while not self._queue.empty():
                _run_job(self._queue.get_nowait(), EXIT_WAIT_S)
            return True
        done = threading.Event()
        self._queue.put(lambda _wait_s: done.set())
        return done.wait(timeout)


def _run_job(job: Callable[[float], None], wait_s: float) -> None:
    try:
        job(wait_s)
    except Exception as exc:
        internal_error("finishing a call in the background", exc)


FINISHER = _Finisher()
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=FINISHER.after_fork_in_child)
