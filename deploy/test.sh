#!/usr/bin/env bash
# The whole test suite on this machine: sets up what it needs (deploy/setup.sh),
# checks lint and types, then runs unit, integration and drill tests against a
# real Mosquitto and the real Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff check .
echo "==> mypy"
mypy
echo "==> pytest"
# Docker tests must run, not skip, wherever an engine answers.
if docker info >/dev/null 2>&1; then export EDGEFED_REQUIRE_DOCKER=1; fi
exec python -m pytest -n 2 "$@"
