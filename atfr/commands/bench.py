"""atfr bench OUTDIR: per-stage latency, latency vs B', ATFR vs static vs PyTorch side by side.

Writes report.json (schema-validated), report.md, latency_vs_bprime.png, bprime_hist.png and
stages.png into --out (default OUTDIR/bench). See atfr.bench.runner for what is measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atfr.runtime.ort_providers import add_providers_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="an export folder (atfr export)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "auto"])
    add_providers_argument(p)
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    p.add_argument("--iters", type=int, default=30, help="timed rounds (default 30)")
    p.add_argument("--batch", type=int, default=1, help="clips per call (default 1)")
    p.add_argument("--bprime", default="all", help="B' values for the back curve: 'all' (1..B) or a list '1,4,8'")
    p.add_argument("--videos", help="folder of videos: measure the B' distribution on them (OpenCV decode)")
    p.add_argument("--static", help="export folder of the static (no SGS) model, timed side by side")
    p.add_argument("--torch", help="checkpoint: also time PyTorch eager (best effort; needs torch)")
    p.add_argument("--threads", type=int,
                   help="intra-op threads of ONNX Runtime and torch (the lab setting); the defaults users run "
                        "are timed beside it. Default: ONNX Runtime's own (one per physical core)")
    p.add_argument("--out", help="report folder (default OUTDIR/bench)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from atfr.runtime.budget import add_bins_argument
    add_bins_argument(p)
    p.add_argument("--throughput", action="store_true", help="seed 003 protocol: max batch within a memory budget, "
                   "clips/s at it (OUTDIR and --static side by side; atfr.bench.throughput)")
    p.add_argument("--mem-budget", type=float, help="with --throughput: memory budget in GB (default: half the "
                   "available RAM; TensorRT: 90%% of free GPU memory)")


def _command_line(args: argparse.Namespace) -> list[str]:
    """The command as parsed (reproducible from the report), defaults left out."""
    out = ["atfr", "bench", str(args.outdir)]
    defaults = {"backend": "onnxruntime", "warmup": 5, "iters": 30, "batch": 1, "bprime": "all", "seed": 0}
    for k in ("backend", "providers", "warmup", "iters", "batch", "bprime", "videos", "static", "torch", "threads",
              "out", "seed"):
        v = getattr(args, k, None)
        if v is not None and defaults.get(k) != v:
            out += [f"--{k}", str(v)]
    if args.force:
        out.append("--force")
    return out


def run(args: argparse.Namespace) -> int:
    if args.throughput:
        from atfr.runtime.adafuse_clip import is_adafuse_export

        if is_adafuse_export(args.outdir):
            from atfr.errors import ATFRError
            raise ATFRError("--throughput (seed 003 protocol) applies to ATFR exports; this is an AdaFuse export")
        from atfr.bench.throughput import run_cli
        return run_cli(args)
    from atfr.bench.report import check_outputs, write_report
    from atfr.bench.runner import BenchOptions, run_benchmark
    from atfr.errors import ATFRError

    if args.out:
        out = Path(args.out)
    else:  # inside the export folder: never through a link planted there (runtime/export_paths.py)
        from atfr.runtime.export_paths import inside

        out = inside(args.outdir, "bench", "the default report folder")
    check_outputs(out, args.force)  # fail before minutes of timing, not after
    for flag in ("static", "videos"):
        v = getattr(args, flag)
        if v and not Path(v).exists():
            raise ATFRError(f"--{flag} {v} does not exist")
    if args.torch and not Path(args.torch).exists():
        raise ATFRError(f"--torch {args.torch} does not exist")
    opts = BenchOptions(export=args.outdir, backend=args.backend, warmup=args.warmup, iters=args.iters,
                        batch=args.batch, bprime=args.bprime, videos=args.videos, static=args.static,
                        torch_checkpoint=args.torch, threads=args.threads, seed=args.seed, providers=args.providers,
                        progress=False if args.no_progress else None, bins=args.bins,
                        argv=_command_line(args))
    report = run_benchmark(opts)
    files = write_report(report, out, force=args.force)
    if report.get("adafuse"):
        from atfr.bench.adafuse_report import summary_lines
        print("\n".join(summary_lines(report)))
        print(f"wrote {', '.join(str(p) for p in files.values())}")
        return 0
    e2e = report["stages"]["end_to_end"]
    print(f"{report['model']['name']} on {report['config']['backend']}: end-to-end median {e2e['median']:.3f} ms "
          f"(p99 {e2e['p99']:.3f}) at batch {report['config']['batch']}, B'={report['stages']['end_to_end_bprime']}")
    for k, v in report["ratios"].items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    ld = report.get("load") or {}
    print(f"  load average before {ld.get('before')}, after {ld.get('after')}"
          + (" (machine loaded)" if ld.get("loaded") else ""))
    for w in report["warnings"]:
        print(f"  warning: {w}")
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0
