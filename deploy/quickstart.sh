#!/usr/bin/env bash
# The first command of the README: prepare this machine (deploy/setup.sh), then
# run a local federation — Mosquitto, the controller, three agents as three
# sites — with the example deployment placed, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec .venv/bin/python -m federation.quickstart "$@"
