"""atfr export SOURCE -o OUTDIR: split a checkpoint at SGS into ONNX graphs + manifest."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="checkpoint: official .pyth (cfg embedded or --config) or ours")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--config", help="config YAML (official dump or our compact format)")
    p.add_argument("--frames", type=int, help="clip length T, 1..512 (default: the model's)")
    p.add_argument("--size", type=int, help="crop size S in pixels, 16..1024 (default: the model's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13..20 (default 17)")
    p.add_argument("--name", help="model name recorded in the manifest")
    p.add_argument("--fp16", action="store_true",
                   help="also write fp16 graphs (SGS embedding, distances and SGS stay fp32)")
    p.add_argument("--fp16-front", choices=("fp16", "fp32"), default="fp32",
                   help="with --fp16: precision of the front (up to SGS). Default fp32: only the back "
                        "is fp16, because SGS amplifies the front's fp16 error about 2B-fold and B' is "
                        "a threshold; fp16 is faster on TensorRT, check it with atfr verify --precision")
    p.add_argument("--fp16-feature-block", choices=("fp32", "fp16"), default=None,
                   help="with --fp16 --fp16-front fp16: precision of the residual block producing "
                        "SGS's input features (default fp32: B' is a threshold on their distances)")
    p.add_argument("--force", action="store_true", help="overwrite an existing export")


def run(args: argparse.Namespace) -> int:
    from atfr.errors import ATFRError
    from atfr.export.exporter import ExportOptions, check_export_size, export_model, validate_arguments
    from atfr.fileio import check_output_dir
    from atfr.models.checkpoint import load_checkpoint
    from atfr.output_claim import output_lock

    # Everything that can be checked cheaply is checked before the checkpoint loads.
    validate_arguments(args.frames, args.size, args.opset)
    if args.fp16_feature_block is not None and not (args.fp16 and args.fp16_front == "fp16"):
        print("atfr export: note: --fp16-feature-block only applies with --fp16 --fp16-front fp16 "
              "(the default fp32 front already keeps that block in fp32)", file=sys.stderr)
    check_output_dir(args.output)
    t0 = time.perf_counter()
    with output_lock(args.output):  # a second atfr process writing the same folder exits 2 at once
        lm = load_checkpoint(args.source, args.config)
        if args.fp16 and getattr(lm.model, "family", None) == "adafuse":
            raise ATFRError("--fp16: AdaFuse exports are fp32 only for now (the fp16 policy is written for "
                            "ATFR's front/back split)")
        spec = lm.model.input_spec
        check_export_size(lm.model, args.frames or spec.num_frames, args.size or spec.crop_size)
        lm.meta.setdefault("source", args.source)
        out = export_model(lm, args.output, ExportOptions(args.frames, args.size, args.opset, args.force,
                                                          args.name or Path(args.source).stem))
        if args.fp16:
            from atfr.export.precision import write_fp16
            write_fp16(out, force=True, feature_block=args.fp16_feature_block != "fp16",
                       front_fp32=args.fp16_front == "fp32")
    from atfr.runtime.manifest import load_manifest
    m = load_manifest(out)
    print(f"exported {m.name} ({m.arch}, {m.num_classes} classes, {len(m.sgs)} SGS layer(s)) to {out} "
          f"in {time.perf_counter() - t0:.1f} s")
    for layer in m.sgs:
        print(f"  SGS pathway {layer.pathway}: T={layer.frames} B={layer.bins} C={layer.channels} "
              f"{layer.height}x{layer.width} kernel={layer.spec.kernel}")
    for k in m.graphs:
        print(f"  {m.graphs[k].file}")
    return 0
