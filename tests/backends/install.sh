#!/usr/bin/env bash
# Installs the real backends the tests in tests/backends/ run against, idempotently:
#   .venv-phoenix/   Arize Phoenix (an OTLP trace store that runs offline), ~850 MB, ~2 min
#   prometheus       Debian's package, for the metrics path (scrapes our Prometheus reader)
# Why a separate venv for Phoenix: it pins its own opentelemetry/grpc/protobuf versions,
# which must not leak into the test venvs that check our supported dependency ranges.
# Prints where each backend is (or why it is missing) and never fails on its own: the
# tests decide, and under CI=true a missing backend fails them.
set -uo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-python3}"
say() { echo "[backends] $*"; }
# pip warns once per package about find-links folders it skips; only the rest matters.
quiet_pip() {
  "$@" 2>&1 | grep -v -e "is ignored: it is neither a file nor a directory"
  return "${PIPESTATUS[0]}"
}

# Found, not imported: importing Phoenix takes seconds.
has_phoenix() {
  [[ -x .venv-phoenix/bin/phoenix ]] &&
    .venv-phoenix/bin/python -c "import importlib.util as u, sys; sys.exit(not u.find_spec('phoenix'))" 2>/dev/null
}

if has_phoenix; then
  say "Phoenix already installed: .venv-phoenix/bin/phoenix"
else
  say "installing Arize Phoenix into .venv-phoenix (about 2 minutes, 850 MB)..."
  start=$SECONDS
  if { [[ -x .venv-phoenix/bin/python ]] || "$PYTHON" -m venv .venv-phoenix; } &&
    quiet_pip .venv-phoenix/bin/python -m pip install -q --disable-pip-version-check --upgrade pip &&
    quiet_pip .venv-phoenix/bin/python -m pip install -q --disable-pip-version-check arize-phoenix &&
    has_phoenix; then
    say "Phoenix installed in $((SECONDS - start)) s: .venv-phoenix/bin/phoenix"
  else
    say "could not install Phoenix (see above): its tests skip, or fail under CI"
  fi
fi

if command -v prometheus >/dev/null 2>&1; then
  say "Prometheus already installed: $(command -v prometheus)"
elif ! command -v apt-get >/dev/null 2>&1; then
  say "prometheus is not on PATH and there is no apt-get here: install it by hand"
elif [[ "$(id -u)" != 0 ]]; then
  say "prometheus is not on PATH and this is not root: sudo apt-get install -y prometheus"
else
  say "installing Debian's prometheus package (apt-get update + install, about a minute)..."
  start=$SECONDS
  if DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
      >/dev/null; then
    say "Prometheus installed in $((SECONDS - start)) s: $(command -v prometheus)"
  else
    say "could not install prometheus (see above): its test skips, or fails under CI"
  fi
fi
exit 0
