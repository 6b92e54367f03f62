#!/usr/bin/env bash
# README command 2: install and run the whole test suite (slow cases included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${PYTHON:-python3}" -m pytest -q --durations=15 "$@"
