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
    ra = _calibrate(a, videos, clips=8, seed=3, cache=tmp_path / "cache_a.json")
    rb = _calibrate(b, videos, clips=8, seed=3)
    assert not ra.from_cache and not rb.from_cache
    for g in ("front_int8", "back_int8"):
        sa, sb = qdq_scales(a / f"{g}.onnx"), qdq_scales(b / f"{g}.onnx")
        assert sa.keys() == sb.keys() and sa
        assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    # The cache alone (no data) reproduces byte-identical Q/DQ graphs.
    rc = _calibrate(c, None, cache=tmp_path / "cache_a.json")
    assert rc.from_cache
    for g in ("front_int8", "back_int8"):
        assert (a / f"{g}.onnx").read_bytes() == (c / f"{g}.onnx").read_bytes()
    m = load_manifest(c, check=True)
    assert {"front_int8", "back_int8"} <= set(m.graphs)
    assert m.raw["precision"]["int8"]["method"] == "minmax"
    # Symmetric int8: TensorRT needs every zero-point 0; the SGS embedding/distance is not quantized.
    q = onnx.load(str(c / "front_int8.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    zps = [inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    dist_in = {i for n in q.graph.node if n.op_type in ("Sqrt", "BatchNormalization", "MatMul") for i in n.input}
    prod = {o: n for n in q.graph.node for o in n.output}
    assert not any(prod[t].op_type == "DequantizeLinear" for t in dist_in if t in prod)
    with pytest.raises(Exception, match="--force"):
        _calibrate(a, videos, clips=8, seed=3)


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
    assert not (export_copy / "front_int8.onnx").exists()


def test_cli_calibrates_from_a_list_and_warns(export_copy, videos, tmp_path, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(p) for p in sorted(videos.glob("*.avi"))) + "\n")
    rc, out, err = _cli(["calibrate", str(export_copy), "--data", str(lst), "--clips", "6", "--method", "percentile"],
                        capsys)
    assert rc == 0, err
    assert "warning" in err and "100" in err
    assert (export_copy / "front_int8.onnx").exists() and (export_copy / "back_int8.onnx").exists()
    rc, _, err = _cli(["calibrate", str(export_copy), "--data", str(lst), "--clips", "6"], capsys)
    assert rc != 0 and "--force" in err


def test_int8_agrees_with_fp32(export_copy, videos):
    """INT8 Q/DQ graphs run in ONNX Runtime and agree with fp32 on top-1 for >= 97% of clips."""
    from atfr.calibration.accuracy import compare_precisions
    from atfr.calibration.data import sample_clips
    from atfr.runtime.manifest import load_manifest

    _calibrate(export_copy, videos, clips=16, seed=0)
    m = load_manifest(export_copy)
    clips = [c.inputs for c in sample_clips(videos, m.input, 40, seed=1)]
    res = compare_precisions(export_copy, ["fp32", "int8"], clips)
    r = res["precisions"]["int8"]
    assert r["top1_agreement"] >= 0.97, r
    assert r["passed"]
    # thresholds drive pass/fail
    strict = compare_precisions(export_copy, ["int8"], clips, thresholds={"int8": {"mean_kl": -1.0}})
    assert not strict["passed"] and "mean_kl" in strict["precisions"]["int8"]["failures"][0]
