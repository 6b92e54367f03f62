"""Clips from .npy files ([T,H,W,3] uint8 RGB, as in shared/golden) into model inputs. Torch-free."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atfr.errors import ATFRError
from atfr.spec import InputSpec


def load_clip_npy(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise ATFRError(f"clip {p} does not exist")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ATFRError(f"{p}: not a readable .npy array ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(arr, np.ndarray):
        raise ATFRError(f"{p}: expected one array, got {type(arr).__name__}")
    return arr


def check_frames(frames: np.ndarray, spec: InputSpec, source: str = "clip") -> None:
    if frames.dtype != np.uint8:
        raise ATFRError(f"{source}: expected uint8 RGB frames, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ATFRError(f"{source}: expected shape [T,H,W,3], got {list(frames.shape)}")
    if frames.shape[0] != spec.num_frames:
        raise ATFRError(f"{source}: the clip has {frames.shape[0]} frames, the model takes {spec.num_frames}")
    if min(frames.shape[1:3]) < 8:
        raise ATFRError(f"{source}: frames of {frames.shape[1]}x{frames.shape[2]} are too small")


def normalize(frames: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 [T,H,W,3] -> float32 [3,T,H,W] in the official op order: x/255, -mean, /std."""
    x = frames.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def pack_pathways(x: np.ndarray, spec: InputSpec) -> list[np.ndarray]:
    """[3,T,S,S] -> list per pathway of [1,3,T_p,S,S] (SlowFast: slow = the official frame subset)."""
    from atfr.runtime.video.preprocess import pack_pathways as pack

    return [np.ascontiguousarray(p[None]) for p in pack(x, spec.slowfast_alpha)]


def frames_to_inputs(frames: np.ndarray, spec: InputSpec, source: str = "clip") -> list[np.ndarray]:
    """The model's inputs for one clip: normalisation only when the frames already have the model's
    input size, else the model's test transform (short-side resize + centre crop)."""
    check_frames(frames, spec, source)
    s = spec.crop_size
    if frames.shape[1] == s and frames.shape[2] == s:
        return pack_pathways(normalize(frames, spec), spec)
    from atfr.runtime.video.preprocess import preprocess_clip  # the runtime's one implementation of the transform
    return pack_pathways(preprocess_clip(frames, spec), spec)
