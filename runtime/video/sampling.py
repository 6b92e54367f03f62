"""Which source frames make a clip: the official test-time temporal sampling. Torch-free.

PySlowFast (``datasets/decoder.py``), test mode, temporal view k of ``num_clips``:

* clip = NUM_FRAMES * SAMPLING_RATE * fps / target_fps source frames (fps resampling: a 60 fps
  video spans the same *time* as at 30 fps, so the model sees the same motion speed);
* start = max(n_frames - clip, 0) * k / num_clips  (the old spacing: divisor num_clips, not
  num_clips - 1, so the last view does not reach the end of the video);
* PyAV decodes the frames whose pts is >= start (so the segment begins at ceil(start)), and the
  clip takes ``linspace(0, clip - 1, NUM_FRAMES)`` of that segment, clamped to its last frame and
  truncated to integers.

Short videos (n_frames < clip): delta = 0, every view starts at frame 0 and indices past the
end are clamped to the last frame, i.e. the clip is **padded by repeating the last frame**,
exactly as the official loader's clamp does. A video with zero frames is refused.

``linspace`` follows torch's float32 algorithm (two-sided from start and end) so truncation
picks the same integer at every index as the official code.
"""

from __future__ import annotations

import math

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.spec import InputSpec


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """float32 ``torch.linspace`` (ATen CPU kernel: first half from start, second half from end).

    Bit-exact matters because the indices are truncated: a value 1 ulp under an integer picks
    the previous frame."""
    if steps <= 0:
        return np.zeros(0, np.float32)
    s, e = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([s], np.float32)
    step = np.float32((e - s) / np.float32(steps - 1))
    idx = np.arange(steps)
    half = steps // 2
    # ATen's vectorised kernel uses fused multiply-add: one float32 rounding of start + step*i.
    # The product is exact in float64, so computing there and rounding once reproduces it.
    lo = np.float64(s) + np.float64(step) * idx[:half]
    hi = np.float64(e) - np.float64(step) * (steps - idx[half:] - 1)
    return np.concatenate([lo, hi]).astype(np.float32)


def clip_span(spec: InputSpec, fps: float) -> float:
    """Source frames one clip covers: NUM_FRAMES * SAMPLING_RATE * fps / target_fps."""
    if not (fps > 0 and math.isfinite(fps)):
        raise ATFRError(f"invalid video fps {fps!r}")
    return spec.num_frames * spec.sampling_rate * float(fps) / float(spec.target_fps)


def window_indices(span: float, num_frames: int, available: int) -> np.ndarray:
    """Indices into a segment of ``available`` frames: linspace(0, span-1, N) clamped, truncated."""
    if available <= 0:
        raise SourceError("the video has no frames")
    pos = torch_linspace(0.0, span - 1.0, num_frames)
    return np.clip(pos, 0, available - 1).astype(np.int64)


def view_start(n_frames: int, span: float, k: int, num_clips: int) -> float:
    """Official start of temporal view k: max(n - clip, 0) * k / num_clips (old PySlowFast)."""
    if not 0 <= k < num_clips:
        raise ATFRError(f"temporal view {k} out of range for {num_clips} view(s)")
    return max(n_frames - span, 0.0) * k / num_clips


def clip_indices(n_frames: int, spec: InputSpec, fps: float, k: int = 0, num_clips: int = 1) -> np.ndarray:
    """Frame indices (into the whole video) of temporal view k of ``num_clips``.

    Short videos are padded by repeating the last frame (the official clamp); zero frames raise.
    """
    if n_frames <= 0:
        raise SourceError("the video has no frames")
    span = clip_span(spec, fps)
    first = min(int(math.ceil(view_start(n_frames, span, k, num_clips))), n_frames - 1)
    return first + window_indices(span, spec.num_frames, n_frames - first)


def all_view_indices(n_frames: int, spec: InputSpec, fps: float, num_clips: int) -> list[np.ndarray]:
    return [clip_indices(n_frames, spec, fps, k, num_clips) for k in range(num_clips)]


def stream_window(spec: InputSpec, fps: float) -> int:
    """How many of the newest frames a streaming clip needs (ceil of the clip span, >= 1)."""
    return max(1, int(math.ceil(clip_span(spec, fps) - 1e-9)))


def stream_indices(spec: InputSpec, fps: float, available: int) -> np.ndarray:
    """Indices into the newest ``available`` (<= window) frames, oldest first.

    A full window gives the same spacing as a file view; a shorter one (stream ended before a
    whole clip arrived) is padded by repeating its last frame, as in ``clip_indices``.
    """
    return window_indices(clip_span(spec, fps), spec.num_frames, available)
