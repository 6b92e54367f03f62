"""INT8 calibration: determinism, cache round-trip, CLI errors, int8 vs fp32 agreement."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest


def _write_video(path: Path, rng: np.random.Generator, frames: int = 20, w: int = 48, h: int = 40, speed: int = 1) -> None:
    import cv2

    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    assert vw.isOpened()
    base = cv2.GaussianBlur(rng.integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8), (5, 5), 0)
    for t in range(frames):
        vw.write(np.ascontiguousarray(np.roll(base, (speed * t, t), (0, 1))[:h, :w]))
    vw.release()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("calib_videos")
    rng = np.random.default_rng(0)
    for i in range(5):
        _write_video(d / f"v{i}.avi", rng, frames=16 + 4 * i, speed=i)
    return d


@pytest.fixture
def export_copy(tiny_export, tmp_path) -> Path:
    d = tmp_path / "export"
    shutil.copytree(tiny_export, d)
    return d


def _calibrate(outdir, data, **kw):
    from atfr.calibration.int8 import calibrate

    return calibrate(outdir, data, progress=False, warn=lambda s: None, **kw)


def test_deterministic_for_a_seed_and_cache_round_trips(tiny_export, videos, tmp_path):
    from atfr.calibration.int8 import qdq_scales
    from atfr.runtime.manifest import load_manifest

    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        shutil.copytree(tiny_export, d)
    ra = _calibrate(a, videos, clips=8, seed=3, cache=tmp_path / "cache_a.json", front="int8")
    rb = _calibrate(b, videos, clips=8, seed=3, front="int8")
    assert not ra.from_cache and not rb.from_cache
    for g in ("front_int8", "back_int8"):
        sa, sb = qdq_scales(a / f"{g}.onnx"), qdq_scales(b / f"{g}.onnx")
        assert sa.keys() == sb.keys() and sa
        assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    # The cache alone (no data) reproduces byte-identical Q/DQ graphs.
    rc = _calibrate(c, None, cache=tmp_path / "cache_a.json", front="int8")
    assert rc.from_cache
    for g in ("front_int8", "back_int8"):
        assert (a / f"{g}.onnx").read_bytes() == (c / f"{g}.onnx").read_bytes()
    m = load_manifest(c, check=True)
    assert {"front_int8", "back_int8"} <= set(m.graphs)
    assert m.raw["precision"]["int8"]["method"] == "percentile"
    # Symmetric int8: TensorRT needs every zero-point 0; the SGS embedding/distance is not quantized.
    q = onnx.load(str(c / "front_int8.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    zps = [inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    dist_in = {i for n in q.graph.node if n.op_type in ("Sqrt", "BatchNormalization", "MatMul") for i in n.input}
    prod = {o: n for n in q.graph.node for o in n.output}
    assert not any(prod[t].op_type == "DequantizeLinear" for t in dist_in if t in prod)
    with pytest.raises(Exception, match="--force"):
        _calibrate(a, videos, clips=8, seed=3, front="int8")


def _producers(q: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in q.graph.node for o in n.output}


def test_qdq_placement_is_tensorrt_style(export_copy, videos):
    """Q/DQ only on Conv inputs (activation + per-channel weight); nothing on Conv outputs, pooling,
    the classifier Gemm or the logits; every Conv is quantized. (An identity shortcut shares the
    DQ of the block's first Conv input, so a residual Add may read it: the pattern TensorRT fuses.)"""
    r = _calibrate(export_copy, videos, clips=6, seed=0, front="int8", float_stages=0)
    for g in ("front_int8", "back_int8"):
        q = onnx.load(str(r.graphs[g]))
        prod = _producers(q)
        consumers = {}
        for n in q.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for n in q.graph.node:
            if n.op_type == "QuantizeLinear":
                # a Q's input is never a Conv output, and its DQ only feeds Convs
                assert prod.get(n.input[0]) is None or prod[n.input[0]].op_type != "Conv", n.name
                dqs = consumers[n.output[0]]
                assert all(d.op_type == "DequantizeLinear" for d in dqs)
                assert all(any(c.op_type == "Conv" for c in consumers[d.output[0]]) for d in dqs), n.name
                assert all(c.op_type in ("Conv", "Add") for d in dqs for c in consumers[d.output[0]]), n.name
        convs = [n for n in q.graph.node if n.op_type == "Conv"]
        assert convs and all(prod[n.input[0]].op_type == "DequantizeLinear" and prod[n.input[1]].op_type ==
                             "DequantizeLinear" for n in convs), g
        for n in q.graph.node:
            if n.op_type in ("Gemm", "GlobalAveragePool", "MaxPool", "Concat"):
                assert all(prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in n.input), n.name
        out = q.graph.output[0].name
        assert prod[out].op_type != "DequantizeLinear"
        # per-channel weight scales: one per output channel of each Conv
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
        for n in convs:
            w_dq = prod[n.input[1]]
            w = inits[w_dq.input[0]]
            assert inits[w_dq.input[1]].shape == (w.shape[0],), n.name


def test_first_stage_after_sgs_stays_float(export_copy, videos):
    """float_stages=N leaves the convs of the first N back stages without Q/DQ, quantizes the rest,
    records them in atfr.json, and reuses one cache for any N."""
    from atfr.calibration.int8 import first_stage_convs
    from atfr.runtime.manifest import load_manifest

    back = onnx.load(str(export_copy / "back.onnx"))
    convs = [n.name for n in back.graph.node if n.op_type == "Conv"]
    stages = sorted({c.lstrip("/").split("/")[0] for c in convs})
    assert len(stages) >= 2, stages  # the tiny model has stages after its SGS stage
    first = first_stage_convs(back, 1)
    assert first and {c.lstrip("/").split("/")[0] for c in first} == {stages[0]}
    assert first_stage_convs(back, 0) == [] and set(first_stage_convs(back, 99)) == set(convs)
    for n in (1, 0):
        r = _calibrate(export_copy, videos if n == 1 else None, clips=6, seed=0, cache=export_copy / "c.json",
                       float_stages=n, force=True)
        q = onnx.load(str(r.graphs["back_int8"]))
        prod = _producers(q)
        quantized = {nd.name for nd in q.graph.node
                     if nd.op_type == "Conv" and nd.input[1] in prod and prod[nd.input[1]].op_type == "DequantizeLinear"}
        expect_float = set(first_stage_convs(back, n))
        assert quantized == set(convs) - expect_float
        assert load_manifest(export_copy, check=True).raw["precision"]["int8"]["float_convs"] == first_stage_convs(back, n)
    with pytest.raises(Exception, match="--float-stages"):
        _calibrate(export_copy, None, cache=export_copy / "c.json", float_stages=-1, force=True)


def test_default_quantizes_only_the_back(export_copy, videos, capsys):
    """--front float (default): back_int8 only, recorded in atfr.json; the int8 precision then runs
    the float front with back_int8; switching from --front int8 needs --force and removes front_int8."""
    from atfr.calibration.accuracy import precision_graphs
    from atfr.runtime.manifest import int8_front_mode, load_manifest

    r = _calibrate(export_copy, videos, clips=6, seed=0, cache=export_copy / "c.json")
    assert set(r.graphs) == {"back_int8"} and r.front == "float"
    assert not (export_copy / "front_int8.onnx").exists()
    m = load_manifest(export_copy, check=True)
    assert int8_front_mode(m.raw) == "float" and "front_int8" not in m.graphs
    assert precision_graphs(m, "int8") == ("front_fp16" if "front_fp16" in m.graphs else "front", "back_int8")
    # the same cache serves --front int8 (both stages are always calibrated)
    r2 = _calibrate(export_copy, None, cache=export_copy / "c.json", front="int8", force=True)
    assert r2.from_cache and set(r2.graphs) == {"front_int8", "back_int8"}
    m = load_manifest(export_copy, check=True)
    assert int8_front_mode(m.raw) == "int8" and precision_graphs(m, "int8") == ("front_int8", "back_int8")
    with pytest.raises(Exception, match="already exists; pass --force"):
        _calibrate(export_copy, None, cache=export_copy / "c.json")
    _calibrate(export_copy, None, cache=export_copy / "c.json", force=True)
    m = load_manifest(export_copy, check=True)  # checksums still consistent
    assert "front_int8" not in m.graphs and not (export_copy / "front_int8.onnx").exists()
    assert int8_front_mode(m.raw) == "float"


def test_back_calibration_sees_several_bprimes(export_copy, videos):
    r = _calibrate(export_copy, videos, clips=10, seed=0)
    (hist,) = r.bprime_hist.values()
    assert sum(hist.values()) == 10
    assert any("fewer" in w or "recommended" in w for w in r.warnings)


def _cli(argv, capsys):
    from atfr.cli import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_errors_are_one_line(export_copy, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _cli(["calibrate", str(export_copy), "--data", str(empty), "--clips", "4"], capsys)
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "no videos" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"not a video at all" * 10)
    (bad / "y.avi").write_bytes(b"")
    rc, _, err = _cli(["calibrate", str(export_copy), "--data", str(bad), "--clips", "4"], capsys)
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "no readable video" in err
    rc, _, err = _cli(["calibrate", str(export_copy), "--data", str(tmp_path / "nope")], capsys)
    assert rc != 0 and len(err.strip().splitlines()) == 1
    lst = tmp_path / "list.txt"
    lst.write_text("# nothing\n\n")
    rc, _, err = _cli(["calibrate", str(export_copy), "--data", str(lst)], capsys)
    assert rc != 0 and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(["calibrate", str(export_copy)], capsys)  # no data and no cache
    assert rc != 0 and "--data" in err
    assert not (export_copy / "front_int8.onnx").exists() and not (export_copy / "back_int8.onnx").exists()


def test_cli_calibrates_from_a_list_and_warns(export_copy, videos, tmp_path, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(p) for p in sorted(videos.glob("*.avi"))) + "\n")
    rc, out, err = _cli(["calibrate", str(export_copy), "--data", str(lst), "--clips", "6", "--method", "percentile"],
                        capsys)
    assert rc == 0, err
    assert "warning" in err and "100" in err
    assert "front: float" in out
    assert (export_copy / "back_int8.onnx").exists() and not (export_copy / "front_int8.onnx").exists()
    rc, _, err = _cli(["calibrate", str(export_copy), "--data", str(lst), "--clips", "6"], capsys)
    assert rc != 0 and "--force" in err
    rc, out, err = _cli(["calibrate", str(export_copy), "--data", str(lst), "--clips", "6", "--front", "int8",
                         "--force"], capsys)
    assert rc == 0, err
    assert "front: int8" in out and (export_copy / "front_int8.onnx").exists()


def test_int8_agrees_with_fp32(export_copy, videos):
    """INT8 Q/DQ graphs run in ONNX Runtime and agree with fp32 on top-1 for >= 97% of clips."""
    from atfr.calibration.accuracy import compare_precisions
    from atfr.calibration.data import sample_clips
    from atfr.runtime.manifest import load_manifest

    _calibrate(export_copy, videos, clips=16, seed=0, front="int8")
    m = load_manifest(export_copy)
    clips = [c.inputs for c in sample_clips(videos, m.input, 40, seed=1)]
    res = compare_precisions(export_copy, ["fp32", "int8"], clips)
    r = res["precisions"]["int8"]
    assert r["top1_agreement"] >= 0.97, r
    assert r["passed"]
    # thresholds drive pass/fail
    strict = compare_precisions(export_copy, ["int8"], clips, thresholds={"int8": {"mean_kl": -1.0}})
    assert not strict["passed"] and "mean_kl" in strict["precisions"]["int8"]["failures"][0]


# ---------------------------------------------------------------------------------------------
# Streaming: calibrate and verify --precision hold per-clip results, not the clips
# ---------------------------------------------------------------------------------------------
def test_calibration_cache_equals_ranges_from_held_clips(export_copy, videos):
    """The cache (front and back stages, clips released as they are used) equals ORT's ranges
    computed the way the previous code did: every clip and every back feed held in lists, in
    clip order. Exact: same inputs, same order, same ORT calls."""
    import json

    from atfr.calibration.data import sample_clips
    from atfr.calibration.int8 import back_feeds, compute_ranges
    from atfr.runtime.manifest import load_manifest

    r = _calibrate(export_copy, videos, clips=7, seed=3)
    m = load_manifest(export_copy)
    clips = [c.inputs for c in sample_clips(videos, m.input, 7, seed=3)]
    front = compute_ranges(m.path("front"), [{f"clip{p}": x for p, x in enumerate(c)} for c in clips],
                           "percentile", progress=False)
    feeds, bps = back_feeds(m, clips)
    back = compute_ranges(m.path("back"), feeds, "percentile", progress=False)
    cache = json.loads(r.cache.read_text())
    assert cache["graphs"]["front_int8"]["tensors"] == front
    assert cache["graphs"]["back_int8"]["tensors"] == back
    want = {}
    for bp in bps:
        want[str(bp[0])] = want.get(str(bp[0]), 0) + 1
    assert cache["bprime_hist"][f"sgs{m.sgs[0].pathway}"] == dict(sorted(want.items()))
    # calibrate(clip_inputs=...) leaves the caller's list intact and writes the same ranges
    d2 = export_copy.parent / "again"
    shutil.copytree(export_copy, d2)
    r2 = _calibrate(d2, None, clip_inputs=clips, cache=d2 / "c2.json", force=True)
    assert all(c is not None for c in clips)
    assert json.loads(r2.cache.read_text())["graphs"] == cache["graphs"]


def test_precision_report_streams_identical_to_held_clips(export_copy, videos):
    """compare_precisions on a video folder (every precision per clip, clips not held) gives
    exactly the metrics of running each precision over the held clip list in turn."""
    from atfr.calibration.accuracy import _metrics, compare_precisions, run_precision
    from atfr.calibration.data import sample_clips
    from atfr.runtime.manifest import load_manifest

    _calibrate(export_copy, videos, clips=6, seed=0)
    m = load_manifest(export_copy)
    clips = [c.inputs for c in sample_clips(videos, m.input, 11, seed=1)]
    ref, q = run_precision(m, "fp32", clips), run_precision(m, "int8", clips)
    res = compare_precisions(export_copy, ["fp32", "int8"], videos, num_clips=11, seed=1)
    assert res["clips"] == 11
    for p, out in (("fp32", ref), ("int8", q)):
        want = _metrics(ref[0], ref[1], out[0], out[1], None)
        assert {k: res["precisions"][p][k] for k in want} == want
    hist: dict[str, int] = {}
    for row in ref[1]:
        hist[",".join(map(str, row))] = hist.get(",".join(map(str, row)), 0) + 1
    assert res["reference_bprime_hist"] == dict(sorted(hist.items()))
    assert compare_precisions(export_copy, ["fp32", "int8"], clips) == res  # a held list: same result


def test_map_clips_holds_one_clip(videos, tiny_export):
    """map_clips: results in clip order, equal to fn over sample_clips; while fn runs, no earlier
    clip is alive (weak references)."""
    import weakref

    from atfr.calibration.data import map_clips, sample_clips
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(tiny_export)
    refs: list[weakref.ref] = []
    alive: list[int] = []

    def fn(c):
        refs.append(weakref.ref(c.inputs[0]))
        alive.append(sum(r() is not None for r in refs))
        return (c.source, c.view, c.spatial, float(c.inputs[0].sum()))

    got = map_clips(videos, m.input, 9, fn, seed=2)
    assert got == [(c.source, c.view, c.spatial, float(c.inputs[0].sum())) for c in sample_clips(videos, m.input, 9, seed=2)]
    assert len(alive) >= 9 and max(alive) == 1


def test_precision_report_torch_reference_per_clip(tiny_export, tiny_checkpoint, videos):
    """reference='torch' runs PyTorch per clip alongside the graphs: the same numbers as
    run_torch over the held list (labels order included)."""
    from atfr.calibration.accuracy import _metrics, compare_precisions, run_precision, run_torch
    from atfr.calibration.data import sample_clips
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(tiny_export)
    clips = [c.inputs for c in sample_clips(videos, m.input, 6, seed=4)]
    ref, out = run_torch(tiny_checkpoint, clips), run_precision(m, "fp32", clips)
    labels = np.arange(6) % ref[0].shape[1]
    res = compare_precisions(tiny_export, ["fp32"], videos, reference="torch", checkpoint=tiny_checkpoint,
                             labels=labels, num_clips=6, seed=4)
    want = _metrics(ref[0], ref[1], out[0], out[1], labels)
    assert {k: res["precisions"]["fp32"][k] for k in want} == want
