"""atfr triton-repo EXPORT -o REPO: a model repository for stock tritonserver (ensemble entry point)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("export", help="export folder (atfr.json)")
    p.add_argument("-o", "--output", required=True, help="repository folder to write")
    p.add_argument("--flavor", default="onnxruntime", choices=("onnxruntime", "tensorrt", "python"),
                   help="front/back on Triton's ONNX Runtime backend, as TensorRT plans (atfr build), "
                        "or ONNX Runtime inside Python models (runs on the nvidia-pytriton server)")
    p.add_argument("--max-batch", type=int, default=8, help="dynamic batcher's largest batch (clips)")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batcher's max queue delay")
    p.add_argument("--instances", type=int, default=1, help="instances per model")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per graph (python flavor)")
    p.add_argument("--engine-dir", help="tensorrt flavor: folder with front.engine/back.engine (default: the export)")
    p.add_argument("--force", action="store_true", help="replace an existing repository")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from atfr.runtime.serving.triton_repo import RepoOptions, write_repo

    opt = RepoOptions(flavor=args.flavor, max_batch=args.max_batch, queue_delay_us=args.queue_delay_us,
                      instances=args.instances, topk=args.topk, threads=args.threads, engine_dir=args.engine_dir)
    res = write_repo(args.export, args.output, opt, force=args.force)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"wrote {res['repo']} ({res['flavor']}): entry points {res['models']['clips']} (clips), "
              f"{res['models']['frames']} (frames); see {res['repo']}/README.md")
    return 0
