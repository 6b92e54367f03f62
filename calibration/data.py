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

from atfr.errors import ATFRError
from atfr.spec import InputSpec

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
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
    p = Path(data)
    if not p.exists():
        raise ATFRError(f"calibration data {p} does not exist")
    if p.is_dir():
        vids = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTS)
        if not vids:
            raise ATFRError(f"calibration data folder {p} holds no videos ({', '.join(sorted(VIDEO_EXTS)[:5])}, ...)")
        return vids
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ATFRError(f"calibration list {p} is not a readable text file ({e.__class__.__name__})") from None
    vids = []
    for ln in lines:
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        # A whole line that names a file wins; else the first token (a label may follow it).
        cands = [Path(ln), Path(ln.split()[0])]
        f = next((c if c.is_absolute() else p.parent / c for c in cands
                  if (c if c.is_absolute() else p.parent / c).exists()), None)
        vids.append(f or (cands[1] if cands[1].is_absolute() else p.parent / cands[1]))
    if not vids:
        raise ATFRError(f"calibration list {p} names no videos")
    return vids


def read_video(path: Path) -> tuple[np.ndarray, float] | None:
    """All frames as uint8 RGB [T,H,W,3] and the fps, or None when OpenCV cannot decode it."""
    import cv2

    if not path.is_file():
        return None
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = []
        while len(frames) < MAX_DECODE_FRAMES:
            ok, fr = cap.read()
            if not ok or fr is None:
                break
            frames.append(cv2.cvtColor(fr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        return None
    if not (fps > 0 and math.isfinite(fps)):
        fps = 30.0
    return np.stack(frames, 0), fps


def _preprocessor(spec: InputSpec):
    """The runtime's Preprocessor; a minimal fallback (cv2 resize + centre crop) if it is absent."""
    try:
        from atfr.runtime.preprocess import Preprocessor
        return Preprocessor(spec)
    except ImportError:  # pragma: no cover - the runtime ships preprocess.py
        return _FallbackPreprocessor(spec)


class _FallbackPreprocessor:  # pragma: no cover
    def __init__(self, spec: InputSpec):
        self.spec = spec

    def inputs(self, frames: np.ndarray, spatial_indices=(1,)) -> list[np.ndarray]:
        import cv2

        from atfr.runtime.clips import normalize, pack_pathways

        s, ss = self.spec.crop_size, self.spec.short_side
        h, w = frames.shape[1:3]
        r = ss / min(h, w)
        nh, nw = max(s, int(h * r)), max(s, int(w * r))
        fr = np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_LINEAR) for f in frames])
        outs = []
        for si in spatial_indices:
            y0 = (nh - s) // 2 if nh >= nw else (nh - s) * si // 2
            x0 = (nw - s) // 2 if nw > nh else (nw - s) * si // 2
            outs.append(pack_pathways(normalize(np.ascontiguousarray(fr[:, y0:y0 + s, x0:x0 + s]), self.spec), self.spec))
        return [np.concatenate([o[p] for o in outs], 0) for p in range(len(outs[0]))]


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
    pre = _preprocessor(spec)
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
