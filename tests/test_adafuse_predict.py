"""`atfr predict` on an AdaFuse export: the multi-view protocol through the clip graph, with the
policy fractions and GFLOPs of ``atfr infer --json``.

Independent reference: the torch model of tests/adafuse_helpers.py on frames decoded here with
OpenCV, sampled and transformed as the official test protocol does (written out below from the
model's input spec, as tests/test_predict.py does for ATFR), and its policy counted by
models/adafuse_report.clip_fields (the torch path of ``atfr infer``)."""

from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pytest
import torch

from adafuse_helpers import tiny_adafuse_model as _build_tiny
from atfr.display import format_prob
from cli_helpers import one_line_error, run_cli
from official_views import view_indices, view_transform
from tolerances import NetShape, magnitude, prob_atol

cv2 = pytest.importorskip("cv2")
F = torch.nn.functional


@functools.lru_cache(maxsize=1)
def tiny_adafuse_model():
    """Built once per module (seeded randomization takes ~0.6 s); only evaluated, never changed."""
    return _build_tiny()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from test_predict import write_video

    d = tmp_path_factory.mktemp("adafuse_predict")
    return {"land": write_video(d / "land.avi", 40, (48, 64), 30.0, 1),  # resize 48 -> 36 (short side)
            "port": write_video(d / "port.avi", 25, (60, 40), 60.0, 2),  # 60 fps, portrait
            "short": write_video(d / "short.avi", 3, (40, 52), 30.0, 3)}  # shorter than a clip (4)


@functools.lru_cache(maxsize=1)
def _counter():
    """The torch model's own FLOP counts (models/adafuse_flops.py; the export's manifest carries its copy)."""
    from atfr.models.adafuse_flops import AdaFuseCounter

    return AdaFuseCounter(tiny_adafuse_model()[0])


def torch_views(video, temporal: int, spatial: int):
    """Per view (temporal-major, as the official order): logits and the fields ``atfr infer``
    prints for the torch model (models/adafuse_report.clip_fields, with its counter built once)."""
    from test_predict import decode_rgb

    from atfr.runtime.adafuse_gflops import clip_report

    model, _ = tiny_adafuse_model()
    spec, counter = model.input_spec, _counter()
    frames, fps = decode_rgb(video)
    out = []
    for k in range(temporal):
        clip = frames[view_indices(len(frames), k, temporal, fps, spec)]
        for s in ((1,) if spatial == 1 else (0, 1, 2)):
            with torch.no_grad():
                res = model.run(view_transform(clip, s, spec)[None].contiguous())
            policy = [p[0].numpy().astype(np.int64) for p in res.policy]
            out.append((res.logits[0].numpy(),
                        clip_report(policy, counter.base_per_frame, counter.convs, spec.num_frames)))
    return out, model


def _bound(model, logits: list[np.ndarray]) -> float:
    ks = [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return NetShape(len(ks), max(ks)).rtol * magnitude(np.stack(logits))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max())
    return e / e.sum()


@pytest.mark.parametrize("name,views", [("land", "3x3"), ("port", "2x1"), ("short", "1x3")])
def test_predict_equals_torch_multiview(tiny_adafuse_export, videos, name, views):
    from atfr.commands.predict import parse_views, predict_video
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner
    from atfr.runtime.video.preprocess import Preprocessor

    t, s = parse_views(views)
    runner = AdaFuseClipRunner.load(tiny_adafuse_export)
    ours = predict_video(runner, Preprocessor(runner.manifest.input), videos[name], t, s)
    ref, model = torch_views(videos[name], t, s)
    assert ours.views == len(ref) == len(ours.adafuse) == t * s
    got = ours.to_json(runner.manifest.label)
    for v, (view, (lg, extra)) in enumerate(zip(ours.adafuse, ref)):
        if view["policy_fractions"] != extra["policy_fractions"]:
            pytest.skip(f"view {v}: a policy entry differs from torch (near tie on this CPU?); "
                        "tests/test_adafuse_verify.py checks policies entry by entry")
        assert view["gflops"] == pytest.approx(extra["gflops"], rel=1e-12)
    atol = _bound(model, [lg for lg, _ in ref])
    prob_sum = np.sum([_softmax(lg) for lg, _ in ref], 0)
    np.testing.assert_allclose(ours.prob_sum, prob_sum, rtol=0, atol=len(ref) * prob_atol(atol))
    assert ours.top(5) == [int(i) for i in np.argsort(-prob_sum, kind="stable")]
    n = len(ref)  # the video's fields: the means over the views of the per-view ones
    for a in ("skip", "reuse", "keep"):
        assert got["policy_fractions"][a] == pytest.approx(sum(e["policy_fractions"][a] for _, e in ref) / n, rel=1e-12)
    for g in ("official", "eq5", "dense_official"):
        assert got["gflops"][g] == pytest.approx(sum(e["gflops"][g] for _, e in ref) / n, rel=1e-12)
    assert got["gflops"]["eq5"] < got["gflops"]["dense_official"]  # the policy skips and reuses: fewer GFLOPs
    assert got["mean_bprime"] == [] and got["bprime"] == [[]] * n


def test_predict_cli_json_csv_text_and_skips(capsys, tiny_adafuse_export, videos, tmp_path):
    folder = tmp_path / "vids"
    folder.mkdir()
    (folder / "a.avi").write_bytes(videos["land"].read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video")
    out_csv = tmp_path / "p.csv"
    rc, out, err = run_cli(capsys, "predict", tiny_adafuse_export, folder, "--views", "2x3", "--json",
                           "--csv", out_csv)
    assert rc == 5, err  # as for ATFR exports: the failure is reported, the other video predicted
    assert "skipped" in err and "broken.mp4" in err and "1 of 2 video(s) failed" in err
    rec = json.loads(out.strip().splitlines()[-1])
    ref, _ = torch_views(videos["land"], 2, 3)
    if [v for v in rec["view_policy_fractions"]] != [e["policy_fractions"] for _, e in ref]:
        pytest.skip("a policy entry differs from torch (near tie on this CPU?)")
    assert rec["views"] == 6 and rec["top1"]["label"] == f"class{rec['top1']['index']}"
    assert rec["view_gflops"] == [pytest.approx(e["gflops"], rel=1e-12) for _, e in ref]
    row = next(csv.DictReader(out_csv.open()))
    assert row["video"].endswith("a.avi")
    for a in ("skip", "reuse", "keep"):
        assert float(row[a]) == pytest.approx(rec["policy_fractions"][a], abs=1e-6)
    assert float(row["gflops_eq5"]) == pytest.approx(rec["gflops"]["eq5"], abs=1e-6)
    assert float(row["gflops_official"]) == pytest.approx(rec["gflops"]["official"], abs=1e-6)
    rc, out, err = run_cli(capsys, "predict", tiny_adafuse_export, videos["land"], "--views", "2x3")
    assert rc == 0, err
    f = rec["policy_fractions"]
    assert out.strip() == (f"{videos['land']}: {rec['top1']['label']} ({format_prob(rec['top1']['score'])})  "
                           f"policy skip {f['skip']:.1%} reuse {f['reuse']:.1%} keep {f['keep']:.1%}, GFLOPs/clip "
                           f"{rec['gflops']['eq5']:.3g} (Eq. 5; official {rec['gflops']['official']:.3g})")


def test_predict_errors_are_one_line(capsys, tiny_adafuse_export, videos, tmp_path):
    exp, v = tiny_adafuse_export, videos["short"]
    one_line_error(*run_cli(capsys, "predict", exp, v, "--bins", "2")[::2], match="--bins")
    # --backend tensorrt runs model.engine (atfr build); without one, the line says how to build it
    one_line_error(*run_cli(capsys, "predict", exp, v, "--backend", "tensorrt")[::2], match="model.engine is missing")
    one_line_error(*run_cli(capsys, "predict", exp, tmp_path / "none.mp4")[::2], expect_rc=5, match="no such file")
