"""`opentelemetry-instrument` traces an unmodified app, from the built wheel, in a fresh venv.

Everything offline, as the rest of the suite: the wheel is built here with
hatchling (no build isolation, so nothing is downloaded), installed with
`--no-index --no-deps` into a new virtualenv, and that venv reaches the other
dependencies (openai, OpenTelemetry, the distro) through a `.pth` line pointing at
this interpreter's site-packages. Our own project is not on that path: the
editable install's `.pth` is not processed there, and the wheel's distribution,
first on the path, is the one whose entry point `opentelemetry-instrument` loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
APP = textwrap.dedent(
    """
    import openai

    client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
    messages = [{"role": "user", "content": "What's 1+1? Answer in one word."}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    print("APP SAW", reply.usage.prompt_tokens, type(reply).__name__, flush=True)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
    print("APP STREAM", isinstance(stream, openai.Stream), len(list(stream)), flush=True)
    """
)


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


def check_wheel(wheel: Path) -> None:
    """What a user installs: the package and its type marker, the entry point, the metadata."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        package = "opentelemetry/instrumentation/openai_usage/"
        assert f"{package}__init__.py" in names
        assert f"{package}py.typed" in names
        assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
        assert not [n for n in names if n.endswith(".pyc")]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
        assert "[opentelemetry_instrumentor]" in text
        assert "openai_usage = opentelemetry.instrumentation.openai_usage:" in text
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
        assert "Requires-Python: >=3.10" in meta
        assert "Requires-Dist: tiktoken" in meta
        assert "Provides-Extra: offline" in meta
        assert "Provides-Extra: instruments" in meta


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling")
    work = tmp_path_factory.mktemp("zero-code")
    dist = work / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(ROOT)]
    )  # fmt: skip
    (wheel,) = dist.glob("opentelemetry_instrumentation_openai_usage-*.whl")
    check_wheel(wheel)
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheel)])
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.stdout.strip(), "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def test_opentelemetry_instrument_traces_an_unmodified_app_from_the_wheel(
    fresh_venv: Path, server: LocalOpenAIServer, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    python = fresh_venv / "bin" / "python"
    where = _run([str(python), "-c", "import opentelemetry.instrumentation.openai_usage as m; "
                  "print(m.__file__)"])  # fmt: skip
    assert str(fresh_venv) in where.stdout  # the wheel's copy, not the working tree's
    env = {
        **os.environ,
        "PATH": f"{fresh_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-zero-code-SECRET",
        "OTEL_SERVICE_NAME": "zero-code-app",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    }
    env.pop("PYTHONPATH", None)
    launcher = (
        "import sys; from opentelemetry.instrumentation.auto_instrumentation import run; "
        "sys.argv = ['opentelemetry-instrument', '--traces_exporter', 'console', "
        "'--metrics_exporter', 'console', '--logs_exporter', 'none', 'python', sys.argv[1]]; "
        "run()"
    )
    done = _run([str(python), "-c", launcher, str(app)], env=env, cwd=tmp_path)
    out = done.stdout
    assert "APP SAW 13 ChatCompletion" in out  # the bundled server bills 13 for it
    assert "APP STREAM True" in out
    assert out.count('"name": "chat gpt-4o-mini"') == 2
    assert '"gen_ai.usage.input_tokens": 13' in out
    assert '"openai_usage.usage.source": "response"' in out
    assert '"openai_usage.stream.include_usage_injected": true' in out
    assert "gen_ai.client.token.usage" in out  # the metrics, flushed at exit
    assert "SECRET" not in out
