#!/usr/bin/env python
"""Seed 003's Table 1 (FLOPs, maximum batch, clips/s at it) on this machine, ONNX Runtime CPU.

Chen et al. (seed 003, supplementary Table 1) measured TSN-ResNet50-tp, TAM-ResNet50,
I3D-ResNet50 and SlowFast-ResNet50-8x8 on a V100 32 GB (PyTorch 1.5): throughput at the largest
batch that fits. This script runs the same protocol (:mod:`atfr.bench.throughput`) on the four
zoo models, static and with SGS after res2 (ATFR; every model here has a res2 to place it at),
all in one run, and prints the table beside the seed's figures as ratios to I3D-R50.

Weights are random (``atfr init``, seed 0): time and memory do not depend on them; the ATFR rows'
B' comes from the export's B' statistics (structured synthetic clips through the untrained
model), so their cost is illustrative, not the paper's average.

GFLOPs are printed twice: at the table's setting (32 frames x 256^2, the counter, compare with the
seed) and at the benchmark's reduced input (default 8 frames x 112^2, SlowFast slow pathway
2 frames), which is what the clips/s are measured at: the full size takes minutes per batch on
a 2-core CPU. The point is the ratios to I3D-R50, not absolute speed.

    python benchmarks/throughput_seed003.py [--frames 8] [--size 112] [--mem-budget 1.5]
        [--max-batch 64] [--reps 3] [--work DIR] [--no-atfr]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

# name, compact config (without frames/size/stage), seed 003 Table 1: GFLOPs, clips/s, max batch
MODELS = [
    ("TSN-R50-tp", {"arch": "tsn", "depth": 50, "temporal_pool": True}, 73.9, 53.5, 40),
    ("TAM-R50", {"arch": "tam", "depth": 50}, 171.5, 14.2, 48),
    ("I3D-R50", {"arch": "i3d_3x3x3", "depth": 50}, 335.3, 16.1, 44),
    ("SlowFast-R50-8x8", {"arch": "slowfast", "depth": 50, "width_per_group": 64, "alpha": 4, "beta_inv": 8,
                          "fusion_kernel": 7}, 65.7, 48.9, 96),
]
REFERENCE = "I3D-R50"


def prepare(name: str, compact: dict, frames: int, size: int, stage: str, work: Path) -> Path:
    """atfr init + atfr export at the benchmark size (reused when already there)."""
    from atfr.commands.init import init_checkpoint
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint
    from atfr.models.config import from_compact

    tag = f"{name}-{'atfr' if stage != 'none' else 'static'}-{frames}x{size}"
    out = work / tag
    if (out / "atfr.json").exists():
        return out
    cfg = from_compact(dict(compact, num_frames=frames, crop_size=size, num_classes=400, sgs_stage=stage))
    ck = init_checkpoint(cfg, work / f"{tag}.pt", seed=0, force=True, source="benchmarks/throughput_seed003.py")
    export_model(load_checkpoint(ck), out, ExportOptions(force=True, name=tag))
    return out


def table_gflops(compact: dict) -> float:
    import torch

    from atfr.models.config import from_compact
    from atfr.models.flops import count_gflops
    from atfr.models.zoo import build_model

    with torch.device("meta"):
        m = build_model(from_compact(dict(compact, num_frames=32, crop_size=256, num_classes=400, sgs_stage="none")))
    return count_gflops(m)["static"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--mem-budget", type=float, default=1.5, help="GB per process (default 1.5)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default="/tmp/atfr-throughput-seed003")
    ap.add_argument("--no-atfr", action="store_true", help="static models only")
    a = ap.parse_args()
    print("$ python " + " ".join(shlex.quote(x) for x in sys.argv))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    from atfr.bench.throughput import ThroughputOptions, run_throughput

    t0 = time.perf_counter()
    exports, rows = [], []
    for name, compact, g_seed, tp_seed, mb_seed in MODELS:
        for stage in ["none"] + ([] if a.no_atfr else ["res2"]):
            exports.append(str(prepare(name, compact, a.frames, a.size, stage, work)))
            rows.append((name, stage, compact, g_seed, tp_seed, mb_seed))
    print(f"exports ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rep = run_throughput(ThroughputOptions(exports=exports, mem_budget_gb=a.mem_budget, max_batch=a.max_batch,
                                           warmup=1, reps=a.reps, threads=a.threads),
                         progress=lambda s: print(s, file=sys.stderr, flush=True))
    (work / "throughput_seed003.json").write_text(json.dumps(rep, indent=1))

    by = {(r[0], r[1]): c for r, c in zip(rows, rep["candidates"])}
    ref = by[(REFERENCE, "none")]
    seed_ref = next(m for m in MODELS if m[0] == REFERENCE)
    env = rep["environment"]
    cpu = env.get("cpu", {}) if isinstance(env.get("cpu"), dict) else {}
    print(f"\nONNX Runtime CPU ({cpu.get('model', '?')}, {cpu.get('logical_cores', cpu.get('count', '?'))} cores), "
          f"memory budget {rep['budget_bytes'] / 2**30:.2f} GB per process; input {a.frames} frames x {a.size}^2 "
          f"(SlowFast slow pathway {a.frames // 4}); clips/s = batch / median of {a.reps} runs at the max batch; "
          f"total {time.perf_counter() - t0:.0f} s\n")
    print("| model | GFLOPs 32x256^2 (seed) | GFLOPs here | max batch (seed V100) | clips/s | clips/s vs I3D | "
          "seed clips/s vs I3D | max batch vs I3D (seed) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, stage, compact, g_seed, tp_seed, mb_seed in rows:
        c = by[(name, stage)]
        label = name + ("+ATFR" if stage != "none" else "")
        g_full = f"{table_gflops(compact):.1f} ({g_seed})" if stage == "none" else "-"
        tp = c.get("throughput")
        vs = tp / ref["throughput"] if tp and ref.get("throughput") else None
        mb_vs = c["max_batch"] / ref["max_batch"] if ref["max_batch"] else None
        seed_cols = (f"{tp_seed / seed_ref[3]:.2f}", f"{mb_vs:.2f} ({mb_seed / seed_ref[4]:.2f})" if mb_vs else "-") \
            if stage == "none" else ("-", f"{mb_vs:.2f}" if mb_vs else "-")
        bp = f", B' {c['bprime_mean'][-1]:.1f}/{a.frames}" if c.get("bprime_mean") else ""
        print(f"| {label} | {g_full} | {c['gflops']:.2f}{bp} | {c['max_batch']}"
              f"{f' ({mb_seed})' if stage == 'none' else ''} | {tp:.2f} | {f'{vs:.2f}' if vs else '-'} | "
              f"{seed_cols[0]} | {seed_cols[1]} |" if tp else f"| {label} | {g_full} | - | {c['max_batch']} | "
              f"{c.get('status')} | - | - | - |")
    print(f"\nfull report: {work / 'throughput_seed003.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
