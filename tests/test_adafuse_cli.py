"""AdaFuse through the CLI: ``atfr info`` / ``atfr infer --json`` on an official-format checkpoint,
the paper's parameter and TSN GFLOPs figures, and the one-line error contract."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from adafuse_helpers import assert_policies, load_ref, write_official
from atfr.models.adafuse_config import from_compact
from atfr.models.adafuse_report import info_fields
from atfr.models.zoo import build_model
from cli_helpers import one_line_error, run_cli
from tolerances import NetShape, magnitude

# AdaFuse-TSN-R18: 21 conv/linear reductions, the longest 512*3*3 (tests/tolerances.py).
RTOL = NetShape(21, 4608).rtol


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """The reference AdaFuse-TSN-R18 (4 x 64^2) as an official checkpoint + flags file + clip."""
    ref = load_ref("tsn_r18")
    d = tmp_path_factory.mktemp("adafuse_r18")
    ckpt, flags = write_official(d, ref)
    ckpt.rename(d / "r18.pth.tar")
    (d / "args.txt").write_text(str(ref["args_txt"]))
    np.save(d / "clip.npy", ref["clip"])
    return d, ref


def _paper_model(depth: int):
    """AdaFuse-TSN as the zz_eval.sh TSN line, at the paper's Mini-Kinetics setting (200 classes, 8 x 224^2)."""
    with torch.device("meta"):
        return build_model(from_compact({
            "arch": "adafuse", "depth": depth, "num_classes": 200, "num_frames": 8, "crop_size": 224,
            "adafuse": {"shared_policy_net": True, "hidden_quota": 196608, "gate_bn_between_fcs": True,
                        "gate_relu_between_fcs": True}}))


def test_paper_parameters_and_tsn_gflops():
    """Paper Table 3 / 4: AdaFuse-R50 37.8M parameters; TSN-R50 32.9G, TSN-R18 14.6G at 8 x 224^2.
    The paper counts with thop (the official convention); ours (conv+linear MACs) is reported too."""
    r50 = info_fields(_paper_model(50))
    assert r50["parameters"] / 1e6 == pytest.approx(37.8, rel=0.005)  # 37.74M: shared FCs once
    assert r50["gflops"]["static_official"] == pytest.approx(32.9, rel=0.005)
    assert r50["gflops"]["static"] == pytest.approx(32.7, rel=0.005)  # torchvision R50 4.09 G/frame
    r18 = info_fields(_paper_model(18))
    assert r18["gflops"]["static_official"] == pytest.approx(14.6, rel=0.005)
    assert r18["architecture"]["gated_blocks"] == [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]


def test_info_json(capsys, r18):
    d, ref = r18
    rc, out, err = run_cli(capsys, "info", d / "r18.pth.tar", "--config", d / "flags.sh", "--json")
    assert rc == 0, err
    info = json.loads(out)
    a = info["architecture"]
    assert (a["arch"], a["variant"], a["depth"], a["num_classes"]) == ("adafuse", "TSN", 18, 174)
    assert info["input"]["num_frames"] == 4 and info["input"]["crop_size"] == 64
    # The official base count (thop on the gated network, one frame), from the official code:
    assert info["gflops"]["dense_official"] == pytest.approx(4 * float(ref["official_base_gflops_per_frame"]), rel=1e-9)
    assert info["gflops"]["static"] < info["gflops"]["static_official"] < info["gflops"]["dense_official"]


@pytest.mark.parametrize("config", ["flags.sh", "args.txt"])
def test_infer_json_policy_and_gflops(capsys, r18, config):
    d, ref = r18
    rc, out, err = run_cli(capsys, "infer", d / "r18.pth.tar", "--config", d / config,
                           "--input", d / "clip.npy", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["top5"][0]["index"] == int(ref["logits"].argmax())
    assert len(res["policy"]) == len(ref["gated_blocks"]) == len(res["policy_blocks"])
    assert_policies(res["policy"], ref, RTOL)  # [T][C], 0 skip 1 reuse 2 keep
    np.testing.assert_allclose(res["logits"], ref["logits"], rtol=0, atol=RTOL * magnitude(ref["logits"]))
    t = ref["clip"].shape[0]
    assert res["gflops"]["official"] / t == pytest.approx(float(ref["official_gflops_per_frame"]), rel=1e-5)
    # Eq. 5 differs from the official count only through the last frame's conv1 term.
    assert res["gflops"]["eq5"] != res["gflops"]["official"]
    assert abs(res["gflops"]["eq5"] - res["gflops"]["official"]) < 0.05 * res["gflops"]["official"]
    fr = res["policy_fractions"]
    assert fr["skip"] + fr["reuse"] + fr["keep"] == pytest.approx(1.0)


def test_errors_are_one_line(capsys, r18, tmp_path):
    d, ref = r18
    ckpt = d / "r18.pth.tar"
    bad = tmp_path / "dense.sh"
    bad.write_text(str(ref["flags"]) + " --dense_in_block\n")
    one_line_error(*run_cli(capsys, "info", ckpt, "--config", bad)[::2], match="--dense_in_block")
    r50 = tmp_path / "r50.sh"
    r50.write_text(str(ref["flags"]).replace("batenet18", "batenet50") + "\n")
    one_line_error(*run_cli(capsys, "infer", ckpt, "--config", r50, "--input", d / "clip.npy")[::2],
                   match="does not match the config")
    one_line_error(*run_cli(capsys, "info", ckpt)[::2], match="--config")
    unknown = tmp_path / "ucf.sh"
    unknown.write_text(str(ref["flags"]).replace("something RGB", "ucf101 RGB") + "\n")
    one_line_error(*run_cli(capsys, "info", ckpt, "--config", unknown)[::2], match="--num_class")
    both = tmp_path / "zz_eval.sh"
    both.write_text(f"{ref['flags']} | tee tmp_log.txt\nOUTPUT0=`cat tmp_log.txt`\n{ref['flags']}\n")
    one_line_error(*run_cli(capsys, "info", ckpt, "--config", both)[::2], match="2 main_gate.py command lines")
    evil = tmp_path / "args.txt"
    evil.write_text("Namespace(arch=__import__('os').system('true'), num_class=174)")
    one_line_error(*run_cli(capsys, "info", ckpt, "--config", evil)[::2], match="not a literal")


def test_compact_yaml_covers_the_official_flags(r18, tmp_path):
    from atfr.models.config import load_config_file

    d, ref = r18
    y = tmp_path / "compact.yaml"
    y.write_text("arch: adafuse\ndepth: 18\nnum_classes: 174\nnum_frames: 4\ncrop_size: 64\n"
                 "adafuse: {shared_policy_net: true, hidden_quota: 196608, gate_bn_between_fcs: true,\n"
                 "          gate_relu_between_fcs: true}\n")
    assert load_config_file(str(y)) == load_config_file(str(d / "flags.sh")) == load_config_file(str(d / "args.txt"))


def test_convert_round_trip(capsys, r18, tmp_path):
    d, ref = r18
    ours = tmp_path / "r18.pt"
    rc, _, err = run_cli(capsys, "convert", d / "r18.pth.tar", "--config", d / "flags.sh", "-o", ours)
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "infer", ours, "--input", d / "clip.npy", "--json")  # cfg travels inside
    assert rc == 0, err
    res = json.loads(out)
    assert res["top5"][0]["index"] == int(ref["logits"].argmax())
    assert_policies(res["policy"], ref, RTOL)


@pytest.mark.slow  # exports a small model (~5 s)
def test_init_adafuse_exports_an_untrained_model(capsys, tmp_path):
    """atfr init -> export -> infer, with the max-pooled policy input (GlobalMaxPool in the graph)."""
    cfg = ('{"arch": "adafuse", "depth": 18, "num_frames": 3, "crop_size": 32, "num_classes": 4, '
           '"adafuse": {"gate_reduce_type": "max"}}')
    rc, out, err = run_cli(capsys, "init", cfg, "-o", tmp_path / "a.pt", "--export", tmp_path / "exp")
    assert rc == 0, err
    assert "atfr infer" in out
    np.save(tmp_path / "c.npy", np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))
    rc, out, err = run_cli(capsys, "infer", tmp_path / "exp", "--input", tmp_path / "c.npy", "--json")
    assert rc == 0, err
    assert "untrained" in err
    res = json.loads(out)
    assert len(res["policy"]) == 8 and np.array(res["policy"][0]).shape == (3, 64)
    rc, out, err = run_cli(capsys, "infer", tmp_path / "a.pt", "--input", tmp_path / "c.npy", "--json")
    assert rc == 0, err
    tor = json.loads(out)
    assert tor["policy"] == res["policy"] and tor["backend"] == "torch"
    np.testing.assert_allclose(tor["logits"], res["logits"], rtol=0, atol=RTOL * magnitude(tor["logits"]))
