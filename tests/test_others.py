"""Another OpenAI instrumentation next to ours is found and named, once; nothing breaks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import openai
import pytest
import wrapt
from openai.resources.chat.completions import AsyncCompletions, Completions

from .conftest import MESSAGES, Telemetry

LOGGER = "opentelemetry.instrumentation.openai_usage"


def warnings_about_others(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and "Another OpenAI instrumentation" in r.getMessage()
    ]


def test_no_other_instrumentation_no_warning(
    instrument: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instrument()
    assert warnings_about_others(caplog) == []


def _install_other(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    entry_point: str = "openai",
    module: str = "opentelemetry.instrumentation.openai_v2",
) -> None:
    """An installed distribution, as pip leaves it, registering an OpenAI entry point."""
    dist_info = tmp_path / "opentelemetry_instrumentation_openai_v2-2.1b0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: opentelemetry-instrumentation-openai-v2\nVersion: 2.1b0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[opentelemetry_instrumentor]\n{entry_point} = {module}:X\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_another_instrumentation_registered_for_auto_instrumentation_is_named(
    instrument: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _install_other(tmp_path, monkeypatch)
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instrument()
    (warning,) = warnings_about_others(caplog)
    assert "opentelemetry-instrumentation-openai-v2" in warning
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai" in warning
    assert "openai_usage" in warning
    assert "Run under opentelemetry-instrument" in warning  # installed is not active


def test_the_warning_names_the_entry_point_to_disable(
    instrument: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _install_other(tmp_path, monkeypatch, entry_point="openinference_openai")
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instrument()
    (warning,) = warnings_about_others(caplog)
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openinference_openai " in warning


@pytest.mark.parametrize("disabled", ["openai", " openai_usage_other , openai ", "*"])
def test_no_warning_once_the_other_is_disabled_as_the_warning_advises(
    instrument: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    disabled: str,
) -> None:
    _install_other(tmp_path, monkeypatch)
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", disabled)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instrument()
    assert warnings_about_others(caplog) == []


def _other_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


def test_another_instrumentation_already_wrapping_the_sdk_is_named_and_calls_still_work(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = Completions.__dict__["create"]
    Completions.create = wrapt.FunctionWrapper(original, _other_wrapper)  # type: ignore[method-assign]
    instrumentor = None
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            instrumentor = instrument()
        (warning,) = warnings_about_others(caplog)
        assert __name__ in warning  # the module whose wrapper is there
        result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert result.choices
        assert len(telemetry.spans()) == 1  # ours, on top of theirs
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()  # takes ours off, leaving theirs
        Completions.create = original  # type: ignore[method-assign]


def test_another_instrumentation_wrapping_the_clients_request_is_named_as_active(
    instrument: Any,
    telemetry: Telemetry,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenInference (openinference-instrumentation-openai 0.1.66) wraps `OpenAI.request`
    and `AsyncOpenAI.request` with wrapt, not the resources' methods: every call is
    recorded by both all the same, its span a child of ours."""
    # Not installed for auto-instrumentation, or disabled there: only the wrapper tells.
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "openai")
    assert "request" not in openai.OpenAI.__dict__  # the SDK's is inherited
    monkeypatch.setattr(
        openai.OpenAI, "request", wrapt.FunctionWrapper(openai.OpenAI.request, _other_wrapper)
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instrument()
    (warning,) = warnings_about_others(caplog)
    assert f"is active: the OpenAI SDK is already instrumented by {__name__}." in warning
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(telemetry.spans()) == 1  # ours, over theirs


@pytest.mark.parametrize("registered", [True, False])
def test_the_warning_about_an_active_one_advises_its_own_entry_point_or_none(
    instrument: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    registered: bool,
) -> None:
    """OpenInference (0.1.66) registers under `openai` too, but another could register
    under another name; Langfuse's `langfuse.openai` (5.2.0) registers none at all: it
    patches the SDK when imported, and no entry point name turns it off."""
    if registered:  # this module stands for the other's package
        _install_other(tmp_path, monkeypatch, "openinference_openai", module=__name__)
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)
    monkeypatch.setattr(
        Completions, "create", wrapt.FunctionWrapper(Completions.create, _other_wrapper)
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instrument()
    (warning,) = warnings_about_others(caplog)
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai " not in warning
    assert "=openai_usage" in warning  # how to disable ours, always
    if registered:
        assert f"instrumented by {__name__} (entry point 'openinference_openai')." in warning
        assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openinference_openai " in warning
    else:
        assert f"instrumented by {__name__}. Both" in warning
        assert "Keep one: stop using that one" in warning


# -- another wrapper over ours, or under it ------------------------------------------------


@pytest.fixture
def restore_create() -> Any:
    """Whatever a test stacks on the SDK's `create`s is taken off after it."""
    originals = {cls: cls.__dict__["create"] for cls in (Completions, AsyncCompletions)}
    yield
    for cls, original in originals.items():
        cls.create = original  # type: ignore[method-assign]


def test_uninstrument_leaves_a_wrapper_put_over_ours_and_reinstrumenting_stacks_none(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, restore_create: Any
) -> None:
    theirs: list[int] = []

    def other(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        theirs.append(1)
        return wrapped(*args, **kwargs)

    instrumentor = instrument()
    wrapt.wrap_function_wrapper(Completions, "create", other)  # over ours
    instrumentor.uninstrument()
    assert Completions.__dict__["create"]._self_wrapper is other  # theirs is not taken off
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert (len(theirs), len(telemetry.spans())) == (1, 0)  # theirs works, ours passes by
    instrument()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert (len(theirs), len(telemetry.spans())) == (2, 1)  # ours again, once: not stacked
    instrumentor.uninstrument()
    assert Completions.__dict__["create"]._self_wrapper is other


def _read_by_another(chunks: Any) -> Any:
    """Another instrumentation's stream: its own generator over the SDK's stream."""
    yield from chunks


async def _aread_by_another(chunks: Any) -> Any:
    async for chunk in chunks:
        yield chunk


def _stream_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    return _read_by_another(result) if kwargs.get("stream") else result


async def _async_stream_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = await wrapped(*args, **kwargs)
    return _aread_by_another(result) if kwargs.get("stream") else result


def test_a_stream_another_wrapper_under_ours_makes_its_own_still_hides_our_usage_chunk(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, restore_create: Any
) -> None:
    wrapt.wrap_function_wrapper(Completions, "create", _stream_wrapper)  # under ours
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}

    def comparable(chunks: Any) -> list[dict[str, Any]]:  # ids and times differ by call
        return [{**c.to_dict(), "id": "", "created": 0} for c in chunks]

    plain = comparable(client.chat.completions.create(**request))
    instrument()
    assert comparable(client.chat.completions.create(**request)) == plain
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "response"  # the usage we asked for
    assert attributes["openai_usage.stream.outcome"] == "completed"


async def test_an_async_stream_another_wrapper_under_ours_makes_still_hides_our_chunk(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI, restore_create: Any
) -> None:
    wrapt.wrap_function_wrapper(AsyncCompletions, "create", _async_stream_wrapper)
    instrument()
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = [c async for c in stream]
    assert chunks and all(c.choices for c in chunks)  # no usage-only chunk
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "response"


class CountingStream(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
    """Another instrumentation's proxy of the SDK's stream, which watches what it relays."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._self_count = 0

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        chunk = next(self.__wrapped__)
        self._self_count += 1
        return chunk


def test_another_proxy_of_the_stream_under_ours_still_sees_every_chunk(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, restore_create: Any
) -> None:
    proxies: list[CountingStream] = []

    def other(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        proxies.append(CountingStream(wrapped(*args, **kwargs)))
        return proxies[-1]

    wrapt.wrap_function_wrapper(Completions, "create", other)
    instrument()
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    # Read through its own iteration, not around it: it saw ours too (the usage chunk).
    assert proxies[0]._self_count == len(chunks) + 1
    assert (telemetry.span().attributes or {})["openai_usage.usage.source"] == "response"


class BothWays:
    """A stream wrapper class serving sync and async streams alike: it defines both
    protocols, each delegating to the stream it wraps (only the one that fits works)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return next(self._stream)

    def __aiter__(self) -> Any:
        return self._stream.__aiter__()  # AttributeError on a sync stream

    async def __anext__(self) -> Any:
        return await self._stream.__anext__()


def test_a_sync_stream_of_a_wrapper_class_that_is_both_ways_is_read_the_sync_way(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, restore_create: Any
) -> None:
    def other(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return BothWays(wrapped(*args, **kwargs))

    wrapt.wrap_function_wrapper(Completions, "create", other)
    instrument()
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert chunks and all(c.choices for c in chunks)  # our usage chunk hidden
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["openai_usage.stream.outcome"] == "completed"


def test_a_list_another_wrapper_under_ours_hands_back_for_a_stream_is_left_as_it_is(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, restore_create: Any
) -> None:
    # A cache, say, that replays a stream as a list: a list is read as often as one likes
    # and has a length, which a stream's proxy would not allow. It is handed back as is.
    lists: list[list[Any]] = []

    def replayed(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        lists.append(list(wrapped(*args, **kwargs)))
        return lists[-1]

    wrapt.wrap_function_wrapper(Completions, "create", replayed)
    instrument(inject_stream_usage=False)
    result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert result is lists[0] and len(result) == len(list(result)) > 0
    assert len(telemetry.spans()) == 1


class RelayingOver:
    """Another instrumentation put over ours that takes the stream `create` returns (our
    proxy) and replaces the stream's `_iterator` with its own generator over it, and its
    `close` with one that also ends its record: what `langfuse.openai` (langfuse 5.2.0,
    `_instrument_openai_stream` and its async twin) does. It counts on the stream's own
    `__iter__` / `__next__` reading `_iterator` when they are called, as the SDK's do."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.ended = 0

    def _ended(self) -> None:
        self.ended += 1

    def relay(self, chunks: Any) -> Any:
        try:
            for chunk in chunks:
                self.seen.append(chunk)
                yield chunk
        finally:
            self._ended()

    async def arelay(self, chunks: Any) -> Any:
        try:
            async for chunk in chunks:
                self.seen.append(chunk)
                yield chunk
        finally:
            self._ended()

    def wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        stream = wrapped(*args, **kwargs)
        if isinstance(stream, openai.Stream):
            stream._iterator = self.relay(stream._iterator)
        return stream

    async def async_wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        stream = await wrapped(*args, **kwargs)
        if isinstance(stream, openai.AsyncStream):
            stream._iterator = self.arelay(stream._iterator)
        return stream


def test_a_wrapper_over_ours_relaying_the_streams_iterator_sees_every_chunk_and_its_end(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, restore_create: Any
) -> None:
    other = RelayingOver()
    instrument()
    wrapt.wrap_function_wrapper(Completions, "create", other.wrapper)  # over ours
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    chunks = list(client.chat.completions.create(**request))
    assert chunks and all(c.choices for c in chunks)  # our usage chunk still hidden
    # It read what the server sent, the usage chunk we asked for too, and saw the end.
    assert other.seen[:-1] == chunks
    assert other.seen[-1].usage.total_tokens == 19
    assert other.ended == 1
    stream = client.chat.completions.create(**request)
    read = [next(stream) for _ in range(len(chunks))]
    assert other.seen[len(chunks) + 1 :] == read  # `next()` reads through it too
    attributes = dict(telemetry.spans()[0].attributes or {})
    assert attributes["openai_usage.usage.source"] == "response"
    assert attributes["openai_usage.stream.outcome"] == "completed"


async def test_an_async_wrapper_over_ours_relaying_the_streams_iterator_sees_every_chunk(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI, restore_create: Any
) -> None:
    other = RelayingOver()
    instrument()
    wrapt.wrap_function_wrapper(AsyncCompletions, "create", other.async_wrapper)
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = [c async for c in stream]
    assert chunks and all(c.choices for c in chunks)
    assert other.seen[:-1] == chunks
    assert other.seen[-1].usage.total_tokens == 19
    assert other.ended == 1
    assert (telemetry.span().attributes or {})["openai_usage.usage.source"] == "response"


async def test_a_wrapper_over_ours_setting_aclose_on_an_async_stream_does_not_break_the_call(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI, restore_create: Any
) -> None:
    """`langfuse.openai` (langfuse 5.2.0) sets `stream.aclose = traced_aclose` on the
    async stream `create` returned, before handing it on: with ours under it, that stream
    is our proxy, whose read-only `aclose` made the assignment raise into the caller."""
    closed: list[str] = []

    async def other(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        stream = await wrapped(*args, **kwargs)
        close = stream.close

        async def traced_aclose() -> None:
            closed.append("theirs")
            await close()

        stream.aclose = traced_aclose
        return stream

    instrument()
    wrapt.wrap_function_wrapper(AsyncCompletions, "create", other)  # over ours
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert isinstance(stream, openai.AsyncStream)
    await stream.__anext__()
    await stream.aclose()  # theirs, as on the SDK's stream, which closes ours
    assert closed == ["theirs"]
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
    del stream.aclose  # and the SDK's comes back, where this release has one
    assert hasattr(stream, "aclose") == hasattr(openai.AsyncStream, "aclose")


def _closing_over(closed: list[str]) -> Any:
    """Another instrumentation put over ours that sets its own `close` on the stream
    `create` returned, one that also ends its record, then calls the stream's: what
    `langfuse.openai` (langfuse 5.2.0) does, sync and async. On the SDK's stream, the
    stream's `with` exit (`__exit__` is `self.close()`) calls it too."""

    def other(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        stream = wrapped(*args, **kwargs)
        close = stream.close

        def traced_close() -> None:
            closed.append("theirs")
            close()

        stream.close = traced_close
        return stream

    return other


def _aclosing_over(closed: list[str]) -> Any:
    async def other(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        stream = await wrapped(*args, **kwargs)
        close = stream.close

        async def traced_close() -> None:
            closed.append("theirs")
            await close()

        stream.close = traced_close
        return stream

    return other


def test_leaving_the_with_block_calls_a_close_a_wrapper_over_ours_set_on_the_stream(
    instrument: Any, telemetry: Telemetry, client: openai.OpenAI, restore_create: Any
) -> None:
    closed: list[str] = []
    instrument()
    wrapt.wrap_function_wrapper(Completions, "create", _closing_over(closed))  # over ours
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as stream:
        next(stream)
    assert closed == ["theirs"]  # as without us: the SDK's `__exit__` calls `self.close()`
    assert stream.response.is_closed
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"


async def test_leaving_the_async_with_block_calls_a_close_a_wrapper_over_ours_set(
    instrument: Any, telemetry: Telemetry, aclient: openai.AsyncOpenAI, restore_create: Any
) -> None:
    closed: list[str] = []
    instrument()
    wrapt.wrap_function_wrapper(AsyncCompletions, "create", _aclosing_over(closed))
    async with await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as stream:
        await stream.__anext__()
    assert closed == ["theirs"]
    assert stream.response.is_closed
    attributes = dict(telemetry.span().attributes or {})
    assert attributes["openai_usage.stream.outcome"] == "closed"
