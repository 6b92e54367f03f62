"""The AdaFuse half of ``atfr demo``: the AdaFuse demo export's clip graph on the demo videos.

Torch-free (ONNX Runtime through runtime/adafuse_clip.py). Each video is cut into the same
clips as the ATFR half (consecutive windows of T frames, stride T); every clip gives its top-1,
its policy fractions (skip/reuse/keep over all gated blocks, frames and channels) and its Eq. 5
GFLOPs (runtime/adafuse_gflops.py, the official thop convention), which are compared with the
static TSN twin's GFLOPs in the same convention (the export manifest's ``static_official``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atfr.runtime.adafuse_clip import AdaFuseClipRunner
from atfr.runtime.video.clips import frames_to_inputs
from atfr.runtime.video.sources import open_reader


@dataclass
class ClipStats:
    label: str  # the true class (from the video's file name)
    pred: str
    skip: float
    reuse: float
    keep: float
    eq5: float  # GFLOPs per clip, Eq. 5


def read_frames(path: Path, fps: float) -> np.ndarray:
    """All frames of a (short, demo) video: uint8 [N,H,W,3] RGB."""
    reader = open_reader(str(path), fallback_fps=fps)
    frames = []
    try:
        while (f := reader.read()) is not None:
            frames.append(f)
    finally:
        reader.close()
    return np.stack(frames, 0) if frames else np.zeros((0, 1, 1, 3), np.uint8)


def video_clips(runner: AdaFuseClipRunner, path: Path, label: str) -> list[ClipStats]:
    """The clips of one demo video (windows of T frames, stride T) through the clip graph."""
    spec = runner.manifest.input
    t = spec.num_frames * spec.sampling_rate
    frames = read_frames(path, spec.target_fps)
    labels = runner.manifest.labels
    out = []
    for s in range(0, len(frames) - t + 1, t):
        clip = frames[s:s + t:spec.sampling_rate]
        result, extra = runner.infer(frames_to_inputs(clip, spec, str(path))[0])
        f = extra["policy_fractions"]
        top = int(np.argmax(result.logits))
        out.append(ClipStats(label, labels[top] if top < len(labels) else str(top), f["skip"], f["reuse"],
                             f["keep"], float(extra["gflops"]["eq5"])))
    return out


def class_row(name: str, clips: list[ClipStats], static: float) -> str:
    """One per-class line: top-1 hits, mean skip/reuse/keep fractions, mean Eq. 5 GFLOPs and the
    saving against the static TSN (mean of the clips' GFLOPs, then 1 - mean/static)."""
    n = len(clips)
    hits = sum(c.pred == c.label for c in clips)
    sk, re_, ke = (sum(getattr(c, k) for c in clips) / n for k in ("skip", "reuse", "keep"))
    g = sum(c.eq5 for c in clips) / n
    return (f"  {name:18s} skip {sk:.3f} reuse {re_:.3f} keep {ke:.3f}  {g:.4f} GFLOPs  "
            f"saved {100 * (1 - g / static):4.1f}%  top-1 {hits}/{n}")
