#!/usr/bin/env python
"""Load test: Triton serving vs the in-process Pipeline on the same clips, in one run.

    python benchmarks/triton_load.py [--export DIR] [--requests 64] [--clients 1,2,4,8,16]
                                     [--python-env DIR] [--work DIR] [--targets pipeline,serve,repo]

Targets, each driven by 1, 2, 4, 8 and 16 concurrent clients (threads, one clip per request,
``--requests`` requests per level, cycling over 16 clips of mixed B'):

* ``pipeline``: ``Pipeline.infer`` in this process (one shared pipeline, ORT sessions are thread-safe);
* ``serve``: ``atfr serve`` (PyTriton, dynamic batching), HTTP on 127.0.0.1;
* ``repo``: the nvidia-pytriton wheel's ``tritonserver`` on an ``atfr triton-repo --flavor python``
  repository (ensemble -> front -> SGS/B'-grouping BLS model -> back), HTTP on 127.0.0.1.

Without ``--export``, the built-in demo model is exported into WORK (needs torch). The servers'
Python-backend stub needs numpy < 2 (runtime/serving/triton_env.py): ``--python-env`` names such an
environment when this one has numpy 2. Prints the command, the machine and a Markdown table
(throughput, p50/p95/p99 latency per request).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def prepare_export(work: Path) -> Path:
    out = work / "export"
    if not (out / "atfr.json").exists():
        from atfr.commands.demo import builtin_checkpoint
        from atfr.export.exporter import ExportOptions, export_model
        from atfr.models.checkpoint import load_checkpoint

        export_model(load_checkpoint(builtin_checkpoint()), out, ExportOptions(name="demo_atfr"))
    return out


def make_clips(m, n: int = 16) -> list[np.ndarray]:
    """n pre-processed single-clip batches from static to noisy: several B' values."""
    rng = np.random.default_rng(0)
    shape = m.clip_shapes(1)[0]
    t = shape[2]
    out = []
    for i in range(n):
        still = np.repeat(rng.standard_normal(shape[:2] + (1,) + shape[3:]), t, axis=2)
        noise = rng.standard_normal(shape)
        a = i / (n - 1)
        out.append(np.ascontiguousarray((a * noise + (1 - a) * still).astype(np.float32)))
    return out


def drive(call, clips: list[np.ndarray], clients: int, requests: int) -> dict:
    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker(_: int) -> None:
        state = {}
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            call(clips[i % len(clips)], state)
            dt = (time.perf_counter() - t0) * 1e3
            with lock:
                lat.append(dt)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(worker, range(clients)))
    wall = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"clients": clients, "requests": requests, "rps": requests / wall,
            "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99))}


def http_call(url: str, model: str):
    import tritonclient.http as http

    def call(x: np.ndarray, state: dict) -> None:
        c = state.get("c")
        if c is None:
            c = state["c"] = http.InferenceServerClient(url)
        i = http.InferInput("clip0", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        c.infer(model, [i]).as_numpy("probs")

    return call


def wait_ready(url: str, model: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import tritonclient.http as http

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        c = http.InferenceServerClient(url)
        try:
            if c.is_server_ready() and c.is_model_ready(model):  # PyTriton loads models after start
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        finally:
            c.close()
        time.sleep(0.5)
    raise SystemExit("server did not get ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export")
    ap.add_argument("--work", default="triton-load")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--python-env", help="environment (prefix) with numpy<2 for the servers' Python backend stub")
    ap.add_argument("--targets", default="pipeline,serve,repo")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--queue-delay-us", type=int, default=2000)
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    export = Path(args.export) if args.export else prepare_export(work)
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.serving.triton_env import start_bundled_server
    from atfr.runtime.serving.triton_repo import RepoOptions, write_repo

    pl = Pipeline.load(export)
    clips = make_clips(pl.manifest)
    bps = sorted({r.bprime for c in clips for r in pl.infer([c])})
    levels = [int(x) for x in args.clients.split(",")]
    targets = args.targets.split(",")
    py = str(Path(args.python_env) / "bin" / "python3") if args.python_env else sys.executable
    rows: list[tuple[str, dict]] = []
    print("command:", shlex.join([sys.executable] + sys.argv))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"ATFR_ORT_THREADS={os.environ.get('ATFR_ORT_THREADS', 'unset')}; model {pl.manifest.name} "
          f"{list(clips[0].shape[1:])}; clips' B' {bps}", flush=True)

    calls: dict[str, object] = {}
    procs: list[subprocess.Popen] = []
    try:
        if "pipeline" in targets:
            calls["in-process Pipeline"] = lambda x, st: pl.infer([x])
        if "serve" in targets:
            h, g, mp = free_ports(3)
            procs.append(subprocess.Popen(
                [py, "-m", "atfr.cli", "serve", str(export), "--http-port", str(h), "--grpc-port", str(g),
                 "--metrics-port", str(mp), "--max-batch", str(args.max_batch), "--queue-delay-us",
                 str(args.queue_delay_us), "--log-file", str(work / "serve.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            wait_ready(f"127.0.0.1:{h}", pl.manifest.name, procs[-1])
            calls["atfr serve (PyTriton)"] = http_call(f"127.0.0.1:{h}", pl.manifest.name)
        if "repo" in targets:
            write_repo(export, work / "repo", RepoOptions(flavor="python", max_batch=args.max_batch,
                                                          queue_delay_us=args.queue_delay_us), force=True)
            h, g, mp = free_ports(3)
            log = open(work / "repo-server.log", "wb")
            procs.append(start_bundled_server(work / "repo", work / "server", "127.0.0.1", h, g, mp,
                                              python_env=args.python_env, log=log))
            wait_ready(f"127.0.0.1:{h}", pl.manifest.name, procs[-1])
            calls["tritonserver, triton-repo --flavor python"] = http_call(f"127.0.0.1:{h}", pl.manifest.name)
        for call in calls.values():
            call(clips[0], {})  # warm-up
        # Interleaved: every target at one client count before the next count, so load drifts on a
        # shared machine hit all targets alike (all servers stay up; idle ones cost ~nothing).
        for c in levels:
            for name, call in calls.items():
                r = drive(call, clips, c, args.requests)
                rows.append((name, r))
                print(json.dumps({"target": name, **r}), flush=True)
    finally:
        for proc in procs:
            stop(proc)

    print("\n| target | clients | requests | clips/s | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, r in sorted(rows, key=lambda nr: list(calls).index(nr[0])):
        print(f"| {name} | {r['clients']} | {r['requests']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
              f"{r['p99']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
