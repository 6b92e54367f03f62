"""The built-in AdaFuse demo model (atfr/assets/demo_adafuse.pt), its trainer and its part of `atfr demo`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cli_helpers import one_line_error, run_cli

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ada_model():
    from atfr.commands.demo import builtin_adafuse_checkpoint
    from atfr.models.checkpoint import load_checkpoint

    return load_checkpoint(builtin_adafuse_checkpoint())  # strict keys, zip CRCs and state_sha256


def test_adafuse_demo_asset_is_small_and_self_describing(ada_model):
    from atfr.commands.demo import builtin_adafuse_checkpoint
    from atfr.demo.synth import CLASSES

    assert builtin_adafuse_checkpoint().stat().st_size < 5_000_000
    meta = ada_model.meta
    assert ada_model.labels == CLASSES and meta["family"] == "adafuse"
    assert "train-demo --family adafuse" in meta["command"] and meta["train_wall_s"] <= 20 * 60
    assert meta["heldout_accuracy"] >= 0.8 and 0.1 <= meta["gflops_saved_vs_static"] < 1
    spec = ada_model.model.input_spec
    assert (spec.num_frames, spec.sampling_rate, spec.crop_size) == (8, 2, 64)  # the ATFR demo's 16-frame window
    assert len(ada_model.model.gated_blocks()) == 8 and ada_model.model.base_model.conv1.out_channels == 16
    f = meta["fractions"]
    assert abs(f["skip"] + f["reuse"] + f["keep"] - 1) < 3e-4  # three values rounded to 4 decimals


def test_adafuse_demo_model_reproduces_its_recorded_heldout_subset(ada_model):
    """The first clips of every class of the held-out split: the count of correct clips the trainer
    recorded, exactly (the deterministic hard policy, no Gumbel noise at evaluation)."""
    from atfr.demo import synth
    from atfr.demo.train import CROP, HELD_OUT_SPLIT, NUM_FRAMES
    from atfr.demo.train_adafuse import evaluate_adafuse

    sub = ada_model.meta["heldout_subset"]
    x, y = synth.make_dataset(sub["per_class"], ada_model.meta["seed"], NUM_FRAMES, CROP, split=HELD_OUT_SPLIT)
    assert len(y) == sub["clips"]
    ev = evaluate_adafuse(ada_model.model, x, y)
    assert int((ev["pred"] == y).sum()) == sub["correct"]
    assert ev["fractions"].sum(1) == pytest.approx(np.ones(len(y)), abs=1e-12)


def _one_hot_first_max(lp):
    from atfr.models.adafuse_blocks import first_max3

    return torch.nn.functional.one_hot(first_max3(lp).long(), 3).float()


def test_training_forward_is_the_model_with_sampled_masks(monkeypatch):
    """With the noise-free hard policy in place of the Gumbel sample, the trainer's forward equals the
    model's own (same layers, same fusion) and its differentiable Eq. 5 equals the runtime's count."""
    from atfr.demo import train_adafuse as ta
    from atfr.models.adafuse_flops import AdaFuseCounter
    from atfr.models.zoo import build_model
    from atfr.runtime.adafuse_gflops import policy_gflops

    torch.manual_seed(0)
    model = build_model(ta.adafuse_demo_config()).train()
    x = torch.randn(2, 3, ta.FRAMES, 64, 64)
    monkeypatch.setattr(ta, "gumbel_hard", lambda lp, tau, gen: _one_hot_first_max(lp))
    logits, masks = ta.gumbel_forward(model, x, 0.67, torch.Generator())
    ref = model.run(x)
    torch.testing.assert_close(logits, ref.logits, rtol=0, atol=0)
    for m, p in zip(masks, ref.policy):
        assert torch.equal(m.argmax(-1).int(), p)
    c = AdaFuseCounter(model)
    got = ta.eq5_gflops(masks, c.base_per_frame, c.convs)
    want = [policy_gflops([p[k].numpy() for p in ref.policy], c.base_per_frame, c.convs, official=False)
            for k in range(2)]
    assert got.tolist() == pytest.approx(want, rel=1e-6)  # float64 sums vs float32 ones: ~1e-7 relative
    assert len({tuple(m.argmax(-1).flatten().tolist()) for m in masks}) > 1  # the policy is not degenerate


def test_gumbel_sample_is_one_hot_seeded_and_differentiable():
    from atfr.demo.train_adafuse import gumbel_hard

    lp = torch.log_softmax(torch.randn(64, 5, 3), -1).requires_grad_()
    a = gumbel_hard(lp, 0.67, torch.Generator().manual_seed(3))
    b = gumbel_hard(lp, 0.67, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and set(a.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a.detach().sum(-1), torch.ones(64, 5))
    (a[..., 2].sum()).backward()
    assert lp.grad is not None and lp.grad.abs().sum() > 0  # soft gradients through the hard sample
    c = gumbel_hard(lp, 0.67, torch.Generator().manual_seed(4))
    assert not torch.equal(a, c)


def test_trainer_is_deterministic_on_a_tiny_budget():
    from atfr.demo.train_adafuse import train_adafuse_demo

    def weights(seed):
        r = train_adafuse_demo(seed=seed, epochs=1, n_train_per_class=1, batch_size=4, max_steps=2, threads=1,
                               log=lambda s: None)
        assert r.meta["steps"] == 2
        return r.model.state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_train_demo_adafuse_rejects_atfr_options(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train-demo", "--family", "adafuse", "-o", tmp_path / "a.pt", "--kernel", "linear")
    one_line_error(rc, err, 2, "--kernel")
    assert not (tmp_path / "a.pt").exists()


ROW = re.compile(r"^  (\S+(?: clips)?) +skip ([\d.]+) reuse ([\d.]+) keep ([\d.]+)  ([\d.]+) GFLOPs  "
                 r"saved +([\d.-]+)%  top-1 (\d+)/(\d+)$", re.M)


def _eq5_by_hand(policy: list[np.ndarray], base_per_frame: float, convs) -> float:
    """The paper's Eq. 5 written out: conv1 computes channel i at frame t if kept at t or reused at
    t+1, conv2 reads the channels not skipped at t (0 skip, 1 reuse, 2 keep)."""
    t_len = policy[0].shape[0]
    total = 0.0
    for t in range(t_len):
        g = base_per_frame * 1e9
        for p, (m_x, m_y) in zip(policy, convs):
            c = p.shape[1]
            need = sum(1 for i in range(c) if p[t, i] == 2 or (t + 1 < t_len and p[t + 1, i] == 1))
            read = sum(1 for i in range(c) if p[t, i] != 0)
            g -= (1 - need / c) * m_x + (1 - read / c) * m_y
        total += g
    return total / 1e9


@pytest.mark.slow
def test_demo_prints_adafuse_rows_that_add_up(capsys, tmp_path, tiny_checkpoint, ada_model):
    """`atfr demo`: the AdaFuse rows (one per class and one for all clips), fractions summing to 1,
    and GFLOPs recomputed independently: the PyTorch model's policy on the same clips, Eq. 5 by hand
    with conv flops from the layer shapes, and the saving against the manifest's static TSN."""
    import json

    from atfr.demo.adafuse_demo import read_frames
    from atfr.demo.synth import CLASSES
    from atfr.runtime.video.clips import frames_to_inputs
    from atfr.cli import main

    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), "--checkpoint", str(tiny_checkpoint), "--videos-per-class", "1"]) == 0
    out = capsys.readouterr().out
    rows = {r[0]: r for r in ROW.findall(out)}
    assert sorted(rows) == sorted(CLASSES + ["all clips"]), out
    for r in rows.values():
        assert abs(float(r[1]) + float(r[2]) + float(r[3]) - 1) <= 0.0015 + 1e-9  # three 3-decimal roundings
    man = json.loads((work / "export_adafuse" / "atfr.json").read_text())
    static = man["gflops"]["static_official"]
    model = ada_model.model.eval()
    convs = [b for _, b in model.gated_blocks()]
    sizes, hooks = {}, []  # output sizes of every gated conv, for their multiply-adds C_out * H * W * 3 * 3 * C_in
    for _, b in model.gated_blocks():
        for conv in (b.conv1, b.conv2):
            hooks.append(conv.register_forward_hook(lambda m, i, o: sizes.__setitem__(id(m), o.shape[-1])))
    with torch.no_grad():
        model.run(torch.zeros(1, 3, 1, 64, 64))
    for h in hooks:
        h.remove()
    flops = [tuple(cv.out_channels * sizes[id(cv)] ** 2 * 9 * cv.in_channels for cv in (b.conv1, b.conv2))
             for b in convs]
    assert [list(f) for f in flops] == man["adafuse"]["block_conv_flops"]
    base = man["adafuse"]["base_gflops_per_frame"]
    per_class = {}
    for path in sorted((work / "videos").glob("*.*")):
        frames = read_frames(path, 30.0)
        name = path.stem.rsplit("_", 1)[0]
        for s in range(0, len(frames) - 15, 16):  # the demo's clips: 16-frame windows, every 2nd frame
            # (the tiny ATFR model's videos are 32 px: the runtime's transform resizes them to 64)
            x = frames_to_inputs(frames[s:s + 16:2], model.input_spec)[0]
            with torch.no_grad():
                res = model.run(torch.from_numpy(x))
            pol = [p[0].numpy() for p in res.policy]
            flat = np.concatenate([p.ravel() for p in pol])
            per_class.setdefault(name, []).append((np.mean(flat == 0), np.mean(flat == 1), np.mean(flat == 2),
                                                   _eq5_by_hand(pol, base, flops),
                                                   CLASSES[int(res.logits.argmax())] == name))
    per_class["all clips"] = [c for v in per_class.values() for c in v]
    for name, clips in per_class.items():
        r = rows[name]
        mean = np.mean([c[:4] for c in clips], 0)
        assert [float(v) for v in r[1:4]] == pytest.approx(mean[:3].tolist(), abs=5e-4 + 1e-9)
        assert float(r[4]) == pytest.approx(mean[3], abs=5e-5 + 1e-9)  # printed with 4 decimals
        assert float(r[5]) == pytest.approx(100 * (1 - mean[3] / static), abs=0.05 + 1e-9)
        assert (int(r[6]), int(r[7])) == (sum(c[4] for c in clips), len(clips))
    h = json.loads((work / "export_adafuse.heldout.json").read_text())
    assert f"{100 * h['heldout_accuracy']:.1f}% ({h['heldout_clips_per_class']} clips per class) AdaFuse" in out


def test_demo_refuses_a_missing_adafuse_checkpoint_before_running(capsys, tmp_path):
    rc, out, err = run_cli(capsys, "demo", "--workdir", tmp_path / "d", "--adafuse-checkpoint", tmp_path / "none.pt")
    one_line_error(rc, err, 2, "none.pt")
    assert not (tmp_path / "d").exists() and "exported" not in out


@pytest.mark.slow
def test_demo_refuses_a_non_adafuse_model_in_the_adafuse_slot(capsys, tmp_path, tiny_checkpoint):
    rc, out, err = run_cli(capsys, "demo", "--workdir", tmp_path / "d", "--checkpoint", tiny_checkpoint,
                           "--adafuse-checkpoint", tiny_checkpoint, "--videos-per-class", "1")
    one_line_error(rc, err, 2, "not an AdaFuse model")
    assert "all clips          B'=" in out  # the ATFR half ran
