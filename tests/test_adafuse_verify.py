"""`atfr verify` on an AdaFuse export (export/adafuse_verify.py): the clip graph and the online
graphs against the torch model, and an export whose policy net was changed after export failing
with exit 3.

Independent references: the torch model of tests/adafuse_helpers.py (its policies, counted here
with ONNX Runtime sessions of our own), the bound of tests/tolerances.py, and hand-derived policy
cases for the near-tie rule."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from adafuse_helpers import tiny_adafuse_model as _build_tiny
from cli_helpers import one_line_error, run_cli
from tolerances import NetShape, magnitude

CORRUPT_BLOCK = "layer2.0"


@functools.lru_cache(maxsize=1)
def tiny_adafuse_model():
    """Built once per module (seeded randomization takes ~0.6 s); only evaluated, never changed."""
    return _build_tiny()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The tiny AdaFuse-TSN (the model behind the tiny_adafuse_export fixture) as our checkpoint."""
    from atfr.models.checkpoint import save_checkpoint

    model, cfg = tiny_adafuse_model()
    return save_checkpoint(tmp_path_factory.mktemp("adafuse_verify") / "tiny.pt", model, cfg,
                           [f"class{i}" for i in range(5)])


def _clips(export, n_random: int) -> list[np.ndarray]:
    from atfr.export.verify import verification_clips
    from atfr.models.checkpoint import LoadedModel
    from atfr.runtime.manifest import load_manifest

    model, cfg = tiny_adafuse_model()
    return [c[0] for c in verification_clips(LoadedModel(model, cfg), load_manifest(export), n_random, [])]


def _corrupt(src, dst, graph: str) -> None:
    """Copy the export and add +0.5 to the keep logit of every channel in one block's policy FC
    (gate_fc1.bias, [C*3] = C x (skip, reuse, keep)) of ``graph``; the manifest's checksums are
    refreshed, so this is a wrong export, not a corrupt copy (which the checksums catch first)."""
    from atfr.fileio import sha256_file
    from atfr.runtime.manifest import write_manifest

    shutil.copytree(src, dst)
    f = dst / f"{graph}.onnx"
    g = onnx.load(str(f))
    hits = [t for t in g.graph.initializer if t.name.endswith(f"{CORRUPT_BLOCK}.policy_net.gate_fc1.bias")]
    assert len(hits) == 1
    b = numpy_helper.to_array(hits[0]).reshape(-1, 3).copy()
    b[:, 2] += 0.5
    hits[0].CopyFrom(numpy_helper.from_array(b.reshape(-1), hits[0].name))
    onnx.save(g, str(f))
    d = json.loads((dst / "atfr.json").read_text())
    d["checksums"][f.name] = sha256_file(f)
    write_manifest(dst / "atfr.json", d)


def test_verify_passes_every_graph_within_the_derived_bound(capsys, tiny_adafuse_export, ckpt):
    rc, out, err = run_cli(capsys, "verify", tiny_adafuse_export, "--checkpoint", ckpt, "--clips", "1", "--json")
    assert rc == 0, err
    reps = json.loads(out)
    assert [r["graph"] for r in reps] == ["model", "online", "online_gathered"]
    clips = _clips(tiny_adafuse_export, 1)
    assert len(clips) == 5  # 4 structured + 1 seeded random
    # The bound, derived here from the torch model's reductions (tests/tolerances.py) and the
    # magnitude of the torch logits and frame logits of those clips.
    model, _ = tiny_adafuse_model()
    ks = [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        outs = [model.run(torch.from_numpy(c)) for c in clips]
    atol = NetShape(len(ks), max(ks)).rtol * magnitude(np.concatenate(
        [np.concatenate([o.logits.numpy().ravel(), o.frame_logits.numpy().ravel()]) for o in outs]))
    for r in reps:
        if r["near_ties"]:
            pytest.skip(f"a near-tie policy entry or top-1 flipped on this CPU: {r['near_ties'][0]}")
        assert r["ok"] and r["clips"] == 5 and r["policy_agree"] == 5 and r["top1_agree"] == 5, r
        logit_stages = [k for k in r["stages"] if "logits" in k]
        assert len(logit_stages) == (1 if r["graph"] == "model" else 2)
        for k in logit_stages:
            assert r["stages"][k]["limit"] == pytest.approx(atol, rel=1e-12)
            assert 0 <= r["stages"][k]["max_abs"] <= atol
    assert reps[0]["stages"]["clip.probs"]["limit"] == pytest.approx(atol / 2, rel=1e-12)
    rc, out, err = run_cli(capsys, "verify", tiny_adafuse_export, "--checkpoint", ckpt, "--clips", "0")
    assert rc == 0, err
    assert out.count("-> PASS") == 3 and "policy agree 4/4" in out and "online_gathered.onnx" in out


def test_verify_fails_on_a_changed_policy_net_of_the_clip_graph(capsys, tiny_adafuse_export, ckpt, tmp_path):
    import onnxruntime as ort

    bad = tmp_path / "bad"
    _corrupt(tiny_adafuse_export, bad, "model")
    rc, out, err = run_cli(capsys, "verify", bad, "--checkpoint", ckpt, "--clips", "0", "--json")
    one_line_error(rc, err, expect_rc=3, match="verification failed for: model.onnx")
    reps = {r["graph"]: r for r in json.loads(out)}
    assert not reps["model"]["ok"] and reps["online"]["ok"] and reps["online_gathered"]["ok"]
    assert reps["model"]["policy_agree"] == 0
    # The differing entries of the changed block, counted here: the torch policy vs the changed
    # graph's own policy output on the same clip.
    model, _ = tiny_adafuse_model()
    blocks = [n for n, _ in model.gated_blocks()]
    i = blocks.index(CORRUPT_BLOCK)
    sess = ort.InferenceSession(str(bad / "model.onnx"), providers=["CPUExecutionProvider"])
    for k, clip in enumerate(_clips(tiny_adafuse_export, 0)):
        with torch.no_grad():
            want = model.run(torch.from_numpy(clip)).policy[i][0].numpy()
        got = sess.run([f"policy{i}"], {"clip0": clip})[0][0]
        mm = next(m for m in reps["model"]["mismatches"] if m["clip"] == k and m["what"] == "policy")
        first = mm["blocks"][0]
        assert first["block"] == CORRUPT_BLOCK and first["entries"] == int((got != want).sum()) > 0
        assert first["max_margin"] > 1e-2  # far from a tie: a real difference


@pytest.mark.parametrize("graph", ["online", "online_gathered"])
def test_verify_fails_on_a_changed_online_graph(capsys, tiny_adafuse_export, ckpt, tmp_path, graph):
    bad = tmp_path / "bad"
    _corrupt(tiny_adafuse_export, bad, graph)
    rc, out, err = run_cli(capsys, "verify", bad, "--checkpoint", ckpt, "--clips", "0")
    one_line_error(rc, err, expect_rc=3, match=f"verification failed for: {graph}.onnx")
    sections = out.split("\n[")
    assert sum("-> FAIL" in s for s in sections) == 1
    failed = next(s for s in sections if "-> FAIL" in s)
    assert f"{graph}.onnx" in failed.splitlines()[0] and f"mismatch on clip 0: {CORRUPT_BLOCK} " in failed


def test_near_tie_rule_hand_derived():
    """A flipped entry whose torch margin is within the bound is a near tie (reported, not a
    failure); one above it, or a top-1 flip beyond twice the logits bound, is a mismatch."""
    from atfr.export.adafuse_verify import AdaFuseGraphReport, Bounds, TorchRef, _policy_check, _top1_check

    ref = TorchRef(np.array([1.0, 0.5]), np.zeros((2, 2)), [np.array([[2, 0], [1, 1]])],
                   [np.array([[1e-7, 0.4], [0.3, 0.2]])], 2.0)
    bounds = Bounds(logits_atol=1e-4, policy_margin=1e-6)
    rep = AdaFuseGraphReport("model")
    assert _policy_check(rep, 0, [np.array([[2, 0], [1, 1]])], ref, ["b"], bounds)
    assert not _policy_check(rep, 1, [np.array([[0, 0], [1, 1]])], ref, ["b"], bounds)  # margin 1e-7
    assert not _policy_check(rep, 2, [np.array([[0, 2], [1, 1]])], ref, ["b"], bounds)  # 1e-7 and 0.4
    assert rep.policy_agree == 1
    assert [(n["clip"], n["blocks"][0]["entries"]) for n in rep.near_ties] == [(1, 1)]
    assert [(m["clip"], m["blocks"][0]["entries"], m["blocks"][0]["max_margin"])
            for m in rep.mismatches] == [(2, 2, 0.4)]
    rep2 = AdaFuseGraphReport("model", clips=2)
    _top1_check(rep2, 0, np.array([1.0, 1.0 - 1.5e-4]), np.array([0.99995, 1.0]), bounds)  # gap 1.5e-4 <= 2e-4
    _top1_check(rep2, 1, np.array([1.0, 0.9]), np.array([0.9, 1.0]), bounds)  # gap 0.1
    assert [n["clip"] for n in rep2.near_ties] == [0] and [m["clip"] for m in rep2.mismatches] == [1]
    assert not rep2.ok and AdaFuseGraphReport("model", clips=2, policy_agree=1, near_ties=[{}]).ok
    assert not AdaFuseGraphReport("model", clips=1, near_ties=[{}]).ok  # nothing compared in full


def test_verify_errors_are_one_line(capsys, tiny_adafuse_export, ckpt, tiny_checkpoint, tiny_export):
    exp = tiny_adafuse_export
    one_line_error(*run_cli(capsys, "verify", exp)[::2], match="--checkpoint")
    one_line_error(*run_cli(capsys, "verify", exp, "--checkpoint", tiny_checkpoint)[::2], match="not an AdaFuse model")
    one_line_error(*run_cli(capsys, "verify", tiny_export, "--checkpoint", ckpt)[::2], match="is an ATFR export")
    for argv, match in ((["--bins", "2"], "--bins"), (["--precision", "fp16"], "--precision"),
                        (["--backend", "tensorrt"], "onnxruntime"), (["--sgs", "fallback"], "--sgs")):
        one_line_error(*run_cli(capsys, "verify", exp, "--checkpoint", ckpt, *argv)[::2], match=match)
