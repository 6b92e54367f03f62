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
