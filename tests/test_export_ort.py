"""Split export + ONNX Runtime pipeline against the PyTorch model and the golden outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from atfr.errors import ATFRError
from atfr.export.exporter import ExportOptions, export_model, structured_clips
from atfr.models.checkpoint import load_checkpoint, save_checkpoint
from atfr.models.config import from_compact
from atfr.models.zoo import build_model
from atfr.runtime.manifest import load_manifest
from atfr.runtime.pipeline import Pipeline

from conftest import GOLDEN_CLIPS, GOLDEN_MODELS, normalize_frames, slow_indices
from tolerances import LAMBDA, U32, end_to_end_atol, magnitude, onnx_shape, prob_atol, sgs_amplification


def _golden_inputs(golden, name, clip, alpha):
    x = normalize_frames(np.load(golden / name / clip / "frames.npy"))
    return [np.ascontiguousarray(x[:, :, slow_indices(x.shape[2], alpha)]), x] if alpha else [x]


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_export_on_onnxruntime(golden, golden_exports, name):
    """Identical B' and top-1 on every golden clip; values within the bounds of tests/tolerances.py:
    a graph fed the same input as torch within its own summation-order bound, end to end within
    the front's bound amplified 2B by SGS (each side computes its own Delta)."""
    pl = Pipeline.load(golden_exports[name])
    m = pl.manifest
    front, back = onnx_shape(m.path("front")), onnx_shape(m.path("back"))
    bins = [layer.bins for layer in m.sgs]
    lm = load_checkpoint(golden / name / "checkpoint.pyth")
    model = lm.model.eval()
    model.batch_independent = True
    alpha = m.input.slowfast_alpha
    mono = ort.InferenceSession(str(golden_exports[name] / "model.onnx"))
    for clip in GOLDEN_CLIPS:
        exp = np.load(golden / name / clip / "expected.npz")
        xs = _golden_inputs(golden, name, clip, alpha)
        res = pl.infer(xs)[0]
        assert list(res.bprime) == [int(exp[f"ts{p}_B_prime"]) for p in range(len(res.bprime))]
        # torch 1.9 (golden) vs ONNX Runtime: other conv kernels on both sides of SGS.
        e2e = end_to_end_atol(front, back, bins, exp["logits"][0])
        np.testing.assert_allclose(res.logits, exp["logits"][0], rtol=0, atol=e2e)
        np.testing.assert_allclose(res.probs, exp["probs"][0], rtol=0, atol=prob_atol(e2e))
        assert int(np.argmax(res.probs)) == int(np.argmax(exp["probs"][0]))
        # monolithic model.onnx (front + standard-op SGS + back) vs the split pipeline: ONNX Runtime
        # may pick other kernels for the larger graph (it did on AVX-512: 2.3e-5), and a Delta
        # that differs in the last ulp is amplified 2B by SGS, so the same end-to-end bound.
        mono_logits = mono.run(None, {f"clip{p}": x for p, x in enumerate(xs)})[0][0]
        np.testing.assert_allclose(mono_logits, res.logits, rtol=0, atol=end_to_end_atol(front, back, bins, res.logits))
        # back graph alone, same input as torch: only the back's own summation order.
        fo = pl.run_front(xs)
        (feeds, _), = pl.run_sgs(fo)
        with torch.no_grad():
            ref = model.back([torch.from_numpy(feeds[m.back_input_name(p)])
                              for p in range(m.num_pathways)]).numpy()
        tol = back.rtol * magnitude(ref)
        np.testing.assert_allclose(pl.run_back(feeds), ref, rtol=0, atol=tol)
        # The bound still catches a real bug: two swapped feature channels move the logits past it.
        bad = {k: v.copy() for k, v in feeds.items()}
        k0 = m.back_input_name(0)
        bad[k0][:, [0, 1]] = bad[k0][:, [1, 0]]
        assert np.abs(pl.run_back(bad) - ref).max() > 10 * tol


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_back_graph_runs_for_every_tprime(golden, golden_exports, name):
    m = load_manifest(golden_exports[name])
    back = ort.InferenceSession(str(m.path("back")))
    back_rtol = onnx_shape(m.path("back")).rtol
    model = load_checkpoint(golden / name / "checkpoint.pyth").model.eval()
    rng = np.random.default_rng(0)
    grids = []
    if len(m.sgs) == 1:
        grids = [(t,) for t in range(1, m.sgs[0].bins + 1)]
    else:  # every slow T' with a spread of fast T', plus the full diagonal
        bs, bf = m.sgs[0].bins, m.sgs[1].bins
        grids = [(a, b) for a in range(1, bs + 1) for b in (1, 2, 5, bf)] + [(bs, b) for b in range(1, bf + 1)]
    for tp in grids:
        feeds = {}
        for layer, t in zip(m.sgs, tp):
            feeds[f"sgs{layer.pathway}"] = rng.normal(size=(1, layer.channels, t, layer.height, layer.width)).astype(np.float32)
        out = back.run(None, feeds)[0]
        assert out.shape == (1, m.num_classes) and np.isfinite(out).all()
        if tp[0] in (1, 3) or tp == grids[-1]:
            with torch.no_grad():
                ref = model.back([torch.from_numpy(feeds[f"sgs{l.pathway}"]) for l in m.sgs]).numpy()
            # same input on both sides: the back's summation-order bound (tests/tolerances.py)
            np.testing.assert_allclose(out, ref, rtol=0, atol=back_rtol * magnitude(ref))


def test_custom_node_front_equals_fallback_front(golden, golden_exports):
    """front_plugin.onnx (custom SGS node, run through a Python test implementation in ORT) and
    front_fallback.onnx (standard ops) give the same outputs on the same inputs."""
    from test_sgs_golden import run_custom_node
    import onnx

    d = golden_exports["slowfast_atfr_4x16_r50_w16"]
    xs = _golden_inputs(golden, "slowfast_atfr_4x16_r50_w16", "d_scenecut", 8)
    feeds = {"clip0": xs[0], "clip1": xs[1]}
    fb = ort.InferenceSession(str(d / "front_fallback.onnx"))
    want = dict(zip([o.name for o in fb.get_outputs()], fb.run(None, feeds)))
    got_list = run_custom_node(onnx.load(str(d / "front_plugin.onnx")), feeds)
    got = dict(zip([o.name for o in onnx.load(str(d / "front_plugin.onnx")).graph.output], got_list))
    assert set(got) == set(want) == {"sgs0", "bprime0", "sgs1", "bprime1"}
    # Both graphs run the same front ops before SGS, but ONNX Runtime may pick other kernels per
    # graph: the front's bound, amplified 2B by SGS, on the SGS outputs' magnitude. B' exact.
    front = onnx_shape(d / "front.onnx")
    bins = {f"sgs{layer.pathway}": layer.bins for layer in load_manifest(d).sgs}
    for k in want:
        if k.startswith("bprime"):
            np.testing.assert_array_equal(got[k], want[k])
        else:
            atol = (1 + sgs_amplification(bins[k])) * front.rtol * magnitude(want[k])
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol)
    assert (int(want["bprime0"]), int(want["bprime1"])) == (2, 14)  # golden B' of d_scenecut


def test_runtime_imports_no_torch():
    code = ("import sys, atfr.runtime.pipeline, atfr.runtime.manifest, atfr.runtime.sgs_numpy, "
            "atfr.runtime.video.clips, atfr.runtime.backends; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_nan_input_is_a_clear_error_and_constant_clip_is_fine(tiny_export):
    pl = Pipeline.load(tiny_export)
    shape = pl.manifest.clip_shapes(1)[0]
    x = np.zeros(shape, np.float32)
    x[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ATFRError, match="NaN or Inf"):
        pl.infer([x])
    res = pl.infer([np.full(shape, 0.3, np.float32)])[0]  # constant frames: B' >= 1, finite
    assert all(b >= 1 for b in res.bprime) and np.isfinite(res.logits).all()
    with pytest.raises(ATFRError, match="does not match the export"):
        pl.infer([np.zeros((1, 3, 4, 32, 32), np.float32)])


def test_export_refuses_to_overwrite_without_force(tiny_checkpoint, tiny_export):
    before = (tiny_export / "front.onnx").read_bytes()
    with pytest.raises(ATFRError, match="--force"):
        export_model(load_checkpoint(tiny_checkpoint), tiny_export, ExportOptions())
    assert (tiny_export / "front.onnx").read_bytes() == before
    assert not [p for p in tiny_export.parent.iterdir() if p.name.startswith(".atfr-export-")]


ZOO = {
    "3dresnet": {"arch": "3dresnet", "depth": 18, "width_per_group_slow": 8, "width_per_group_fast": 4,
                 "num_frames": 8, "crop_size": 32},
    "slowfast": {"arch": "slowfast", "depth": 50, "width_per_group": 8, "alpha": 4, "beta_inv": 4,
                 "fusion_kernel": 5, "num_frames": 16, "crop_size": 32},
    "x3d": {"arch": "x3d", "variant": "S", "num_frames": 8, "crop_size": 48},
    "i3d": {"arch": "i3d", "depth": 50, "width_per_group": 8, "num_frames": 8, "crop_size": 32},
    "r2plus1d": {"arch": "r2plus1d", "depth": 50, "width_per_group": 8, "num_frames": 8, "crop_size": 32},
}


def _randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm3d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("arch", list(ZOO))
@pytest.mark.parametrize("sgs", [True, False], ids=["atfr", "static"])
def test_zoo_exports_match_torch(arch, sgs, tmp_path):
    torch.manual_seed(0)
    cfg = from_compact(dict(ZOO[arch], num_classes=7, sgs_stage="res2" if sgs else "none"))
    model = build_model(cfg).eval()
    _randomize_bn(model, 1)
    ck = tmp_path / "m.pt"
    save_checkpoint(ck, model, cfg, [str(i) for i in range(7)])
    out = export_model(load_checkpoint(ck), tmp_path / "exp", ExportOptions())
    pl = Pipeline.load(out)
    front, back = onnx_shape(pl.manifest.path("front")), onnx_shape(pl.manifest.path("back"))
    assert len(pl.manifest.sgs) == (len(model.ts_layer_map()) if sgs else 0)
    model.batch_independent = True
    spec = model.input_spec
    clips = structured_clips(model, spec.num_frames, spec.crop_size)
    # the batch path groups clips by B': one call with all clips equals torch per clip
    batch = [np.concatenate([c[p].numpy() for c in clips], 0) for p in range(model.num_pathways)]
    results = pl.infer(batch)
    with torch.no_grad():
        ref_logits, ref_bp = model.forward_with_bprime([torch.from_numpy(b) for b in batch])
    for i, r in enumerate(results):
        assert list(r.bprime) == ref_bp[i].tolist()
        # torch vs ONNX Runtime, each with its own Delta: tests/tolerances.py end-to-end bound.
        atol = end_to_end_atol(front, back, [layer.bins for layer in pl.manifest.sgs], ref_logits[i].numpy())
        np.testing.assert_allclose(r.logits, ref_logits[i].numpy(), rtol=0, atol=atol)
        if sgs:
            assert all(1 <= b <= l.bins for b, l in zip(r.bprime, pl.manifest.sgs))


@pytest.mark.slow
def test_x3d_s_atfr_export_and_one_clip(tmp_path):
    """X3D-S+ATFR at 13x160x160: export and one clip on ONNX Runtime (times are in the README)."""
    cfg = from_compact({"arch": "x3d", "variant": "S", "num_classes": 400})
    model = build_model(cfg).eval()
    ck = tmp_path / "x3d_s.pt"
    save_checkpoint(ck, model, cfg)
    out = export_model(load_checkpoint(ck), tmp_path / "exp", ExportOptions())
    pl = Pipeline.load(out)
    assert pl.manifest.clip_shapes(1) == [(1, 3, 13, 160, 160)]
    res = pl.infer([np.random.default_rng(0).normal(size=(1, 3, 13, 160, 160)).astype(np.float32)])[0]
    assert res.probs.shape == (400,) and 1 <= res.bprime[0] <= 13


def test_export_leaves_the_model_untouched(tiny_checkpoint, tmp_path):
    """Regression: exporting must not switch the model to train mode or change BN statistics
    (the export wrappers once restored train mode onto it, and the B' statistics then updated
    running stats)."""
    lm = load_checkpoint(tiny_checkpoint)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    export_model(lm, tmp_path / "e", ExportOptions())
    assert not any(m.training for m in lm.model.modules())
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pipeline_with_onnx_fallback_sgs_equals_numpy_sgs(golden, golden_exports):
    """Pipeline.load(sgs="fallback") runs sgs_fallback.onnx between the graphs: same B' and
    logits as the numpy SGS step, on both golden models (SlowFast: two SGS layers)."""
    for name in GOLDEN_MODELS:
        a = Pipeline.load(golden_exports[name], sgs="numpy")
        b = Pipeline.load(golden_exports[name], sgs="fallback")
        back = onnx_shape(a.manifest.path("back"))
        alpha = a.manifest.input.slowfast_alpha
        for clip in ("b_static", "d_scenecut"):
            xs = _golden_inputs(golden, name, clip, alpha)
            ra, rb = a.infer(xs)[0], b.infer(xs)[0]
            assert ra.bprime == rb.bprime
            # Same front output (same Delta) into both SGS steps: their scaled distances agree
            # bit for bit (README), so the outputs differ by the weighted sums' order (sqrt(T)
            # terms) plus, should one ulp of the Delta scaling differ, 2B ulps; then the back's
            # own bound (its kernels see slightly different inputs).
            t = max(layer.frames for layer in a.manifest.sgs)
            amp = max(sgs_amplification(layer.bins) for layer in a.manifest.sgs)
            tol = (LAMBDA * U32 * np.sqrt(t) + amp * U32 + back.rtol) * magnitude(ra.logits)
            np.testing.assert_allclose(rb.logits, ra.logits, rtol=0, atol=tol)
