"""Seed 003's baselines (TSN, TAM, fully inflated I3D) and the reconciled R(2+1)D-50.

GFLOPs are the counter's multiply-adds (models/flops.py). The settings are the ones the tables
imply, worked out in models/tsn.py, models/i3d.py and models/r2plus1d.py:

* seed 003 Table 1 (V100 throughput table): 32 frames x 256^2 (their full-dataset protocol feeds
  32 frames and tests on 256x256 crops), 400 classes (Kinetics). TSN is the "-tp" variant
  (temporal max pools after res2..res4); TAM and I3D have no temporal pooling or striding.
* seed 003 Table 3 (f=8, the 224^2 clip-level protocol): 8 frames x 224^2, no temporal pooling.
  Its parameter counts (M) match with 87 classes (Mini-SSV2, half of SSV2's 174).
* ATFR paper Table 7: R(2+1)D-50 at 32 x 256^2 (test crop), 200 classes (Mini-Kinetics).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atfr.models.checkpoint import load_checkpoint, save_checkpoint
from atfr.models.config import from_compact
from atfr.models.flops import count_gflops
from atfr.models.zoo import build_model


def _meta(**compact):
    with torch.device("meta"):
        return build_model(from_compact(dict(sgs_stage="none", **compact)))


def _gflops(**compact) -> float:
    return count_gflops(_meta(**compact))["static"]


TABLE1 = [  # (compact, seed 003 Table 1 GFLOPs)
    (dict(arch="tsn", depth=50, temporal_pool=True), 73.9),
    (dict(arch="tam", depth=50), 171.5),
    (dict(arch="i3d_3x3x3", depth=50), 335.3),
    (dict(arch="slowfast", depth=50, width_per_group=64, alpha=4, beta_inv=8, fusion_kernel=7), 65.7),
]


@pytest.mark.parametrize("compact,published", TABLE1, ids=["TSN-R50-tp", "TAM-R50", "I3D-R50", "SlowFast-R50-8x8"])
def test_table1_gflops_at_32x256(compact, published):
    g = _gflops(num_frames=32, crop_size=256, num_classes=400, **compact)
    assert abs(g - published) / published < 0.03, g


TABLE3 = [("tsn", 32.7, 23.7), ("tam", 32.8, 23.7), ("i3d_3x3x3", 64.2, 46.3)]  # ResNet50: None, TAM, I3D


@pytest.mark.parametrize("arch,gflops,params_m", TABLE3)
def test_table3_gflops_and_parameters_at_8x224(arch, gflops, params_m):
    m = _meta(arch=arch, depth=50, num_frames=8, crop_size=224, num_classes=87)
    g = count_gflops(m)["static"]
    assert abs(g - gflops) / gflops < 0.03, g
    n = sum(p.numel() for p in m.parameters()) / 1e6
    assert abs(n - params_m) / params_m < 0.01, n


def test_tsn_is_torchvision_resnet50_sized():
    """torchvision's resnet50 (1000 classes) has 25,557,032 parameters (its model card)."""
    m = _meta(arch="tsn", depth=50, num_classes=1000)
    assert sum(p.numel() for p in m.parameters()) == 25_557_032
    # TAM adds 3 taps per input channel of every bottleneck: 3 * (64 + 256*2 + 256 + 512*3 + 512 +
    # 1024*5 + 1024 + 2048*2) = 39,360.
    tam = _meta(arch="tam", depth=50, num_classes=1000)
    assert sum(p.numel() for p in tam.parameters()) == 25_557_032 + 39_360


def test_r2plus1d_default_matches_atfr_table7():
    g = _gflops(arch="r2plus1d", depth=50, num_frames=32, crop_size=256, num_classes=200)
    assert abs(g - 101.8) / 101.8 < 0.03, g
    # Tran et al.'s parameter-matched variant without temporal striding: the zoo's first default.
    legacy = _gflops(arch="r2plus1d", depth=50, num_frames=32, crop_size=256, num_classes=200,
                     r2plus1d_mid="param_matched", temporal_strides=[1, 1, 1, 1])
    assert legacy > 3 * g


def _small(arch, **kw):
    torch.manual_seed(0)
    return build_model(from_compact(dict(arch=arch, depth=50, width_per_group=8, num_frames=8, crop_size=32,
                                         num_classes=5, latent_dim=4, **kw))).eval()


def test_r2plus1d_old_checkpoints_still_load(tmp_path):
    """A checkpoint whose cfg predates the R2PLUS1D keys builds the parameter-matched net it holds."""
    cfg = from_compact(dict(arch="r2plus1d", depth=18, width_per_group=8, num_frames=8, crop_size=32,
                            num_classes=5, sgs_stage="none", r2plus1d_mid="param_matched",
                            temporal_strides=[1, 1, 1, 1]))
    model = build_model(cfg)
    old_cfg = {k: v for k, v in cfg.items() if k != "R2PLUS1D"}
    save_checkpoint(tmp_path / "old.pt", model, old_cfg)
    lm = load_checkpoint(tmp_path / "old.pt")
    sd = lm.model.state_dict()
    assert sd["s2.pathway0_res0.branch2.b_xy.weight"].shape == (18, 8, 1, 3, 3)  # floor(2.25 * 8)
    # the new default: M = inner width, temporal stride 2 at res3..res5
    new = _small("r2plus1d", sgs_stage="none")
    sd = new.state_dict()
    assert sd["s2.pathway0_res0.branch2.b_xy.weight"].shape == (8, 8, 1, 3, 3)
    assert sd["s1.pathway0_stem.conv_xy.weight"].shape == (8, 3, 1, 7, 7)
    assert new.s3.pathway0_res0.branch2.b.stride == (2, 1, 1)
    with torch.no_grad():
        f = new.back(new.front([torch.randn(1, 3, 8, 32, 32)]))
    assert f.shape == (1, 5)


def test_i3d_alias_builds_the_3x1x1_model(tmp_path):
    a = _small("i3d", sgs_stage="none")
    b = _small("i3d_3x1x1", sgs_stage="none")
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    # a checkpoint saved under the old name loads, and its cfg keeps the name it was written with
    save_checkpoint(tmp_path / "i3d.pt", a, a.cfg)
    lm = load_checkpoint(tmp_path / "i3d.pt")
    assert lm.cfg["MODEL"]["ARCH"] == "i3d" and type(lm.model).__name__ == "I3D"


def test_i3d_3x3x3_structure():
    m = _meta(arch="i3d_3x3x3", depth=50, num_classes=400)
    sd = m.state_dict()
    assert sd["s1.pathway0_stem.conv.weight"].shape == (64, 3, 3, 7, 7)
    for s, n, inner in ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)):
        for i in range(n):
            assert sd[f"s{s}.pathway0_res{i}.branch2.b.weight"].shape == (inner, inner, 3, 3, 3)
            assert sd[f"s{s}.pathway0_res{i}.branch2.a.weight"].shape[2:] == (1, 1, 1)
    assert not hasattr(m, "pathway0_pool")


def test_tsn_is_average_consensus_of_per_frame_logits():
    """Without temporal pooling every kernel has temporal size 1: the clip's logits equal the
    mean of the logits of each frame run alone (per-frame 2D network, average consensus)."""
    m = _small("tsn", sgs_stage="none")
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        clip = m([x])
        frames = torch.stack([m([x[:, :, t:t + 1]]) for t in range(4)], 0).mean(0)
    # fp32 sums over ~2k-element reductions: ~1e-6 relative; logits are O(1).
    torch.testing.assert_close(clip, frames, rtol=1e-5, atol=1e-5)


def test_tsn_temporal_pool_lengths():
    m = _small("tsn", sgs_stage="res2", temporal_pool=True)
    with torch.no_grad():
        feats = m.front([torch.randn(1, 3, 8, 32, 32)])
        assert feats[0].shape[2] == 8
        xs = m._after_stage(2, [torch.relu(feats[0])])
        lengths = [xs[0].shape[2]]
        for s in (3, 4):
            xs = m._after_stage(s, getattr(m, f"s{s}")(xs))
            lengths.append(xs[0].shape[2])
        assert lengths == [4, 2, 1]  # kernel 3, stride 2, padding 1: T -> floor((T-1)/2) + 1
        for bp in (1, 2, 3, 8):  # every B' after SGS stays a valid length
            assert m.back([torch.randn(1, feats[0].shape[1], bp, *feats[0].shape[3:])]).shape == (1, 5)


def test_tam_module_is_fan_et_al_prev_curr_next_sum():
    """Hand-written TAM (seed 003 ref. [2]): per channel, w_prev * x[t-1] + w_curr * x[t] +
    w_next * x[t+1] (zero outside the clip), then ReLU; our depthwise 3x1x1 conv must equal it."""
    m = _small("tam", sgs_stage="none")
    tr = m.s3.pathway0_res1.branch2
    c = tr.tam.in_channels
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        tr.tam.weight.copy_(torch.randn(c, 1, 3, 1, 1, generator=g))
        x = torch.randn(2, c, 6, 4, 4, generator=g)
        w = tr.tam.weight[:, 0, :, 0, 0]  # [C, 3] = prev, curr, next
        prev = torch.nn.functional.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :-1]
        nxt = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 1))[:, :, 1:]
        ref = torch.relu(w[:, 0].view(1, c, 1, 1, 1) * prev + w[:, 1].view(1, c, 1, 1, 1) * x
                         + w[:, 2].view(1, c, 1, 1, 1) * nxt)
        torch.testing.assert_close(tr.tam_relu(tr.tam(x)), ref, rtol=1e-6, atol=1e-6)


ARCHS = [("tsn", dict(temporal_pool=True)), ("tam", {}), ("i3d_3x3x3", {}), ("r2plus1d", {})]
# With SGS, TSN-tp (odd T' through the temporal pools) and TAM (depthwise temporal conv on a
# dynamic T') are the new cases; I3D-3x3x3 and strided R(2+1)D with SGS run in the slow set.
CASES = [pytest.param(a, kw, "none", id=f"none-{a}") for a, kw in ARCHS] + [
    pytest.param(a, kw, "res2", id=f"res2-{a}", marks=[pytest.mark.slow] if a in ("i3d_3x3x3", "r2plus1d") else [])
    for a, kw in ARCHS]


@pytest.mark.parametrize("arch,kw,stage", CASES)
def test_seed003_models_export_and_match_torch(arch, kw, stage, tmp_path):
    """Tiny widths/size: the split export on ONNX Runtime equals torch, static and with SGS."""
    from atfr.export.exporter import ExportOptions, export_model, structured_clips
    from atfr.runtime.pipeline import Pipeline

    model = _small(arch, sgs_stage=stage, **kw)
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():  # non-trivial BN so the check is not dominated by identity maps
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    save_checkpoint(tmp_path / "m.pt", model, model.cfg, [str(i) for i in range(5)])
    out = export_model(load_checkpoint(tmp_path / "m.pt"), tmp_path / "exp", ExportOptions())
    pl = Pipeline.load(out)
    assert len(pl.manifest.sgs) == (1 if stage == "res2" else 0)
    model.batch_independent = True
    clips = structured_clips(model, 8, 32)
    batch = [np.concatenate([c[0].numpy() for c in clips], 0)]
    results = pl.infer(batch)
    with torch.no_grad():
        ref, ref_bp = model.forward_with_bprime([torch.from_numpy(batch[0])])
    for i, r in enumerate(results):
        assert list(r.bprime) == ref_bp[i].tolist()
        # ORT vs torch conv kernels differ at ~3e-6 relative per graph; with SGS the B'-bin
        # weights amplify Delta errors by about 2B = 16 (README), hence the looser SGS bound.
        scale = max(1.0, float(ref[i].abs().max()))
        np.testing.assert_allclose(r.logits, ref[i].numpy(), rtol=0, atol=scale * (2e-3 if stage == "res2" else 1e-4))


@pytest.mark.parametrize("arch,kw", ARCHS, ids=[a for a, _ in ARCHS])
def test_split_equals_stage_by_stage_forward(arch, kw):
    """front -> SGS -> back equals running the stages in order, each ResStage applying its own
    SGS layer (official padded semantics), with every temporal pool/stride in between."""
    m = _small(arch, sgs_stage="res2", **kw)
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        xs = m.s1([x])
        for s in range(2, 6):
            xs = m._after_stage(s, getattr(m, f"s{s}")(xs))
        ref = m.head(xs)
        out, k = m.forward_with_bprime([x])
    assert k.shape == (2, 1) and all(1 <= int(v) <= 8 for v in k[:, 0])
    # the same ops in the same order: only the SGS bmm's batching differs (fp32 rounding)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
