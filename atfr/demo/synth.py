"""A procedurally generated action dataset for the built-in demo. Torch-free (numpy + OpenCV).

Eight classes that differ by *motion* (and, within a class, vary in appearance and speed):

====================  ==========================================================================
still                 a static scene with foreground objects; nothing moves
slow_translation      1-3 objects glide across a static background at 0.4-1.0 px/frame
fast_translation      1-3 objects move across a static background at 2.5-4 px/frame
rotation              an elongated object spins in place at 8-20 degrees/frame
flicker               a static scene whose global brightness oscillates (sinusoid)
camera_pan            the whole scene (background and objects) shifts at 1.2-3 px/frame
scene_cut             a static scene replaced by another one (a cut every 5-11 frames)
bouncing              one object bounces on a floor under gravity (a bounce every 6-13 frames)
====================  ==========================================================================

Speeds are given for 64-px frames and scale with ``size``. Backgrounds are random smooth
colour textures with static distractor shapes; objects are random shapes, colours and
textures. Every clip is a pure function of its ``numpy.random.Generator``, and
:func:`make_dataset` derives one generator per clip from ``(seed, split, class, index)``, so a
dataset is reproducible from its seed and one class's clips do not depend on the others.

Clips are uint8 ``[T, H, W, 3]`` RGB, generated directly at the model's input size.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from atfr.errors import ATFRError

CLASSES: list[str] = [
    "still",
    "slow_translation",
    "fast_translation",
    "rotation",
    "flicker",
    "camera_pan",
    "scene_cut",
    "bouncing",
]

STILL, SLOW, FAST, ROTATION, FLICKER, PAN, CUT, BOUNCE = range(len(CLASSES))

# Speed ranges in pixels per frame at size 64 (scaled with size).
SLOW_SPEED = (0.4, 1.0)
FAST_SPEED = (2.5, 4.0)
PAN_SPEED = (1.2, 3.0)
ROT_SPEED_DEG = (8.0, 20.0)
DEFAULT_NOISE = 1.5  # std of per-frame Gaussian sensor noise, in 0..255 levels

_SHAPES = ("circle", "square", "rect", "triangle", "bar", "cross", "diamond", "star")
_ELONGATED = ("rect", "triangle", "bar", "cross", "star")


# -- appearance ----------------------------------------------------------------------------------
def _colour(rng: np.random.Generator, lo: float = 0.0, hi: float = 255.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=3).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Smooth random field in [-1, 1] (bicubic upsampling of a coarse grid)."""
    gh = max(2, int(round(cells * h / max(h, w))))
    gw = max(2, int(round(cells * w / max(h, w))))
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.clip(out, -1.0, 1.0)


def _background(rng: np.random.Generator, h: int, w: int, ref: int) -> np.ndarray:
    """float32 [h,w,3] in 0..255: base colour + smooth colour texture + optional pattern."""
    base = _colour(rng, 40, 215)
    scale = ref / 64.0
    cells = int(rng.integers(3, 10)) * max(h, w) / ref
    tex = _smooth_noise(rng, h, w, int(round(cells)), 3) * rng.uniform(15, 40)
    img = base[None, None, :] + tex
    kind = rng.integers(0, 3)
    if kind == 1:  # fine blobs: gives a pan something to track
        fine = _smooth_noise(rng, h, w, int(round(rng.uniform(12, 20) * max(h, w) / ref)), 1)
        img = img + fine * rng.uniform(12, 30)
    elif kind == 2:  # soft stripes
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(8, 20) * scale
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        s = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
        img = img + s[:, :, None] * rng.uniform(8, 22)
    return np.clip(img, 0, 255).astype(np.float32)


def _shape_mask(kind: str, s: int, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased float32 mask [s,s] in 0..1 of a shape centred in an s x s patch."""
    up = 4  # draw at 4x and downsample: anti-aliasing for every shape
    n = s * up
    m = np.zeros((n, n), np.uint8)
    c = n / 2.0
    r = n * 0.46
    if kind == "circle":
        cv2.circle(m, (int(c), int(c)), int(r), 255, -1)
    elif kind == "square":
        a = r * 0.8
        cv2.rectangle(m, (int(c - a), int(c - a)), (int(c + a), int(c + a)), 255, -1)
    elif kind == "rect":
        a, b = r, r * rng.uniform(0.35, 0.55)
        cv2.rectangle(m, (int(c - a), int(c - b)), (int(c + a), int(c + b)), 255, -1)
    elif kind == "bar":
        a, b = r, r * rng.uniform(0.15, 0.28)
        cv2.rectangle(m, (int(c - a), int(c - b)), (int(c + a), int(c + b)), 255, -1)
    elif kind == "triangle":
        pts = np.array([[c - r, c + r * 0.6], [c + r, c + r * 0.6], [c - r * 0.5, c - r * 0.9]], np.int32)
        cv2.fillPoly(m, [pts], 255)
    elif kind == "cross":
        a, b = r, r * 0.25
        cv2.rectangle(m, (int(c - a), int(c - b)), (int(c + a), int(c + b)), 255, -1)
        b2, a2 = r * 0.25, r * 0.6
        cv2.rectangle(m, (int(c - b2), int(c - a2)), (int(c + b2), int(c + a2)), 255, -1)
    elif kind == "diamond":
        pts = np.array([[c, c - r], [c + r * 0.7, c], [c, c + r], [c - r * 0.7, c]], np.int32)
        cv2.fillPoly(m, [pts], 255)
    elif kind == "star":
        k = int(rng.integers(3, 6))
        ang = np.arange(2 * k) * math.pi / k
        rad = np.where(np.arange(2 * k) % 2 == 0, r, r * 0.4)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 255)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    return cv2.resize(m, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _sprite(rng: np.random.Generator, ref: int, shapes=_SHAPES, bg: np.ndarray | None = None):
    """(rgb float32 [s,s,3], alpha float32 [s,s]) of a random shape with colour and texture."""
    s = int(round(rng.uniform(16, 26) * ref / 64.0)) | 1
    kind = shapes[int(rng.integers(0, len(shapes)))]
    alpha = _shape_mask(kind, s, rng)
    col = _colour(rng)
    if bg is not None:  # keep the object visible: push its colour away from the background mean
        mean = bg.reshape(-1, 3).mean(0)
        if np.abs(col - mean).mean() < 60:
            col = np.where(mean > 127, mean - rng.uniform(80, 140), mean + rng.uniform(80, 140))
            col = np.clip(col, 0, 255).astype(np.float32)
    rgb = np.broadcast_to(col, (s, s, 3)).astype(np.float32).copy()
    if rng.random() < 0.5:  # textured object (stripes or blobs): rotation and motion are visible
        if rng.random() < 0.5:
            yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
            rgb += (np.sin(xx * rng.uniform(0.6, 1.4)) * rng.uniform(25, 50))[:, :, None]
        else:
            rgb += _smooth_noise(rng, s, s, 4, 3) * rng.uniform(25, 50)
    return np.clip(rgb, 0, 255), alpha


def _paste(img: np.ndarray, sprite, cx: float, cy: float, angle: float = 0.0) -> None:
    """Composite a sprite into img (in place) centred at (cx, cy), rotated by angle degrees."""
    rgb, alpha = sprite
    s = alpha.shape[0]
    m = cv2.getRotationMatrix2D(((s - 1) / 2.0, (s - 1) / 2.0), angle, 1.0)
    m[0, 2] += cx - (s - 1) / 2.0
    m[1, 2] += cy - (s - 1) / 2.0
    h, w = img.shape[:2]
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    nz = a > 0
    if not nz.any():
        return
    c = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0.0, 0.0, 0.0))
    a3 = a[:, :, None]
    np.copyto(img, img * (1.0 - a3) + c * a3)


def _scene(rng: np.random.Generator, h: int, w: int, ref: int) -> np.ndarray:
    """Static background with 0-2 distractor shapes."""
    bg = _background(rng, h, w, ref)
    for _ in range(int(rng.integers(0, 3))):
        sp = _sprite(rng, ref, bg=bg)
        _paste(bg, sp, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 360))
    return bg


def _still_with_objects(rng, size, n_obj=(1, 3)) -> np.ndarray:
    img = _scene(rng, size, size, size)
    for _ in range(int(rng.integers(*n_obj))):
        sp = _sprite(rng, size, bg=img)
        m = 0.2 * size
        _paste(img, sp, rng.uniform(m, size - m), rng.uniform(m, size - m), rng.uniform(0, 360))
    return img


# -- motion --------------------------------------------------------------------------------------
def _translation(rng, t: int, size: int, speed: tuple[float, float]) -> list[np.ndarray]:
    bg = _scene(rng, size, size, size)
    movers = []
    for _ in range(int(rng.integers(1, 4))):  # 1-3 objects, each with its own speed and heading
        sp = _sprite(rng, size, bg=bg)
        v = rng.uniform(*speed) * size / 64.0
        th = rng.uniform(0, 2 * math.pi)
        x0, y0 = rng.uniform(0.15 * size, 0.85 * size), rng.uniform(0.15 * size, 0.85 * size)
        movers.append((sp, v * math.cos(th), v * math.sin(th), x0, y0, rng.uniform(0, 360)))
    frames = []
    for i in range(t):
        img = bg.copy()
        for sp, vx, vy, x0, y0, ang in movers:
            s = sp[1].shape[0]
            period = size + s  # leaves fully on one side before it re-enters on the other
            x = (x0 + vx * i + s / 2) % period - s / 2
            y = (y0 + vy * i + s / 2) % period - s / 2
            _paste(img, sp, x, y, ang)
        frames.append(img)
    return frames


def _rotation(rng, t: int, size: int) -> list[np.ndarray]:
    bg = _scene(rng, size, size, size)
    sp = _sprite(rng, int(size * 1.25), shapes=_ELONGATED, bg=bg)
    w = rng.uniform(*ROT_SPEED_DEG) * (1 if rng.random() < 0.5 else -1)
    cx, cy = rng.uniform(0.3 * size, 0.7 * size), rng.uniform(0.3 * size, 0.7 * size)
    a0 = rng.uniform(0, 360)
    frames = []
    for i in range(t):
        img = bg.copy()
        _paste(img, sp, cx, cy, a0 + w * i)
        frames.append(img)
    return frames


def _flicker(rng, t: int, size: int) -> list[np.ndarray]:
    img = _still_with_objects(rng, size)
    amp = rng.uniform(0.3, 0.5)
    f = rng.uniform(0.12, 0.3)  # cycles per frame
    ph = rng.uniform(0, 2 * math.pi)
    return [img * (1.0 + amp * math.sin(2 * math.pi * f * i + ph)) for i in range(t)]


def _pan(rng, t: int, size: int) -> list[np.ndarray]:
    v = rng.uniform(*PAN_SPEED) * size / 64.0
    th = rng.uniform(0, 2 * math.pi)
    vx, vy = v * math.cos(th), v * math.sin(th)
    span = int(math.ceil(v * max(t - 1, 0))) + 4
    big = size + span
    canvas = _scene(rng, big, big, size)
    for _ in range(int(rng.integers(2, 5))):  # objects are part of the scene: they pan too
        sp = _sprite(rng, size, bg=canvas)
        _paste(canvas, sp, rng.uniform(0, big), rng.uniform(0, big), rng.uniform(0, 360))
    # start so that the whole path stays inside the canvas
    x0 = 2 + (span - 4 if vx < 0 else 0)
    y0 = 2 + (span - 4 if vy < 0 else 0)
    frames = []
    for i in range(t):
        cx = x0 + vx * i + (size - 1) / 2.0
        cy = y0 + vy * i + (size - 1) / 2.0
        frames.append(cv2.getRectSubPix(canvas, (size, size), (cx, cy)))
    return frames


def _scene_cut(rng, t: int, size: int) -> list[np.ndarray]:
    cuts = []
    c = int(rng.integers(4, 12))  # first cut at frame 4..11: every 16-frame window has one
    while c < t:
        cuts.append(c)
        c += int(rng.integers(5, 12))
    frames = []
    img = _still_with_objects(rng, size)
    for i in range(t):
        if i in cuts:
            img = _still_with_objects(rng, size)
        frames.append(img)
    return frames


def _bouncing(rng, t: int, size: int) -> list[np.ndarray]:
    bg = _scene(rng, size, size, size)
    sp = _sprite(rng, size, bg=bg)
    s = sp[1].shape[0]
    period = rng.uniform(6, 13)  # frames between bounces
    height = rng.uniform(0.3, 0.55) * size  # apex above the floor
    floor = size - s / 2.0 - rng.uniform(0, 0.08 * size)
    g = 8.0 * height / period ** 2
    phase = rng.uniform(0, period)
    vx = rng.uniform(-1.0, 1.0) * size / 64.0
    x0 = rng.uniform(0.25 * size, 0.75 * size)
    ang, spin = rng.uniform(0, 360), rng.uniform(-5, 5)
    frames = []
    for i in range(t):
        tau = (i + phase) % period
        y = floor - 0.5 * g * tau * (period - tau)
        x = x0 + vx * i
        lo, hi = s / 2.0, size - s / 2.0  # bounce off the side walls too
        span = hi - lo
        u = (x - lo) % (2 * span)
        x = lo + (u if u <= span else 2 * span - u)
        img = bg.copy()
        _paste(img, sp, x, y, ang + spin * i)
        frames.append(img)
    return frames


def make_clip(class_id: int, rng: np.random.Generator, num_frames: int = 16, size: int = 64,
              noise: float = DEFAULT_NOISE) -> np.ndarray:
    """One clip of class ``class_id``: uint8 [num_frames, size, size, 3] RGB.

    ``noise`` is the std of independent Gaussian sensor noise added to every frame (0 = none,
    so a ``still`` clip is then exactly constant in time).
    """
    if not 0 <= int(class_id) < len(CLASSES):
        raise ATFRError(f"class id {class_id} out of range (0..{len(CLASSES) - 1})")
    if int(num_frames) < 1:
        raise ATFRError(f"num_frames must be >= 1, got {num_frames}")
    if int(size) < 16:
        raise ATFRError(f"size must be >= 16 pixels, got {size}")
    t, size, cid = int(num_frames), int(size), int(class_id)
    if cid == STILL:
        img = _still_with_objects(rng, size)
        frames = [img] * t
    elif cid == SLOW:
        frames = _translation(rng, t, size, SLOW_SPEED)
    elif cid == FAST:
        frames = _translation(rng, t, size, FAST_SPEED)
    elif cid == ROTATION:
        frames = _rotation(rng, t, size)
    elif cid == FLICKER:
        frames = _flicker(rng, t, size)
    elif cid == PAN:
        frames = _pan(rng, t, size)
    elif cid == CUT:
        frames = _scene_cut(rng, t, size)
    else:
        frames = _bouncing(rng, t, size)
    clip = np.stack(frames, 0).astype(np.float32)
    if noise > 0:
        clip += rng.normal(0.0, float(noise), size=clip.shape).astype(np.float32)
    return np.clip(np.rint(clip), 0, 255).astype(np.uint8)


def clip_rng(seed: int, split: int, class_id: int, index: int) -> np.random.Generator:
    """The generator of one clip: independent per (seed, split, class, index)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(split), int(class_id), int(index)])


def make_dataset(n_per_class: int, seed: int = 0, num_frames: int = 16, size: int = 64, split: int = 0,
                 classes: list[int] | None = None, noise: float = DEFAULT_NOISE) -> tuple[np.ndarray, np.ndarray]:
    """(clips uint8 [N,T,H,W,3], labels int64 [N]) with n_per_class clips of every class.

    Deterministic in (n_per_class, seed, num_frames, size, split); use different ``split``
    values (e.g. 0 train, 1 held-out) for disjoint sets from one seed.
    """
    if int(n_per_class) < 1:
        raise ATFRError(f"n_per_class must be >= 1, got {n_per_class}")
    ids = list(range(len(CLASSES))) if classes is None else [int(c) for c in classes]
    clips, labels = [], []
    for i in range(int(n_per_class)):
        for c in ids:
            clips.append(make_clip(c, clip_rng(seed, split, c, i), num_frames, size, noise))
            labels.append(c)
    return np.stack(clips, 0), np.asarray(labels, dtype=np.int64)


def make_dataset_in_worker(n_per_class: int, seed: int, num_frames: int, size: int,
                           split: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`make_dataset` for a helper process: one OpenCV thread, the trainer owns the cores.
    Lives here, not in the trainer, so the worker imports this torch-free module only."""
    cv2.setNumThreads(1)
    return make_dataset(n_per_class, seed, num_frames, size, split)


def mean_abs_frame_diff(clip: np.ndarray) -> float:
    """Mean |frame[t+1] - frame[t]| over a uint8 [T,H,W,3] clip (0 for a single frame)."""
    if clip.shape[0] < 2:
        return 0.0
    c = clip.astype(np.float32)
    return float(np.abs(np.diff(c, axis=0)).mean())


# -- demo videos ---------------------------------------------------------------------------------
def _write_video(path: Path, clip: np.ndarray, fps: float) -> Path | None:
    """Write clip (RGB) losslessly (FFV1 .avi), falling back to mp4v .mp4 and MJPG .avi.

    Lossless first: lossy codecs add frame-to-frame flicker (up to ~18 grey levels at 64 px), which
    SGS rightly sees as change, and the demo's still clips would not look still. Atomic; None if
    no codec works."""
    h, w = clip.shape[1:3]
    for fourcc, ext in (("FFV1", ".avi"), ("mp4v", ".mp4"), ("MJPG", ".avi")):
        final = path.with_suffix(ext)
        tmp = final.with_name(f".{final.stem}.partial{os.getpid()}{ext}")
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
        try:
            if not vw.isOpened():
                continue
            for f in clip:
                vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        finally:
            vw.release()
        if tmp.exists() and tmp.stat().st_size > 0:
            os.replace(tmp, final)
            return final
        if tmp.exists():
            tmp.unlink()
    return None


def write_demo_videos(outdir: str | os.PathLike, seed: int = 0, n_per_class: int = 1, fps: float = 30.0,
                      frames: int = 48, size: int = 64, force: bool = False) -> list[Path]:
    """Write n_per_class demo videos per class into outdir as ``<class>_<i>.avi`` (FFV1, lossless; .mp4 if FFV1 is missing).

    The clips come from split 2 (never used for training). Videos are written at the model's
    input size, so the runtime's resize and crop are identities. Existing files are not
    overwritten unless ``force``. Returns the written paths, class by class.
    """
    if int(n_per_class) < 1:
        raise ATFRError(f"n_per_class must be >= 1, got {n_per_class}")
    if not float(fps) > 0:
        raise ATFRError(f"fps must be > 0, got {fps}")
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ATFRError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    names = [(c, i, out / f"{CLASSES[c]}_{i:02d}") for c in range(len(CLASSES)) for i in range(int(n_per_class))]
    if not force:
        for _, _, base in names:
            for ext in (".mp4", ".avi"):
                if base.with_suffix(ext).exists():
                    raise ATFRError(f"{base.with_suffix(ext)} already exists; pass --force to overwrite it")
    written = []
    for c, i, base in names:
        clip = make_clip(c, clip_rng(seed, 2, c, i), frames, size)
        p = _write_video(base, clip, fps)
        if p is None:
            raise ATFRError(f"cannot write video {base}.mp4: OpenCV has neither the mp4v nor the MJPG encoder")
        written.append(p)
    return written
