"""`atfr run` and the frame sources: a generated video end to end with ONNX Runtime, drops,
reconnects, interrupts, and the one-line errors; streams that end (127.0.0.1 servers), the one
failure path (disk full, broken pipe, inference/decode/video failures), signals, truncated real
footage, and the pipelined loop. Anything that could hang runs bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from atfr.cli import main
from atfr.errors import SourceError
from atfr.runtime.streaming.runner import RunOptions, StreamRunner
from atfr.runtime.pipeline import Pipeline
from atfr.runtime.video.sources import FrameStream, SimulatedSource, open_reader, parse_source, read_frames

cv2 = pytest.importorskip("cv2")


def write_video(path: Path, n: int, size: tuple[int, int] = (48, 64), fps: float = 30.0, seed: int = 0) -> Path:
    """A moving bar over noise, MJPG in .avi (always available in OpenCV's FFmpeg)."""
    h, w = size
    rng = np.random.default_rng(seed)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert wr.isOpened()
    for i in range(n):
        f = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        x = (i * 3) % w
        f[:, x:x + 8] = (40, 200, 255)
        wr.write(f)
    wr.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("vid") / "clip.avi", 60)


@pytest.fixture(scope="module")
def pipeline(tiny_export) -> Pipeline:
    return Pipeline.load(tiny_export, "onnxruntime")


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _hist(events: list[dict], layers: int) -> list[dict[int, int]]:
    h: list[dict[int, int]] = [{} for _ in range(layers)]
    for e in events:
        for i, b in enumerate(e["bprime"]):
            h[i][b] = h[i].get(b, 0) + 1
    return h


# -- end to end via the CLI ---------------------------------------------------------------------
def test_run_file_writes_video_events_and_summary(tiny_export, video, tmp_path, capsys):
    out, ev = tmp_path / "annotated.mp4", tmp_path / "events.jsonl"
    rc = main(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime", "--stride", "4",
               "--save", str(out), "--jsonl", str(ev), "--fast", "--topk", "3"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    # the annotated video: every source frame, readable, and no temp file left beside it
    frames, _ = read_frames(out)
    assert len(frames) == 60 and frames.shape[1:3] == (48, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "events.jsonl"]
    events = _events(ev)
    # tiny model: 8 frames, sampling rate 1, 30 fps -> an 8-frame window: the first clip ends at
    # frame 7, then one every 4 frames: 7, 11, ..., 59; --fast never drops
    assert [e["frame"] for e in events] == list(range(7, 60, 4))
    assert [e["clip"] for e in events] == list(range(len(events)))
    assert all(len(e["topk"]) == 3 and len(e["bprime"]) == 1 for e in events)
    # the printed summary agrees with the events
    stdout = cap.out
    assert re.search(rf"summary: {len(events)} clip\(s\) from 60 frame\(s\)", stdout)
    mean = float(re.search(r"latency: mean ([\d.]+) ms", stdout).group(1))
    p95 = float(re.search(r"p95 ([\d.]+) ms", stdout).group(1))
    lat = [e["latency_ms"] for e in events]
    assert mean == pytest.approx(np.mean(lat), abs=0.051)
    assert p95 == pytest.approx(np.percentile(lat, 95), abs=0.051)
    assert "dropped: 0 clip(s)" in stdout
    hist = _hist(events, 1)[0]
    line = re.search(r"B' histogram \([^)]*\): (.*)", stdout).group(1)
    assert line == " ".join(f"{k}:{v}" for k, v in sorted(hist.items()))


def test_run_loop_summary_equals_events_exactly(pipeline, video, tmp_path):
    ev = tmp_path / "ev.jsonl"
    with open(ev, "w") as f:
        stream = FrameStream(open_reader(str(video)), lossless=True)
        s = StreamRunner(pipeline, stream, RunOptions(stride=2, lossless=True), events=f).run()
    events = _events(ev)
    assert s.end_reason == "eof" and s.frames == 60
    assert s.clips == len(events) == len(range(7, 60, 2))
    assert s.mean_latency_ms == pytest.approx(np.mean([e["latency_ms"] for e in events]), rel=1e-12)
    assert s.p95_latency_ms == pytest.approx(np.percentile([e["latency_ms"] for e in events], 95), rel=1e-12)
    assert s.bprime_hist == _hist(events, 1)
    assert s.dropped_clips == 0


def test_run_paced_file_plays_in_real_time(tiny_export, video, tmp_path, capsys):
    t0 = time.monotonic()
    rc = main(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime", "--duration", "0.5"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert 0.4 < time.monotonic() - t0 < 10
    m = re.search(r"from (\d+) frame\(s\).*\(ended: duration\)", cap.out)
    assert m and 5 <= int(m.group(1)) <= 25  # ~15 frames at 30 fps in 0.5 s


class SlowPipeline:
    """The real pipeline plus a delay: inference slower than the source."""

    def __init__(self, inner: Pipeline, delay: float):
        self.inner, self.delay, self.manifest, self.backend = inner, delay, inner.manifest, inner.backend

    def infer(self, clips):
        time.sleep(self.delay)
        return self.inner.infer(clips)


def test_slow_inference_drops_old_clips(pipeline, tmp_path):
    src = SimulatedSource(num_frames=90, fps=90.0, size=(40, 56))
    ev = tmp_path / "ev.jsonl"
    with open(ev, "w") as f:
        runner = StreamRunner(SlowPipeline(pipeline, 0.08), FrameStream(src, max_retries=0), RunOptions(stride=1),
                              events=f)
        s = runner.run()
    events = _events(ev)
    assert s.dropped_clips > 0
    # 8 frames at 30 fps span 24 frames of a 90 fps source (fps resampling)
    assert runner.window == 24
    # every strided clip was either processed or dropped (the pending one at EOF is processed)
    assert s.clips + s.dropped_clips == 90 - 24 + 1
    assert s.clips == len(events)
    # the newest clip wins: processed frame indices increase, with gaps where clips were dropped
    frames = [e["frame"] for e in events]
    assert frames == sorted(frames) and frames[-1] == 89


@pytest.mark.parametrize("family", ["atfr", "adafuse"])
def test_reconnect_then_disconnect(request, family):
    """A lost source ends the same way for ATFR (clips) and AdaFuse (its online graph per frame)."""
    if family == "atfr":
        model = request.getfixturevalue("pipeline")
    else:
        from atfr.runtime.adafuse_stream import AdaFuseStream

        model = AdaFuseStream.load(request.getfixturevalue("tiny_adafuse_export"))
    src = SimulatedSource(num_frames=20, fps=60.0, size=(32, 40), reconnects=1)  # window: 16 frames (ATFR)
    stream = FrameStream(src, max_retries=2, backoff_s=0.01)
    s = StreamRunner(model, stream, RunOptions(stride=5)).run()
    assert s.frames == 40 and s.reconnects == 1 and s.end_reason == "disconnected"
    assert s.clips >= 2 and s.padded_clips == 0


def test_interrupt_ends_cleanly_with_summary(pipeline):
    before = set(threading.enumerate())
    seen = []

    def on_frame(bgr):
        seen.append(bgr.shape)
        if len(seen) == 30:
            raise KeyboardInterrupt
        return True

    src = SimulatedSource(num_frames=10_000, fps=60.0, size=(32, 40))  # window: 16 frames
    s = StreamRunner(pipeline, FrameStream(src, max_retries=0), RunOptions(stride=2), on_frame=on_frame).run()
    assert s.end_reason == "interrupted" and s.frames == 30 and s.clips >= 1
    assert set(threading.enumerate()) == before


def test_short_video_gives_one_padded_clip(tiny_export, tmp_path, capsys):
    short = write_video(tmp_path / "short.avi", 5)
    ev = tmp_path / "ev.jsonl"
    rc = main(["run", str(tiny_export), "--source", str(short), "--backend", "onnxruntime", "--jsonl", str(ev)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    events = _events(ev)
    assert len(events) == 1 and events[0]["padded"] is True and events[0]["frame"] == 4
    assert "padded by repeating the last frame" in cap.out


# -- errors: one line, right exit code ----------------------------------------------------------
def _one_line_error(cap, rc, code, pattern):
    assert rc == code, cap.err
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1, cap.err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in cap.err


def test_missing_file(tiny_export, tmp_path, capsys):
    rc = main(["run", str(tiny_export), "--source", str(tmp_path / "nope.mp4")])
    _one_line_error(capsys.readouterr(), rc, 5, r"^atfr run: error: .*nope\.mp4: no such file$")


def test_unreadable_file(tiny_export, tmp_path, capsys):
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    rc = main(["run", str(tiny_export), "--source", str(bad)])
    _one_line_error(capsys.readouterr(), rc, 5, r"random\.mp4: cannot (open|decode)")


def test_unopenable_camera(tiny_export, capsys):
    rc = main(["run", str(tiny_export), "--source", "99"])
    _one_line_error(capsys.readouterr(), rc, 5, r"cannot open camera 99")


def test_existing_outputs_need_force(tiny_export, video, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    out.write_bytes(b"keep")
    rc = main(["run", str(tiny_export), "--source", str(video), "--save", str(out)])
    _one_line_error(capsys.readouterr(), rc, 2, r"already exists; pass --force")
    assert out.read_bytes() == b"keep"


def test_bad_save_extension(tiny_export, video, tmp_path, capsys):
    rc = main(["run", str(tiny_export), "--source", str(video), "--save", str(tmp_path / "a.xyz")])
    _one_line_error(capsys.readouterr(), rc, 2, r"unsupported video extension")
    assert list(tmp_path.iterdir()) == []


def test_show_without_gui_is_one_line(tiny_export, video, capsys):
    if "GTK" in cv2.getBuildInformation() and os.environ.get("DISPLAY"):
        pytest.skip("OpenCV has a GUI and a display here")
    rc = main(["run", str(tiny_export), "--source", str(video), "--show"])
    _one_line_error(capsys.readouterr(), rc, 2, r"--show needs")


def test_zero_frame_source_refused(pipeline):
    with pytest.raises(SourceError, match="no frames"):
        StreamRunner(pipeline, FrameStream(SimulatedSource(num_frames=0, fps=100.0), max_retries=0), RunOptions()).run()


# -- sources ------------------------------------------------------------------------------------
def test_parse_source():
    assert parse_source("0").kind == "camera" and parse_source("0").target == 0
    assert parse_source("/dev/video2").kind == "camera"
    assert parse_source("rtsp://user:pw@cam/stream").kind == "url"
    assert "pw" not in parse_source("rtsp://user:pw@cam/stream").label
    assert parse_source("http://host/x.mjpg").kind == "url"
    gst = "nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink drop=1"
    assert parse_source(gst).kind == "gstreamer"
    assert parse_source("clip.mp4").kind == "file"


def test_file_reader_rgb_and_fps(video):
    r = open_reader(str(video))
    try:
        assert r.fps == pytest.approx(30.0) and r.fps_reported and not r.live
        f = r.read()
        assert f.dtype == np.uint8 and f.shape == (48, 64, 3)
        # the bar is (B,G,R) = (40,200,255) in the written BGR file -> RGB (255,200,40), approx (MJPG)
        col = f[:, 1:7].reshape(-1, 3).mean(0)
        assert col[0] > 200 and col[2] < 100
    finally:
        r.close()


def test_ring_buffer_drops_oldest_for_slow_consumer():
    src = SimulatedSource(num_frames=50, fps=1e6, size=(8, 8), pace=False)
    stream = FrameStream(src, buffer=4, max_retries=0).start()
    while not stream.ended and stream.stats.frames_read < 50:
        time.sleep(0.01)
    time.sleep(0.05)
    got = list(stream.frames())
    stream.stop()
    assert [f.index for f in got] == [46, 47, 48, 49]
    assert stream.stats.frames_dropped == 46 and stream.stats.end_reason == "disconnected"


def test_unreachable_stream_is_one_line(tiny_export, capsys):
    rc = main(["run", str(tiny_export), "--source", "http://127.0.0.1:1/cam.mjpg"])
    _one_line_error(capsys.readouterr(), rc, 5, r"cannot open stream http://127\.0\.0\.1:1/cam\.mjpg")


def test_unreadable_file_one_line_at_fd_level(tiny_export, tmp_path):
    """In a fresh process FFmpeg's own C-level messages ("moov atom not found") are silenced too."""
    import subprocess
    import sys

    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(2).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    p = subprocess.run([sys.executable, "-m", "atfr.cli", "run", str(tiny_export), "--source", str(bad)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 5
    assert p.stderr.strip().splitlines() == [f"atfr run: error: {bad}: cannot open video (not a video, "
                                             "unsupported container, or corrupt)"]


# -- helpers for the bounded-time tests ---------------------------------------------------------
def bounded(fn, timeout: float):
    """Run fn() on a thread; fail (instead of hanging the suite) when it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"did not return within {timeout} s (hang)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _cli(args: list[str], timeout: float = 90, **kw):
    """`atfr ...` in a fresh process (signals, pipes, fd-level output), bounded in time."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "atfr.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


class _Server:
    """A TCP server on 127.0.0.1 (free port). mode: 'silent' accepts and sends nothing;
    'mjpeg_hang' answers with a multipart MJPEG stream of ``n`` frames, then keeps the
    connection open without sending (a camera that froze); every new connection starts again."""

    def __init__(self, mode: str, n: int = 12, fps: float = 100.0):
        import socket

        self.mode, self.n, self.fps = mode, n, fps
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._conns: list = []
        self._jpegs = [cv2.imencode(".jpg", np.full((48, 64, 3), 10 * i % 250, np.uint8))[1].tobytes()
                       for i in range(n)]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.mode == "mjpeg_hang":
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
                for j in self._jpegs:
                    c.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j) + j + b"\r\n")
                    time.sleep(1 / self.fps)
            self._stop.wait()
        except OSError:
            pass

    def close(self):
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


@pytest.fixture
def file_server(tmp_path):
    """http.server serving tmp_path on 127.0.0.1 (a finite video over http)."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


# -- streams end (issue 12 item 1) --------------------------------------------------------------
def test_silent_server_fails_within_the_stall_timeout(tiny_export):
    srv = _Server("silent")
    try:
        t0 = time.monotonic()
        p = _cli(["run", str(tiny_export), "--source", f"http://127.0.0.1:{srv.port}/cam.mjpg",
                  "--backend", "onnxruntime", "--stall-timeout", "1"], timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        srv.close()
    assert p.returncode == 5, p.stderr
    assert p.stderr.strip().splitlines() == [f"atfr run: error: cannot open stream http://127.0.0.1:{srv.port}/cam.mjpg "
                                             "(unreachable, wrong URL or unsupported protocol)"]
    assert srv.connections >= 1
    # open timeout = stall timeout (1 s) plus interpreter/model start; the default is 10 s
    assert elapsed < 9


def test_frozen_stream_reconnects_within_a_total_budget(tiny_export, tmp_path):
    srv = _Server("mjpeg_hang", n=12)
    ev = tmp_path / "ev.jsonl"
    try:
        p = _cli(["run", str(tiny_export), "--source", f"http://127.0.0.1:{srv.port}/cam.mjpg",
                  "--backend", "onnxruntime", "--stall-timeout", "1", "--retries", "2", "--stride", "4",
                  "--jsonl", str(ev)], timeout=60)
    finally:
        srv.close()
    # 12 frames, a stall, reconnect (1 of 2), 12 frames, stall, reconnect (2 of 2), 12 frames,
    # stall: budget spent -> the run ends by itself, source lost (exit 5), summary first
    assert p.returncode == 5, p.stderr
    assert srv.connections == 3
    assert "from 36 frame(s)" in p.stdout and "(ended: stalled)" in p.stdout
    assert "reconnects: 2 of 2 attempt(s), 3 stall(s)" in p.stdout
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith("atfr run: error: ") and "source lost: no frame for 1 s; 2 reconnect attempt(s) spent" in err[-1]
    assert "Traceback" not in p.stderr
    n = len(_events(ev))
    assert n >= 3 and f"summary: {n} clip(s)" in p.stdout


@pytest.mark.parametrize("writer", [False, True], ids=["no-writer", "silent-writer"])
def test_source_that_never_opens_or_sends_is_bounded_by_the_stall_timeout(tiny_export, tmp_path, writer):
    """A named pipe with no writer blocks in open(); one whose writer sends nothing blocks in
    FFmpeg's probe. Either ends after --stall-timeout with one line, exit 5 (issue 22 item 5)."""
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR) if writer else None  # O_RDWR: a writer that never writes (no block)
    try:
        t0 = time.monotonic()
        p = _cli(["run", str(tiny_export), "--source", str(fifo), "--backend", "onnxruntime",
                  "--stall-timeout", "1"], timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if fd is not None:
            os.close(fd)
    assert p.returncode == 5, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"atfr run: error: {fifo}: no frame within 1 s of opening it (--stall-timeout): a pipe with no writer, "
        "or a device or stream that sends nothing"]
    assert elapsed < 20  # 1 s plus the interpreter and model start (a hang ran into the 30 s limit)


def test_stall_leaves_no_raw_opencv_log_line(tiny_export):
    """A frozen stream makes OpenCV log "[ WARN:0@..] ... Stream timeout triggered" itself: not
    without -v (issue 22 item 7; test_cli_output checks that -v shows it)."""
    srv = _Server("mjpeg_hang", n=12)
    try:
        p = _cli(["run", str(tiny_export), "--source", f"http://127.0.0.1:{srv.port}/cam.mjpg",
                  "--backend", "onnxruntime", "--stall-timeout", "1", "--retries", "0"], timeout=60)
    finally:
        srv.close()
    assert p.returncode == 5, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 2 and err[-1].startswith("atfr run: error: ") and "source lost" in err[-1], p.stderr


class _OpensButNeverDelivers:
    """A stream that reopens fine and then gives nothing: looped forever with a per-loss budget."""

    name, live, fps, fps_reported = "flaky", True, 30.0, True

    def __init__(self):
        self.reopens = 0

    def read(self):
        return None

    def reopen(self):
        self.reopens += 1
        return True

    def close(self):
        pass


def test_reconnect_budget_is_total_not_per_loss():
    r = _OpensButNeverDelivers()
    stream = FrameStream(r, max_retries=4, backoff_s=0.001).start()
    bounded(lambda: [None for _ in stream.frames()], 10)
    stream.stop()
    assert r.reopens == 4 and stream.stats.reconnects == 4 and stream.stats.reconnect_attempts == 4
    assert stream.stats.end_reason == "disconnected"
    assert "4 reconnect attempt(s) spent" in stream.stats.end_detail


class _HangsAfter:
    """A camera that delivers ``n`` frames, then blocks inside read() (a hung driver)."""

    name, live, fps, fps_reported = "hung camera", True, 60.0, True

    def __init__(self, n: int):
        self.n, self.i = n, 0
        self.release = threading.Event()

    def read(self):
        if self.i >= self.n:
            self.release.wait()
            return None
        self.i += 1
        return np.full((32, 40, 3), self.i % 250, np.uint8)

    def reopen(self):
        return False

    def close(self):
        pass


def test_hung_reader_ends_the_run_as_stalled(pipeline):
    src = _HangsAfter(40)
    try:
        # deadline per read: 1 s + 1 s grace (loose enough that a loaded CI machine's scheduling
        # never passes for a hang; the default is 10 s + 5 s)
        stream = FrameStream(src, max_retries=3, stall_timeout=1.0, hang_grace_s=1.0)
        s = bounded(lambda: StreamRunner(pipeline, stream, RunOptions(stride=8)).run(), 30)
    finally:
        src.release.set()
    assert s.end_reason == "stalled" and s.source_lost and s.frames == 40 and s.clips >= 1
    assert "blocked for more than 1 s" in s.end_detail


def test_finite_video_over_http_ends_at_eof(tiny_export, tmp_path, file_server):
    write_video(tmp_path / "clip.avi", 60)
    ev = tmp_path / "ev.jsonl"
    p = _cli(["run", str(tiny_export), "--source", f"{file_server}/clip.avi", "--backend", "onnxruntime",
              "--fast", "--stride", "4", "--jsonl", str(ev)], timeout=60)
    assert p.returncode == 0, p.stderr
    # played once: the 60 frames, no reconnect (no replay), the same clips as the local file
    assert "from 60 frame(s)" in p.stdout and "(ended: eof)" in p.stdout and "reconnects" not in p.stdout
    assert [e["frame"] for e in _events(ev)] == list(range(7, 60, 4))
    assert p.stderr.strip().splitlines()[-1] == "atfr run: stopped: end of file after 60 frame(s)"


# -- one failure path (issue 12 item 2) ---------------------------------------------------------
class _FullDisk:
    """An events file on a full disk: the ``after``-th write raises ENOSPC."""

    name = "events.jsonl"

    def __init__(self, after: int):
        self.after, self.lines = after, []

    def write(self, text):
        import errno

        if len(self.lines) >= self.after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.lines.append(text)

    def flush(self):
        pass


def test_disk_full_on_events_stops_the_run(pipeline):
    from atfr.errors import ATFRError

    before = set(threading.enumerate())
    sink = _FullDisk(after=3)
    src = SimulatedSource(num_frames=10_000, fps=60.0, size=(32, 40))
    runner = StreamRunner(pipeline, FrameStream(src, max_retries=0), RunOptions(stride=2), events=sink)
    with pytest.raises(ATFRError, match=r"^events\.jsonl: cannot write \(No space left on device\)$"):
        bounded(runner.run, 30)
    # three clips written and counted; the fourth, whose line could not be written, is not counted
    assert len(sink.lines) == 3 and runner.summary.clips == 3 and runner.summary.end_reason == "error"
    assert set(threading.enumerate()) == before  # capture, pre-processing and inference joined


def test_disk_full_jsonl_cli_is_one_line_and_keeps_the_video(tiny_export, video, tmp_path):
    out = tmp_path / "a.mp4"
    p = _cli(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime", "--fast",
              "--save", str(out), "--jsonl", "/dev/full", "--force"], timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1] == "atfr run: error: /dev/full: cannot write (No space left on device)"
    assert len(p.stderr.strip().splitlines()) == 2  # the start line, then the error
    # the video up to the failure is finalized (readable), no temp file beside it: the first
    # event (clip 0, ending at frame 7) could not be written, so frames 0-6 (buffering) are in it
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.mp4"]
    frames, _ = read_frames(out)
    assert len(frames) == 7


class _FailingPipeline(SlowPipeline):
    """Inference that raises on clip ``at`` (a backend failure mid-run)."""

    def __init__(self, inner, at: int):
        super().__init__(inner, 0.0)
        self.at, self.calls = at, 0

    def infer(self, clips):
        self.calls += 1
        if self.calls > self.at:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.infer(clips)


@pytest.mark.parametrize("at", [0, 3])
def test_inference_failure_is_one_line_and_loses_nothing(tiny_export, video, tmp_path, capsys, monkeypatch, at):
    real_load = Pipeline.load
    monkeypatch.setattr(Pipeline, "load", classmethod(lambda cls, *a, **k: _FailingPipeline(real_load(*a, **k), at)))
    out, ev = tmp_path / "a.avi", tmp_path / "ev.jsonl"
    rc = bounded(lambda: main(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime",
                               "--fast", "--save", str(out), "--jsonl", str(ev)]), 60)
    cap = capsys.readouterr()
    assert rc == 1
    err = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert err[-1] == ("atfr run: internal error: RuntimeError: CUDA error: an illegal memory access was "
                       "encountered (set ATFR_DEBUG=1 for a traceback)") and len(err) == 2
    # the clips recorded before the failure are kept; a run that failed on its first clip leaves no
    # (empty) jsonl; the video shows the frames read so far; no temp file either way
    if at:
        assert [e["clip"] for e in _events(ev)] == list(range(at))
        assert sorted(x.name for x in tmp_path.iterdir()) == ["a.avi", "ev.jsonl"]
    else:
        assert not ev.exists()
        assert sorted(x.name for x in tmp_path.iterdir()) == ["a.avi"]
    # lossless: a frame is drawn once its clip is known; clip k ends at frame 7 + 8k (stride 8), so
    # the frames before the failed clip's last one are in the video, the rest are not
    assert len(read_frames(out)[0]) == 7 + 8 * at


def test_video_write_failure_is_one_line(tiny_export, video, tmp_path, capsys, monkeypatch):
    import errno

    from atfr.runtime.video.overlay import AtomicVideoWriter

    real_write = AtomicVideoWriter.write

    def write(self, frame):
        if self.frames >= 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, frame)

    monkeypatch.setattr(AtomicVideoWriter, "write", write)
    out, ev = tmp_path / "a.avi", tmp_path / "ev.jsonl"
    rc = bounded(lambda: main(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime",
                               "--fast", "--stride", "4", "--save", str(out), "--jsonl", str(ev)]), 60)
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.err.splitlines()[-1] == (f"atfr run: error: {out}: cannot write video (OSError: [Errno 28] No space "
                                        "left on device); the video is kept with the 20 frame(s) written before")
    # lossless: frames 0..19 were drawn, so every clip ending at or before frame 19 was recorded
    assert [e["frame"] for e in _events(ev)][:4] == [7, 11, 15, 19]
    assert len(read_frames(out)[0]) == 20
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.avi", "ev.jsonl"]


def test_disk_filling_up_stops_the_run_with_room_to_finalize_the_video(tiny_export, video, tmp_path, capsys,
                                                                      monkeypatch):
    """OpenCV's writer does not raise on a full disk: the run checks the free space before each
    frame and stops while there is still room to finalize the video (issue 22 item 4)."""
    from atfr.runtime.video import video_out

    real = video_out.free_bytes
    written: list[int] = []

    def free(folder):
        written.append(1)
        return real(folder) if len(written) <= 15 else 512 * 1024  # 0.5 MB left after 15 frames

    monkeypatch.setattr(video_out, "free_bytes", free)
    out, ev = tmp_path / "a.mp4", tmp_path / "ev.jsonl"
    rc = bounded(lambda: main(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime",
                               "--fast", "--stride", "4", "--save", str(out), "--jsonl", str(ev)]), 60)
    cap = capsys.readouterr()
    assert rc == 2, cap.err
    # the reserve for a 64x48 frame: 1 MiB + 2 * 9216 bytes + 16 bytes per frame written = 1 MB
    assert cap.err.splitlines()[-1] == (f"atfr run: error: {out}: cannot write video (disk full: 0 MB left, 1 MB kept "
                                        "to finalize it); the video is kept with the 15 frame(s) written before")
    assert len(cap.err.strip().splitlines()) == 2  # the start line, the error
    assert len(read_frames(out)[0]) == 15  # finalized, playable, every frame written
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.mp4", "ev.jsonl"]
    assert [e["frame"] for e in _events(ev)][:2] == [7, 11]


def test_video_that_cannot_be_finalized_is_not_put_in_place(tmp_path, monkeypatch):
    """OpenCV 4.x's VideoWriter.write returns None even when nothing reaches the disk: the check
    at close finds no playable container, removes it and keeps the previous video at the target."""
    from atfr.errors import ATFRError
    from atfr.runtime.video.overlay import AtomicVideoWriter

    class Silent4x:  # a full disk under OpenCV 4.x: write() reports nothing, the file stays empty
        def __init__(self, path, *a):
            pass

        def isOpened(self):
            return True

        def write(self, frame):
            return None

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", Silent4x)
    out = tmp_path / "a.mp4"
    out.write_bytes(b"previous")
    w = AtomicVideoWriter(out, 30.0)
    for _ in range(5):
        w.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ATFRError, match=r"a\.mp4: cannot finalize the video \(it does not open: disk full or I/O "
                                        r"error\); not kept$"):
        w.close()
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["a.mp4"]
    assert w.outcome == "not kept (the video could not be finalized)"


def test_jsonl_failure_also_says_the_video_was_not_kept(tiny_export, video, tmp_path, capsys, monkeypatch):
    """The jsonl fails first (/dev/full) and the video cannot be finalized either (a writer that
    wrote nothing, as OpenCV 4.x on a full disk): the one line names both, exit 2."""
    class Silent4x:
        def __init__(self, path, *a):
            pass

        def isOpened(self):
            return True

        def write(self, frame):
            return None

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", Silent4x)
    out = tmp_path / "a.mp4"
    rc = bounded(lambda: main(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime", "--fast",
                               "--save", str(out), "--jsonl", "/dev/full", "--force"]), 60)
    cap = capsys.readouterr()
    assert rc == 2, cap.err
    assert cap.err.splitlines()[-1] == (f"atfr run: error: /dev/full: cannot write (No space left on device); {out}: "
                                        "not kept (the video could not be finalized)")
    assert list(tmp_path.iterdir()) == [] and "annotated video" not in cap.out


def _cli_file_limit(args: list[str], limit: int, timeout: float = 90):
    """`atfr ...` in a fresh process whose files cannot grow past ``limit`` bytes (RLIMIT_FSIZE:
    writes past it fail with EFBIG, a full disk as the kernel reports it to one process)."""
    import resource
    import subprocess
    import sys

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "atfr.cli", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap)


def test_real_video_write_failure_stops_the_run_and_keeps_no_broken_video(tiny_export, tmp_path):
    """The real OpenCV writer on a file that cannot grow: it only logs "Failed to write frame";
    the run stops with one line naming the video (exit 2), and an mp4 whose index could not be
    written is not put in place; the jsonl beside it holds only complete lines."""
    src = write_video(tmp_path / "noise.avi", 60, size=(240, 320))  # noise: about 20 KB a frame in mp4v
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, ev = out_dir / "a.mp4", out_dir / "ev.jsonl"
    p = _cli_file_limit(["run", str(tiny_export), "--source", str(src), "--backend", "onnxruntime", "--fast",
                         "--stride", "4", "--save", str(out), "--jsonl", str(ev)], limit=200_000)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(err) == 2 and "WARN" not in p.stderr, p.stderr  # the start line, the error; no OpenCV log
    assert err[-1].startswith(f"atfr run: error: {out}: cannot ") and err[-1].endswith(
        "not kept (the video could not be finalized)") or err[-1].endswith("; not kept"), err[-1]
    assert not out.exists() and [x.name for x in out_dir.iterdir()] in ([], ["ev.jsonl"])  # no temp file
    if ev.exists():
        assert ev.read_text().endswith("\n") and all(json.loads(ln) for ln in ev.read_text().splitlines())


def test_jsonl_on_a_full_disk_keeps_only_complete_lines(tiny_export, video, tmp_path):
    """A jsonl that cannot grow past 1000 bytes (about 2.5 events): the run stops with one line
    naming it, and the file is cut back to its last complete line (never half a JSON line)."""
    ev = tmp_path / "ev.jsonl"
    p = _cli_file_limit(["run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime", "--fast",
                         "--stride", "4", "--jsonl", str(ev)], limit=1000)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1] == f"atfr run: error: {ev}: cannot write (File too large)"
    text = ev.read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and 1 <= len(lines) <= 3 and len(text) <= 1000
    assert [json.loads(ln)["clip"] for ln in lines] == list(range(len(lines)))  # every line parses
    assert f"summary: {len(lines)} clip(s)" in p.stdout


class _BrokenDecoder(SimulatedSource):
    def read(self):
        if self._i >= 20:
            raise ValueError("corrupt packet")
        return super().read()


def test_decode_failure_stops_with_source_error(pipeline):
    before = set(threading.enumerate())
    runner = StreamRunner(pipeline, FrameStream(_BrokenDecoder(num_frames=100, fps=60.0, size=(32, 40)), max_retries=0),
                          RunOptions(stride=4))
    with pytest.raises(SourceError, match=r"^simulated 40x32@60: capture failed \(ValueError: corrupt packet\)$"):
        bounded(runner.run, 30)
    assert set(threading.enumerate()) == before


class _GreyCamera(SimulatedSource):
    def read(self):
        f = super().read()
        return None if f is None else f[..., 0]  # [H,W]: the pre-processing stage refuses it


def test_preprocessing_failure_stops_the_run(pipeline):
    from atfr.errors import ATFRError

    before = set(threading.enumerate())
    runner = StreamRunner(pipeline, FrameStream(_GreyCamera(num_frames=10_000, fps=60.0, size=(32, 40)), max_retries=0),
                          RunOptions(stride=4))
    with pytest.raises(ATFRError, match=r"expected frames \[T,H,W,3\]"):
        bounded(runner.run, 30)
    assert set(threading.enumerate()) == before


def test_print_into_a_closed_pipe_ends_quietly(tiny_export, tmp_path):
    """`atfr run ... --print | head -5`: the run stops, exit 0, no traceback, outputs complete."""
    import subprocess
    import sys

    long = write_video(tmp_path / "long.avi", 400)
    ev = tmp_path / "ev.jsonl"
    cmd = [sys.executable, "-m", "atfr.cli", "run", str(tiny_export), "--source", str(long), "--backend",
           "onnxruntime", "--fast", "--stride", "1", "--print", "--jsonl", str(ev)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = [proc.stdout.readline() for _ in range(5)]
    proc.stdout.close()
    try:
        rc = proc.wait(60)
    finally:
        proc.kill()
    err = proc.stderr.read().decode()
    assert all(b"clip" in h for h in head)
    assert rc == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err
    events = _events(ev)  # every line parses: the jsonl is complete up to the stop
    assert 5 <= len(events) < 393 and [e["clip"] for e in events] == list(range(len(events)))


# -- signals (issue 12 item 4) ------------------------------------------------------------------
@pytest.mark.parametrize("sig,reason,export", [("SIGTERM", "terminated", "tiny_export"), ("SIGHUP", "hangup", "tiny_export"),
                                              ("SIGINT", "interrupted", "tiny_export"),
                                              ("SIGTERM", "terminated", "tiny_adafuse_export")],
                         ids=["SIGTERM", "SIGHUP", "SIGINT", "SIGTERM-adafuse"])
def test_signal_stops_cleanly_with_complete_outputs(request, tmp_path, sig, reason, export):
    import signal
    import subprocess
    import sys

    src = write_video(tmp_path / "src.avi", 900)  # 30 s when played at its fps: the signal comes first
    out_dir = tmp_path / "out"
    out, ev = out_dir / "annotated.mp4", out_dir / "ev.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "atfr.cli", "run", str(request.getfixturevalue(export)), "--source",
                             str(src), "--backend", "onnxruntime", "--stride", "2", "--save", str(out), "--jsonl", str(ev)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not ev.exists() or len(ev.read_text().splitlines()) < 3):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert f"(ended: {reason})" in stdout and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("atfr run: stopped: ")
    frames = int(re.search(r"from (\d+) frame\(s\)", stdout).group(1))
    clips = int(re.search(r"summary: (\d+) clip\(s\)", stdout).group(1))
    # finalized mp4 with every frame read, complete jsonl (every clip, every line parses), no temp
    assert sorted(x.name for x in out_dir.iterdir()) == ["annotated.mp4", "ev.jsonl"]
    assert len(read_frames(out)[0]) == frames
    assert [e["clip"] for e in _events(ev)] == list(range(clips)) and clips >= 3


# -- smaller items (issue 12 item 10) -----------------------------------------------------------
@pytest.mark.parametrize("export", ["tiny_export", "tiny_adafuse_export"], ids=["atfr", "adafuse"])
def test_truncated_real_video_ends_with_a_warning(request, tmp_path, export):
    from footage import real_video

    src = real_video("vtest")
    cut = tmp_path / "vtest_half.avi"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # independent count: what OpenCV decodes from the cut file vs what its header reports
    cap = cv2.VideoCapture(str(cut))
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert decoded < reported - max(2, reported // 100)  # really cut (795 reported, about half decodable)
    p = _cli(["run", str(request.getfixturevalue(export)), "--source", str(cut), "--backend", "onnxruntime", "--fast",
              "--stride", "16"], timeout=90)
    assert p.returncode == 0, p.stderr
    assert f"from {decoded} frame(s)" in p.stdout and "(ended: truncated)" in p.stdout
    assert p.stderr.strip().splitlines()[-1] == (
        f"atfr run: warning: {cut}: decoding stopped after {decoded} of the {reported} frames the container "
        "reports (file truncated or corrupt)")


def test_overlay_labels_model_and_display_rates():
    from atfr.runtime.video.overlay import overlay_lines

    lines = overlay_lines([("abseiling", 0.0031), ("zumba", 0.0025)], (3,), 41.6, 29.97, [8], 3.75)
    assert lines == ["1. abseiling  0.31%", "2. zumba  0.25%", "B' 3/8", "model 42 ms/clip, 3.8 clips/s",
                     "display 30.0 fps"]


def test_probabilities_stay_readable_for_400_classes():
    from atfr.display import format_percent as format_prob

    # a 400-class softmax near uniform: 1/400 = 0.0025 printed "0.00" before
    assert format_prob(1 / 400) == "0.25%"
    assert format_prob(0.59) == "59.0%" and format_prob(1.0) == "100.0%" and format_prob(0.0123) == "1.23%"
    assert format_prob(3.2e-6) == "0.00032%" and format_prob(0.0) == "0%"
    # distinct small probabilities print distinctly
    assert len({format_prob(p) for p in (0.0021, 0.0025, 0.0029)}) == 3


# -- the pipelined loop (issue 13 item 2) -------------------------------------------------------
class _SlowPre:
    """Wraps the Preprocessor: a fixed delay per clip, and the (start, end) of each call."""

    def __init__(self, inner, delay: float, spans: list):
        self.inner, self.delay, self.spans = inner, delay, spans

    def __call__(self, frames, spatial_idx=1):
        t0 = time.perf_counter()
        time.sleep(self.delay)
        out = self.inner(frames, spatial_idx)
        self.spans.append(("pre", t0, time.perf_counter()))
        return out

    def pack(self, clip):
        return self.inner.pack(clip)


class _TimedPipeline(SlowPipeline):
    def __init__(self, inner, delay, spans):
        super().__init__(inner, delay)
        self.spans = spans

    def infer(self, clips):
        t0 = time.perf_counter()
        out = super().infer(clips)
        self.spans.append(("infer", t0, time.perf_counter()))
        return out


def test_preprocessing_overlaps_inference_and_lossless_stays_exact(pipeline, video, tmp_path):
    spans: list = []
    drawn: list = []
    recorded: dict = {}
    ev = tmp_path / "ev.jsonl"
    with open(ev, "w") as f:
        stream = FrameStream(open_reader(str(video)), lossless=True)
        runner = StreamRunner(_TimedPipeline(pipeline, 0.03, spans), stream, RunOptions(stride=4, lossless=True),
                              events=f, on_frame=lambda bgr: True)
        runner.pre = _SlowPre(runner.pre, 0.03, spans)
        real_record, real_draw = runner._record, runner._draw

        def record(job, res, infer_ms):
            real_record(job, res, infer_ms)
            recorded[job.frame_index] = runner._latest

        def draw(frame, result, buffered, fps):
            drawn.append((frame.index, result))
            return real_draw(frame, result, buffered, fps)

        runner._record, runner._draw = record, draw
        s = bounded(runner.run, 60)
    # every strided clip ran, in order (lossless: no drop)
    assert [e["frame"] for e in _events(ev)] == list(range(7, 60, 4)) and s.dropped_clips == 0
    # every frame was drawn once, in order, with the result of the newest clip ending at or before it
    assert [i for i, _ in drawn] == list(range(60))
    for i, result in drawn:
        ends = [k for k in recorded if k <= i]
        assert result is (recorded[max(ends)] if ends else None), i
    # the stages overlapped: some clip was pre-processed while another one was in the model
    pre = [(a, b) for k, a, b in spans if k == "pre"]
    inf = [(a, b) for k, a, b in spans if k == "infer"]
    assert len(pre) == len(inf) == 14
    assert any(a1 < b2 and a2 < b1 for a1, b1 in pre for a2, b2 in inf)


@pytest.mark.parametrize("lossless", [False, True])
def test_max_clips_is_exact(pipeline, tmp_path, lossless):
    ev = tmp_path / "ev.jsonl"
    with open(ev, "w") as f:
        src = SimulatedSource(num_frames=10_000, fps=60.0, size=(32, 40), pace=not lossless)
        s = bounded(StreamRunner(pipeline, FrameStream(src, max_retries=0, lossless=lossless),
                                 RunOptions(stride=1, max_clips=7, lossless=lossless), events=f).run, 60)
    assert s.clips == 7 and s.end_reason == "max-clips" and len(_events(ev)) == 7


class _ResizingCamera(SimulatedSource):
    """Comes back from its reconnect at another resolution (a camera reconfigured meanwhile)."""

    def reopen(self):
        ok = super().reopen()
        if ok:
            self._base = cv2.resize(self._base, (56, 44))
        return ok


def test_resolution_change_after_reconnect_restarts_the_window(pipeline):
    seen = []

    src = _ResizingCamera(num_frames=30, fps=60.0, size=(32, 40), reconnects=1)  # window: 16 frames
    runner = StreamRunner(pipeline, FrameStream(src, max_retries=1, backoff_s=0.01), RunOptions(stride=4),
                          on_frame=lambda bgr: seen.append(bgr.shape[:2]) or True)
    s = bounded(runner.run, 30)
    # both halves ran clips (no clip mixes sizes, which the pre-processing refuses): 30 frames each,
    # first clip at frame 15 of each half, then every 4: 15, 19, 23, 27 (the last may be dropped)
    assert s.end_reason == "disconnected" and s.frames == 60 and s.reconnects == 1
    assert s.clips + s.dropped_clips == 8 and s.clips >= 2
    assert seen[:30] == [(32, 40)] * 30 and seen[30:] == [(44, 56)] * 30


def test_stop_does_not_wait_for_a_blocked_source(pipeline):
    """SIGTERM while the source is blocked in a read (no stall timeout to end it): the run stops in
    about 2 s with its outputs, the capture thread is left behind and the reader not closed under it."""
    from atfr.runtime.streaming.runner import StopFlag

    src = _HangsAfter(40)
    stop = StopFlag()
    try:
        stream = FrameStream(src, max_retries=0, stall_timeout=None)
        runner = StreamRunner(pipeline, stream, RunOptions(stride=8), stop=stop)
        threading.Timer(1.0, stop.set, args=("terminated",)).start()
        t0 = time.monotonic()
        s = bounded(runner.run, 30)
        elapsed = time.monotonic() - t0
        assert s.end_reason == "terminated" and s.frames == 40 and stream.hung
        assert elapsed < 8  # 1 s to the signal + the 2 s join (the source would block forever)
    finally:
        src.release.set()


@pytest.mark.parametrize("opt, flag", [({"stride": 0}, "--stride"), ({"topk": 0}, "--topk"),
                                       ({"max_clips": 0}, "max_clips")])
def test_run_options_out_of_range_are_one_line_errors(pipeline, opt, flag):
    """RunOptions.check: the same one-line error for Python callers (StreamRunner) as for the CLI."""
    from atfr.errors import ATFRError

    with pytest.raises(ATFRError, match=f"^{flag} 0: must be >= 1$"):
        RunOptions(**opt).check()
    with pytest.raises(ATFRError, match=f"^{flag} 0: must be >= 1$"):
        StreamRunner(pipeline, FrameStream(SimulatedSource(4, pace=False)), RunOptions(**opt))


def test_run_cli_checks_stride_before_loading_the_model(tmp_path, capsys):
    """`atfr run --stride 0` fails in one line before the export is even looked at."""
    from cli_helpers import one_line_error, run_cli

    rc, _, err = run_cli(capsys, "run", tmp_path / "no-such-export", "--source", "x.mp4", "--stride", "0")
    one_line_error(rc, err, 2, "--stride 0: must be >= 1")
