"""`atfr run` on an AdaFuse-TSN export (runtime/adafuse_stream.py): each frame through the online
graph once, the state carried for the whole stream, a result = the mean of the last T frame logits.

Independent references: the torch model run over the whole stream as ONE long clip (zero state at
the stream's start: exactly the relation the streaming state guarantees, frame by frame), the ONNX
clip graph on the first window, and Eq. 5 of runtime/adafuse_gflops.policy_gflops for the first
window's GFLOPs. Real footage (tests/footage.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adafuse_helpers import assert_policies, tiny_adafuse_model
from atfr.runtime.adafuse_gflops import clip_report, policy_gflops
from atfr.runtime.streaming.runner import RunOptions, StreamRunner
from atfr.runtime.video.preprocess import Preprocessor
from atfr.runtime.video.sources import FrameStream, SimulatedSource, open_reader, read_frames
from cli_helpers import one_line_error, run_cli
from footage import real_video, real_video_prefix
from tolerances import NetShape, magnitude

cv2 = pytest.importorskip("cv2")
STRIDE = 3


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _counting(stream_model) -> list[list[np.ndarray]]:
    """Record the online graph's runs (one per frame through the model): each run's policy per block."""
    runs: list[list[np.ndarray]] = []
    ort = stream_model.runner.runner
    real = ort.run
    n = len(stream_model.runner.blocks)

    def run(feeds):
        out = real(feeds)
        runs.append([out[f"policy{i}"][0] for i in range(n)])
        return out

    ort.run = run
    return runs


def _recording(runner: StreamRunner, seen: list) -> None:
    """Keep (job, result) of every recorded result."""
    real = runner._record

    def record(job, res, infer_ms):
        seen.append((job, res))
        real(job, res, infer_ms)

    runner._record = record


def _torch_reference(frames: np.ndarray, spec) -> tuple[np.ndarray, list[np.ndarray], dict, float]:
    """The torch model over all ``frames`` as one clip from a zero state: frame logits [N,K], the
    policy per block [N,C], an assert_policies reference (with each entry's best-minus-second gap,
    for near ties) and the logits' bound (tests/tolerances.py: depth and longest reduction)."""
    model, _ = tiny_adafuse_model()
    logprobs: list[torch.Tensor] = []
    for _, b in model.gated_blocks():
        real = b.policy_net.log_probs
        b.policy_net.log_probs = lambda x, t, real=real: logprobs.append(real(x, t)) or logprobs[-1]
    x = torch.from_numpy(Preprocessor(spec)(frames, 1)[None])
    with torch.no_grad():
        out = model.run(x)
    ref = {"gated_blocks": np.arange(len(out.policy)),
           "policy_logprob_max": np.array(max(float(lp.abs().max()) for lp in logprobs))}
    for i, (p, lp) in enumerate(zip(out.policy, logprobs)):
        top2 = lp.topk(2, dim=-1).values
        ref[f"policy_{i}"] = p[0].numpy()
        ref[f"policy_gap_{i}"] = (top2[..., 0] - top2[..., 1]).numpy()
    ks = [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    rtol = NetShape(len(ks), max(ks)).rtol
    fl = out.frame_logits[0].numpy()
    return fl, [p[0].numpy() for p in out.policy], ref, rtol


@pytest.fixture(scope="module")
def streamed(tiny_adafuse_export, tmp_path_factory):
    """carphone.mp4 (120 real frames, 29.97 fps: the model's 30 fps rate takes every frame) through
    StreamRunner, lossless: the results, the jsonl lines, the graph's runs, and the torch reference."""
    from atfr.runtime.adafuse_stream import AdaFuseStream

    video = real_video("carphone")
    ev = tmp_path_factory.mktemp("adafuse_run") / "ev.jsonl"
    model = AdaFuseStream.load(tiny_adafuse_export)
    runs = _counting(model)
    seen: list = []
    with open(ev, "w") as f:
        runner = StreamRunner(model, FrameStream(open_reader(str(video)), lossless=True),
                              RunOptions(stride=STRIDE, lossless=True), events=f)
        _recording(runner, seen)
        summary = runner.run()
    frames, _ = read_frames(video)
    fl, policy, ref, rtol = _torch_reference(frames, model.manifest.input)
    stepped = [np.stack([r[i] for r in runs]) for i in range(len(policy))]  # the stream's policy, [N,C]
    return {"model": model, "summary": summary, "events": _events(ev), "calls": len(runs), "frames": frames,
            "results": {job.frame_index: res.logits for job, res in seen}, "stepped": stepped,
            "frame_logits": fl, "policy": policy, "ref": ref, "rtol": rtol}


def test_results_are_the_mean_of_the_stream_clips_last_t_frame_logits(streamed, tiny_adafuse_export):
    """Each result = the mean over its window of the frame logits of the torch model run over the
    whole stream as one clip (zero state at the stream's start), within the derived bound; the
    policies frame by frame identical; the first window = the ONNX clip graph on its T frames."""
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner

    d = streamed
    model, events, results, fl = d["model"], d["events"], d["results"], d["frame_logits"]
    t, n = model.frames_in_window, len(d["frames"])
    assert d["summary"].end_reason == "eof" and d["summary"].frames == n == 120
    # the first result once T frames were seen, then one every STRIDE frames (lossless: none dropped)
    assert [e["frame"] for e in events] == list(range(t - 1, n, STRIDE)) == sorted(results)
    assert_policies(d["stepped"], d["ref"], d["rtol"])  # exact, up to a near tie (then: skip)
    atol = d["rtol"] * magnitude(fl)  # a mean of T values each within atol is within atol
    for e in events:
        k = e["frame"]
        np.testing.assert_allclose(results[k], fl[k - t + 1:k + 1].mean(0), rtol=0, atol=atol)
    clip = AdaFuseClipRunner.load(tiny_adafuse_export)
    res, extra = clip.infer(Preprocessor(model.manifest.input)(d["frames"][:t], 1)[None])
    for a, b in zip(extra["policy"], d["stepped"]):
        np.testing.assert_array_equal(np.asarray(a), b[:t])
    np.testing.assert_allclose(results[t - 1], res.logits, rtol=0, atol=atol)


def test_jsonl_policy_fractions_and_gflops(streamed):
    """Every line: skip/reuse/keep fractions of the result's frame and of its window, summing to 1
    and equal (exactly: counts over channels) to clip_report's on the same frames of the torch long
    clip's policy; the first window's GFLOPs per frame x T = Eq. 5 of its clip."""
    model, events, policy = streamed["model"], streamed["events"], streamed["policy"]
    t = model.frames_in_window
    assert_policies(streamed["stepped"], streamed["ref"], streamed["rtol"])  # else the reference is another run
    for e in events:
        k = e["frame"]
        for key, lo in (("frame", k), ("window", k - t + 1)):
            got = e["policy"][key]
            assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)
            want = clip_report([p[lo:k + 1] for p in policy], model.base, model.convs, k + 1 - lo)["policy_fractions"]
            assert got == want, (k, key)
        assert e["window_frames"] == t and e["bprime"] == []
        assert e["gflops_per_frame"]["dense"] == model.base > e["gflops_per_frame"]["window"]
    first = events[0]["gflops_per_frame"]["window"] * t
    assert first == pytest.approx(policy_gflops([p[:t] for p in policy], model.base, model.convs, False), rel=1e-9)
    kinds = np.unique(np.concatenate([p.ravel() for p in policy]))
    assert kinds.tolist() == [0, 1, 2]  # the test model skips, reuses and keeps


def test_each_frame_goes_through_the_graph_once(streamed, tiny_adafuse_export):
    from atfr.runtime.adafuse_stream import AdaFuseStream

    assert streamed["calls"] == streamed["summary"].model_frames == len(streamed["frames"])
    # a 60 fps source: the model's 30 fps rate takes every second frame, still once each
    model = AdaFuseStream.load(tiny_adafuse_export)
    calls60 = _counting(model)
    seen: list = []
    src = SimulatedSource(num_frames=16, fps=60.0, size=(36, 48), pace=False)
    runner = StreamRunner(model, FrameStream(src, lossless=True, max_retries=0), RunOptions(stride=4, lossless=True))
    _recording(runner, seen)
    s = runner.run()
    assert len(calls60) == s.model_frames == 8 and s.frames == 16
    assert [job.frame_index for job, _ in seen] == [6, 10, 14]  # 4th model frame (source 6), then every 4
    # the same model for a second run: a new stream (zero state), the same results
    again: list = []
    runner = StreamRunner(model, FrameStream(SimulatedSource(num_frames=16, fps=60.0, size=(36, 48), pace=False),
                                             lossless=True, max_retries=0), RunOptions(stride=4, lossless=True))
    _recording(runner, again)
    assert runner.run().model_frames == 8 and len(calls60) == 16
    for (_, a), (_, b) in zip(seen, again, strict=True):
        np.testing.assert_array_equal(a.logits, b.logits)


def test_short_source_gives_one_padded_result(tiny_adafuse_export, tmp_path):
    """3 frames < T = 4: the last frame is repeated up to T (the official clamp), one result."""
    from atfr.runtime.adafuse_stream import AdaFuseStream

    path = tmp_path / "short.avi"
    decoded = real_video_prefix("carphone", 3, path)
    model = AdaFuseStream.load(tiny_adafuse_export)
    calls = _counting(model)
    seen: list = []
    runner = StreamRunner(model, FrameStream(open_reader(str(path)), lossless=True), RunOptions(lossless=True))
    _recording(runner, seen)
    s = runner.run()
    assert s.clips == 1 and s.padded_clips == 1 and len(calls) == 4 and seen[0][0].padded
    fl, _, _, rtol = _torch_reference(decoded[[0, 1, 2, 2]], model.manifest.input)
    np.testing.assert_allclose(seen[0][1].logits, fl.mean(0), rtol=0, atol=rtol * magnitude(fl))


def test_save_draws_the_policy_line(tiny_adafuse_export, tmp_path, capsys, monkeypatch):
    """--save: a playable video with every frame, the policy on the overlay (the lines drawn are
    those of the newest result: its window's fractions, as in the jsonl)."""
    from atfr.cli import main
    from atfr.runtime.video import overlay

    drawn: list = []
    real_draw = overlay.draw_lines
    monkeypatch.setattr(overlay, "draw_lines", lambda img, lines: drawn.append(list(lines)) or real_draw(img, lines))
    src = real_video("carphone")
    out, ev = tmp_path / "a.mp4", tmp_path / "ev.jsonl"
    rc = main(["run", str(tiny_adafuse_export), "--source", str(src), "--fast", "--stride", "8",
               "--save", str(out), "--jsonl", str(ev)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert len(read_frames(out)[0]) == 120 and "120 frame(s) through the online graph" in cap.out
    assert "(online.onnx, onnxruntime)" in cap.err
    last = _events(ev)[-1]["policy"]
    want = "/".join(f"{round(100 * last['window'][a])}" for a in ("skip", "reuse", "keep"))
    assert drawn[-1][5].startswith(f"skip/reuse/keep {want}% (frame ") and drawn[-1][6].startswith("GFLOPs/frame ")
    assert drawn[0] == ["buffering 1/4"]


def test_adafuse_run_errors_are_one_line(tiny_adafuse_export, capsys, tmp_path):
    import shutil

    src = str(real_video("carphone"))
    # an AdaFuse export without an online graph (as AdaFuse-TSM's were before it had one)
    tsm = shutil.copytree(tiny_adafuse_export, tmp_path / "tsm")
    m = json.loads((tsm / "atfr.json").read_text())
    for g in ("online", "online_gathered"):
        del m["graphs"][g]
    del m["manifest_sha256"]
    (tsm / "atfr.json").write_text(json.dumps(m))
    one_line_error(*run_cli(capsys, "run", tsm, "--source", src)[::2], match="has no online graph (exported by an older")
    one_line_error(*run_cli(capsys, "run", tiny_adafuse_export, "--source", src, "--bins", "2")[::2],
                   match="is an AdaFuse export (no SGS layer, no bins")
    one_line_error(*run_cli(capsys, "run", tiny_adafuse_export, "--source", src, "--backend", "tensorrt")[::2],
                   match="online.engine is missing: build the engines with 'atfr build")
    one_line_error(*run_cli(capsys, "run", tiny_adafuse_export, "--source", src, "--latency-budget", "50")[::2],
                   match="--latency-budget: ")


def test_gathered_online_graph_gives_the_same_stream(streamed, tiny_adafuse_export):
    """--online-graph online_gathered (computes only the channels the policy needs): the same
    policies on every frame and the same results within the bound as the dense online graph."""
    from atfr.runtime.adafuse_stream import AdaFuseStream

    model = AdaFuseStream.load(tiny_adafuse_export, graph="online_gathered")
    runs = _counting(model)
    seen: list = []
    runner = StreamRunner(model, FrameStream(open_reader(str(real_video("carphone"))), lossless=True),
                          RunOptions(stride=STRIDE, lossless=True))
    _recording(runner, seen)
    runner.run()
    for i, dense in enumerate(streamed["stepped"]):
        np.testing.assert_array_equal(np.stack([r[i] for r in runs]), dense)
    atol = streamed["rtol"] * magnitude(streamed["frame_logits"])  # both within it of the torch model
    assert [job.frame_index for job, _ in seen] == sorted(streamed["results"])
    for job, res in seen:
        np.testing.assert_allclose(res.logits, streamed["results"][job.frame_index], rtol=0, atol=2 * atol)
