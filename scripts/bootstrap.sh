#!/usr/bin/env bash
# Install atfr-deploy with export and test dependencies into the current Python.
# torch is pinned HERE only (not in pyproject): torch==2.13.0 resolves to the CPU wheel on these
# machines, while a bare `pip install torch` would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".[export,dev]"
