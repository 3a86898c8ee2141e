"""Another OpenAI instrumentation next to ours is found and named, once; nothing breaks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import openai
import pytest
import wrapt
from openai.resources.chat.completions import Completions

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


def _install_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution, as pip leaves it, registering the entry point `openai`."""
    dist_info = tmp_path / "opentelemetry_instrumentation_openai_v2-2.1b0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: opentelemetry-instrumentation-openai-v2\nVersion: 2.1b0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[opentelemetry_instrumentor]\nopenai = opentelemetry.instrumentation.openai_v2:X\n"
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
