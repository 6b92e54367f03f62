"""Calibration writes nothing beside the user's graphs (issue 22, S2), and a full disk is one line,
exit 2, with no partial file left (ONNX Runtime's quantizer writes ``<model>-inferred.onnx`` beside
the model it is given; calibrate hands it private copies in a mkdtemp folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import one_line_error, run_cli

pytest.importorskip("onnxruntime.quantization")


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory) -> Path:
    cv2 = pytest.importorskip("cv2")
    d = tmp_path_factory.mktemp("calib_files_videos")
    rng = np.random.default_rng(0)
    for k in range(2):
        wr = cv2.VideoWriter(str(d / f"v{k}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (40, 32))
        for _ in range(12):
            wr.write(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8))
        wr.release()
    return d


@pytest.fixture
def setup(tiny_export, tmp_path, monkeypatch):
    """An export copy, and a private temp root so the test sees every folder calibrate makes."""
    exp = tmp_path / "exp"
    shutil.copytree(tiny_export, exp)
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_root))
    return exp, tmp_root


def _args(exp, videos):
    return ["calibrate", exp, "--data", videos, "--clips", "1", "--no-progress"]


def test_planted_inferred_symlinks_are_not_followed(capsys, setup, two_videos, tmp_path, monkeypatch):
    """Symlinks ``front-inferred.onnx``/``back-inferred.onnx`` -> files outside: calibrate
    succeeds, the files are unchanged and still exist, and ONNX's shape inference only ever
    writes inside the private temp folder, which is removed."""
    import onnx.shape_inference as si

    exp, tmp_root = setup
    victims = {}
    for g in ("front", "back"):
        v = tmp_path / f"victim_{g}.txt"
        v.write_text(f"precious {g}\n")
        (exp / f"{g}-inferred.onnx").symlink_to(v)
        victims[v] = v.read_bytes()
    seen: list[str] = []
    real = si.infer_shapes_path

    def spy(src, dst="", *a, **k):
        seen.append(str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(si, "infer_shapes_path", spy)
    rc, out, err = run_cli(capsys, *_args(exp, two_videos))
    assert rc == 0, err
    for v, data in victims.items():
        assert v.exists() and v.read_bytes() == data
    for g in ("front", "back"):
        assert (exp / f"{g}-inferred.onnx").is_symlink()  # the user's links are left as they were
    assert seen and all(Path(p).resolve().is_relative_to(tmp_root.resolve()) for p in seen), seen
    assert (exp / "back_int8.onnx").is_file()
    assert list(tmp_root.iterdir()) == []  # the private folder is gone


def test_full_disk_during_quantization_is_one_line_and_leaves_nothing(capsys, setup, two_videos, monkeypatch):
    """The observed failure: ONNX's C++ shape inference on a full disk leaves a truncated
    ``-inferred.onnx`` without raising, and the quantizer then dies in protobuf's DecodeError
    (exit 1 'internal error', the truncated file left beside the graph)."""
    exp, tmp_root = setup
    import onnx.shape_inference as si

    real = si.infer_shapes_path

    def short_write(src, dst="", *a, **k):
        real(src, dst, *a, **k)
        data = Path(dst).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 3])  # what a full disk left

    monkeypatch.setattr(si, "infer_shapes_path", short_write)
    before = sorted(p.name for p in exp.iterdir())
    rc, out, err = run_cli(capsys, *_args(exp, two_videos))
    one_line_error(rc, err.split("recommended for stable INT8 ranges")[-1], 2, "cut short (disk full?")
    assert sorted(p.name for p in exp.iterdir()) == before  # no int8 graph, no -inferred file, no cache
    assert list(tmp_root.iterdir()) == []


def test_too_little_free_space_is_refused_before_any_work(capsys, setup, two_videos, monkeypatch):
    exp, tmp_root = setup
    import shutil as sh

    real = sh.disk_usage
    monkeypatch.setattr(sh, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    before = sorted(p.name for p in exp.iterdir())
    rc, out, err = run_cli(capsys, *_args(exp, two_videos))
    one_line_error(rc, err, 2, "not enough free space")
    assert sorted(p.name for p in exp.iterdir()) == before
    assert list(tmp_root.iterdir()) == []
