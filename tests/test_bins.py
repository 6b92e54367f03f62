"""Run-time bins (--bins B_run, the paper's Table A.4): the numpy SGS with B_run bins equals the
PyTorch SGS layer built with num_bins = B_run (the official arithmetic for NUM_BINS = B_run), on
the golden SGS op inputs and end to end on a tiny export; the CLI checks the range."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from atfr.models import sgs as TS
from atfr.runtime import sgs_numpy as S
from atfr.spec import SGSSpec

from conftest import golden_dir

U32 = 2.0 ** -24  # fp32 unit roundoff


def _ok_cases():
    try:
        g = golden_dir() / "sgs_op"
    except pytest.skip.Exception:
        return [pytest.param(None, marks=pytest.mark.skip(reason="golden files not found"))]
    idx = json.loads((g / "index.json").read_text())
    return [pytest.param(g / c["file"], c["B"], id=c["file"]) for c in idx["cases"]
            if c["status"] == "ok" and not c.get("informational") and not c.get("output_has_nan")]


def _runs(b: int) -> list[int]:
    return sorted({b, max(1, b // 2), min(3, b), 1}, reverse=True)


def _torch_layer(b_run: int, kernel: str, drop: bool, c: int) -> TS.TSLayer:
    """The PyTorch SGS layer constructed with num_bins = B_run (only its sampling part is used)."""
    return TS.TSLayer(SGSSpec(channels=max(2, c), num_bins=b_run, kernel=kernel, drop_bins=drop))


@pytest.mark.parametrize("path,trained_b", _ok_cases())
def test_numpy_bins_match_torch_sgs_on_golden_inputs(path, trained_b):
    d = np.load(path)
    x, delta = d["X"], d["distances"]
    kernel, drop = str(d["kernel_type"]), bool(d["drop_bins"])
    t = x.shape[2]
    for b_run in _runs(int(trained_b)):
        r = S.sgs_step(x, delta, b_run, kernel, drop)
        layer = _torch_layer(b_run, kernel, drop, x.shape[1])
        ty, tk = layer.sample(torch.from_numpy(x), torch.from_numpy(delta))
        kraw = TS.bin_weights(torch.from_numpy(delta), b_run, kernel).numpy()
        # Exact: the bin arithmetic (kernel matrix bit for bit), k per sample and B'.
        np.testing.assert_array_equal(r.kernel_raw, kraw, err_msg=f"B_run={b_run}")
        np.testing.assert_array_equal(r.k_per_sample, tk.numpy(), err_msg=f"B_run={b_run}")
        assert r.b_prime == ty.shape[2] and r.b_prime <= b_run
        # The official 2B scaling and centres with B = B_run: max δ ~ 2 B_run, centres ~ 2b+1.
        np.testing.assert_allclose(r.scaled.max(axis=1), 2 * b_run, rtol=4 * U32 * 2)
        np.testing.assert_allclose(r.centers, np.broadcast_to(2 * np.arange(b_run) + 1.0, r.centers.shape),
                                   rtol=0, atol=2 * b_run * 8 * U32)
        # Values: Y = K X, summed over T by numpy matmul and torch bmm in different orders. Each
        # result is within gamma_T * (|K| |X|) of the exact sum (gamma_T = T u / (1 - T u)); the two
        # differ by at most twice that, element by element.
        n, c, _, h, w = x.shape
        xf = np.abs(np.transpose(x, (0, 2, 1, 3, 4)).reshape(n, t, -1)).astype(np.float64)
        bound = np.abs(r.kernel).astype(np.float64) @ xf
        bound = np.transpose(bound.reshape(n, -1, c, h, w), (0, 2, 1, 3, 4))
        gamma = t * U32 / (1 - t * U32)
        diff = np.abs(r.output.astype(np.float64) - ty.numpy().astype(np.float64))
        assert (diff <= 2 * gamma * bound + 1e-30).all(), f"B_run={b_run}: max diff {diff.max()}"
        if b_run == int(trained_b) and int(d["num_bins_arg"]) != -1:
            # At the trained B the override is the official result itself (the golden file).
            np.testing.assert_array_equal(r.kernel, d["kernel"])


def test_fewer_bins_keep_fewer_frames_on_golden_inputs():
    """B' <= B_run always, and shrinking B_run really changes B' somewhere (the test can fail)."""
    cases = [c for c in _ok_cases() if c.values and c.values[0] is not None]
    if not cases:
        pytest.skip("golden files not found")
    changed = 0
    for c in cases:
        path, b = c.values
        d = np.load(path)
        full = S.sgs_step(d["X"], d["distances"], int(b), str(d["kernel_type"]), bool(d["drop_bins"])).b_prime
        small = S.sgs_step(d["X"], d["distances"], 3, str(d["kernel_type"]), bool(d["drop_bins"])).b_prime
        assert small <= 3
        changed += small < full
    assert changed > 0


# -- tiny export end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_checkpoint, tiny_export):
    from atfr.export.verify import verification_clips
    from atfr.models.checkpoint import load_checkpoint
    from atfr.runtime.manifest import load_manifest

    lm = load_checkpoint(tiny_checkpoint)
    m = load_manifest(tiny_export)
    return lm, m, verification_clips(lm, m, 4, [])


def _set_reference_bins(model, b_run):
    for layer in model.modules():
        if isinstance(layer, TS.TSLayer):
            layer.spec = dataclasses.replace(layer.spec, num_bins=b_run)


@pytest.mark.parametrize("sgs_impl", ["numpy", "fallback"])
def test_pipeline_bins_match_torch_model(tiny, tiny_export, sgs_impl):
    """Pipeline(bins=B_run) against the torch model whose SGS has num_bins = B_run: B' and top-1
    exact on every clip, logits within verify's default tolerances (the same check as
    `atfr verify --bins`)."""
    from atfr.export.verify import Tolerances, verify_backend
    from atfr.runtime.pipeline import Pipeline

    lm, m, clips = tiny
    b = m.sgs[0].bins
    pl = Pipeline.load(tiny_export, "onnxruntime", sgs=sgs_impl)
    seen: dict[int, list[tuple[int, ...]]] = {}
    try:
        for b_run in _runs(b):
            pl.set_bins(b_run)
            _set_reference_bins(lm.model, b_run)
            rep = verify_backend(lm, pl, clips, Tolerances())
            assert rep.bprime_agree == rep.clips == len(clips), (b_run, rep.bprime_mismatches)
            assert rep.top1_agree == rep.clips, b_run
            assert rep.ok, (b_run, {k: (s.max_abs, s.limit) for k, s in rep.stats.items()})
            seen[b_run] = [r.bprime for r in pl.infer(clips[0])]
            assert all(bp[0] <= b_run for bp in seen[b_run])
    finally:
        _set_reference_bins(lm.model, b)
    pl.set_bins(None)
    assert pl.sgs.num_bins is None and pl.infer(clips[0])[0].bprime == seen[b][0]  # back to the trained B


def test_set_bins_range(tiny_export):
    from atfr.errors import ATFRError
    from atfr.runtime.pipeline import Pipeline

    pl = Pipeline.load(tiny_export, "onnxruntime")
    b = pl.trained_bins
    for bad in (0, -1, b + 1):
        with pytest.raises(ATFRError, match="--bins"):
            pl.set_bins(bad)
    pl.set_bins(b)
    assert pl.bins == b
    pl.sgs = None  # a TensorRT front engine with SGS inside: bins are baked in, refused
    with pytest.raises(ATFRError, match="--sgs host"):
        pl.set_bins(2)


def _cli(capsys, *argv):
    from atfr.cli import main

    rc = main(list(map(str, argv)))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_bins(tiny_export, tiny_checkpoint, capsys):
    from atfr.runtime.manifest import load_manifest

    b = load_manifest(tiny_export).sgs[0].bins
    rc, out, err = _cli(capsys, "verify", tiny_export, "--checkpoint", tiny_checkpoint, "--clips", "1", "--backend", "onnxruntime",
                        "--bins", "2", "--json")
    assert rc == 0, err
    rep = json.loads(out)[0]
    assert rep["bprime_agree"] == rep["clips"] > 0
    for bad in ("0", str(b + 1)):
        rc, out, err = _cli(capsys, "verify", tiny_export, "--checkpoint", tiny_checkpoint, "--bins", bad)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "--bins" in err, err
    rc, out, err = _cli(capsys, "infer", tiny_export, "--input", _clip_npy(tiny_export), "--bins", "1", "--json")
    assert rc == 0, err
    assert json.loads(out)["bprime"] == [1]  # one bin: every frame lands in it, B' = 1
    rc, out, err = _cli(capsys, "infer", tiny_export, "--input", _clip_npy(tiny_export), "--bins", "-3")
    assert rc == 2 and "--bins -3" in err


def _clip_npy(export) -> str:
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(export)
    path = export.parent / "bins_clip.npy"
    if not path.exists():
        rng = np.random.default_rng(0)
        np.save(path, rng.integers(0, 256, (m.input.num_frames, 40, 48, 3), dtype=np.uint8))
    return str(path)


def test_bench_with_bins(tiny_export, tmp_path):
    """atfr bench --bins: the end-to-end B' stays within B_run and the report records it."""
    from atfr.bench.runner import BenchOptions, run_benchmark

    rep = run_benchmark(BenchOptions(export=str(tiny_export), warmup=0, iters=1, bprime=[1], bins=1,
                                     progress=False, measure_overhead=False))
    assert rep["config"]["bins"] == 1
    assert rep["stages"]["end_to_end_bprime"] == [[1]]
