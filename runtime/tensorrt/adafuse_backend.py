"""One AdaFuse engine (``<graph>.engine`` from ``atfr build``) as a runner with ``run(feeds) -> dict``,
for AdaFuseClipRunner (``model``) and AdaFuseOnlineRunner (``online``, ``online_gathered``).

The checks are ATFR's (backend.load_trt_pipeline): a missing engine or sidecar, an engine from
another TensorRT release or GPU (exit 4), an engine built from another ONNX graph than the export
holds (its checksum; exit 2) are one line each, before the engine is deserialized. Input and
output names are the engine's own. Written against the TensorRT 10.3-11.x API; not executed here.
"""

from __future__ import annotations

import os
from pathlib import Path

from atfr.errors import ATFRError, DependencyError

from ..export_paths import inside
from ..manifest import Manifest
from .adafuse_plan import engine_name
from .api import import_tensorrt, make_logger
from .backend import TrtEngineRunner, read_sidecar
from .compat import check_supported, engine_compat_problem, stale_problem
from .cuda import Cuda


def load_adafuse_engine(manifest: Manifest, graph: str, engine_dir: str | os.PathLike | None = None,
                        verbose: bool = False) -> TrtEngineRunner:
    m = manifest
    edir = Path(engine_dir) if engine_dir else m.root
    name = engine_name(graph)
    if not engine_dir:  # engines read from the export folder follow its path rule (runtime/export_paths.py)
        inside(m.root, name, "engine")
        inside(m.root, name + ".json", "engine metadata")
    side = read_sidecar(edir / name, str(m.root))
    if side.get("graph") != graph:
        raise ATFRError(f"{name} was built from {side.get('onnx_file') or 'another graph'}, not {graph}.onnx: "
                        f"rebuild with 'atfr build {m.root} --force'")
    trt = import_tensorrt()
    check_supported(trt.__version__, "host")
    cuda = Cuda.get()
    gpu = cuda.device_info()
    problem = engine_compat_problem(side, trt.__version__, gpu["gpu_name"], gpu["compute_capability"], None,
                                    str(m.root))
    if problem:
        raise DependencyError(f"{name}: {problem}")
    stale = stale_problem(side, m.raw.get("checksums", {}).get(side.get("onnx_file", "")), str(m.root))
    if stale:
        raise ATFRError(stale)
    logger = make_logger(trt, verbose)
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    runtime = trt.Runtime(logger)
    return TrtEngineRunner(trt, runtime, cuda, cuda.stream(), edir / name, logger)
