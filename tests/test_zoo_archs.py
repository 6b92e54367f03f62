"""X3D, R(2+1)D and I3D: build, split contract, B' range, training, naming, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tolerances import end_to_end_atol, torch_split_shapes

from atfr.models.config import from_compact
from atfr.models.r2plus1d import R2Plus1D, mid_channels
from atfr.models.zoo import build_model

SMALL = {
    "x3d": dict(arch="x3d", variant="S", num_frames=8, crop_size=32),
    # Tran et al.'s parameter-matched R(2+1)D (the zoo's first default; mid-channel checks below).
    "r2plus1d": dict(arch="r2plus1d", depth=18, width_per_group=8, num_frames=8, crop_size=32,
                     r2plus1d_mid="param_matched", temporal_strides=[1, 1, 1, 1]),
    "i3d": dict(arch="i3d", depth=18, width_per_group=8, num_frames=8, crop_size=32),
}


def _build(arch: str, stage: str = "res2", **kw):
    torch.manual_seed(0)
    cfg = from_compact(dict(SMALL[arch], num_classes=5, latent_dim=4, sgs_stage=stage, **kw))
    return build_model(cfg)


def _clip(n: int = 1, t: int = 8, s: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, t, s, s, generator=g)


def _monolithic(model, x: torch.Tensor) -> torch.Tensor:
    """Stage-by-stage forward that never calls front/back: each ResStage.forward applies its own
    TSLayer (official padded semantics), as the official network's forward does."""
    xs = model.s1([x])
    for s in range(2, 6):
        xs = getattr(model, f"s{s}")(xs)
        if s == 2 and hasattr(model, "pathway0_pool"):
            xs = [model.pathway0_pool(xs[0])]
    return model.head(xs)


ARCH_STAGES = [("x3d", "res2"), ("x3d", "res3"), ("x3d", "none"), ("r2plus1d", "res2"), ("r2plus1d", "none"),
               ("i3d", "res2"), ("i3d", "none")]


@pytest.mark.parametrize("arch,stage", ARCH_STAGES)
def test_split_equals_monolithic_forward(arch, stage):
    m = _build(arch, stage).eval()
    x = _clip(n=2)
    with torch.no_grad():
        ref = _monolithic(m, x)
        out, k = m.forward_with_bprime([x])
    assert out.shape == (2, 5)
    # Same torch ops on both paths; should a kernel's summation order differ, each path computes
    # its own Δ, so the end-to-end bound of tests/tolerances.py (B <= the clip's T).
    front, back = torch_split_shapes(m, [x])
    bins = [ts.spec.num_bins if ts.spec.num_bins > 0 else x.shape[2] for ts in m.ts_layer_map().values()]
    torch.testing.assert_close(out, ref, rtol=0, atol=end_to_end_atol(front, back, bins, ref.numpy()))
    if stage == "none":
        assert k.shape == (2, 0)
        assert m.ts_layer_map() == {}
        assert not any("ts_layer" in key for key in m.state_dict())
        # front still splits after res2 and returns its pre-ReLU sum (negative values exist).
        with torch.no_grad():
            f = m.front([x])
        assert len(f) == 1 and f[0].shape[2] == 8 and bool((f[0] < 0).any())
    else:
        assert k.shape == (2, 1)
        assert set(m.ts_layer_map()) == {0}
        assert f"s{stage[3]}.ts_layer.fc.0.weight" in m.state_dict()


@pytest.mark.parametrize("arch", ["x3d", "r2plus1d", "i3d"])
def test_bprime_range_and_back_accepts_every_bprime(arch):
    m = _build(arch).eval()
    ts = m.ts_layer_map()[0]
    with torch.no_grad():
        feats = m.front([_clip()])
        t = feats[0].shape[2]
        assert t == 8 and ts.spec.bins_for(t) == 8
        for seed in range(3):
            _, k = m.forward_with_bprime([_clip(seed=seed)])
            assert 1 <= int(k[0, 0]) <= 8
        for bp in range(1, 9):  # includes B'=1 (I3D's temporal pool must not collapse it to 0)
            xs = [torch.randn(1, feats[0].shape[1], bp, *feats[0].shape[3:])]
            assert m.back(xs).shape == (1, 5)
        # an all-identical clip collapses almost everything into few bins
        _, k_static = m.forward_with_bprime([_clip()[:, :, :1].expand(1, 3, 8, 32, 32).contiguous()])
        assert 1 <= int(k_static[0, 0]) <= 8


@pytest.mark.parametrize("arch", ["x3d", "r2plus1d", "i3d"])
def test_training_step_reaches_ts_layer(arch):
    m = _build(arch).train()
    ts = m.ts_layer_map()[0]
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x = _clip(n=2)
    before = ts.fc[0].weight.detach().clone()
    loss = nn.functional.cross_entropy(m([x]), torch.tensor([1, 3]))
    loss.backward()
    for lin in (ts.fc[0], ts.fc[2]):
        assert lin.weight.grad is not None
        assert torch.isfinite(lin.weight.grad).all() and lin.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, ts.fc[0].weight)


def test_x3d_pyslowfast_names_and_structure():
    m = _build("x3d", "none")
    sd = m.state_dict()
    for key in ["s1.pathway0_stem.conv_xy.weight", "s1.pathway0_stem.conv.weight", "s1.pathway0_stem.bn.running_var",
                "s2.pathway0_res0.branch1.weight", "s2.pathway0_res0.branch1_bn.weight",
                "s2.pathway0_res0.branch2.a.weight", "s2.pathway0_res0.branch2.a_bn.weight",
                "s2.pathway0_res0.branch2.b.weight", "s2.pathway0_res0.branch2.b_bn.weight",
                "s2.pathway0_res0.branch2.se.fc1.weight", "s2.pathway0_res0.branch2.se.fc2.bias",
                "s2.pathway0_res0.branch2.c.weight", "s2.pathway0_res0.branch2.c_bn.weight",
                "s5.pathway0_res6.branch2.se.fc1.weight",
                "head.conv_5.weight", "head.conv_5_bn.weight", "head.lin_5.weight",
                "head.projection.weight", "head.projection.bias"]:
        assert key in sd, key
    # SE on every other block only (block_idx 0, 2, 4, ...).
    assert "s2.pathway0_res1.branch2.se.fc1.weight" not in sd
    assert "s2.pathway0_res1.branch1.weight" not in sd
    # X3D-S: depths ceil(2.2 * [1,2,5,3]) = [3,5,11,7]; widths 24/48/96/192; inner 2.25x; channelwise b.
    assert m.stage_depths == [3, 5, 11, 7] and m.stage_dims == [24, 48, 96, 192]
    assert sd["s1.pathway0_stem.conv_xy.weight"].shape == (24, 3, 1, 3, 3)
    assert sd["s1.pathway0_stem.conv.weight"].shape == (24, 1, 5, 1, 1)
    assert sd["s2.pathway0_res0.branch2.b.weight"].shape == (54, 1, 3, 3, 3)
    assert sd["s2.pathway0_res0.branch2.se.fc1.weight"].shape == (8, 54, 1, 1, 1)  # round_width(54*1/16)=8
    assert sd["s5.pathway0_res0.branch2.a.weight"].shape == (432, 96, 1, 1, 1)
    assert sd["head.conv_5.weight"].shape == (432, 192, 1, 1, 1)
    assert sd["head.lin_5.weight"].shape == (2048, 432, 1, 1, 1)


@pytest.mark.parametrize("variant,params_m", [("S", 3.79), ("L", 6.1), ("XL", 11.09)])
def test_x3d_parameter_counts_match_paper(variant, params_m):
    """ATFR paper Table 8 (from X3D): X3D-S 3.79 M, X3D-L 6.1 M, X3D-XL 11.09 M (400 classes)."""
    with torch.device("meta"):
        m = build_model(from_compact(dict(arch="x3d", variant=variant, sgs_stage="none", num_classes=400)))
    n = sum(p.numel() for p in m.parameters()) / 1e6
    # Not float noise: the paper rounds to 2-3 significant digits (6.1 M for our exact 6.15 M),
    # so 1% covers its rounding; a missing or extra block (several % of the parameters) fails.
    assert abs(n - params_m) / params_m < 0.01, n


def test_x3d_official_factor_keys_override_variant():
    # An official X3D_L.yaml dump has DEPTH_FACTOR 5.0 and no VARIANT key: it must build L.
    cfg = from_compact(dict(arch="x3d", sgs_stage="none", x3d={"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 5.0,
                                                                 "BOTTLENECK_FACTOR": 2.25}))
    with torch.device("meta"):
        m = build_model(cfg)
    assert m.variant == "S" and m.stage_depths == [5, 10, 25, 15]


def test_r2plus1d_mid_channels_and_shapes():
    assert mid_channels(3, 3, 64, 64) == 144  # floor(27*64*64 / (9*64 + 3*64)) = floor(2.25*64)
    assert mid_channels(3, 7, 3, 64) == 83  # floor(3*49*3*64 / (49*3 + 3*64))
    m = _build("r2plus1d", "none")
    assert isinstance(m, R2Plus1D)
    sd = m.state_dict()
    assert sd["s1.pathway0_stem.conv_xy.weight"].shape == (mid_channels(3, 7, 3, 8), 3, 1, 7, 7)
    assert sd["s1.pathway0_stem.conv.weight"].shape == (8, mid_channels(3, 7, 3, 8), 3, 1, 1)
    # res2 inner = 8: b_xy 8 -> 18 (1x3x3), b 18 -> 8 (3x1x1)
    assert sd["s2.pathway0_res0.branch2.b_xy.weight"].shape == (18, 8, 1, 3, 3)
    assert sd["s2.pathway0_res0.branch2.b.weight"].shape == (8, 18, 3, 1, 1)
    assert sd["s2.pathway0_res0.branch2.a.weight"].shape == (8, 8, 1, 1, 1)


def test_i3d_temporal_kernels_and_pool():
    with torch.device("meta"):
        m = build_model(from_compact(dict(arch="i3d", depth=50, sgs_stage="res2", num_classes=400)))
    sd = m.state_dict()
    kt = lambda s, i: sd[f"s{s}.pathway0_res{i}.branch2.a.weight"].shape[2]  # noqa: E731
    assert sd["s1.pathway0_stem.conv.weight"].shape == (64, 3, 5, 7, 7)
    assert [kt(2, i) for i in range(3)] == [3, 3, 3]
    assert [kt(3, i) for i in range(4)] == [3, 1, 3, 1]
    assert [kt(4, i) for i in range(6)] == [3, 1, 3, 1, 3, 1]
    assert [kt(5, i) for i in range(3)] == [1, 3, 1]
    assert sd["s2.ts_layer.fc.0.weight"].shape == (128, 256)
    assert m.pathway0_pool.kernel_size == [2, 1, 1]
