"""atfr predict OUTDIR VIDEO|FOLDER|LIST.txt: offline multi-view prediction (the official test protocol).

Per video: ``--views TxS`` = T temporal views (start = max(n - clip, 0) * k / T) times S spatial
crops (S = 1: centre; S = 3: left/centre/right or top/centre/bottom), each through the official
transform; the softmax probabilities of the T*S views are SUMMED (PySlowFast TestMeter) and
ranked. Reported scores are that sum divided by the number of views (a mean probability, same
ranking). Videos shorter than a clip are padded by repeating their last frame (official clamp).

A single video that cannot be read is an error; in a folder or list each failure is reported
(one line each), skipped, and the others are predicted (stdout, --csv); the command then ends with
a summary line ("2 of 7 video(s) failed ...") and exit code 5, so scripts notice. Exit 0 means
every input was predicted. In a folder, every entry named like a video counts: a dangling link, a
folder or a named pipe called ``x.mp4`` is a failure with its reason, as is a file that cannot be
read ("permission denied"). A file that ends before the frame count its container reports (cut or
corrupt) is predicted on the frames there are, with a ``warning:`` line, as ``atfr run`` does.
An AdaFuse export runs through its clip graph (runtime/adafuse_clip.py), the same way, and each
video also gets the skip/reuse/keep fractions and GFLOPs of its views (``atfr infer --json``'s keys).
Torch-free.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.runtime.ort_providers import add_providers_argument



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="export folder (atfr export)")
    p.add_argument("input", help="a video, a folder of videos (searched recursively), or a .txt list "
                                 "(one path per line, relative to the list's folder; '#' comments)")
    p.add_argument("--views", default="10x3", help="temporal x spatial views: 10x3 (official), 1x1, NxM with M in {1,3}")
    p.add_argument("--json", action="store_true", help="print one JSON object per video (JSON lines)")
    p.add_argument("--csv", help="write a CSV summary here (atomic)")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime"])
    add_providers_argument(p)
    p.add_argument("--force", action="store_true", help="overwrite --csv")
    from atfr.runtime.budget import add_bins_argument
    add_bins_argument(p)


def parse_views(s: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", s or "")
    if not m:
        raise ATFRError(f"--views {s!r}: expected TEMPORALxSPATIAL, e.g. 10x3 or 1x1")
    t, sp = int(m.group(1)), int(m.group(2))
    if t < 1:
        raise ATFRError(f"--views {s!r}: need at least one temporal view")
    if sp not in (1, 3):
        raise ATFRError(f"--views {s!r}: spatial views must be 1 (centre) or 3 (the official uniform crops)")
    return t, sp


def spatial_indices(n: int) -> tuple[int, ...]:
    return (1,) if n == 1 else (0, 1, 2)


def collect_videos(arg: str) -> tuple[list[Path], bool]:
    """(videos, is_batch). A missing single path is a SourceError; an empty folder/list an ATFRError."""
    from atfr.runtime.video.sources import VIDEO_EXTS, video_entries, videos_in_list

    p = Path(arg)
    if p.is_dir():
        vids = video_entries(p)  # not only regular files: the others are reported, not lost
        if not vids:
            raise ATFRError(f"{p}: no videos in this folder ({', '.join(VIDEO_EXTS[:4])}, ...)")
        return vids, True
    if p.suffix.lower() == ".txt":
        if not p.exists():
            raise ATFRError(f"{p}: no such list file")
        vids = videos_in_list(p)
        if not vids:
            raise ATFRError(f"{p}: the list names no videos")
        return vids, True
    if not p.exists():
        raise SourceError(f"{p}: no such file")
    return [p], False


@dataclass
class VideoPrediction:
    video: str
    frames: int
    fps: float
    views: int
    prob_sum: np.ndarray  # [K] sum of the views' softmax probabilities
    bprime: list[tuple[int, ...]] = field(default_factory=list)  # per view, per SGS layer
    reported_frames: int | None = None  # the container's frame count, when decoding fell short of it
    adafuse: list[dict[str, Any]] = field(default_factory=list)  # AdaFuse: per view, policy_fractions + gflops

    @property
    def scores(self) -> np.ndarray:
        return self.prob_sum / self.views

    def top(self, k: int = 5) -> list[int]:
        return [int(i) for i in np.argsort(-self.prob_sum, kind="stable")[:k]]

    @property
    def mean_bprime(self) -> list[float]:
        return [float(v) for v in np.mean(np.asarray(self.bprime, np.float64), 0)] if self.bprime and self.bprime[0] else []

    @property
    def policy_fractions(self) -> dict[str, float]:
        """AdaFuse: skip/reuse/keep fractions over every view's policy entries (views are equal-sized)."""
        return {a: float(np.mean([v["policy_fractions"][a] for v in self.adafuse]))
                for a in ("skip", "reuse", "keep")}

    @property
    def gflops(self) -> dict[str, float]:
        """AdaFuse: GFLOPs per clip (one view), the mean over the views, keys as ``atfr infer --json``."""
        return {k: float(np.mean([v["gflops"][k] for v in self.adafuse])) for k in self.adafuse[0]["gflops"]}

    def to_json(self, labels: Any) -> dict[str, Any]:
        top = self.top(5)
        sc = self.scores
        out = {"video": self.video, "frames": self.frames, "fps": self.fps, "views": self.views,
               "top1": {"index": top[0], "label": labels(top[0]), "score": float(sc[top[0]])},
               "top5": [{"index": i, "label": labels(i), "score": float(sc[i])} for i in top],
               "mean_bprime": self.mean_bprime, "bprime": [list(b) for b in self.bprime],
               "prob_sum": [float(v) for v in self.prob_sum]}
        if self.adafuse:
            out.update(policy_fractions=self.policy_fractions, gflops=self.gflops,
                       view_policy_fractions=[v["policy_fractions"] for v in self.adafuse],
                       view_gflops=[v["gflops"] for v in self.adafuse])
        return out


def _infer_views(runner: Any, inputs: list[np.ndarray]) -> list[tuple[Any, dict[str, Any] | None]]:
    """One temporal view's spatial views -> (result, AdaFuse fields or None) per view."""
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner

    if isinstance(runner, AdaFuseClipRunner):  # the clip graph: logits + policy per view
        return [(r, {"policy_fractions": r.report["policy_fractions"], "gflops": r.report["gflops"]})
                for r in runner.infer_batch(inputs[0])]
    return [(r, None) for r in runner.infer(inputs)]


def predict_video(pipeline: Any, pre: Any, path: str | Path, temporal: int, spatial: int) -> VideoPrediction:
    """The official multi-view protocol on one video: decoded once, each temporal view inferred as
    soon as its frames are in (``runtime.video.sources.decode_clips``), so only the full-resolution
    frames of the views around the decode position are held, never the whole video. ``pipeline``:
    an ATFR Pipeline or an AdaFuse AdaFuseClipRunner (its clip graph)."""
    from atfr.runtime.video.sampling import clip_indices
    from atfr.runtime.video.sources import check_video_file, decode_clips

    check_video_file(path)  # a folder, pipe or dangling link named *.mp4, or no permission: one line
    spec = pipeline.manifest.input
    short: list[int] = []
    sp = spatial_indices(spatial)

    def plan(n: int, fps: float) -> list[np.ndarray]:
        return [clip_indices(n, spec, fps, k, temporal) for k in range(temporal)]

    def infer(k: int, frames: list[np.ndarray]) -> list[tuple[np.ndarray, tuple[int, ...], Any]]:
        return [(r.probs, tuple(int(b) for b in r.bprime), ada)
                for r, ada in _infer_views(pipeline, pre.inputs(frames, sp))]

    views, n, fps = decode_clips(path, plan, infer, fallback_fps=spec.target_fps,
                                 on_truncated=lambda _n, reported: short.append(reported))
    prob_sum = np.zeros(pipeline.manifest.num_classes, np.float64)
    bps: list[tuple[int, ...]] = []
    ada: list[dict[str, Any]] = []
    for view in views:
        for probs, bp, extra in view:
            prob_sum += probs
            bps.append(bp)
            if extra is not None:
                ada.append(extra)
    return VideoPrediction(str(path), n, float(fps), temporal * len(sp), prob_sum, bps,
                           reported_frames=short[0] if short else None, adafuse=ada)


ADAFUSE_CSV = ["skip", "reuse", "keep", "gflops_eq5", "gflops_official"]  # means over the views


def _csv_text(rows: list[VideoPrediction], labels: Any, layer_names: list[str], adafuse: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["video", "top1_label", "top1_score", "top5"] + [f"mean_bprime_{n}" for n in layer_names]
               + (ADAFUSE_CSV if adafuse else []))
    for r in rows:
        top = r.top(5)
        sc = r.scores
        mb = r.mean_bprime
        ada = []
        if adafuse:
            f, g = r.policy_fractions, r.gflops
            ada = [f"{f['skip']:.6f}", f"{f['reuse']:.6f}", f"{f['keep']:.6f}", f"{g['eq5']:.6f}",
                   f"{g['official']:.6f}"]
        w.writerow([r.video, labels(top[0]), f"{sc[top[0]]:.6f}",
                    ";".join(f"{labels(i)}:{sc[i]:.6f}" for i in top)]
                   + [f"{mb[i]:.3f}" if i < len(mb) else "" for i in range(len(layer_names))] + ada)
    return buf.getvalue()


def _load(args: argparse.Namespace) -> Any:
    """The export's runner: ATFR's Pipeline, or an AdaFuse export's clip graph."""
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, is_adafuse_export
    from atfr.runtime.pipeline import Pipeline

    if is_adafuse_export(args.outdir):
        if args.bins is not None:
            raise ATFRError("--bins applies to ATFR exports (SGS); this is an AdaFuse export")
        return AdaFuseClipRunner.load(args.outdir, args.backend, args.providers)
    return Pipeline.load(args.outdir, args.backend, providers=args.providers, bins=args.bins)


def _text_line(v: Any, r: VideoPrediction, label: Any) -> str:
    from atfr.display import format_prob

    top = r.top(5)
    line = f"{v}: {label(top[0])} ({format_prob(r.scores[top[0]])})"
    if r.adafuse:  # as atfr infer prints it, means over the views (GFLOPs to 3 digits: the demo counts 0.0764)
        f, g = r.policy_fractions, r.gflops
        return (line + f"  policy skip {f['skip']:.1%} reuse {f['reuse']:.1%} keep {f['keep']:.1%}, "
                f"GFLOPs/clip {g['eq5']:.3g} (Eq. 5; official {g['official']:.3g})")
    bp = " ".join(f"{b:.1f}" for b in r.mean_bprime)
    return line + (f"  mean B' {bp}" if bp else "")


def run(args: argparse.Namespace) -> int:
    from atfr.fileio import check_writable, write_text_atomic
    from atfr.progress import progress
    from atfr.runtime.video.capture import truncation_detail
    from atfr.runtime.video.preprocess import Preprocessor

    temporal, spatial = parse_views(args.views)
    if args.csv:
        check_writable(args.csv, args.force)  # before any work: exists without --force, unwritable folder
    videos, batch = collect_videos(args.input)
    pipeline = _load(args)
    m = pipeline.manifest
    pre = Preprocessor(m.input)
    results: list[VideoPrediction] = []
    failures: list[tuple[str, str]] = []
    with progress(videos, "predict", unit="video", enabled=batch) as bar:
        for v in bar:
            try:
                r = predict_video(pipeline, pre, v, temporal, spatial)
            except ATFRError as e:
                if not batch:
                    raise
                failures.append((str(v), str(e)))
                bar.write(f"atfr predict: skipped {v}: {e}", file=sys.stderr)
                continue
            results.append(r)
            if r.reported_frames is not None:
                bar.write(f"atfr predict: warning: {v}: {truncation_detail(r.frames, r.reported_frames)}",
                          file=sys.stderr)
            if args.json:
                bar.write(json.dumps(r.to_json(m.label)), file=sys.stdout)
            else:
                bar.write(_text_line(v, r, m.label), file=sys.stdout)
    if args.csv and results:
        write_text_atomic(args.csv, _csv_text(results, m.label, [f"{s.spec.name}" for s in m.sgs],
                                              adafuse=bool(results[0].adafuse)))
    if not args.json and batch and results:
        print(f"{len(results)} video(s) predicted with {temporal}x{spatial} views"
              + (f", {len(failures)} failed" if failures else "")
              + (f"; CSV: {args.csv}" if args.csv else ""))
    if failures:
        v0, e0 = failures[0]
        first = f"first: {e0}" if v0 in e0 else f"first: {v0}: {e0}"  # errors usually name the file
        if not results:
            raise SourceError(f"all {len(videos)} video(s) failed ({first})")
        raise SourceError(f"{len(failures)} of {len(videos)} video(s) failed ({first}); "
                          f"the other {len(results)} were predicted")
    return 0
