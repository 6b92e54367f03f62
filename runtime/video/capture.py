"""The capture side of ``FrameStream`` (``runtime.video.sources``): the loop that reads a ``FrameReader`` on
the capture thread, the stall watch over each reader call, and the reconnect budget. Torch-free."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Frame:
    index: int  # 0-based count of frames delivered by the source (across reconnects)
    timestamp: float  # seconds: index/fps for files, since capture start for live sources
    image: np.ndarray  # RGB uint8 [H,W,3]


@dataclass
class StreamStats:
    frames_read: int = 0
    frames_dropped: int = 0  # overwritten in the ring buffer before the consumer took them
    reconnects: int = 0  # successful reopens
    reconnect_attempts: int = 0  # every reopen tried, against the total budget (max_retries)
    stalls: int = 0  # reads that gave no frame for stall_timeout seconds
    expected_frames: int | None = None  # a file's frame count as its container reports it
    end_reason: str = ""  # eof | truncated | disconnected | stalled | stopped | error: ...
    end_detail: str = ""  # one human sentence: why the source ended


def falls_short(decoded: int, expected: int | None) -> bool:
    """A container's frame count is a hint, often a few frames off (edit lists, B-frame delay): a
    file that ends this close to it ended normally."""
    return expected is not None and decoded < expected - max(2, expected // 100)


def truncation_detail(decoded: int, expected: int | None) -> str:
    """The one sentence for a file that ends short of its container's frame count (run, predict)."""
    return f"decoding stopped after {decoded} of the {expected} frames the container reports (file truncated or corrupt)"


def buffer_full(buf: Any, frame: Frame, max_bytes: int) -> bool:
    """No room for ``frame`` in the ring buffer: ``maxlen`` frames, or (with one frame at least)
    more than ``max_bytes`` of them."""
    n = len(buf)
    return n >= (buf.maxlen or 1) or (n > 0 and (n + 1) * frame.image.nbytes > max_bytes)


class ReaderWatch:
    """The deadline of the reader call in progress, so the consumer can tell a reader hung inside a
    native call (``overdue``) without touching it."""

    def __init__(self, hang_grace_s: float):
        self.hang_grace_s = hang_grace_s
        self.busy_until: float | None = None

    def call(self, fn: Callable, limit: float | None):
        """Run a reader call with a deadline the consumer can check."""
        # inf without a stall timeout: never "hung" for the consumer, but stop() knows it is in the reader
        self.busy_until = math.inf if limit is None else time.monotonic() + limit + self.hang_grace_s
        try:
            return fn()
        finally:
            self.busy_until = None

    @property
    def busy(self) -> bool:
        return self.busy_until is not None

    def overdue(self) -> bool:
        busy = self.busy_until
        return busy is not None and time.monotonic() > busy


class Reconnector:
    """Reopens a live source with exponential backoff, within a budget of attempts for the whole
    run (not per loss: a source that keeps opening and failing cannot loop forever)."""

    def __init__(self, max_retries: int, backoff_s: float, max_backoff_s: float, stats: StreamStats):
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = stats

    def reconnect(self, reader: Any, stop: threading.Event, watch: ReaderWatch, limit: float | None) -> bool:
        delay = self.backoff_s
        while self.stats.reconnect_attempts < self.max_retries:
            if stop.wait(delay):
                return False
            self.stats.reconnect_attempts += 1
            if watch.call(reader.reopen, limit):
                self.stats.reconnects += 1
                return True
            delay = min(delay * 2, self.max_backoff_s)
        return False


class CaptureLoop:
    """The capture thread's loop: read, time-stamp, pace (files), hand each frame to ``push``; a
    read that gives nothing ends a file (eof, truncated, stalled) or reconnects a live source.
    ``run()`` returns the end reason."""

    def __init__(self, reader: Any, stats: StreamStats, watch: ReaderWatch, reconnector: Reconnector,
                 stop: threading.Event, stall_timeout: float | None, pace: bool,
                 push: Callable[[Frame], None], given_up: Callable[[], bool]):
        self.reader = reader
        self.stats = stats
        self.watch = watch
        self.reconnector = reconnector
        self.stop = stop
        self.stall_timeout = stall_timeout
        self.pace = pace
        self.push = push
        self.given_up = given_up  # the consumer ended the stream (reader hung)

    def run(self) -> str:
        t0 = time.monotonic()
        idx = 0
        fps = self.reader.fps
        last_frame = t0
        while not self.stop.is_set() and not self.given_up():
            t_read = time.monotonic()
            img = self.watch.call(self.reader.read, self.stall_timeout)
            if img is None:
                now = time.monotonic()
                stalled = self.stall_timeout is not None and now - t_read >= 0.9 * self.stall_timeout
                if not self.reader.live:
                    return self._file_ended(idx, now - t_read, stalled)
                if stalled:
                    self.stats.stalls += 1
                end = self._lost(stalled, now - last_frame)
                if end:
                    return end
                continue
            now = time.monotonic()
            last_frame = now
            if self.reader.live:
                ts = now - t0
            else:
                ts = idx / fps
                if self.pace:
                    due = t0 + ts
                    if due > now and self.stop.wait(due - now):
                        return "stopped"
            self.push(Frame(idx, ts, img))
            idx += 1
        return "stopped"

    def _file_ended(self, idx: int, waited: float, stalled: bool) -> str:
        st = self.stats
        if stalled:
            st.stalls += 1
            st.end_detail = f"no frame for {waited:.0f} s after {idx} frame(s) (a file is not reopened: it would replay)"
            return "stalled"
        if falls_short(idx, st.expected_frames):
            st.end_detail = truncation_detail(idx, st.expected_frames)
            return "truncated"
        st.end_detail = f"end of file after {idx} frame(s)"
        return "eof"

    def _lost(self, stalled: bool, since_frame: float) -> str:
        """A live source gave nothing: reconnect ('' when it came back) or the end reason."""
        if self.stop.is_set():
            return "stopped"
        if self.reconnector.reconnect(self.reader, self.stop, self.watch, self.stall_timeout):
            return ""
        if self.stop.is_set():
            return "stopped"
        why = f"no frame for {since_frame:.0f} s" if stalled else "the source stopped delivering frames"
        self.stats.end_detail = (f"{why}; {self.stats.reconnect_attempts} reconnect attempt(s) spent "
                                 f"(budget {self.reconnector.max_retries} per run, --retries)")
        return "stalled" if stalled else "disconnected"
