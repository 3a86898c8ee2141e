"""`python -m build` gives an sdist and a wheel that install and import cleanly.

Offline, as the rest of the suite: no build isolation (hatchling comes from this
environment), and each artifact is installed with `--no-index --no-deps` into a
fresh virtualenv that reaches the other dependencies through a `.pth` line, so
what is imported there is the artifact's copy of the package, not the working tree.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from opentelemetry.instrumentation.openai_usage.version import __version__

from .test_zero_code import ROOT, check_wheel

pytestmark = pytest.mark.timeout(300)

PACKAGE = "opentelemetry/instrumentation/openai_usage"


def _run(args: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=cwd)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
          "--outdir", str(out), str(ROOT)])  # fmt: skip
    return out


def _fresh_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.strip(), "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _imports_from(python: Path, env_dir: Path) -> None:
    """The installed copy imports, has its version and instrumentor, and is the venv's."""
    code = (
        "import opentelemetry.instrumentation.openai_usage as m; "
        "print(m.__file__); print(m.__version__); print(m.OpenAIUsageInstrumentor.__name__)"
    )
    out = _run([str(python), "-c", code])
    where, version, name = out.split()
    assert where.startswith(str(env_dir))
    assert version == __version__
    assert name == "OpenAIUsageInstrumentor"


def test_build_makes_one_wheel_and_one_sdist_named_by_the_version(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    stem = f"opentelemetry_instrumentation_openai_usage-{__version__}"
    assert names == [f"{stem}-py3-none-any.whl", f"{stem}.tar.gz"]


def test_wheel_metadata_names_license_classifiers_urls_and_the_version(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    check_wheel(wheel)
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
        licenses = [n for n in archive.namelist() if "/licenses/" in n]
    assert f"Version: {__version__}\n" in meta
    assert "License-Expression: Apache-2.0" in meta
    # PEP 639: the expression supersedes `License ::` classifiers, which tools may refuse
    # beside it (setuptools >= 77 does); one licence statement, not two.
    assert [line for line in meta.splitlines() if line.startswith("Classifier: License ::")] == []
    assert "Classifier: Typing :: Typed" in meta
    assert "Classifier: Programming Language :: Python :: 3.10" in meta
    assert "Project-URL: Changelog," in meta
    assert "Description-Content-Type: text/markdown" in meta
    assert any(n.endswith("LICENSE") for n in licenses)


def test_sdist_holds_sources_tests_and_what_they_read_but_no_local_state(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [n.split("/", 1)[1] for n in archive.getnames() if "/" in n]
    for needed in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE",
                   f"src/{PACKAGE}/__init__.py", f"src/{PACKAGE}/py.typed",
                   "tests/conftest.py",
                   # read by tests (test_examples, test_benchmark_scripts) and the README
                   "examples/demo.sh", "examples/app.py", "benchmarks/bytecodes.py",
                   "benchmarks/overhead.py", "benchmarks/otel_floor.py"):  # fmt: skip
        assert needed in names, needed
    assert not [n for n in names if n.startswith((".venv", ".git/", "dist/"))]
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_the_wheel_installs_and_imports_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    python = _fresh_venv(tmp_path / "venv")
    _run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)])
    _imports_from(python, tmp_path / "venv")


def test_the_sdist_builds_installs_and_imports_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    python = _fresh_venv(tmp_path / "venv")
    _run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
          "--no-build-isolation", str(sdist)])  # fmt: skip
    _imports_from(python, tmp_path / "venv")
    code = (
        "import importlib.resources as r; "
        "print(r.files('opentelemetry.instrumentation.openai_usage').joinpath('py.typed').is_file())"
    )
    typed = _run([str(python), "-c", code])
    assert typed.strip() == "True"
