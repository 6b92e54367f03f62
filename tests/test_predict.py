"""`atfr predict`: the official multi-view protocol vs a torch reference on the same decoded frames."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from atfr.cli import main
from atfr.commands.predict import parse_views, predict_video
from atfr.errors import ATFRError
from atfr.runtime.pipeline import Pipeline
from atfr.runtime.video.preprocess import Preprocessor

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
from official_views import view_indices, view_transform  # noqa: E402 - needs torch
F = torch.nn.functional

# A model whose transform really resizes (short side 40 > crop 32) and samples every 2nd frame.
CFG = {"arch": "3dresnet", "depth": 18, "width_per_group_slow": 8, "width_per_group_fast": 4, "num_frames": 8,
       "sampling_rate": 2, "crop_size": 32, "short_side": 40, "num_classes": 5, "sgs_stage": "res2"}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint, save_checkpoint
    from atfr.models.config import from_compact
    from atfr.models.zoo import build_model

    torch.manual_seed(0)
    cfg = from_compact(CFG)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(3)
    for m in model.modules():  # non-trivial BN statistics so views and classes differ
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm3d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    d = tmp_path_factory.mktemp("predict_model")
    ckpt = save_checkpoint(d / "m.pt", model, cfg, [f"act{i}" for i in range(5)])
    out = d / "export"
    export_model(load_checkpoint(ckpt), out, ExportOptions(name="pred"))
    return ckpt, out


def write_video(path: Path, n: int, size: tuple[int, int], fps: float = 30.0, seed: int = 0) -> Path:
    h, w = size
    rng = np.random.default_rng(seed)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert wr.isOpened()
    for i in range(n):
        f = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        x = int(w / 2 + w / 3 * math.sin(i / 4))
        f[:, max(0, x - 4):x + 4] = (30, 180, 250)
        f[(i * 2) % h: (i * 2) % h + 5] = (200, 60, 30)
        wr.write(f)
    wr.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("predict_videos")
    return {
        "landscape": write_video(d / "land.avi", 70, (48, 64), 30.0, 1),   # downscale 48 -> 40
        "portrait": write_video(d / "port.avi", 50, (72, 36), 60.0, 2),    # upscale 36 -> 40, 60 fps
        "short": write_video(d / "short.avi", 6, (40, 52), 30.0, 3),       # shorter than a clip (16)
    }


# -- the torch reference, written from the official code ------------------------------------------
def decode_rgb(path: Path) -> tuple[np.ndarray, float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames), fps


# PySlowFast's multi-view sampling (tests/official_views.py) with this model's config and the
# Kinetics normalisation (mean 0.45, std 0.225) at the official 30 fps clip rate.
REF_SPEC = SimpleNamespace(num_frames=CFG["num_frames"], sampling_rate=CFG["sampling_rate"], target_fps=30.0,
                           short_side=CFG["short_side"], crop_size=CFG["crop_size"], mean=[0.45] * 3, std=[0.225] * 3)


def torch_multiview(ckpt: Path, video: Path, temporal: int, spatial: int) -> tuple[np.ndarray, list[int]]:
    from atfr.models.checkpoint import load_checkpoint

    model = load_checkpoint(ckpt).model.eval()
    frames, fps = decode_rgb(video)
    total = torch.zeros(CFG["num_classes"], dtype=torch.float64)
    bps = []
    with torch.no_grad():
        for v in range(temporal * spatial):  # official view order: temporal v // S, spatial v % S
            k, s = divmod(v, spatial)
            s = 1 if spatial == 1 else s
            clip = view_transform(frames[view_indices(len(frames), k, temporal, fps, REF_SPEC)], s, REF_SPEC)[None]
            logits, bp = model.forward_with_bprime([clip])  # one view = batch of one (per-clip B')
            total += torch.softmax(logits[0], 0).double()
            bps.append(int(bp[0, 0]))
    return total.numpy(), bps


@pytest.mark.parametrize("name,views", [("landscape", "10x3"), ("portrait", "4x3"), ("landscape", "1x1"),
                                        ("short", "2x3")])
def test_predict_equals_torch_multiview(model_files, videos, name, views):
    ckpt, export = model_files
    t, s = parse_views(views)
    p = Pipeline.load(export, "onnxruntime")
    ours = predict_video(p, Preprocessor(p.manifest.input), videos[name], t, s)
    ref, ref_bp = torch_multiview(ckpt, videos[name], t, s)
    assert ours.views == t * s
    assert [b[0] for b in ours.bprime] == ref_bp
    np.testing.assert_allclose(ours.prob_sum, ref, rtol=0, atol=1e-4)
    assert ours.top(5) == [int(i) for i in np.argsort(-ref, kind="stable")]


def test_predict_cli_json_and_csv(model_files, videos, tmp_path, capsys):
    ckpt, export = model_files
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(export), str(videos["landscape"]), "--views", "2x3", "--json", "--csv", str(out),
               "--backend", "onnxruntime"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rec = json.loads(cap.out.strip().splitlines()[-1])
    ref, ref_bp = torch_multiview(ckpt, videos["landscape"], 2, 3)
    np.testing.assert_allclose(rec["prob_sum"], ref, atol=1e-4)
    assert rec["views"] == 6 and rec["bprime"] == [[b] for b in ref_bp]
    assert rec["top1"]["label"] == f"act{int(np.argmax(ref))}"
    assert rec["top1"]["score"] == pytest.approx(ref.max() / 6, abs=1e-5)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1
    assert rows[0]["top1_label"] == rec["top1"]["label"]
    assert len(rows[0]["top5"].split(";")) == 5
    assert float(rows[0]["mean_bprime_s2.ts_layer"]) == pytest.approx(np.mean(ref_bp), abs=1e-3)


def test_predict_folder_counts_failures(model_files, videos, tmp_path, capsys):
    _, export = model_files
    folder = tmp_path / "vids"
    (folder / "sub").mkdir(parents=True)
    write_video(folder / "a.avi", 20, (48, 64))
    write_video(folder / "sub" / "b.avi", 20, (48, 64), seed=5)
    (folder / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "all.csv"
    rc = main(["predict", str(export), str(folder), "--views", "1x1", "--csv", str(out)])
    cap = capsys.readouterr()
    # Any failed input fails the command (exit 5, a summary as the last line), after the others
    # were predicted and written: scripts notice, nothing is lost.
    assert rc == 5, cap.err
    assert re.search(r"skipped .*broken\.mp4: .*cannot (open|decode)", cap.err)
    last = cap.err.strip().splitlines()[-1]
    assert re.fullmatch(r"atfr predict: error: 1 of 3 video\(s\) failed \(first: .*broken\.mp4: cannot (open|decode)"
                        r".*\); the other 2 were predicted", last), last
    assert "2 video(s) predicted with 1x1 views, 1 failed" in cap.out
    assert [Path(r["video"]).name for r in csv.DictReader(out.open())] == ["a.avi", "b.avi"]
    # a list file, relative to its folder, with a comment and a missing entry
    lst = folder / "list.txt"
    lst.write_text("# videos\na.avi\nsub/b.avi,3\nmissing.avi\n")
    rc = main(["predict", str(export), str(lst), "--views", "1x1", "--json"])
    cap = capsys.readouterr()
    assert rc == 5, cap.err
    assert len(cap.out.strip().splitlines()) == 2 and "missing.avi: no such file" in cap.err
    assert cap.err.strip().splitlines()[-1].startswith("atfr predict: error: 1 of 3 video(s) failed")
    # all inputs fine: exit 0
    lst.write_text("a.avi\nsub/b.avi\n")
    rc = main(["predict", str(export), str(lst), "--views", "1x1", "--json"])
    cap = capsys.readouterr()
    assert rc == 0 and cap.err == "" and len(cap.out.strip().splitlines()) == 2


def _one_line(cap, rc, code, pattern):
    assert rc == code, cap.err
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), cap.err


def test_predict_errors(model_files, tmp_path, capsys):
    _, export = model_files
    rc = main(["predict", str(export), str(tmp_path / "none.mp4")])
    _one_line(capsys.readouterr(), rc, 5, r"^atfr predict: error: .*none\.mp4: no such file$")
    bad = tmp_path / "rand.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    rc = main(["predict", str(export), str(bad)])
    _one_line(capsys.readouterr(), rc, 5, r"rand\.mp4: cannot (open|decode)")
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["predict", str(export), str(empty)])
    _one_line(capsys.readouterr(), rc, 2, r"no videos in this folder")
    rc = main(["predict", str(export), str(bad), "--views", "10x2"])
    _one_line(capsys.readouterr(), rc, 2, r"spatial views must be 1")
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.mp4").write_bytes(b"nope")
    rc = main(["predict", str(export), str(only_bad)])
    cap = capsys.readouterr()
    assert rc == 5 and cap.err.strip().splitlines()[-1].startswith("atfr predict: error: all 1 video(s) failed")


def test_parse_views():
    assert parse_views("10x3") == (10, 3) and parse_views("1x1") == (1, 1) and parse_views("4 x 1") == (4, 1)
    for bad in ("10", "0x3", "3x2", "axb"):
        with pytest.raises(ATFRError):
            parse_views(bad)


@pytest.mark.parametrize("hint_delta", [0, -3, 4, None])
def test_read_selected_survives_wrong_frame_counts(videos, monkeypatch, hint_delta):
    """Containers often report a frame count that is a few frames off: the selection must be the
    one for the true count either way."""
    from atfr.runtime.video import sources as V
    from atfr.runtime.video.sampling import clip_indices
    from atfr.spec import InputSpec

    frames, fps = V.read_frames(videos["landscape"])
    real_init = V.CvReader.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.frame_count_hint = None if hint_delta is None else len(frames) + hint_delta

    monkeypatch.setattr(V.CvReader, "__init__", init)
    spec = InputSpec(num_frames=8, sampling_rate=2, crop_size=32, short_side=40)

    def wanted(n, f):
        return {int(i) for k in range(3) for i in clip_indices(n, spec, f, k, 3)}

    kept, n, f = V.read_selected(videos["landscape"], wanted)
    assert n == len(frames) and f == fps
    assert sorted(kept) == sorted(wanted(len(frames), fps))
    for i, img in kept.items():
        np.testing.assert_array_equal(img, frames[i])


def test_predict_warns_about_a_cut_file_as_run_does(model_files, tmp_path, capsys):
    """A file cut in half is predicted on the frames there are, with run's warning line (issue 22
    item 7; before: silently, exit 0, on half the frames)."""
    _, export = model_files
    full = write_video(tmp_path / "full.avi", 60, (48, 64))
    cut = tmp_path / "cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # independent count: what OpenCV decodes from the cut file vs what its header reports
    cap = cv2.VideoCapture(str(cut))
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert reported == 60 and 0 < decoded < 58
    rc = main(["predict", str(export), str(cut), "--views", "1x1", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.err.splitlines() == [f"atfr predict: warning: {cut}: decoding stopped after {decoded} of the "
                                    f"{reported} frames the container reports (file truncated or corrupt)"]
    assert json.loads(out.out)["frames"] == decoded
    rc = main(["predict", str(export), str(full), "--views", "1x1", "--json"])
    assert rc == 0 and capsys.readouterr().err == ""  # a whole file: no warning


def test_predict_folder_counts_every_skipped_entry(model_files, tmp_path, capsys, monkeypatch):
    """In a folder, every entry named like a video is predicted or reported with its reason and
    counted: a dangling link, a folder and a named pipe called *.mp4, an unreadable file
    ("permission denied", not "not a video"). Before: the first three silently ignored."""
    import os

    _, export = model_files
    folder = tmp_path / "vids"
    folder.mkdir()
    write_video(folder / "a.avi", 20, (48, 64))
    (folder / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (folder / "dir.mp4").mkdir()
    os.mkfifo(folder / "pipe.mp4")
    locked = write_video(folder / "locked.avi", 20, (48, 64))
    locked.chmod(0)
    real_access = os.access
    # root reads any file whatever its mode: deny it here as the kernel would deny another user
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == locked
                        else real_access(p, mode, *a, **k))
    rc = main(["predict", str(export), str(folder), "--views", "1x1"])
    cap = capsys.readouterr()
    assert rc == 5, cap.err
    skipped = sorted(ln for ln in cap.err.splitlines() if ln.startswith("atfr predict: skipped "))
    assert skipped == [
        f"atfr predict: skipped {folder}/dir.mp4: {folder}/dir.mp4: is a directory, not a video",
        f"atfr predict: skipped {folder}/gone.mp4: {folder}/gone.mp4: a dangling symbolic link (its target does not exist)",
        f"atfr predict: skipped {folder}/locked.avi: {folder}/locked.avi: permission denied",
        f"atfr predict: skipped {folder}/pipe.mp4: {folder}/pipe.mp4: a named pipe (FIFO), not a video file",
    ]
    assert "1 video(s) predicted with 1x1 views, 4 failed" in cap.out
    assert cap.err.strip().splitlines()[-1].startswith("atfr predict: error: 4 of 5 video(s) failed")
    # a single unreadable file is named as such too (before: "not a video, unsupported container, or corrupt")
    rc = main(["predict", str(export), str(locked)])
    _one_line(capsys.readouterr(), rc, 5, rf"^atfr predict: error: {re.escape(str(locked))}: permission denied$")
