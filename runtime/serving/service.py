"""Request handling for serving an export (``atfr serve``, the Python-backend models of ``atfr
triton-repo``). Torch-free; knows nothing about Triton, so it is testable without a server.

A request carries a batch of clips, either raw frames (uint8 ``[N,T,H,W,3]`` RGB, pre-processed
here exactly like ``atfr run``: the official short-side resize + centre crop, SlowFast packing)
or pre-processed clips (float32 ``[N,3,T_p,S,S]`` per pathway). ``Pipeline.infer`` then runs the
front on the whole batch and the back once per group of clips with equal B', so batching clips
from many requests together is exact: every clip keeps its own B'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atfr.errors import ATFRError

from atfr.runtime.adafuse_clip import is_adafuse_export, is_adafuse_manifest
from atfr.runtime.manifest import Manifest
from atfr.runtime.pipeline import ClipResult, Pipeline
from atfr.runtime.serving.adafuse_pipeline import ADAFUSE_OUTPUTS, AdaFusePipeline, adafuse_outputs
from atfr.runtime.video.preprocess import Preprocessor

OUTPUT_NAMES = ("probs", "logits", "bprime", "topk_index", "topk_label")  # ATFR exports (response_spec)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may carry; larger requests are refused with one line, not queued."""

    max_side: int = 4096  # frame height/width (a 4K frame fits)
    max_clips: int = 64  # clips per request
    # raw frames per request, N*T*H*W*3 bytes: two 16-frame 4K clips (2 x 398 MB) fit
    max_request_mib: int = 1024


def frames_input_name() -> str:
    return "frames"


def clip_input_names(m: Manifest) -> list[str]:
    return [f"clip{p}" for p in range(m.num_pathways)]


def response_spec(m: Manifest, topk: int) -> list[tuple[str, str, list[int]]]:
    """The response tensors (name, dtype, shape without the batch axis) of a served export, for
    ``atfr serve`` and ``atfr triton-repo`` alike. ATFR: ``bprime`` (one per SGS layer; empty for a
    static export). AdaFuse: no ``bprime``, ``policy_fractions`` and ``gflops`` instead."""
    k = max(1, min(int(topk), m.num_classes))
    head = [("probs", "float32", [m.num_classes]), ("logits", "float32", [m.num_classes])]
    tail = [("topk_index", "int32", [k]), ("topk_label", "bytes", [k])]
    if is_adafuse_manifest(m):
        return head + tail + ADAFUSE_OUTPUTS
    return head + [("bprime", "int32", [len(m.sgs) if m.sgs else -1])] + tail


def load_pipeline(export: str | Path, backend: str = "onnxruntime",
                  threads: int | None = None) -> Pipeline | AdaFusePipeline:
    """The pipeline ``ClipService`` serves: ATFR's ``Pipeline``, or for an AdaFuse export its clip
    graph (``AdaFusePipeline``, ONNX Runtime only)."""
    if is_adafuse_export(export):
        return AdaFusePipeline.load(export, backend, threads)
    return Pipeline.load(export, backend=backend, threads=threads)


def gflops_per_bprime(m: Manifest) -> dict[tuple[int, ...], tuple[float, float]]:
    """(total, static) GFLOPs per B' tuple from the manifest's table (empty when not counted)."""
    out: dict[tuple[int, ...], tuple[float, float]] = {}
    for row in (m.gflops or {}).get("vs_bprime", []) or []:
        try:
            out[tuple(int(b) for b in row["bprime"])] = (float(row["total"]), float(row["static"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


class ClipService:
    """Validates requests, pre-processes frames, runs the pipeline, shapes the responses."""

    def __init__(self, pipeline: Pipeline | AdaFusePipeline, topk: int = 5, limits: ServeLimits | None = None):
        """pipeline: a ``Pipeline`` or anything with its ``manifest``, ``check_inputs`` and ``infer``
        (``AdaFusePipeline``)."""
        self.pipeline = pipeline
        self.m = pipeline.manifest
        self.adafuse = is_adafuse_manifest(self.m)
        self.pre = Preprocessor(self.m.input)
        self.topk = max(1, min(int(topk), self.m.num_classes))
        self.limits = limits or ServeLimits()
        self._gflops = gflops_per_bprime(self.m)

    # -- requests -> model inputs ---------------------------------------------------------------
    def _check_batch(self, n: int, what: str) -> None:
        if n < 1:
            raise ATFRError(f"{what}: empty batch")
        if n > self.limits.max_clips:
            raise ATFRError(f"{what}: {n} clips in one request, the limit is {self.limits.max_clips}")

    def frames_to_clips(self, frames: Any) -> list[np.ndarray]:
        """uint8 ``[N,T,H,W,3]`` -> per pathway float32 ``[N,3,T_p,S,S]`` (the ``atfr run`` transform)."""
        x = np.asarray(frames)
        spec = self.m.input
        if x.dtype != np.uint8:
            raise ATFRError(f"frames: expected uint8 RGB, got {x.dtype}")
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ATFRError(f"frames: expected shape [N,T,H,W,3], got {list(x.shape)}")
        self._check_batch(x.shape[0], "frames")
        if x.shape[1] != spec.num_frames:
            raise ATFRError(f"frames: {x.shape[1]} frames per clip, the model takes {spec.num_frames}")
        h, w = int(x.shape[2]), int(x.shape[3])
        if max(h, w) > self.limits.max_side:
            raise ATFRError(f"frames: {h}x{w} exceeds the limit of {self.limits.max_side} pixels per side")
        if min(h, w) < 8:  # as check_frames: the short-side resize would invent the picture
            raise ATFRError(f"frames: frames of {h}x{w} are too small")
        mib = x.nbytes / 2**20  # checked from the shape, before anything is allocated for the request
        if mib > self.limits.max_request_mib:
            raise ATFRError(f"frames: {x.shape[0]} clip(s) of {x.shape[1]} frames of {h}x{w} are {mib:.1f} MiB, "
                            f"the limit is {self.limits.max_request_mib} MiB per request")
        per_clip = [self.pre.pack(self.pre(x[i], 1)) for i in range(x.shape[0])]
        return [np.stack([c[p] for c in per_clip], 0) for p in range(self.m.num_pathways)]

    def check_clips(self, clips: Sequence[Any]) -> list[np.ndarray]:
        """Pre-processed float32 clips, one array per pathway; NaN/shape checks are the pipeline's."""
        names = clip_input_names(self.m)
        if len(clips) != len(names):
            raise ATFRError(f"expected {len(names)} clip input(s) ({', '.join(names)}), got {len(clips)}")
        out = []
        for name, c in zip(names, clips):
            a = np.asarray(c)
            if a.dtype != np.float32:
                raise ATFRError(f"{name}: expected float32, got {a.dtype}")
            if a.ndim != 5:
                raise ATFRError(f"{name}: expected shape [N,3,T,S,S], got {list(a.shape)}")
            self._check_batch(a.shape[0], name)
            out.append(a)
        return self.pipeline.check_inputs(out)

    # -- inference ------------------------------------------------------------------------------
    def infer(self, clips: list[np.ndarray]) -> list[ClipResult]:
        return self.pipeline.infer(clips)

    def outputs(self, results: Sequence[ClipResult]) -> dict[str, np.ndarray]:
        """Batched response tensors (row i = clip i)."""
        k = self.topk
        idx = np.asarray([r.top(k) for r in results], np.int32).reshape(len(results), k)
        labels = np.asarray([[self.m.label(int(i)).encode() for i in row] for row in idx], dtype=object)
        out = {"probs": np.stack([r.probs for r in results]).astype(np.float32),
               "logits": np.stack([r.logits for r in results]).astype(np.float32)}
        if not self.adafuse:
            out["bprime"] = np.asarray([list(r.bprime) for r in results], np.int32).reshape(len(results), -1)
        out["topk_index"] = idx
        out["topk_label"] = labels.reshape(len(results), k)
        if self.adafuse:  # AdaFuse: skip/reuse/keep fractions and GFLOPs (official, Eq. 5) per clip
            out.update(adafuse_outputs(results))
        return out

    def gflops_saved(self, bprime: Sequence[int]) -> float:
        """GFLOPs this clip did not spend against the static (no-SGS) model; 0 without a table."""
        row = self._gflops.get(tuple(int(b) for b in bprime))
        return max(0.0, row[1] - row[0]) if row else 0.0
