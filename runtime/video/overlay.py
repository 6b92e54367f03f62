"""Annotating frames (top-k, B' per SGS layer, model latency and clips/s, display fps). Torch-free.
Writing the annotated video (``AtomicVideoWriter``) lives in ``runtime.video.video_out``."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from atfr.display import format_percent
from atfr.runtime.video.video_out import VIDEO_EXTS, AtomicVideoWriter, VideoWriteError  # noqa: F401 - their old home


def overlay_lines(topk: Sequence[tuple[str, float]], bprime: Sequence[int], latency_ms: float | None,
                  display_fps: float | None, bins: Sequence[int] = (),
                  clips_per_s: float | None = None, unit: str = "clip") -> list[str]:
    """The text drawn on each frame: one line per top-k class, B', then the model's figures and
    the display rate on separate, labelled lines.

    latency_ms: one clip's pre-processing + inference (``unit`` "frame": the frame's of a per-frame
    model); clips_per_s: clips the model finished per
    second (its throughput in this run); display_fps: frames drawn per second (the video, not the
    model).
    """
    lines = [f"{i + 1}. {label[:32]}  {format_percent(score)}" for i, (label, score) in enumerate(topk)]
    if bprime:
        # "B' 12/32": kept bins out of the layer's maximum, when the maximum is known.
        bp = " ".join(f"{b}/{bins[i]}" if i < len(bins) else f"{b}" for i, b in enumerate(bprime))
        lines.append(f"B' {bp}")
    model = []
    if latency_ms is not None:
        model.append(f"{latency_ms:.0f} ms/{unit}")
    if clips_per_s is not None:
        model.append(f"{clips_per_s:.1f} clips/s")
    if model:
        lines.append("model " + ", ".join(model))
    if display_fps is not None:
        lines.append(f"display {display_fps:.1f} fps")
    return lines


def draw_lines(frame_bgr: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Draw ``lines`` top-left on a dark box, in place; scaled to the frame height."""
    import cv2

    if not lines:
        return frame_bgr
    h = frame_bgr.shape[0]
    scale = max(0.35, min(1.0, h / 720.0))
    thick = 1 if scale < 0.7 else 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(t, font, scale, thick)[0] for t in lines]
    line_h = max(s[1] for s in sizes) + int(8 * scale) + 2
    box_w = max(s[0] for s in sizes) + 10
    box_h = line_h * len(lines) + 6
    roi = frame_bgr[0:min(box_h, h), 0:min(box_w, frame_bgr.shape[1])]
    # Darken instead of filling so the scene stays visible under the text.
    roi[...] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)
    for i, t in enumerate(lines):
        y = 3 + line_h * (i + 1) - int(6 * scale)
        cv2.putText(frame_bgr, t, (5, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return frame_bgr
