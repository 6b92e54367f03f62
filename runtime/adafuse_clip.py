"""An AdaFuse clip-graph export on ONNX Runtime: logits, policy and GFLOPs per clip. Torch-free.

The export (export/adafuse_export.py) holds ``model.onnx``: ``clip0`` [N,3,T,S,S] -> ``logits``
[N,K] and ``policy{i}`` [N,T,C_i] per gated block; its manifest's ``adafuse`` section carries the
counts that turn a policy into GFLOPs (runtime/adafuse_gflops.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atfr.errors import ATFRError

from . import ort_providers
from .backends import graph_loader, resolve_backend
from .adafuse_gflops import clip_report
from .manifest import Manifest, load_manifest
from .pipeline import ClipResult, softmax


def is_adafuse_export(path: str | Path) -> bool:
    try:
        return is_adafuse_manifest(load_manifest(path))
    except ATFRError:
        return False


def graph_runner(m: Manifest, graph: str, backend: str, providers: str | None,
                 threads: int | None) -> tuple[Any, str]:
    """One graph's runner (``run(feeds) -> dict``) and the backend's name: ONNX Runtime on
    ``<graph>.onnx``, or TensorRT on ``<graph>.engine`` (loaded through backends.GRAPH_LOADERS).

    'auto' takes TensorRT where it imports and the export holds the engine ('atfr build' names it
    ``<graph>.engine``), else ONNX Runtime: an AdaFuse export runs without engines, and callers
    that leave the backend to 'auto' (benchmarks, tests) keep working on a machine with TensorRT."""
    if providers and backend == "auto":
        backend = "onnxruntime"
    if backend == "auto":
        backend = resolve_backend(backend)
        if backend == "tensorrt" and not (m.root / f"{graph}.engine").is_file():
            backend = "onnxruntime"
    backend = resolve_backend(backend)
    loader = graph_loader(backend)
    if loader is not None:
        if providers and providers != "cpu":
            raise ATFRError(f"--providers {providers} applies to --backend onnxruntime, not {backend}")
        return loader(m, graph), backend
    choice = ort_providers.choose(providers, m.root)
    return ort_providers.make_runner(m.path(graph), threads, choice), "onnxruntime"


class AdaFuseClipRunner:
    backend = "onnxruntime"  # set by load

    def __init__(self, manifest: Manifest, runner: Any):
        self.manifest = manifest
        self.runner = runner
        ada = manifest.raw["adafuse"]
        self.blocks = list(ada["policy_blocks"])
        self.base_per_frame = float(ada["base_gflops_per_frame"])
        self.convs = [tuple(c) for c in ada["block_conv_flops"]]

    @classmethod
    def load(cls, outdir: str | Path, backend: str = "auto", providers: str | None = None,
             threads: int | None = None) -> "AdaFuseClipRunner":
        """backend: onnxruntime (model.onnx), tensorrt (model.engine from 'atfr build') or auto
        (see :func:`graph_runner`)."""
        m = load_manifest(outdir, check=True)
        runner, name = graph_runner(m, "model", backend, providers, threads)
        r = cls(m, runner)
        r.backend = name
        return r

    def infer(self, clip: np.ndarray) -> tuple[ClipResult, dict[str, Any]]:
        """One clip [1,3,T,S,S] -> its result and the AdaFuse JSON fields."""
        want = self.manifest.clip_shapes(1)[0]
        if clip.shape != want:
            raise ATFRError(f"clip shape {tuple(clip.shape)} does not match the export {tuple(want)}")
        res = self.infer_batch(clip)[0]
        return res, res.report

    def infer_batch(self, clips: np.ndarray) -> list["AdaFuseClipResult"]:
        """N clips [N,3,T,S,S] in one run of the clip graph (any N; each clip gets its own policy:
        the graph's batch rows are independent). ``atfr predict``: the spatial views of a temporal
        view; ``atfr serve``: a request's clips."""
        want = self.manifest.clip_shapes(int(clips.shape[0]) if clips.ndim == 5 else 1)[0]
        if clips.shape != want or not clips.shape[0]:
            raise ATFRError(f"clip shape {tuple(clips.shape)} does not match the export {tuple(want)}")
        x = np.ascontiguousarray(clips, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ATFRError("the clip contains NaN or Inf values")
        return self.results(self.runner.run({"clip0": x}), int(x.shape[2]))

    def results(self, out: dict[str, np.ndarray], frames: int) -> list["AdaFuseClipResult"]:
        """The clip graph's outputs for N clips (``logits``, ``policy{i}``) -> per clip its result
        with the fields ``atfr infer --json`` adds (runtime/adafuse_gflops.py ``clip_report``)."""
        logits = np.asarray(out["logits"], np.float32)
        if not np.isfinite(logits).all():
            raise ATFRError("the model produced NaN/Inf logits for this clip")
        res = []
        for n, lg in enumerate(logits):
            policy = [np.asarray(out[f"policy{i}"][n]) for i in range(len(self.blocks))]
            report = clip_report(policy, self.base_per_frame, self.convs, frames)
            report["policy_blocks"] = self.blocks
            res.append(AdaFuseClipResult(lg, softmax(lg), (), report=report))
        return res


@dataclass
class AdaFuseClipResult(ClipResult):
    """A clip's result with its AdaFuse fields (``clip_report``: policy, fractions, GFLOPs)."""

    report: dict[str, Any] = field(default_factory=dict)


def is_adafuse_manifest(m: Manifest) -> bool:
    return m.raw.get("family") == "adafuse"


class AdaFuseOnlineRunner:
    """``online.onnx`` frame by frame: each frame runs once, the state carries to the next one.

    ``step`` takes one normalised frame [N,3,S,S] and returns the logits [N,K] and policy (per gated
    block, [N,C]) of the graph's output frame; ``reset`` zeroes the state (a new clip or stream).
    AdaFuse-TSM's graphs are ``delay`` frames behind (models/adafuse_online_tsm.py): ``advance``
    also takes whether a frame exists (False: a flush step after the stream's last frame) and says
    whether the output frame exists. ``run_clip`` feeds a clip's frames (and ``delay`` flush steps)
    from a zero state: the prediction is the mean of the frame logits, as the clip graph."""

    GRAPHS = {"online": "online_state", "online_gathered": "online_gathered_state"}
    backend = "onnxruntime"  # set by load

    def __init__(self, manifest: Manifest, runner: Any, graph: str = "online"):
        self.manifest = manifest
        self.runner = runner
        self.graph = graph
        ada = manifest.raw["adafuse"]
        self.blocks = list(ada["policy_blocks"])
        self.delay = int(ada.get("online_delay", 0))
        self.state_spec = [(s["name"], tuple(int(v) for v in s["shape"]), s.get("dtype", "float32"))
                           for s in ada[self.GRAPHS[graph]]]
        self.state: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, outdir: str | Path, providers: str | None = None, threads: int | None = None,
             graph: str = "online", backend: str = "onnxruntime") -> "AdaFuseOnlineRunner":
        """graph: 'online' (dense masks, any batch) or 'online_gathered' (batch 1, computes only the
        channels the policy needs). backend: onnxruntime, tensorrt (``<graph>.engine``) or auto."""
        if graph not in cls.GRAPHS:
            raise ATFRError(f"unknown online graph {graph!r} ({', '.join(cls.GRAPHS)})")
        m = load_manifest(outdir, check=True)
        if graph not in m.graphs:
            raise ATFRError(f"{outdir}: this AdaFuse export has no {graph} graph (exported by an older "
                            "atfr-deploy: export it again)")
        runner, name = graph_runner(m, graph, backend, providers, threads)
        r = cls(m, runner, graph)
        r.backend = name
        return r

    def reset(self, batch: int = 1) -> None:
        """Zeros; the gathered graph's policy state starts 'all kept' (models/adafuse_gathered.py)."""
        if self.graph == "online_gathered" and batch != 1:
            raise ATFRError("the gathered online graph runs one stream (batch 1)")
        self.state = {n: (np.full((batch, *s), 2, np.int32) if d == "int32" else np.zeros((batch, *s), np.float32))
                      for n, s, d in self.state_spec}

    def advance(self, frame: np.ndarray, exists: bool = True) -> tuple[np.ndarray, list[np.ndarray], bool]:
        """One step -> (logits, policy, whether that output frame exists)."""
        if not self.state or next(iter(self.state.values())).shape[0] != frame.shape[0]:
            self.reset(frame.shape[0])
        feeds = {"frame": np.ascontiguousarray(frame, dtype=np.float32), **self.state}
        if self.delay:
            feeds["valid"] = np.full((frame.shape[0],), 1.0 if exists else 0.0, np.float32)
        out = self.runner.run(feeds)
        self.state = {n: out[f"{n}_next"] for n, _, _ in self.state_spec}
        ok = bool(out["frame_valid"].min() > 0.5) if self.delay else exists
        return out["logits"], [out[f"policy{i}"] for i in range(len(self.blocks))], ok

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.advance(frame)[:2]

    def run_clip(self, clip: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """clip [N,3,T,S,S] -> (frame logits [N,T,K], policy per block [N,T,C])."""
        self.reset(clip.shape[0])
        t = clip.shape[2]
        steps = [self.advance(clip[:, :, min(k, t - 1)], k < t) for k in range(t + self.delay)]
        steps = [s for s in steps if s[2]]
        logits = np.stack([s[0] for s in steps], 1)
        return logits, [np.stack([s[1][i] for s in steps], 1) for i in range(len(self.blocks))]


# Commands that run an export through ATFR's split pipeline. For AdaFuse exports 'atfr infer',
# 'atfr predict' (clip graph), 'atfr verify' (export/adafuse_verify.py), 'atfr run' (online graph,
# runtime/adafuse_stream.py), 'atfr bench' (atfr/bench/adafuse_run.py), 'atfr build'
# (runtime/tensorrt/adafuse_builder.py), 'atfr serve' and 'atfr triton-repo' (runtime/serving/adafuse_*.py)
# exist; this one refuses them with one line (INT8 calibration writes Q/DQ graphs for ATFR exports only).
NOT_FOR_ADAFUSE = ("calibrate",)


def refuse_adafuse_export(command: str, args: Any) -> None:
    if command not in NOT_FOR_ADAFUSE:
        return
    path = getattr(args, "outdir", None) or getattr(args, "export", None)
    if path and is_adafuse_export(path):
        raise ATFRError(f"{path} is an AdaFuse export: 'atfr {command}' does not run AdaFuse models yet "
                        "(use 'atfr infer EXPORT --input CLIP.npy')")
