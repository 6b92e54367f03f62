#!/usr/bin/env bash
# One device check for a machine with an NVIDIA GPU; runs as is in under 8 minutes.
#
#   scripts/device_check.sh [OUTDIR] [--budget S] [--no-install] [--wheelhouse DIR] [--only STEPS]
#
# OUTDIR defaults to $OUT, else ./device_check_out. Needs only this repository, the shared folder next
# to it (golden models), a Python 3.10+ and the NVIDIA driver: nvcc, cuda-python and onnxruntime-gpu are
# installed from PyPI, pinned to the driver's CUDA version, into OUTDIR/work/pkgs when missing; TensorRT
# and torch are used where present and never installed. Writes OUTDIR/summary.json (every step run or
# skipped, with the reason) and OUTDIR/logs/. See scripts/device_check.py for the steps.
# Environment: PYTHON (interpreter to use), ATFR_NVCC, ATFR_NVCC_ARCH, ATFR_SGS_PLUGIN, ATFR_SHARED.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$PWD/device_check_out}
if [[ $# -gt 0 && "$1" != -* ]]; then
    out=$1
    shift
fi

py=${PYTHON:-}
if [[ -z "$py" ]]; then
    for cand in "$ROOT/.venv/bin/python" python3 python; do
        if command -v "$cand" >/dev/null 2>&1; then
            py=$cand
            break
        fi
    done
fi
if [[ -z "$py" ]]; then
    echo "device_check: no Python found (set PYTHON)" >&2
    exit 2
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "device_check: $py is older than Python 3.10" >&2
    exit 2
fi
exec "$py" "$ROOT/scripts/device_check.py" --out "$out" "$@"
