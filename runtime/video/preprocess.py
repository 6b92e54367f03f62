"""The official test-time transform, implemented once for run, predict and calibration. Torch-free.

uint8 RGB frames [T,H,W,3] -> float32 (x/255 - mean)/std -> short-side resize (bilinear,
align_corners=False, no antialias: exactly ``torch.nn.functional.interpolate`` as PySlowFast
calls it) -> uniform crop (spatial index 0/1/2) -> [3,T,S,S]; SlowFast packing on top.

Why not ``cv2.resize`` on the frame: OpenCV derives the source coordinate from a float64 scale,
torch from a float32 one, so for ratios that are not exact in fp32 (320 -> 213) their weights
differ and outputs move by up to 4e-4 (measured on noise frames, 240p..720p); uint8 resizes use fixed-point
weights. So the weights are ATen's own (``linear_weights``, bit for bit), and only the 2x2 source
pixels that feed the *cropped* output are read: OpenCV does the gather, the weighting and the
2x2 sums (see ``Preprocessor.__call__``), with no full-frame float conversion. About 5-6x faster
than the numpy gather it replaces (``benchmarks/runtime_speed.py`` prints the time per clip).
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
    """Everything that depends only on (H, W, spatial index): cached by ``Preprocessor``.

    The 2x2 source pixels of output pixel (y, x) sit at (2y+i, 2x+j) of the gathered image:
    ``map_y``/``map_x`` [2S,2S] hold their source row/column, ``weights`` [2S,2S,3] the bilinear
    weight wy_i * wx_j times 4 / (255 std_c) (the 4 undoes the block *mean* of the reduction).
    """

    map_x: np.ndarray
    map_y: np.ndarray
    weights: np.ndarray
    bias: np.ndarray  # [3,1,1]: -mean_c / std_c, in output channel order


class GatheredFrame(np.ndarray):
    """What ``Preprocessor.gather`` keeps of a frame: [2S,2S,3] uint8, and ``source`` = (H, W,
    spatial index) of the frame it came from (the plan that finishes it)."""

    source: tuple[int, int, int] = (0, 0, 0)

    def __array_finalize__(self, obj: object) -> None:
        self.source = getattr(obj, "source", (0, 0, 0))


class Preprocessor:
    """The official test transform for one ``InputSpec``; caches the resize plan per frame size.

    Thread-safe: calls share only the plan cache (two threads may build the same plan twice;
    the result is identical) and allocate their own buffers.
    """

    def __init__(self, spec: InputSpec):
        if spec.short_side < spec.crop_size:
            raise ATFRError(f"short side {spec.short_side} is smaller than the crop size {spec.crop_size}")
        if spec.channel_order not in ("RGB", "BGR"):
            raise ATFRError(f"unknown channel order {spec.channel_order!r} (RGB, BGR)")
        self.spec = spec
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)
        # out channel c reads input (RGB) channel _src[c]
        self._src = (2, 1, 0) if spec.channel_order == "BGR" else (0, 1, 2)
        self._plans: dict[tuple[int, int, int], _Plan] = {}

    def _plan(self, h: int, w: int, spatial_idx: int) -> _Plan:
        key = (h, w, spatial_idx)
        plan = self._plans.get(key)
        if plan is None:
            s = self.spec.crop_size
            nh, nw = short_side_size(h, w, self.spec.short_side)
            y, x = crop_offsets(nh, nw, s, spatial_idx)
            r0, r1, wy0, wy1 = (a[y:y + s] for a in linear_weights(h, nh))
            c0, c1, wx0, wx1 = (a[x:x + s] for a in linear_weights(w, nw))
            rows = np.stack([r0, r1], 1).ravel()  # 2y+i -> source row r_i[y]
            cols = np.stack([c0, c1], 1).ravel()
            wy = np.stack([wy0, wy1], 1).ravel()
            wx = np.stack([wx0, wx1], 1).ravel()
            scale = np.empty(3, np.float32)
            for c, k in enumerate(self._src):  # input channel k feeds output channel c
                scale[k] = np.float32(4.0) / (np.float32(255.0) * self._std[c])
            wts = (wy[:, None] * wx[None, :]).astype(np.float32)[:, :, None] * scale
            plan = _Plan(map_x=np.ascontiguousarray(np.broadcast_to(cols.astype(np.float32), (2 * s, 2 * s))),
                         map_y=np.ascontiguousarray(np.broadcast_to(rows.astype(np.float32)[:, None], (2 * s, 2 * s))),
                         weights=np.ascontiguousarray(wts, dtype=np.float32),
                         bias=(-self._mean / self._std).astype(np.float32)[:, None, None])
            self._plans[key] = plan
        return plan

    def gather(self, frame: np.ndarray, spatial_idx: int = 1) -> np.ndarray:
        """The 2x2 source pixels of every output pixel of one uint8 RGB frame [H,W,3], as a
        ``GatheredFrame`` [2S,2S,3] uint8: all that this transform reads of the frame. A stream
        keeps these instead of full-resolution frames (a 4K frame is 25 MB, its gather 0.3 MB at
        S = 160); ``__call__`` finishes them exactly as it would the frames. Other dtypes are
        returned as they are."""
        import cv2

        f = np.asarray(frame)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
            return f
        h, w, _ = f.shape
        plan = self._plan(h, w, spatial_idx)
        s = self.spec.crop_size
        g = np.empty((2 * s, 2 * s, 3), np.uint8).view(GatheredFrame)
        cv2.remap(np.ascontiguousarray(f), plan.map_x, plan.map_y, cv2.INTER_NEAREST, dst=g)
        g.source = (h, w, spatial_idx)
        return g

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray], spatial_idx: int = 1) -> np.ndarray:
        """uint8 RGB [T,H,W,3] (or a sequence of T [H,W,3] frames, or of their ``gather``) ->
        float32 [3,T,S,S], one spatial view.

        Per frame, in OpenCV (SIMD, no full-frame float copy): gather the 2x2 source pixels of
        every output pixel (``remap``, nearest: an exact copy), multiply by their bilinear weights
        with the normalisation's scale folded in (``multiply`` to float32), sum each 2x2 block
        (``resize`` INTER_AREA by exactly 1/2: the block mean, hence the weights' factor 4), then
        add -mean/std while writing channel-first. Torch computes the same four products of the
        same fp32 weights; only the rounding order differs (measured <= 1e-6 on values up to
        |2.5|, tests: 1e-5 against torch).
        """
        import cv2

        n = len(frames)
        if n == 0:
            raise ATFRError("no frames to preprocess")
        source = getattr(frames[0], "source", None)  # a GatheredFrame: (H, W, spatial index)
        shape = (source[0], source[1], 3) if source else tuple(np.shape(frames[0]))
        if isinstance(frames, np.ndarray) and frames.ndim != 4:
            raise ATFRError(f"expected frames [T,H,W,3], got shape {tuple(frames.shape)}")
        if len(shape) != 3 or shape[-1] != 3:
            raise ATFRError(f"expected frames [T,H,W,3], got shape {(n,) + shape}")
        h, w, _ = shape
        plan = self._plan(h, w, spatial_idx)
        s = self.spec.crop_size
        out = np.empty((3, n, s, s), np.float32)
        gathered = np.empty((2 * s, 2 * s, 3), np.uint8)
        weighted = np.empty((2 * s, 2 * s, 3), np.float32)
        summed = np.empty((s, s, 3), np.float32)
        bgr = self._src[0] == 2
        for t in range(n):
            f = np.asarray(frames[t]) if not isinstance(frames[t], GatheredFrame) else frames[t]
            g = self._gathered(f, shape, spatial_idx, plan, gathered)
            cv2.multiply(g, plan.weights, dst=weighted, dtype=cv2.CV_32F)
            cv2.resize(weighted, (s, s), dst=summed, interpolation=cv2.INTER_AREA)
            chw = summed.transpose(2, 0, 1)
            np.add(chw[::-1] if bgr else chw, plan.bias, out=out[:, t])
        return out

    def _gathered(self, f: np.ndarray, shape: tuple, spatial_idx: int, plan: _Plan, buf: np.ndarray) -> np.ndarray:
        """One frame's 2x2 source pixels (into ``buf`` for uint8 frames), or its gather as given."""
        import cv2

        s = self.spec.crop_size
        if isinstance(f, GatheredFrame):
            if f.source != (shape[0], shape[1], spatial_idx):
                raise ATFRError("all frames of a clip must have the same size (and gathered for this view)")
            return f
        if f.shape != shape:
            raise ATFRError("all frames of a clip must have the same size")
        if f.dtype != np.uint8:
            f = f.astype(np.float32)  # not what decoders give; kept exact for tests/embedders
            g = np.empty((2 * s, 2 * s, 3), np.float32)
        else:
            f = np.ascontiguousarray(f)
            g = buf
        cv2.remap(f, plan.map_x, plan.map_y, cv2.INTER_NEAREST, dst=g)
        return g

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
    from atfr.runtime.video.sampling import torch_linspace

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
    """Alias of ``preprocess`` (the name runtime/video/clips.py imports): [T,H,W,3] uint8 -> [3,T,S,S]."""
    return preprocess(frames, spec, spatial_idx)
