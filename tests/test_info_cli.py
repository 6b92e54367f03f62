"""``atfr info`` on the official golden 3DResNet-18+ATFR checkpoint, against hand-derived numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atfr.cli import main

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
R3D18 = GOLDEN / "r3d18_atfr" / "checkpoint.pyth"

needs_golden = pytest.mark.skipif(not R3D18.exists(), reason=f"golden checkpoint not found at {R3D18}")


def r3d18_macs(t: int, tp: int, crop: int = 256, classes: int = 194) -> tuple[int, int, int, int]:
    """(front, sgs, back, static) MACs of the official thin 3DResNet-18+ATFR, written out by hand
    from shared/docs/sgs-semantics.md §3.2: stem 3->8 [5,7,7]/2 + maxpool/2; res2 8->32 (inner 8,
    kt 3); res3 ->256 (64, kt 1); res4 ->512 (128, kt 1); res5 ->1024 (256, kt 3); stride on the
    3x3 (STRIDE_1X1 False); SGS C=32, L=8 after res2; head 1024 -> classes."""
    h0, h1, h2, h3, h4 = crop // 2, crop // 4, crop // 8, crop // 16, crop // 32
    front = 8 * 3 * 5 * 49 * t * h0 * h0
    # res2 at T, h1: block0 (a 8->8 k3, b 3x3, c 8->32, branch1 8->32), block1 (a 32->8 k3, b, c)
    front += t * h1 * h1 * (8 * 8 * 3 + 8 * 8 * 9 + 8 * 32 + 8 * 32)
    front += t * h1 * h1 * (32 * 8 * 3 + 8 * 8 * 9 + 8 * 32)
    sgs = t * (32 * 16 + 16 * 8) + tp * t * 32 * h1 * h1

    def back_at(tt: int) -> int:
        b = 0
        # res3: a at the input resolution, b strided, c and branch1 at the output resolution
        b += tt * (32 * 64 * h1 * h1 + (64 * 64 * 9 + 64 * 256 + 32 * 256) * h2 * h2)
        b += tt * (256 * 64 + 64 * 64 * 9 + 64 * 256) * h2 * h2
        b += tt * (256 * 128 * h2 * h2 + (128 * 128 * 9 + 128 * 512 + 256 * 512) * h3 * h3)
        b += tt * (512 * 128 + 128 * 128 * 9 + 128 * 512) * h3 * h3
        b += tt * (512 * 256 * 3 * h3 * h3 + (256 * 256 * 9 + 256 * 1024 + 512 * 1024) * h4 * h4)
        b += tt * (1024 * 256 * 3 + 256 * 256 * 9 + 256 * 1024) * h4 * h4
        return b + 1024 * classes

    return front, sgs, back_at(tp), front + back_at(t)


@needs_golden
def test_info_json_on_golden_r3d18(capsys):
    assert main(["info", str(R3D18), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "official"
    assert info["architecture"]["arch"] == "3dresnet" and info["architecture"]["depth"] == 18
    assert info["architecture"]["num_classes"] == 194
    assert info["parameters"] == 4_419_250  # golden README: params of the official model
    assert info["input_shapes"] == [[1, 3, 32, 256, 256]]  # NUM_FRAMES 32, TEST_CROP_SIZE 256
    (layer,) = info["sgs"]
    assert (layer["name"], layer["pathway"], layer["channels"], layer["latent_dim"]) == ("s2.ts_layer", 0, 32, 8)
    assert layer["num_bins"] == 32 and layer["bins_effective"] == 32  # cfg shows the [-1] -> [32] rewrite
    assert (layer["distance"], layer["kernel"], layer["drop_bins"]) == ("L2", "linear", True)
    rows = info["gflops_per_bprime"]
    assert [r["bprime"] for r in rows] == [[b] for b in range(1, 33)]
    front, _, _, static = r3d18_macs(32, 32)
    assert info["gflops"]["static"] == pytest.approx(static / 1e9, rel=1e-12)
    assert info["gflops"]["front"] == pytest.approx(front / 1e9, rel=1e-12)
    for r in rows:
        f, s, b, _ = r3d18_macs(32, r["bprime"][0])
        assert (r["front"], r["sgs"], r["back"]) == pytest.approx((f / 1e9, s / 1e9, b / 1e9), rel=1e-12)
        assert r["total"] == pytest.approx((f + s + b) / 1e9, rel=1e-12)
    # The golden clips' B' (README): 8 on a_noise -> about a third of the static cost.
    assert rows[7]["ratio"] == pytest.approx(sum(r3d18_macs(32, 8)[:3]) / static, rel=1e-12)
    assert 0.3 < rows[7]["ratio"] < 0.4


@needs_golden
def test_info_text_on_golden_r3d18(capsys):
    assert main(["info", str(R3D18)]) == 0
    out = capsys.readouterr().out
    assert "4,419,250" in out and "s2.ts_layer" in out and "B=32" in out
    assert f"static {r3d18_macs(32, 32)[3] / 1e9:.3f}" in out
    assert len([ln for ln in out.splitlines() if ln.strip() and ln.split()[0].isdigit()]) == 32


@pytest.mark.parametrize("content", [None, b"not a checkpoint at all\n", b"PK\x03\x04truncated"],
                         ids=["missing", "garbage", "truncated-zip"])
def test_info_bad_input_is_one_line_nonzero(tmp_path, capsys, content):
    p = tmp_path / "model.pyth"
    if content is not None:
        p.write_bytes(content)
    rc = main(["info", str(p), "--json"])
    cap = capsys.readouterr()
    assert rc != 0
    assert cap.out == ""
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atfr info: error:"), cap.err


@needs_golden
def test_info_config_mismatch_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "x3d.yaml"
    cfg.write_text("arch: x3d\nvariant: S\nnum_frames: 8\ncrop_size: 64\n")
    rc = main(["info", str(R3D18), "--config", str(cfg)])
    cap = capsys.readouterr()
    assert rc == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and "does not match the config" in lines[0]
