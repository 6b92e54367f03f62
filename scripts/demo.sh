#!/usr/bin/env bash
# README command 1: install, export the built-in demo model, run it on a demo video (ONNX Runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec atfr demo "$@"
