"""Calibration clips from videos: OpenCV decode + the runtime's own sampling and preprocessing.

Deterministic for a seed: the video order, the temporal view and the spatial crop of every clip
come from ``numpy.random.default_rng(seed)``; frames go through ``atfr.runtime.sampling``
(official test-time temporal sampling) and ``atfr.runtime.preprocess.Preprocessor`` (the
official test transform), so the calibration sees exactly what ``atfr run``/``predict`` feed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.runtime.preprocess import Preprocessor
from atfr.spec import InputSpec

MAX_DECODE_FRAMES = 20000  # a guard against endless streams listed by mistake


@dataclass
class CalibClip:
    inputs: list[np.ndarray]  # per pathway [1,3,T_p,S,S] float32
    source: str
    view: int
    spatial: int


def list_videos(data: str | Path) -> list[Path]:
    """A folder (videos directly inside or below it, sorted) or a .txt list (one path a line,
    relative to the list's folder; '#' comments and blank lines ignored)."""
    from atfr.runtime.video import VIDEO_EXTS, videos_in, videos_in_list

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


def read_video(path: Path) -> tuple[np.ndarray, float] | None:
    """All frames as uint8 RGB [T,H,W,3] and the fps, or None when OpenCV cannot decode it."""
    from atfr.runtime.video import read_frames

    if not path.is_file():
        return None
    try:
        return read_frames(path, max_frames=MAX_DECODE_FRAMES)
    except SourceError:
        return None


def sample_clips(data: str | Path, spec: InputSpec, n: int, seed: int = 0, progress: bool = False) -> list[CalibClip]:
    """``n`` clips spread over the videos (round-robin in a seeded order, temporal views spaced
    over each video, seeded spatial crop). Unreadable videos are skipped with a warning; none
    readable is an ATFRError."""
    from atfr.runtime.sampling import clip_indices

    if n < 1:
        raise ATFRError("--clips must be >= 1")
    vids = list_videos(data)
    rng = np.random.default_rng(seed)
    order = [vids[i] for i in rng.permutation(len(vids))]
    pre = Preprocessor(spec)
    # Clip j -> video order[j % V], temporal view j // V of ceil(n / V), spatial crop from the rng.
    per_video: dict[int, list[int]] = {}
    for j in range(n):
        per_video.setdefault(j % len(order), []).append(j)
    spatial = rng.integers(0, 3, size=n)
    views_per_video = math.ceil(n / len(order))
    clips: list[CalibClip | None] = [None] * n
    bad: list[str] = []
    it = sorted(per_video.items())
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="reading videos", unit="video", leave=False)
    readable: list[tuple[np.ndarray, float, str]] = []
    for vi, js in it:
        got = read_video(order[vi])
        if got is None:
            bad.append(str(order[vi]))
            continue
        frames, fps = got
        readable.append((frames, fps, str(order[vi])))
        for j in js:
            k = j // len(order)
            idx = clip_indices(len(frames), spec, fps, k, views_per_video)
            x = pre.inputs(frames[idx], (int(spatial[j]),))
            clips[j] = CalibClip([np.ascontiguousarray(a, dtype=np.float32) for a in x], str(order[vi]), k, int(spatial[j]))
    if not readable:
        raise ATFRError(f"no readable video in {data} ({len(bad)} file(s) OpenCV cannot decode, e.g. {bad[0]})")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable video(s), e.g. {bad[0]}", stacklevel=2)
    # Clips of unreadable videos: take more views from the readable ones, deterministically.
    missing = [j for j, c in enumerate(clips) if c is None]
    for m_i, j in enumerate(missing):
        frames, fps, src = readable[m_i % len(readable)]
        k = views_per_video + m_i // len(readable)
        nv = k + 1
        idx = clip_indices(len(frames), spec, fps, k, nv)
        x = pre.inputs(frames[idx], (int(spatial[j]),))
        clips[j] = CalibClip([np.ascontiguousarray(a, dtype=np.float32) for a in x], src, k, int(spatial[j]))
    return clips  # type: ignore[return-value]
