"""atfr infer SOURCE --input CLIP.npy: one clip through a checkpoint (torch) or an export."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from atfr.errors import ATFRError, check_range
from atfr.runtime.ort_providers import add_providers_argument

SIZE_MIN, SIZE_MAX = 16, 1024  # as export (export/exporter.py), without importing onnx here


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="checkpoint (.pyth/.pt: torch backend) or export folder (runtime backend)")
    p.add_argument("--input", required=True, help="clip: .npy uint8 RGB [T,H,W,3]")
    p.add_argument("--config", help="config YAML for an official checkpoint without an embedded cfg")
    p.add_argument("--backend", default="auto", help="torch (checkpoint), onnxruntime, tensorrt, auto")
    add_providers_argument(p)
    p.add_argument("--size", type=int, help=f"model input size for a checkpoint, {SIZE_MIN}..{SIZE_MAX} px "
                                            "(default: its test crop)")
    p.add_argument("--json", action="store_true", help="print JSON: logits, probs, bprime, top5 (AdaFuse: also policy, gflops)")
    from atfr.runtime.budget import add_bins_argument
    add_bins_argument(p)


def run(args: argparse.Namespace) -> int:
    from atfr.display import format_prob
    from atfr.runtime.video.clips import frames_to_inputs, load_clip_npy

    check_range("--size", args.size, SIZE_MIN, SIZE_MAX, "pixels")
    src = Path(args.source)
    if src.is_dir() and args.size is not None:
        raise ATFRError(f"--size applies to a checkpoint; the export {src} has a fixed input size")
    frames = load_clip_npy(args.input)
    extra: dict = {}
    t0 = time.perf_counter()
    if src.is_dir():
        if args.backend == "torch":
            raise ATFRError(f"{src} is an export folder; --backend torch needs a checkpoint")
        from atfr.runtime.adafuse_clip import AdaFuseClipRunner, is_adafuse_export
        from atfr.runtime.pipeline import Pipeline
        if is_adafuse_export(src):
            if args.bins is not None:
                raise ATFRError("--bins applies to ATFR exports (SGS); this is an AdaFuse export")
            ar = AdaFuseClipRunner.load(src, args.backend, args.providers)
            result, extra = ar.infer(frames_to_inputs(frames, ar.manifest.input, args.input)[0])
            labels, backend = ar.manifest.labels, ar.backend
        else:
            pl = Pipeline.load(src, backend=args.backend, providers=args.providers, bins=args.bins)
            inputs = frames_to_inputs(frames, pl.manifest.input, args.input)
            result = pl.infer(inputs)[0]
            labels, backend = pl.manifest.labels, pl.backend
    else:
        if args.backend not in ("auto", "torch"):
            raise ATFRError(f"{src} is a checkpoint: it runs on the torch backend (export it for {args.backend})")
        result, labels, extra = _torch_infer(src, args.config, frames, args)
        backend = "torch"
    ms = (time.perf_counter() - t0) * 1e3
    if args.json:
        out = result.to_json(labels)
        out.update(extra)  # AdaFuse: policy, policy_blocks, policy_fractions, gflops
        out["backend"] = backend
        print(json.dumps(out))
    else:
        if extra:
            f = extra["policy_fractions"]
            print(f"backend {backend}, policy skip {f['skip']:.1%} reuse {f['reuse']:.1%} keep {f['keep']:.1%}, "
                  f"GFLOPs {extra['gflops']['eq5']:.2f} (Eq. 5; official {extra['gflops']['official']:.2f}), "
                  f"{ms:.0f} ms (including load)")
        else:
            print(f"backend {backend}, B' {list(result.bprime)}, {ms:.0f} ms (including load)")
        for i in result.top(5):
            name = labels[i] if i < len(labels) else str(i)
            print(f"  {format_prob(result.probs[i]):>8s}  {name}")
    return 0


def _torch_infer(path: Path, config, frames: np.ndarray, args):
    import torch

    from atfr.models.checkpoint import load_checkpoint
    from atfr.runtime.video.clips import frames_to_inputs
    from atfr.runtime.pipeline import ClipResult, softmax

    lm = load_checkpoint(path, config)
    spec = lm.model.input_spec
    if args.size:
        spec = dataclasses.replace(spec, crop_size=args.size, short_side=args.size)
    inputs = frames_to_inputs(frames, spec, args.input)
    model = lm.model.eval()
    from atfr.models.adafuse_report import clip_fields, is_adafuse
    if is_adafuse(model):
        lg, extra = clip_fields(model, torch.from_numpy(inputs[0]))
        if not np.isfinite(lg).all():
            raise ATFRError("the model produced NaN/Inf logits for this clip")
        return ClipResult(lg, softmax(lg), ()), lm.labels, extra
    model.batch_independent = True
    with torch.inference_mode():
        logits, bp = model.forward_with_bprime([torch.from_numpy(x) for x in inputs], guard=True)
    if not torch.isfinite(logits).all():
        raise ATFRError("the model produced NaN/Inf logits for this clip")
    lg = logits[0].numpy().astype(np.float32)
    return ClipResult(lg, softmax(lg), tuple(int(v) for v in bp[0].tolist())), lm.labels, {}
