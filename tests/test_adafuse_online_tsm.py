"""AdaFuse-TSM online (models/adafuse_online_tsm.py): one frame late per shifted block, equal to the
clip model. References: the torch clip model (itself checked against the official code for
AdaFuse-TSM-R50-Last in tests/test_adafuse_refs.py), frame by frame; hand-derived delays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adafuse_helpers import tiny_adafuse_model
from atfr.runtime.video.preprocess import Preprocessor
from tolerances import NetShape, magnitude

cv2 = pytest.importorskip("cv2")


def _rtol(model: torch.nn.Module) -> float:
    """Two fp32 evaluations in other summation orders (tests/tolerances.py: depth, longest sum)."""
    ks = [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return NetShape(len(ks), max(ks)).rtol


@pytest.fixture(scope="module")
def tsm(tiny_adafuse_tsm_export):
    """The tiny AdaFuse-TSM (R18: 8 shifted blocks, gated blocks in stages 1 and 3) and its export."""
    model, _ = tiny_adafuse_model(shift=True)
    return model, tiny_adafuse_tsm_export


def test_torch_online_dense_and_gathered_equal_the_clip_model():
    from atfr.errors import ATFRError
    from atfr.models.adafuse_online import AdaFuseOnline
    from atfr.models.adafuse_online_tsm import AdaFuseOnlineTSM, run_online_tsm

    model, _ = tiny_adafuse_model(shift=True)
    # Edge cases of the gathered convolutions, as for TSN: layer2.0 skips every channel, layer2.1
    # reuses every one (recomputed from the cached shifted input), layer4.0 keeps all.
    with torch.no_grad():
        for (_, b), action in zip(model.gated_blocks(), (0, 1, 2)):
            b.policy_net.gate_fc1.bias.view(-1, 3)[:, action] += 1e3
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        clip = model.run(x)
        for gathered, n in ((False, 2), (True, 1)):
            online = AdaFuseOnlineTSM(model, gathered).eval()
            assert online.delay == 8  # ResNet-18: 8 blocks, each shifted
            fl, pol = run_online_tsm(online, x[:n])
            for a, b in zip(pol, clip.policy):
                assert torch.equal(a, b[:n])
            atol = _rtol(model) * magnitude(clip.frame_logits.numpy())  # batch 1 vs N*T convs
            torch.testing.assert_close(fl, clip.frame_logits[:n], rtol=0, atol=atol)
    assert [bool((p == k).any()) for p, k in zip(clip.policy, (0, 1, 2))] == [True] * 3
    with pytest.raises(ATFRError, match="AdaFuseOnlineTSM"):
        AdaFuseOnline(model)


def test_delay_is_one_frame_per_shifted_block():
    """Hand-derived: TSM's shift lets frame t of each of the 8 blocks read frame t+1, so frame t's
    logits depend on frames up to t+8 and the online graph must run 8 frames behind. Changing frame
    13 of 14 changes the clip model's frames 5..13 and not 0..4; online, step s gives frame s-8
    (``frame_valid`` 0 for the first 8 steps), and the change shows at step 13 (frame 5), not before."""
    from atfr.models.adafuse_online_tsm import AdaFuseOnlineTSM

    model, _ = tiny_adafuse_model(shift=True)
    online = AdaFuseOnlineTSM(model).eval()
    frames = torch.randn(1, 3, 14, 32, 32, generator=torch.Generator().manual_seed(5))
    changed = frames.clone()
    changed[:, :, 13] = -3.0 * frames[:, :, 13]
    with torch.no_grad():
        fa, fb = model.run(frames).frame_logits[0], model.run(changed).frame_logits[0]
    atol = _rtol(model) * magnitude(fa.numpy())
    # Exact: the same kernels on the same shapes give frames that do not see the change bit for bit.
    # Frame 5 sees it only through one fold of channels in each of 8 blocks (a small effect, != 0).
    changed_frames = [t for t in range(14) if not torch.equal(fa[t], fb[t])]
    assert changed_frames == list(range(5, 14))

    def outputs(clip):
        state, outs = online.zero_state(1, 32), []
        g = len(model.gated_blocks())
        with torch.no_grad():
            for t in range(14):
                o = online(clip[:, :, t], torch.ones(1), *state)
                state = list(o[2 + g:])
                outs.append((o[0][0], float(o[1 + g][0])))
        return outs

    a, b = outputs(frames), outputs(changed)
    assert [v for _, v in a] == [0.0] * 8 + [1.0] * 6
    torch.testing.assert_close(torch.stack([x for x, _ in a[8:]]), fa[:6], rtol=0, atol=atol)
    assert [t for t, ((x, _), (y, _)) in enumerate(zip(a, b)) if not torch.equal(x, y)] == [13]


def test_export_has_tsm_online_graphs_equal_to_the_clip_graph(tsm):
    from atfr.export.exporter import TRT103_OPS
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner
    import onnx

    model, out = tsm
    m = json.loads((out / "atfr.json").read_text())
    assert m["adafuse"]["variant"] == "TSM" and m["adafuse"]["online_delay"] == 8
    g = onnx.load(str(out / "online.onnx"))
    assert [i.name for i in g.graph.input][:3] == ["frame", "valid", "valid_reg"]
    assert {n.op_type for n in g.graph.node} <= TRT103_OPS | {"GlobalMaxPool"}
    clip = AdaFuseClipRunner.load(out)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model.run(torch.from_numpy(x))
    res, extra = clip.infer(x)
    want = [p[0].numpy() for p in ref.policy]
    assert all(np.array_equal(a, b) for a, b in zip(extra["policy"], want))
    atol = _rtol(model) * magnitude(ref.frame_logits.numpy())
    for graph in ("online", "online_gathered"):
        fl, pol = AdaFuseOnlineRunner.load(out, graph=graph).run_clip(x)
        assert fl.shape == (1, 4, 5)
        assert all(np.array_equal(a[0], b) for a, b in zip(pol, want))
        np.testing.assert_allclose(fl[0], ref.frame_logits[0].numpy(), rtol=0, atol=atol)


def _stream(out, video, stride=3):
    from atfr.runtime.adafuse_stream import AdaFuseStream
    from atfr.runtime.streaming.runner import RunOptions, StreamRunner
    from atfr.runtime.video.sources import FrameStream, open_reader

    model = AdaFuseStream.load(out)
    seen: list = []
    runner = StreamRunner(model, FrameStream(open_reader(str(video)), lossless=True),
                          RunOptions(stride=stride, lossless=True))
    real = runner._record
    runner._record = lambda job, res, ms: seen.append((job, res)) or real(job, res, ms)
    return model, runner.run(), seen


def _long_clip(model, frames, spec) -> np.ndarray:
    """The torch clip model over all ``frames`` as one clip: frame logits [N,K]."""
    x = torch.from_numpy(Preprocessor(spec)(frames, 1)[None])
    with torch.no_grad():
        return model.run(x).frame_logits[0].numpy()


def test_run_window_ends_delay_frames_back(tsm):
    """atfr run's stream model on real footage: the result at newest frame j is the mean of the
    long clip's frame logits j-8-3 .. j-8 (T = 4 frames, 8 behind), each stream frame through the
    graph once, the first result after T + 8 frames, ``delay_frames`` in the event."""
    from footage import real_video
    from atfr.runtime.video.sources import read_frames

    model, out = tsm
    video = real_video("carphone")
    stream, summary, seen = _stream(out, video)
    frames = read_frames(video)[0]
    fl = _long_clip(model, frames, stream.manifest.input)
    assert summary.model_frames == len(frames) == 120
    idx = [job.frame_index for job, _ in seen]
    assert idx == list(range(11, 120, 3))
    atol = _rtol(model) * magnitude(fl)
    for j, res in ((job.frame_index, r) for job, r in seen):
        np.testing.assert_allclose(res.logits, fl[j - 11:j - 7].mean(0), rtol=0, atol=atol)
        assert res.event["delay_frames"] == 8


@pytest.mark.parametrize("n", [3, 11])
def test_short_source_is_padded_then_flushed(tsm, tmp_path, n):
    """Fewer than T + 8 frames: one result. 3 frames: padded to T = 4 (last frame repeated), then 8
    flush steps: the clip model on [0,1,2,2]. 11 frames: no padding, flushed: the mean of the last
    T frames of the clip model over the 11 frames (zeros past the end, as the clip graph pads)."""
    from footage import real_video_prefix

    model, out = tsm
    path = tmp_path / "short.avi"
    decoded = real_video_prefix("carphone", n, path)
    stream, summary, seen = _stream(out, path)
    assert summary.clips == 1 and summary.padded_clips == 1 and seen[0][0].padded
    clip = decoded[[0, 1, 2, 2]] if n == 3 else decoded
    fl = _long_clip(model, clip, stream.manifest.input)
    assert stream.frames_run == max(n, 4) + 8
    np.testing.assert_allclose(seen[0][1].logits, fl[-4:].mean(0), rtol=0, atol=_rtol(model) * magnitude(fl))


def test_verify_checks_the_tsm_online_graphs(tsm, tmp_path, capsys):
    """atfr verify on the TSM export: the clip graph and both delayed online graphs (flushed
    after each clip) against the torch model, each PASS with every policy equal."""
    from atfr.models.checkpoint import save_checkpoint
    from cli_helpers import run_cli

    model, out = tsm
    ckpt = save_checkpoint(tmp_path / "tsm.pt", model, model.cfg, [f"class{i}" for i in range(5)])
    rc, text, err = run_cli(capsys, "verify", out, "--checkpoint", ckpt, "--clips", "0", "--json")
    assert rc == 0, err
    reps = json.loads(text)
    assert [r["graph"] for r in reps] == ["model", "online", "online_gathered"]
    for r in reps:
        if r["near_ties"]:
            pytest.skip(f"a near-tie policy entry or top-1 flipped on this CPU: {r['near_ties'][0]}")
        assert r["ok"] and r["clips"] == r["policy_agree"] == r["top1_agree"] == 4, r


def test_onnx_export_leaves_the_model_in_eval_mode():
    """A fresh wrapper module is in training mode; torch.onnx.export restores that mode after
    tracing, which put the wrapped model (BatchNorm) in training mode for everything after the
    export (found when torch references computed after an export disagreed)."""
    from atfr.export.exporter import _onnx_export

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    _onnx_export(Wrapper(inner), (torch.zeros(1, 3, 2, 2),), ["x"], ["y"], None, 17)
    assert not inner.training and not inner[1].training
