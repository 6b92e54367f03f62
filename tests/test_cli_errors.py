"""Bad input gives one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from atfr.cli import main


def _run(capsys, *argv):
    rc = main(list(map(str, argv)))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line_error(rc, err, expect_rc=2, match=None):
    assert rc == expect_rc, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    if match:
        assert match in lines[0], lines[0]


@pytest.fixture()
def golden_ckpt(golden):
    return golden / "r3d18_atfr" / "checkpoint.pyth"


def test_not_a_checkpoint(capsys, tmp_path):
    f = tmp_path / "notes.pyth"
    f.write_text("hello, not a checkpoint\n")
    for cmd in ("info", "export"):
        extra = ["-o", tmp_path / "out"] if cmd == "export" else []
        rc, _, err = _run(capsys, cmd, f, *extra)
        _one_line_error(rc, err, match="not a PyTorch checkpoint")
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(capsys, tmp_path):
    rc, _, err = _run(capsys, "info", tmp_path / "nope.pyth")
    _one_line_error(rc, err, match="does not exist")


def test_truncated_checkpoint(capsys, tmp_path, golden_ckpt):
    data = golden_ckpt.read_bytes()
    f = tmp_path / "trunc.pyth"
    f.write_bytes(data[: len(data) // 2])
    rc, _, err = _run(capsys, "info", f)
    _one_line_error(rc, err, match="truncated or corrupt")


def test_checkpoint_config_mismatch(capsys, golden, golden_ckpt):
    other = golden / "slowfast_atfr_4x16_r50_w16" / "config.yaml"
    rc, _, err = _run(capsys, "info", golden_ckpt, "--config", other)
    _one_line_error(rc, err, match="does not match the config")


def test_unknown_architecture(capsys, tmp_path, golden, golden_ckpt):
    cfg = (golden / "r3d18_atfr" / "config.yaml").read_text().replace("ARCH: 3dresnet", "ARCH: transformer9000")
    f = tmp_path / "cfg.yaml"
    f.write_text(cfg)
    rc, _, err = _run(capsys, "info", golden_ckpt, "--config", f)
    _one_line_error(rc, err, match="unknown architecture")


@pytest.mark.parametrize("bad", ["float", "shape", "frames"])
def test_clip_with_wrong_shape_or_dtype(capsys, tmp_path, tiny_checkpoint, tiny_export, bad):
    clip = {"float": np.zeros((8, 32, 32, 3), np.float32), "shape": np.zeros((8, 32, 32), np.uint8),
            "frames": np.zeros((5, 32, 32, 3), np.uint8)}[bad]
    f = tmp_path / "clip.npy"
    np.save(f, clip)
    for src in (tiny_checkpoint, tiny_export):
        rc, _, err = _run(capsys, "infer", src, "--input", f)
        _one_line_error(rc, err)


def test_infer_torch_and_onnxruntime_give_the_same_json(capsys, tmp_path, tiny_checkpoint, tiny_export):
    rng = np.random.default_rng(3)
    f = tmp_path / "clip.npy"
    np.save(f, rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    rc, out_t, _ = _run(capsys, "infer", tiny_checkpoint, "--input", f, "--json")
    assert rc == 0
    rc, out_o, _ = _run(capsys, "infer", tiny_export, "--input", f, "--json", "--backend", "onnxruntime")
    assert rc == 0
    t, o = json.loads(out_t), json.loads(out_o)
    assert set(t) >= {"logits", "probs", "bprime", "top5"} and t["bprime"] == o["bprime"]
    np.testing.assert_allclose(o["logits"], t["logits"], atol=1e-4)
    assert [x["index"] for x in t["top5"]] == [x["index"] for x in o["top5"]]
    assert t["top5"][0]["label"].startswith("class")


def test_golden_clip_through_infer_cli(capsys, golden, golden_ckpt):
    rc, out, _ = _run(capsys, "infer", golden_ckpt, "--input", golden / "r3d18_atfr" / "b_static" / "frames.npy",
                      "--size", "112", "--json")
    assert rc == 0
    res = json.loads(out)
    exp = np.load(golden / "r3d18_atfr" / "b_static" / "expected.npz")
    assert res["bprime"] == [int(exp["ts0_B_prime"])]
    np.testing.assert_allclose(res["probs"], exp["probs"][0], atol=2e-4)


def test_export_cli_refuses_overwrite_and_verify_passes(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "exp"
    rc, _, _ = _run(capsys, "export", tiny_checkpoint, "-o", out)
    assert rc == 0 and (out / "atfr.json").exists()
    rc, _, err = _run(capsys, "export", tiny_checkpoint, "-o", out)
    _one_line_error(rc, err, match="--force")
    rc, out_v, _ = _run(capsys, "verify", out, "--checkpoint", tiny_checkpoint, "--clips", "1")
    assert rc == 0 and "PASS" in out_v
    # a corrupted graph is caught by the manifest's checksums
    with open(out / "back.onnx", "ab") as f:
        f.write(b"\0")
    rc, _, err = _run(capsys, "verify", out, "--checkpoint", tiny_checkpoint)
    _one_line_error(rc, err, match="checksum")


def test_verify_fails_beyond_tolerance(capsys, tmp_path, tiny_checkpoint, tiny_export):
    d = tmp_path / "exp"
    shutil.copytree(tiny_export, d)
    rc, out, err = _run(capsys, "verify", d, "--checkpoint", tiny_checkpoint, "--clips", "1",
                        "--back-atol", "1e-12")
    assert rc == 3 and "FAIL" in out and "verification failed" in err


def test_convert_roundtrip(capsys, tmp_path, golden_ckpt):
    out = tmp_path / "ours.pt"
    rc, _, _ = _run(capsys, "convert", golden_ckpt, "-o", out)
    assert rc == 0
    from atfr.models.checkpoint import load_checkpoint
    a, b = load_checkpoint(golden_ckpt), load_checkpoint(out)
    assert b.source_format == "atfr"
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all((sa[k] == sb[k]).all() for k in sa)
    rc, _, err = _run(capsys, "convert", golden_ckpt, "-o", out)
    _one_line_error(rc, err, match="--force")


def test_unknown_command(capsys):
    rc, _, err = _run(capsys, "frobnicate")
    _one_line_error(rc, err, match="unknown command")


def test_checkpoint_meta_with_non_json_objects_still_loads_safely(tmp_path, tiny_checkpoint):
    """Meta values such as torch.__version__ (a TorchVersion object) are stored as plain strings,
    so the file stays loadable with torch.load(weights_only=True)."""
    import torch

    from atfr.models.checkpoint import load_checkpoint, save_checkpoint

    lm = load_checkpoint(tiny_checkpoint)
    out = tmp_path / "m.pt"
    save_checkpoint(out, lm.model, lm.cfg, lm.labels, {"torch": torch.__version__, "path": tmp_path})
    assert load_checkpoint(out).meta == {"torch": str(torch.__version__), "path": str(tmp_path)}
