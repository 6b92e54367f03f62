"""atfr run OUTDIR --source SRC: streaming inference on a camera, stream, pipeline or video file.

The loop itself (threads, drops, the one failure path) is ``atfr.runtime.streaming.runner``; this command
parses arguments, opens the source and outputs, and prints. An AdaFuse-TSN export runs through the
same loop, each frame through its online graph once (``atfr.runtime.adafuse_stream``). Torch-free: runs on a Jetson with only
the runtime installed.

How a run ends (one line on stderr says which) and the exit code:

* 0: end of file; --duration; SIGINT, SIGTERM or SIGHUP (summary printed, the video finalized,
  the jsonl complete, no temp file left); the window closed; stdout closed (``--print | head``:
  quiet, nothing more is printed); a truncated file (a ``warning:`` line says how many of the
  frames its container reports were decoded).
* 5: the source was lost: a live source stopped delivering frames (no frame for --stall-timeout
  seconds counts too) and the --retries budget of reconnect attempts for the whole run is spent;
  or it failed to open or decode. The summary is printed and the outputs kept first.
* 2: an output cannot be written (disk full, read-only), or bad arguments; 1: an internal error.
  In every failure the outputs written so far are finalized and kept (an mp4 with the frames up to
  the failure, the jsonl with every clip recorded, never half a line); nothing empty is left
  behind. A video that cannot be finalized (the disk filled up under it) is not put in place, and
  the error line says whether the video was kept (``runtime.video.video_out``).
* 5 also: a source that sends no frame within --stall-timeout of opening (a named pipe with no
  writer, a silent device).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.runtime.budget import add_bins_argument, add_budget_argument
from atfr.runtime.ort_providers import add_providers_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="export folder (atfr export)")
    p.add_argument("--source", required=True,
                   help="camera index, /dev/videoN, video file, rtsp/http URL, or GStreamer pipeline ending in appsink")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime"])
    add_providers_argument(p)
    add_bins_argument(p)
    add_budget_argument(p)
    p.add_argument("--stride", type=int, default=8,
                   help="run inference every K frames (default 8); AdaFuse: a result every K frames")
    p.add_argument("--online-graph", choices=["online", "online_gathered"], default="online",
                   help="AdaFuse exports: the per-frame graph (default online: dense masks, the faster one on "
                        "ONNX Runtime CPU; online_gathered computes only the channels the policy needs)")
    p.add_argument("--show", action="store_true", help="show the annotated video in a window (q/Esc quits)")
    p.add_argument("--save", help="write the annotated video here (.mp4 or .avi; atomic)")
    p.add_argument("--jsonl", help="write one JSON line per clip here (flushed per clip)")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.add_argument("--topk", type=int, default=5, help="labels shown and logged per clip (default 5)")
    p.add_argument("--fast", action="store_true",
                   help="video files: decode as fast as possible and infer every strided clip (no drops) "
                        "instead of playing at the file's fps")
    p.add_argument("--retries", type=int, default=5,
                   help="reconnect attempts for cameras/streams in the whole run, not per loss (default 5)")
    p.add_argument("--stall-timeout", type=float, default=10.0,
                   help="seconds without a frame after which a stream counts as lost and is reconnected "
                        "(counted against --retries); also bounds opening a URL (default 10)")
    p.add_argument("--print", dest="print_clips", action="store_true",
                   help="print one line per clip (top-1, B', latency)")
    p.add_argument("--force", action="store_true", help="overwrite --save/--jsonl outputs")


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


def _log_source(source: str) -> None:
    """At -v: what --source resolves to (the exact GStreamer pipeline of a csi:// preset, the V4L2
    settings of a v4l2:// one), before anything is opened, so a camera that fails can be debugged."""
    from atfr.log import get_logger
    from atfr.runtime.video.camera import describe
    from atfr.runtime.video.sources import parse_source

    log = get_logger("run")
    for line in describe(parse_source(source)):
        log.debug(line)


def run(args: argparse.Namespace) -> int:
    from atfr.fileio import check_writable
    from atfr.runtime.video.overlay import VIDEO_EXTS, AtomicVideoWriter
    from atfr.runtime.streaming.runner import EventLog, RunOptions, StopFlag, StreamRunner, stop_on_signals
    from atfr.runtime.video.sources import FrameStream, open_reader
    from atfr.runtime.video.video_out import VideoWriteError

    RunOptions(stride=args.stride, topk=args.topk).check()  # before minutes of model loading
    if args.duration is not None and args.duration <= 0:
        raise ATFRError("--duration must be > 0")
    if args.retries < 0:
        raise ATFRError("--retries must be >= 0")
    if not args.stall_timeout > 0:
        raise ATFRError("--stall-timeout must be > 0")
    if args.latency_budget is not None and not args.latency_budget > 0:
        raise ATFRError(f"--latency-budget {args.latency_budget:g}: must be > 0 ms")
    if args.save:
        check_writable(args.save, args.force)
        if Path(args.save).suffix.lower() not in VIDEO_EXTS:
            raise ATFRError(f"{args.save}: unsupported video extension {Path(args.save).suffix or '(none)'} "
                            f"(use one of {', '.join(VIDEO_EXTS)})")
    if args.jsonl:
        check_writable(args.jsonl, args.force)
    _log_source(args.source)
    stop = StopFlag()
    with stop_on_signals(stop):  # SIGTERM/SIGHUP during loading also end in a clean stop
        pipeline = _load_model(args)
        m = pipeline.manifest
        adafuse = m.raw.get("family") == "adafuse"
        reader = open_reader(args.source, fallback_fps=m.input.target_fps, timeout_s=args.stall_timeout)
        stream = None
        try:
            if not reader.fps_reported:
                print(f"atfr run: {reader.name} reports no usable fps; assuming {reader.fps:g}", file=sys.stderr)
            offline = args.fast and not reader.live
            stream = FrameStream(reader, pace=not args.fast, lossless=offline, max_retries=args.retries,
                                 stall_timeout=args.stall_timeout)
            show = _display() if args.show else None
            writer = AtomicVideoWriter(args.save, reader.fps) if args.save else None
            events = EventLog(args.jsonl, args.force) if args.jsonl else None
            on_frame = _frame_sink(writer, show) if (writer or show) else None
            opts = RunOptions(stride=args.stride, topk=args.topk, duration=args.duration, lossless=offline,
                              latency_budget_ms=args.latency_budget)
            what = (f"{pipeline.runner.graph}.{'engine' if pipeline.runner.backend == 'tensorrt' else 'onnx'}, "
                    f"{pipeline.runner.backend}" if adafuse else pipeline.backend)
            each = ("window = the last {} frames (each through the online graph once), a result"
                    if adafuse else "clip = {} frames").format(m.input.num_frames)
            if adafuse and pipeline.delay:  # AdaFuse-TSM: the window ends this many frames back
                each = each.replace(", a result", f", {pipeline.delay} frames behind the newest (TSM), a result")
            print(f"atfr run: {m.name} ({what}) on {reader.name} at {reader.fps:g} fps; "
                  f"{each} every {args.stride} frame(s)", file=sys.stderr)
            runner = StreamRunner(pipeline, stream, opts, events, on_frame,
                                  status=sys.stdout if args.print_clips else None, stop=stop)
            error: BaseException | None = None
            try:
                runner.run()
            except BaseException as e:  # noqa: BLE001 - outputs are closed first, then it is raised
                error = e
            saved, logged, close_error = _close_outputs(writer, events, show is not None)
            if isinstance(error, VideoWriteError) and writer is not None:
                # the run stopped on the video: say whether what was written is kept
                error = VideoWriteError(f"{error}; {writer.outcome}")
            elif isinstance(error, ATFRError) and isinstance(close_error, VideoWriteError):
                # another output failed first (the jsonl on a full disk) and the video could not be
                # finalized either: the one line says so too (the summary lists only what is kept)
                error = ATFRError(f"{error}; {writer.path}: {writer.outcome}", error.exit_code)
        finally:
            if stream is None or not stream.hung:  # never close a reader under a blocked read
                reader.close()  # FrameStream.stop closed it already; closing twice is harmless
    summary = runner.summary
    error = error or close_error
    if summary.end_reason == "output-closed":
        _silence_stdout()
        if error is None:
            return 0
    if summary.frames or error is None:
        try:
            for line in summary.lines([f"{s.spec.name}, p{s.pathway}" for s in m.sgs]):
                print(line)
            if saved is not None:
                print(f"  annotated video: {saved}")
            if logged is not None:
                print(f"  events: {logged}")
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
    if error is not None:
        raise error
    if summary.source_lost:
        raise SourceError(f"{reader.name}: {summary.stop_line()}")
    if summary.end_reason == "truncated":
        print(f"atfr run: warning: {reader.name}: {summary.stop_line()}", file=sys.stderr)
    else:
        print(f"atfr run: stopped: {summary.stop_line()}", file=sys.stderr)
    return 0


def _load_model(args: argparse.Namespace):
    """ATFR: the split ``Pipeline``; AdaFuse: the online graph, frame by frame (``AdaFuseStream``)."""
    from atfr.runtime.adafuse_clip import is_adafuse_export
    from atfr.runtime.pipeline import Pipeline

    if not is_adafuse_export(args.outdir):
        return Pipeline.load(args.outdir, args.backend, providers=args.providers, bins=args.bins)
    from atfr.runtime.adafuse_stream import AdaFuseStream

    for flag, value in (("--bins", args.bins), ("--latency-budget", args.latency_budget)):
        if value is not None:
            raise ATFRError(f"{flag}: {args.outdir} is an AdaFuse export (no SGS layer, no bins to choose)")
    return AdaFuseStream.load(args.outdir, args.backend, args.providers, graph=args.online_graph)


def _frame_sink(writer, show) -> Callable[[np.ndarray], bool]:
    from atfr.runtime.video.video_out import VideoWriteError

    def on_frame(bgr: np.ndarray) -> bool:
        if writer is not None:
            try:
                writer.write(bgr)
            except ATFRError:
                raise
            except Exception as e:  # noqa: BLE001 - cv2.error, OSError: one line naming the file
                raise VideoWriteError(f"{writer.path}: cannot write video ({type(e).__name__}: {e})") from None
        return show(bgr) if show is not None else True

    return on_frame


def _close_outputs(writer, events, shown: bool):
    """Finalize every output, whatever happened: the video renamed from its temp file (removed if
    that fails, the container it finalized does not hold the frames written, or no frame was
    written), the jsonl flushed and closed. Returns (video path, jsonl path, the first error)."""
    saved = logged = None
    error: BaseException | None = None
    if events is not None:
        try:
            logged = events.close()
        except BaseException as e:  # noqa: BLE001
            error = e
    if writer is not None:
        try:
            saved = writer.close()
        except ATFRError as e:  # the finalized video does not hold its frames: removed, one line
            error = error or e
        except BaseException as e:  # noqa: BLE001
            writer.abort()
            error = error or ATFRError(f"{writer.path}: cannot finish the video ({type(e).__name__}: {e}); not kept")
    if shown:
        import cv2

        cv2.destroyAllWindows()
    return saved, logged, error


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
