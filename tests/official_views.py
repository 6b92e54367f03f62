"""PySlowFast's multi-view test sampling, written from the official code as an independent reference
for ``atfr predict`` (tests/test_predict.py, tests/test_adafuse_predict.py): the temporal view's
frame indices (``decoder.get_start_end_idx`` + ``temporal_sampling``) and the spatial view's
transform (normalise, short-side resize, left/centre/right crop). ``spec``: an InputSpec or anything
with its fields (num_frames, sampling_rate, target_fps, short_side, crop_size, mean, std)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def view_indices(n: int, k: int, views: int, fps: float, spec) -> np.ndarray:
    """PySlowFast: start = max(n - clip, 0) * k / views, T frames linspace'd over the clip, clamped."""
    clip = spec.num_frames * spec.sampling_rate * fps / spec.target_fps
    first = math.ceil(max(n - clip, 0) * k / views)
    idx = torch.clamp(torch.linspace(0, clip - 1, spec.num_frames), 0, n - first - 1).long()
    return (first + idx).numpy()


def view_transform(frames: np.ndarray, s: int, spec) -> torch.Tensor:
    x = (torch.from_numpy(frames).float() / 255.0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    x = x.permute(3, 0, 1, 2)
    h, w = x.shape[2], x.shape[3]
    size, crop = spec.short_side, spec.crop_size
    if min(h, w) != size:
        nh, nw = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    h, w = x.shape[2], x.shape[3]
    y0, x0 = int(math.ceil((h - crop) / 2)), int(math.ceil((w - crop) / 2))
    if h > w:
        y0 = {0: 0, 1: y0, 2: h - crop}[s]
    else:
        x0 = {0: 0, 1: x0, 2: w - crop}[s]
    return x[:, :, y0:y0 + crop, x0:x0 + crop]
