"""Bounded memory when reading videos (issue 12 item 3): calibration, bench --videos and predict
decode each video once and convert/keep only the frames their clips need, dropping every
full-resolution frame once the clips using it are preprocessed. Counted, not timed; the RSS
figures are in benchmarks/memory_rss.py."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from footage import real_video

from atfr.runtime.video import sources as V
from atfr.spec import InputSpec

SPEC = InputSpec(num_frames=8, sampling_rate=2, crop_size=32, short_side=40)


class _Tally:
    """Counts CvReader opens and converted frames (read() results), and keeps weak references to
    every converted frame so a test can see how many are still alive."""

    def __init__(self, monkeypatch):
        self.opens = 0
        self.converted = 0
        self.frames: list[weakref.ref] = []
        real_init, real_read = V.CvReader.__init__, V.CvReader.read
        tally = self

        def init(self, *a, **k):
            tally.opens += 1
            real_init(self, *a, **k)

        def read(self):
            f = real_read(self)
            if f is not None:
                tally.converted += 1
                tally.frames.append(weakref.ref(f))
            return f

        monkeypatch.setattr(V.CvReader, "__init__", init)
        monkeypatch.setattr(V.CvReader, "read", read)

    def alive(self) -> int:
        return sum(r() is not None for r in self.frames)


def test_decode_clips_converts_and_holds_only_the_clips_frames(monkeypatch):
    path = real_video("vtest")  # 795 frames, 768x576 MJPEG
    clips = [np.arange(10, 26, 2), np.arange(400, 416, 2), np.array([780, 781, 781, 790])]
    tally = _Tally(monkeypatch)
    peak: list[int] = []

    def make(j, frames):
        assert len(frames) == len(clips[j]) and frames[0].shape == (576, 768, 3)
        peak.append(tally.alive())
        return (j, float(frames[0].mean()))

    out, n, fps = V.decode_clips(path, lambda n, fps: clips, make)
    assert n == 795 and [o[0] for o in out] == [0, 1, 2]
    distinct = sum(len(set(c.tolist())) for c in clips)
    # Every wanted frame converted once, plus the first frame each open decodes to check the codec.
    assert tally.converted <= distinct + tally.opens, (tally.converted, distinct, tally.opens)
    # While clip j is assembled only its own frames are alive: earlier clips' frames were dropped.
    assert peak == [len(set(c.tolist())) for c in clips], peak
    # The values are the frames at those indices (not neighbours): compare with a plain decode.
    ref, _ = V.read_frames(path, max_frames=12)
    assert out[0][1] == float(ref[10].mean())


def test_calibration_sample_clips_reads_only_needed_frames(monkeypatch, tmp_path):
    import shutil

    from atfr.calibration.data import sample_clips
    from atfr.runtime.video.sampling import clip_indices

    shutil.copy(real_video("vtest"), tmp_path / "vtest.avi")
    tally = _Tally(monkeypatch)
    got = sample_clips(tmp_path, SPEC, 3, seed=0)
    n, fps = 795, 10.0
    need = set()
    for c in got:
        assert c.inputs[0].shape == (1, 3, 8, 32, 32)
        need |= set(clip_indices(n, SPEC, fps, c.view, 3).tolist())
    assert tally.converted <= len(need) + tally.opens, (tally.converted, len(need), tally.opens)
    assert tally.alive() == 0  # no full-resolution frame outlives the call


def test_bench_video_clips_reads_only_needed_frames(monkeypatch, tiny_export, tmp_path):
    import shutil

    from atfr.bench.runner import video_clips, video_windows
    from atfr.runtime.manifest import load_manifest

    shutil.copy(real_video("vtest"), tmp_path / "vtest.avi")
    m = load_manifest(tiny_export)
    tally = _Tally(monkeypatch)
    clips, _ = video_clips(str(tmp_path), m)
    wins = video_windows(795, m.input)
    assert len(clips) == len(wins) == 4
    # Windows spread over the whole video (not only its first frames).
    assert wins[-1][-1] == 794 and wins[0][0] == 0
    need = len(set(np.concatenate(wins).tolist()))
    assert tally.converted <= need + tally.opens, (tally.converted, need, tally.opens)
    assert tally.alive() == 0


def test_video_windows_loop_short_videos():
    from atfr.bench.runner import video_windows

    spec = InputSpec(num_frames=4, sampling_rate=2, crop_size=32, short_side=40)
    assert [w.tolist() for w in video_windows(5, spec)] == [[0, 2, 4, 1]]
    assert [w.tolist() for w in video_windows(8, spec)] == [[0, 2, 4, 6]]
    assert [w.tolist() for w in video_windows(11, spec)] == [[0, 2, 4, 6], [1, 3, 5, 7], [2, 4, 6, 8], [3, 5, 7, 9]]


@pytest.mark.parametrize("hint_delta", [-5, 7])
def test_decode_clips_replans_for_the_true_count(monkeypatch, hint_delta):
    """A wrong container count: the clips are those for the true count, made from the right frames."""
    path = real_video("bikes")  # 250 frames
    real_init = V.CvReader.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.frame_count_hint = 250 + hint_delta

    monkeypatch.setattr(V.CvReader, "__init__", init)
    plans = []

    def plan(n, fps):
        plans.append(n)
        return [np.array([n - 1, n - 2])]

    out, n, _ = V.decode_clips(path, plan, lambda j, fr: [float(f.mean()) for f in fr])
    assert n == 250 and plans == [250 + hint_delta, 250]
    ref, _ = V.read_frames(path)
    assert out[0] == [float(ref[249].mean()), float(ref[248].mean())]


# -- atfr run: full-size frames only where the overlay needs them (issue 22 item 7) ------------
class _TrackedSource:
    """A SimulatedSource whose frames are tracked by weak reference: how many are still alive."""

    def __new__(cls, **kw):
        src = V.SimulatedSource(**kw)
        src.refs = []
        read = src.read

        def tracked():
            f = read()
            if f is not None:
                src.refs.append(weakref.ref(f))
            return f

        src.read = tracked
        return src


def _alive(src) -> int:
    return sum(r() is not None for r in src.refs)


class _CountingPipeline:
    """Counts the source frames alive at each inference (after a delay: frames pile up)."""

    def __init__(self, inner, src, delay: float):
        self.inner, self.src, self.delay, self.alive = inner, src, delay, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, clips):
        import time

        time.sleep(self.delay)
        self.alive.append(_alive(self.src))
        return self.inner.infer(clips)


def test_run_clip_window_keeps_no_full_size_frame(tiny_export):
    """The clip window keeps what pre-processing reads of each frame (``Preprocessor.gather``),
    not the frame: with a 2-frame capture buffer and no overlay, at most the buffer, the frame in
    the main loop and the one being read are alive, whatever the window (old code: the window)."""
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.streaming.runner import RunOptions, StreamRunner

    src = _TrackedSource(num_frames=60, fps=30.0, size=(120, 160), pace=False)
    pl = _CountingPipeline(Pipeline.load(tiny_export, "onnxruntime"), src, 0.0)
    runner = StreamRunner(pl, V.FrameStream(src, buffer=2, lossless=True, max_retries=0),
                          RunOptions(stride=4, lossless=True))
    s = runner.run()
    assert runner.window >= 8 and s.clips == (60 - runner.window) // 4 + 1
    assert max(pl.alive) <= 2 + 2, (pl.alive, runner.window)


def test_run_lossless_overlay_holds_frames_within_a_byte_budget(tiny_export, monkeypatch):
    """Frames waiting for their clip's overlay (lossless) are full size: at most PENDING_BYTES of
    them wait (here 3 frames' worth; old code: max(window, 32) frames), with slow inference."""
    from atfr.runtime.streaming import runner as streaming
    from atfr.runtime.pipeline import Pipeline

    frame_bytes = 120 * 160 * 3
    monkeypatch.setattr(streaming, "PENDING_BYTES", 3 * frame_bytes, raising=False)  # old code: no budget
    src = _TrackedSource(num_frames=60, fps=30.0, size=(120, 160), pace=False)
    pl = _CountingPipeline(Pipeline.load(tiny_export, "onnxruntime"), src, 0.02)
    drawn_alive = []

    def on_frame(bgr):
        drawn_alive.append(_alive(src))
        return True

    runner = streaming.StreamRunner(pl, V.FrameStream(src, buffer=2, lossless=True, max_retries=0),
                                    streaming.RunOptions(stride=4, lossless=True), on_frame=on_frame)
    runner.run()
    assert len(drawn_alive) == 60  # every frame drawn (lossless)
    # the buffer (2), the pending frames (3), the frame in the main loop, the one being read
    assert max(drawn_alive + pl.alive) <= 2 + 3 + 2, (max(drawn_alive), max(pl.alive))


def test_frame_buffer_is_bounded_in_bytes():
    """FrameStream holds at most max_bytes of frames (at least one): lossless waits, live drops
    the oldest (counted)."""
    import time

    nbytes = 100 * 100 * 3
    src = V.SimulatedSource(num_frames=40, fps=30.0, size=(100, 100), pace=False)
    stream = V.FrameStream(src, buffer=64, lossless=True, max_bytes=3 * nbytes + 1, max_retries=0).start()
    time.sleep(0.3)  # the capture fills the buffer and waits
    assert len(stream._buf) == 3
    assert len(list(stream.frames())) == 40 and stream.stats.frames_dropped == 0
    stream.stop()
    src = V.SimulatedSource(num_frames=40, fps=30.0, size=(100, 100), pace=False)
    stream = V.FrameStream(src, buffer=64, max_bytes=3 * nbytes + 1, max_retries=0).start()
    deadline = time.monotonic() + 10
    while not stream.stats.end_reason and time.monotonic() < deadline:
        time.sleep(0.02)
    got = [f.index for f in stream.frames()]
    stream.stop()
    assert got == [37, 38, 39] and stream.stats.frames_dropped == 37
    one = V.FrameStream(V.SimulatedSource(num_frames=5, size=(100, 100), pace=False), max_bytes=1, lossless=True,
                        max_retries=0)
    assert [f.index for f in one.start().frames()] == [0, 1, 2, 3, 4]  # below one frame: one at a time
    one.stop()


def test_gathered_frames_preprocess_bit_for_bit():
    """What the window keeps (Preprocessor.gather) gives exactly the clip the full frames give."""
    from atfr.runtime.video.preprocess import Preprocessor

    pre = Preprocessor(SPEC)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(5)]
    for sp in (0, 1, 2):
        gathered = [pre.gather(f, sp) for f in frames]
        assert all(g.nbytes == (2 * SPEC.crop_size) ** 2 * 3 for g in gathered)
        assert np.array_equal(pre(gathered, sp), pre(frames, sp))
    with pytest.raises(Exception, match="same size"):
        pre([pre.gather(frames[0], 0), pre.gather(frames[1], 1)], 0)
