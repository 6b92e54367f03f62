"""atfr calibrate OUTDIR --data VIDEOS_DIR|LIST.txt: INT8 Q/DQ graphs (back_int8, front_int8 with --front int8).

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
                   help="range calibration (default percentile, the best measured on the demo model; "
                        "a reused cache keeps its own)")
    p.add_argument("--cache", help="calibration cache JSON: reused when it exists (no data needed), else written "
                                   "(default OUTDIR/int8_calibration.json, always rewritten)")
    p.add_argument("--seed", type=int, default=0, help="clip sampling seed (default 0)")
    p.add_argument("--front", choices=("float", "int8"), default="float",
                   help="float (default): quantize only the back graph; the front runs with the fp16 policy "
                        "(its features set B'). int8: quantize the front too (B' may change)")
    p.add_argument("--float-stages", type=int, default=1, metavar="N",
                   help="stages after SGS whose convs stay float (default 1: the stage reading the SGS "
                        "output, whose range depends on bin occupancy); 0 quantizes every back conv")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="overwrite existing int8 graphs (and remove a front_int8 when --front float)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atfr.calibration.int8 import calibrate
    from atfr.errors import check_range
    from atfr.fileio import check_output_dir
    from atfr.log import quiet_stdout
    from atfr.output_claim import output_lock
    from atfr.runtime.manifest import load_manifest

    check_range("--clips", args.clips, 1, None, "clips")
    check_range("--float-stages", args.float_stages, 0, None)
    load_manifest(args.outdir)  # a missing or edited export is reported before anything else
    check_output_dir(args.outdir)  # the int8 graphs go there; find out before minutes of calibration
    if args.cache and not Path(args.cache).exists():
        check_output_dir(Path(args.cache).parent)
    t0 = time.perf_counter()
    # ONNX Runtime's quantizer prints "Collecting tensor data and making histogram ..." per call
    # on stdout: to the log (-v) instead.
    with output_lock(args.outdir), quiet_stdout("onnxruntime.quantization"):  # one writer of the export at a time
        res = calibrate(args.outdir, args.data, args.clips, args.method, args.cache, args.seed, args.force,
                        progress=not args.no_progress,
                        warn=lambda s: print(f"atfr calibrate: warning: {s}", file=sys.stderr),
                        front=args.front, float_stages=args.float_stages)
    src = f"cache {res.cache}" if res.from_cache else f"{res.clips} clip(s), ranges saved to {res.cache}"
    print(f"calibrated ({res.method}, {src}) in {time.perf_counter() - t0:.1f} s; "
          f"front: {'int8' if res.front == 'int8' else 'float (fp16 policy)'}, back: int8")
    for name, path in res.graphs.items():
        print(f"  {path}")
    for layer, hist in res.bprime_hist.items():
        print(f"  back calibration B' ({layer}): " + ", ".join(f"{b}:{n}" for b, n in sorted(hist.items())))
    from atfr.bench.precision_speed import precision_speed_lines  # measured: is int8 faster here?
    for line in precision_speed_lines(args.outdir, ["int8"]):
        print(f"atfr calibrate: note: {line}", file=sys.stderr)
    return 0
