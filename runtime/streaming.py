"""The streaming run loop behind ``atfr run``, usable from Python (servers, tests, soak). Torch-free.

Four threads, none waiting on a slower one unless asked to (``lossless``):

* capture (``FrameStream``): reads the source into a bounded ring buffer;
* main (``StreamRunner.run``): keeps the newest clip window (NUM_FRAMES * SAMPLING_RATE * fps /
  target_fps frames), every ``stride`` frames hands the newest clip to the pre-processing stage
  through a slot of size 1 (an unprocessed clip still in the slot is replaced and counted as
  dropped), and draws the overlay on every frame (``on_frame``: save, show);
* pre-processing: sampling indices, the official transform (centre crop) and pathway packing, one
  clip ahead of inference (it prepares the next clip while the model runs the current one, and
  waits while a prepared clip is still queued, so no CPU is spent on clips that would be dropped);
* inference: runs the pipeline and records each clip (``events``: one JSON line; ``status``: one
  human line).

``lossless`` (offline use of a file): the main loop waits instead of dropping, and every frame shows
the result of the newest clip ending at or before it, so the saved video and the events do not
depend on machine speed; the three stages still overlap. Memory stays bounded: at most three clips
are in flight and at most ``max(window, 32)`` frames wait for their overlay.

One failure path: an exception in decoding (``SourceError``), pre-processing, inference, recording
(events/status) or ``on_frame`` (video output) stops every thread and is raised by ``run()`` after
they are joined; the caller closes its outputs. A closed ``status`` pipe (``atfr run --print |
head``) is a quiet stop, not a failure. ``StopFlag`` + ``stop_on_signals`` turn SIGINT, SIGTERM and
SIGHUP into the same clean stop.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from atfr.errors import ATFRError, SourceError, check_range

# Why a run ended (RunSummary.end_reason) -> what it means. Exit codes of ``atfr run``: 0 for every
# end below except the source-lost ones (5); a failure raises (its ATFRError code, 1 if internal).
END_REASONS = {
    "eof": "end of file",
    "truncated": "the file ended before the frame count its container reports (warning, exit 0)",
    "disconnected": "live source lost and the reconnect budget spent (exit 5)",
    "stalled": "no frame for the stall timeout and the reconnect budget spent (exit 5)",
    "duration": "--duration reached",
    "max-clips": "max_clips reached",
    "closed": "the display window was closed",
    "interrupted": "SIGINT (Ctrl-C)",
    "terminated": "SIGTERM (systemd, docker stop)",
    "hangup": "SIGHUP",
    "output-closed": "the status pipe was closed (e.g. | head); quiet",
    "error": "a failure; run() raises it",
}
SOURCE_LOST = ("disconnected", "stalled")
_SIGNAL_REASONS = {"SIGINT": "interrupted", "SIGTERM": "terminated", "SIGHUP": "hangup"}


@dataclass
class RunOptions:
    stride: int = 8
    topk: int = 5
    duration: float | None = None
    max_clips: int | None = None  # stop after this many processed clips (exactly this many)
    lossless: bool = False  # offline file mode: run every strided clip, in step with the frames
    latency_budget_ms: float | None = None  # pick B_run per clip to keep p95 latency under it (runtime.budget)

    def check(self) -> None:
        """One place for the option checks: ``atfr run`` calls it before loading the model, and
        StreamRunner again for Python callers."""
        check_range("--stride", self.stride, 1)
        check_range("--topk", self.topk, 1)
        check_range("max_clips", self.max_clips, 1)


@dataclass
class RunSummary:
    clips: int = 0
    frames: int = 0
    dropped_clips: int = 0
    dropped_frames: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0
    stalls: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # pre-processing + inference per clip
    infer_ms_total: float = 0.0
    preprocess_ms_total: float = 0.0
    bprime_hist: list[dict[int, int]] = field(default_factory=list)  # per SGS layer: B' -> clips
    end_reason: str = ""
    end_detail: str = ""  # one sentence from the source (eof/truncated/lost) when it ended the run
    wall_s: float = 0.0
    padded_clips: int = 0
    bins_hist: dict[int, int] = field(default_factory=dict)  # run-time B_run -> clips (with --bins/--latency-budget)
    bins_changes: int = 0  # B_run changes made by the latency budget
    budget_ms: float | None = None

    @property
    def mean_latency_ms(self) -> float:
        return float(np.mean(self.latencies_ms)) if self.latencies_ms else 0.0

    @property
    def p95_latency_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else 0.0

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def source_lost(self) -> bool:
        return self.end_reason in SOURCE_LOST

    def stop_line(self) -> str:
        """One sentence: why the run stopped (``atfr run`` prints it on stderr)."""
        r, d = self.end_reason, self.end_detail
        text = {"duration": "--duration reached", "max-clips": "clip limit reached",
                "closed": "window closed", "interrupted": "interrupted (SIGINT)",
                "terminated": "stopped by SIGTERM", "hangup": "stopped by SIGHUP",
                "output-closed": "stdout closed"}.get(r)
        if text is None:
            text = d or END_REASONS.get(r, r)
        if r in SOURCE_LOST:
            return f"source lost: {text}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"clips": self.clips, "frames": self.frames, "dropped_clips": self.dropped_clips,
                "dropped_frames": self.dropped_frames, "reconnects": self.reconnects,
                "reconnect_attempts": self.reconnect_attempts, "stalls": self.stalls,
                "mean_latency_ms": self.mean_latency_ms, "p95_latency_ms": self.p95_latency_ms,
                "clips_per_s": self.clips_per_s, "infer_s": self.infer_ms_total / 1e3,
                "preprocess_s": self.preprocess_ms_total / 1e3,
                "bprime_hist": [{str(k): v for k, v in sorted(h.items())} for h in self.bprime_hist],
                "end_reason": self.end_reason, "end_detail": self.end_detail, "wall_s": self.wall_s,
                "padded_clips": self.padded_clips,
                **({"bins_hist": {str(k): v for k, v in sorted(self.bins_hist.items())},
                    "bins_changes": self.bins_changes, "latency_budget_ms": self.budget_ms}
                   if self.bins_hist else {})}

    def lines(self, layer_names: list[str] | None = None) -> list[str]:
        out = [f"summary: {self.clips} clip(s) from {self.frames} frame(s) in {self.wall_s:.2f} s "
               f"(ended: {self.end_reason})",
               f"  latency: mean {self.mean_latency_ms:.1f} ms, p95 {self.p95_latency_ms:.1f} ms "
               f"(pre-processing + inference per clip)"]
        if self.clips and self.wall_s > 0:
            busy = self.infer_ms_total / 1e3 / self.wall_s
            out.append(f"  model: {self.clips_per_s:.2f} clips/s, inference busy {100 * busy:.0f}% of the run "
                       f"(pre-processing {self.preprocess_ms_total / self.clips:.1f} ms/clip, overlapped)")
        out.append(f"  dropped: {self.dropped_clips} clip(s) (inference slower than real time), "
                   f"{self.dropped_frames} frame(s) (capture buffer full)")
        if self.reconnects or self.reconnect_attempts or self.stalls:
            out.append(f"  reconnects: {self.reconnects} of {self.reconnect_attempts} attempt(s), "
                       f"{self.stalls} stall(s)")
        if self.padded_clips:
            out.append(f"  {self.padded_clips} clip(s) padded by repeating the last frame (source shorter than a clip)")
        for i, h in enumerate(self.bprime_hist):
            name = layer_names[i] if layer_names and i < len(layer_names) else f"layer {i}"
            hist = " ".join(f"{k}:{v}" for k, v in sorted(h.items())) or "-"
            out.append(f"  B' histogram ({name}): {hist}")
        if self.bins_hist:
            hist = " ".join(f"{k}:{v}" for k, v in sorted(self.bins_hist.items()))
            budget = (f" (latency budget {self.budget_ms:g} ms, p95 {self.p95_latency_ms:.1f} ms, "
                      f"{self.bins_changes} change(s))" if self.budget_ms else "")
            out.append(f"  bins used (B_run): {hist}{budget}")
            if self.budget_ms and self.p95_latency_ms > self.budget_ms and min(self.bins_hist) == 1:
                out.append("  the budget is out of reach even at 1 bin: the part before SGS (and pre-processing) "
                           "alone takes longer")
        return out


class StopFlag:
    """A stop request shared by signal handlers, servers and the run loop (first reason wins)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, signals: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGHUP")) -> Iterator[StopFlag]:
    """SIGINT/SIGTERM/SIGHUP set ``flag`` (end reasons interrupted/terminated/hangup) instead of
    killing the process, so the loop stops at the next frame and every output is finalized.

    A second SIGINT raises KeyboardInterrupt (a way out if a stop hangs). Only the main thread can
    install handlers; elsewhere this does nothing (the embedding server owns the signals).
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if flag.is_set() and name == "SIGINT":
            raise KeyboardInterrupt
        flag.set(_SIGNAL_REASONS.get(name, name.lower()))

    old = {}
    for name in signals:
        sig = getattr(signal, name, None)
        if sig is not None:
            old[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class EventLog:
    """--jsonl: one JSON line per clip, flushed per line (``tail -f`` works while it runs).

    The file is created with the first event (exclusively unless ``force``), so a run that fails
    or stops before its first clip leaves no empty file, and one that produced events keeps them.
    Write errors (disk full) raise ``ATFRError`` naming the file.
    """

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path = Path(path)
        self.name = str(path)
        self.force = force
        self.lines = 0
        self._f: TextIO | None = None

    def write(self, text: str) -> None:
        try:
            if self._f is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "w" if self.force else "x", encoding="utf-8")
            self._f.write(text)
        except OSError as e:
            raise _write_error(self.name, e) from None
        self.lines += text.count("\n")

    def flush(self) -> None:
        if self._f is not None:
            try:
                self._f.flush()
            except OSError as e:
                raise _write_error(self.name, e) from None

    def close(self) -> Path | None:
        """Flush and close; the path when the file exists (something was written)."""
        f, self._f = self._f, None
        if f is None:
            return None
        try:
            f.close()
        except OSError as e:
            raise _write_error(self.name, e) from None
        return self.path


def _write_error(name: str, e: OSError) -> ATFRError:
    return ATFRError(f"{name}: cannot write ({e.strerror or type(e).__name__})")


@dataclass
class _Job:
    seq: int  # submission number
    frame_index: int
    timestamp: float
    images: list[np.ndarray] | None
    padded: bool = False
    t_submit: float = 0.0
    inputs: list[np.ndarray] | None = None  # packed model inputs (pre-processing stage)
    preprocess_ms: float = 0.0
    bins: int | None = None  # run-time B_run the clip ran with (--bins / --latency-budget)


class _Slot:
    """A queue of one: put() replaces an unprocessed job (returns True = one dropped) or, when
    ``block``, waits until the consumer took it. Every wait ends when ``halted()`` (a stop, a
    failure, the clip limit): a job put then is discarded, neither queued nor counted as dropped."""

    def __init__(self, block: bool, halted: Callable[[], bool]):
        self.block = block
        self.halted = halted
        self._job: _Job | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, job: _Job) -> bool:
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

    def get(self) -> _Job | None:
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


class StreamRunner:
    """Runs a ``Pipeline`` over a ``FrameStream``; see the module docstring for the threading.

    events: gets one JSON line per clip (``EventLog`` or any text file). status: one human line per
    clip. on_frame: gets each annotated BGR frame, returns False to stop (window closed).
    stop: a ``StopFlag`` (signals, a server) checked on every frame.
    """

    def __init__(self, pipeline: Any, stream: Any, options: RunOptions, events: TextIO | EventLog | None = None,
                 on_frame: Callable[[np.ndarray], bool] | None = None, status: TextIO | None = None,
                 stop: StopFlag | None = None):
        from atfr.runtime.video.preprocess import Preprocessor
        from atfr.runtime.video.sampling import stream_window

        options.check()
        self.pipeline = pipeline
        self.m = pipeline.manifest
        self.stream = stream
        self.opt = options
        self.events = events
        self.on_frame = on_frame
        self.status = status
        self.stop = stop or StopFlag()
        self.pre = Preprocessor(self.m.input)
        self.window = stream_window(self.m.input, stream.fps)
        self.summary = RunSummary(bprime_hist=[{} for _ in self.m.sgs], budget_ms=options.latency_budget_ms)
        self.budget = None  # BudgetController when options.latency_budget_ms is set
        if options.latency_budget_ms is not None:
            from atfr.runtime.budget import BudgetController

            if not self.m.sgs:
                raise ATFRError(f"--latency-budget: {self.m.name} has no SGS layer (no bins to choose)")
            self.budget = BudgetController(options.latency_budget_ms, pipeline.trained_bins,
                                           bins=getattr(pipeline, "bins", None) or 0)
            pipeline.set_bins(self.budget.bins)  # refused here (one line) where SGS cannot change bins
        self._lock = threading.Lock()
        self._latest: tuple | None = None  # (topk, bprime, latency_ms, clips_per_s, B_run) of the newest clip
        self._results: dict[int, tuple] = {}  # lossless overlay: seq -> the same tuple
        self._done_seq = -1  # lossless: highest seq recorded (jobs are recorded in order)
        self._done_times: collections.deque[float] = collections.deque(maxlen=16)
        self._res_cond = threading.Condition(self._lock)
        self._error: BaseException | None = None
        self._abort = threading.Event()  # a stage failed
        self._clips_done = threading.Event()  # max_clips reached
        self._halt = threading.Event()  # any of the above, or a stop request: every wait ends

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop at the next frame (thread-safe); outputs are finalized as for a signal."""
        self.stop.set(reason)
        self._halt.set()

    def _halted(self) -> bool:
        return self._halt.is_set() or self.stop.is_set()

    # -- failure path ---------------------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = e
        self._abort.set()
        self._halt.set()

    # -- pre-processing stage ---------------------------------------------------------------------
    def _prepare(self, raw: _Slot, ready: _Slot) -> None:
        from atfr.runtime.video.sampling import stream_indices

        while True:
            ready.wait_empty()  # one clip ahead of the model, no more
            job = raw.get()
            if job is None or self._halted():
                return
            try:
                t0 = time.perf_counter()
                images = job.images or []
                idx = stream_indices(self.m.input, self.stream.fps, len(images))
                clip = self.pre([images[i] for i in idx], 1)  # no full-resolution stack
                job.inputs = [x[None] for x in self.pre.pack(clip)]
                job.images = None  # the frames are no longer needed by this job
                job.preprocess_ms = (time.perf_counter() - t0) * 1e3
            except BaseException as e:  # noqa: BLE001 - the one failure path
                self._fail(e)
                return
            ready.put(job)  # never replaces: the slot was empty and this is its only producer

    # -- inference stage ---------------------------------------------------------------------------
    def _work(self, ready: _Slot) -> None:
        while True:
            if self._clips_done.is_set():
                return  # max_clips reached: a clip queued meanwhile is not processed (exactly N)
            job = ready.get()
            if job is None or self._halted():
                return
            try:
                if self.budget is not None:
                    self.pipeline.set_bins(self.budget.bins)  # only this thread runs the pipeline
                b_run = getattr(self.pipeline, "bins", None)
                t1 = time.perf_counter()
                res = self.pipeline.infer(job.inputs)[0]
                infer_ms = (time.perf_counter() - t1) * 1e3
                job.inputs = None
                job.bins = b_run
                self._record(job, res, infer_ms)
                if self.budget is not None:
                    self.budget.observe(job.preprocess_ms + infer_ms)
                    self.summary.bins_changes = self.budget.changes
            except BaseException as e:  # noqa: BLE001 - the one failure path
                self._fail(e)
                return
            if self.opt.max_clips and self.summary.clips >= self.opt.max_clips:
                self._clips_done.set()
                self._halt.set()

    def _record(self, job: _Job, res: Any, infer_ms: float) -> None:
        """The jsonl line first, then the summary and the overlay, then the --print line: a clip
        whose event could not be written is neither counted nor shown (what the video and the
        summary report is in the jsonl)."""
        from atfr.display import format_percent

        latency = job.preprocess_ms + infer_ms
        b_run = job.bins
        top = res.top(self.opt.topk)
        topk = [(self.m.label(i), float(res.probs[i])) for i in top]
        bprime = tuple(int(b) for b in res.bprime)
        now = time.perf_counter()
        clip_no = self.summary.clips  # only this thread changes it
        if self.events is not None:
            ev = {"clip": clip_no, "frame": job.frame_index, "timestamp": round(job.timestamp, 4),
                  "topk": [{"index": i, "label": lab, "prob": p} for i, (lab, p) in zip(top, topk)],
                  "bprime": list(bprime), "latency_ms": latency,
                  "preprocess_ms": job.preprocess_ms, "infer_ms": infer_ms,
                  "e2e_ms": (now - job.t_submit) * 1e3}
            if b_run is not None:
                ev["bins"] = b_run
            if job.padded:
                ev["padded"] = True
            try:
                self.events.write(json.dumps(ev) + "\n")
                self.events.flush()
            except OSError as e:
                raise _write_error(getattr(self.events, "name", "events"), e) from None
        with self._lock:
            s = self.summary
            s.clips += 1
            s.latencies_ms.append(latency)
            s.infer_ms_total += infer_ms
            s.preprocess_ms_total += job.preprocess_ms
            s.padded_clips += int(job.padded)
            for i, b in enumerate(bprime):
                if i < len(s.bprime_hist):
                    s.bprime_hist[i][b] = s.bprime_hist[i].get(b, 0) + 1
            if b_run is not None:
                s.bins_hist[b_run] = s.bins_hist.get(b_run, 0) + 1
            self._done_times.append(now)
            n = len(self._done_times)
            cps = (n - 1) / (self._done_times[-1] - self._done_times[0]) if n > 1 and now > self._done_times[0] else None
            self._latest = (topk, bprime, latency, cps, b_run)
            if self.opt.lossless and self.on_frame is not None:
                self._results[job.seq] = self._latest
            self._done_seq = max(self._done_seq, job.seq)
            self._res_cond.notify_all()
        if self.status is not None:  # one human line per clip (atfr demo, atfr run --print)
            try:
                self.status.write(f"  clip {clip_no:3d} @frame {job.frame_index:5d}: {topk[0][0]} "
                                  f"({format_percent(topk[0][1])})  B'={list(bprime)}"
                                  + (f" bins={b_run}" if b_run is not None else "") + f"  {latency:.1f} ms\n")
                self.status.flush()
            except BrokenPipeError:
                self.request_stop("output-closed")  # `atfr run --print | head`: the reader had enough
            except OSError as e:
                raise _write_error(getattr(self.status, "name", "status"), e) from None

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        halt = self._halt
        raw = _Slot(block=self.opt.lossless, halted=self._halted)
        ready = _Slot(block=True, halted=self._halted)
        pre = threading.Thread(target=self._prepare, args=(raw, ready), name="atfr-preprocess", daemon=True)
        worker = threading.Thread(target=self._work, args=(ready,), name="atfr-infer", daemon=True)
        window: collections.deque = collections.deque(maxlen=self.window)
        pending: collections.deque = collections.deque()  # lossless overlay: (frame, seq it shows)
        pending_cap = max(self.window, 32)
        t_start = time.monotonic()
        since_clip = 0
        submitted = 0
        last_t: float | None = None
        fps_ema: float | None = None
        reason = ""
        discard = True
        if self.stop.is_set():
            halt.set()
        self.stream.start()
        pre.start()
        worker.start()
        try:
            while True:
                if self._abort.is_set():
                    reason = "error"
                    break
                if self.stop.is_set():
                    reason = self.stop.reason or "stopped"
                    break
                if self._clips_done.is_set():
                    reason = "max-clips"
                    break
                if self.opt.duration is not None and time.monotonic() - t_start >= self.opt.duration:
                    reason = "duration"
                    break
                frame = self.stream.get(timeout=0.1)
                if frame is None:
                    if self.stream.ended:
                        reason = self.stream.stats.end_reason or "eof"
                        discard = False  # finish the pending clips of a finished source
                        break
                    continue
                self.summary.frames += 1
                if window and frame.image.shape != window[-1].image.shape:
                    # A source that came back at another resolution (reconnect): a clip never
                    # mixes sizes, the window starts again.
                    window.clear()
                    since_clip = 0
                window.append(frame)
                since_clip += 1
                if len(window) == self.window and (submitted == 0 or since_clip >= self.opt.stride):
                    since_clip = 0
                    if raw.put(self._job(submitted, window, False)):
                        with self._lock:
                            self.summary.dropped_clips += 1
                    submitted += 1
                now = time.monotonic()
                if last_t is not None and now > last_t:
                    inst = 1.0 / (now - last_t)
                    fps_ema = inst if fps_ema is None else 0.9 * fps_ema + 0.1 * inst
                last_t = now
                if self.on_frame is None:
                    continue
                if self.opt.lossless:
                    # Each frame shows the newest clip ending at or before it: drawn once that clip
                    # is done, so the three stages overlap and the output stays deterministic.
                    pending.append((frame, submitted - 1, len(window), fps_ema))
                    if not self._draw_pending(pending, pending_cap, final=False):
                        reason = "closed"
                        break
                else:
                    with self._lock:
                        latest = self._latest
                    if self._draw(frame, latest, len(window), fps_ema) is False:
                        reason = "closed"
                        break
            if submitted == 0 and window and reason in ("eof", "truncated", "disconnected", "stalled"):
                # Shorter than one clip: one clip padded with the last frame (official clamp).
                raw.put(self._job(0, window, True))
                submitted = 1
                discard = False
        except KeyboardInterrupt:
            reason = "interrupted"
        except BaseException as e:  # noqa: BLE001 - the one failure path (on_frame: video output)
            self._fail(e)
            reason = "error"
        finally:
            if discard:
                halt.set()
            raw.close(discard=discard)
            pre.join()
            ready.close(discard=discard)
            worker.join()
            try:
                if self.on_frame is not None and pending and self._error is None:
                    self._draw_pending(pending, 0, final=True)  # the frames already read keep their overlay
            except BaseException as e:  # noqa: BLE001
                self._fail(e)
            finally:
                # A source blocked in a read (a stalled stream waits out its read timeout) must not
                # delay a stop by signal: after 2 s its thread is left behind (see FrameStream.stop).
                self.stream.stop(timeout=2.0)
        s = self.summary
        st = self.stream.stats
        s.wall_s = time.monotonic() - t_start
        s.dropped_frames = st.frames_dropped
        s.reconnects = st.reconnects
        s.reconnect_attempts = getattr(st, "reconnect_attempts", st.reconnects)
        s.stalls = getattr(st, "stalls", 0)
        if reason in ("eof", "truncated", "disconnected", "stalled") or reason.startswith("error: "):
            s.end_detail = getattr(st, "end_detail", "")
        s.end_reason = "error" if self._error is not None else reason
        if self._error is not None:
            raise self._error
        name = getattr(self.stream.reader, "name", "source")
        if reason.startswith("error: "):
            s.end_reason = "error"
            raise SourceError(f"{name}: capture failed ({reason[7:]})")
        if s.frames == 0 and reason in ("eof", "truncated", "disconnected", "stalled"):
            raise SourceError(f"{name}: no frames received" + (f" ({s.end_detail})" if s.end_detail else ""))
        return s

    def _job(self, seq: int, window: collections.deque, padded: bool) -> _Job:
        last = window[-1]
        return _Job(seq, last.index, last.timestamp, [f.image for f in window], padded, time.perf_counter())

    def overlay_text(self, result: tuple, fps: float | None) -> list[str]:
        """The overlay lines for one clip's result (``_latest``)."""
        from atfr.runtime.video.overlay import overlay_lines

        topk, bprime, latency, cps, b_run = result
        lines = overlay_lines(topk, bprime, latency, fps, [b_run or layer.bins for layer in self.m.sgs], cps)
        if b_run is not None:  # "B' 3/8" above reads against B_run; say it is not the trained B
            budget = f", budget {self.opt.latency_budget_ms:g} ms" if self.opt.latency_budget_ms else ""
            lines.append(f"bins {b_run}/{self.pipeline.trained_bins}{budget}")
        return lines

    def _draw(self, frame: Any, result: tuple | None, buffered: int, fps: float | None) -> bool:
        import cv2

        from atfr.runtime.video.overlay import draw_lines

        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        if result is not None:
            draw_lines(bgr, self.overlay_text(result, fps))
        else:
            draw_lines(bgr, [f"buffering {buffered}/{self.window}" if buffered < self.window else "first clip running"])
        return self.on_frame(bgr) is not False

    def _draw_pending(self, pending: collections.deque, cap: int, final: bool) -> bool:
        """Draw the pending frames whose clip is done, oldest first; while more than ``cap`` wait,
        block on the oldest one's clip. ``final`` (stages joined): draw them all, a frame whose clip
        never ran (stop, clip limit) with the newest result. False when on_frame says stop."""
        while pending:
            frame, seq, buffered, fps = pending[0]
            with self._lock:
                if not final:
                    while seq > self._done_seq and len(pending) > cap and not self._halted():
                        self._res_cond.wait(0.05)
                    if seq > self._done_seq:
                        return True  # not done yet (or stopping): drawn later / by the final pass
                result = self._results.get(seq, self._latest) if seq >= 0 else None
                for k in [k for k in self._results if k < seq]:
                    del self._results[k]
            pending.popleft()
            if not self._draw(frame, result, buffered, fps):
                return False
        return True
