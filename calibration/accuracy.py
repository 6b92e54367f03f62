"""Accuracy of the fp16 / int8 graphs against fp32 (or PyTorch), through the real pipeline.

Every precision runs the same flow as deployment: its front graph on ONNX Runtime CPU ->
the runtime's numpy SGS step (always fp32, one clip at a time, so each clip has its own B')
-> its back graph. B' is compared exactly (a different B' changes every later temporal conv and
the pooling count), then the predictions.

``atfr verify --precision fp32,fp16,int8 --data ...`` calls :func:`compare_precisions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from atfr.errors import ATFRError
from atfr.progress import progress as progress_bar
from atfr.runtime.manifest import Manifest, int8_front_mode, load_manifest

PRECISION_GRAPHS: dict[str, tuple[str, str]] = {
    "fp32": ("front", "back"),
    "fp16": ("front_fp16", "back_fp16"),
    "int8": ("front_int8", "back_int8"),
}
HOW_TO_MAKE = {"fp16": "atfr.export.precision.write_fp16 (atfr export --fp16)", "int8": "atfr calibrate"}
# Minimums for *_agreement/top5_overlap, maximums for mean_kl/accuracy_drop (fractions, not %).
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"top1_agreement": 0.999, "bprime_agreement": 0.999},
    "fp16": {"top1_agreement": 0.99, "bprime_agreement": 0.99},
    "int8": {"top1_agreement": 0.97},
}
_MAX_METRICS = ("mean_kl", "accuracy_drop", "max_abs_prob_diff")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _as_clip(c: Any, m: Manifest) -> list[np.ndarray]:
    """One clip as per-pathway [1,3,T_p,S,S] float32 arrays."""
    if isinstance(c, np.ndarray):
        c = [c]
    if hasattr(c, "inputs"):  # calibration.data.CalibClip
        c = c.inputs
    out = []
    for x in c:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 4:
            x = x[None]
        if x.ndim != 5 or x.shape[0] != 1:
            raise ATFRError(f"compare_precisions: a clip must be [3,T,S,S] or [1,3,T,S,S] per pathway, got {list(x.shape)}")
        out.append(np.ascontiguousarray(x))
    if len(out) != m.num_pathways:
        raise ATFRError(f"compare_precisions: the model has {m.num_pathways} pathway(s), a clip has {len(out)}")
    return out


def precision_graphs(m: Manifest, precision: str) -> tuple[str, str]:
    """(front, back) graph keys that run ``precision`` on ONNX Runtime, as deployed: an INT8
    export calibrated with ``--front float`` pairs the fp16-policy front (front_fp16, or the fp32
    front when the export has no fp16 graphs) with back_int8."""
    if precision not in PRECISION_GRAPHS:
        raise ATFRError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISION_GRAPHS)}")
    fname, bname = PRECISION_GRAPHS[precision]
    if precision == "int8" and int8_front_mode(m.raw) == "float":
        fname = "front_fp16" if "front_fp16" in m.graphs else "front"
    missing = [g for g in (fname, bname) if g not in m.graphs]
    if missing:
        raise ATFRError(f"{m.root}: the export has no {missing[0]}.onnx; create it with {HOW_TO_MAKE.get(precision, 'atfr export')}")
    return fname, bname


def precision_pipeline(m: Manifest, precision: str, threads: int | None = None):
    """The runtime Pipeline of one precision's front/back graphs on ONNX Runtime CPU."""
    from atfr.runtime.backends import OrtRunner
    from atfr.runtime.pipeline import Pipeline, SGSStep

    fname, bname = precision_graphs(m, precision)
    return Pipeline(m, OrtRunner(m.path(fname), threads), OrtRunner(m.path(bname), threads),
                    SGSStep(m) if m.sgs else None)


def run_precision(m: Manifest, precision: str, clips: list[list[np.ndarray]], threads: int | None = None,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits [n,K], B' [n,L]) for one precision's front/back graphs on ONNX Runtime CPU."""
    pipe = precision_pipeline(m, precision, threads)
    logits, bps = [], []
    it = progress_bar(clips, precision, unit="clip", enabled=progress)
    for c in it:
        (r,) = pipe.infer(c)
        logits.append(r.logits)
        bps.append(r.bprime)
    return np.stack(logits, 0).astype(np.float32), np.asarray(bps, dtype=np.int64).reshape(len(clips), -1)


def torch_reference(checkpoint: str | Path) -> Callable[[list[np.ndarray]], tuple[np.ndarray, tuple[int, ...]]]:
    """The PyTorch reference as a per-clip function (batch-independent SGS): clip -> (logits, B')."""
    import torch

    from atfr.models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint).model.eval()
    model.batch_independent = True

    def infer(c: list[np.ndarray]) -> tuple[np.ndarray, tuple[int, ...]]:
        with torch.no_grad():
            lg, k = model.forward_with_bprime([torch.from_numpy(x) for x in c], guard=True)
        return lg[0].numpy(), tuple(int(v) for v in k[0])

    return infer


def run_torch(checkpoint: str | Path, clips: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch reference: per clip (batch-independent SGS), logits and B'."""
    infer = torch_reference(checkpoint)
    logits, bps = [], []
    for c in clips:
        lg, bp = infer(c)
        logits.append(lg)
        bps.append(bp)
    return np.stack(logits, 0).astype(np.float32), np.asarray(bps, dtype=np.int64).reshape(len(clips), -1)


def _metrics(ref_logits: np.ndarray, ref_bp: np.ndarray, logits: np.ndarray, bp: np.ndarray,
             labels: np.ndarray | None) -> dict[str, Any]:
    pr, pq = _softmax(ref_logits.astype(np.float64)), _softmax(logits.astype(np.float64))
    k = min(5, pr.shape[1])
    top_r, top_q = np.argsort(-pr, 1, kind="stable")[:, :k], np.argsort(-pq, 1, kind="stable")[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_r, top_q)])
    eps = 1e-12
    kl = np.sum(pr * (np.log(pr + eps) - np.log(pq + eps)), axis=1)
    bp_same = np.all(bp == ref_bp, axis=1)
    out: dict[str, Any] = {
        "top1_agreement": float(np.mean(top_r[:, 0] == top_q[:, 0])),
        "top5_overlap": float(overlap),
        "mean_kl": float(np.mean(kl)),
        "max_abs_prob_diff": float(np.max(np.abs(pr - pq))),
        "bprime_agreement": float(np.mean(bp_same)),
        "bprime_mismatches": int(np.sum(~bp_same)),
        "bprime_mean": float(bp.mean()) if bp.size else 0.0,
    }
    if labels is not None:
        acc, acc_ref = float(np.mean(top_q[:, 0] == labels)), float(np.mean(top_r[:, 0] == labels))
        out.update({"accuracy": acc, "reference_accuracy": acc_ref, "accuracy_drop": acc_ref - acc})
    return out


def check_thresholds(metrics: dict[str, Any], thresholds: dict[str, float]) -> list[str]:
    """Failures as one-line strings: minimums for agreements/overlap/accuracy, maximums for
    mean_kl, accuracy_drop and max_abs_prob_diff."""
    fails = []
    for name, t in thresholds.items():
        if name not in metrics:
            continue
        v = metrics[name]
        if name in _MAX_METRICS:
            if not v <= t:
                fails.append(f"{name} {v:.4g} > {t:.4g}")
        elif not v >= t:
            fails.append(f"{name} {v:.4g} < {t:.4g}")
    return fails


def compare_precisions(
    outdir: str | Path,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    clips: Any = None,
    reference: str = "fp32",
    labels: Sequence[int] | None = None,
    thresholds: dict[str, dict[str, float]] | None = None,
    *,
    checkpoint: str | Path | None = None,
    num_clips: int = 64,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare precisions of an export through front -> SGS (numpy, fp32) -> back on ORT CPU.

    ``clips``: a list of clips (each a list of per-pathway arrays [1,3,T_p,S,S] or [3,T,S,S], or
    one array for single-pathway models), or a video folder / .txt list (``num_clips`` clips
    sampled with ``seed`` exactly as ``atfr calibrate`` does). ``reference``: "fp32" (the fp32
    ONNX graphs) or "torch" (``checkpoint`` required). ``labels``: class index per clip.
    ``thresholds``: per precision, metric -> bound (defaults: :data:`DEFAULT_THRESHOLDS`).

    Returns ``{"reference", "clips", "reference_bprime_hist", "precisions": {p: metrics + "passed",
    "failures"}, "passed"}``.
    """
    m = load_manifest(outdir, check=True)
    if clips is None:
        raise ATFRError("compare_precisions: no clips (pass clip arrays or a video folder / list)")
    precisions = list(precisions)
    for p in precisions:
        if p not in PRECISION_GRAPHS:
            raise ATFRError(f"unknown precision {p!r}; choose from: {', '.join(PRECISION_GRAPHS)}")
    if reference == "torch":
        if checkpoint is None:
            raise ATFRError("compare_precisions: reference='torch' needs the checkpoint")
    elif reference != "fp32":
        raise ATFRError(f"unknown reference {reference!r} (fp32, torch)")
    # Every precision's pipeline is loaded first and each clip runs through all of them as soon
    # as it is read: only logits and B' are kept, never the clips (one R3D-18 clip at 256 px is
    # 25 MB). Per-clip inference does not depend on what ran before, so the numbers are those of
    # running each precision over the whole set in turn.
    names = (["fp32"] if reference == "fp32" else []) + [p for p in precisions if p != "fp32" or reference != "fp32"]
    pipes = {p: precision_pipeline(m, p, threads) for p in dict.fromkeys(names)}
    torch_infer = torch_reference(checkpoint) if reference == "torch" else None

    def infer_all(c: Any) -> dict[str, tuple[np.ndarray, tuple[int, ...]]]:
        x = _as_clip(c, m)
        out = {}
        if torch_infer is not None:
            out["torch"] = torch_infer(x)
        for p, pipe in pipes.items():
            (r,) = pipe.infer(x)
            out[p] = (r.logits, r.bprime)
        return out

    if isinstance(clips, (str, Path)):
        from .data import map_clips
        per_clip = map_clips(clips, m.input, num_clips, lambda c: infer_all(c.inputs), seed, progress=progress)
    else:
        it = progress_bar(clips, "+".join(pipes), unit="clip", enabled=progress)
        per_clip = [infer_all(c) for c in it]
    if not per_clip:
        raise ATFRError("compare_precisions: the clip set is empty")
    n = len(per_clip)

    def stacked(p: str) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([r[p][0] for r in per_clip], 0).astype(np.float32),
                np.asarray([r[p][1] for r in per_clip], dtype=np.int64).reshape(n, -1))

    lab = None
    if labels is not None:
        lab = np.asarray(list(labels), dtype=np.int64)
        if lab.shape != (n,):
            raise ATFRError(f"compare_precisions: {len(lab)} labels for {n} clips")
    ref = stacked("torch" if reference == "torch" else "fp32")
    th = {k: dict(v) for k, v in DEFAULT_THRESHOLDS.items()}
    for k, v in (thresholds or {}).items():
        th.setdefault(k, {}).update(v)
    res: dict[str, Any] = {"reference": reference, "clips": n, "precisions": {}}
    hist: dict[str, int] = {}
    for row in ref[1]:
        key = ",".join(map(str, row))
        hist[key] = hist.get(key, 0) + 1
    res["reference_bprime_hist"] = dict(sorted(hist.items()))
    for p in precisions:
        out = stacked(p)
        met = _metrics(ref[0], ref[1], out[0], out[1], lab)
        met["graphs"] = list(precision_graphs(m, p))
        fails = check_thresholds(met, th.get(p, {}))
        met["thresholds"] = th.get(p, {})
        met["failures"] = fails
        met["passed"] = not fails
        res["precisions"][p] = met
    res["passed"] = all(v["passed"] for v in res["precisions"].values())
    return res


def format_report(res: dict[str, Any]) -> str:
    """A small text table of :func:`compare_precisions`' result."""
    lines = [f"reference {res['reference']}, {res['clips']} clips, B' histogram {res['reference_bprime_hist']}",
             f"{'precision':<10}{'B agree':>9}{'top1':>8}{'top5 ov':>9}{'mean KL':>11}{'acc':>8}{'drop':>8}  result"]
    for p, v in res["precisions"].items():
        acc = f"{v['accuracy']:.3f}" if "accuracy" in v else "-"
        drop = f"{v['accuracy_drop']:+.3f}" if "accuracy_drop" in v else "-"
        lines.append(f"{p:<10}{v['bprime_agreement']:>9.3f}{v['top1_agreement']:>8.3f}{v['top5_overlap']:>9.3f}"
                     f"{v['mean_kl']:>11.2e}{acc:>8}{drop:>8}  {'ok' if v['passed'] else 'FAIL: ' + '; '.join(v['failures'])}"
                     + (f"  ({' + '.join(v['graphs'])})" if v.get("graphs") else ""))
    return "\n".join(lines)
