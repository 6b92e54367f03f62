"""`atfr run` and the frame sources: a generated video end to end with ONNX Runtime, drops,
reconnects, interrupts, and the one-line errors."""

from __future__ import annotations

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
from atfr.runtime.streaming import RunOptions, StreamRunner
from atfr.runtime.pipeline import Pipeline
from atfr.runtime.video import FrameStream, SimulatedSource, open_reader, parse_source, read_frames

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
        self.inner, self.delay, self.manifest = inner, delay, inner.manifest

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


def test_reconnect_then_disconnect(pipeline):
    src = SimulatedSource(num_frames=20, fps=60.0, size=(32, 40), reconnects=1)  # window: 16 frames
    stream = FrameStream(src, max_retries=2, backoff_s=0.01)
    s = StreamRunner(pipeline, stream, RunOptions(stride=5)).run()
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
