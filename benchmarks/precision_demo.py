"""FP16 and INT8 vs FP32 on the demo model's held-out clips (ONNX Runtime CPU).

Steps: export the demo model, write the fp16 graphs (SGS embedding, distances and SGS in fp32),
calibrate INT8 Q/DQ graphs on demo videos (two-stage: front on clips, back on SGS outputs), then
compare every precision with the PyTorch fp32 reference on held-out clips (split 1, never used for
training or calibration).

    python benchmarks/precision_demo.py [--workdir /tmp/precision-demo] [--per-class 25] [--calib-videos 16]
                                        [--method percentile|entropy|minmax] [--front float|int8]
                                        [--float-stages N] [--fp16-feature-block fp32|fp16]
                                        [--fp16-front fp16|fp32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/precision-demo")
    ap.add_argument("--checkpoint", help="default: the built-in demo model")
    ap.add_argument("--per-class", type=int, default=25, help="held-out clips per class")
    ap.add_argument("--calib-videos", type=int, default=16, help="calibration videos per class")
    ap.add_argument("--calib-clips", type=int, default=256)
    ap.add_argument("--method", default="percentile")
    ap.add_argument("--front", default="float", choices=["float", "int8"],
                    help="atfr calibrate --front: quantize only the back (float, default) or both graphs")
    ap.add_argument("--reference", default="torch", choices=["torch", "fp32"])
    ap.add_argument("--float-stages", type=int, default=1, help="atfr calibrate --float-stages")
    ap.add_argument("--fp16-feature-block", default="fp32", choices=["fp32", "fp16"],
                    help="atfr export --fp16-feature-block")
    ap.add_argument("--fp16-front", default="fp32", choices=["fp16", "fp32"], help="atfr export --fp16-front")
    args = ap.parse_args(argv)

    from atfr.calibration.accuracy import compare_precisions, format_report
    from atfr.calibration.int8 import calibrate
    from atfr.commands.demo import builtin_checkpoint
    from atfr.demo.synth import make_dataset, write_demo_videos
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.export.precision import write_fp16
    from atfr.models.checkpoint import load_checkpoint
    from atfr.runtime.video.clips import normalize, pack_pathways

    t0 = time.perf_counter()
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    ckpt = Path(args.checkpoint) if args.checkpoint else builtin_checkpoint()
    lm = load_checkpoint(ckpt)
    lm.meta.setdefault("source", str(ckpt))
    out = export_model(lm, work / "export", ExportOptions(name="demo_atfr"))
    write_fp16(out, feature_block=args.fp16_feature_block == "fp32", front_fp32=args.fp16_front == "fp32")
    spec = lm.model.input_spec
    vids = write_demo_videos(work / "calib_videos", seed=1, n_per_class=args.calib_videos, fps=spec.target_fps,
                             frames=2 * spec.num_frames, size=spec.crop_size)
    calibrate(out, vids[0].parent, clips=args.calib_clips, method=args.method, seed=0, front=args.front,
              float_stages=args.float_stages)
    frames, labels = make_dataset(args.per_class, seed=0, num_frames=spec.num_frames, size=spec.crop_size, split=1)
    clips = [pack_pathways(normalize(f, spec), spec) for f in frames]
    res = compare_precisions(out, ["fp32", "fp16", "int8"], clips, reference=args.reference, labels=list(labels),
                             checkpoint=ckpt)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"model: {ckpt.name}; held-out clips: {len(clips)} ({args.per_class} per class, split 1); "
          f"INT8 calibrated on {args.calib_clips} clips from {len(vids)} demo videos ({args.method}, front {args.front}, "
          f"float stages {args.float_stages})")
    print(format_report(res))
    (work / "precision_report.json").write_text(json.dumps(res, indent=2, default=float))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0 if res["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())
