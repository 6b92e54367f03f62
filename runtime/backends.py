"""Graph runners: one object per graph (ONNX file or TensorRT engine), one ``run`` method.

Polygraphy-style: the pipeline only sees ``GraphRunner``; backends are chosen by name and
loaded lazily so a missing optional package fails with one clear line, not at import time.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from atfr.errors import ATFRError, DependencyError


class GraphRunner(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# What ORT's intra-op workers do when a Run() ends. ORT's default ("on") keeps them spin-waiting
# for the next parallel section, so on a small or shared CPU they steal the cores from whatever
# runs next: the SGS step, the other graph of the split pipeline, the pre-processing thread, other
# processes. "stop" spins inside a Run() and parks the workers when it returns
# (session.force_spinning_stop=1); "off" never spins (session.intra_op.allow_spinning=0).
# Measured side by side by benchmarks/runtime_speed.py.
SPIN_POLICIES = ("off", "stop", "on")
DEFAULT_SPIN = "off"


def spin_policy(spin: str | None = None) -> str:
    """The argument, else ATFR_ORT_SPIN (off/stop/on; 0 = off, 1 = on), else DEFAULT_SPIN."""
    raw = spin if spin is not None else os.environ.get("ATFR_ORT_SPIN", DEFAULT_SPIN)
    v = str(raw).strip().lower()
    v = {"0": "off", "1": "on"}.get(v, v)
    if v not in SPIN_POLICIES:
        raise ATFRError(f"ONNX Runtime spin policy {raw!r} is not one of {', '.join(SPIN_POLICIES)} (ATFR_ORT_SPIN)")
    return v


def ort_session_options(ort: Any, threads: int | None = None, spin: str | None = None) -> Any:
    """SessionOptions for every session the runtime creates: intra-op threads (the argument, else
    ATFR_ORT_THREADS, else ORT's default of one per physical core) and the spin policy."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    elif os.environ.get("ATFR_ORT_THREADS"):
        so.intra_op_num_threads = int(os.environ["ATFR_ORT_THREADS"])
    policy = spin_policy(spin)
    if policy == "off":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif policy == "stop":
        so.add_session_config_entry("session.force_spinning_stop", "1")
    return so


class OrtRunner:
    """ONNX Runtime session over one graph (CPU by default; CUDA EP when asked and present)."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[Any] | None = None,
                 spin: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DependencyError("onnxruntime is not installed (pip install onnxruntime)") from None
        p = Path(path)
        if not p.exists():
            raise ATFRError(f"{p} is missing; re-run 'atfr export'")
        so = ort_session_options(ort, threads, spin)
        self.spin = spin_policy(spin)
        # Names or (name, options) pairs, passed through as given: atfr.runtime.ort_providers checks them
        # against the installed onnxruntime first and the session's providers after.
        prov = list(providers) if providers else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(p), so, providers=prov)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise ATFRError(f"{p}: ONNX Runtime cannot load this graph ({str(e).splitlines()[0][:160]})") from None
        self.path = p
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outs))


BACKENDS = ("onnxruntime", "tensorrt")

# Backends that build a whole Pipeline themselves, as 'module:function' strings imported on first
# use: the pipeline never imports them (atfr.runtime.tensorrt imports the pipeline, not the other
# way round), and a missing optional package fails with one line only when that backend is asked for.
PIPELINE_LOADERS: dict[str, str] = {
    "tensorrt": "atfr.runtime.tensorrt.backend:load_trt_pipeline",
}


def pipeline_loader(name: str) -> Callable[..., Any] | None:
    """The registered loader ``f(manifest, **options) -> Pipeline`` for ``name``; None for
    onnxruntime, which the pipeline assembles from OrtRunners itself."""
    target = PIPELINE_LOADERS.get(name)
    if target is None:
        return None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


# Backends that load one graph's runner (``f(manifest, graph) -> runner``; AdaFuse exports: one
# engine per graph, ``<graph>.engine``), imported on first use as PIPELINE_LOADERS.
GRAPH_LOADERS: dict[str, str] = {
    "tensorrt": "atfr.runtime.tensorrt.adafuse_backend:load_adafuse_engine",
}


def graph_loader(name: str) -> Callable[..., Any] | None:
    """The registered ``f(manifest, graph) -> runner`` for ``name``; None for onnxruntime."""
    target = GRAPH_LOADERS.get(name)
    if target is None:
        return None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def resolve_backend(name: str) -> str:
    """'auto' picks TensorRT where it imports, else ONNX Runtime."""
    if name == "auto":
        try:
            import tensorrt  # noqa: F401
            return "tensorrt"
        except ImportError:
            return "onnxruntime"
    if name not in BACKENDS:
        raise ATFRError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    return name
