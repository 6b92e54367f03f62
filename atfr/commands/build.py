"""atfr build OUTDIR: TensorRT engines (front.engine, back.engine + JSON sidecars) from an export;
from an AdaFuse export one engine per graph (model.engine, online.engine, online_gathered.engine).

Options are validated (with warnings) before tensorrt is imported, so a wrong combination is
reported the same way on a machine without TensorRT. Written against the TensorRT 10.3-11.x
Python API; see atfr.runtime.tensorrt.builder.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="export folder (from 'atfr export'); an AdaFuse export gets one engine per graph "
                                  "(fp32, or fp16 with the policy heads in fp32; no int8)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="fp32; fp16 (builder flag on TensorRT < 10.12, fp16 graphs on >= 10.12/11.x); "
                        "int8 (Q/DQ graphs from 'atfr calibrate' only)")
    p.add_argument("--sgs", default="plugin", choices=["plugin", "fallback", "host"],
                   help="SGS inside the front engine as the CUDA plugin (needs --plugin), as standard ONNX ops "
                        "(fallback), or on the host between the engines (host)")
    p.add_argument("--plugin", metavar="PATH", help="SGS plugin library: libatfr_sgs.so (static registration) "
                   "or libatfr_sgs_vc.so (getCreators); loaded from this exact path only")
    p.add_argument("--plugin-variant", default="auto", choices=["auto", "static", "dynamic"],
                   help="how to load --plugin (auto: *_vc.so -> dynamic via IPluginRegistry.load_library)")
    p.add_argument("--workspace", type=int, metavar="MB", help="builder workspace limit in MiB (default: TensorRT's)")
    p.add_argument("--timing-cache", metavar="PATH", help="timing cache to read (if present) and update")
    p.add_argument("--profiles", metavar="SPEC",
                   help="back-engine T' profiles, e.g. '1-4:2,5-32:8' (MIN-MAX:OPT, ',' between profiles, "
                        "'/' between SGS pathways); must cover 1..B")
    p.add_argument("--opt", type=int, metavar="N", help="typical B' (profile opt; default from the export's B' stats)")
    p.add_argument("--max-batch", type=int, default=1, metavar="N", help="largest batch of the engines (default 1)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 for fp32 layers (TensorRT's default, off in atfr: it rounds the SGS distance "
                        "inputs to 10-bit mantissas, so B' can differ from ONNX Runtime on Ampere and newer GPUs)")
    p.add_argument("--engine-dir", metavar="DIR", help="where to write the engines (default: OUTDIR)")
    p.add_argument("--force", action="store_true", help="overwrite existing engines")
    p.add_argument("--verbose", action="store_true", help="show TensorRT warnings")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from atfr.fileio import check_output_dir
    from atfr.runtime.manifest import int8_front_mode, load_manifest
    from atfr.runtime.tensorrt.compat import BuildOptions, validate_build_options

    m = load_manifest(args.outdir, check=True)
    if m.raw.get("family") == "adafuse":
        return _run_adafuse(args)
    opts = validate_build_options(
        BuildOptions(precision=args.precision, sgs=args.sgs, plugin_path=args.plugin, workspace_mb=args.workspace,
                     timing_cache=args.timing_cache, profiles=args.profiles, opt_bprime=args.opt,
                     max_batch=args.max_batch, force=args.force, tf32=args.tf32),
        [l.bins for l in m.sgs], m.graphs, int8_front=int8_front_mode(m.raw))
    for w in opts.warnings:
        print(w, file=sys.stderr)
    check_output_dir(args.engine_dir or args.outdir)  # before minutes of engine building

    from atfr.runtime.tensorrt.builder import build_engines  # imports tensorrt lazily (one-line error if absent)

    written = build_engines(args.outdir, opts=opts, progress=not args.quiet, engine_dir=args.engine_dir,
                            plugin_variant_=args.plugin_variant, verbose=args.verbose)
    for p in written:
        print(p)
    return 0


def _run_adafuse(args: argparse.Namespace) -> int:
    """AdaFuse: one engine per graph (model, online, online_gathered); see atfr.runtime.tensorrt.adafuse_plan."""
    from atfr.fileio import check_output_dir
    from atfr.runtime.tensorrt.adafuse_plan import validate_options
    from atfr.runtime.tensorrt.compat import BuildOptions

    opts = validate_options(BuildOptions(precision=args.precision, plugin_path=args.plugin,
                                         workspace_mb=args.workspace, timing_cache=args.timing_cache,
                                         profiles=args.profiles, opt_bprime=args.opt, max_batch=args.max_batch,
                                         force=args.force, tf32=args.tf32))
    for w in opts.warnings:
        print(w, file=sys.stderr)
    check_output_dir(args.engine_dir or args.outdir)

    from atfr.runtime.tensorrt.adafuse_builder import build_adafuse_engines  # imports tensorrt lazily

    for p in build_adafuse_engines(args.outdir, opts, progress=not args.quiet, engine_dir=args.engine_dir,
                                   verbose=args.verbose):
        print(p)
    return 0
