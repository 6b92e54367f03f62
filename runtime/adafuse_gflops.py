"""AdaFuse GFLOPs of one clip from its policy, torch-free (the runtime and models/adafuse_flops.py).

Per frame (official ``compute_gflops_by_mask``): the base count minus, per gated block, the saved
fraction of its conv1 times conv1's flops and the skipped fraction times conv2's flops. conv1
must compute a channel at frame t when it is kept at t or reused at t+1. ``official=True`` keeps
the official off-by-one (the last frame uses frame T-2's mask); ``official=False`` is Eq. 5 (the
last frame's own mask: no frame after it reuses anything). Returned per clip: T x per frame.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SKIP, REUSE, KEEP = 0, 1, 2


def saved_fractions(policy: Any, official: bool) -> tuple[float, float]:
    """policy [T, C] actions of one block -> (conv1 fraction saved, conv2 fraction saved)."""
    p = np.asarray(policy)
    t = p.shape[0]
    not_keep = (p != KEEP).astype(np.float64)
    up = np.zeros_like(not_keep)
    if t > 1:
        up[:-1] = not_keep[:-1] * (p[1:] != REUSE)
    up[-1] = not_keep[t - 2 if (official and t > 1) else t - 1]
    return float(up.mean()), float((p == SKIP).mean())


def policy_gflops(policy: Sequence[Any], base_per_frame: float, convs: Sequence[Sequence[float]],
                  official: bool, frames: int | None = None) -> float:
    """GFLOPs of one clip under ``policy`` (per gated block, [T, C] actions)."""
    per_frame = float(base_per_frame)
    for p, (up_flops, down_flops) in zip(policy, convs):
        up, down = saved_fractions(p, official)
        per_frame -= up * up_flops / 1e9 + down * down_flops / 1e9
    t = np.asarray(policy[0]).shape[0] if len(policy) else int(frames or 1)
    return per_frame * t


def frame_gflops(policy: Sequence[Any], prev: Sequence[Any] | None, base_per_frame: float,
                 convs: Sequence[Sequence[float]]) -> float:
    """GFLOPs one frame needs in a stream (Eq. 5 counted causally, as the gathered online graph
    computes): per gated block, conv1 computes the channels kept now and those reused now that
    the previous frame did not keep (from its cached block input, models/adafuse_gathered.py);
    conv2 reads the channels not skipped. ``policy``: this frame's [C] per block; ``prev``: the
    previous frame's, None at the start (zero state: a reuse costs nothing). From the start, the
    frames of a clip sum to ``policy_gflops(clip, official=False)``: each conv1 channel is counted
    once, at t+1 instead of t when only the next frame reuses it."""
    g = float(base_per_frame)
    for i, (p, (up_flops, down_flops)) in enumerate(zip(policy, convs)):
        p = np.asarray(p)
        computed = p == KEEP
        if prev is not None:
            computed = computed | ((p == REUSE) & (np.asarray(prev[i]) != KEEP))
        g -= (1.0 - float(computed.mean())) * up_flops / 1e9 + float((p == SKIP).mean()) * down_flops / 1e9
    return g


def clip_report(policy: Sequence[Any], base_per_frame: float, convs: Sequence[Sequence[float]],
                frames: int) -> dict[str, Any]:
    """The JSON fields ``atfr infer`` adds for an AdaFuse clip (torch and ONNX Runtime alike)."""
    flat = np.concatenate([np.asarray(p).ravel() for p in policy]) if len(policy) else np.full(1, KEEP)
    return {
        "policy": [np.asarray(p).astype(np.int64).tolist() for p in policy],
        "policy_fractions": {"skip": float(np.mean(flat == SKIP)), "reuse": float(np.mean(flat == REUSE)),
                             "keep": float(np.mean(flat == KEEP))},
        "gflops": {"official": policy_gflops(policy, base_per_frame, convs, True, frames),
                   "eq5": policy_gflops(policy, base_per_frame, convs, False, frames),
                   "dense_official": float(base_per_frame) * frames},
    }
