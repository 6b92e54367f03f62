"""``atfr serve``: an export on Triton Inference Server through PyTriton. Torch-free.

Two models per export, both with Triton's dynamic batcher in front:

* ``{name}``: pre-processed clips ``clip{p}`` float32 ``[3,T_p,S,S]`` (batch axis added by Triton);
* ``{name}_frames``: raw frames ``frames`` uint8 ``[T,H,W,3]`` RGB, pre-processed like ``atfr run``.

Both answer ``probs``/``logits`` [K], ``bprime`` [L] (one per SGS layer), ``topk_index`` and
``topk_label`` [k]. The callable receives every request of a dynamic batch, validates each one,
and runs all their clips through one ``Pipeline.infer``: the front batched, the back once per
group of equal B' (exact per clip). One pipeline per model instance (``--instances``).
An AdaFuse export serves the same two models (``service.response_spec``): its clip graph runs the
whole batch at once, and ``policy_fractions`` [3] and ``gflops`` [2] replace ``bprime``.

PyTriton 0.7 reports an error per batch, not per request: a malformed request (NaN values) that
the batcher merged with good ones fails them too; shape and dtype errors never merge (the
batcher only joins requests of equal shapes, Triton checks dtypes before the model). Every
refusal is answered with its one line (answers.py); SIGINT/SIGTERM drain the server and end
its whole process tree within 8 s (stop.py).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atfr.errors import ATFRError

from atfr.runtime.serving.answers import one_line_proxy, refusal
from atfr.runtime.serving.stop import StopBudget, child_named, drain_and_end, server_session
from atfr.runtime.serving.service import ClipService, ServeLimits, clip_input_names, load_pipeline, response_spec
from atfr.runtime.serving.triton_env import check_stub_numpy, server_env


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    instances: int = 1
    max_batch: int = 8
    queue_delay_us: int = 2000
    max_request_mib: int = ServeLimits.max_request_mib
    backend: str = "onnxruntime"
    topk: int = 5
    threads: int | None = None
    model_name: str | None = None
    verbose: bool = False
    log_file: str | None = None  # Triton's log (default: this process's stdout)


def make_infer_fn(service: ClipService, kind: str) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """A PyTriton callable over a list of requests (no ``@batch``: each request is checked alone)."""
    names = clip_input_names(service.m)

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        per_req: list[list[np.ndarray]] = []
        for i, r in enumerate(requests):
            try:
                if kind == "frames":
                    per_req.append(service.check_clips(service.frames_to_clips(r["frames"])))
                else:
                    per_req.append(service.check_clips([r[n] for n in names]))
            except Exception as e:  # noqa: BLE001 - every failure is answered with one line
                raise refusal(e, i, len(requests)) from None
        sizes = [c[0].shape[0] for c in per_req]
        clips = [np.concatenate([c[p] for c in per_req], 0) for p in range(len(names))]
        try:
            out = service.outputs(service.infer(clips))
        except Exception as e:  # noqa: BLE001
            raise refusal(e, 0, 1) from None
        responses, start = [], 0
        for n in sizes:
            responses.append({k: v[start:start + n] for k, v in out.items()})
            start += n
        return responses

    return infer


def _tensors(service: ClipService) -> tuple[list[Any], list[Any], list[Any]]:
    from pytriton.model_config import Tensor

    m = service.m
    clips = [Tensor(name=f"clip{p}", dtype=np.float32, shape=tuple(s[1:]))
             for p, s in enumerate(m.clip_shapes(1))]
    frames = [Tensor(name="frames", dtype=np.uint8, shape=(m.input.num_frames, -1, -1, 3))]
    dtypes = {"float32": np.float32, "int32": np.int32, "bytes": bytes}
    outs = [Tensor(name=n, dtype=dtypes[t], shape=tuple(shape)) for n, t, shape in response_spec(m, service.topk)]
    return clips, frames, outs


def serve(export: str | Path, opt: ServeOptions, ready: Callable[[dict[str, Any]], None] | None = None,
          stopped: Callable[[str, float], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM or until the server dies; returns 0 on a clean stop.

    ``stopped(how, seconds)`` hears how the server's processes ended ("exited", "terminated",
    "killed") and how long after the signal (stop.py: the whole stop stays under 8 s)."""
    import os

    check_stub_numpy()
    # PyTriton starts tritonserver with a copy of os.environ: the libpython fix must be in it.
    env = server_env()
    os.environ["LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH"]
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        from atfr.errors import DependencyError
        raise DependencyError("nvidia-pytriton is not installed (pip install 'atfr-deploy[serve]')") from None
    if opt.instances < 1 or opt.max_batch < 1 or opt.queue_delay_us < 0 or opt.max_request_mib < 1:
        raise ATFRError("--instances, --max-batch and --max-request-mib must be >= 1, --queue-delay-us >= 0")
    limits = ServeLimits(max_clips=opt.max_batch, max_request_mib=opt.max_request_mib)
    budget = StopBudget()
    services = [ClipService(load_pipeline(export, opt.backend, opt.threads), opt.topk, limits)
                for _ in range(opt.instances)]
    m = services[0].m
    name = opt.model_name or m.name
    clips_in, frames_in, outs = _tensors(services[0])
    cfg = TritonConfig(http_address=opt.host, http_port=opt.http_port, grpc_address=opt.host,
                       grpc_port=opt.grpc_port, metrics_address=opt.host, metrics_port=opt.metrics_port,
                       exit_timeout_secs=budget.drain_s, log_verbose=1 if opt.verbose else 0,
                       log_file=Path(opt.log_file).resolve() if opt.log_file else None)
    mcfg = ModelConfig(max_batch_size=opt.max_batch,
                       batcher=DynamicBatcher(max_queue_delay_microseconds=opt.queue_delay_us))
    if not opt.verbose:
        logging.getLogger("pytriton").setLevel(logging.WARNING)
        # the callable's refusals are answered with their one line; PyTriton would also log each
        # one's traceback as a warning
        logging.getLogger("pytriton.proxy.inference").setLevel(logging.ERROR)
    stop = threading.Event()
    triton = Triton(config=cfg)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signalled: list[float] = []

    def _stop(signum: int, frame: Any) -> None:  # noqa: ARG001 - a second signal changes nothing
        if not signalled:
            signalled.append(time.monotonic())
        stop.set()

    models = [name, f"{name}_frames"]
    server_pid = None
    try:
        triton.bind(model_name=name, infer_func=[make_infer_fn(s, "clips") for s in services],
                    inputs=clips_in, outputs=outs, config=mcfg, strict=True)
        triton.bind(model_name=models[1], infer_func=[make_infer_fn(s, "frames") for s in services],
                    inputs=frames_in, outputs=outs, config=mcfg, strict=True)
        for s in previous:
            signal.signal(s, _stop)
        with server_session(), one_line_proxy():
            triton.run()
        pid = child_named("tritonserver")
        if pid is None or os.getsid(pid) != pid:
            raise RuntimeError("tritonserver did not start in a session of its own")  # a PyTriton change
        server_pid = pid
        if ready is not None:
            ready({"http": f"{opt.host}:{opt.http_port}", "grpc": f"{opt.host}:{opt.grpc_port}",
                   "metrics": f"{opt.host}:{opt.metrics_port}", "models": models})
        while not stop.wait(1.0):
            if not triton.is_alive():
                raise ATFRError("the Triton server stopped unexpectedly (run with --verbose for its log)")
    finally:
        try:  # our handler stays during the stop: a second Ctrl+C must not abandon the server's processes
            if server_pid is None:  # failed on the way up: still end a server that did start
                pid = child_named("tritonserver")
                server_pid = pid if pid is not None and os.getsid(pid) == pid else None
            if server_pid is None:
                triton.stop()
            else:
                t0 = signalled[0] if signalled else time.monotonic()
                how = drain_and_end(server_pid, _local_url(opt.host, opt.http_port), models,
                                    triton.get_access_token(), t0, budget, triton.stop)
                if stopped is not None and signalled:  # a stop on a signal, not on an error
                    stopped(how, time.monotonic() - t0)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    return 0


def _local_url(host: str, port: int) -> str:
    """host:port of our own server's HTTP endpoint, as this machine reaches it."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
