"""The paper's Table A.4 on the demo model: fewer bins at inference only, no retraining.

For B_run from the trained B down to 1, runs the exported demo model (ONNX Runtime, numpy SGS with
B_run bins, i.e. ``atfr predict/run --bins B_run``) on the held-out split (split 1 of the synthetic
demo data, never used for training) and reports top-1, mean B', mean GFLOPs (the manifest's
GFLOPs-per-B' table, per clip) and the agreement of top-1 with the trained-B run.

    python benchmarks/bins_table.py [--workdir /tmp/bins-table] [--per-class 40] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def gflops_by_bprime(manifest) -> dict[tuple[int, ...], float]:
    rows = manifest.gflops.get("vs_bprime") or []
    return {tuple(int(b) for b in r["bprime"]): float(r["total"]) for r in rows}


def bins_rows(pipeline, clips: list[list[np.ndarray]], labels: np.ndarray, runs: list[int],
              batch: int = 32) -> list[dict]:
    """One row per B_run: top-1, mean B', mean GFLOPs, top-1 agreement with the first run."""
    m = pipeline.manifest
    table = gflops_by_bprime(m)
    static = float(m.gflops.get("static", 0.0))
    rows, first = [], None
    for b_run in runs:
        pipeline.set_bins(b_run)
        preds, bps = [], []
        for i in range(0, len(clips), batch):
            chunk = clips[i:i + batch]
            batched = [np.concatenate([c[p] for c in chunk], 0) for p in range(len(chunk[0]))]
            for r in pipeline.infer(batched):
                preds.append(int(np.argmax(r.logits)))
                bps.append(r.bprime)
        preds_a = np.asarray(preds)
        first = preds_a if first is None else first
        g = [table.get(tuple(bp), float("nan")) for bp in bps]
        rows.append({"bins": b_run, "top1": float((preds_a == labels).mean()),
                     "mean_bprime": float(np.mean([bp[0] for bp in bps])),
                     "gflops": float(np.mean(g)), "static_gflops": static,
                     "pct_of_static": 100 * float(np.mean(g)) / static if static else float("nan"),
                     "agree_with_trained": float((preds_a == first).mean())})
    pipeline.set_bins(None)
    return rows


def format_table(rows: list[dict], trained: int) -> str:
    out = ["| B_run | top-1 (%) | mean B' | GFLOPs | % of static | top-1 = trained-B run (%) |",
           "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tag = f"{r['bins']} (trained)" if r["bins"] == trained else str(r["bins"])
        out.append(f"| {tag} | {100 * r['top1']:.1f} | {r['mean_bprime']:.2f} | {r['gflops']:.4f} | "
                   f"{r['pct_of_static']:.1f} | {100 * r['agree_with_trained']:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/bins-table")
    ap.add_argument("--checkpoint", help="default: the built-in demo model")
    ap.add_argument("--per-class", type=int, default=40,
                    help="held-out clips per class (default 40: the whole held-out split)")
    args = ap.parse_args(argv)

    from atfr.commands.demo import builtin_checkpoint
    from atfr.demo.synth import CLASSES, make_dataset
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint
    from atfr.runtime.video.clips import normalize, pack_pathways
    from atfr.runtime.pipeline import Pipeline

    t0 = time.perf_counter()
    work = Path(args.workdir)
    ckpt = Path(args.checkpoint) if args.checkpoint else builtin_checkpoint()
    out = work / "export"
    if not (out / "atfr.json").exists():
        lm = load_checkpoint(ckpt)
        export_model(lm, out, ExportOptions(name="demo_atfr"))
    pl = Pipeline.load(out, "onnxruntime")
    spec = pl.manifest.input
    frames, labels = make_dataset(args.per_class, seed=0, num_frames=spec.num_frames, size=spec.crop_size, split=1)
    clips = [pack_pathways(normalize(f, spec), spec) for f in frames]
    b = pl.trained_bins
    rows = bins_rows(pl, clips, labels, list(range(b, 0, -1)))
    print(f"command: python {' '.join(sys.argv)}")
    print(f"model: {ckpt.name} (trained B = {b}); held-out clips: {len(clips)} ({args.per_class} per class x "
          f"{len(CLASSES)} classes, split 1); ONNX Runtime CPU, numpy SGS with B_run bins")
    print(format_table(rows, b))
    (work / "bins_table.json").write_text(json.dumps(rows, indent=2))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
