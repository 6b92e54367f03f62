"""Calibration clips from videos: OpenCV decode + the runtime's own sampling and preprocessing.

Deterministic for a seed: the video order, the temporal view and the spatial crop of every clip
come from ``numpy.random.default_rng(seed)``; frames go through ``atfr.runtime.video.sampling``
(official test-time temporal sampling) and ``atfr.runtime.video.preprocess.Preprocessor`` (the
official test transform), so the calibration sees exactly what ``atfr run``/``predict`` feed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.progress import progress as progress_bar
from atfr.runtime.video.preprocess import Preprocessor
from atfr.spec import InputSpec

R = TypeVar("R")


@dataclass
class CalibClip:
    inputs: list[np.ndarray]  # per pathway [1,3,T_p,S,S] float32
    source: str
    view: int
    spatial: int


def list_videos(data: str | Path) -> list[Path]:
    """A folder (videos directly inside or below it, sorted) or a .txt list (one path a line,
    relative to the list's folder; '#' comments and blank lines ignored)."""
    from atfr.runtime.video.sources import VIDEO_EXTS, videos_in, videos_in_list

    p = Path(data)
    if not p.exists():
        raise ATFRError(f"calibration data {p} does not exist")
    if p.is_dir():
        vids = videos_in(p)
        if not vids:
            raise ATFRError(f"calibration data folder {p} holds no videos ({', '.join(VIDEO_EXTS[:5])}, ...)")
        return vids
    vids = videos_in_list(p)
    if not vids:
        raise ATFRError(f"calibration list {p} names no videos")
    return vids


def sample_clips(data: str | Path, spec: InputSpec, n: int, seed: int = 0, progress: bool = False) -> list[CalibClip]:
    """``n`` clips spread over the readable videos (round-robin in a seeded order, temporal views
    spaced over each video, seeded spatial crop). Unreadable videos are skipped with a warning;
    none readable is an ATFRError.

    Memory: each video is decoded once, front to back (``runtime.video.sources.decode_clips``), and each
    clip is preprocessed as soon as its last frame is decoded, so only the clips' model inputs
    and the frames of the clip being assembled are held, never a whole video. To hold only
    per-clip results instead of the clips, use :func:`map_clips`.
    """
    return map_clips(data, spec, n, lambda c: c, seed, progress)


def map_clips(data: str | Path, spec: InputSpec, n: int, fn: Callable[[CalibClip], R], seed: int = 0,
              progress: bool = False) -> list[R]:
    """``fn(clip)`` for the clips :func:`sample_clips` returns, in the same (clip index) order,
    each called as soon as its clip is preprocessed: only ``fn``'s results are kept, never the
    clips. ``fn`` must be pure (decode_clips runs it again for every clip of a video whose
    container frame count was wrong); it is called in decode order (video by video), not in
    clip index order."""
    from atfr.runtime.video.sampling import clip_indices
    from atfr.runtime.video.sources import decode_clips, video_info

    if n < 1:
        raise ATFRError("--clips must be >= 1")
    vids = list_videos(data)
    rng = np.random.default_rng(seed)
    order = [vids[i] for i in rng.permutation(len(vids))]
    spatial = rng.integers(0, 3, size=n)
    bad: list[str] = []
    readable: list[Path] = []
    for v in order:  # opening decodes the first frame: a video that passes decodes
        try:
            if not v.is_file():
                raise SourceError(f"{v}: no such file")
            video_info(v)
            readable.append(v)
        except SourceError:
            bad.append(str(v))
    if not readable:
        raise ATFRError(f"no readable video in {data} ({len(bad)} file(s) OpenCV cannot decode, e.g. {bad[0]})")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable video(s), e.g. {bad[0]}", stacklevel=2)
    # Clip j -> video readable[j % V], temporal view j // V of ceil(n / V), spatial crop from the rng.
    nv = len(readable)
    views = math.ceil(n / nv)
    pre = Preprocessor(spec)
    clips: list[R | None] = [None] * n
    it = range(min(nv, n))
    it = progress_bar(it, "reading videos", unit="video", enabled=progress)
    for vi in it:
        js = list(range(vi, n, nv))
        src = str(readable[vi])

        def plan(frames: int, fps: float) -> list[np.ndarray]:
            return [clip_indices(frames, spec, fps, j // nv, views) for j in js]

        def make(c: int, frames: list[np.ndarray]) -> R:
            j = js[c]
            x = pre.inputs(frames, (int(spatial[j]),))
            return fn(CalibClip([np.ascontiguousarray(a, dtype=np.float32) for a in x], src, j // nv, int(spatial[j])))

        try:
            got, _, _ = decode_clips(readable[vi], plan, make)
        except SourceError as e:
            raise ATFRError(f"calibration video {src}: {e}") from None
        for j, c in zip(js, got):
            clips[j] = c
    return clips  # type: ignore[return-value]
