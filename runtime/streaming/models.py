"""What ``StreamRunner`` runs: a small "stream model" interface, so ATFR's clip pipeline and
AdaFuse's per-frame online graph share one run loop, its outputs and its endings. Torch-free.

A stream model has ``manifest`` and:

* ``window_size(fps)``: frames a result covers, shown as "buffering n/size" until the first one;
* ``new_window(size, stride, reduce, fps)``: the main loop's feed, with ``push(frame) -> Job | None``
  (the job to hand on now), ``final_job()`` (the job for a source that ended before the first
  result, padded), ``submitted`` and ``len()``;
* ``prepare(pre, job, fps)``: the pre-processing stage's work (sets ``job.inputs``);
* ``infer(job)``: the inference stage's work, a ``ClipResult`` to record, or None (a per-frame
  model between two results: nothing is emitted, the frame is only counted);
* ``unit``: what the latency of one result is per ("clip", "frame").

``ClipModel`` wraps ATFR's ``Pipeline`` (a clip window every ``stride`` frames, one inference per
clip); AdaFuse's is ``runtime.adafuse_stream.AdaFuseStream`` (one job per frame, through its
online graph once). A result may carry ``event`` (more jsonl fields) and ``overlay`` (more lines).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from atfr.runtime.pipeline import ClipResult
from atfr.runtime.streaming.stages import ClipWindow, Job


@dataclass
class StreamResult(ClipResult):
    """A result with the model family's own fields: ``event`` goes into the jsonl line, ``overlay``
    lines are drawn under the top-k (and printed by --print instead of B')."""

    event: dict[str, Any] = field(default_factory=dict)
    overlay: tuple[str, ...] = ()


def as_stream_model(model: Any) -> Any:
    """A stream model as given (it has ``new_window``), or an ATFR ``Pipeline`` wrapped."""
    return model if hasattr(model, "new_window") else ClipModel(model)


class ClipModel:
    """ATFR: the newest clip window every ``stride`` frames through the ``Pipeline``."""

    unit = "clip"

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline
        self.manifest = pipeline.manifest

    def window_size(self, fps: float) -> int:
        from atfr.runtime.video.sampling import stream_window

        return stream_window(self.manifest.input, fps)

    def new_window(self, size: int, stride: int, reduce: Callable | None, fps: float) -> ClipWindow:
        return ClipWindow(size, stride, reduce)

    def prepare(self, pre: Any, job: Job, fps: float) -> None:
        """Sampling indices, the official transform and pathway packing."""
        from atfr.runtime.video.sampling import stream_indices

        images = job.images or []
        idx = stream_indices(self.manifest.input, fps, len(images))
        clip = pre([images[i] for i in idx], 1)  # no full-resolution stack
        job.inputs = [x[None] for x in pre.pack(clip)]

    def infer(self, job: Job) -> ClipResult:
        return self.pipeline.infer(job.inputs)[0]


class FrameFeed:
    """A per-frame model's feed: every model frame is a job of one image (``reduce``d as the clip
    window's), so each frame goes through the model once. The model's frame rate is the clip's:
    one frame every ``step`` = SAMPLING_RATE * fps / TARGET_FPS source frames (every frame when
    that is <= 1). A frame of another size (a reconnected camera) starts a new ``epoch``: the
    model restarts its state and window, as the clip window restarts for ATFR."""

    def __init__(self, size: int, step: float, reduce: Callable[[np.ndarray], np.ndarray] | None = None):
        self.size = size
        self.step = max(1.0, float(step))
        self.reduce = reduce
        self.submitted = 0
        self.fed = 0  # model frames since the (re)start
        self.epoch = 0
        self._pos = 0  # source frames since the (re)start
        self._next = 0.0  # source position of the next model frame
        self._shape: tuple | None = None
        self._last: tuple | None = None  # (index, timestamp, image) of the newest model frame

    def __len__(self) -> int:
        return min(self.fed, self.size)

    def push(self, frame: Any) -> Job | None:
        if self._shape is not None and frame.image.shape != self._shape:
            self.epoch += 1
            self.fed, self._pos, self._next = 0, 0, 0.0
        self._shape = frame.image.shape
        pos, self._pos = self._pos, self._pos + 1
        if pos < self._next - 1e-9:
            return None  # between two of the model's frames (a source faster than its frame rate)
        self._next += self.step
        self._last = (frame.index, frame.timestamp, self.reduce(frame.image) if self.reduce else frame.image)
        self.fed += 1
        return self._job(False)

    def final_job(self) -> Job | None:
        """A source shorter than one window (the whole run): the last frame again, padded (the model
        repeats it up to the window, as the official loader's clamp repeats a short video's last
        frame). As for ATFR's clip window, not after a restart that follows a full window."""
        return self._job(True) if self._last is not None and self.submitted < self.size else None

    def _job(self, padded: bool) -> Job:
        index, timestamp, image = self._last  # type: ignore[misc]
        job = Job(self.submitted, index, timestamp, [image], padded, time.perf_counter(), epoch=self.epoch)
        self.submitted += 1
        return job
