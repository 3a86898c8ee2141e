"""Names, instruments and the recording of one finished call.

Attribute and metric names come from `opentelemetry-semantic-conventions`
wherever the GenAI conventions define them; the few that they do not define
are this project's own and live here, so the README table has one source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import Histogram, Meter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from opentelemetry.semconv._incubating.attributes import openai_attributes as oai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes, server_attributes

from . import modalities
from .sums import SummedCounter, summed_counter

if TYPE_CHECKING:
    from .accumulators import ResponseFacts
    from .usage import Usage

# Span and metric attribute names (semantic conventions).
OPERATION = genai.GEN_AI_OPERATION_NAME
CONVERSATION_ID = genai.GEN_AI_CONVERSATION_ID
PROVIDER = genai.GEN_AI_PROVIDER_NAME
REQUEST_MODEL = genai.GEN_AI_REQUEST_MODEL
REQUEST_STREAM = genai.GEN_AI_REQUEST_STREAM
REQUEST_TEMPERATURE = genai.GEN_AI_REQUEST_TEMPERATURE
REQUEST_TOP_P = genai.GEN_AI_REQUEST_TOP_P
REQUEST_MAX_TOKENS = genai.GEN_AI_REQUEST_MAX_TOKENS
REQUEST_SEED = genai.GEN_AI_REQUEST_SEED
REQUEST_STOP = genai.GEN_AI_REQUEST_STOP_SEQUENCES
REQUEST_CHOICE_COUNT = genai.GEN_AI_REQUEST_CHOICE_COUNT
REQUEST_FREQUENCY_PENALTY = genai.GEN_AI_REQUEST_FREQUENCY_PENALTY
REQUEST_PRESENCE_PENALTY = genai.GEN_AI_REQUEST_PRESENCE_PENALTY
OUTPUT_TYPE = genai.GEN_AI_OUTPUT_TYPE
REQUEST_ENCODING_FORMATS = genai.GEN_AI_REQUEST_ENCODING_FORMATS
EMBEDDINGS_DIMENSION_COUNT = genai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT
RESPONSE_MODEL = genai.GEN_AI_RESPONSE_MODEL
RESPONSE_ID = genai.GEN_AI_RESPONSE_ID
RESPONSE_FINISH_REASONS = genai.GEN_AI_RESPONSE_FINISH_REASONS
RESPONSE_TIME_TO_FIRST_CHUNK = genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
USAGE_INPUT = genai.GEN_AI_USAGE_INPUT_TOKENS
USAGE_OUTPUT = genai.GEN_AI_USAGE_OUTPUT_TOKENS
USAGE_CACHE_READ = genai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
USAGE_REASONING = genai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
USAGE_CACHE_WRITE = genai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
INPUT_MESSAGES = genai.GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES = genai.GEN_AI_OUTPUT_MESSAGES
SYSTEM_INSTRUCTIONS = genai.GEN_AI_SYSTEM_INSTRUCTIONS
TOOL_DEFINITIONS = genai.GEN_AI_TOOL_DEFINITIONS
TOKEN_TYPE = genai.GEN_AI_TOKEN_TYPE
OPENAI_API_TYPE = oai.OPENAI_API_TYPE
OPENAI_REQUEST_SERVICE_TIER = oai.OPENAI_REQUEST_SERVICE_TIER
OPENAI_RESPONSE_SERVICE_TIER = oai.OPENAI_RESPONSE_SERVICE_TIER
OPENAI_SYSTEM_FINGERPRINT = oai.OPENAI_RESPONSE_SYSTEM_FINGERPRINT
# The `openai.*` attributes belong to the conventions' OpenAI flavour (`docs/gen-ai/openai.md`:
# its spans' `gen_ai.provider.name` MUST be `openai`, and its metrics add the tier "when the
# provider is `openai`"). `gen_ai.provider.name` is the discriminator of a flavour and is to
# be "set consistently with provider-specific attributes": a span of another provider
# (Azure OpenAI, Groq, Bedrock...) speaking the same protocol is not expected to carry them.
OPENAI_ONLY = (OPENAI_API_TYPE, OPENAI_REQUEST_SERVICE_TIER)
SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT
ERROR_TYPE = error_attributes.ERROR_TYPE

# Not defined by the conventions; named here once.
USAGE_TOTAL = "gen_ai.usage.total_tokens"
# How a stream's span ended: completed | closed | abandoned | error.
STREAM_OUTCOME = "openai_usage.stream.outcome"
# Whether the usage chunk was requested by us (and hidden from the caller).
STREAM_USAGE_INJECTED = "openai_usage.stream.include_usage_injected"

# Where the usage numbers come from: "response" (billed, as the server reported
# them) or "estimate" (counted by us with tiktoken). On spans and token metrics.
USAGE_SOURCE = "openai_usage.usage.source"
# True when an estimate can only undercount (a reasoning model's hidden tokens,
# images, built-in tools): the billed count is at least this.
USAGE_LOWER_BOUND = "openai_usage.usage.lower_bound"
# "compare" mode: the estimate next to the reported usage, and estimate - reported.
ESTIMATE_INPUT = "openai_usage.estimate.input_tokens"
ESTIMATE_OUTPUT = "openai_usage.estimate.output_tokens"
ESTIMATE_INPUT_DIFFERENCE = "openai_usage.estimate.input_tokens_difference"
ESTIMATE_OUTPUT_DIFFERENCE = "openai_usage.estimate.output_tokens_difference"

# The call's list-price cost in US dollars (a float), when its model has a known price.
COST = "openai_usage.cost.usd"

# The conventions' per-call event for content capture, and the per-modality counters of
# semantic-conventions-genai `docs/gen-ai/gen-ai-token-metrics.md` (Development status),
# which the `opentelemetry-semantic-conventions` package does not define yet.
OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
TOKEN_MODALITY = "gen_ai.token.modality"
USAGE_METRICS = {
    "input": "gen_ai.client.inference.usage.input_tokens",
    "output": "gen_ai.client.inference.usage.output_tokens",
    "cache_read": "gen_ai.client.inference.usage.cache_read.input_tokens",
    "cache_write": "gen_ai.client.inference.usage.cache_write.input_tokens",
    "reasoning": "gen_ai.client.inference.usage.reasoning.output_tokens",
}
COST_METRIC = "openai_usage.client.cost"
# The span attributes for the tokens a provider reported by modality, subsets of input and
# output (semantic-conventions-genai; not in the package's 0.66b2): side -> modality -> name.
USAGE_BY_MODALITY = {
    "input": {m: f"gen_ai.usage.{m}.input_tokens" for m in ("text", "audio", "image")},
    "output": {m: f"gen_ai.usage.{m}.output_tokens" for m in ("text", "audio")},
}

PROVIDER_OPENAI = "openai"
PROVIDER_AZURE = "azure.ai.openai"

# Explicit bucket boundaries advised by the GenAI semantic conventions.
TOKEN_BUCKETS = [4**i for i in range(14)]  # 1, 4, 16, ... 67108864
SECONDS_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01, 0.02, 0.04, ... 81.92


class Instruments:
    """The conventions' histograms and counters, and the cost counter; once per instrumentor."""

    def __init__(self, meter: Meter) -> None:
        self.token_usage: Histogram = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration: Histogram = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.time_to_first_chunk: Histogram = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time from issuing the request to receiving the first chunk.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.time_per_output_chunk: Histogram = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK,
            unit="s",
            description="Time between output chunks after the first one.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        # Sums kept by us, read by the SDK at collection: see `sums`.
        self.usage: dict[str, SummedCounter] = {
            kind: summed_counter(meter, name, "{token}", _USAGE_DESCRIPTIONS[kind])
            for kind, name in USAGE_METRICS.items()
        }
        self.cost = summed_counter(
            meter, COST_METRIC, "{USD}", "List-price cost of GenAI operations in USD."
        )


_USAGE_DESCRIPTIONS = {
    "input": "Input (prompt) tokens used, including cached tokens.",
    "output": "Output (completion) tokens used, including reasoning tokens.",
    "cache_read": "Input tokens served from a provider-managed cache.",
    "cache_write": "Input tokens written to a provider-managed cache.",
    "reasoning": "Output tokens spent on reasoning.",
}


# Request parameters and response fields are strings a caller or a server chose: a
# model name, stop sequences, an id. Bounded, so that no call can make a span huge.
MAX_ATTRIBUTE_LENGTH = 256
MAX_ATTRIBUTE_ITEMS = 128  # as many finish reasons as OpenAI allows choices


_SEQUENCES = (list, tuple)


def bounded(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes with every string, and every list, cut to the limits above."""
    for key, value in attributes.items():
        if isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_LENGTH:
                attributes[key] = value[:MAX_ATTRIBUTE_LENGTH]
        elif isinstance(value, _SEQUENCES):
            attributes[key] = [
                v[:MAX_ATTRIBUTE_LENGTH] if isinstance(v, str) else v
                for v in value[:MAX_ATTRIBUTE_ITEMS]
            ]
    return attributes


def response_attributes(facts: ResponseFacts, openai: bool = True) -> dict[str, Any]:
    """Span attributes learnt from the response, absent values left out; the `openai.*`
    ones only for OpenAI's own flavour (`openai`, see `OPENAI_ONLY`).

    Its strings were cut to `MAX_ATTRIBUTE_LENGTH` where they were read (the
    accumulators' `_str`), so only the list of finish reasons is bounded here.
    """
    attributes: dict[str, Any] = {}
    if facts.response_id:
        attributes[RESPONSE_ID] = facts.response_id
    if facts.model:
        attributes[RESPONSE_MODEL] = facts.model
    if facts.finish_reasons:
        attributes[RESPONSE_FINISH_REASONS] = facts.finish_reasons[:MAX_ATTRIBUTE_ITEMS]
    if openai and facts.system_fingerprint:
        attributes[OPENAI_SYSTEM_FINGERPRINT] = facts.system_fingerprint
    if openai and facts.service_tier:
        attributes[OPENAI_RESPONSE_SERVICE_TIER] = facts.service_tier
    if facts.dimension_count is not None:
        attributes[EMBEDDINGS_DIMENSION_COUNT] = facts.dimension_count
    if facts.usage is not None:
        attributes.update(usage_attributes(facts.usage))
    return attributes


def response_metric_attributes(model: str | None, service_tier: str | None) -> dict[str, Any]:
    """What the response adds to the metric points: both have few values per application
    (unlike the response id or fingerprint, which stay on the span)."""
    attributes: dict[str, Any] = {}
    if model:
        attributes[RESPONSE_MODEL] = model
    if service_tier:
        attributes[OPENAI_RESPONSE_SERVICE_TIER] = service_tier
    return attributes


def without_error(attributes: dict[str, Any]) -> dict[str, Any]:
    """Metric attributes for the points other than the duration's: the conventions give
    `error.type` to `gen_ai.client.operation.duration` only (and a failed call's usage
    counters and cost are counted as any call's)."""
    if ERROR_TYPE not in attributes:
        return attributes
    return {key: value for key, value in attributes.items() if key != ERROR_TYPE}


def usage_attributes(usage: Usage) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if usage.input_tokens is not None:
        attributes[USAGE_INPUT] = usage.input_tokens
    if usage.output_tokens is not None:
        attributes[USAGE_OUTPUT] = usage.output_tokens
    if usage.total_tokens is not None:
        attributes[USAGE_TOTAL] = usage.total_tokens
    if usage.cache_read_input_tokens is not None:
        attributes[USAGE_CACHE_READ] = usage.cache_read_input_tokens
    if usage.reasoning_output_tokens is not None:
        attributes[USAGE_REASONING] = usage.reasoning_output_tokens
    if usage.cache_write_input_tokens is not None:
        attributes[USAGE_CACHE_WRITE] = usage.cache_write_input_tokens
    if usage.input_modalities or usage.output_modalities:  # rare: audio, some models' text
        for side, total, reported in (
            ("input", usage.input_tokens, usage.input_modalities),
            ("output", usage.output_tokens, usage.output_modalities),
        ):
            attributes.update(_modality_attributes(USAGE_BY_MODALITY[side], total, reported))
    attributes[USAGE_SOURCE] = usage.source
    if usage.lower_bound:
        attributes[USAGE_LOWER_BOUND] = True
    return attributes


def _modality_attributes(
    names: dict[str, str], total: int | None, reported: tuple[tuple[str, int], ...]
) -> dict[str, int]:
    """`gen_ai.usage.{modality}.input_tokens` / `.output_tokens`, set, as the conventions
    say, only for what the provider reported (a count of 0 reads as none reported, as for
    the per-modality counters): the counters' breakdown (`modalities.split`), whose
    remainder, and whole total when the breakdown says more than it, is `unknown`, which
    names no attribute."""
    parts = modalities.split(total, reported, modalities.UNKNOWN)
    return {names[modality]: count for modality, count in parts if modality in names}


def comparison_attributes(reported: Usage, estimate: Usage) -> dict[str, Any]:
    """The estimate beside billed usage, so a user can audit it ("compare" mode)."""
    attributes: dict[str, Any] = {}
    for name, difference, ours, theirs in (
        (ESTIMATE_INPUT, ESTIMATE_INPUT_DIFFERENCE, estimate.input_tokens, reported.input_tokens),
        (
            ESTIMATE_OUTPUT,
            ESTIMATE_OUTPUT_DIFFERENCE,
            estimate.output_tokens,
            reported.output_tokens,
        ),
    ):
        if ours is not None:
            attributes[name] = ours
            if theirs is not None:
                attributes[difference] = ours - theirs
    return attributes


def record_token_usage(instruments: Instruments, attributes: dict[str, Any], usage: Usage) -> None:
    """One point per token type, as `gen_ai.client.token.usage` defines it.

    Each point says where its number came from, so billed and estimated tokens
    are never summed by accident.
    """
    attributes = {**attributes, USAGE_SOURCE: usage.source}
    if usage.input_tokens is not None:
        instruments.token_usage.record(usage.input_tokens, {**attributes, TOKEN_TYPE: "input"})
    if usage.output_tokens is not None:
        instruments.token_usage.record(usage.output_tokens, {**attributes, TOKEN_TYPE: "output"})


def record_detailed_usage(
    instruments: Instruments,
    attributes: dict[str, Any],
    usage: Usage | None,
    input_rest: str,
) -> None:
    """The per-modality counters, one add per kind and modality.

    With no usage at all (a failed call, or nothing to estimate from) input and output
    get a 0 under `unknown`, as the conventions ask, so call counts stay right. The subset
    counters (cache read and write, reasoning) are added to only when not 0: they count
    tokens, not calls, and a 0 (reported on nearly every call) would cost a metric record
    per call for nothing.
    """
    counters = instruments.usage
    input_tokens = usage.input_tokens if usage is not None else None
    output_tokens = usage.output_tokens if usage is not None else None
    if usage is None or (input_tokens is None and output_tokens is None):  # `is_empty`
        for kind in ("input", "output"):
            counters[kind].add(0, {**attributes, TOKEN_MODALITY: modalities.UNKNOWN})
        return
    attributes = {**attributes, USAGE_SOURCE: usage.source}
    if not usage.input_modalities and not usage.output_modalities:
        # Nearly every call: no breakdown, all of each side is its `rest` (as below).
        if input_tokens is not None:
            counters["input"].add(input_tokens, {**attributes, TOKEN_MODALITY: input_rest})
        if output_tokens is not None:
            counters["output"].add(output_tokens, {**attributes, TOKEN_MODALITY: modalities.TEXT})
    else:
        for kind, total, reported, rest in (
            ("input", input_tokens, usage.input_modalities, input_rest),
            ("output", output_tokens, usage.output_modalities, modalities.TEXT),
        ):
            if total is None:
                continue
            if not reported:  # no breakdown of this side: all of it is `rest`
                counters[kind].add(total, {**attributes, TOKEN_MODALITY: rest})
                continue
            for modality, count in modalities.split(total, reported, rest):
                counters[kind].add(count, {**attributes, TOKEN_MODALITY: modality})
    if not (
        usage.cache_read_input_tokens
        or usage.cache_write_input_tokens
        or usage.reasoning_output_tokens
    ):
        return  # most calls report 0 cached and 0 reasoning: adding 0 costs a record
    # A cached prefix is text when all input was; mixed input leaves it unknown.
    text_or_unknown = modalities.UNKNOWN if usage.input_modalities else input_rest
    for kind, subset, modality in (
        ("cache_read", usage.cache_read_input_tokens, text_or_unknown),
        ("cache_write", usage.cache_write_input_tokens, text_or_unknown),
        ("reasoning", usage.reasoning_output_tokens, modalities.TEXT),
    ):
        if subset:
            counters[kind].add(subset, {**attributes, TOKEN_MODALITY: modality})


def record_cost(
    instruments: Instruments, attributes: dict[str, Any], cost: float, usage: Usage
) -> None:
    instruments.cost.add(cost, {**attributes, USAGE_SOURCE: usage.source})
