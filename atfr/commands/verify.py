"""atfr verify OUTDIR: PyTorch reference vs each available backend, stage by stage (an AdaFuse
export: its clip and online graphs, export/adafuse_verify.py)."""

from __future__ import annotations

import argparse
import json
import sys

from atfr.errors import ATFRError, VerificationError
from atfr.runtime.ort_providers import add_providers_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="export folder")
    p.add_argument("--checkpoint", help="reference checkpoint (default: the one recorded in the manifest)")
    p.add_argument("--config", help="config for an official checkpoint without an embedded cfg")
    p.add_argument("--clips", type=int, default=4, help="random clips on top of the structured ones")
    p.add_argument("--input", action="append", default=[], help="extra clip .npy (uint8 [T,H,W,3]); repeatable")
    p.add_argument("--backend", default="all", help="onnxruntime, tensorrt, or all available")
    add_providers_argument(p)
    p.add_argument("--sgs", default="numpy", choices=["numpy", "fallback"], help="SGS step for onnxruntime")
    p.add_argument("--logits-atol", type=float,
                   help="end-to-end logits bound (ATFR default 5e-3; AdaFuse: derived from the network's depth "
                        "and longest reduction)")
    p.add_argument("--back-atol", type=float, default=1e-4)
    p.add_argument("--plugin", help="TensorRT: SGS plugin library (explicit path)")
    p.add_argument("--engine-dir", help="TensorRT: folder with front.engine/back.engine (default OUTDIR)")
    p.add_argument("--precision", help="accuracy report instead: e.g. fp32,fp16,int8 (ONNX Runtime graphs)")
    p.add_argument("--data", help="with --precision: video folder or list .txt to sample clips from")
    p.add_argument("--data-clips", type=int, default=64, help="with --precision: clips sampled from --data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-top1", action="append", default=[], metavar="PREC=FRAC",
                   help="top-1 agreement threshold, e.g. int8=0.97 (repeatable)")
    p.add_argument("--min-bprime", action="append", default=[], metavar="PREC=FRAC",
                   help="B' agreement threshold, e.g. fp16=0.99 (repeatable)")
    p.add_argument("--json", action="store_true")
    from atfr.runtime.budget import add_bins_argument
    add_bins_argument(p)


def run(args: argparse.Namespace) -> int:
    from atfr.export.verify import Tolerances, format_report, require_match, verification_clips, verify_backend
    from atfr.models.checkpoint import load_checkpoint
    from atfr.runtime.video.clips import frames_to_inputs, load_clip_npy
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.pipeline import Pipeline

    from atfr.errors import check_range

    check_range("--clips", args.clips, 0, None)
    check_range("--data-clips", args.data_clips, 1, None)
    m = load_manifest(args.outdir, check=True)
    if m.raw.get("family") == "adafuse":
        return _adafuse(args, m)
    if args.precision:
        if args.bins is not None:
            raise ATFRError("--bins applies to the parity check, not to --precision reports")
        return _precision_report(args, m)
    ckpt = args.checkpoint
    if not ckpt:
        raise _no_checkpoint(m)
    lm = load_checkpoint(ckpt, args.config)
    require_match(lm, m)
    if args.bins is not None:
        from atfr.runtime.budget import check_bins

        check_bins(m, args.bins)
        _reference_bins(lm.model, args.bins)  # the reference runs with the same B_run (the official NUM_BINS)
    extra = [frames_to_inputs(load_clip_npy(p), m.input, p) for p in args.input]
    clips = verification_clips(lm, m, args.clips, extra)
    if args.backend == "all":
        backends = ["onnxruntime"]
        try:
            import tensorrt  # noqa: F401
            backends.append("tensorrt")
        except ImportError:
            print("tensorrt: not installed here, skipped")
    else:
        backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    tol = Tolerances(back_atol=args.back_atol,
                     logits_atol=Tolerances.logits_atol if args.logits_atol is None else args.logits_atol)
    reports = []
    for b in backends:
        trt_opts = ({"plugin": args.plugin, "engine_dir": args.engine_dir} if b == "tensorrt"
                    else {"providers": args.providers})
        pl = Pipeline.load(args.outdir, backend=b, sgs=args.sgs, bins=args.bins, **trt_opts)
        rep = verify_backend(lm, pl, clips, tol)
        reports.append(rep)
        if not args.json:
            print(format_report(rep))
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    bad = [r.backend for r in reports if not r.ok]
    if bad:
        raise VerificationError(f"verification failed for: {', '.join(bad)}")
    return 0


def _no_checkpoint(m) -> ATFRError:
    """The recorded path is provenance: an export folder never makes atfr open a file outside it."""
    rec = (m.raw.get("source") or {}).get("checkpoint")
    return ATFRError("no reference checkpoint: pass --checkpoint CKPT"
                     + (f" (the export was made from {rec})" if isinstance(rec, str) and rec else ""))


def _adafuse(args: argparse.Namespace, m) -> int:
    """An AdaFuse export: clip graph and online graph(s) against torch (export/adafuse_verify.py)."""
    from atfr.export.adafuse_verify import format_adafuse_report, require_adafuse_match, verify_adafuse
    from atfr.export.verify import verification_clips
    from atfr.models.checkpoint import load_checkpoint
    from atfr.runtime.video.clips import frames_to_inputs, load_clip_npy

    for flag, given in (("--precision", args.precision), ("--bins", args.bins is not None),
                        ("--plugin", args.plugin), ("--engine-dir", args.engine_dir),
                        ("--sgs", args.sgs != "numpy")):
        if given:
            raise ATFRError(f"{flag} applies to ATFR exports; {m.root} is an AdaFuse export (fp32 ONNX graphs, "
                            "no SGS layer, no TensorRT engines yet)")
    if args.backend not in ("all", "onnxruntime"):
        raise ATFRError(f"--backend {args.backend}: AdaFuse exports are verified on onnxruntime (TensorRT engines "
                        "for them are not built yet)")
    if not args.checkpoint:
        raise _no_checkpoint(m)
    lm = load_checkpoint(args.checkpoint, args.config)
    require_adafuse_match(lm, m, args.checkpoint)
    extra = [frames_to_inputs(load_clip_npy(p), m.input, p) for p in args.input]
    clips = [c[0] for c in verification_clips(lm, m, args.clips, extra)]
    reports, bounds = verify_adafuse(lm, args.outdir, clips, args.providers, args.logits_atol)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        for r in reports:
            print(format_adafuse_report(r))
    bad = [r.graph for r in reports if not r.ok]
    if bad:
        raise VerificationError(f"verification failed for: {', '.join(g + '.onnx' for g in bad)}")
    return 0


def _reference_bins(model, bins: int) -> None:
    """Set every SGS layer of the torch reference to ``bins`` bins (the official NUM_BINS = B_run)."""
    import dataclasses

    from atfr.models.sgs import TSLayer

    for layer in model.modules():
        if isinstance(layer, TSLayer):
            layer.spec = dataclasses.replace(layer.spec, num_bins=int(bins))


def _thresholds(args: argparse.Namespace, precs: list[str]) -> dict[str, dict[str, float]]:
    from atfr.calibration.accuracy import DEFAULT_THRESHOLDS

    th = {p: dict(DEFAULT_THRESHOLDS.get(p, {})) for p in precs}
    for flag, metric in ((args.min_top1, "top1_agreement"), (args.min_bprime, "bprime_agreement")):
        for item in flag:
            prec, _, val = item.partition("=")
            try:
                th.setdefault(prec.strip(), {})[metric] = float(val)
            except ValueError:
                raise ATFRError(f"bad threshold {item!r}; expected PREC=FRACTION, e.g. int8=0.97") from None
    return th


def _precision_report(args: argparse.Namespace, m) -> int:
    """Accuracy of fp32/fp16/int8 graphs vs a reference on a clip set (ONNX Runtime CPU)."""
    from atfr.calibration.accuracy import compare_precisions, format_report
    from atfr.log import quiet_stdout

    precs = [p.strip() for p in args.precision.split(",") if p.strip()]
    ckpt = args.checkpoint
    with quiet_stdout("verify --precision"):  # library prints go to the log (-v), not into the report
        res = compare_precisions(args.outdir, precs, clips=args.data, reference="torch" if args.checkpoint else "fp32",
                                 thresholds=_thresholds(args, precs), checkpoint=ckpt,
                                 num_clips=args.data_clips, seed=args.seed, progress=True)
    print(json.dumps(res, indent=2, default=float) if args.json else format_report(res))
    from atfr.bench.precision_speed import precision_speed_lines  # measured: are fp16/int8 faster here?
    for line in precision_speed_lines(args.outdir, precs):
        print(f"atfr verify: note: {line}", file=sys.stderr)
    if not res["passed"]:
        raise VerificationError("precision report below thresholds")
    return 0
