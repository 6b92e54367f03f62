"""Frame sources for streaming inference: cameras, files, URLs, GStreamer pipelines. Torch-free.

* ``open_reader(src)`` opens a source (SourceError one-liners when it cannot) and returns a
  ``FrameReader``: ``read()`` gives RGB uint8 [H,W,3] or None (EOF / lost), ``reopen()`` retries.
* ``FrameStream`` runs a reader on its own thread into a bounded ring buffer
  (``collections.deque(maxlen)``): a slow consumer never blocks a live capture, the oldest
  frames are dropped and counted instead. Live sources (cameras, streams) reconnect with
  exponential backoff within a *total* budget of attempts for the whole run, and a source that
  delivers no frame for ``stall_timeout`` seconds counts as lost (reconnect, counted), so an
  unattended run ends by itself when the source is gone. Files (and finite files served over
  http) end at EOF; one that ends before the frame count its container reports ends as
  ``truncated``, not ``eof``.
* ``SimulatedSource`` is a reader that produces frames at a set fps, then disconnects: tests
  and soak runs use it in place of a camera.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.runtime.video.capture import CaptureLoop, Frame, ReaderWatch, Reconnector, StreamStats, buffer_full, falls_short

# Reported fps outside this range is treated as "unknown" (cameras report 0, some RTSP servers
# report the 90 kHz clock rate).
_FPS_RANGE = (1.0, 240.0)
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
# What a folder of videos is searched for (predict, calibrate, bench --videos).
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # camera | file | url | gstreamer
    target: str | int
    label: str
    props: tuple = ()  # camera: (cv2.CAP_PROP_* name, value) set after opening (runtime.video.camera presets)


def parse_source(src: str | int) -> SourceSpec:
    """Classify a --source string. Digits or /dev/videoN = camera; '... ! appsink' = GStreamer;
    csi://N and v4l2:///dev/videoN presets (runtime.video.camera)."""
    if isinstance(src, int):
        return SourceSpec("camera", src, f"camera {src}")
    s = str(src).strip()
    if not s:
        raise SourceError("empty --source")
    from atfr.runtime.video.camera import parse_camera  # noqa: PLC0415

    if (preset := parse_camera(s)) is not None:
        return SourceSpec(*preset)
    if s.isdigit():
        return SourceSpec("camera", int(s), f"camera {s}")
    if re.fullmatch(r"/dev/video\d+", s):
        return SourceSpec("camera", s, s)
    if "!" in s and re.search(r"\bappsink\b[^!]*$", s):
        return SourceSpec("gstreamer", s, "GStreamer pipeline")
    if s.lower().startswith(URL_SCHEMES):
        return SourceSpec("url", s, _redact(s))
    return SourceSpec("file", s, s)


def _redact(url: str) -> str:
    """Hide credentials in rtsp://user:pass@host URLs before printing them."""
    return re.sub(r"//[^/@]*@", "//***@", url)


class FrameReader(Protocol):
    name: str
    live: bool  # True: camera/stream (pace given by the device, reconnect on loss); False: file
    fps: float
    fps_reported: bool  # False: fps is the fallback value
    # Optional: frame_count_hint (int | None), the container's frame count (truncation check).

    def read(self) -> np.ndarray | None: ...

    def reopen(self) -> bool: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV prints multi-line WARN logs for unopenable devices; errors here are ours to word.

    FFmpeg's own messages ("[tcp @ 0x..] Connection refused") are set once, when OpenCV first
    initialises FFmpeg, from OPENCV_FFMPEG_LOGLEVEL: default it to quiet (-8) unless the user set
    it (e.g. OPENCV_FFMPEG_LOGLEVEL=32 to debug a stream).
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    old = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(old)


def _valid_fps(v: float) -> bool:
    return math.isfinite(v) and _FPS_RANGE[0] <= v <= _FPS_RANGE[1]


class CvReader:
    """cv2.VideoCapture over one source; frames come out RGB."""

    def __init__(self, spec: SourceSpec, fallback_fps: float = 30.0, timeout_ms: int = 10000):
        import cv2

        self._cv2 = cv2
        self.timeout_ms = int(timeout_ms)
        self.spec = spec
        self.name = spec.label
        self.live = spec.kind != "file"
        self._pending: np.ndarray | None = None
        self._cap = self._open()
        if self._cap is None:
            raise SourceError(self._open_error())
        if spec.kind == "file":
            # A container that opens but whose codec cannot decode shows up only at the first read.
            first = self._read_raw()
            if first is None:
                self._cap.release()
                raise SourceError(f"{spec.label}: cannot decode any frame (unsupported codec, corrupt or empty video)")
            self._pending = first
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps_reported = _valid_fps(fps)
        self.fps = fps if self.fps_reported else float(fallback_fps)
        count = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0) if spec.kind in ("file", "url") else 0.0
        # Live streams report no count (or INT64_MIN); a positive one means a finite file, also
        # over http (an .avi/.mp4 on a web server): it ends at EOF and is never replayed.
        self.frame_count_hint = int(count) if math.isfinite(count) and 0 < count < 1e9 else None
        if spec.kind == "url" and self.frame_count_hint is not None:
            self.live = False

    def _open(self):  # -> cv2.VideoCapture | None
        cv2 = self._cv2
        k, t = self.spec.kind, self.spec.target
        if k == "file":
            p = Path(str(t))
            if not p.exists():
                raise SourceError(f"{t}: no such file")
            if p.is_dir():
                raise SourceError(f"{t}: is a directory, not a video")
        if k == "gstreamer" and "GStreamer:                   YES" not in cv2.getBuildInformation():
            raise SourceError("this OpenCV build has no GStreamer support (install OpenCV built with "
                              "GStreamer, e.g. the JetPack python3-opencv)")
        with _quiet_opencv():
            if k == "camera":
                from atfr.runtime.video.camera import open_camera  # noqa: PLC0415

                cap = open_camera(cv2, self.spec)  # V4L2 presets: CAP_V4L2 + FOURCC/size/fps
            elif k == "gstreamer":
                cap = cv2.VideoCapture(str(t), cv2.CAP_GSTREAMER)
            elif k == "url" and hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
                # Bounded open/read so an unreachable stream fails (or reconnects) in seconds, not 30 s.
                cap = cv2.VideoCapture(str(t), cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms,
                                                                cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms])
            else:
                cap = cv2.VideoCapture(str(t), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _open_error(self) -> str:
        k, label = self.spec.kind, self.spec.label
        if k == "camera":
            return f"cannot open {label} (no such device, busy, or no permission)"
        if k == "file":
            if not os.access(label, os.R_OK):
                return f"{label}: permission denied"
            return f"{label}: cannot open video (not a video, unsupported container, or corrupt)"
        if k == "url":
            return f"cannot open stream {label} (unreachable, wrong URL or unsupported protocol)"
        return "cannot open the GStreamer pipeline (check that it ends in appsink and its elements exist)"

    def _read_raw(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            return self._cv2.cvtColor(frame, self._cv2.COLOR_GRAY2RGB)
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            f, self._pending = self._pending, None
            return f
        if self._cap is None:
            return None
        return self._read_raw()

    def reopen(self) -> bool:
        if not self.live:
            return False
        if self._cap is not None:
            self._cap.release()
        try:
            self._cap = self._open()
        except SourceError:
            self._cap = None
        return self._cap is not None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class SimulatedSource:
    """A fake camera: ``num_frames`` frames of HxW at ``fps`` (paced in ``read``), then it disconnects.

    ``reconnects`` successful reopen()s are allowed after a disconnect (each gives another
    ``num_frames`` frames), so reconnect logic can be tested without hardware. Frames are a moving
    gradient so consecutive clips differ (SGS B' is content-dependent).
    """

    def __init__(self, num_frames: int = 300, fps: float = 30.0, size: tuple[int, int] = (120, 160),
                 reconnects: int = 0, pace: bool = True, seed: int = 0):
        if fps <= 0:
            raise ATFRError("SimulatedSource fps must be > 0")
        self.name = f"simulated {size[1]}x{size[0]}@{fps:g}"
        self.live = True
        self.fps = float(fps)
        self.fps_reported = True
        self.num_frames = int(num_frames)
        self.pace = pace
        self._reconnects_left = int(reconnects)
        h, w = size
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                         rng.integers(0, 256, (h, w))], -1)
        self._base = base.astype(np.uint8)
        self._i = 0
        self._t0: float | None = None
        self.opened = True

    def read(self) -> np.ndarray | None:
        if not self.opened or self._i >= self.num_frames:
            self.opened = False
            return None
        if self.pace:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            due = self._t0 + self._i / self.fps
            if due > now:
                time.sleep(due - now)
        # Shift by a varying amount so the motion (and the frame-to-frame distance) varies.
        shift = (self._i * 3 + (self._i // 7) ** 2) % self._base.shape[1]
        self._i += 1
        return np.roll(self._base, shift, axis=1)

    def reopen(self) -> bool:
        if self._reconnects_left <= 0:
            return False
        self._reconnects_left -= 1
        self._i = 0
        self._t0 = None
        self.opened = True
        return True

    def close(self) -> None:
        self.opened = False


def open_reader(src: str | int | FrameReader, fallback_fps: float = 30.0,
                timeout_s: float = 10.0) -> FrameReader:
    """A reader for ``src`` (camera index, /dev/videoN, file, URL, GStreamer string, or a reader).

    ``timeout_s`` (--stall-timeout) bounds opening any source, up to its first frame for a file:
    a named pipe with no writer blocks in open(), one whose writer sends nothing or a device that
    never answers blocks in the first read, and each ends here as a ``SourceError`` (exit 5)
    instead of a hang. Pipes and devices get exactly ``timeout_s``; other sources a few seconds'
    grace (FFmpeg's own open timeout on a URL names its failure better; a camera or a regular file
    may take that long to start or to decode a first frame). It also bounds each read from a URL."""
    if not isinstance(src, (str, int)):
        return src
    spec = parse_source(src)
    limit = timeout_s + (0.0 if _pipe_or_device(spec) else _OPEN_GRACE_S)
    return _open_within(lambda: CvReader(spec, fallback_fps, timeout_ms=int(round(timeout_s * 1000))), limit,
                        f"{spec.label}: no frame within {timeout_s:g} s of opening it (--stall-timeout): "
                        "a pipe with no writer, or a device or stream that sends nothing")


_OPEN_GRACE_S = 5.0  # as FrameStream's hang_grace_s: a reader call this far past its timeout is hung


def _pipe_or_device(spec: SourceSpec) -> bool:
    """A --source path that is a named pipe or a device file (not a camera preset): opening it
    waits for a writer or the device, not for decoding."""
    if spec.kind != "file":
        return False
    try:
        mode = os.stat(str(spec.target)).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _open_within(make: Callable[[], "CvReader"], limit: float, message: str) -> "CvReader":
    """``make()`` on a helper thread, waited for at most ``limit`` seconds. An open that is still
    blocked then (open() of a FIFO, a read inside FFmpeg's probe) cannot be interrupted: its thread
    is left behind as a daemon, and closes the reader itself should it ever return."""
    box: dict = {}
    lock = threading.Lock()

    def target() -> None:
        try:
            r = make()
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            with lock:
                box["error"] = e
            return
        with lock:
            if box.get("abandoned"):
                r.close()
            else:
                box["reader"] = r

    t = threading.Thread(target=target, name="atfr-open", daemon=True)
    t.start()
    t.join(limit)
    with lock:
        if "reader" in box:
            return box["reader"]
        if "error" in box:
            raise box["error"]
        box["abandoned"] = True
    raise SourceError(message)


class FrameStream:
    """Capture thread + bounded ring buffer over a ``FrameReader``.

    pace: hold file frames to the file's fps (a file then behaves like a camera).
    lossless: the capture waits when the buffer is full instead of dropping (offline use of a
    file: every frame reaches the consumer). Live sources should never be lossless.
    max_retries: reconnect attempts for the *whole run* (not per loss): a source that keeps
    opening and failing cannot loop forever.
    stall_timeout: seconds without a frame after which a live source counts as lost (a read that
    blocked that long is a stall: reconnect, counted). Readers with their own timeout (``CvReader``
    on URLs, set to the same value) return by then; a reader hung inside a native call for
    ``stall_timeout + hang_grace_s`` ends the stream as ``stalled`` from the consumer side (the
    thread is left behind as a daemon: closing a reader under a blocked read is unsafe).

    max_bytes: the buffer holds no more than this (at least one frame): 7 frames at 4K.
    Parts (``runtime.video.capture``): ``CaptureLoop`` reads, ``ReaderWatch`` times each reader call,
    ``Reconnector`` spends the reconnect budget; this class owns the buffer and the thread.
    """

    def __init__(self, reader: FrameReader, buffer: int = 64, pace: bool = False, lossless: bool = False,
                 max_retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 stall_timeout: float | None = 10.0, hang_grace_s: float = 5.0, max_bytes: int = 192 << 20):
        self.reader = reader
        self.max_bytes = max_bytes
        self.pace = pace and not reader.live
        self.lossless = lossless
        self.stall_timeout = stall_timeout if stall_timeout and stall_timeout > 0 else None
        self.stats = StreamStats(expected_frames=getattr(reader, "frame_count_hint", None) if not reader.live else None)
        self._reconnector = Reconnector(max_retries, backoff_s, max_backoff_s, self.stats)
        self.max_retries = self._reconnector.max_retries
        self._watch = ReaderWatch(hang_grace_s)
        self._buf: collections.deque[Frame] = collections.deque(maxlen=max(1, buffer))
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self._hung = False
        self._thread: threading.Thread | None = None

    @property
    def fps(self) -> float:
        return self.reader.fps

    # -- producer -----------------------------------------------------------------------------
    def start(self) -> "FrameStream":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="atfr-capture", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        reason = "stopped"
        loop = CaptureLoop(self.reader, self.stats, self._watch, self._reconnector, self._stop, self.stall_timeout,
                           self.pace, self._push, lambda: self._hung)
        try:
            reason = loop.run()
        except Exception as e:  # noqa: BLE001 - reported to the consumer as the end reason
            reason = f"error: {type(e).__name__}: {e}"
            self.stats.end_detail = f"capture failed ({type(e).__name__}: {e})"
        finally:
            with self._cond:
                if not self._hung:  # else the consumer already ended the stream as stalled
                    self.stats.end_reason = reason
                self._done = True
                self._cond.notify_all()

    def _push(self, frame: Frame) -> None:
        with self._cond:
            while self.lossless and buffer_full(self._buf, frame, self.max_bytes) and not self._stop.is_set():
                self._cond.wait(0.1)
            while not self.lossless and buffer_full(self._buf, frame, self.max_bytes):  # live: drop the oldest
                self._buf.popleft()
                self.stats.frames_dropped += 1
            self._buf.append(frame)
            self.stats.frames_read += 1
            self._cond.notify_all()

    def _check_hung(self) -> None:
        """Consumer side (holding the lock): a reader call past its deadline ends the stream."""
        if not self._done and self._watch.overdue():
            self._hung = True
            self._done = True
            self.stats.stalls += 1
            self.stats.end_reason = "stalled"
            self.stats.end_detail = (f"the source blocked for more than {self.stall_timeout:g} s inside "
                                     f"{type(self.reader).__name__} (hung device or network)")

    # -- consumer -----------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest buffered frame; None when the stream has ended (or on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buf:
                self._check_hung()
                if self._done:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            f = self._buf.popleft()
            self._cond.notify_all()
            return f

    @property
    def hung(self) -> bool:
        """True when the consumer gave up on a reader blocked in a native call (see stall_timeout)."""
        return self._hung

    @property
    def ended(self) -> bool:
        with self._cond:
            self._check_hung()
            return self._done and not self._buf

    def frames(self) -> Iterator[Frame]:
        while True:
            f = self.get()
            if f is None:
                return
            yield f

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capturing and join the thread; idempotent. The reader is closed.

        A capture thread still blocked inside the reader after ``timeout`` (a stream waiting out
        its read timeout, a hung device) is left behind as a daemon and the reader is not closed
        under it (``hung`` becomes True): a stop by signal must not wait for the source."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(0.5 if self._hung else timeout)
            if self._thread.is_alive():
                if self._hung or self._watch.busy:
                    self._hung = True
                    if not self.stats.end_reason:
                        self.stats.end_reason = "stopped"
                    return
                raise ATFRError("the capture thread did not stop")
            self._thread = None
        self.reader.close()
        if not self.stats.end_reason:
            self.stats.end_reason = "stopped"

    def __enter__(self) -> "FrameStream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def video_info(path: str | os.PathLike) -> tuple[float, int | None]:
    """(fps, frame-count hint) of a video file; SourceError if it cannot be opened/decoded."""
    r = CvReader(parse_source(str(path)))
    try:
        return r.fps, r.frame_count_hint
    finally:
        r.close()


def read_frames(path: str | os.PathLike, fallback_fps: float = 30.0,
                max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a whole file (or its first ``max_frames`` frames): (RGB uint8 [N,H,W,3], fps).
    SourceError when it cannot be opened or decoded."""
    r = CvReader(parse_source(str(path)), fallback_fps)
    try:
        frames = []
        while (max_frames is None or len(frames) < max_frames) and (f := r.read()) is not None:
            frames.append(f)
        return np.stack(frames, 0), r.fps
    finally:
        r.close()


def video_entries(folder: str | os.PathLike) -> list[Path]:
    """Every entry below ``folder`` named like a video (``VIDEO_EXTS``), whatever it is (a dangling
    link, a folder, a pipe too: ``check_video_file`` says why it is not a video), sorted by path."""
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in VIDEO_EXTS)


def check_video_file(path: str | os.PathLike) -> None:
    """SourceError (one line, naming the path) unless ``path`` is a readable regular file. Never
    opens it: opening a named pipe with no writer would block."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise SourceError(f"{p}: a dangling symbolic link (its target does not exist)")
    if not p.exists():
        raise SourceError(f"{p}: no such file")
    if p.is_dir():
        raise SourceError(f"{p}: is a directory, not a video")
    if not p.is_file():
        what = "a named pipe (FIFO)" if stat.S_ISFIFO(p.stat().st_mode) else "a device or socket"
        raise SourceError(f"{p}: {what}, not a video file")
    if not os.access(p, os.R_OK):
        raise SourceError(f"{p}: permission denied")


def videos_in(folder: str | os.PathLike) -> list[Path]:
    """Video files (``VIDEO_EXTS``) anywhere below ``folder``, sorted by path."""
    return sorted(f for f in Path(folder).rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTS)


def videos_in_list(path: str | os.PathLike) -> list[Path]:
    """The videos a .txt list names: one a line, relative to the list's folder; blank lines and
    '#' comments skipped. A line may carry a label after the path ("path label" or "path,label",
    Kinetics CSV style): the first of the whole line, the part before the last comma and the first
    token that exists is taken, else the whole line (reported missing later). ATFRError when the
    file cannot be read as text."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ATFRError(f"{p} is not a readable text list ({e.__class__.__name__})") from None

    def resolve(s: str) -> Path:
        q = Path(s)
        return q if q.is_absolute() else p.parent / q

    vids = []
    for ln in lines:
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        cands = [resolve(c) for c in (ln, ln.rsplit(",", 1)[0].strip(), ln.split()[0]) if c]
        vids.append(next((c for c in cands if c.exists()), cands[0]))
    return vids


T = TypeVar("T")  # what a decode_clips caller makes of one clip


def _skip(r: CvReader) -> bool:
    """Advance ``r`` one frame without converting it (``grab``: the codec decodes, but no colour
    conversion or copy to Python). False at the end of the file."""
    if r._pending is not None:
        r._pending = None
        return True
    return r._cap is not None and bool(r._cap.grab())


def count_frames(path: str | os.PathLike, fallback_fps: float = 30.0) -> tuple[int, float]:
    """(true frame count, fps) by grabbing every frame once; nothing is kept."""
    r = CvReader(parse_source(str(path)), fallback_fps)
    try:
        n = 0
        while _skip(r):
            n += 1
        return n, r.fps
    finally:
        r.close()


def _stream_clips(path: str | os.PathLike, clips: Sequence[np.ndarray], make: Callable[[int, list[np.ndarray]], T],
                  fallback_fps: float) -> tuple[list[T | None], int, float]:
    """One decode pass: each clip's frames go to ``make(j, frames)`` as soon as its last frame is
    decoded, and a frame is dropped once every clip using it is made. Frames no clip wants are
    grabbed, not converted. Clips whose frames lie past the end stay None."""
    users: dict[int, int] = {}  # frame index -> clips that still need it
    for c in clips:
        for i in set(int(v) for v in c):
            users[i] = users.get(i, 0) + 1
    ends = [int(np.max(c)) if len(c) else -1 for c in clips]  # the frame that completes each clip
    by_end = sorted(range(len(clips)), key=ends.__getitem__)
    out: list[T | None] = [None] * len(clips)
    held: dict[int, np.ndarray] = {}
    nxt = 0
    r = CvReader(parse_source(str(path)), fallback_fps)
    try:
        fps = r.fps
        n = 0
        while True:
            if n in users:
                f = r.read()
                if f is None:
                    break
                held[n] = f
            elif not _skip(r):
                break
            while nxt < len(by_end) and ends[by_end[nxt]] <= n:
                j = by_end[nxt]
                out[j] = make(j, [held[int(i)] for i in clips[j]])
                for i in set(int(v) for v in clips[j]):
                    users[i] -= 1
                    if users[i] == 0:
                        held.pop(i, None)
                nxt += 1
            n += 1
    finally:
        r.close()
    return out, n, fps


def decode_clips(path: str | os.PathLike, plan: Callable[[int, float], Sequence[Sequence[int]]],
                 make: Callable[[int, list[np.ndarray]], T], fallback_fps: float = 30.0,
                 on_truncated: Callable[[int, int], None] | None = None) -> tuple[list[T], int, float]:
    """Decode a video once, front to back, keeping only the frames the clips need.

    ``plan(n_frames, fps)`` gives each clip's frame indices; ``make(j, frames)`` turns clip j's
    RGB frames into whatever the caller keeps (preprocessed inputs, a prediction) right after its
    last frame is decoded, so full-resolution frames never pile up: memory is bounded by the
    frames of the clips that overlap the decode position, not by the video's length.

    Returns ([make(j, ...) per clip], true frame count, fps). The container's frame count is only
    a hint (often off by a few frames): the plan is made from it, and when the decoded count
    differs and the plan for the true count is another one, the video is decoded again with that
    plan (``make`` then runs again for every clip). Without a hint, frames are counted first.

    Why not seek (CAP_PROP_POS_FRAMES): OpenCV's FFmpeg backend seeks by timestamp to a key frame
    and counts forward, which is not frame-exact for every codec and container; calibration and
    benchmarks must see exactly the frames ``predict`` sees. Skipped frames are only grabbed.
    SourceError when the file cannot be opened or decoded. ``on_truncated(decoded, reported)`` is
    called when decoding ends short of the container's frame count (a cut or corrupt file, as
    ``atfr run`` reports it), after the clips are made from the frames there are.
    """
    r = CvReader(parse_source(str(path)), fallback_fps)
    fps, hint = r.fps, r.frame_count_hint
    reported = hint  # the container's own count (None: counted below)
    r.close()
    del r  # its decoded first frame too
    if not hint:
        hint, fps = count_frames(path, fallback_fps)
        if hint == 0:
            raise SourceError(f"{path}: the video has no frames")

    def clips_for(n: int) -> list[np.ndarray]:
        return [np.asarray(c, dtype=np.int64).reshape(-1) for c in plan(n, fps)]

    clips = clips_for(hint)
    out, n, _ = _stream_clips(path, clips, make, fallback_fps)
    if n != hint:
        again = clips_for(n)
        if len(again) != len(clips) or any(not np.array_equal(a, b) for a, b in zip(again, clips)) \
                or any(o is None for o in out):
            out, n2, _ = _stream_clips(path, again, make, fallback_fps)
            if n2 != n or any(o is None for o in out):
                raise SourceError(f"{path}: the decoder gave {n} then {n2} frames (an unstable or truncated video)")
    if on_truncated is not None and reported and falls_short(n, reported):
        on_truncated(n, reported)
    return out, n, fps  # type: ignore[return-value]


def read_selected(path: str | os.PathLike, wanted: Callable[[int, float], Iterable[int]], fallback_fps: float = 30.0) -> tuple[dict[int, np.ndarray], int, float]:
    """Decode a file keeping only the frames ``wanted(n_frames, fps)`` selects (see
    :func:`decode_clips` for the frame-count handling). Returns ({index: RGB frame}, true frame
    count, fps). Prefer :func:`decode_clips` with a ``make`` that shrinks each clip at once."""
    last: list[list[int]] = []  # the plan decode_clips used last (it may replan for the true count)

    def plan(n: int, fps: float) -> list[list[int]]:
        last[:] = [sorted({int(i) for i in wanted(n, fps)})]
        return last

    (frames,), n, fps = decode_clips(path, plan, lambda j, fr: fr, fallback_fps)
    return dict(zip(last[0], frames)), n, fps
