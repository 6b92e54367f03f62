"""Helpers to run the golden whole-model cases through the official-format loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atfr.models.checkpoint import load_checkpoint

from conftest import normalize_frames, slow_indices


def load_golden_model(gdir: Path, name: str):
    lm = load_checkpoint(gdir / name / "checkpoint.pyth")  # official dict, embedded cfg, strict keys
    return lm


def clip_inputs(gdir: Path, name: str, clips: list[str], alpha: int) -> list[torch.Tensor]:
    xs = [normalize_frames(np.load(gdir / name / c / "frames.npy")) for c in clips]
    x = torch.from_numpy(np.concatenate(xs, 0))
    if alpha:
        return [torch.index_select(x, 2, torch.from_numpy(slow_indices(x.shape[2], alpha))), x]
    return [x]


def expected(gdir: Path, name: str, case: str) -> dict[str, np.ndarray]:
    d = np.load(gdir / name / case / "expected.npz")
    return {k: d[k] for k in d.files}


def run_case(lm, xs, exp=None, inject_golden_delta=False):
    """Official-mode forward (batch zero padding) recording each SGS layer's output, k and mask.
    With inject_golden_delta, the SGS layers use the golden Δ instead of their own."""
    model = lm.model.eval()
    model.batch_independent = False
    with torch.no_grad():
        feats, dists = model.front_with_distances(xs)
        rec = {}
        for p, ts in sorted(model.ts_layer_map().items()):
            d = torch.from_numpy(exp[f"ts{p}_distances"]) if inject_golden_delta else dists[p]
            y, k = ts.sample(feats[p], d)
            n, c, b, h, w = y.shape
            rec[p] = {"output": y.numpy(), "k": k.numpy(), "B": b, "dist": dists[p].numpy(),
                      "mask": (y.permute(0, 2, 1, 3, 4).reshape(n, b, -1).sum(2) != 0).numpy()}
            feats[p] = y
        logits = model.back(feats)
    return logits.numpy(), torch.softmax(logits, 1).numpy(), rec
