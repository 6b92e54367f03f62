"""Shared by the AdaFuse tests: the official references, their checkpoints, and the policy check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atfr.models.adafuse_config import from_official_text
from atfr.models.adafuse_weights import bn_prefixes, seeded_state_dict
from atfr.models.zoo import build_model

REFS = Path(__file__).parent / "data" / "adafuse_refs.npz"


def load_ref(name: str) -> dict[str, np.ndarray]:
    with np.load(REFS) as z:
        return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(name + "/")}


def write_official(d: Path, ref: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """The reference's seeded weights as an official checkpoint ({"state_dict": module.* names})
    and its flags as a zz_eval.sh-style command line."""
    cfg = d / "flags.sh"
    cfg.write_text(str(ref["flags"]) + " | tee tmp_log.txt\n")
    model = build_model(from_official_text(str(ref["flags"])))
    sd = seeded_state_dict(model.state_dict(), int(ref["seed"]), bn_prefixes(model))
    ckpt = d / "adafuse.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, ckpt)
    return ckpt, cfg


def assert_policies(got: list, ref: dict[str, np.ndarray], rtol: float) -> None:
    """Policies identical to the official reference. Where a channel's best and second-best
    log-probabilities are closer than the float bound of two evaluations (rtol of the network
    times the log-probabilities' magnitude), another CPU's summation order may legitimately pick
    the other action, and everything downstream changes with it: such a flip skips the test
    (naming the gap); a flip anywhere else fails it. The reference machine reproduces every entry."""
    tol = rtol * max(1.0, float(ref["policy_logprob_max"]))
    n = len(ref["gated_blocks"])
    assert len(got) == n
    near_tie = []
    for i in range(n):
        g, want = np.asarray(got[i]), ref[f"policy_{i}"]
        assert g.shape == want.shape
        bad = g != want
        if bad.any():
            gaps = ref[f"policy_gap_{i}"].astype(np.float32)[bad]
            assert (gaps <= tol).all(), f"block {i}: {int(bad.sum())} policy entries differ, gaps {gaps.max():.2e} > {tol:.2e}"
            near_tie.append(float(gaps.max()))
    if near_tie:
        pytest.skip(f"a near-tie policy entry (gap {max(near_tie):.1e} <= bound {tol:.1e}) flipped on this CPU")


# A tiny AdaFuse-TSN (R18, 4 frames of 32^2, 5 classes, gated blocks in stages 1 and 3) with seeded
# random weights whose policies vary (skip, reuse and keep all occur): `atfr run` tests.
TINY_ADAFUSE = {"arch": "adafuse", "depth": 18, "num_classes": 5, "num_frames": 4, "crop_size": 32,
                "adafuse": {"gate_bn_between_fcs": True, "gate_relu_between_fcs": True, "enabled_stages": [1, 3]}}


def tiny_adafuse_model(shift: bool = False):
    """The tiny AdaFuse-TSN, or with ``shift`` its AdaFuse-TSM twin (the same weights)."""
    from atfr.models.adafuse_config import from_compact
    from atfr.models.adafuse_weights import randomize

    compact = {**TINY_ADAFUSE, "adafuse": {**TINY_ADAFUSE["adafuse"], "shift": shift}}
    cfg = from_compact(compact)
    model = build_model(cfg).eval()
    randomize(model, 7)
    return model, cfg
