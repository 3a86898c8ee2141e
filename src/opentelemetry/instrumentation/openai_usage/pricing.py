"""What a call cost, in US dollars, from its billed token kinds and a price table.

Prices are list prices per million tokens. The shipped table (`DEFAULT_PRICES`) is
small and dated; a user extends or replaces it with a mapping, a JSON or TOML file, or
a callable, and nothing is ever fetched over the network. A model with no known price
gets no cost at all, never a zero that a dashboard would sum as free.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .usage import Usage

logger = logging.getLogger(__name__)

# When the shipped prices were read, and from where (also in the README).
DEFAULT_PRICES_DATE = "2026-06"
DEFAULT_PRICES_SOURCE = "https://platform.openai.com/docs/pricing (Standard tier)"

_PER_TOKEN = 1e-6  # table prices are per million tokens
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-4o-2024-08-06 -> gpt-4o
# Service tiers billed at the table's (standard) price (`on_demand`: Groq's default);
# any other tier ("flex", "priority", "batch") needs an entry of its own, `model@tier`,
# or gets no cost.
_STANDARD_TIERS = frozenset({"", "default", "auto", "standard", "on_demand"})


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens of each billed kind.

    Cached input and reasoning output default to the input and output price: that is
    how they are billed where a provider gives them no price of their own. Audio has
    no such default: it is billed at a price of its own, many times the text price
    (gpt-4o-audio-preview: $40 against $2.50 per 1M input tokens), so usage that
    reports audio tokens gets a cost only from a price that names audio.
    """

    input: float
    # None (an entry without `output`): right for embeddings, which bill no output; a
    # call that reports output tokens gets no cost from it rather than a cost that
    # prices its output at 0 and looks complete.
    output: float | None = None
    cached_input: float | None = None
    cache_write_input: float | None = None
    reasoning_output: float | None = None
    audio_input: float | None = None
    audio_output: float | None = None
    # Whether every price is a finite number (set as it is made; see `__post_init__`).
    _finite = False

    def __post_init__(self) -> None:
        # Whether every price is a finite number: then a kind the usage does not report
        # (0 tokens) adds exactly 0.0 to the cost, and `cost` may leave it out. (Not a
        # field: equality, hashing and `repr` stay the prices'.)
        object.__setattr__(self, "_finite", all(_finite(value) for value in _prices_of(self)))

    def cost(self, usage: Usage) -> float | None:
        """The call's cost, or None when its usage says too little to price it.

        A count that has a price but was not reported (a server that sends the input
        tokens and `null` output tokens) means no cost at all: a partial cost would look
        billed and complete to every sum it joins.
        """
        input_tokens = usage.input_tokens
        output_tokens = usage.output_tokens
        if input_tokens is None and output_tokens is None:
            return None
        if (input_tokens is None and self.input) or (output_tokens is None and self.output):
            return None
        if self.lacks_output_price(usage):
            return None
        if (
            # Nearly every call: no cached, written, reasoning or audio tokens. The terms
            # left out below are each 0 tokens times a finite price, 0.0: the same sum.
            not usage.cache_read_input_tokens
            and not usage.reasoning_output_tokens
            and not usage.cache_write_input_tokens
            and not usage.input_modalities
            and not usage.output_modalities
            and self._finite
        ):
            total = 0.0
            if input_tokens is not None:
                total += input_tokens * self.input
            if output_tokens is not None:
                total += output_tokens * _or(self.output, 0.0)
            total *= _PER_TOKEN
            return total if math.isfinite(total) else None
        output = _or(self.output, 0.0)
        audio_in = _audio(usage.input_modalities)
        audio_out = _audio(usage.output_modalities)
        if (audio_in and self.audio_input is None) or (audio_out and self.audio_output is None):
            return None  # audio at the text price would pass for a complete cost
        total = 0.0
        if usage.input_tokens is not None:
            cached = min(usage.cache_read_input_tokens or 0, usage.input_tokens)
            written = min(usage.cache_write_input_tokens or 0, usage.input_tokens - cached)
            plain = usage.input_tokens - cached - written
            audio = min(audio_in, plain)
            total += (plain - audio) * self.input
            total += audio * _or(self.audio_input, self.input)
            total += cached * _or(self.cached_input, self.input)
            total += written * _or(self.cache_write_input, self.input)
        if usage.output_tokens is not None:
            reasoning = min(usage.reasoning_output_tokens or 0, usage.output_tokens)
            audio = min(audio_out, usage.output_tokens - reasoning)
            total += (usage.output_tokens - reasoning - audio) * output
            total += audio * _or(self.audio_output, output)
            total += reasoning * _or(self.reasoning_output, output)
        total *= _PER_TOKEN
        # Finite prices times counts below 2**53 can still overflow (a price of 1e307).
        return total if math.isfinite(total) else None

    def lacks_output_price(self, usage: Usage) -> bool:
        """Whether `usage` reports output tokens that this price (one without `output`,
        as for embeddings) cannot price: such a call gets no cost."""
        return self.output is None and bool(usage.output_tokens)


def _prices_of(price: Price) -> tuple[Any, ...]:
    """The prices a `Price` was given (None for those it was not)."""
    return (
        price.input,
        price.output,
        price.cached_input,
        price.cache_write_input,
        price.reasoning_output,
        price.audio_input,
        price.audio_output,
    )


def _finite(value: Any) -> bool:
    """None (no price of its own) or a finite number (not a bool, which `checked` refuses)."""
    if value is None:
        return True
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _audio(modalities: tuple[tuple[str, int], ...]) -> int:
    """The audio tokens of a usage's per-modality breakdown (nearly always empty)."""
    for modality, count in modalities:
        if modality == "audio":
            return count
    return 0


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _p(input: float, cached: float | None, output: float) -> Price:
    return Price(input=input, cached_input=cached, output=output)


# Standard-tier list prices, USD per 1M tokens: input, cached input, output.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5.5": _p(5.0, 0.5, 30.0),
    "gpt-5.4": _p(2.5, 0.25, 15.0),
    "gpt-5.4-mini": _p(0.75, 0.075, 4.5),
    "gpt-5.4-nano": _p(0.2, 0.02, 1.25),
    "gpt-5.1": _p(1.25, 0.125, 10.0),
    "gpt-5": _p(1.25, 0.125, 10.0),
    "gpt-5-mini": _p(0.25, 0.025, 2.0),
    "gpt-5-nano": _p(0.05, 0.005, 0.4),
    "gpt-5-chat-latest": _p(1.25, 0.125, 10.0),
    "gpt-4.1": _p(2.0, 0.5, 8.0),
    "gpt-4.1-mini": _p(0.4, 0.1, 1.6),
    "gpt-4.1-nano": _p(0.1, 0.025, 0.4),
    "gpt-4o": _p(2.5, 1.25, 10.0),
    # The first gpt-4o snapshot keeps its own, higher price (and no cached-input
    # discount): without this entry its date suffix would be removed and the call
    # priced at today's gpt-4o, half of what it bills.
    "gpt-4o-2024-05-13": _p(5.0, None, 15.0),
    "gpt-4o-mini": _p(0.15, 0.075, 0.6),
    "o1": _p(15.0, 7.5, 60.0),
    "o1-mini": _p(1.1, 0.55, 4.4),
    "o3": _p(2.0, 0.5, 8.0),
    "o3-mini": _p(1.1, 0.55, 4.4),
    "o4-mini": _p(1.1, 0.275, 4.4),
    "gpt-4-turbo": _p(10.0, None, 30.0),
    "gpt-4": _p(30.0, None, 60.0),
    "gpt-3.5-turbo": _p(0.5, None, 1.5),
    "text-embedding-3-small": _p(0.02, None, 0.0),
    "text-embedding-3-large": _p(0.13, None, 0.0),
    "text-embedding-ada-002": _p(0.1, None, 0.0),
}

# A callable price source: (model, service tier) -> a Price, a mapping like a table
# entry, or None to fall back to the table.
PriceFunction = Callable[[str, "str | None"], Any]
Warn = Callable[..., None]  # a logger's `warning`: a message and its arguments

_REMEMBERED = 1024  # (model, tier) lookups kept per table; model names come from servers
_NOT_CHOSEN: Any = object()  # not in `PriceTable._chosen_as_asked`


class PriceTable:
    """Model name (or `model@tier`) -> Price: an optional callable first, then the
    user's prices, then the shipped ones (`defaults`).

    A call has two names, the model the response names and the one requested (on
    Azure, the deployment). Each source is asked for both before the next source is:
    the user's entry for an Azure deployment (or a price function that knows it) wins
    over the shipped price of the model the deployment serves.
    """

    def __init__(
        self,
        prices: Mapping[str, Price],
        function: PriceFunction | None = None,
        defaults: Mapping[str, Price] | None = None,
    ) -> None:
        self.prices = dict(prices)
        self.defaults = dict(defaults or {})
        self.function = function
        # Table lookups per (model, tier), remembered: every call asks, for few models.
        self._found: dict[tuple[str, str], tuple[Price | None, Price | None]] = {}
        # The tables' answer per (names, tier), remembered: the same two names (response
        # model, requested model) come on nearly every call.
        self._chosen: dict[tuple[tuple[str, ...], str], Price | None] = {}
        # The same answer by the arguments `first_price` was given, as given (no price
        # function only: its answer is not the tables'), so that a call skips the names.
        self._chosen_as_asked: dict[tuple[Any, Any], Price | None] = {}
        # What the price function did wrong, and each model whose price lacks the
        # output price its calls need, logged once each: prices are asked on every
        # call, and would otherwise log on every call.
        self._warned: set[str] = set()

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind in self._warned:
            return
        self._warned.add(kind)
        logger.warning(message + " (logged once; later ones are not)", *args)

    def _asked(self, model: str, service_tier: str | None) -> Price | None:
        """The price function's answer for this name, or None."""
        if self.function is None:
            return None
        try:
            found = self.function(model, service_tier)
        except Exception as exc:  # the user's function: report, never raise
            self._warn_once("raised", "The price function failed for %r: %r", model, exc)
            return None
        if found is None:
            return None
        return price_from(found, "price function", lambda *args: self._warn_once("returned", *args))

    def _in_tables(self, model: str, tier: str) -> tuple[Price | None, Price | None]:
        """(the user's price, the shipped price) of this name, remembered."""
        key = (model, tier)
        found = self._found.get(key)
        if found is None:
            found = (_lookup(self.prices, model, tier), _lookup(self.defaults, model, tier))
            if len(self._found) < _REMEMBERED:
                self._found[key] = found
        return found

    def first_price(self, models: tuple[str | None, ...], service_tier: str | None) -> Price | None:
        """The price of the first of `models` that has one, source by source: the
        function's, else the user's, else the shipped one."""
        if self.function is None:
            # Nearly every call: the tables' answer for the very same arguments, remembered
            # as they came (the names below are a function of them).
            try:
                chosen: Price | None = self._chosen_as_asked.get(
                    (models, service_tier), _NOT_CHOSEN
                )
            except TypeError:  # not hashable: not remembered
                chosen = _NOT_CHOSEN
            if chosen is not _NOT_CHOSEN:
                return chosen
        names = tuple(model for model in models if isinstance(model, str) and model)
        if self.function is not None:
            for model in names:
                asked = self._asked(model, service_tier)
                if asked is not None:
                    return asked
        tier = service_tier if isinstance(service_tier, str) else ""
        key = (names, tier)
        if key in self._chosen:
            price = self._chosen[key]
        else:
            price = self._from_tables(names, tier)
            if len(self._chosen) < _REMEMBERED:
                self._chosen[key] = price
        if self.function is None and len(self._chosen_as_asked) < _REMEMBERED:
            with contextlib.suppress(TypeError):
                self._chosen_as_asked[(models, service_tier)] = price
        return price

    def _from_tables(self, names: tuple[str, ...], tier: str) -> Price | None:
        found = [self._in_tables(model, tier) for model in names]
        for own, _ in found:
            if own is not None:
                return own
        for _, shipped in found:
            if shipped is not None:
                return shipped
        return None

    def cost(
        self, models: tuple[str | None, ...], usage: Usage, service_tier: str | None
    ) -> float | None:
        """The cost of `usage` at the first price found for any of `models` (the
        response's model, then the requested one), source by source."""
        price = self.first_price(models, service_tier)
        if price is None:
            return None
        if price.lacks_output_price(usage) and len(self._warned) < _REMEMBERED:
            model = next((m for m in models if m), None)
            self._warn_once(
                f"no output price: {model}",
                "No cost for calls to %r: its price has no `output` price, and they "
                "report output tokens",
                model,
            )
        return price.cost(usage)


def _lookup(prices: Mapping[str, Price], model: str, tier: str) -> Price | None:
    if not prices:
        return None
    for name in dict.fromkeys((model, model.lower(), _DATE_SUFFIX.sub("", model.lower()))):
        if tier:
            found = prices.get(f"{name}@{tier}")
            if found is not None:
                return found
        if tier in _STANDARD_TIERS and name in prices:
            return prices[name]
    return None


_REQUIRED = ("input",)
_OPTIONAL = (
    "output",
    "cached_input",
    "cache_write_input",
    "reasoning_output",
    "audio_input",
    "audio_output",
)


def _amount(value: Any) -> float | None:
    """A price as a float: a real number, finite and >= 0 (a JSON `1e400`, TOML `inf`
    or `nan` is none: one such price makes every cost, and the cost counter's sum, NaN
    or infinite for good); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None


def checked(price: Price, source: str, warn: Warn = logger.warning) -> Price | None:
    """A `Price` built in code (given in a mapping, or returned by a price function) is
    checked like a table entry: a string or negative price would otherwise fail or
    give a negative cost at the end of every call."""
    names = (*_REQUIRED, *(n for n in _OPTIONAL if getattr(price, n, None) is not None))
    for name in names:
        if _amount(getattr(price, name, None)) is None:
            warn(
                "Ignoring a price in %s: %s=%r (each price must be a number >= 0 of US "
                "dollars per million tokens)",
                source,
                name,
                getattr(price, name, None),
            )
            return None
    return price


_FIELDS = {
    "input": "input",
    "output": "output",
    "cached_input": "cached_input",
    "cache_read_input": "cached_input",
    "cache_write_input": "cache_write_input",
    "reasoning_output": "reasoning_output",
    "reasoning": "reasoning_output",
    "audio_input": "audio_input",
    "audio_output": "audio_output",
}


def price_from(raw: Any, source: str, warn: Warn = logger.warning) -> Price | None:
    """One table entry (`{"input": 2.5, "cached_input": 1.25, "output": 10}`), or None;
    what is wrong with it goes to `warn` (a logger's `warning`)."""
    if isinstance(raw, Price):
        return checked(raw, source, warn)
    if not isinstance(raw, Mapping):
        warn("Ignoring a price in %s: expected a table of prices, got %r", source, raw)
        return None
    values: dict[str, float] = {}
    for key, value in raw.items():
        field = _FIELDS.get(str(key))
        amount = _amount(value)
        if field is None or amount is None:
            warn(
                "Ignoring a price in %s: %r=%r (accepted: %s, each a number >= 0 of US "
                "dollars per million tokens)",
                source,
                key,
                value,
                ", ".join(sorted(_FIELDS)),
            )
            return None
        values[field] = amount
    if "input" not in values:
        warn("Ignoring a price in %s: %r has no `input` price", source, raw)
        return None
    return Price(**values)


def prices_from(raw: Any, source: str) -> dict[str, Price]:
    """A whole table: a mapping of model -> entry, or the path of a JSON or TOML file."""
    if isinstance(raw, (str, Path)):
        raw = _read_file(Path(raw))
        if raw is None:
            return {}
    if not isinstance(raw, Mapping):
        logger.warning("Ignoring the prices in %s: expected a table, got %r", source, raw)
        return {}
    table: dict[str, Price] = {}
    for model, entry in raw.items():
        if not isinstance(model, str) or not model:
            logger.warning("Ignoring a price in %s: %r is not a model name", source, model)
            continue
        price = price_from(entry, f"{source} [{model}]")
        if price is not None:
            table[model] = price
    return table


def _read_file(path: Path) -> Any:
    try:
        # "utf-8-sig": a file saved with a byte order mark (Windows editors write one)
        # reads as without; `json` and `tomllib` would both refuse the mark.
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".toml":
            # Python 3.11+ (a module mypy's 3.10 target does not know); JSON works everywhere.
            if sys.version_info < (3, 11):
                logger.warning(
                    "Could not read the price file %s: TOML needs Python 3.11+ (tomllib); "
                    "write it as JSON. Its prices are not used.",
                    path,
                )
                return None
            return importlib.import_module("tomllib").loads(text)
        return json.loads(text)
    except Exception as exc:
        logger.warning("Could not read the price file %s (%s); its prices are not used.", path, exc)
        return None
