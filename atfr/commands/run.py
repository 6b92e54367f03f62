"""atfr run OUTDIR --source SRC: streaming inference on a camera, stream, pipeline or video file.

Three threads, none waiting on a slower one:

* capture (``FrameStream``): reads the source into a bounded ring buffer;
* main: keeps the newest clip window (NUM_FRAMES * SAMPLING_RATE * fps / target_fps frames),
  every ``--stride`` frames hands the newest clip to the worker through a slot of size 1 (an
  unprocessed clip still in the slot is replaced and counted as dropped), and draws/saves the
  overlay on every frame;
* worker: preprocesses (the official transform, centre crop) and runs the pipeline, writes one
  JSON line per clip.

Files are played at their own fps (they behave like a camera, so slow inference drops clips);
``--fast`` decodes as fast as possible and never drops (the main loop waits for the worker).
A video shorter than one clip gives one clip padded by repeating its last frame (the official
loader's clamp). Torch-free: this runs on a Jetson with only the runtime installed.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.runtime.ort_providers import add_providers_argument



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="export folder (atfr export)")
    p.add_argument("--source", required=True,
                   help="camera index, /dev/videoN, video file, rtsp/http URL, or GStreamer pipeline ending in appsink")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime"])
    add_providers_argument(p)
    p.add_argument("--stride", type=int, default=8, help="run inference every K frames (default 8)")
    p.add_argument("--show", action="store_true", help="show the annotated video in a window (q/Esc quits)")
    p.add_argument("--save", help="write the annotated video here (.mp4 or .avi; atomic)")
    p.add_argument("--jsonl", help="write one JSON line per clip here")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.add_argument("--topk", type=int, default=5, help="labels shown and logged per clip (default 5)")
    p.add_argument("--fast", action="store_true",
                   help="video files: decode as fast as possible and infer every strided clip (no drops) "
                        "instead of playing at the file's fps")
    p.add_argument("--retries", type=int, default=5, help="reconnect attempts for cameras/streams (default 5)")
    p.add_argument("--print", dest="print_clips", action="store_true",
                   help="print one line per clip (top-1, B', latency)")
    p.add_argument("--force", action="store_true", help="overwrite --save/--jsonl outputs")


# -- the run loop (usable without the CLI: tests, soak, embedding) -----------------------------
@dataclass
class RunOptions:
    stride: int = 8
    topk: int = 5
    duration: float | None = None
    max_clips: int | None = None  # stop after this many processed clips (soak tests)
    lossless: bool = False  # offline file mode: run every strided clip, in step with the frames


@dataclass
class RunSummary:
    clips: int = 0
    frames: int = 0
    dropped_clips: int = 0
    dropped_frames: int = 0
    reconnects: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    bprime_hist: list[dict[int, int]] = field(default_factory=list)  # per SGS layer: B' -> clips
    end_reason: str = ""
    wall_s: float = 0.0
    padded_clips: int = 0

    @property
    def mean_latency_ms(self) -> float:
        return float(np.mean(self.latencies_ms)) if self.latencies_ms else 0.0

    @property
    def p95_latency_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"clips": self.clips, "frames": self.frames, "dropped_clips": self.dropped_clips,
                "dropped_frames": self.dropped_frames, "reconnects": self.reconnects,
                "mean_latency_ms": self.mean_latency_ms, "p95_latency_ms": self.p95_latency_ms,
                "bprime_hist": [{str(k): v for k, v in sorted(h.items())} for h in self.bprime_hist],
                "end_reason": self.end_reason, "wall_s": self.wall_s, "padded_clips": self.padded_clips}

    def lines(self, layer_names: list[str] | None = None) -> list[str]:
        out = [f"summary: {self.clips} clip(s) from {self.frames} frame(s) in {self.wall_s:.2f} s "
               f"(ended: {self.end_reason})",
               f"  latency: mean {self.mean_latency_ms:.1f} ms, p95 {self.p95_latency_ms:.1f} ms",
               f"  dropped: {self.dropped_clips} clip(s) (inference slower than real time), "
               f"{self.dropped_frames} frame(s) (capture buffer full)"]
        if self.reconnects:
            out.append(f"  reconnects: {self.reconnects}")
        if self.padded_clips:
            out.append(f"  {self.padded_clips} clip(s) padded by repeating the last frame (source shorter than a clip)")
        for i, h in enumerate(self.bprime_hist):
            name = layer_names[i] if layer_names and i < len(layer_names) else f"layer {i}"
            hist = " ".join(f"{k}:{v}" for k, v in sorted(h.items())) or "-"
            out.append(f"  B' histogram ({name}): {hist}")
        return out


@dataclass
class _Job:
    seq: int  # submission number
    frame_index: int
    timestamp: float
    images: list[np.ndarray]
    padded: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class _Slot:
    """A queue of one: put() replaces an unprocessed job (returns True = one dropped) or, when
    ``block``, waits until the worker took it."""

    def __init__(self, block: bool):
        self.block = block
        self._job: _Job | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, job: _Job, abort: threading.Event) -> bool:
        with self._cond:
            if self.block:
                while self._job is not None and not abort.is_set():
                    self._cond.wait(0.05)
            dropped = self._job is not None
            self._job = job
            self._cond.notify_all()
            return dropped

    def get(self) -> _Job | None:
        with self._cond:
            while self._job is None and not self._closed:
                self._cond.wait(0.1)
            job, self._job = self._job, None
            self._cond.notify_all()
            return job

    def close(self, discard: bool) -> None:
        with self._cond:
            self._closed = True
            if discard:
                self._job = None
            self._cond.notify_all()


class StreamRunner:
    """Runs a ``Pipeline`` over a ``FrameStream``; see the module docstring for the threading."""

    def __init__(self, pipeline: Any, stream: Any, options: RunOptions, events: TextIO | None = None,
                 on_frame: Callable[[np.ndarray], bool] | None = None, status: TextIO | None = None):
        from atfr.runtime.preprocess import Preprocessor
        from atfr.runtime.sampling import stream_window

        if options.stride < 1:
            raise ATFRError("--stride must be >= 1")
        if options.topk < 1:
            raise ATFRError("--topk must be >= 1")
        self.pipeline = pipeline
        self.m = pipeline.manifest
        self.stream = stream
        self.opt = options
        self.events = events
        self.on_frame = on_frame  # gets the annotated BGR frame; returns False to stop (window closed)
        self.status = status
        self.pre = Preprocessor(self.m.input)
        self.window = stream_window(self.m.input, stream.fps)
        self.summary = RunSummary(bprime_hist=[{} for _ in self.m.sgs])
        self._lock = threading.Lock()
        self._latest: tuple[list[tuple[str, float]], tuple[int, ...], float] | None = None
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._clips_done = threading.Event()

    # -- worker ---------------------------------------------------------------------------------
    def _work(self, slot: _Slot) -> None:
        from atfr.runtime.sampling import stream_indices

        while True:
            if self._clips_done.is_set():
                return  # --max-clips reached: a clip queued meanwhile is not processed (exactly N)
            job = slot.get()
            if job is None:
                return
            try:
                t0 = time.perf_counter()
                idx = stream_indices(self.m.input, self.stream.fps, len(job.images))
                clip = self.pre([job.images[i] for i in idx], 1)  # no full-resolution stack
                inputs = [x[None] for x in self.pre.pack(clip)]
                t1 = time.perf_counter()
                res = self.pipeline.infer(inputs)[0]
                t2 = time.perf_counter()
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises
                self._error = e
                self._abort.set()
                job.done.set()
                return
            self._record(job, res, (t2 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
            job.done.set()
            if self.opt.max_clips and self.summary.clips >= self.opt.max_clips:
                self._clips_done.set()

    def _record(self, job: _Job, res: Any, latency: float, pre_ms: float, infer_ms: float) -> None:
        top = res.top(self.opt.topk)
        topk = [(self.m.label(i), float(res.probs[i])) for i in top]
        with self._lock:
            s = self.summary
            clip_no = s.clips
            s.clips += 1
            s.latencies_ms.append(latency)
            s.padded_clips += int(job.padded)
            for i, b in enumerate(res.bprime):
                if i < len(s.bprime_hist):
                    s.bprime_hist[i][int(b)] = s.bprime_hist[i].get(int(b), 0) + 1
            self._latest = (topk, tuple(int(b) for b in res.bprime), latency)
        if self.status is not None:  # one human line per clip (atfr demo, atfr run --print)
            self.status.write(f"  clip {clip_no:3d} @frame {job.frame_index:5d}: {topk[0][0]} ({topk[0][1]:.2f})  "
                              f"B'={list(int(b) for b in res.bprime)}  {latency:.1f} ms\n")
            self.status.flush()
        if self.events is not None:
            ev = {"clip": clip_no, "frame": job.frame_index, "timestamp": round(job.timestamp, 4),
                  "topk": [{"index": i, "label": lab, "prob": p} for i, (lab, p) in zip(top, topk)],
                  "bprime": [int(b) for b in res.bprime], "latency_ms": latency,
                  "preprocess_ms": pre_ms, "infer_ms": infer_ms}
            if job.padded:
                ev["padded"] = True
            self.events.write(json.dumps(ev) + "\n")
            self.events.flush()

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        from atfr.runtime.overlay import draw_lines, overlay_lines

        slot = _Slot(block=self.opt.lossless)
        worker = threading.Thread(target=self._work, args=(slot,), name="atfr-infer", daemon=True)
        window: collections.deque = collections.deque(maxlen=self.window)
        bins = [layer.bins for layer in self.m.sgs]
        t_start = time.monotonic()
        since_clip = 0
        submitted = 0
        last_t: float | None = None
        fps_ema: float | None = None
        reason = ""
        discard = True
        self.stream.start()
        worker.start()
        try:
            while True:
                if self._abort.is_set():
                    reason = "error"
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
                        discard = False  # finish the pending clip of a finished source
                        break
                    continue
                self.summary.frames += 1
                window.append(frame)
                since_clip += 1
                if len(window) == self.window and (submitted == 0 or since_clip >= self.opt.stride):
                    since_clip = 0
                    job = self._job(submitted, window, False)
                    if slot.put(job, self._abort):
                        with self._lock:
                            self.summary.dropped_clips += 1
                    submitted += 1
                    if self.opt.lossless:
                        # Offline mode: every frame shows the result of the newest clip ending at
                        # or before it, so the saved video does not depend on machine speed.
                        while (not job.done.wait(0.05) and not self._abort.is_set()
                               and not self._clips_done.is_set()):
                            pass
                now = time.monotonic()
                if last_t is not None and now > last_t:
                    inst = 1.0 / (now - last_t)
                    fps_ema = inst if fps_ema is None else 0.9 * fps_ema + 0.1 * inst
                last_t = now
                if self.on_frame is not None:
                    import cv2

                    with self._lock:
                        latest = self._latest
                    bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
                    if latest is not None:
                        draw_lines(bgr, overlay_lines(latest[0], latest[1], latest[2], fps_ema, bins))
                    else:
                        draw_lines(bgr, [f"buffering {len(window)}/{self.window}" if len(window) < self.window
                                         else "first clip running"])
                    if self.on_frame(bgr) is False:
                        reason = "closed"
                        break
            if submitted == 0 and window and reason not in ("error",):
                # Shorter than one clip: one clip padded with the last frame (official clamp).
                slot.put(self._job(0, window, True), self._abort)
                submitted = 1
                discard = False
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            slot.close(discard=discard)
            worker.join()
            self.stream.stop()
        if self._error is not None:
            raise self._error
        if reason.startswith("error: "):
            raise SourceError(f"{getattr(self.stream.reader, 'name', 'source')}: capture failed ({reason[7:]})")
        if self.summary.frames == 0 and reason not in ("interrupted", "duration"):
            raise SourceError(f"{getattr(self.stream.reader, 'name', 'source')}: no frames received")
        s = self.summary
        s.end_reason = reason
        s.wall_s = time.monotonic() - t_start
        s.dropped_frames = self.stream.stats.frames_dropped
        s.reconnects = self.stream.stats.reconnects
        return s

    def _job(self, seq: int, window: collections.deque, padded: bool) -> _Job:
        last = window[-1]
        return _Job(seq, last.index, last.timestamp, [f.image for f in window], padded)


# -- CLI ---------------------------------------------------------------------------------------
def _display(stop_keys: tuple[int, ...] = (27, ord("q"))) -> Callable[[np.ndarray], bool]:
    import cv2

    try:
        cv2.namedWindow("atfr run", cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ATFRError("--show needs OpenCV with GUI support and a display (opencv-python-headless has "
                        "none); use --save instead") from None

    def show(bgr: np.ndarray) -> bool:
        cv2.imshow("atfr run", bgr)
        return (cv2.waitKey(1) & 0xFF) not in stop_keys

    return show


def run(args: argparse.Namespace) -> int:
    import contextlib

    from atfr.fileio import check_writable
    from atfr.runtime.overlay import VIDEO_EXTS, AtomicVideoWriter
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.video import FrameStream, open_reader

    if args.stride < 1:
        raise ATFRError("--stride must be >= 1")
    if args.topk < 1:
        raise ATFRError("--topk must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise ATFRError("--duration must be > 0")
    if args.retries < 0:
        raise ATFRError("--retries must be >= 0")
    if args.save:
        check_writable(args.save, args.force)
        if Path(args.save).suffix.lower() not in VIDEO_EXTS:
            raise ATFRError(f"{args.save}: unsupported video extension {Path(args.save).suffix or '(none)'} "
                            f"(use one of {', '.join(VIDEO_EXTS)})")
    if args.jsonl:
        check_writable(args.jsonl, args.force)
    pipeline = Pipeline.load(args.outdir, args.backend, providers=args.providers)
    m = pipeline.manifest
    saved = None
    with contextlib.ExitStack() as stack:
        reader = open_reader(args.source, fallback_fps=m.input.target_fps)
        stack.callback(reader.close)  # FrameStream.stop closes it too; closing twice is harmless
        if not reader.fps_reported:
            print(f"atfr run: {reader.name} reports no usable fps; assuming {reader.fps:g}", file=sys.stderr)
        offline = args.fast and not reader.live
        stream = FrameStream(reader, pace=not args.fast, lossless=offline, max_retries=args.retries)
        show = _display() if args.show else None
        if show is not None:
            import cv2

            stack.callback(cv2.destroyAllWindows)
        writer = stack.enter_context(AtomicVideoWriter(args.save, reader.fps)) if args.save else None
        events = None
        if args.jsonl:
            Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
            events = stack.enter_context(open(args.jsonl, "w", encoding="utf-8"))

        def on_frame(bgr: np.ndarray) -> bool:
            if writer is not None:
                writer.write(bgr)
            return show(bgr) if show is not None else True

        opts = RunOptions(stride=args.stride, topk=args.topk, duration=args.duration, lossless=offline)
        print(f"atfr run: {m.name} ({pipeline.backend}) on {reader.name} at {reader.fps:g} fps; "
              f"clip = {m.input.num_frames} frames every {args.stride} frame(s)", file=sys.stderr)
        runner = StreamRunner(pipeline, stream, opts, events, on_frame if (writer or show) else None,
                              status=sys.stdout if args.print_clips else None)
        summary = runner.run()
        if writer is not None:
            saved = writer.close()  # the rename; on an exception the context aborts (temp removed)
    for line in summary.lines([f"{s.spec.name}, p{s.pathway}" for s in m.sgs]):
        print(line)
    if saved is not None:
        print(f"  annotated video: {saved}")
    if args.jsonl:
        print(f"  events: {args.jsonl}")
    return 0
