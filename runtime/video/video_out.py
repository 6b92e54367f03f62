"""Writing a video atomically, complete or absent (``atfr run --save``). Torch-free.

OpenCV's ``VideoWriter`` does not raise when the disk fills: it prints ``Failed to write frame``
and goes on (OpenCV >= 5 returns False from ``write``; 4.x returns None). So the writer here:

* stops before the disk is full: each frame first checks that the free space left on the disk is
  above a reserve (room for the frames the encoder still holds and the container's index), so
  the video can still be finalized with every frame written so far;
* stops at the first frame OpenCV reports as not written (``write`` returning False);
* checks, when it closes, that the container it finalized opens, decodes and reports the frames
  written; a video that does not is removed instead of put in place (``VideoWriteError``).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from atfr.errors import ATFRError

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
VIDEO_EXTS = tuple(sorted(_FOURCC))  # what AtomicVideoWriter can write
_MB = 1 << 20


class VideoWriteError(ATFRError):
    """The video could not be written (exit 2); ``AtomicVideoWriter.outcome`` says what was kept."""


def free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged process can still write on ``folder``'s file system; None when the
    file system does not say (then only OpenCV's report and the final check catch a full disk)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class AtomicVideoWriter:
    """cv2.VideoWriter into a temp file beside the target, renamed over it on ``close()``.

    The temp name keeps the target's extension because OpenCV picks the container from it.
    ``abort()`` (or an exception inside ``with``) removes the temp file and leaves any previous
    target untouched. The writer (and its temp file) opens lazily on the first frame (its size is
    not known before). A write that fails raises ``VideoWriteError``; ``close()`` then finalizes
    what was written, and ``outcome`` says whether it was kept.
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
        self.kept: Path | None = None

    def reserve(self, frame_bytes: int) -> int:
        """Free space kept to finalize the video: two raw frames (more than the encoder holds back)
        and 16 bytes a frame of container index, plus 1 MiB for the file system's own blocks."""
        return _MB + 2 * frame_bytes + 16 * self.frames

    def write(self, frame_bgr: np.ndarray) -> None:
        import cv2

        h, w = frame_bgr.shape[:2]
        if self._closed:
            raise ATFRError(f"{self.path}: the video writer is closed")
        if self._writer is None:
            self._open(w, h)
        elif (w, h) != self._size:
            frame_bgr = cv2.resize(frame_bgr, self._size)  # source changed resolution after a reconnect
        need = self.reserve(frame_bgr.nbytes)
        if (free := free_bytes(self.path.parent)) is not None and free < need:
            raise VideoWriteError(f"{self.path}: cannot write video (disk full: {free / _MB:.0f} MB left, "
                                  f"{need / _MB:.0f} MB kept to finalize it)")
        if self._writer.write(frame_bgr) is False:  # OpenCV >= 5 reports it; 4.x returns None
            raise VideoWriteError(f"{self.path}: cannot write video (frame {self.frames + 1} was not written: "
                                  "disk full or I/O error)")
        self.frames += 1

    def _open(self, w: int, h: int) -> None:
        import cv2

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

    def close(self) -> Path | None:
        """Finish and rename; returns the path, or None when no frame was written (nothing kept).
        ``VideoWriteError`` (the temp file removed) when the finalized container does not hold the
        frames written (the disk filled up under it).

        Idempotent: a second call (e.g. the ``with`` exit after an explicit close) does nothing."""
        if self._closed:
            return self.kept
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0:
            self.abort()
            return None
        if (why := self._unreadable()) is not None:
            self.abort()
            raise VideoWriteError(f"{self.path}: cannot finalize the video ({why}: disk full or I/O error); "
                                  "not kept")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)
        self.kept = self.path
        return self.path

    def _unreadable(self) -> str | None:
        """None when the finalized temp file opens, decodes its first frame and its container
        lists the frames written (within a container's usual slack); else what is wrong. Also None
        without OpenCV's FFmpeg reader (e.g. a GStreamer-only Jetson build): nothing to check with,
        and a video is never removed for want of a reader."""
        import cv2

        from atfr.runtime.video.capture import falls_short
        from atfr.runtime.video.sources import _quiet_opencv

        registry = getattr(cv2, "videoio_registry", None)
        if registry is not None and not registry.hasBackend(cv2.CAP_FFMPEG):
            return None
        with _quiet_opencv():
            cap = cv2.VideoCapture(str(self.tmp), cv2.CAP_FFMPEG)
            try:
                if not cap.isOpened() or not cap.read()[0]:
                    return "it does not open"
                count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
            finally:
                cap.release()
        n = int(count) if math.isfinite(count) and count > 0 else 0
        if n > 0 and not falls_short(n, self.frames):
            return None
        return f"its container lists {n} of the {self.frames} frames written"

    @property
    def outcome(self) -> str:
        """After ``close()``: what became of the video, for the line that reports a failure."""
        if self.kept is not None:
            return f"the video is kept with the {self.frames} frame(s) written before"
        return "no video is kept" if self.frames == 0 else "not kept (the video could not be finalized)"

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
