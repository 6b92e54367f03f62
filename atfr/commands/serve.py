"""atfr serve EXPORT: serve an export on Triton Inference Server (PyTriton), HTTP/gRPC/metrics."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("export", help="export folder (atfr.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--instances", type=int, default=1, help="model instances (one pipeline each)")
    p.add_argument("--max-batch", type=int, default=8, help="dynamic batcher's largest batch (clips)")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batcher's max queue delay")
    p.add_argument("--max-request-mib", type=int, default=1024,
                   help="largest raw-frames request (clips x frames x H x W x 3 bytes), in MiB")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime, tensorrt, auto")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per graph")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--model-name", help="Triton model name (default: the export's name)")
    p.add_argument("--verbose", action="store_true", help="Triton's verbose log")
    p.add_argument("--log-file", help="write Triton's log there instead of stdout")


def run(args: argparse.Namespace) -> int:
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.serving.pytriton_server import ServeOptions, serve

    load_manifest(args.export)  # a missing, edited or hostile export: one line before the environment checks

    opt = ServeOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                       metrics_port=args.metrics_port, instances=args.instances, max_batch=args.max_batch,
                       queue_delay_us=args.queue_delay_us, max_request_mib=args.max_request_mib,
                       backend=args.backend, topk=args.topk, threads=args.threads, model_name=args.model_name,
                       verbose=args.verbose, log_file=args.log_file)

    def ready(info: dict) -> None:  # one JSON line: scripts and tests wait for it
        print(json.dumps({"ready": True, **info}), flush=True)
        print(f"atfr serve: ready on http://{info['http']} (models {', '.join(info['models'])}); "
              "Ctrl+C or SIGTERM stops", file=sys.stderr, flush=True)

    def stopped(how: str, seconds: float) -> None:
        if how == "exited":
            print(f"atfr serve: stopped in {seconds:.1f} s", file=sys.stderr, flush=True)
        else:  # the in-flight requests did not finish within the drain time
            print(f"atfr serve: warning: Triton did not exit in time; its processes were {how} "
                  f"({seconds:.1f} s after the signal)", file=sys.stderr, flush=True)

    return serve(args.export, opt, ready, stopped)
