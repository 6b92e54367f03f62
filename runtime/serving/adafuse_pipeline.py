"""AdaFuse exports behind ``ClipService``: the Pipeline-like face the service needs, and the
AdaFuse response tensors. Torch-free.

The clip graph takes any batch N and gives each clip its own policy, so a request's (or a dynamic
batch's) clips run in one session call; each clip's policy fractions and GFLOPs come from
``clip_report`` (runtime/adafuse_gflops.py), the function ``atfr infer --json`` prints.

``bprime`` is not an AdaFuse output: an AdaFuse model has no SGS layer and no B'. Its models
declare no ``bprime`` output rather than an always-empty one, so a client that asks for it gets
Triton's one-line "unexpected inference output" instead of a tensor that means nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atfr.runtime.adafuse_clip import AdaFuseClipResult, AdaFuseClipRunner
from atfr.runtime.manifest import Manifest
from atfr.runtime.pipeline import check_clip_inputs

# name, dtype, shape without the batch axis: skip/reuse/keep (the official action order), and
# GFLOPs per clip in the official convention (its last-frame off-by-one) and by Eq. 5
ADAFUSE_OUTPUTS: list[tuple[str, str, list[int]]] = [("policy_fractions", "float32", [3]),
                                                     ("gflops", "float32", [2])]


class AdaFusePipeline:
    """What ``ClipService`` asks of a pipeline (``manifest``, ``backend``, ``check_inputs``,
    ``infer``) over an AdaFuse clip graph."""

    def __init__(self, runner: AdaFuseClipRunner, backend: str = "onnxruntime"):
        self.runner = runner
        self.manifest: Manifest = runner.manifest
        self.backend = backend

    @classmethod
    def load(cls, export: str | Path, backend: str = "onnxruntime", threads: int | None = None) -> "AdaFusePipeline":
        return cls(AdaFuseClipRunner.load(export, backend, threads=threads))

    def check_inputs(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        return check_clip_inputs(self.manifest, clips)

    def infer(self, clips: list[np.ndarray]) -> list[AdaFuseClipResult]:
        return self.runner.infer_batch(self.check_inputs(clips)[0])


def adafuse_outputs(results: Sequence[Any]) -> dict[str, np.ndarray]:
    """``policy_fractions`` [N,3] and ``gflops`` [N,2] (official, Eq. 5) from the clips' reports."""
    reports = [r.report for r in results]
    fractions = [[f["skip"], f["reuse"], f["keep"]] for f in (rep["policy_fractions"] for rep in reports)]
    gflops = [[g["official"], g["eq5"]] for g in (rep["gflops"] for rep in reports)]
    return {"policy_fractions": np.asarray(fractions, np.float32).reshape(len(results), 3),
            "gflops": np.asarray(gflops, np.float32).reshape(len(results), 2)}
