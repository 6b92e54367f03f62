"""The streaming run loop behind ``atfr run``, usable from Python (servers, tests, soak). Torch-free.

Four threads, none waiting on a slower one unless asked to (``lossless``):

* capture (``FrameStream``): reads the source into a bounded ring buffer;
* main (``StreamRunner.run``): keeps the newest clip window (NUM_FRAMES * SAMPLING_RATE * fps /
  target_fps frames, each reduced to the pixels pre-processing reads), every ``stride`` frames hands the newest clip to the pre-processing stage
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
are in flight and at most ``max(window, 32)`` frames (and ``PENDING_BYTES``) wait for their overlay.

What a job is comes from the stream model (``runtime.streaming.models``): for ATFR's ``Pipeline`` a
clip window every ``stride`` frames; for AdaFuse (``runtime.adafuse_stream``) every frame, through
its online graph once, with a result every ``stride`` frames. The loop, outputs and endings are the same.

One failure path: an exception in decoding (``SourceError``), pre-processing, inference, recording
(events/status) or ``on_frame`` (video output) stops every thread and is raised by ``run()`` after
they are joined; the caller closes its outputs. A closed ``status`` pipe (``atfr run --print |
head``) is a quiet stop, not a failure. ``StopFlag`` + ``stop_on_signals`` turn SIGINT, SIGTERM and
SIGHUP into the same clean stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from atfr.errors import ATFRError, SourceError, check_range
from atfr.runtime.streaming.draw import FrameDrawer, PendingFrames
from atfr.runtime.streaming.record import ClipRecorder, ClipResults, write_error
from atfr.runtime.streaming.models import as_stream_model
from atfr.runtime.streaming.stages import Job, RunControl, Slot, infer_stage, prepare_stage

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
PENDING_BYTES = 192 << 20  # lossless overlay: full-size frames waiting for their clip (7 at 4K)
SOURCE_ENDS = ("eof", "truncated", *SOURCE_LOST)  # the source ended the run (not a stop or a failure)
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
    model_frames: int = 0  # per-frame models (AdaFuse): frames that went through the model

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
                **({"model_frames": self.model_frames} if self.model_frames else {}),
                **({"bins_hist": {str(k): v for k, v in sorted(self.bins_hist.items())},
                    "bins_changes": self.bins_changes, "latency_budget_ms": self.budget_ms}
                   if self.bins_hist else {})}

    def lines(self, layer_names: list[str] | None = None) -> list[str]:
        per = "of each result's frame" if self.model_frames else "per clip"
        out = [f"summary: {self.clips} clip(s) from {self.frames} frame(s) in {self.wall_s:.2f} s "
               f"(ended: {self.end_reason})",
               f"  latency: mean {self.mean_latency_ms:.1f} ms, p95 {self.p95_latency_ms:.1f} ms "
               f"(pre-processing + inference {per})"]
        if self.model_frames and self.wall_s > 0:
            n, busy = self.model_frames, self.infer_ms_total / 1e3 / self.wall_s
            out.append(f"  model: {n} frame(s) through the online graph, {n / self.wall_s:.1f} frames/s, "
                       f"{self.infer_ms_total / n:.1f} ms/frame, inference busy {100 * busy:.0f}% of the run "
                       f"(pre-processing {self.preprocess_ms_total / n:.1f} ms/frame, overlapped)")
        elif self.clips and self.wall_s > 0:
            busy = self.infer_ms_total / 1e3 / self.wall_s
            out.append(f"  model: {self.clips_per_s:.2f} clips/s, inference busy {100 * busy:.0f}% of the run "
                       f"(pre-processing {self.preprocess_ms_total / self.clips:.1f} ms/clip, overlapped)")
        unit = "model frame(s)" if self.model_frames else "clip(s)"
        out.append(f"  dropped: {self.dropped_clips} {unit} (inference slower than real time), "
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
    """--jsonl: one JSON line per clip, each written whole with one system call as it is recorded
    (``tail -f`` works while it runs).

    The file is created with the first event (exclusively unless ``force``), so a run that fails
    or stops before its first clip leaves no empty file, and one that produced events keeps them.
    Write errors (disk full) raise ``ATFRError`` naming the file, after cutting the file back to
    its last complete line: it never ends in half a line.
    """

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path = Path(path)
        self.name = str(path)
        self.force = force
        self.lines = 0
        self._fd: int | None = None
        self._size = 0  # bytes written
        self._good = 0  # bytes up to the end of the last complete line

    def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                mode = os.O_TRUNC if self.force else os.O_EXCL
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | mode | getattr(os, "O_CLOEXEC", 0), 0o666)
            while data:  # a short write (the disk filling up) goes on, and then fails
                n = os.write(self._fd, data)
                self._size += n
                data = data[n:]
        except OSError as e:
            self._cut_back()
            raise write_error(self.name, e) from None
        if text.endswith("\n"):
            self._good = self._size
        self.lines += text.count("\n")

    def _cut_back(self) -> None:
        """Truncate to the last complete line (best effort: /dev/full cannot be truncated)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._good)
                os.lseek(self._fd, self._good, os.SEEK_SET)
                self._size = self._good

    def flush(self) -> None:
        """Nothing is buffered: each line went to the file when written."""

    def close(self) -> Path | None:
        """Close; the path when the file exists (something was written)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return None
        try:
            os.close(fd)
        except OSError as e:
            raise write_error(self.name, e) from None
        return self.path


def wind_down(ctl: RunControl, stages: tuple, pending: PendingFrames | None, stream: Any, discard: bool) -> None:
    """The end of a run: close the slots and join the stages (their clips in flight finished or
    discarded), draw the frames already read (``pending``, when frames are drawn), stop the source."""
    raw, pre, ready, worker = stages
    if discard:
        ctl.halt.set()
    raw.close(discard=discard)
    pre.join()
    ready.close(discard=discard)
    worker.join()
    try:
        if pending and ctl.error is None:
            pending.flush(final=True)  # the frames already read keep their overlay
    except BaseException as e:  # noqa: BLE001
        ctl.fail(e)
    finally:
        # A source blocked in a read (a stalled stream waits out its read timeout) must not
        # delay a stop by signal: after 2 s its thread is left behind (see FrameStream.stop).
        stream.stop(timeout=2.0)


class StreamRunner:
    """Runs a ``Pipeline`` (ATFR clips) or another stream model (``runtime.streaming.models``: AdaFuse's
    online graph, frame by frame) over a ``FrameStream``; see the module docstring for the threading.

    events: gets one JSON line per clip (``EventLog`` or any text file). status: one human line per
    clip. on_frame: gets each annotated BGR frame, returns False to stop (window closed).
    stop: a ``StopFlag`` (signals, a server) checked on every frame.

    The parts: ``RunControl`` (the flags and the one failure path) and the two worker stages
    (``runtime.streaming.stages``), ``ClipRecorder`` (``runtime.streaming.record``), ``FrameDrawer`` and
    ``PendingFrames`` (``runtime.streaming.draw``); this class reads the frames and ends the run.
    """

    def __init__(self, pipeline: Any, stream: Any, options: RunOptions, events: TextIO | EventLog | None = None,
                 on_frame: Callable[[np.ndarray], bool] | None = None, status: TextIO | None = None,
                 stop: StopFlag | None = None):
        from atfr.runtime.video.preprocess import Preprocessor

        options.check()
        self.pipeline = pipeline
        self.model = as_stream_model(pipeline)
        self.m = pipeline.manifest
        self.stream = stream
        self.opt = options
        self.on_frame = on_frame
        self.stop = stop or StopFlag()
        self.pre = Preprocessor(self.m.input)
        self._gather = self.pre.gather  # what the clip window keeps of a frame (see ClipWindow)
        self.window = self.model.window_size(stream.fps)
        self.summary = RunSummary(bprime_hist=[{} for _ in self.m.sgs], budget_ms=options.latency_budget_ms)
        self.budget = make_budget(pipeline, options.latency_budget_ms)  # None without a budget
        self._ctl = RunControl(self.stop)
        self._results = ClipResults(self._ctl.lock, keep_all=options.lossless and on_frame is not None)
        self._recorder = ClipRecorder(self.m, options.topk, self.summary, self._results, self._ctl.lock,
                                      events, status, self.request_stop)
        self._drawer = FrameDrawer(self.m, pipeline, options.latency_budget_ms, self.window, on_frame,
                                   unit=self.model.unit)

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop at the next frame (thread-safe); outputs are finalized as for a signal."""
        self._ctl.request_stop(reason)

    @property
    def _latest(self) -> tuple | None:
        """(topk, bprime, latency_ms, clips_per_s, B_run, the model's overlay lines) of the newest clip."""
        return self._results.latest

    # The recorder and the drawer are looked up through these at run() time, so a caller (a test)
    # can wrap them on the instance.
    def _record(self, job: Job, res: Any, infer_ms: float) -> None:
        self._recorder.record(job, res, infer_ms)

    def _skip(self, job: Job, infer_ms: float) -> None:
        self._recorder.skip(job, infer_ms)

    def _draw(self, frame: Any, result: tuple | None, buffered: int, fps: float | None) -> bool:
        return self._drawer.draw(frame, result, buffered, fps)

    def overlay_text(self, result: tuple, fps: float | None) -> list[str]:
        """The overlay lines for one clip's result (``_latest``)."""
        return self._drawer.overlay_text(result, fps)

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        ctl = self._ctl
        raw = Slot(block=self.opt.lossless, halted=ctl.halted)
        ready = Slot(block=True, halted=ctl.halted)
        pre = threading.Thread(target=prepare_stage, args=(ctl, raw, ready, self.model, self.pre, self.stream.fps),
                               name="atfr-preprocess", daemon=True)
        worker = threading.Thread(target=infer_stage, args=(ctl, ready, self.model, self.pipeline, self.budget,
                                                            self.summary, self._record, self.opt.max_clips, self._skip),
                                  name="atfr-infer", daemon=True)
        pending = PendingFrames(self._results, ctl.halted, self._draw, max(self.window, 32), PENDING_BYTES)
        t_start = time.monotonic()
        reason = ""
        discard = True
        if self.stop.is_set():
            ctl.halt.set()
        self.stream.start()
        pre.start()
        worker.start()
        try:
            reason, discard = self._loop(raw, pending, t_start)
        except KeyboardInterrupt:
            reason = "interrupted"
        except BaseException as e:  # noqa: BLE001 - the one failure path (on_frame: video output)
            ctl.fail(e)
            reason = "error"
        finally:
            wind_down(self._ctl, (raw, pre, ready, worker), pending if self.on_frame is not None else None,
                      self.stream, discard)
        self.summary.model_frames = getattr(self.model, "frames_run", 0)
        return finish_summary(self.summary, self.stream, reason, ctl.error, t_start)

    def _loop(self, raw: Slot, pending: PendingFrames, t_start: float) -> tuple[str, bool]:
        """Read frames until the run ends: (end reason, discard the clips in flight)."""
        ctl = self._ctl
        window = self.model.new_window(self.window, self.opt.stride, self._gather, self.stream.fps)
        last_t: float | None = None
        fps_ema: float | None = None
        while True:
            if ctl.abort.is_set():
                return "error", True
            if self.stop.is_set():
                return self.stop.reason or "stopped", True
            if ctl.clips_done.is_set():
                return "max-clips", True
            if self.opt.duration is not None and time.monotonic() - t_start >= self.opt.duration:
                return "duration", True
            frame = self.stream.get(timeout=0.1)
            if frame is None:
                if not self.stream.ended:
                    continue
                reason = self.stream.stats.end_reason or "eof"
                last = window.final_job() if reason in SOURCE_ENDS else None
                if last is not None:
                    # Shorter than one clip: one clip padded with the last frame (official clamp).
                    raw.put(last)
                return reason, False  # finish the pending clips of a finished source
            self.summary.frames += 1
            job = window.push(frame)
            if job is not None and raw.put(job):
                with ctl.lock:
                    self.summary.dropped_clips += 1
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
                if not pending.add(frame, window.submitted - 1, len(window), fps_ema):
                    return "closed", True
            else:
                with ctl.lock:
                    latest = self._results.latest
                if self._draw(frame, latest, len(window), fps_ema) is False:
                    return "closed", True


def make_budget(pipeline: Any, latency_budget_ms: float | None) -> Any:
    """The ``BudgetController`` of a run with a latency budget (None without one); B_run set to its
    first choice (refused here, one line, where SGS cannot change bins)."""
    if latency_budget_ms is None:
        return None
    from atfr.runtime.budget import BudgetController

    m = pipeline.manifest
    if not m.sgs:
        raise ATFRError(f"--latency-budget: {m.name} has no SGS layer (no bins to choose)")
    budget = BudgetController(latency_budget_ms, pipeline.trained_bins, bins=getattr(pipeline, "bins", None) or 0)
    pipeline.set_bins(budget.bins)
    return budget


def finish_summary(s: RunSummary, stream: Any, reason: str, error: BaseException | None, t_start: float) -> RunSummary:
    """The end of a run: the summary completed from the stream's counters, then the run's error
    (or the source's: a capture failure, no frame at all) raised."""
    st = stream.stats
    s.wall_s = time.monotonic() - t_start
    s.dropped_frames = st.frames_dropped
    s.reconnects = st.reconnects
    s.reconnect_attempts = getattr(st, "reconnect_attempts", st.reconnects)
    s.stalls = getattr(st, "stalls", 0)
    if reason in SOURCE_ENDS or reason.startswith("error: "):
        s.end_detail = getattr(st, "end_detail", "")
    s.end_reason = "error" if error is not None else reason
    if error is not None:
        raise error
    name = getattr(stream.reader, "name", "source")
    if reason.startswith("error: "):
        s.end_reason = "error"
        raise SourceError(f"{name}: capture failed ({reason[7:]})")
    if s.frames == 0 and reason in SOURCE_ENDS:
        raise SourceError(f"{name}: no frames received" + (f" ({s.end_detail})" if s.end_detail else ""))
    return s
