"""GFLOPs counter: published figures, front + SGS + back consistency, fvcore cross-check."""

from __future__ import annotations

import pytest
import torch

from atfr.models.config import from_compact
from atfr.models.flops import count_gflops, flops_report, gflops_vs_bprime
from atfr.models.zoo import build_model


def _meta_model(**compact):
    # Shapes are all the counter needs: build on meta (no init compute, no memory).
    with torch.device("meta"):
        return build_model(from_compact(compact))


# (compact config, published static GFLOPs, source). All within 3 %.
PUBLISHED = [
    (dict(arch="x3d", variant="S", num_frames=13, crop_size=160), 1.96, "X3D paper / PySlowFast zoo, X3D-S 13x160^2"),
    (dict(arch="x3d", variant="M", num_frames=16, crop_size=224), 4.73, "X3D-M 16x224^2"),
    (dict(arch="x3d", variant="L", num_frames=16, crop_size=312), 18.3, "ATFR paper Table 8, X3D-L alpha"),
    (dict(arch="x3d", variant="XL", num_frames=16, crop_size=356), 48.4, "ATFR paper Table 8, X3D-XL beta"),
    (dict(arch="slowfast", depth=50, width_per_group=64, alpha=8, beta_inv=8, fusion_kernel=5,
          num_frames=32, crop_size=256), 36.1, "SlowFast paper, 4x16 R50 at 256^2"),
    (dict(arch="i3d", depth=50, num_frames=32, crop_size=256, num_classes=200), 148.4,
     "ATFR paper Table 7, I3D R50 (32 frames, 256^2 test)"),
    (dict(arch="3dresnet", depth=50, num_frames=32, crop_size=256, num_classes=200), 40.8,
     "ATFR paper Table 7, 3DResNet R50"),
]


@pytest.mark.parametrize("compact,published,source", PUBLISHED, ids=[p[2].split(",")[-1].strip() for p in PUBLISHED])
def test_static_gflops_match_published(compact, published, source):
    m = _meta_model(sgs_stage="none", num_classes=compact.pop("num_classes", 400), **compact)
    g = count_gflops(m)
    assert g["sgs"] == 0 and g["layers"] == []
    assert g["static"] == pytest.approx(g["total"])
    assert abs(g["static"] - published) / published < 0.03, (source, g["static"])


def test_atfr_static_equals_plain_static():
    """Adding SGS must not change the static (no-SGS) count: same convs, same shapes."""
    base = dict(arch="x3d", variant="S", num_frames=13, crop_size=160)
    plain = count_gflops(_meta_model(sgs_stage="none", **base))
    atfr = count_gflops(_meta_model(sgs_stage="res2", **base))
    assert atfr["static"] == pytest.approx(plain["static"], rel=1e-12)
    assert atfr["front"] + atfr["back"] == pytest.approx(plain["static"], rel=1e-12)  # at B' = B = T


def test_total_is_front_plus_sgs_plus_back_and_aggregation_is_hand_derived():
    m = _meta_model(arch="x3d", variant="S", num_frames=13, crop_size=160, sgs_stage="res2", latent_dim=8)
    rows = gflops_vs_bprime(m)
    assert [r["bprime"] for r in rows] == [[b] for b in range(1, 14)]
    # X3D-S res2 output: C=24 at 13 x 40 x 40 (stem /2, res2 /2 on 160).
    c, t, hw = 24, 13, 40 * 40
    embed = t * (c * (c // 2) + (c // 2) * 8) / 1e9  # fc 24->12->8 per frame
    for r in rows:
        assert r["total"] == pytest.approx(r["front"] + r["sgs"] + r["back"], rel=1e-12)
        assert r["sgs"] == pytest.approx(embed + r["bprime"][0] * t * c * hw / 1e9, rel=1e-12)
    backs = [r["back"] for r in rows]
    assert all(b1 < b2 for b1, b2 in zip(backs, backs[1:]))
    # X3D keeps T through res3..res5 and the head pools globally: the back is affine in B'
    # (conv MACs scale with T'; only the head's lin_5/projection run once).
    d1 = backs[1] - backs[0]
    assert all(b2 - b1 == pytest.approx(d1, rel=1e-9) for b1, b2 in zip(backs, backs[1:]))
    g = count_gflops(m, bprime=5)
    assert g["total"] == pytest.approx(rows[4]["total"], rel=1e-12)
    assert rows[-1]["ratio"] > 1 > rows[0]["ratio"]  # full B' pays the SGS overhead, B'=1 saves


def test_slowfast_table_is_full_grid_and_depends_on_both_pathways():
    m = _meta_model(arch="slowfast", depth=50, width_per_group=16, num_frames=16, crop_size=64,
                    alpha=8, num_classes=10)
    rows = gflops_vs_bprime(m)
    assert [r["bprime"] for r in rows] == [[s, f] for s in (1, 2) for f in range(1, 17)]
    by = {tuple(r["bprime"]): r for r in rows}
    # Fast B' changes the fast back and, via s2_fuse (ceil(T'f/8)) + padding, the slow back too.
    assert by[(1, 16)]["back"] > by[(1, 8)]["back"] > by[(1, 1)]["back"]
    assert by[(2, 1)]["back"] > by[(1, 1)]["back"]
    # The fused tensor pads slow to max(T's, ceil(T'f/8)); with T'f=9 that is 2 for either T's.
    # So the slow pathway costs the same for (1,9) and (2,9): only the SGS aggregation differs.
    assert by[(1, 9)]["back"] == pytest.approx(by[(2, 9)]["back"], rel=1e-12)
    for r in rows:
        assert r["total"] == pytest.approx(r["front"] + r["sgs"] + r["back"], rel=1e-12)


def test_meta_and_real_zero_tensors_agree():
    m = build_model(from_compact(dict(arch="i3d", depth=18, width_per_group=8, num_frames=8, crop_size=32,
                                      num_classes=5, latent_dim=4)))
    a = flops_report(m, device="meta")
    b = flops_report(m, device="cpu")
    assert a == b


def test_count_gflops_rejects_out_of_range_bprime():
    m = _meta_model(arch="x3d", variant="S", num_frames=8, crop_size=32, num_classes=5)
    with pytest.raises(ValueError):
        count_gflops(m, bprime=9)
    with pytest.raises(ValueError):
        count_gflops(m, bprime=[1, 2])


def _fvcore_macs(model, inputs) -> int:
    """fvcore's count of the ops our convention counts (conv, linear/addmm/matmul, bmm)."""
    fv = pytest.importorskip("fvcore.nn")
    fca = fv.FlopCountAnalysis(model, inputs)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    ops = fca.by_operator()
    # fvcore also counts batch_norm and adaptive_avg_pool*; the published convention does not.
    return sum(v for k, v in ops.items() if k in ("conv", "linear", "addmm", "matmul", "mm", "bmm"))


@pytest.mark.parametrize("compact", [
    dict(arch="x3d", variant="S", num_frames=8, crop_size=64, num_classes=7),
    dict(arch="r2plus1d", depth=18, width_per_group=8, num_frames=8, crop_size=64, num_classes=7),
], ids=["x3d", "r2plus1d"])
def test_static_count_matches_fvcore(compact):
    torch.manual_seed(0)
    m = build_model(from_compact(dict(sgs_stage="none", **compact))).eval()
    x = torch.randn(1, 3, compact["num_frames"], compact["crop_size"], compact["crop_size"])
    ours = count_gflops(m, [tuple(x.shape)])["static"]
    with torch.no_grad():
        ref = _fvcore_macs(m, ([x],)) / 1e9
    assert ours == pytest.approx(ref, rel=1e-9)


def test_atfr_count_matches_fvcore_at_the_actual_bprime():
    """With SGS, fvcore sees the embedding Linear layers and the aggregation bmm of the real
    forward; our front + sgs(B') + back(B') at that clip's B' must be the same number."""
    torch.manual_seed(0)
    m = build_model(from_compact(dict(arch="i3d", depth=18, width_per_group=8, num_frames=8, crop_size=32,
                                      num_classes=5, latent_dim=4, sgs_stage="res2"))).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        _, k = m.forward_with_bprime([x])
        ref = _fvcore_macs(m, ([x],)) / 1e9
    ours = count_gflops(m, [tuple(x.shape)], bprime=int(k[0, 0]))["total"]
    assert ours == pytest.approx(ref, rel=1e-9)
