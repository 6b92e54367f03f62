"""``atfr init``: checkpoints from a config, seeded, marked untrained, and the warning downstream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atfr.cli import main
from atfr.models.checkpoint import load_checkpoint

TINY = {"arch": "tam", "depth": 50, "width_per_group": 8, "num_frames": 8, "crop_size": 32, "num_classes": 3,
        "sgs_stage": "res2", "latent_dim": 4}
WARNING = "holds an untrained model"


def _init(tmp_path, name="m.pt", *extra, cfg=None):
    out = tmp_path / name
    rc = main(["init", json.dumps(cfg or TINY), "-o", str(out), *extra])
    return rc, out


def test_inline_json_seeded_and_marked_untrained(tmp_path, capsys):
    rc, a = _init(tmp_path, "a.pt", "--seed", "7", "--labels", "x,y,z")
    assert rc == 0
    lm = load_checkpoint(a)
    assert lm.meta["untrained"] is True and lm.labels == ["x", "y", "z"]
    assert type(lm.model).__name__ == "TAM" and lm.cfg["MODEL"]["NUM_CLASSES"] == 3
    _, b = _init(tmp_path, "b.pt", "--seed", "7")
    _, c = _init(tmp_path, "c.pt", "--seed", "8")
    sa, sb, sc = (load_checkpoint(p).model.state_dict() for p in (a, b, c))
    key = "s3.pathway0_res0.branch2.tam.weight"
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
    assert not torch.equal(sa[key], sc[key])
    assert "untrained" in capsys.readouterr().out


def test_zeros_and_config_file(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("arch: i3d_3x3x3\ndepth: 50\nwidth_per_group: 8\nnum_frames: 4\ncrop_size: 32\n"
                        "num_classes: 2\nsgs_stage: none\n")
    out = tmp_path / "z.pt"
    assert main(["init", str(cfg_file), "-o", str(out), "--zeros"]) == 0
    lm = load_checkpoint(out)
    assert lm.meta["init"] == "zeros"
    assert all(float(p.detach().abs().max()) == 0.0 for p in lm.model.parameters())
    assert lm.model.s2.pathway0_res0.branch2.b.weight.shape[2:] == (3, 3, 3)


def test_bad_input_is_one_line_and_nothing_is_overwritten(tmp_path, capsys):
    rc, out = _init(tmp_path)
    assert rc == 0
    before = out.read_bytes()
    capsys.readouterr()
    cases = [
        (["init", json.dumps(TINY), "-o", str(out)], "--force"),
        (["init", json.dumps({**TINY, "arch": "c3d"}), "-o", str(tmp_path / "n.pt")], "unknown architecture"),
        (["init", "{not json", "-o", str(tmp_path / "n.pt")], "not valid JSON"),
        (["init", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "n.pt")], "does not exist"),
        (["init", json.dumps(TINY), "-o", str(tmp_path / "n.pt"), "--labels", "a,b"], "3 classes"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert out.read_bytes() == before
    assert not (tmp_path / "n.pt").exists()


def test_untrained_flag_reaches_manifest_and_every_loader_warns_once(tmp_path, capsys):
    rc, ck = _init(tmp_path)
    assert rc == 0
    capsys.readouterr()
    assert main(["info", str(ck), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["meta"]["untrained"] is True
    assert cap.err.count(WARNING) == 1
    exp = tmp_path / "exp"
    assert main(["export", str(ck), "-o", str(exp)]) == 0
    assert capsys.readouterr().err.count(WARNING) == 1
    assert json.loads((exp / "atfr.json").read_text())["untrained"] is True
    clip = tmp_path / "clip.npy"
    np.save(clip, np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    assert main(["infer", str(exp), "--input", str(clip), "--json"]) == 0
    cap = capsys.readouterr()
    assert cap.err.count(WARNING) == 1
    assert len(json.loads(cap.out)["probs"]) == 3


def test_trained_checkpoints_do_not_warn(tiny_checkpoint, tiny_export, capsys):
    assert main(["info", str(tiny_checkpoint)]) == 0
    assert "untrained" not in json.loads((tiny_export / "atfr.json").read_text())
    assert WARNING not in capsys.readouterr().err


@pytest.mark.parametrize("zoo_arch", ["tsn", "i3d"])
def test_every_zoo_name_initialises(tmp_path, zoo_arch):
    cfg = dict(TINY, arch=zoo_arch, sgs_stage="none")
    rc, out = _init(tmp_path, cfg=cfg)
    assert rc == 0 and load_checkpoint(out).meta["untrained"] is True


def test_config_to_bench_report_in_two_commands(tmp_path, capsys):
    """atfr init --export, then atfr bench: the report exists and says the model is untrained."""
    exp = tmp_path / "exp"
    rc, _ = _init(tmp_path, "m.pt", "--export", str(exp))
    assert rc == 0 and json.loads((exp / "atfr.json").read_text())["untrained"] is True
    capsys.readouterr()
    assert main(["bench", str(exp), "--throughput", "--mem-budget", "1", "--threads", "1", "--iters", "1",
                 "--warmup", "1", "--force"]) == 0
    cap = capsys.readouterr()
    assert cap.err.count(WARNING) == 1
    rep = json.loads((exp / "bench" / "throughput.json").read_text())
    assert rep["untrained"] is True and rep["candidates"][0]["max_batch"] >= 1
    assert "Untrained" in (exp / "bench" / "throughput.md").read_text()


def test_untrained_check_reads_no_pickle_whose_crc_fails(tmp_path, monkeypatch):
    """The cheap untrained-model check runs on any checkpoint a command is given: the pickle record's CRC
    is checked before torch.load (weights_only) sees it, as for full loads (models/checkpoint.py)."""
    import zipfile

    from atfr.commands.init import untrained_source

    rc, good = _init(tmp_path, "good.pt")
    assert rc == 0 and untrained_source(good) is True
    with zipfile.ZipFile(good) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data.pkl"))
        assert info.compress_type == zipfile.ZIP_STORED  # torch.save stores records, so bytes sit in place
    raw = bytearray(good.read_bytes())
    h = info.header_offset  # the local header's name and extra lengths (torch pads the extra field)
    start = h + 30 + int.from_bytes(raw[h + 26:h + 28], "little") + int.from_bytes(raw[h + 28:h + 30], "little")
    raw[start + 5] ^= 0xFF  # a byte inside the pickle
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(raw))
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or {"meta": {"untrained": True}})
    assert untrained_source(bad) is False and calls == []
    assert untrained_source(good) is True and len(calls) == 1
