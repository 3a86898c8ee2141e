"""Counters whose sums are kept here and read by the metrics SDK when it collects.

A synchronous `Counter.add` costs the OpenTelemetry SDK about 10 µs with our eight
attributes (it cleans, copies and sorts them on every add), and a call adds several
counter points (tokens by kind and modality, cost). Those are plain sums, and the
metrics API has an instrument for sums the caller keeps itself: the asynchronous
(observable) counter. An add here is a dict update under a lock, about 1 µs; what a
backend receives is the same monotonic sum per attribute set (cumulative, or delta
when the exporter asks for it). Two differences: a delta exporter gets a 0 for an
attribute set in an interval without calls (a synchronous counter sends no point), and
no exemplars (the SDK samples those for a synchronous add in a sampled span; the token
and duration histograms still carry them).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

# What we report goes through the metrics SDK's Views and cardinality limit (2000 sets
# per stream by default, configurable) like any instrument's observations, after a View
# has dropped attributes. This cap only bounds our memory, so it is well above that:
# past it, further sets are summed under `otel.metric.overflow`, keeping the usage source
# (billed and estimated tokens are never summed together, even there).
CARDINALITY_LIMIT = 20_000
_OVERFLOW = "otel.metric.overflow"
_KEPT_IN_OVERFLOW = "openai_usage.usage.source"

_ALL: weakref.WeakSet[SummedCounter] = weakref.WeakSet()


def _overflow_key(attributes: Mapping[str, Any]) -> frozenset[tuple[str, Any]]:
    source = attributes.get(_KEPT_IN_OVERFLOW)
    if source is None:
        return frozenset({(_OVERFLOW, True)})
    return frozenset({(_OVERFLOW, True), (_KEPT_IN_OVERFLOW, source)})


_INFINITY = float("inf")


class SummedCounter:
    """A monotonic counter (an `ObservableCounter`) whose sums are kept in this process."""

    def __init__(self, meter: Meter, name: str, unit: str, description: str) -> None:
        self._lock = threading.Lock()
        self._sums: dict[frozenset[tuple[str, Any]], list[Any]] = {}  # key -> [attributes, sum]
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )
        _ALL.add(self)

    def add(self, amount: float, attributes: Mapping[str, Any]) -> None:
        """Add a non-negative, finite amount to the sum of this attribute set."""
        if not 0 <= amount < _INFINITY:  # NaN compares False: also refused
            # A counter only grows, as the SDK's own `add` insists; and one NaN or
            # infinity would stay in the sum for good: the SDK drops a non-finite
            # observation, so the series would never be reported again.
            return
        key: frozenset[tuple[str, Any]] = frozenset(attributes.items())
        with self._lock:
            entry = self._sums.get(key)
            if entry is None:
                if len(self._sums) >= CARDINALITY_LIMIT:
                    key = _overflow_key(attributes)
                    entry = self._sums.get(key)
                if entry is None:
                    entry = self._sums[key] = [dict(key), 0]
            entry[1] += amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            entries = [(attributes, total) for attributes, total in self._sums.values()]
        return [Observation(total, attributes) for attributes, total in entries]

    def _forked(self) -> None:
        # A forked child counts its own calls: the parent goes on reporting its sums.
        # A new lock, too: a parent thread may have held this one at the fork.
        self._lock = threading.Lock()
        self._sums = {}


# One counter per meter and name, as the SDK keeps one instrument per meter and name: a
# second `create_observable_counter` gets the first instrument back and its callbacks are
# dropped, so a counter made for it would never be reported (instrument, uninstrument and
# instrument again with the same provider). Before an SDK provider is set, every
# `get_meter` is a new proxy meter that all become one real meter later: one key for them.
_BY_METER: weakref.WeakKeyDictionary[Any, dict[str, SummedCounter]] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


class _ProxyMeters:
    """The key under which proxy meters' counters are kept."""


_PROXY_METERS = _ProxyMeters()


def summed_counter(meter: Meter, name: str, unit: str, description: str) -> SummedCounter:
    """The meter's counter of this name, made on first use."""
    key: Any = _PROXY_METERS if type(meter).__name__ == "_ProxyMeter" else meter
    with _REGISTRY_LOCK:
        try:
            counters = _BY_METER.setdefault(key, {})
        except TypeError:  # a meter that cannot be weakly referenced: not shared
            return SummedCounter(meter, name, unit, description)
        counter = counters.get(name)
        if counter is None:
            counter = counters[name] = SummedCounter(meter, name, unit, description)
        return counter


def _after_fork_in_child() -> None:
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()  # a parent thread may have held it at the fork
    for counter in list(_ALL):
        counter._forked()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
