"""ONNX Runtime execution providers for ``--backend onnxruntime --providers cpu|cuda|tensorrt``.

* ``cpu``: the default; what every test here runs.
* ``cuda``: onnxruntime-gpu's CUDA EP for the front and back graphs (and the SGS fallback graph),
  with IO binding: inputs are bound from host arrays and outputs are bound on the device, so ONNX
  Runtime makes no intermediate host copies and the outputs reach numpy in one device-to-host copy
  each. The SGS step between the graphs is numpy on the host (it needs feat/dist there), which is
  what bounds how much can stay on the device; device-resident SGS is the TensorRT backend's
  plugin. TF32 is switched off (``use_tf32=0``) for the same reason TensorRT builds clear it: it
  would move the SGS distances by ~1e-3 relative and B' with them.
* ``tensorrt``: ORT's TensorRT EP for front and back (engines cached in ``<export>/ort_trt_cache``),
  CUDA EP then CPU for whatever it does not take; SGS stays on the host (numpy), so no plugin
  is needed. This provider has no option to clear TensorRT's TF32 default, so on Ampere and newer
  ``atfr verify --backend onnxruntime --providers tensorrt`` is what shows whether B' still agrees.

ONNX Runtime silently falls back to the CPU when a GPU provider cannot load (missing CUDA/cuDNN
/TensorRT libraries); :func:`make_runner` checks the session's providers and fails with one line
instead. Imports nothing heavy at module level (the commands add the flag before bench caps
numpy's BLAS threads, which must happen before numpy is imported); onnxruntime and numpy are
imported when a runner is made. Torch-free.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from atfr.errors import ATFRError, DependencyError

from .export_paths import inside

if TYPE_CHECKING:
    import numpy as np

    from .backends import GraphRunner, OrtRunner

PROVIDERS = ("cpu", "cuda", "tensorrt")
ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
GPU_PACKAGE = "onnxruntime-gpu"


def add_providers_argument(p: argparse.ArgumentParser) -> None:
    """The shared ``--providers`` flag of run, infer, verify, bench and predict."""
    p.add_argument("--providers", choices=PROVIDERS, default=None,
                   help="ONNX Runtime execution provider (--backend onnxruntime): cpu (default), cuda (CUDA EP with "
                        "IO binding) or tensorrt (ORT's TensorRT EP; SGS stays on the host); cuda/tensorrt need "
                        f"{GPU_PACKAGE}")


@dataclass(frozen=True)
class ProviderChoice:
    """What ``--providers NAME`` means for the sessions of one export."""

    name: str
    providers: list[Any] = field(default_factory=list)  # InferenceSession(providers=...): names or (name, options)
    io_binding: bool = False
    device: str = "cpu"  # where IO binding puts the outputs

    @property
    def primary(self) -> str:
        p = self.providers[0]
        return p[0] if isinstance(p, tuple) else p


def _installed_ort() -> str:
    """'onnxruntime 1.20.1' / 'onnxruntime-gpu 1.20.1' / 'no onnxruntime' (which distribution is installed)."""
    from importlib import metadata  # noqa: PLC0415

    found = []
    for dist in ("onnxruntime-gpu", "onnxruntime", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found) or "no onnxruntime"


def resolve_providers(name: str | None, available: Sequence[str], cache_dir: str | Path | None = None,
                      installed: str | None = None) -> ProviderChoice:
    """Check ``name`` against ONNX Runtime's available providers and build the session list.

    ``available``: onnxruntime.get_available_providers(); ``installed``: which onnxruntime
    distribution is installed (for the message; looked up when None)."""
    name = (name or "cpu").lower()
    if name not in PROVIDERS:
        raise ATFRError(f"unknown --providers {name!r}; choose one of: {', '.join(PROVIDERS)}")
    if name == "cpu":
        return ProviderChoice("cpu", ["CPUExecutionProvider"])
    want = ORT_NAMES[name]
    if want not in available:
        inst = installed if installed is not None else _installed_ort()
        if GPU_PACKAGE not in inst:
            raise DependencyError(f"--providers {name} needs {GPU_PACKAGE} ({inst} is installed, providers: "
                                  f"{', '.join(available) or 'none'}): pip uninstall onnxruntime && pip install "
                                  f"{GPU_PACKAGE}")
        raise DependencyError(f"--providers {name}: this {inst} has no {want} (providers: {', '.join(available)}); "
                              + ("install the TensorRT libraries ORT was built against" if name == "tensorrt"
                                 else f"install the CUDA build of {GPU_PACKAGE}"))
    cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})
    if name == "cuda":
        return ProviderChoice("cuda", [cuda, "CPUExecutionProvider"], io_binding=True, device="cuda")
    trt_opts = {"trt_fp16_enable": "False", "trt_engine_cache_enable": "True"}
    if cache_dir is not None:
        trt_opts["trt_engine_cache_path"] = str(cache_dir)
    chain: list[Any] = [("TensorrtExecutionProvider", trt_opts)]
    if "CUDAExecutionProvider" in available:
        chain.append(cuda)
    return ProviderChoice("tensorrt", chain + ["CPUExecutionProvider"])


class OrtIoBindingRunner:
    """An OrtRunner's session run with IO binding: host inputs bound per call, outputs allocated by
    ONNX Runtime on ``device`` and copied to numpy in one go."""

    def __init__(self, runner: "OrtRunner", device: str = "cpu") -> None:
        self.session, self.path, self.device = runner.session, runner.path, device
        self.input_names, self.output_names = runner.input_names, runner.output_names

    def run(self, feeds: "dict[str, np.ndarray]") -> "dict[str, np.ndarray]":
        import numpy as np  # noqa: PLC0415

        b = self.session.io_binding()
        for n in self.input_names:
            b.bind_cpu_input(n, np.ascontiguousarray(feeds[n]))
        for n in self.output_names:
            b.bind_output(n, self.device)
        self.session.run_with_iobinding(b)
        return dict(zip(self.output_names, b.copy_outputs_to_cpu()))


def check_session(runner: "OrtRunner | OrtIoBindingRunner", choice: ProviderChoice) -> None:
    """ONNX Runtime falls back to the CPU, with only a log line, when a GPU provider fails to load
    (e.g. CUDA 12 / cuDNN 9 libraries missing): make that one clear error instead."""
    got = list(runner.session.get_providers())
    if choice.primary not in got:
        raise DependencyError(f"{Path(runner.path).name}: ONNX Runtime could not start {choice.primary} "
                              f"(session runs on {', '.join(got)}): are the CUDA/cuDNN"
                              f"{'/TensorRT' if choice.name == 'tensorrt' else ''} libraries {GPU_PACKAGE} "
                              "needs installed and on the library path?")


def make_runner(path: str | Path, threads: int | None, choice: ProviderChoice,
                spin: str | None = None) -> "GraphRunner":
    from .backends import OrtRunner  # noqa: PLC0415

    runner = OrtRunner(path, threads, providers=choice.providers, spin=spin)
    check_session(runner, choice)
    return OrtIoBindingRunner(runner, choice.device) if choice.io_binding else runner


def choose(name: str | None, export_root: str | Path | None = None) -> ProviderChoice:
    """resolve_providers() against the installed onnxruntime."""
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        raise DependencyError("onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for "
                              "--providers cuda/tensorrt)") from None
    # TensorRT EP engines are cached in the export folder: never through a link leaving it.
    cache = inside(export_root, "ort_trt_cache", "the TensorRT EP cache") if export_root is not None else None
    choice = resolve_providers(name, ort.get_available_providers(), cache)
    if choice.name != "cpu" and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu >= 1.21 installed with its [cuda,cudnn] wheels finds their libraries only
        # when preloaded (they are not on the library path); harmless where the system has them.
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - a failure shows up as check_session's one-line error
            pass
    return choice
