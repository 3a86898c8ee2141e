"""The runnable examples run, against the bundled server, and their spans carry usage.

(The docker compose files need a Docker engine, which this machine has not; their
configuration is checked for the pieces the README promises.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_keyless(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Python with `args`, without any API key or OTLP endpoint of the caller's: the
    bundled local server answers, and the console shows the telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_OPENAI_"))}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.update(extra_env)
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=100
    )
    assert done.returncode == 0, done.stderr
    return done


def run_example(name: str, **extra_env: str) -> str:
    return run_keyless(str(EXAMPLES / name), **extra_env).stdout


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return run_keyless("-m", "opentelemetry.instrumentation.openai_usage.demo", "--local", *args)


def test_plain_setup_example_traces_calls_under_the_callers_span() -> None:
    out = run_example("plain_setup.py")
    assert "reply: " in out and "streamed: " in out
    assert out.count('"name": "chat gpt-4o-mini"') == 2
    assert '"name": "answer a question"' in out
    assert '"gen_ai.usage.input_tokens": 13' in out
    assert '"name": "gen_ai.client.token.usage"' in out


def test_azure_example_reports_the_deployment_and_azure_provider() -> None:
    out = run_example("azure_openai.py")
    assert '"gen_ai.provider.name": "azure.ai.openai"' in out
    assert '"gen_ai.request.model": "my-gpt-4o-mini"' in out
    assert '"gen_ai.response.model": "gpt-4o-mini-2024-07-18"' in out  # what it served
    assert '"openai_usage.usage.source": "response"' in out


def test_compose_app_runs_without_a_key() -> None:
    assert "round 1/1 done" in run_example("app.py", APP_ROUNDS="1")


def test_compose_files_wire_otlp_jaeger_and_prometheus() -> None:
    jaeger = (EXAMPLES / "jaeger" / "docker-compose.yml").read_text()
    assert "jaegertracing/jaeger:2" in jaeger
    for port in ("16686:16686", "4317:4317", "4318:4318"):
        assert port in jaeger
    assert "OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4318" in jaeger
    collector = (EXAMPLES / "collector" / "otel-collector-config.yaml").read_text()
    assert "otlp/jaeger" in collector and "prometheus:" in collector
    assert "collector:8889" in (EXAMPLES / "collector" / "prometheus.yml").read_text()
    dockerfile = (EXAMPLES / "Dockerfile").read_text()
    assert "opentelemetry-instrument" in dockerfile
    # The supported openai releases (an unpinned one could be a release we are skipped for).
    (install,) = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    assert '".[offline,instruments]"' in install and " openai " not in install
    # `COPY . /src` from the root: history and virtualenvs stay out of the build context.
    ignored = (EXAMPLES.parent / ".dockerignore").read_text().split()
    assert ".git/" in ignored and ".venv-*/" in ignored


def test_the_quiet_demo_prints_only_the_token_table() -> None:
    loud = run_demo()
    assert "[demo] call 1/" in loud.stderr
    quiet = run_demo("--quiet")
    assert "[demo]" not in quiet.stderr
    assert "Token usage per call (from the spans):" in quiet.stdout
    assert '"name": "chat gpt-4o-mini"' not in quiet.stdout  # no console spans either


def test_the_demo_with_a_key_it_cannot_use_says_why_and_how_to_run_locally() -> None:
    # OPENAI_API_KEY set on a machine that cannot reach the service: a port where nothing
    # listens stands for it (the demo's real-service client honours OPENAI_BASE_URL).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    env.update(OPENAI_API_KEY="sk-dummy", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    done = subprocess.run(
        [sys.executable, "-m", "opentelemetry.instrumentation.openai_usage.demo", "--quiet"],
        capture_output=True, text=True, env=env, timeout=100,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "[demo] call 1/7 failed: APIConnectionError: Connection error.",
        "[demo] OPENAI_API_KEY is set, so the demo calls the real OpenAI service; "
        "`bash examples/demo.sh --local` uses the bundled local server instead",
    ]
    # The one call made is still in the table, with why it failed.
    rows = done.stdout.strip().splitlines()[-1].split()
    assert rows == ["1", "chat", "gpt-4o-mini", "no", "error", "(APIConnectionError)",
                    "-", "-", "-", "none"]  # fmt: skip
