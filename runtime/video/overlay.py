"""Annotating frames (top-k, B' per SGS layer, model latency and clips/s, display fps) and writing
videos atomically. Torch-free."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from atfr.display import format_percent
from atfr.errors import ATFRError

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
VIDEO_EXTS = tuple(sorted(_FOURCC))  # what AtomicVideoWriter can write


def overlay_lines(topk: Sequence[tuple[str, float]], bprime: Sequence[int], latency_ms: float | None,
                  display_fps: float | None, bins: Sequence[int] = (),
                  clips_per_s: float | None = None) -> list[str]:
    """The text drawn on each frame: one line per top-k class, B', then the model's figures and
    the display rate on separate, labelled lines.

    latency_ms: one clip's pre-processing + inference; clips_per_s: clips the model finished per
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
        model.append(f"{latency_ms:.0f} ms/clip")
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


class AtomicVideoWriter:
    """cv2.VideoWriter into a temp file beside the target, renamed over it on ``close()``.

    The temp name keeps the target's extension because OpenCV picks the container from it.
    ``abort()`` (or an exception inside ``with``) removes the temp file and leaves any previous
    target untouched. The writer (and its temp file) opens lazily on the first frame (its size is
    not known before).
    """

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in _FOURCC:
            raise ATFRError(f"{self.path}: unsupported video extension {ext or '(none)'} "
                            f"(use one of {', '.join(sorted(_FOURCC))})")
        self.fourcc = _FOURCC[ext]
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.tmp: Path | None = None  # created with the first frame: a run that fails earlier leaves nothing
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._closed = False
        self.frames = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        import cv2

        h, w = frame_bgr.shape[:2]
        if self._closed:
            raise ATFRError(f"{self.path}: the video writer is closed")
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".tmp{self.path.suffix.lower()}",
                                       dir=self.path.parent)
            os.close(fd)
            self.tmp = Path(tmp)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
            if not self._writer.isOpened():
                self.abort()
                raise ATFRError(f"{self.path}: cannot open a {self.fourcc} video writer")
            self._size = (w, h)
        elif (w, h) != self._size:
            frame_bgr = cv2.resize(frame_bgr, self._size)  # source changed resolution after a reconnect
        self._writer.write(frame_bgr)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish and rename; returns the path, or None when no frame was written (nothing kept).

        Idempotent: a second call (e.g. the ``with`` exit after an explicit close) does nothing."""
        if self._closed:
            return self.path if self.frames else None
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0:
            self.abort()
            return None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.tmp is not None and self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "AtomicVideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
