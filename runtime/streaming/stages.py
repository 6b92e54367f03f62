"""The two worker stages of ``StreamRunner`` (pre-processing, inference), the slots between them and
the flags every thread of one run checks. Torch-free.

The main loop (``runtime.streaming.runner``) hands each clip's frames to the pre-processing stage through
a ``Slot`` of size 1; that stage prepares one clip ahead of the model and hands it to the
inference stage through a second slot. Any exception in a stage goes to ``RunControl.fail``: the
one failure path (every wait ends, ``StreamRunner.run`` raises it after the threads are joined).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Job:
    seq: int  # submission number
    frame_index: int
    timestamp: float
    images: list[np.ndarray] | None
    padded: bool = False
    t_submit: float = 0.0
    inputs: list[np.ndarray] | None = None  # packed model inputs (pre-processing stage)
    preprocess_ms: float = 0.0
    bins: int | None = None  # run-time B_run the clip ran with (--bins / --latency-budget)
    epoch: int = 0  # per-frame models: a new epoch restarts the model's state (runtime.streaming.models)


class RunControl:
    """What every thread of one run checks: the stop request, a stage failure, the clip limit.

    ``halt`` is set by any of them, so every wait (slots, the lossless overlay) ends. ``lock``
    guards the summary and the results shared between the threads.
    """

    def __init__(self, stop: Any):
        self.stop = stop  # a StopFlag (signals, a server)
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.abort = threading.Event()  # a stage failed
        self.clips_done = threading.Event()  # max_clips reached
        self.halt = threading.Event()  # any of the above, or a stop request: every wait ends

    def request_stop(self, reason: str = "stopped") -> None:
        self.stop.set(reason)
        self.halt.set()

    def halted(self) -> bool:
        return self.halt.is_set() or self.stop.is_set()

    def fail(self, e: BaseException) -> None:
        """The one failure path: the first error is kept, every thread stops."""
        with self.lock:
            if self.error is None:
                self.error = e
        self.abort.set()
        self.halt.set()


class Slot:
    """A queue of one: put() replaces an unprocessed job (returns True = one dropped) or, when
    ``block``, waits until the consumer took it. Every wait ends when ``halted()`` (a stop, a
    failure, the clip limit): a job put then is discarded, neither queued nor counted as dropped."""

    def __init__(self, block: bool, halted: Callable[[], bool]):
        self.block = block
        self.halted = halted
        self._job: Job | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, job: Job) -> bool:
        with self._cond:
            if self.block:
                while self._job is not None and not self.halted() and not self._closed:
                    self._cond.wait(0.05)
            if self.halted():
                return False
            dropped = self._job is not None
            self._job = job
            self._cond.notify_all()
            return dropped

    def get(self) -> Job | None:
        """The job, or None once the slot is closed and empty (or halted)."""
        with self._cond:
            while self._job is None and not self._closed and not self.halted():
                self._cond.wait(0.1)
            if self.halted():
                self._job = None
            job, self._job = self._job, None
            self._cond.notify_all()
            return job

    def wait_empty(self) -> None:
        with self._cond:
            while self._job is not None and not self._closed and not self.halted():
                self._cond.wait(0.05)

    def close(self, discard: bool) -> None:
        with self._cond:
            self._closed = True
            if discard:
                self._job = None
            self._cond.notify_all()


def prepare_stage(ctl: RunControl, raw: Slot, ready: Slot, model: Any, pre: Any, fps: float) -> None:
    """Pre-processing thread: ``model.prepare`` (for ATFR sampling indices, the official transform
    and pathway packing), one job ahead of inference (it waits while a prepared one is queued)."""
    while True:
        ready.wait_empty()  # one clip ahead of the model, no more
        job = raw.get()
        if job is None or ctl.halted():
            return
        try:
            t0 = time.perf_counter()
            model.prepare(pre, job, fps)
            job.images = None  # the frames are no longer needed by this job
            job.preprocess_ms = (time.perf_counter() - t0) * 1e3
        except BaseException as e:  # noqa: BLE001 - the one failure path
            ctl.fail(e)
            return
        ready.put(job)  # never replaces: the slot was empty and this is its only producer


def infer_stage(ctl: RunControl, ready: Slot, model: Any, pipeline: Any, budget: Any, summary: Any,
                record: Callable[[Job, Any, float], None], max_clips: int | None,
                skip: Callable[[Job, float], None] | None = None) -> None:
    """Inference thread: runs the stream model on each prepared job and records its result
    (``record``), or counts a job without one (``skip``: a per-frame model between results); with
    a latency budget, sets B_run of ``pipeline`` before each clip and feeds the controller after it."""
    while True:
        if ctl.clips_done.is_set():
            return  # max_clips reached: a clip queued meanwhile is not processed (exactly N)
        job = ready.get()
        if job is None or ctl.halted():
            return
        try:
            if budget is not None:
                pipeline.set_bins(budget.bins)  # only this thread runs the pipeline
            b_run = getattr(pipeline, "bins", None)
            t1 = time.perf_counter()
            res = model.infer(job)
            infer_ms = (time.perf_counter() - t1) * 1e3
            job.inputs = None
            job.bins = b_run
            if res is None:
                if skip is not None:
                    skip(job, infer_ms)
                continue
            record(job, res, infer_ms)
            if budget is not None:
                budget.observe(job.preprocess_ms + infer_ms)
                summary.bins_changes = budget.changes
        except BaseException as e:  # noqa: BLE001 - the one failure path
            ctl.fail(e)
            return
        if max_clips and summary.clips >= max_clips:
            ctl.clips_done.set()
            ctl.halt.set()


class ClipWindow:
    """The main loop's newest frames (``size`` = one clip's span at the source's fps) and when to
    hand a clip on: the first full window, then every ``stride`` frames.

    ``reduce`` (``Preprocessor.gather``) keeps of each frame only what pre-processing reads of it
    (the crop's source pixels), so the window never holds full-resolution frames (a 4K clip window
    of 24 frames would be 600 MB); the overlay draws on the frame itself, not on the window."""

    def __init__(self, size: int, stride: int, reduce: Callable[[np.ndarray], np.ndarray] | None = None):
        self.frames: collections.deque = collections.deque(maxlen=size)  # (index, timestamp, image)
        self.stride = stride
        self.reduce = reduce
        self.since_clip = 0
        self.submitted = 0
        self._shape: tuple | None = None  # the source frames' shape

    def __len__(self) -> int:
        return len(self.frames)

    def push(self, frame: Any) -> Job | None:
        """Add a frame; the clip to submit now, if any."""
        w = self.frames
        if w and frame.image.shape != self._shape:
            # A source that came back at another resolution (reconnect): a clip never mixes
            # sizes, the window starts again.
            w.clear()
            self.since_clip = 0
        self._shape = frame.image.shape
        w.append((frame.index, frame.timestamp, self.reduce(frame.image) if self.reduce else frame.image))
        self.since_clip += 1
        if len(w) == w.maxlen and (self.submitted == 0 or self.since_clip >= self.stride):
            self.since_clip = 0
            job = self.job(self.submitted, False)
            self.submitted += 1
            return job
        return None

    def final_job(self) -> Job | None:
        """A source that ended before the first clip: one clip padded with the last frame."""
        return self.job(0, True) if self.submitted == 0 and len(self.frames) else None

    def job(self, seq: int, padded: bool) -> Job:
        index, timestamp, _ = self.frames[-1]
        return Job(seq, index, timestamp, [img for _, _, img in self.frames], padded, time.perf_counter())
