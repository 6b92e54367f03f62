"""Soak: 1,000 clips through the run loop (SimulatedSource -> capture thread -> worker -> overlay ->
annotated video): resident memory stays flat after warm-up and no thread is left behind."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from atfr.runtime.streaming.runner import RunOptions, StreamRunner
from atfr.runtime.video.overlay import AtomicVideoWriter
from atfr.runtime.pipeline import Pipeline
from atfr.runtime.video.sources import FrameStream, SimulatedSource

CLIPS = 1000
WARMUP = 100


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_soak_1000_clips_memory_and_threads(tiny_export, tmp_path):
    threads_before = set(threading.enumerate())
    pipeline = Pipeline.load(tiny_export, "onnxruntime")
    rss: dict[str, int] = {}
    runner_box: list[StreamRunner] = []
    writer = AtomicVideoWriter(tmp_path / "soak.avi", 60.0)

    def on_frame(bgr) -> bool:
        writer.write(bgr)
        done = runner_box[0].summary.clips
        if "warm" not in rss and done >= WARMUP:
            gc.collect()
            rss["warm"] = rss_kib()
        return True

    # 60 fps -> an 8-frame window of a 30 fps model spans 16 frames; stride 1 = one clip per frame.
    src = SimulatedSource(num_frames=10**7, fps=60.0, size=(48, 64))
    events = (tmp_path / "events.jsonl").open("w")
    runner = StreamRunner(pipeline, FrameStream(src, max_retries=0), RunOptions(stride=1, max_clips=CLIPS),
                          events=events, on_frame=on_frame)
    runner_box.append(runner)
    t0 = time.monotonic()
    s = runner.run()
    elapsed = time.monotonic() - t0
    events.close()
    writer.close()
    gc.collect()
    rss["end"] = rss_kib()
    growth = (rss["end"] - rss["warm"]) / rss["warm"]
    print(f"\nsoak: {s.clips} clips ({s.dropped_clips} dropped) from {s.frames} frames in {elapsed:.1f} s; "
          f"latency mean {s.mean_latency_ms:.1f} ms p95 {s.p95_latency_ms:.1f} ms; "
          f"RSS after warm-up {rss['warm'] / 1024:.1f} MiB -> end {rss['end'] / 1024:.1f} MiB ({growth * 100:+.2f}%)")
    assert s.clips == CLIPS and s.end_reason == "max-clips"
    assert sum(1 for _ in (tmp_path / "events.jsonl").open()) == CLIPS
    assert growth <= 0.05
    del runner, runner_box[:]
    assert set(threading.enumerate()) == threads_before
    assert elapsed < 120


def _soak_script():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_run.py"
    spec = importlib.util.spec_from_file_location("soak_run", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["soak_run"] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def test_soak_script_short_run_on_real_footage(tiny_export, tmp_path):
    """benchmarks/soak_run.py in small: `atfr run --save --jsonl` on real footage in a child process,
    SIGTERM after 60 clips; every check of the script (exit 0, finalized mp4 with every frame read,
    complete jsonl, no temp file, flat RSS, constant threads and fds after warm-up) must pass."""
    import io

    from footage import real_video

    video = real_video("carphone")  # 120 real frames, 176x144 at 29.97 fps: short and cheap to decode
    out = io.StringIO()
    # Played at its fps (not --fast): ~2.5 s, so /proc is sampled ~25 times; the tiny model would
    # finish 60 clips in 0.3 s with --fast, too quick to sample.
    ok = _soak_script().soak(tiny_export, video, clips=60, work=tmp_path, warmup=20, interval=0.1,
                             max_growth=0.05, timeout=120, fast=False, out=out)
    report = out.getvalue()
    assert ok, report
    assert "FAIL" not in report and report.count("PASS") >= 11
