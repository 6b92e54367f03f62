"""The official test-time transform, implemented once for run, predict and calibration. Torch-free.

uint8 RGB frames [T,H,W,3] -> float32 (x/255 - mean)/std -> short-side resize (bilinear,
align_corners=False, no antialias: exactly ``torch.nn.functional.interpolate`` as PySlowFast
calls it) -> uniform crop (spatial index 0/1/2) -> [3,T,S,S]; SlowFast packing on top.

Why our own bilinear: cv2.resize INTER_LINEAR differs from torch when downscaling (OpenCV
uses an area-like path for some ratios and fixed-point weights for uint8), and the models were
trained/evaluated on torch's output. The interpolation is separable and linear, so only the
source rows/columns that feed the *cropped* output are gathered and normalised: the result is
the official value for every kept pixel (same op order: normalise, then h-lerp of w-lerps) at a
fraction of the cost of resizing the whole frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from atfr.errors import ATFRError
from atfr.spec import InputSpec


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(new_h, new_w) as PySlowFast ``random_short_side_scale_jitter`` (floor of the long side)."""
    if (width <= height and width == short_side) or (height <= width and height == short_side):
        return height, width
    if width < height:
        return int(math.floor(float(height) / width * short_side)), short_side
    return short_side, int(math.floor(float(width) / height * short_side))


def crop_offsets(height: int, width: int, size: int, spatial_idx: int) -> tuple[int, int]:
    """(y, x) of PySlowFast ``uniform_crop``: 0/1/2 = left/centre/right (W >= H) or top/centre/bottom."""
    if spatial_idx not in (0, 1, 2):
        raise ATFRError(f"spatial crop index must be 0, 1 or 2, got {spatial_idx}")
    if height < size or width < size:
        raise ATFRError(f"cannot crop {size}x{size} from a {height}x{width} frame")
    y = int(math.ceil((height - size) / 2))
    x = int(math.ceil((width - size) / 2))
    if height > width:
        if spatial_idx == 0:
            y = 0
        elif spatial_idx == 2:
            y = height - size
    else:
        if spatial_idx == 0:
            x = 0
        elif spatial_idx == 2:
            x = width - size
    return y, x


def linear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weights w0, w1 per output index (torch, align_corners=False).

    Mirrors ATen's upsample_bilinear2d: scale = in/out in float32, src = fma(scale, dst+0.5, -0.5)
    clamped at 0, i0 = floor(src), i1 = i0 + (i0 < in-1), w1 = src - i0, w0 = 1 - w1.
    """
    if in_size == out_size:
        idx = np.arange(out_size, dtype=np.int64)
        return idx, idx, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    # ATen's CPU kernel compiles scale*(dst+0.5)-0.5 to a fused multiply-add (one float32
    # rounding); the product is exact in float64, so this reproduces its weights bit for bit.
    dst = np.arange(out_size, dtype=np.float64)
    src = np.maximum((np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1).astype(np.int64)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1) - w1).astype(np.float32)
    return i0, i1, w0, w1


@dataclass(frozen=True)
class _Plan:
    """Everything that depends only on (H, W, spatial index): cached by ``Preprocessor``."""

    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # i0, i1, w0, w1 over the crop rows
    cols: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Preprocessor:
    """The official test transform for one ``InputSpec``; caches the resize plan per frame size.

    Not thread-safe across *mutation* of the cache only in the benign sense: two threads may
    compute the same plan twice; the result is identical.
    """

    def __init__(self, spec: InputSpec):
        if spec.short_side < spec.crop_size:
            raise ATFRError(f"short side {spec.short_side} is smaller than the crop size {spec.crop_size}")
        if spec.channel_order not in ("RGB", "BGR"):
            raise ATFRError(f"unknown channel order {spec.channel_order!r} (RGB, BGR)")
        self.spec = spec
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)
        self._plans: dict[tuple[int, int, int], _Plan] = {}

    def _plan(self, h: int, w: int, spatial_idx: int) -> _Plan:
        key = (h, w, spatial_idx)
        plan = self._plans.get(key)
        if plan is None:
            s = self.spec.crop_size
            nh, nw = short_side_size(h, w, self.spec.short_side)
            y, x = crop_offsets(nh, nw, s, spatial_idx)
            ri = linear_weights(h, nh)
            ci = linear_weights(w, nw)
            plan = _Plan(tuple(a[y:y + s] for a in ri), tuple(a[x:x + s] for a in ci))  # type: ignore[arg-type]
            self._plans[key] = plan
        return plan

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        # Same op order as PySlowFast tensor_normalize: float, /255, -mean, /std (float32).
        return (x.astype(np.float32) / np.float32(255.0) - self._mean) / self._std

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray], spatial_idx: int = 1) -> np.ndarray:
        """uint8 RGB [T,H,W,3] (or a sequence of T [H,W,3] frames) -> float32 [3,T,S,S], one spatial view.

        A sequence avoids stacking T full-resolution frames: only the rows the crop needs are copied.
        """
        seq = not isinstance(frames, np.ndarray)
        first = np.asarray(frames[0]) if len(frames) else None
        shape = (len(frames),) + tuple(first.shape) if seq and first is not None else np.shape(frames)
        if len(shape) != 4 or shape[-1] != 3:
            raise ATFRError(f"expected frames [T,H,W,3], got shape {tuple(shape)}")
        if shape[0] == 0:
            raise ATFRError("no frames to preprocess")
        _, h, w, _ = shape
        plan = self._plan(h, w, spatial_idx)
        r0, r1, rw0, rw1 = plan.rows
        c0, c1, cw0, cw1 = plan.cols
        # [T,S,W,3] uint8: gather the needed rows before converting to keep it cheap
        if seq:
            if any(np.shape(f) != shape[1:] for f in frames):
                raise ATFRError("all frames of a clip must have the same size")
            top = np.stack([np.asarray(f)[r0] for f in frames], 0)
            bot = np.stack([np.asarray(f)[r1] for f in frames], 0)
        else:
            top = frames[:, r0]
            bot = frames[:, r1]
        if self.spec.channel_order == "BGR":
            top, bot = top[..., ::-1], bot[..., ::-1]
        a = self._normalise(top[:, :, c0])
        b = self._normalise(top[:, :, c1])
        c = self._normalise(bot[:, :, c0])
        d = self._normalise(bot[:, :, c1])
        wx0 = cw0[None, None, :, None]
        wx1 = cw1[None, None, :, None]
        wy0 = rw0[None, :, None, None]
        wy1 = rw1[None, :, None, None]
        # ATen's order: h0l * (w0l*a + w1l*b) + h1l * (w0l*c + w1l*d)
        out = wy0 * (wx0 * a + wx1 * b) + wy1 * (wx0 * c + wx1 * d)
        return np.ascontiguousarray(out.transpose(3, 0, 1, 2), dtype=np.float32)

    def pack(self, clip: np.ndarray) -> list[np.ndarray]:
        """[3,T,S,S] -> per-pathway inputs (no batch axis): [clip] or [slow, fast] for SlowFast."""
        return pack_pathways(clip, self.spec.slowfast_alpha)

    def inputs(self, frames: np.ndarray | Sequence[np.ndarray], spatial_indices: tuple[int, ...] = (1,)) -> list[np.ndarray]:
        """Frames of one temporal view -> per-pathway batches [V,3,T_p,S,S], one row per spatial view."""
        views = [self.pack(self(frames, s)) for s in spatial_indices]
        return [np.stack([v[p] for v in views], 0) for p in range(len(views[0]))]


def slow_indices(num_frames: int, alpha: int) -> np.ndarray:
    """SlowFast slow pathway: fast frames at linspace(0, T-1, T // alpha), truncated (PySlowFast)."""
    n = num_frames // alpha
    from .sampling import torch_linspace

    return torch_linspace(0, num_frames - 1, n).astype(np.int64)


def pack_pathways(clip: np.ndarray, slowfast_alpha: int = 0) -> list[np.ndarray]:
    if not slowfast_alpha:
        return [clip]
    idx = slow_indices(clip.shape[1], slowfast_alpha)
    return [np.ascontiguousarray(clip[:, idx]), clip]


def preprocess(frames: np.ndarray, spec: InputSpec, spatial_idx: int = 1) -> np.ndarray:
    """One-shot convenience: uint8 RGB [T,H,W,3] -> [3,T,S,S]. Use ``Preprocessor`` in loops."""
    return Preprocessor(spec)(frames, spatial_idx)


def preprocess_clip(frames: np.ndarray, spec: InputSpec, spatial_idx: int = 1) -> np.ndarray:
    """Alias of ``preprocess`` (the name runtime/clips.py imports): [T,H,W,3] uint8 -> [3,T,S,S]."""
    return preprocess(frames, spec, spatial_idx)
