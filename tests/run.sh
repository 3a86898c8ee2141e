#!/usr/bin/env bash
# The whole test suite, from nothing: lint and type checks, then the full pytest
# suite once per supported openai release line, and with the newest SDK once per other
# supported Python, each in its own virtualenv.
#
#   bash tests/run.sh                 # everything (what CI runs)
#   OPENAI_MATRIX="latest" bash tests/run.sh   # only the newest SDK, for quick local runs
#   OPENAI_USAGE_BACKENDS=0 bash tests/run.sh  # don't install the real backends (tests skip)
#
# Needs only python3 (3.10+) and access to a package index; the tests against real
# backends (tests/backends/: Arize Phoenix, Prometheus) also install Debian's prometheus
# with apt-get (as root), and run in the "latest" line only.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
# name=pip requirement(s). "oldest" is the oldest openai we declare support for
# (the first release with stream_options); httpx 0.28 removed an argument it uses.
declare -A MATRIX=(
  [oldest]="openai==1.26.0 httpx<0.28"
  [v1]="openai>=1.26,<2"
  [v2]="openai>=2,<3"
  [latest]="openai>=3,<4"
  # The oldest OpenTelemetry, wrapt and tiktoken we declare (pyproject.toml), with the newest
  # SDK: the semantic-conventions constants we use first appeared in 0.63b0.
  [floor]="openai>=3,<4 opentelemetry-api==1.42.0 opentelemetry-sdk==1.42.0 opentelemetry-instrumentation==0.63b0 opentelemetry-semantic-conventions==0.63b0 wrapt==1.14.0 tiktoken==0.7.0"
)
# The newest SDK on the other Pythons we declare (pyproject.toml's classifiers); the lines
# above run on $PYTHON. A line whose Python this machine lacks is reported and skipped.
# py3.12 lies between the bounds and is left out of the default run (CI has 90 minutes);
# `OPENAI_MATRIX=py3.12` runs it.
declare -A LINE_PYTHON=([py3.10]=3.10 [py3.12]=3.12 [py3.13]=3.13)
for name in "${!LINE_PYTHON[@]}"; do MATRIX[$name]="openai>=3,<4"; done
ORDER=(latest oldest v1 v2 floor py3.10 py3.13)
if [[ -n "${OPENAI_MATRIX:-}" ]]; then read -r -a ORDER <<<"${OPENAI_MATRIX}"; fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONDONTWRITEBYTECODE=1

python_for() {  # python_for NAME -> prints the interpreter for that line, or nothing
  local version="${LINE_PYTHON[$1]:-}"
  if [[ -z "$version" ]]; then echo "$PYTHON"; return; fi
  local found
  # On PATH (a pyenv shim there fails unless that version is selected), else pyenv's builds.
  for found in "$(command -v "python${version}" || true)" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/${version}".*/bin/python 2>/dev/null | sort -rV); do
    if [[ -n "$found" ]] && "$found" -c "" 2>/dev/null; then echo "$found"; return 0; fi
  done
  return 0
}

venv_for() {  # venv_for NAME INTERPRETER REQUIREMENTS... -> prints the venv path, installed
  local name="$1" interpreter="$2"; shift 2
  local venv=".venv-test-${name}"
  if [[ ! -x "${venv}/bin/python" ]]; then
    "$interpreter" -m venv "$venv"
  fi
  "${venv}/bin/python" -m pip install -q --upgrade pip >/dev/null
  "${venv}/bin/python" -m pip install -q -e ".[dev]" "$@" >/dev/null
  echo "$venv"
}

# The real backends, found by tests/backends/ through these variables. Unset, those
# tests skip, except under CI (CI=true), where they fail: CI must run them.
if [[ " ${ORDER[*]} " == *" latest "* && "${OPENAI_USAGE_BACKENDS:-1}" != 0 ]]; then
  echo "=== real backends: installing (first run only: about 2 minutes)"
  bash tests/backends/install.sh
  if [[ -x .venv-phoenix/bin/phoenix ]]; then
    export OPENAI_USAGE_PHOENIX="$PWD/.venv-phoenix/bin/phoenix"
  fi
  if command -v prometheus >/dev/null 2>&1; then
    export OPENAI_USAGE_PROMETHEUS="$(command -v prometheus)"
  fi
fi

failed=()
for name in "${ORDER[@]}"; do
  read -r -a reqs <<<"${MATRIX[$name]}"
  interpreter="$(python_for "$name")"
  if [[ -z "$interpreter" ]]; then
    echo "=== openai ${name}: SKIPPED, no python${LINE_PYTHON[$name]} on this machine"
    continue
  fi
  echo "=== openai ${name}: installing ${MATRIX[$name]}"
  venv="$(venv_for "$name" "$interpreter" "${reqs[@]}")"
  py="${venv}/bin/python"
  echo "=== openai ${name}: $("$py" -c 'import openai, sys; print("openai", openai.__version__, "on Python", sys.version.split()[0])')"
  if [[ "$name" == "latest" ]]; then
    echo "=== ruff"
    "$py" -m ruff check src tests benchmarks examples || failed+=("ruff")
    "$py" -m ruff format --check src tests benchmarks examples || failed+=("ruff-format")
    echo "=== mypy --strict"
    "$py" -m mypy || failed+=("mypy")
  fi
  echo "=== pytest (openai ${name})"
  only_latest=()  # the backend tests are about export, not the SDK: one line runs them
  if [[ "$name" != "latest" ]]; then only_latest=(--ignore=tests/backends); fi
  if ! "$py" -m pytest -q -p no:cacheprovider "${only_latest[@]}"; then
    failed+=("pytest-${name}")
  fi
done

if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "ALL PASSED"
