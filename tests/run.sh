#!/usr/bin/env bash
# The whole test suite, from nothing: lint and type checks, then the full pytest
# suite once per supported openai release line, each in its own virtualenv.
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
ORDER=(latest oldest v1 v2 floor)
if [[ -n "${OPENAI_MATRIX:-}" ]]; then read -r -a ORDER <<<"${OPENAI_MATRIX}"; fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONDONTWRITEBYTECODE=1

venv_for() {  # venv_for NAME REQUIREMENTS... -> prints the venv path, installed
  local name="$1"; shift
  local venv=".venv-test-${name}"
  if [[ ! -x "${venv}/bin/python" ]]; then
    "$PYTHON" -m venv "$venv"
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
  echo "=== openai ${name}: installing ${MATRIX[$name]}"
  venv="$(venv_for "$name" "${reqs[@]}")"
  py="${venv}/bin/python"
  echo "=== openai ${name}: $("$py" -c 'import openai; print("openai", openai.__version__)')"
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
