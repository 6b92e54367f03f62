"""atfr bench OUTDIR: per-stage latency, latency vs B', ATFR vs static vs PyTorch side by side.

Writes report.json (schema-validated), report.md, latency_vs_bprime.png, bprime_hist.png and
stages.png into --out (default OUTDIR/bench). See atfr.bench.runner for what is measured.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="an export folder (atfr export)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "auto"])
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    p.add_argument("--iters", type=int, default=30, help="timed rounds (default 30)")
    p.add_argument("--batch", type=int, default=1, help="clips per call (default 1)")
    p.add_argument("--bprime", default="all", help="B' values for the back curve: 'all' (1..B) or a list '1,4,8'")
    p.add_argument("--videos", help="folder of videos: measure the B' distribution on them (OpenCV decode)")
    p.add_argument("--static", help="export folder of the static (no SGS) model, timed side by side")
    p.add_argument("--torch", help="checkpoint: also time PyTorch eager (best effort; needs torch)")
    p.add_argument("--threads", type=int, help="intra-op threads (ONNX Runtime, torch, numpy BLAS of the SGS step)")
    p.add_argument("--out", help="report folder (default OUTDIR/bench)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--throughput", action="store_true", help="seed 003 protocol: max batch within a memory budget, "
                   "clips/s at it (OUTDIR and --static side by side; atfr.bench.throughput)")
    p.add_argument("--mem-budget", type=float, help="with --throughput: memory budget in GB (default: half the "
                   "available RAM; TensorRT: 90%% of free GPU memory)")


def _command_line(args: argparse.Namespace) -> list[str]:
    """The command as parsed (reproducible from the report), defaults left out."""
    out = ["atfr", "bench", str(args.outdir)]
    defaults = {"backend": "onnxruntime", "warmup": 5, "iters": 30, "batch": 1, "bprime": "all", "seed": 0}
    for k in ("backend", "warmup", "iters", "batch", "bprime", "videos", "static", "torch", "threads", "out", "seed"):
        v = getattr(args, k, None)
        if v is not None and defaults.get(k) != v:
            out += [f"--{k}", str(v)]
    if args.force:
        out.append("--force")
    return out


def limit_blas_threads(threads: int | None) -> None:
    """--threads also caps numpy's BLAS (the SGS step's matmul): OpenBLAS/MKL read these variables
    when numpy is first imported, so this works only before that (the CLI imports numpy lazily).
    An explicit OPENBLAS_NUM_THREADS / MKL_NUM_THREADS in the environment wins."""
    if threads and "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(int(threads)))


def run(args: argparse.Namespace) -> int:
    limit_blas_threads(args.threads)
    if args.throughput:
        from atfr.bench.throughput import run_cli
        return run_cli(args)
    from atfr.bench.report import check_outputs, write_report
    from atfr.bench.runner import BenchOptions, run_benchmark
    from atfr.errors import ATFRError

    out = Path(args.out) if args.out else Path(args.outdir) / "bench"
    check_outputs(out, args.force)  # fail before minutes of timing, not after
    for flag in ("static", "videos"):
        v = getattr(args, flag)
        if v and not Path(v).exists():
            raise ATFRError(f"--{flag} {v} does not exist")
    if args.torch and not Path(args.torch).exists():
        raise ATFRError(f"--torch {args.torch} does not exist")
    opts = BenchOptions(export=args.outdir, backend=args.backend, warmup=args.warmup, iters=args.iters,
                        batch=args.batch, bprime=args.bprime, videos=args.videos, static=args.static,
                        torch_checkpoint=args.torch, threads=args.threads, seed=args.seed,
                        progress=False if args.no_progress else None,
                        argv=_command_line(args))
    report = run_benchmark(opts)
    files = write_report(report, out, force=args.force)
    e2e = report["stages"]["end_to_end"]
    print(f"{report['model']['name']} on {report['config']['backend']}: end-to-end median {e2e['median']:.3f} ms "
          f"(p99 {e2e['p99']:.3f}) at batch {report['config']['batch']}, B'={report['stages']['end_to_end_bprime']}")
    for k, v in report["ratios"].items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    for w in report["warnings"]:
        print(f"  warning: {w}")
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0
