"""atfr calibrate OUTDIR --data VIDEOS_DIR|LIST.txt: INT8 Q/DQ graphs (front_int8/back_int8).

Two stages: the front graph on the clips, then the back graph on the SGS outputs of the same
clips (fp32 front + the runtime's numpy SGS step), so the dynamic-T back sees the real B'
distribution. The Q/DQ graphs are symmetric int8 (zero-point 0) for TensorRT's explicit
quantization; the SGS embedding net and distance stay unquantized. See
atfr/calibration/int8.py for the tool choice (ONNX Runtime quantize_static, not ModelOpt).
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="export folder (from 'atfr export')")
    p.add_argument("--data", help="calibration videos: a folder or a .txt list (one path a line)")
    p.add_argument("--clips", type=int, default=256, help="calibration clips (default 256; 100+ recommended)")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default=None,
                   help="range calibration (default minmax; a reused cache keeps its own)")
    p.add_argument("--cache", help="calibration cache JSON: reused when it exists (no data needed), else written "
                                   "(default OUTDIR/int8_calibration.json, always rewritten)")
    p.add_argument("--seed", type=int, default=0, help="clip sampling seed (default 0)")
    p.add_argument("--keep-feat-fp32", action="store_true",
                   help="also leave the node producing feat{p} unquantized")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="overwrite existing front_int8/back_int8 graphs")


def run(args: argparse.Namespace) -> int:
    from atfr.calibration.int8 import calibrate

    t0 = time.perf_counter()
    res = calibrate(args.outdir, args.data, args.clips, args.method, args.cache, args.seed, args.force,
                    progress=not args.no_progress and sys.stderr.isatty(),
                    warn=lambda s: print(f"atfr calibrate: warning: {s}", file=sys.stderr),
                    keep_feat_fp=args.keep_feat_fp32)
    src = f"cache {res.cache}" if res.from_cache else f"{res.clips} clip(s), ranges saved to {res.cache}"
    print(f"calibrated ({res.method}, {src}) in {time.perf_counter() - t0:.1f} s")
    for name, path in res.graphs.items():
        print(f"  {path}")
    for layer, hist in res.bprime_hist.items():
        print(f"  back calibration B' ({layer}): " + ", ".join(f"{b}:{n}" for b, n in sorted(hist.items())))
    return 0
